"""Benchmark: a trivial keyed function through our checkpointing operator vs the stock one,
in thread and process mode, side by side (records/s inside the function, checkpoints on)."""

from __future__ import annotations

import json
import sys

from bench.common import rate, run_job

SIZES = {"thread": 300_000, "process": 60_000}


def main(repeats: int = 2) -> dict[str, float]:
    results: dict[str, float] = {}
    print(f"{'mode':<8} {'stock rec/s':>12} {'ours rec/s':>12} {'ratio':>7}")
    for mode, n in SIZES.items():
        best: dict[str, float] = {}
        for _ in range(repeats):
            for operator in ("stock", "ours"):
                r = rate(run_job("bench.bridge_job", ["--operator", operator, "--mode", mode,
                                                      "--n", str(n)]))
                best[operator] = max(best.get(operator, 0.0), r)
        ratio = best["ours"] / best["stock"]
        print(f"{mode:<8} {best['stock']:>12,.0f} {best['ours']:>12,.0f} {ratio:>7.2f}",
              flush=True)
        results[f"bridge_{mode}_stock_rps"] = round(best["stock"])
        results[f"bridge_{mode}_ours_rps"] = round(best["ours"])
        results[f"bridge_overhead_ratio_{mode}"] = round(ratio, 3)
    return results


if __name__ == "__main__":
    json.dump(main(), sys.stdout, indent=2)
    print()
