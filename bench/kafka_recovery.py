"""Benchmark: recovery of the Kafka action store at 1M records, from the recovery marker vs
a full scan of the topic (as the Java runtime of Flink Agents rebuilds its cache).

A job's life on the store, compressed: 1,000 checkpoint intervals each write 1,000 records
(500 keys, one action record and one journal entry each, ~450 bytes of payload per pair)
and then prune the interval before (tombstones), as checkpoint completions do. 1M records
were written; one interval's records are live. Then a subtask recovers: a new store object
opens and rebuilds its index (``recorded_runs``, what ``DurableAgentFunction.open`` calls),
with ``recovery: marker`` and ``recovery: full_scan``, best of three, interleaved.

The broker is the throwaway one of ``scripts/kafka-test-server.sh`` in ``.kafka/bench``
(started here and stopped at the end if it was not running; ``FAE_KAFKA_BENCH_PORT`` picks
its port), or ``FAE_KAFKA_BOOTSTRAP`` (host:port) to use another.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from typing import Iterator

from bench.common import ROOT
from flink_agents_ext.store import ActionRecord, CallRecord, CallStatus, RecordId
from flink_agents_ext.store.kafka import KafkaStore

INTERVALS = 1000
KEYS_PER_INTERVAL = 500  # x (action record + journal entry) = 1,000 records per interval
KEY_POOL = 10_000
REPEATS = 3
NS = "bench"
EVENT = b'{"ticket": "' + b"x" * 280 + b'"}'
RESULT = b'"' + b"y" * 100 + b'"'


class Broker:
    """The throwaway broker (started if needed) in ``.kafka/<name>``, or
    ``FAE_KAFKA_BOOTSTRAP``."""

    def __init__(self, name: str = "bench") -> None:
        self.started = False
        self.directory = ROOT / ".kafka" / name
        self.env = {**os.environ, "FAE_KAFKA_DIR": str(self.directory)}
        self.env.pop("FAE_KAFKA_PORT", None)
        if os.environ.get("FAE_KAFKA_BENCH_PORT"):
            self.env["FAE_KAFKA_PORT"] = os.environ["FAE_KAFKA_BENCH_PORT"]
        given = os.environ.get("FAE_KAFKA_BOOTSTRAP")
        if given:
            self.bootstrap = given
            return
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "kafka-test-server.sh"), "start"],
                              capture_output=True, text=True, timeout=900, env=self.env)
        if proc.returncode != 0:
            raise RuntimeError(f"cannot start the Kafka broker: {proc.stderr}")
        self.started = "kafka-test-server: started" in proc.stderr
        values = dict(item.split("=", 1) for item in proc.stdout.split())
        self.bootstrap = values["FAE_KAFKA_BOOTSTRAP"]

    def stop(self) -> None:
        """Stop the broker if this benchmark started it."""
        if self.started:
            subprocess.run(["bash", str(ROOT / "scripts" / "kafka-test-server.sh"), "stop"],
                           capture_output=True, text=True, timeout=120, env=self.env)


def interval(number: int) -> Iterator[tuple[ActionRecord, CallRecord]]:
    """The records of one checkpoint interval: ``number`` is every key's sequence."""
    first = number * KEYS_PER_INTERVAL % KEY_POOL
    for k in range(first, first + KEYS_PER_INTERVAL):
        record_id = RecordId(NS, f's:"customer-{k % KEY_POOL}"', number, "respond", 0)
        yield (ActionRecord(record_id, EVENT, b"[]", b"[]", b"{}", True),
               CallRecord(record_id, 0, "model.complete", "d" * 16, CallStatus.OK, RESULT))


def write(bootstrap: str, topic: str) -> int:
    """A job's life on the store; returns the live records left."""
    started = time.monotonic()
    with KafkaStore(bootstrap, topic=topic, partitions=4, timeout_s=120) as store:
        previous: dict[str, int] = {}
        for number in range(INTERVALS):
            pairs = list(interval(number))
            store.put_many([a for a, _ in pairs], [c for _, c in pairs])
            store.prune(NS, previous)
            previous = {a.id.key: number for a, _ in pairs}
            if number % 200 == 199:
                print(f"  wrote {(number + 1) * 2 * KEYS_PER_INTERVAL:>9,} records "
                      f"({time.monotonic() - started:.0f} s)", flush=True)
        return store.size(NS)


