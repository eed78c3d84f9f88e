"""Benchmark: store records and database file bytes at the end of a long run divided by the
same at its midpoint, under steady load with checkpoints completing (goal <= 1.1).

The real :class:`DurableAgentFunction` in the test harness on a real SQLite file: each round
processes a batch of inputs over a rotating set of keys (one action, one durable call each),
then a checkpoint is snapshotted and completed, which prunes what it covers.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any

from flink_agents_ext.actions import INPUT, ActionContext, Agent, DurableAgentFunction
from flink_agents_ext.testing import KeyedFunctionHarness

ROUNDS = 200
BATCH = 500
KEYS = 5000
PAYLOAD = "x" * 400


def agent() -> Agent:
    a = Agent("growth-bench")

    @a.action(on=INPUT)
    def act(event: Any, ctx: ActionContext) -> None:
        ctx.emit(ctx.durable_execute(str.upper, event))

    return a


def file_bytes(path: str) -> int:
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


def main() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="fae-bench-") as tmp:
        db = os.path.join(tmp, "a.db")
        fn = DurableAgentFunction(agent(), {"backend": "sqlite", "path": db}, "growth")
        h = KeyedFunctionHarness(fn)
        marks: dict[int, tuple[int, int]] = {}
        n = 0
        for r in range(1, ROUNDS + 1):
            for _ in range(BATCH):
                h.process_element(f"{n}{PAYLOAD}", key=n % KEYS)
                n += 1
            # Measured with a checkpoint's worth of records pending, as in a running job.
            if r in (ROUNDS // 2, ROUNDS):
                marks[r] = (fn.store.size("growth"), file_bytes(db))
            h.bridge.snapshot(r)
            h.bridge.complete(r)
            h.outputs.clear()
        h.close()
    (mid_records, mid_bytes), (end_records, end_bytes) = marks[ROUNDS // 2], marks[ROUNDS]
    records_ratio = end_records / mid_records
    bytes_ratio = end_bytes / mid_bytes
    print(f"{'':<14} {'midpoint':>10} {'end':>10} {'ratio':>7}")
    print(f"{'records':<14} {mid_records:>10,} {end_records:>10,} {records_ratio:>7.2f}")
    print(f"{'file bytes':<14} {mid_bytes:>10,} {end_bytes:>10,} {bytes_ratio:>7.2f}")
    print(f"{n:,} inputs in {ROUNDS} checkpoints; goal: <= 1.1", flush=True)
    return {"store_growth_ratio": round(max(records_ratio, bytes_ratio), 3),
            "store_growth_records_ratio": round(records_ratio, 3),
            "store_growth_bytes_ratio": round(bytes_ratio, 3)}


if __name__ == "__main__":
    json.dump(main(), sys.stdout, indent=2)
    print()
