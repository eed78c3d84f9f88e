"""Kafka backend of the action state store: compacted topics and an in-memory index.

Layout (message keys and values: :mod:`flink_agents_ext.store._kafka_codec`):

* the **records topic** (``topic``, compacted, ``partitions`` partitions): one message per
  action record and per journal entry, keyed by (namespace, key, sequence, action,
  occurrence[, position]); every record of one (namespace, key) is in one partition, so a
  record's tombstone follows it. A put is a message; pruning writes **tombstones**, so
  compaction really deletes pruned records (the Java runtime of Flink Agents only evicts
  its cache unless tombstones are turned on);
* the **metadata topic** (``<topic>-meta``, compacted, one partition): prune marks (one
  message per namespace, checkpoint and key), the prune boundary and the *recovery marker*
  of each namespace, and the records topic's partition count.

Reads are served from an in-memory index (:mod:`flink_agents_ext.store._kafka_index`),
built when a namespace is first used. With ``recovery="marker"`` (the default) it reads
the records topic from the namespace's recovery marker: per partition, the lowest offset of
a record of the namespace that was live at the last prune (written after every prune,
after its tombstones). Everything below it is deleted, so a recovery reads the records of
the last checkpoint interval(s), not the whole topic. ``recovery="full_scan"`` reads every
partition from the beginning, as the Java runtime rebuilds its cache from the entire topic
(``make bench`` measures both). Every subtask builds its own index (of every key of the
namespace, not only its own).

Consistency: every read and prune first catches up with the partitions it needs (up to
the high watermarks of that moment), so it sees every put acknowledged before it, by any
store object. Puts are not read back: a put is durable on return (``acks=all``, idempotent
producer; a record is on the broker, in its page cache, before it returns: like SQLite's
``NORMAL`` it survives a crash of the process, and with replication the loss of a broker).
:meth:`KafkaStore.put_many` sends its records as one batch and waits once; unlike a SQL
transaction a failure can leave part of it written. Raising the prune boundary is a
read-modify-write of one metadata message: subtasks of one job raise it to the same
checkpoint, so concurrent raises agree.

Requirements: the topics must be compacted (``cleanup.policy=compact``, checked at open)
and the records topic must keep its partition count (a record's partition is a hash of its
key; a changed count is refused at open). Records larger than
:data:`MAX_MESSAGE_BYTES` are refused by the producer with a :class:`StoreError`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Iterator, Mapping, Optional, Sequence

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from flink_agents_ext.store import _kafka_codec as codec
from flink_agents_ext.store._kafka_index import KafkaIndex, SubKey
from flink_agents_ext.store._kafka_meta import KafkaMetaOps, Message
from flink_agents_ext.store.base import (
    ActionRecord,
    CallRecord,
    RecordId,
    StoreConfigError,
    StoreError,
)
from flink_agents_ext.store.settings import RECOVERY_MODES, check_settings

__all__ = ["MAX_MESSAGE_BYTES", "RECOVERY_MODES", "KafkaStore"]
#: Largest message (one record with its payloads) the store writes; the topics it creates
#: accept it (``max.message.bytes``).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: Topic settings of the topics the store creates. Closed segments are compacted; the
#: active one (at most ``segment.ms`` old) is not; tombstones stay ``delete.retention.ms``
#: (the broker's default, 24 h) after compaction, so readers never miss a delete.
TOPIC_CONFIG = {"cleanup.policy": "compact", "max.message.bytes": str(MAX_MESSAGE_BYTES),
                "segment.ms": str(3_600_000), "min.cleanable.dirty.ratio": "0.25"}



class KafkaStore(KafkaMetaOps):
    """An :class:`ActionStateStore` on two compacted Kafka topics (see the module docs).

    Args:
        bootstrap_servers: the brokers, ``host:port[,host:port...]`` (plaintext).
        topic: the records topic; the metadata topic is ``<topic>-meta``.
        partitions: partitions of the records topic when the store creates it.
        replication_factor: of the topics the store creates; ``-1`` (default) takes the
            broker's ``default.replication.factor``.
        recovery: ``"marker"`` (default) or ``"full_scan"``: where a namespace's index is
            rebuilt from (see the module docs).
        timeout_s: bound of every wait on the brokers (connecting, a put's acknowledgement,
            a catch-up without progress); past it the operation raises :class:`StoreError`.
        create_topics: create missing topics (compacted; else a missing topic is an error).

    Raises:
        StoreConfigError: an invalid setting.
        StoreError: the brokers cannot be reached within ``timeout_s``, a topic is missing
            (with ``create_topics=False``), not compacted, or changed its partition count.
    """

    def __init__(self, bootstrap_servers: str, *, topic: str = "flink-agents-actions",
                 partitions: int = 4, replication_factor: int = -1, recovery: str = "marker",
                 timeout_s: float = 30.0, create_topics: bool = True) -> None:
        check_settings("kafka", bootstrap_servers=bootstrap_servers, topic=topic,
                       partitions=partitions, replication_factor=replication_factor,
                       recovery=recovery, timeout_s=timeout_s, create_topics=create_topics)
        if replication_factor == 0:
            raise StoreConfigError("store setting 'replication_factor' must be -1 (the "
                                   "broker's default) or >= 1, got 0 (backend 'kafka')",
                                   setting="replication_factor", problem="must be -1 or >= 1")
        self._servers, self._topic, self._meta_topic = bootstrap_servers, topic, topic + "-meta"
        self._recovery, self._timeout_s = recovery, float(timeout_s)
        self._lock = threading.RLock()
        self._closed = False
        common = {"bootstrap.servers": bootstrap_servers, "socket.timeout.ms": 10_000,
                  "error_cb": self._on_client_error}
        self._client_errors: list[str] = []
        try:
            count = self._ensure_topics(common, partitions, replication_factor, create_topics)
            self._producer = Producer({
                **common, "acks": "all", "enable.idempotence": True, "linger.ms": 0,
                "compression.type": "lz4", "message.max.bytes": MAX_MESSAGE_BYTES + 65536})
            self._consumer_config = {
                **common, "group.id": "flink-agents-ext-store", "enable.auto.commit": False,
                "enable.partition.eof": True, "auto.offset.reset": "earliest",
                "isolation.level": "read_uncommitted", "fetch.wait.max.ms": 50,
                "queued.max.messages.kbytes": 32768}
            self._index = KafkaIndex(self._consumer_config, topic, self._meta_topic, count,
                                     self._timeout_s)
            self._index.catch_up((), meta=True)
            self._check_layout(count)
        except KafkaException as exc:
            self._close_clients()
            raise StoreError(f"Kafka store {self}: cannot open: {_reason(exc)}",
                             transient=_transient(exc)) from exc
        except BaseException:
            self._close_clients()  # a client left open reconnects for as long as it lives
            raise
        self._last_marker: dict[str, list[int]] = {}

    def __repr__(self) -> str:
        return f"KafkaStore({self._servers!r}, topic={self._topic!r})"

    @property
    def messages_read(self) -> int:
        """Messages of the records topic read so far (what recoveries cost)."""
        return self._index.messages_read

    # -- opening -------------------------------------------------------------------------
    def _on_client_error(self, error: KafkaError) -> None:
        self._client_errors.append(str(error))  # e.g. all brokers down; reported on timeout

    def _ensure_topics(self, common: dict[str, Any], partitions: int, replication: int,
                       create: bool) -> int:
        admin = AdminClient({**common, "log_level": 4})  # no info lines at its end
        topics = self._wait_metadata(admin)
        wanted = {self._topic: partitions, self._meta_topic: 1}
        missing = [name for name in wanted if name not in topics]
        if missing and not create:
            raise StoreError(f"Kafka store {self}: topic(s) {', '.join(missing)} do not "
                             f"exist (create_topics is off)")
        if missing:
            futures = admin.create_topics(
                [NewTopic(name, wanted[name], replication, config=TOPIC_CONFIG)
                 for name in missing], operation_timeout=self._timeout_s)
            for name, future in futures.items():
                try:
                    future.result(timeout=self._timeout_s)
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise StoreError(f"Kafka store {self}: cannot create topic {name}: "
                                         f"{_reason(exc)}") from exc
        deadline = time.monotonic() + self._timeout_s
        while True:  # a new topic's metadata reaches every broker after a moment
            topics = self._wait_metadata(admin)
            if all(name in topics and topics[name].partitions and all(
                    part.leader >= 0 for part in topics[name].partitions.values())
                    for name in wanted):
                break
            if time.monotonic() > deadline:
                raise StoreError(f"Kafka store {self}: topics not visible after creation",
                                 transient=True)
            time.sleep(0.1)
        resources = [ConfigResource("topic", name) for name in wanted]
        for resource, future in admin.describe_configs(resources).items():
            policy = future.result(timeout=self._timeout_s)["cleanup.policy"].value
            if policy != "compact":
                raise StoreError(
                    f"Kafka store {self}: topic {resource.name} has cleanup.policy={policy}; "
                    f"the store needs cleanup.policy=compact (records must not expire)")
        return len(topics[self._topic].partitions)

    def _wait_metadata(self, admin: AdminClient) -> dict[str, Any]:
        try:
            return dict(admin.list_topics(timeout=self._timeout_s).topics)
        except KafkaException as exc:
            seen = f" ({self._client_errors[-1]})" if self._client_errors else ""
            raise StoreError(f"Kafka store {self}: brokers not reachable within "
                             f"{self._timeout_s} s: {_reason(exc)}{seen}",
                             transient=True) from exc

    def _check_layout(self, partitions: int) -> None:
        layout = self._index.layout
        if layout is None:
            self._send([(self._meta_topic, 0, codec.encode_key(codec.LAYOUT),
                         codec.encode_json({"partitions": partitions}))])
        elif layout.get("partitions") != partitions:
            raise StoreError(
                f"Kafka store {self}: topic {self._topic} has {partitions} partitions, but its "
                f"records were written with {layout.get('partitions')}; a record's partition "
                f"depends on the count, so it must not change (use a new topic)")

    # -- plumbing ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _use(self, operation: str) -> Iterator[KafkaIndex]:
        """Hold the lock, yield the index, wrap client errors."""
        with self._lock:
            if self._closed:
                raise StoreError(f"Kafka store {self}: {operation} on a closed store")
            try:
                yield self._index
            except KafkaException as exc:
                raise StoreError(f"Kafka store {self}: {operation} failed: "
                                 f"{_reason(exc)}", transient=_transient(exc)) from exc

    def _send(self, messages: Sequence[Message]) -> None:
        """Produce ``messages`` in order and wait until every one is acknowledged."""
        if not messages:
            return
        errors: list[str] = []
        acknowledged = [0]

        def delivered(error: Optional[KafkaError], _message: Any) -> None:
            acknowledged[0] += 1
            if error is not None:
                errors.append(str(error))

        for topic, partition, key, value in messages:
            while True:
                try:
                    self._producer.produce(topic, value=value, key=key, partition=partition,
                                           on_delivery=delivered)
                    break
                except BufferError:  # the local queue is full: let it drain
                    self._producer.poll(0.05)
                except KafkaException as exc:  # e.g. a record above MAX_MESSAGE_BYTES
                    raise StoreError(f"Kafka store {self}: write failed: "
                                     f"{_reason(exc)}") from exc
        # Serve acknowledgements until every message has one (faster than flush()).
        deadline = time.monotonic() + self._timeout_s
        while acknowledged[0] < len(messages):
            if time.monotonic() > deadline:
                raise StoreError(f"Kafka store {self}: writes not acknowledged within "
                                 f"{self._timeout_s} s", transient=True)
            self._producer.poll(0.05)
        if errors:
            raise StoreError(f"Kafka store {self}: write failed: {errors[0]}")

    def _track(self, index: KafkaIndex, ns: str) -> None:
        if index.tracked(ns):
            return
        index.catch_up((), meta=True)
        marker = index.meta[ns].marker if ns in index.meta else None
        if self._recovery == "full_scan" or not marker or len(marker) != index.partitions:
            marker = None
        index.track(ns, marker)

    def _partition(self, ns: str, key: str) -> int:
        return codec.partition_of(ns, key, self._index.partitions)

    def _catch_up_key(self, index: KafkaIndex, ns: str, key: str) -> None:
        self._track(index, ns)
        index.catch_up((self._partition(ns, key),))

    def _tombstones(self, ns: str, key: str, subs: Sequence[SubKey]) -> list[Message]:
        p = self._partition(ns, key)
        return [(self._topic, p, codec.encode_key(codec.ACTION if len(sub) == 3 else codec.CALL,
                                                  ns, key, *sub), None) for sub in subs]

    def _delete(self, index: KafkaIndex, ns: str, doomed: dict[str, list[SubKey]]) -> int:
        """Tombstone the records ``doomed`` (key -> sub-keys), then drop them from the
        index and write the namespace's recovery marker. Returns how many."""
        messages = [m for key, subs in doomed.items() for m in self._tombstones(ns, key, subs)]
        self._send(messages)
        for key, subs in doomed.items():
            for sub in subs:
                index.apply(ns, key, sub, -1, None)
        self._write_marker(index, ns)
        return len(messages)

    def _write_marker(self, index: KafkaIndex, ns: str) -> None:
        marker = index.marker(ns)
        if marker != self._last_marker.get(ns):
            self._send([(self._meta_topic, 0, codec.encode_key(codec.MARKER, ns),
                         codec.encode_json(marker))])
            self._last_marker[ns] = marker

    # -- action records ------------------------------------------------------------------
    def put_action(self, record: ActionRecord) -> None:
        """Write the action record ``record.id``; acknowledged before returning."""
        self.put_many((record,), ())

    def put_call(self, call: CallRecord) -> None:
        """Write the journal entry (``call.id``, ``call.position``); acknowledged before
        returning."""
        self.put_many((), (call,))

    def put_many(self, actions: Sequence[ActionRecord], calls: Sequence[CallRecord]) -> None:
        """Write the records in order (calls, then actions) as one batch, waiting once."""
        messages = [(self._topic, self._partition(c.id.namespace, c.id.key),
                     codec.call_key(c.id, c.position), codec.encode_call(c)) for c in calls]
        messages += [(self._topic, self._partition(r.id.namespace, r.id.key),
                      codec.action_key(r.id), codec.encode_action(r)) for r in actions]
        with self._use("put"):
            self._send(messages)

    def get_action(self, record_id: RecordId) -> Optional[ActionRecord]:
        """Return the action record ``record_id``, or ``None``."""
        with self._use("get_action") as index:
            self._catch_up_key(index, record_id.namespace, record_id.key)
            entry = index.entries(record_id.namespace, record_id.key).get(
                (record_id.seq, record_id.action, record_id.occurrence))
        return None if entry is None else codec.decode_action(record_id, entry[1])

    def get_run(self, namespace: str, key: str, seq: int) -> list[ActionRecord]:
        """Return every action record of one run, ordered by (action, occurrence); actions
        compare by code point."""
        with self._use("get_run") as index:
            self._catch_up_key(index, namespace, key)
            entries = index.entries(namespace, key)
            subs = sorted(s for s in entries if len(s) == 3 and s[0] == seq)
            values = [(s, entries[s][1]) for s in subs]
        return [codec.decode_action(RecordId(namespace, key, seq, s[1], s[2]), v)
                for s, v in values]

    def recorded_runs(self, namespace: str) -> set[tuple[str, int]]:
        """The (key, seq) pairs that have any action or call record in ``namespace``."""
        with self._use("recorded_runs") as index:
            self._track(index, namespace)
            index.catch_up(range(index.partitions))
            return {(key, sub[0]) for key, entries in index.records[namespace].items()
                    for sub in entries}

    # -- durable-call journal ------------------------------------------------------------
    def get_calls(self, record_id: RecordId) -> list[CallRecord]:
        """Return the journal of one action execution, ordered by position."""
        ns, key = record_id.namespace, record_id.key
        run = (record_id.seq, record_id.action, record_id.occurrence)
        with self._use("get_calls") as index:
            self._catch_up_key(index, ns, key)
            entries = index.entries(ns, key)
            values = sorted((s[3], entries[s][1]) for s in entries if len(s) == 4
                            and s[:3] == run)
        return [codec.decode_call(record_id, position, v) for position, v in values]

    def truncate_calls(self, record_id: RecordId, from_position: int) -> int:
        """Delete journal entries at ``from_position`` and after; return how many."""
        ns, key = record_id.namespace, record_id.key
        run = (record_id.seq, record_id.action, record_id.occurrence)
        with self._use("truncate_calls") as index:
            self._catch_up_key(index, ns, key)
            subs = index.select(ns, key, lambda s: len(s) == 4 and s[:3] == run
                                and s[3] >= from_position)
            return self._delete(index, ns, {key: subs}) if subs else 0

    # -- pruning -------------------------------------------------------------------------
    def prune(self, namespace: str, up_to: Mapping[str, int]) -> int:
        """For each ``key -> seq`` tombstone the key's action and call records with a
        sequence ``<= seq``; then write the namespace's recovery marker. Return how many
        records were deleted."""
        with self._use("prune") as index:
            if not up_to:
                return 0
            self._track(index, namespace)
            index.catch_up({self._partition(namespace, key) for key in up_to})
            doomed: dict[str, list[SubKey]] = {}
            for key, seq in up_to.items():
                subs = [sub for sub in index.entries(namespace, key) if sub[0] <= seq]
                if subs:
                    doomed[key] = subs
            return self._delete(index, namespace, doomed)

    # -- housekeeping --------------------------------------------------------------------
    def clear_namespace(self, namespace: str) -> int:
        """Tombstone every record, mark, the boundary and the lineage of ``namespace``;
        return the number of action and call records deleted."""
        with self._use("clear_namespace") as index:
            self._track(index, namespace)
            index.catch_up(range(index.partitions), meta=True)
            doomed = {key: list(entries)
                      for key, entries in index.records[namespace].items()}
            deleted = self._delete(index, namespace, doomed)
            self._clear_meta(index, namespace)
            return deleted

    def size(self, namespace: Optional[str] = None) -> int:
        """Number of action and call records (of one namespace, or all: a scan of the whole
        records topic)."""
        with self._use("size") as index:
            if namespace is not None:
                self._track(index, namespace)
                index.catch_up(range(index.partitions))
                return index.counts[namespace]
            everything = KafkaIndex(self._consumer_config, self._topic, self._meta_topic,
                                    index.partitions, self._timeout_s, track_all=True)
            try:
                everything.catch_up(range(index.partitions))
                return sum(everything.counts.values())
            finally:
                everything.close()

    def close(self) -> None:
        """Wait for outstanding writes and close the clients. Idempotent; any later use
        raises :class:`StoreError`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._producer.flush(self._timeout_s)
            finally:
                self._close_clients()

    def _close_clients(self) -> None:
        """Close the producer and the index's consumers (those opened so far: the
        constructor calls it when it fails)."""
        producer: Optional[Producer] = getattr(self, "_producer", None)
        index: Optional[KafkaIndex] = getattr(self, "_index", None)
        try:
            if producer is not None and hasattr(producer, "close"):  # not in older confluent-kafka
                producer.close()
        finally:
            if index is not None:
                index.close()


def _transient(exc: KafkaException) -> bool:
    """Whether a client error may go away by itself (a broker down, a timeout)."""
    error = exc.args[0] if exc.args else None
    return not isinstance(error, KafkaError) or error.retriable() or error.code() in (
        KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT,
        KafkaError.REQUEST_TIMED_OUT)


def _reason(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)
