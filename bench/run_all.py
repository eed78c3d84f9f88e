"""``make bench``: run every benchmark, print each table, write ``bench-results.json``.

Each benchmark measures its two sides in the same run on the same machine.
"""

from __future__ import annotations

import json
import time
from types import ModuleType

from bench import (
    bridge_overhead,
    concurrency,
    durable_throughput,
    kafka_recovery,
    plot,
    scale,
    snapshot_cost,
    store_growth,
)
from bench.common import ROOT, machine

#: The benchmarks, in the order they run: a title, and the module whose ``main()`` runs it and
#: returns its results.
BENCHMARKS: list[tuple[str, ModuleType]] = [
    ("checkpoint bridge overhead (trivial keyed function, 1,000 keys)", bridge_overhead),
    ("concurrent runs (1,000 keys, 100 ms simulated call per action)", concurrency),
    ("scale: 64 / 1,024 / 4,096 runs in flight, 1 s call, sync and async def", scale),
    ("checkpoint bookkeeping: 1M vs 10k keys in state, vs a full-scan reference",
     snapshot_cost),
    ("durable function vs stock keyed function, same user work", durable_throughput),
    ("store growth under steady load (end vs midpoint)", store_growth),
    ("Kafka store: recovery at 1M records, from the marker vs a full scan", kafka_recovery),
]


def main() -> None:
    results: dict[str, object] = {"machine": machine(),
                                  "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    for i, (title, module) in enumerate(BENCHMARKS):
        print(("\n" if i else "") + f"== {title} ==")
        results.update(module.main())
    path = ROOT / "bench-results.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {path} and {plot.plot(results, ROOT / 'bench-results')}")


if __name__ == "__main__":
    main()
