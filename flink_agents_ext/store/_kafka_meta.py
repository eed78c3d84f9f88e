"""The metadata operations of the Kafka action store: prune marks, the prune boundary and
the lineage of a namespace, on the metadata topic (:mod:`flink_agents_ext.store.kafka`).

Taking a namespace over for a lineage (:meth:`KafkaMetaOps.reset_namespace`) cannot be one
transaction on Kafka. It is made safe with a *cut*: a claim message of the lineage carries
the high watermarks of the records partitions measured before it was sent; the first claim
of the lineage in the (single-partition, totally ordered) metadata topic wins, and every
claimer removes only the namespace's records below *that* cut. A subtask writes records
only after its claim returned, so after the first claim was in the log and its cut
measured: no record of the new lineage is ever below the cut. Every claimer removes (so a
crash of the first one leaves nothing behind); only the first reports what it removed.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Mapping, Optional, Sequence

from flink_agents_ext.store import _kafka_codec as codec
from flink_agents_ext.store._kafka_index import KafkaIndex, SubKey
from flink_agents_ext.store._rows import history_to_json
from flink_agents_ext.store.base import ActionStateStore, LineageRecord, NamespaceReset

Message = tuple[str, int, bytes, Optional[bytes]]  # topic, partition, key, value


class KafkaMetaOps(ActionStateStore):
    """The metadata operations of :class:`~flink_agents_ext.store.kafka.KafkaStore`."""

    _meta_topic: str
    _index: KafkaIndex

    def _use(self, operation: str) -> contextlib.AbstractContextManager[KafkaIndex]:
        raise NotImplementedError

    def _send(self, messages: Sequence[Message]) -> None:
        raise NotImplementedError

    def _track(self, index: KafkaIndex, ns: str) -> None:
        raise NotImplementedError

    def _delete(self, index: KafkaIndex, ns: str, doomed: dict[str, list[SubKey]]) -> int:
        raise NotImplementedError

    def _meta_send(self, index: KafkaIndex, messages: Sequence[Message]) -> None:
        """Send metadata messages and read them back into the index."""
        if messages:
            self._send(messages)
            index.catch_up((), meta=True)

    def _meta_message(self, *key: object, value: Optional[bytes]) -> Message:
        return (self._meta_topic, 0, codec.encode_key(*key), value)

    def add_prune_marks(self, namespace: str, checkpoint_id: int,
                        up_to: Mapping[str, int]) -> None:
        """Remember that checkpoint ``checkpoint_id`` captured ``key -> last completed seq``
        (a key marked twice for one checkpoint keeps the higher sequence)."""
        with self._use("add_prune_marks") as index:
            if not up_to:
                return
            index.catch_up((), meta=True)
            marks = index.meta[namespace].marks if namespace in index.meta else {}
            self._send([(self._meta_topic, 0,
                         codec.encode_key(codec.MARK, namespace, checkpoint_id, key),
                         codec.encode_json(max(seq, marks.get((checkpoint_id, key), seq))))
                        for key, seq in up_to.items()])
            index.catch_up((), meta=True)

    def take_prune_marks(self, namespace: str, up_to_checkpoint: int) -> dict[str, int]:
        """Remove and return the marks of checkpoints ``<= up_to_checkpoint``, merged to the
        highest sequence per key."""
        with self._use("take_prune_marks") as index:
            index.catch_up((), meta=True)
            marks = index.meta[namespace].marks if namespace in index.meta else {}
            taken = sorted(mark for mark in marks if mark[0] <= up_to_checkpoint)
            merged: dict[str, int] = {}
            for checkpoint, key in taken:
                merged[key] = max(merged.get(key, marks[(checkpoint, key)]),
                                  marks[(checkpoint, key)])
            self._send([(self._meta_topic, 0, codec.encode_key(codec.MARK, namespace, *mark),
                         None) for mark in taken])
            index.catch_up((), meta=True)
            return merged

    def get_prune_boundary(self, namespace: str) -> Optional[int]:
        """The newest checkpoint whose captured sequences were pruned, or ``None``."""
        with self._use("get_prune_boundary") as index:
            index.catch_up((), meta=True)
            return index.meta[namespace].boundary if namespace in index.meta else None

    def set_prune_boundary(self, namespace: str, checkpoint_id: int, *,
                           force: bool = False) -> None:
        """Raise the prune boundary to ``checkpoint_id`` (never lower it unless ``force``)."""
        with self._use("set_prune_boundary") as index:
            index.catch_up((), meta=True)
            current = index.meta[namespace].boundary if namespace in index.meta else None
            if force or current is None or checkpoint_id > current:
                self._send([(self._meta_topic, 0, codec.encode_key(codec.BOUNDARY, namespace),
                             codec.encode_json(checkpoint_id))])
                index.catch_up((), meta=True)

    def discard_prune_marks(self, namespace: str, after_checkpoint: int) -> int:
        """Tombstone the marks of checkpoints ``> after_checkpoint``; return how many."""
        with self._use("discard_prune_marks") as index:
            index.catch_up((), meta=True)
            marks = index.meta[namespace].marks if namespace in index.meta else {}
            doomed = [mark for mark in marks if mark[0] > after_checkpoint]
            self._meta_send(index, [self._meta_message(codec.MARK, namespace, *mark,
                                                       value=None) for mark in doomed])
            return len(doomed)

    # -- lineage -------------------------------------------------------------------------
    def get_lineage(self, namespace: str) -> Optional[LineageRecord]:
        """The lineage ``namespace`` belongs to, or ``None``."""
        with self._use("get_lineage") as index:
            index.catch_up((), meta=True)
            return index.meta[namespace].lineage if namespace in index.meta else None

    def set_lineage(self, namespace: str, record: LineageRecord) -> None:
        """Set the lineage record of ``namespace`` (the cut of its lineage is kept)."""
        with self._use("set_lineage") as index:
            index.catch_up((), meta=True)
            meta = index.meta.get(namespace)
            self._meta_send(index, [self._lineage_message(
                namespace, record, meta.cut if meta else None, meta.claim if meta else None)])

    def _lineage_message(self, namespace: str, record: LineageRecord,
                         cut: Optional[list[int]], claim: Optional[str]) -> Message:
        value = codec.encode_json({"lineage": record.lineage, "cut": cut, "claim": claim,
                                   "history": codec.decode_json(
                                       history_to_json(record).encode(), "history")})
        return self._meta_message(codec.LINEAGE, namespace, value=value)

    def reset_namespace(self, namespace: str, record: LineageRecord) -> Optional[NamespaceReset]:
        """Unless ``namespace`` belongs to ``record.lineage``: claim it with a cut, then
        remove its records below the cut of the lineage's first claim and its marks and
        boundary (see the module documentation)."""
        with self._use("reset_namespace") as index:
            index.catch_up((), meta=True)
            meta = index.meta.get(namespace)
            previous = meta.lineage if meta else None
            if previous is not None and previous.lineage == record.lineage:
                return None
            # Catch up, then measure the cut: every live record below it is the earlier
            # lineage's (this lineage writes only after a claim of it is in the log).
            self._track(index, namespace)
            index.catch_up(range(index.partitions))
            cut = index.highs()
            below = self._below(index, namespace, cut)
            claim = uuid.uuid4().hex
            self._meta_send(index, [self._lineage_message(namespace, record, cut, claim)])
            meta = index.meta[namespace]
            index.catch_up(range(index.partitions))
            doomed = self._below(index, namespace, meta.cut or [0] * index.partitions)
            self._delete(index, namespace, doomed)
            stale = [self._meta_message(codec.MARK, namespace, *mark, value=None)
                     for mark in meta.marks]
            if meta.boundary is not None:
                stale.append(self._meta_message(codec.BOUNDARY, namespace, value=None))
            self._meta_send(index, stale)
            # Only the first claim reports (what was below its cut): the others removed the
            # same records again, or found them removed.
            if meta.claim != claim:
                return None
            return NamespaceReset(previous, sum(len(subs) for subs in below.values()))

    @staticmethod
    def _below(index: KafkaIndex, namespace: str, cut: list[int]) -> dict[str, list[SubKey]]:
        """The live records of ``namespace`` below ``cut`` (offsets per partition)."""
        found: dict[str, list[SubKey]] = {}
        for key, entries in index.records[namespace].items():
            p = codec.partition_of(namespace, key, index.partitions)
            subs = [sub for sub, (offset, _) in entries.items() if offset < cut[p]]
            if subs:
                found[key] = subs
        return found

    def _clear_meta(self, index: KafkaIndex, namespace: str) -> None:
        """Tombstone the marks, the boundary and the lineage of ``namespace``."""
        meta = index.meta.get(namespace)
        if meta is not None:
            messages = [self._meta_message(codec.MARK, namespace, *mark, value=None)
                        for mark in meta.marks]
            messages += [self._meta_message(kind, namespace, value=None)
                         for kind in (codec.BOUNDARY, codec.LINEAGE)]
            self._meta_send(index, messages)
