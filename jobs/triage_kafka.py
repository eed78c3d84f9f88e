"""The Kafka side of the main job (profile ``conf/kafka.yaml``).

* :func:`prepare_topics` creates the input, results and dead-letter topics (a fresh run
  deletes them first) and fills the input topic with the tickets, keyed by customer, with a
  small producer (``acks=all``, idempotent);
* :func:`ticket_lines` reads them with PyFlink's ``KafkaSource``, bounded by the end offsets
  at job start, so the job ends when it has answered them;
* :func:`write_outputs` writes results and dead letters with exactly-once ``KafkaSink``s
  (Kafka transactions committed when a checkpoint completes; ``transaction.timeout.ms`` from
  the configuration, below the broker's maximum; a transactional id prefix unique per run);
* :func:`read_committed` reads a topic back as a consumer with
  ``isolation.level=read_committed`` sees it: what a failover left in aborted transactions
  is not there.
"""

from __future__ import annotations

import json
import time
from typing import Iterable

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from pyflink.common import WatermarkStrategy
from pyflink.common.serialization import SimpleStringSchema
from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
)

from flink_agents_ext.config import KafkaSettings

#: Bound on every wait for the broker (topic creation, delivery, reading back).
TIMEOUT_S = 60.0


class KafkaSetupError(RuntimeError):
    """The broker could not be reached or a topic could not be created or filled."""


def _topics(kafka: KafkaSettings) -> list[str]:
    return [kafka.input_topic, kafka.results_topic, kafka.dead_letters_topic]


def prepare_topics(kafka: KafkaSettings, tickets: Iterable[str], fresh: bool) -> int:
    """Create the job's topics and fill the input topic with ``tickets``; return their count.

    With ``fresh`` the topics are deleted and created again first; otherwise (a resume)
    existing topics are kept and nothing is produced.
    """
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    try:
        existing = set(admin.list_topics(timeout=TIMEOUT_S).topics)
    except KafkaException as exc:
        raise KafkaSetupError(f"cannot reach the Kafka brokers at {kafka.bootstrap_servers} "
                              f"(kafka.bootstrap_servers): {exc}") from exc
    if fresh and existing & set(_topics(kafka)):
        doomed = sorted(existing & set(_topics(kafka)))
        for future in admin.delete_topics(doomed, operation_timeout=TIMEOUT_S).values():
            future.result()
        deadline = time.monotonic() + TIMEOUT_S
        while set(doomed) & set(admin.list_topics(timeout=TIMEOUT_S).topics):
            if time.monotonic() > deadline:
                raise KafkaSetupError(f"topics {doomed} were not deleted in {TIMEOUT_S} s")
            time.sleep(0.2)
        existing -= set(doomed)
    missing = [t for t in _topics(kafka) if t not in existing]
    if missing:
        futures = admin.create_topics([NewTopic(t, kafka.partitions, 1) for t in missing],
                                      operation_timeout=TIMEOUT_S)
        for topic, future in futures.items():
            try:
                future.result()
            except KafkaException as exc:
                raise KafkaSetupError(f"cannot create topic {topic!r}: {exc}") from exc
    if not fresh:
        return 0
    return _produce(kafka, tickets)


def _produce(kafka: KafkaSettings, tickets: Iterable[str]) -> int:
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 20})
    failures: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    count = 0
    for line in tickets:
        try:
            key = json.loads(line).get("customer")
        except (ValueError, AttributeError):
            key = None  # a bad line: the parser dead-letters it; any partition will do
        while True:
            try:
                producer.produce(kafka.input_topic, line.encode(),
                                 key.encode() if isinstance(key, str) else None,
                                 on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
    left = producer.flush(TIMEOUT_S)
    if left or failures:
        raise KafkaSetupError(f"filling {kafka.input_topic!r}: {left} tickets undelivered, "
                              f"{len(failures)} failed ({failures[:1]})")
    return count


def ticket_lines(env: StreamExecutionEnvironment, kafka: KafkaSettings,
                 run_id: str) -> DataStream:
    """The input topic as a bounded stream of lines (up to its end offsets at job start)."""
    source = (KafkaSource.builder()
              .set_bootstrap_servers(kafka.bootstrap_servers)
              .set_topics(kafka.input_topic)
              .set_group_id(f"support-triage-{run_id}")
              .set_starting_offsets(KafkaOffsetsInitializer.earliest())
              .set_bounded(KafkaOffsetsInitializer.latest())
              .set_value_only_deserializer(SimpleStringSchema())
              .build())
    return env.from_source(source, WatermarkStrategy.no_watermarks(), "ticket-topic") \
        .uid("ticket-topic")


def _sink(kafka: KafkaSettings, topic: str, prefix: str) -> KafkaSink:
    serializer = (KafkaRecordSerializationSchema.builder().set_topic(topic)
                  .set_value_serialization_schema(SimpleStringSchema()).build())
    return (KafkaSink.builder()
            .set_bootstrap_servers(kafka.bootstrap_servers)
            .set_record_serializer(serializer)
            .set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
            .set_transactional_id_prefix(prefix)
            .set_property("transaction.timeout.ms", str(kafka.transaction_timeout_ms))
            .build())


def write_outputs(results: DataStream, dead_letters: DataStream, kafka: KafkaSettings,
                  run_id: str) -> None:
    """Results and dead letters to their topics, exactly once (one transaction per
    checkpoint and subtask; the prefixes are unique to this run)."""
    results.sink_to(_sink(kafka, kafka.results_topic, f"triage-results-{run_id}")) \
        .uid("results-sink").name("results")
    dead_letters.sink_to(_sink(kafka, kafka.dead_letters_topic, f"triage-dead-{run_id}")) \
        .uid("dead-letter-sink").name("dead-letters")


def read_committed(bootstrap_servers: str, topic: str) -> list[str]:
    """Every committed value of ``topic``, as a ``read_committed`` consumer sees it, up to
    the end offsets at the call (bounded by :data:`TIMEOUT_S`)."""
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": "fae-summary",
                         "isolation.level": "read_committed", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    try:
        meta = consumer.list_topics(topic, timeout=TIMEOUT_S).topics[topic]
        if meta.error is not None:
            raise KafkaSetupError(f"topic {topic!r}: {meta.error}")
        parts = [TopicPartition(topic, p, 0) for p in meta.partitions]
        # With read_committed the high watermark is reached only when no transaction is
        # open; the job has ended, so every transaction is committed or aborted.
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=TIMEOUT_S)[1]
                for p in parts}
        consumer.assign(parts)
        values: list[str] = []
        deadline = time.monotonic() + TIMEOUT_S
        pending = {p for p, end in ends.items() if end > 0}
        while pending:
            if time.monotonic() > deadline:
                raise KafkaSetupError(f"reading {topic!r} did not reach its end offsets "
                                      f"{ends} in {TIMEOUT_S} s (a transaction still open?)")
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                values.append(msg.value().decode())
            for tp in consumer.position([TopicPartition(topic, p) for p in pending]):
                if tp.offset >= ends[tp.partition]:
                    pending.discard(tp.partition)
        return values
    finally:
        consumer.close()
