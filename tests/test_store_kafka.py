"""The Kafka action store against the real throwaway broker (tests/kafka_broker.py): the
shared contract (directly and through group commit; a fresh namespace has no marker, so
its first use reads the whole topic as full-scan recovery does), recovery from the marker,
tombstones that compaction really removes, and clear errors. The model-based test is in
tests/test_store_kafka_model.py."""

from __future__ import annotations

import time
from typing import Any, Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from flink_agents_ext.store import (
    ActionRecord,
    GroupCommitStore,
    StoreConfigError,
    StoreError,
    open_store,
)
from flink_agents_ext.store.kafka import TOPIC_CONFIG, KafkaStore
from tests.kafka_broker import KafkaBroker, kafka  # noqa: F401 (fixture)
from tests.store_contract import (
    GroupCommitContract,
    StoreContract,
    StoreFactory,
    action_record,
    call_record,
    check_put_survives_a_killed_process,
    fill,
    rid,
)


@pytest.fixture(scope="module")
def topic(kafka: KafkaBroker) -> str:  # noqa: F811
    """One records topic for the module's contract tests (each uses its own namespaces)."""
    return kafka.topic("store")


class TestKafkaStoreContract(StoreContract):
    """The backend contract, recovering from the marker (the default)."""

    @pytest.fixture
    def store_factory(self, kafka: KafkaBroker, topic: str) -> StoreFactory:  # noqa: F811
        return lambda: KafkaStore(kafka.bootstrap, topic=topic, timeout_s=20)


class TestKafkaGroupCommitContract(GroupCommitContract):
    """The backend contract through group commit."""

    @pytest.fixture
    def store_factory(self, kafka: KafkaBroker, topic: str) -> StoreFactory:  # noqa: F811
        return lambda: GroupCommitStore(KafkaStore(kafka.bootstrap, topic=topic, timeout_s=20),
                                        interval_ms=60_000)


@pytest.fixture
def admin(kafka: KafkaBroker) -> AdminClient:  # noqa: F811
    return AdminClient({"bootstrap.servers": kafka.bootstrap})


def create_topic(admin: AdminClient, name: str, partitions: int, **config: str) -> None:
    futures = admin.create_topics([NewTopic(name, partitions, 1, config=config)])
    for future in futures.values():
        future.result(timeout=30)


