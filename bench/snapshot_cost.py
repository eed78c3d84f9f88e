"""Benchmark: checkpoint-time bookkeeping (snapshot + completion + prune) when 1,000 keys
change per checkpoint, with 1,000,000 keys in state vs 10,000 keys in state.

Both sides run the real :class:`DurableAgentFunction` in the test harness on a real SQLite
store; only the bookkeeping is timed. ``ours`` captures the last completed sequence of the
keys whose runs completed since the previous snapshot (kept by the run mode as the runs
complete); ``baseline`` is a reference implementation of the
full-scan algorithm of the Java runtime: at every snapshot it scans every key's last
completed sequence, and at completion it prunes every key of the scan.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from typing import Any, Callable

from flink_agents_ext.actions import INPUT, ActionContext, Agent, DurableAgentFunction
from flink_agents_ext.actions.modes import NEXT_SEQ_STATE
from flink_agents_ext.checkpoint.function import SnapshotContext
from flink_agents_ext.keys import encode_key
from flink_agents_ext.testing import KeyedFunctionHarness

CHANGED = 1000
ROUNDS = 5


def agent() -> Agent:
    a = Agent("snapshot-bench")

    @a.action(on=INPUT)
    def act(event: int, ctx: ActionContext) -> None:
        ctx.emit(ctx.durable_execute(abs, event))

    return a


class FullScan(DurableAgentFunction):
    """The full-scan reference: every key's last completed sequence at every snapshot."""

    all_keys: Callable[[], Any]

    def snapshot_state(self, context: SnapshotContext) -> Any:
        self.runs.take_completed()  # not used: every key is scanned
        # Inline runs complete before the next input: last completed = next sequence - 1.
        return {encode_key(k): seq - 1 for k, seq in self.all_keys()}


def measure(keys_in_state: int, full_scan: bool) -> float:
    """Median seconds of bookkeeping per checkpoint."""
    with tempfile.TemporaryDirectory(prefix="fae-bench-") as tmp:
        cls = FullScan if full_scan else DurableAgentFunction
        fn = cls(agent(), {"backend": "sqlite", "path": os.path.join(tmp, "a.db")}, "bench")
        # Keys processed (and pruned) long ago: state holds their sequences, the store
        # holds nothing for them.
        h = KeyedFunctionHarness(fn, keyed_state={
            NEXT_SEQ_STATE: {k: 1 for k in range(keys_in_state)}})
        if full_scan:
            fn.all_keys = lambda: h.state_items(NEXT_SEQ_STATE)
        times = []
        for r in range(ROUNDS):
            for i in range(CHANGED):
                key = (r * CHANGED + i) % keys_in_state
                h.process_element(i, key=key)
            # The bridge calls alone: the harness's snapshot() would also deep-copy all
            # keyed state (for later restores), which Flink's backends do differently.
            started = time.perf_counter()
            h.bridge.snapshot(r + 1)
            h.bridge.complete(r + 1)
            times.append(time.perf_counter() - started)
        h.close()
        times.sort()
        return times[len(times) // 2]


def main() -> dict[str, float]:
    rows = {}
    for name, full_scan in (("ours", False), ("baseline", True)):
        small = measure(10_000, full_scan)
        large = measure(1_000_000, full_scan)
        rows[name] = (small, large, large / small)
    print(f"{'bookkeeping per checkpoint':<28} {'10k keys':>10} {'1M keys':>10} {'ratio':>7}")
    for name, (small, large, ratio) in rows.items():
        print(f"{name:<28} {small * 1e3:>8.1f}ms {large * 1e3:>8.1f}ms {ratio:>7.2f}")
    print("goal: ours <= 2 (flat in the number of keys)", flush=True)
    return {"snapshot_cost_ratio_1m_vs_10k": round(rows["ours"][2], 2),
            "baseline_snapshot_cost_ratio_1m_vs_10k": round(rows["baseline"][2], 2),
            "snapshot_cost_ms_10k": round(rows["ours"][0] * 1e3, 2),
            "snapshot_cost_ms_1m": round(rows["ours"][1] * 1e3, 2),
            "baseline_snapshot_cost_ms_1m": round(rows["baseline"][1] * 1e3, 2)}


if __name__ == "__main__":
    json.dump(main(), sys.stdout, indent=2)
    print()