def put_latency(bootstrap: str, topic: str, count: int = 2000) -> tuple[float, float]:
    """Milliseconds per put when each is acknowledged before the next (``commit: each``),
    and microseconds per record in batches of 1,000 (what group commit writes)."""
    with KafkaStore(bootstrap, topic=topic, timeout_s=120) as store:
        pairs = [pair for number in range(count // KEYS_PER_INTERVAL // 2)
                 for pair in interval(number)]
        started = time.perf_counter()
        for action, call in pairs:
            store.put_call(call)
            store.put_action(action)
        each_ms = (time.perf_counter() - started) * 1000 / (2 * len(pairs))
        started = time.perf_counter()
        for number in range(10):
            batch = list(interval(1000 + number))
            store.put_many([a for a, _ in batch], [c for _, c in batch])
        batch_us = (time.perf_counter() - started) * 1e6 / (10 * 2 * KEYS_PER_INTERVAL)
        store.clear_namespace(NS)
        return each_ms, batch_us


def recover(bootstrap: str, topic: str, recovery: str) -> tuple[float, int, int]:
    """Seconds to open a store and rebuild the namespace's index; messages read; runs."""
    started = time.perf_counter()
    with KafkaStore(bootstrap, topic=topic, recovery=recovery, timeout_s=120) as store:
        runs = store.recorded_runs(NS)
        seconds = time.perf_counter() - started
        return seconds, store.messages_read, len(runs)


def main() -> dict[str, float]:
    broker = Broker()
    try:
        each_ms, batch_us = put_latency(broker.bootstrap, f"bench-puts-{uuid.uuid4().hex[:8]}")
        topic = f"bench-recovery-{uuid.uuid4().hex[:8]}"
        live = write(broker.bootstrap, topic)
        best: dict[str, tuple[float, int, int]] = {}
        for _ in range(REPEATS):
            for mode in ("full_scan", "marker"):
                result = recover(broker.bootstrap, topic, mode)
                if mode not in best or result[0] < best[mode][0]:
                    best[mode] = result
    finally:
        broker.stop()
    full, marker = best["full_scan"], best["marker"]
    if full[2] != marker[2] or marker[2] != KEYS_PER_INTERVAL:
        raise RuntimeError(f"recoveries disagree: {full[2]} vs {marker[2]} runs")
    written = INTERVALS * 2 * KEYS_PER_INTERVAL
    print(f"{written:,} records written in {INTERVALS} checkpoint intervals, pruned as "
          f"checkpoints completed; {live:,} live")
    print(f"{'recovery':<12} {'seconds':>9} {'messages read':>14}")
    for mode, (seconds, read, _) in (("full_scan", full), ("marker", marker)):
        print(f"{mode:<12} {seconds:>9.3f} {read:>14,}")
    speedup = full[0] / marker[0]
    print(f"marker recovery is {speedup:.0f}x faster (best of {REPEATS})")
    print(f"puts: {each_ms:.2f} ms each when acknowledged one by one, {batch_us:.1f} us per "
          f"record in batches of {2 * KEYS_PER_INTERVAL:,}", flush=True)
    return {"kafka_recovery_s_full_scan_1m": round(full[0], 3),
            "kafka_recovery_s_marker_1m": round(marker[0], 3),
            "kafka_recovery_messages_full_scan_1m": full[1],
            "kafka_recovery_messages_marker_1m": marker[1],
            "kafka_recovery_speedup_1m": round(speedup, 1),
            "kafka_put_ms_each": round(each_ms, 3),
            "kafka_put_us_per_record_batched": round(batch_us, 1)}


if __name__ == "__main__":
    json.dump(main(), sys.stdout, indent=2)
    print()
