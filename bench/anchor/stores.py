"""Measure (d): what each store holds after a run, and whether pruned records are gone.

* a Kafka topic (the anchor's action-state topic, or our Kafka store's records topic): the
  messages in its log (end - start offsets), the distinct keys, the keys whose last message
  is a tombstone (removed by the log cleaner at the next compaction; the records are then
  gone) and the keys still live (compaction keeps the last message of each key), and the
  bytes of its partitions' log segments on the broker's disk;
* our SQL stores: the records left in the namespace and the bytes of the file (SQLite, with
  its WAL) or of the tables (PostgreSQL, ``pg_total_relation_size``).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any, Optional

__all__ = ["kafka_topic", "sql_store"]


def _log_bytes(paths: list[Path]) -> int:
    """Bytes of the partitions' log segments (the messages; not the preallocated indexes)."""
    return sum(f.stat().st_size for p in paths for f in p.glob("*.log"))


def kafka_topic(bootstrap: str, topic: str, data_dir: Optional[Path],
                timeout_s: float = 120.0) -> dict[str, Any]:
    """Scan ``topic`` from the beginning; count messages, keys, tombstones and live keys."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"fae-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "enable.partition.eof": True})
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
        if meta.error is not None:
            raise RuntimeError(f"topic {topic}: {meta.error}")
        parts = sorted(meta.partitions)
        messages = 0
        ends: dict[int, int] = {}
        for p in parts:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                       timeout=timeout_s)
            messages += high - low
            ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        last: dict[bytes, bool] = {}  # key -> is the last message a tombstone
        remaining = {p for p in parts if ends[p] > 0}
        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, timeout=1.0):
                err, part, offset = msg.error(), msg.partition() or 0, msg.offset() or 0
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(part)
                    continue
                last[msg.key() or b""] = msg.value() is None
                if offset + 1 >= ends[part]:
                    remaining.discard(part)
        if remaining:
            raise RuntimeError(f"topic {topic}: scan did not finish in {timeout_s}s")
    finally:
        consumer.close()
    tombstoned = sum(1 for dead in last.values() if dead)
    disk = None
    if data_dir is not None and data_dir.is_dir():
        disk = _log_bytes([d for d in data_dir.iterdir()
                           if d.is_dir() and d.name.rsplit("-", 1)[0] == topic])
    return {"messages": messages, "keys": len(last), "tombstoned_keys": tombstoned,
            "live_keys": len(last) - tombstoned, "disk_bytes": disk}


def sql_store(config: dict[str, Any], namespace: str) -> dict[str, Any]:
    """Records left in ``namespace`` of a SQLite or PostgreSQL store, and its bytes."""
    from flink_agents_ext.store import open_store

    with open_store(config) as store:
        records = store.size(namespace)
    disk: Optional[int] = None
    if config["backend"] == "sqlite":
        disk = sum(os.path.getsize(config["path"] + suffix) for suffix in ("", "-wal")
                   if os.path.exists(config["path"] + suffix))
    elif config["backend"] == "postgres":
        import psycopg

        with psycopg.connect(host=config["host"], port=config["port"],
                             dbname=config["dbname"], user=config["user"],
                             password=os.environ[config["password_env"]]) as conn:
            row = conn.execute(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind = 'r'",
                (config.get("schema", "public"),)).fetchone()
            disk = int(row[0]) if row else None
    return {"records": records, "disk_bytes": disk}
