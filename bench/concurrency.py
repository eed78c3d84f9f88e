"""Benchmark: 1,000 keys, a simulated 100 ms call per action: throughput with 64 runs in
flight divided by throughput with 1 in flight (thread mode, SQLite store, checkpoints on)."""

from __future__ import annotations

import json
import sys

from bench.common import rate, run_job


def main() -> dict[str, float]:
    one = rate(run_job("bench.concurrency_job", ["--max-in-flight", "1", "--n", "40"]))
    many = rate(run_job("bench.concurrency_job", ["--max-in-flight", "64", "--n", "3000"]))
    speedup = many / one
    print(f"{'runs in flight':<16} {'runs/s':>8}")
    print(f"{1:<16} {one:>8.1f}")
    print(f"{64:<16} {many:>8.1f}")
    print(f"speed-up: {speedup:.1f}x (goal >= 40x)", flush=True)
    return {"async_runs_per_s_1": round(one, 2), "async_runs_per_s_64": round(many, 2),
            "async_speedup": round(speedup, 2)}


if __name__ == "__main__":
    json.dump(main(), sys.stdout, indent=2)
    print()
