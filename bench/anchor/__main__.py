"""``make bench-anchor``: the same agent on Apache Flink Agents 0.3.1 (the anchor, Java
runtime, its Kafka action-state store) and on this package (SQLite, PostgreSQL, Kafka), same
machine, same run, durable execution on for both. Prints the table, writes
``bench-results-anchor.json``.

(a) one action, one durable call of trivial work, 1,000 keys: records/s;
(b) one action, one 1 s simulated call, 1,024 runs in flight: runs/s;
(c) a failure after ``--recovery-runs`` completed runs: time from the failure to the first
    output of an input that had not completed before it (scaled down for the anchor when it
    cannot complete that many runs within ``--anchor-budget-s``; ours is then measured at
    the same scale too, and the ratio compares equal scales);
(d) the store after (c): records/messages left, bytes, whether pruned records are gone.

``python -m bench.anchor [--quick] [--profile] [--sides anchor,sqlite,postgres,kafka]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Optional

from bench.anchor import install, report
from bench.anchor.sides import OURS, Outcome, Services, run, work_dir
from bench.kafka_recovery import Broker
from scripts import ROOT, free_port
from scripts.pgserver import PASSWORD_ENV, PgServer


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--sides", default="anchor," + ",".join(OURS))
    p.add_argument("--trivial-runs", type=int, default=6_000, help="(a), ours")
    p.add_argument("--anchor-trivial-runs", type=int, default=1_200, help="(a), anchor")
    p.add_argument("--slow-runs", type=int, default=2_048, help="(b), both")
    p.add_argument("--recovery-runs", type=int, default=100_000, help="(c)")
    p.add_argument("--anchor-budget-s", type=float, default=45,
                   help="(c): the anchor's runs before the failure are scaled down to what "
                        "its rate in (a) completes in this time")
    p.add_argument("--profile", action="store_true",
                   help="also profile (a) on the anchor and on SQLite (bench/anchor/profile)")
    p.add_argument("--only-profile", action="store_true",
                   help="profile (a) on both sides and nothing else (no results file)")
    p.add_argument("--out", default=str(ROOT / "bench-results-anchor.json"))
    args = p.parse_args()
    if args.quick:
        args.trivial_runs, args.anchor_trivial_runs = 3_000, 1_000
        args.slow_runs, args.recovery_runs, args.anchor_budget_s = 1_024, 5_000, 30
    return args


def tail(runs: int) -> int:
    """Inputs after the failure point: enough to see new outputs, few for a slow side."""
    return max(200, runs // 50)


def main() -> int:
    args = parse()
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    ours = [s for s in sides if s in OURS]
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"),
                               "machine": report.machine(), "quick": args.quick}
    anchor_python: Optional[str] = None
    if "anchor" in sides:
        try:
            anchor_python = str(install.ensure())
            results["anchor_install"] = install.describe()
        except install.InstallError as exc:
            results["anchor_install"] = {"error": str(exc)}
            print(f"the anchor cannot be installed: {exc}", file=sys.stderr)
    broker = Broker("anchor-bench")
    pg = PgServer(ROOT / ".pg" / "anchor-bench",
                  port=int(os.environ.get("FAE_PG_PORT", "0")) or free_port())
    os.environ[PASSWORD_ENV] = pg.env()[PASSWORD_ENV]
    all_runs: list[Outcome] = []
    try:
        if "postgres" in ours:
            pg.start()
        services = Services(
            bootstrap=broker.bootstrap,
            kafka_dir=broker.directory / "data" if not os.environ.get("FAE_KAFKA_BOOTSTRAP")
            else None,
            pg={"backend": "postgres", "host": "127.0.0.1", "port": pg.port,
                "dbname": "flink_agents", "user": "flink_agents", "password_env": PASSWORD_ENV},
            work=work_dir(), anchor_python=anchor_python)

        def go(side: str, case: str, label: str, **kw: Any) -> Outcome:
            print(f"-- {label} on {side} ...", flush=True)
            out = run(side, case, services, **kw)
            out.figures["label"] = label
            report.say(out)
            all_runs.append(out)
            return out

        if args.only_profile:
            from bench.anchor import profile

            print(json.dumps(profile.run_all(services, args), indent=2))
            return 0
        # (a) trivial work, 1,000 keys
        trivial = {s: go(s, "trivial", "a", keys=1000, timeout=900,
                         n=args.anchor_trivial_runs if s == "anchor" else args.trivial_runs)
                   for s in sides}
        # (b) 1 s calls, 1,024 in flight; one run per key: at the end of a bounded input our
        # concurrent mode drains a key's queued runs one after another (README), which a
        # second run per key would measure instead of the runs in flight.
        slow = {s: go(s, "slow", "b", n=args.slow_runs, keys=args.slow_runs, in_flight=1024,
                      call_s=1.0, timeout=600) for s in sides}
        # (c) + (d): the anchor first (its scale follows its rate in (a)), then each of our
        # stores at the same scale (the ratio), then our best store of (a) at full scale.
        anchor_runs = args.recovery_runs
        a_rate = trivial.get("anchor") and trivial["anchor"].figures.get("rate")
        recovery: dict[str, Outcome] = {}
        if "anchor" in sides:
            if a_rate:
                scaled = int(a_rate * args.anchor_budget_s) // 1000 * 1000
                anchor_runs = max(1000, min(args.recovery_runs, scaled))
            recovery["anchor"] = go("anchor", "trivial", "c", n=anchor_runs + tail(anchor_runs),
                                    keys=1000, fail_at=anchor_runs, timeout=1200, inspect=True)
        same_scale: dict[str, Outcome] = {}
        for s in ours:
            same_scale[s] = go(s, "trivial", "c@anchor-scale", n=anchor_runs + tail(anchor_runs),
                               keys=1000, fail_at=anchor_runs, timeout=900, inspect=True)
        full = max((s for s in ours if trivial[s].ok), default=None,
                   key=lambda s: trivial[s].figures.get("rate") or 0.0)
        if full is not None and anchor_runs < args.recovery_runs:
            recovery[full] = go(full, "trivial", "c", keys=1000, fail_at=args.recovery_runs,
                                n=args.recovery_runs + tail(args.recovery_runs),
                                timeout=1200, inspect=True)
        elif full is not None:
            recovery.update({s: same_scale.pop(s) for s in ours})
        results.update(report.summarise(trivial, slow, recovery, same_scale,
                                        args.recovery_runs, anchor_runs))
        if args.profile:
            from bench.anchor import profile

            results["profiles"] = profile.run_all(services, args)
    finally:
        broker.stop()
        pg.stop()
    results["runs"] = [report.as_dict(o) for o in all_runs]
    report.table(results)
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=2)
        fh.write("\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