def raw_messages(bootstrap: str, topic: str, partitions: int) -> list[tuple[bytes, Any]]:
    """Every message now in ``topic``: (key, value), per partition in offset order."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "raw",
                         "enable.partition.eof": True, "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        found: list[tuple[bytes, Any]] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + 30
        while len(at_end) < partitions and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                at_end.add(message.partition())
            else:
                found.append((message.key(), message.value()))
        assert len(at_end) == partitions, "did not reach the end of the topic"
        return found
    finally:
        consumer.close()


@pytest.fixture
def store(kafka: KafkaBroker) -> Iterator[KafkaStore]:  # noqa: F811
    with KafkaStore(kafka.bootstrap, topic=kafka.topic("own"), partitions=3) as opened:
        yield opened


# -- recovery ---------------------------------------------------------------------------------
def test_marker_recovery_reads_only_the_tail_and_matches_a_full_scan(
        kafka: KafkaBroker) -> None:  # noqa: F811
    topic = kafka.topic("recovery")
    with KafkaStore(kafka.bootstrap, topic=topic, partitions=2) as writer:
        for round_no in range(10):  # a checkpoint interval: 20 keys, then prune the previous
            for k in range(20):
                writer.put_action(action_record(rid("ns", f"k{k}", round_no)))
                writer.put_call(call_record(rid("ns", f"k{k}", round_no), 0))
            if round_no:
                assert writer.prune("ns", {f"k{k}": round_no - 1 for k in range(20)}) == 40
        fill(writer, "other", "x", range(5))  # another namespace, never pruned
        expected_runs = writer.recorded_runs("ns")
    assert expected_runs == {(f"k{k}", 9) for k in range(20)}
    with KafkaStore(kafka.bootstrap, topic=topic, recovery="full_scan") as full, \
            KafkaStore(kafka.bootstrap, topic=topic) as marker:
        assert full.recorded_runs("ns") == marker.recorded_runs("ns") == expected_runs
        assert full.size("ns") == marker.size("ns") == 40
        for k in range(20):
            record_id = rid("ns", f"k{k}", 9)
            assert marker.get_action(record_id) == full.get_action(record_id) \
                == action_record(record_id)
        # The full scan read every put and tombstone; the marker only the last interval
        # (and the tombstones of the interval before it, written after it).
        assert full.messages_read == 10 * 40 + 9 * 40 + 15
        assert marker.messages_read <= 3 * 40 + 15, marker.messages_read
        # A namespace used later is read from its own start (here: no marker, the whole
        # topic) while the first keeps its index.
        assert marker.size("other") == 15 and marker.size("ns") == 40


def test_a_second_namespace_tracked_later_sees_its_earlier_records(
        kafka: KafkaBroker) -> None:  # noqa: F811
    topic = kafka.topic("two-ns")
    with KafkaStore(kafka.bootstrap, topic=topic, partitions=2) as writer:
        fill(writer, "a", "k", range(3))
        fill(writer, "b", "k", range(4))
        writer.prune("a", {"k": 0})
    with KafkaStore(kafka.bootstrap, topic=topic) as reader:
        assert reader.size("a") == 6
        fill(reader, "a", "k", range(3, 5))
        assert reader.size("b") == 12 and reader.size("a") == 12
        assert reader.recorded_runs("b") == {("k", s) for s in range(4)}


# -- pruning deletes ----------------------------------------------------------------------
def test_prune_writes_tombstones_that_compaction_removes(
        kafka: KafkaBroker, admin: AdminClient) -> None:  # noqa: F811
    topic = kafka.topic("compact")
    fast = {**TOPIC_CONFIG, "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01",
            "delete.retention.ms": "100"}
    create_topic(admin, topic, 1, **fast)
    create_topic(admin, topic + "-meta", 1, **fast)
    with KafkaStore(kafka.bootstrap, topic=topic, create_topics=False) as store:
        fill(store, "ns", "k", range(1, 4), calls=1)
        assert store.prune("ns", {"k": 2}) == 4
        tombstones = [key for key, value in raw_messages(kafka.bootstrap, topic, 1)
                      if value is None]
        assert len(tombstones) == 4
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            time.sleep(1)
            fill(store, "roll", "r", range(1))  # a write rolls the 100 ms segment
            messages = raw_messages(kafka.bootstrap, topic, 1)
            pruned = [key for key, _ in messages if b'"ns","k",1,' in key
                      or b'"ns","k",2,' in key]
            if not pruned:
                break
        assert not pruned, "the log cleaner did not remove the pruned records in 90 s"
        assert store.size("ns") == 2 and len(store.get_run("ns", "k", 3)) == 1
    with KafkaStore(kafka.bootstrap, topic=topic, recovery="full_scan",
                    create_topics=False) as again:
        assert again.size("ns") == 2


# -- durability -----------------------------------------------------------------------------
def test_put_survives_a_killed_process(kafka: KafkaBroker) -> None:  # noqa: F811
    topic = kafka.topic("kill")
    check_put_survives_a_killed_process(
        f"from flink_agents_ext.store.kafka import KafkaStore\n"
        f"store = KafkaStore({kafka.bootstrap!r}, topic={topic!r})",
        lambda: KafkaStore(kafka.bootstrap, topic=topic))


# -- errors ---------------------------------------------------------------------------------
def test_unreachable_brokers_fail_within_the_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(StoreError, match="not reachable") as info:
        KafkaStore("127.0.0.1:1", timeout_s=2)
    assert time.monotonic() - started < 20
    assert info.value.transient  # Flink restarts the task; a broker may come back


def test_a_topic_that_is_not_compacted_is_refused(kafka: KafkaBroker,  # noqa: F811
                                                  admin: AdminClient) -> None:
    topic = kafka.topic("delete")
    create_topic(admin, topic, 1, **{"cleanup.policy": "delete"})
    with pytest.raises(StoreError, match=r"cleanup\.policy=delete") as info:
        KafkaStore(kafka.bootstrap, topic=topic)
    assert not info.value.transient  # a restart cannot fix it: the job fails once


def test_missing_topics_without_create_topics(kafka: KafkaBroker) -> None:  # noqa: F811
    with pytest.raises(StoreError, match="do not exist"):
        KafkaStore(kafka.bootstrap, topic=kafka.topic("absent"), create_topics=False)


def test_a_changed_partition_count_is_refused(kafka: KafkaBroker,  # noqa: F811
                                              admin: AdminClient) -> None:
    topic = kafka.topic("grown")
    with KafkaStore(kafka.bootstrap, topic=topic, partitions=2) as store:
        fill(store, "ns", "k", range(2))
    for future in admin.create_partitions([NewPartitions(topic, 3)]).values():
        future.result(timeout=30)
    with pytest.raises(StoreError, match="has 3 partitions, but its records were written "
                                         "with 2"):
        KafkaStore(kafka.bootstrap, topic=topic, partitions=2)


def test_foreign_messages_fail_loudly(kafka: KafkaBroker) -> None:  # noqa: F811
    topic = kafka.topic("foreign")
    with KafkaStore(kafka.bootstrap, topic=topic, partitions=1) as store:
        producer = Producer({"bootstrap.servers": kafka.bootstrap})
        producer.produce(topic, key=b"not json", value=b"x")
        producer.produce(topic, key=b'["z9","ns"]', value=b"x")
        producer.flush(30)
        with pytest.raises(StoreError, match="not an action-store record"):
            store.size("ns")
    with KafkaStore(kafka.bootstrap, topic=topic, partitions=1) as store:
        with pytest.raises(StoreError, match="not an action-store record"):
            store.recorded_runs("ns")


def test_oversized_record_is_a_store_error(store: KafkaStore) -> None:
    big = ActionRecord(rid("ns"), b"x" * (17 * 1024 * 1024), b"", b"", b"", True)
    with pytest.raises(StoreError, match="write failed"):
        store.put_action(big)
    store.put_action(action_record(rid("ns")))  # the store is still usable
    assert store.get_action(rid("ns")) == action_record(rid("ns"))


@pytest.mark.parametrize(("settings", "message"), [
    ({"bootstrap_servers": ""}, "'bootstrap_servers' must be a non-empty string"),
    ({"partitions": 0}, "'partitions' must be an integer >= 1"),
    ({"partitions": True}, "'partitions' must be an integer"),
    ({"replication_factor": 0}, "'replication_factor' must be -1 .* or >= 1"),
    ({"replication_factor": -2}, "'replication_factor' must be an integer >= -1"),
    ({"recovery": "sometimes"}, "'recovery' must be one of marker, full_scan"),
    ({"timeout_s": 0}, "'timeout_s' must be a number > 0"),
    ({"topic": ""}, "'topic' must be a non-empty string"),
    ({"create_topics": "yes"}, "'create_topics' must be true or false"),
])
def test_bad_settings_are_config_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(StoreConfigError, match=message):
        KafkaStore(**{"bootstrap_servers": "127.0.0.1:1", **settings})


def test_open_store_opens_kafka(kafka: KafkaBroker) -> None:  # noqa: F811
    topic = kafka.topic("factory")
    config = {"backend": "kafka", "bootstrap_servers": kafka.bootstrap, "topic": topic,
              "partitions": 2, "recovery": "full_scan", "timeout_s": 20,
              "create_topics": True, "commit": "group"}
    with open_store(config) as store:
        assert isinstance(store, GroupCommitStore)
        store.put_action(action_record(rid("ns")))
    with open_store({"backend": "kafka", "bootstrap_servers": kafka.bootstrap,
                     "topic": topic}) as again:
        assert isinstance(again, KafkaStore) and again.size("ns") == 1
    with pytest.raises(StoreConfigError, match="'bootstrap_servers' is missing"):
        open_store({"backend": "kafka", "topic": topic})
    with pytest.raises(StoreConfigError, match=r"'create_topics' must be true or false"):
        open_store({"backend": "kafka", "bootstrap_servers": kafka.bootstrap,
                    "create_topics": "yes"})
