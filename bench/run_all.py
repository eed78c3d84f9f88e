"""``make bench``: run every benchmark, print each table, write ``bench-results.json``.

Each benchmark measures its two sides in the same run on the same machine.
"""

from __future__ import annotations

import json
import time

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


def main() -> None:
    results: dict[str, object] = {"machine": machine(),
                                  "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    print("== checkpoint bridge overhead (trivial keyed function, 1,000 keys) ==")
    results.update(bridge_overhead.main())
    print("\n== concurrent runs (1,000 keys, 100 ms simulated call per action) ==")
    results.update(concurrency.main())
    print("\n== scale: 64 / 1,024 / 4,096 runs in flight, 1 s call, sync and async def ==")
    results.update(scale.main())
    print("\n== checkpoint bookkeeping: 1M vs 10k keys in state, vs a full-scan reference ==")
    results.update(snapshot_cost.main())
    print("\n== durable function vs stock keyed function, same user work ==")
    results.update(durable_throughput.main())
    print("\n== store growth under steady load (end vs midpoint) ==")
    results.update(store_growth.main())
    print("\n== Kafka store: recovery at 1M records, from the marker vs a full scan ==")
    results.update(kafka_recovery.main())
    path = ROOT / "bench-results.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {path} and {plot.plot(results, ROOT / 'bench-results')}")


if __name__ == "__main__":
    main()
