"""The throwaway Kafka broker (scripts/kafka-test-server.sh) and the Maven fetcher."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from flink_agents_ext import maven
from tests.kafka_broker import KafkaBroker, kafka  # noqa: F401 (fixture)


def test_start_is_idempotent_and_status_reports(kafka: KafkaBroker) -> None:  # noqa: F811
    if kafka.managed:
        again = kafka.control("start")
        assert f"FAE_KAFKA_BOOTSTRAP={kafka.bootstrap}" in again.split()
        kafka.control("status")
    host, port = kafka.bootstrap.rsplit(":", 1)
    assert host == "127.0.0.1" or not kafka.managed, "the test broker listens on loopback"
    assert int(port) > 0


def test_transactions_and_read_committed(kafka: KafkaBroker) -> None:  # noqa: F811
    topic = kafka.topic("broker")
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
    producer = Producer({"bootstrap.servers": kafka.bootstrap,
                         "transactional.id": f"tx-{topic}"})
    producer.init_transactions(30)
    for value, commit in ((b"kept", True), (b"aborted", False)):
        producer.begin_transaction()
        producer.produce(topic, value)
        (producer.commit_transaction if commit else producer.abort_transaction)(30)
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": topic,
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    seen: list[bytes] = []
    for _ in range(40):
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            seen.append(msg.value())
        if seen and msg is None:
            break
    consumer.close()
    assert seen == [b"kept"]


def test_maven_missing_gives_a_clear_error(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAE_MAVEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn on the PATH
    monkeypatch.delenv("FAE_MVN", raising=False)
    with pytest.raises(maven.MavenFetchError, match="apt-get install maven"):
        maven.fetch("x", ["org.example:none:1"])


def test_maven_failure_names_the_artifact_and_is_not_cached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "mvn"
    fake.write_text("#!/bin/sh\necho 'Could not resolve org.example:none:1' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("FAE_MAVEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FAE_MVN", str(fake))
    for _ in range(2):  # a failure leaves nothing that a second call would take as done
        with pytest.raises(maven.MavenFetchError, match=r"org\.example:none:1") as err:
            maven.fetch("x", ["org.example:none:1"])
        assert "Could not resolve" in str(err.value)
    assert not (tmp_path / "cache" / "x" / ".complete").exists()
    with pytest.raises(maven.MavenFetchError, match="GROUP:ARTIFACT:VERSION"):
        maven.fetch("y", ["not-a-coordinate"])
