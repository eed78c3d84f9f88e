"""The in-memory index of the Kafka action store, rebuilt by reading its topics in order.

One consumer reads every partition of the records topic and the metadata topic. The
metadata topic (small: compacted marks, boundaries, markers) is read from its beginning at
open. Records are read per *tracked* namespace: a namespace is tracked from its first use,
starting at its recovery marker (``recovery="marker"``) or at the beginning of every
partition (``"full_scan"``, as the Java runtime of Flink Agents rebuilds its cache). When a
namespace is tracked later than another, the partitions are read again from its start
offsets; messages below a namespace's own horizon are not applied twice.

Invariant: for a tracked namespace ``ns`` and partition ``p``, the index holds every live
record of ``ns`` in ``p`` with an offset below ``horizon[ns][p]`` (records below the
namespace's recovery marker are all deleted: see :meth:`KafkaIndex.marker`). After a
catch-up of ``p``, ``horizon[ns][p]`` is at least the high watermark seen when it began,
so a read after a catch-up sees every write that was acknowledged before it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from flink_agents_ext.store import _kafka_codec as codec
from flink_agents_ext.store._rows import lineage_from_json
from flink_agents_ext.store.base import LineageRecord, StoreError

#: (offset, value) of a live record; the record's sub-key is (seq, action, occurrence) for an
#: action record and (seq, action, occurrence, position) for a journal entry.
Entry = tuple[int, bytes]
SubKey = tuple[Any, ...]

_BATCH = 10_000
#: Errors of a partition whose leader is not known yet (e.g. just created): retried.
_NO_LEADER = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                        KafkaError.UNKNOWN_TOPIC_OR_PART})


@dataclass
class Meta:
    """What the metadata topic says about one namespace."""

    boundary: Optional[int] = None
    marks: dict[tuple[int, str], int] = field(default_factory=dict)
    marker: Optional[list[int]] = None
    lineage: Optional[LineageRecord] = None
    #: Offsets of the records partitions when the namespace became ``lineage``'s: the cut
    #: of the *first* claim of that lineage in the log (later claims of it keep it).
    cut: Optional[list[int]] = None
    #: The id of that first claim.
    claim: Optional[str] = None


class KafkaIndex:
    """Live records of the tracked namespaces and the metadata of every namespace.

    Args:
        consumer_config: librdkafka settings of the consumer (bootstrap servers...).
        topic, meta_topic: the records topic and the metadata topic.
        partitions: the records topic's partition count.
        timeout_s: a catch-up fails when it makes no progress for this long.
        track_all: index every namespace from the beginning (``size()`` of all namespaces).
    """

    def __init__(self, consumer_config: dict[str, Any], topic: str, meta_topic: str,
                 partitions: int, timeout_s: float, track_all: bool = False) -> None:
        self.topic, self.meta_topic, self.partitions = topic, meta_topic, partitions
        self.timeout_s = timeout_s
        self.records: dict[str, dict[str, dict[SubKey, Entry]]] = {}
        self.counts: dict[str, int] = {}
        self.meta: dict[str, Meta] = {}
        self.layout: Optional[dict[str, Any]] = None
        #: Messages read from the records topic so far (recovery cost, for benchmarks).
        self.messages_read = 0
        self._horizon: dict[str, list[int]] = {}
        self._all: Optional[list[int]] = [0] * partitions if track_all else None
        self._pos: list[int] = [0] * partitions  # next offset to read, per partition
        self._meta_pos = 0
        self._records_assigned = False
        self._consumer = Consumer(consumer_config)
        # Watermarks are asked on a connection of their own: a broker answers the requests
        # of one connection in order, so behind the reader's waiting fetch they would wait.
        self._offsets = Consumer(consumer_config)
        for client in (self._consumer, self._offsets):
            for name in (topic, meta_topic):  # known topics are fetched at once when assigned
                client.list_topics(name, timeout=timeout_s)
        self._assign()

    def close(self) -> None:
        """Close the consumers."""
        self._consumer.close()
        self._offsets.close()

    # -- reading ----------------------------------------------------------------------
    def _assign(self) -> None:
        tps = [TopicPartition(self.meta_topic, 0, self._meta_pos)]
        if self._records_assigned or self._all is not None:
            self._records_assigned = True
            tps += [TopicPartition(self.topic, p, self._pos[p]) for p in range(self.partitions)]
        self._consumer.assign(tps)

    def track(self, ns: str, start: Optional[list[int]]) -> None:
        """Index namespace ``ns`` from ``start`` (offsets per partition; ``None``: from the
        beginning) and catch up with every partition."""
        begin = list(start) if start is not None else [0] * self.partitions
        self._horizon[ns] = begin
        self.records.setdefault(ns, {})
        self.counts.setdefault(ns, 0)
        if not self._records_assigned or any(b < p for b, p in zip(begin, self._pos)):
            if self._records_assigned:
                self._pos = [min(b, p) for b, p in zip(begin, self._pos)]
            else:
                self._pos = begin[:]
            self._records_assigned = True
            self._assign()
        self.catch_up(range(self.partitions))

    def tracked(self, ns: str) -> bool:
        """Whether ``ns`` is indexed."""
        return ns in self._horizon or self._all is not None

    def catch_up(self, partitions: Iterable[int], meta: bool = False) -> None:
        """Read until the given records partitions (and the metadata topic if ``meta``)
        reach the high watermarks they have now."""
        targets: dict[tuple[str, int], int] = {}
        if meta:
            targets[(self.meta_topic, 0)] = self._high(self.meta_topic, 0)
        if self._records_assigned:
            for p in set(partitions):
                targets[(self.topic, p)] = self._high(self.topic, p)
        pending = {tp for tp, high in targets.items() if self._position(tp) < high}
        deadline = time.monotonic() + self.timeout_s
        while pending:
            # What is fetched already, else wait for the next message (a batch would wait
            # for its size or the timeout).
            messages = self._consumer.consume(_BATCH, timeout=0)
            if not messages:
                message = self._consumer.poll(0.2)
                messages = [] if message is None else [message]
            if messages:
                deadline = time.monotonic() + self.timeout_s
            for message in messages:
                self._handle(message)
            pending = {tp for tp in pending if self._position(tp) < targets[tp]}
            if pending and time.monotonic() > deadline:
                where = ", ".join(f"{t}[{p}] at {self._position((t, p))} of {targets[(t, p)]}"
                                  for t, p in sorted(pending))
                raise StoreError(f"Kafka store: reading made no progress for "
                                 f"{self.timeout_s} s ({where})", transient=True)
        for horizon in (*self._horizon.values(), *([self._all] if self._all else [])):
            for p in range(self.partitions):
                horizon[p] = max(horizon[p], self._pos[p])

    def highs(self) -> list[int]:
        """The high watermarks of the records partitions now."""
        return [self._high(self.topic, p) for p in range(self.partitions)]

    def _position(self, tp: tuple[str, int]) -> int:
        return self._meta_pos if tp[0] == self.meta_topic else self._pos[tp[1]]

    def _high(self, topic: str, partition: int) -> int:
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                _, high = self._offsets.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=self.timeout_s, cached=False)
                return int(high)
            except KafkaException as exc:
                # E.g. no leader yet for a topic created a moment ago: retried, bounded.
                error = exc.args[0]
                if (not error.retriable() and error.code() not in _NO_LEADER) \
                        or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _handle(self, message: Message) -> None:
        error = message.error()
        topic = cast(str, message.topic())
        p, offset = cast(int, message.partition()), cast(int, message.offset())
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                raise StoreError(f"Kafka store: reading {topic}[{p}] failed: {error}")
            if topic == self.meta_topic:
                self._meta_pos = max(self._meta_pos, offset)
            else:
                self._pos[p] = max(self._pos[p], offset)
            return
        if topic == self.meta_topic:
            if offset >= self._meta_pos:
                self._meta_pos = offset + 1
                self._apply_meta(codec.decode_key(message.key(), topic), message.value())
            return
        if offset < self._pos[p]:
            return  # read before a reassignment
        self._pos[p] = offset + 1
        self.messages_read += 1
        parts = codec.decode_key(message.key(), topic)
        ns = parts[1]
        horizon = self._horizon.get(ns, self._all)
        if horizon is None or offset < horizon[p] or parts[0] not in codec.RECORD_KINDS:
            return
        self.apply(ns, parts[2], tuple(parts[3:]), offset, message.value())

    def apply(self, ns: str, key: str, sub: SubKey, offset: int,
              value: Optional[bytes]) -> None:
        """Put (``value``) or delete (``None``) one record of the index."""
        by_key = self.records.setdefault(ns, {})
        entries = by_key.get(key)
        if value is None:
            if entries is not None and entries.pop(sub, None) is not None:
                self.counts[ns] -= 1
                if not entries:
                    del by_key[key]
            return
        if entries is None:
            entries = by_key[key] = {}
        if sub not in entries:
            self.counts[ns] = self.counts.get(ns, 0) + 1
        entries[sub] = (offset, value)

    def _apply_meta(self, parts: list[Any], value: Optional[bytes]) -> None:
        kind = parts[0]
        if kind == codec.LAYOUT:
            self.layout = None if value is None else codec.decode_json(value, "layout")
            return
        meta = self.meta.setdefault(parts[1], Meta())
        decoded = None if value is None else codec.decode_json(value, f"{parts}")
        if kind == codec.BOUNDARY:
            meta.boundary = decoded
        elif kind == codec.MARKER:
            meta.marker = decoded
        elif kind == codec.LINEAGE:
            if decoded is None:
                meta.lineage = meta.cut = meta.claim = None
                return
            record = lineage_from_json(decoded["lineage"], decoded["history"])
            if meta.lineage is None or meta.lineage.lineage != record.lineage \
                    or meta.cut is None:
                meta.cut, meta.claim = decoded.get("cut"), decoded.get("claim")
            meta.lineage = record
        elif kind == codec.MARK:
            if decoded is None:
                meta.marks.pop((parts[2], parts[3]), None)
            else:
                meta.marks[(parts[2], parts[3])] = decoded

    # -- queries ----------------------------------------------------------------------
    def entries(self, ns: str, key: str) -> dict[SubKey, Entry]:
        """The live records of one key (empty if none)."""
        return self.records.get(ns, {}).get(key, {})

    def select(self, ns: str, key: str, keep: Callable[[SubKey], bool]) -> list[SubKey]:
        """The sub-keys of ``key``'s live records for which ``keep`` holds."""
        return [sub for sub in self.entries(ns, key) if keep(sub)]

    def marker(self, ns: str) -> list[int]:
        """Offsets per partition below which ``ns`` has no live record: the lowest offset of
        its live records in the partition, else the horizon. Valid forever once computed:
        later records only get higher offsets."""
        low = list(self._horizon[ns])
        for key, entries in self.records.get(ns, {}).items():
            p = codec.partition_of(ns, key, self.partitions)
            low[p] = min(low[p], min(offset for offset, _ in entries.values()))
        return low
