"""Benchmark: records/s of the durable function (SQLite store, thread mode) divided by
records/s of the stock PyFlink keyed process function doing the same user work, with
checkpointing on; 1,000 and 100,000 keys (goal >= 0.8)."""

from __future__ import annotations

import json
import sys

from bench.common import rate, run_job

CASES = {"1k": (1_000, 60_000), "100k": (100_000, 200_000)}


def main() -> dict[str, float]:
    results: dict[str, float] = {}
    print(f"{'keys':<6} {'stock rec/s':>12} {'durable rec/s':>14} {'ratio':>7}")
    for name, (keys, n) in CASES.items():
        stock = rate(run_job("bench.durable_job",
                             ["--side", "stock", "--n", str(n), "--keys", str(keys)]))
        durable = rate(run_job("bench.durable_job",
                               ["--side", "durable", "--n", str(n), "--keys", str(keys)]))
        ratio = durable / stock
        print(f"{name:<6} {stock:>12,.0f} {durable:>14,.0f} {ratio:>7.2f}", flush=True)
        results[f"throughput_ratio_{name}_keys"] = round(ratio, 3)
        results[f"throughput_{name}_keys_stock_rps"] = round(stock)
        results[f"throughput_{name}_keys_durable_rps"] = round(durable)
    print("goal: >= 0.8")
    return results


if __name__ == "__main__":
    json.dump(main(), sys.stdout, indent=2)
    print()
