"""``make chaos``: trials of the main job with injected failures, checked against a clean run.

    python -m chaos.run [--trials 20] [--short] [--seed S] [--tickets N]
                        [--no-cluster] [--no-postgres] [--work DIR] [--results FILE]
    python -m chaos.run --spec SPEC [--spec SPEC...] [--parallelism 2]   # chosen trials

1. A failure-free **reference run** of the main job with the hooks of :mod:`chaos.inject`
   (``chaos/job.py``; mini-cluster, SQLite, parallelism 1) on the same input as every trial:
   ``--tickets`` generated tickets plus the bad-input file of :mod:`chaos.inputs`, with
   ``--spec none --bad-input``.
2. ``--trials`` **mini-cluster trials**, each with one failure at a random point
   (:mod:`chaos.inject`): inside an action before / after a durable call, between a durable
   call and its record, during a snapshot, between a checkpoint's completion and its
   notification. Random parameters (action or call, ticket, checkpoint), some trials with
   parallelism 2.
3. Unless ``--short``: a **TaskManager kill** (``kill -9`` of the TaskManager JVM of a
   standalone cluster started by ``scripts/cluster.sh``, then a new TaskManager started with
   ``bin/taskmanager.sh``) and a **PostgreSQL restart** while a job on the PostgreSQL store
   runs (``scripts/pg-test-server.sh restart``), each once a random fraction (15-60 %) of the
   durable calls ran. The cluster job uses PostgreSQL too.

Every run is checked against the reference: the job completed (no ``RestoreBoundaryError``,
no restore error), the failure was really injected, sorted result and dead-letter lines equal
the reference's (``lost``: missing lines, ``unexpected``: extra or different ones), no
recorded durable call ran twice according to the side-effect ledger (``duplicates``; a call
whose record was never written may legitimately run again: ``re-executed (unrecorded)``;
a reconcilable one must run its reconciler instead), each bad input dead-lettered once with
its reason, every generated ticket answered, and no store records left after the final
checkpoint. A notification lost before pruning must be made up for by the restore (it prunes
the restored checkpoint's payloads).

Prints a table, writes ``chaos-results.json`` (``--results``); exit status 0 when every
trial passed, 1 when one did not, 2 when the harness itself could not run. Each trial's
outputs stay in ``--work`` (default ``out/chaos``) for inspection.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from chaos import inject
from chaos.checks import Verdict, collect
from chaos.inputs import bad_inputs, write_input_file
from chaos.plan import KINDS, Plan, plan_trials
from chaos.report import aggregate, machine, table
from chaos.trials import (
    CHECKPOINT_INTERVAL_MS,
    Context,
    run_mini,
    run_pg_restart,
    run_taskmanager_kill,
)
from scripts import ROOT, ToolError
from scripts.pgserver import PASSWORD, PASSWORD_ENV, PgServer


# -- main -----------------------------------------------------------------------------------
def main(argv: Optional[list[str]] = None) -> int:
    """Run the reference and the trials; print the table; write the results."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=None,
                   help="mini-cluster trials (default 20; 4 with --short)")
    p.add_argument("--short", action="store_true",
                   help="a short form: 4 mini-cluster trials (one per failure point 1-4), "
                        "SQLite only, no cluster, no PostgreSQL")
    p.add_argument("--tickets", type=int, default=None,
                   help="generated tickets per run (default 500; 300 with --short)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p.add_argument("--spec", action="append", default=[],
                   help="run this trial (a chaos.inject spec, e.g. notify:before:2) instead "
                        "of random ones; repeatable; implies --no-cluster --no-postgres")
    p.add_argument("--parallelism", type=int, default=1, help="parallelism of --spec trials")
    p.add_argument("--no-cluster", action="store_true", help="skip the TaskManager kill")
    p.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    p.add_argument("--commit", choices=["each", "group"], default="each",
                   help="the store's commit mode in every run (default each; group "
                        "repeats the calls of about the last 50 ms when a process is "
                        "killed outright)")
    p.add_argument("--work", default=str(ROOT / "out" / "chaos"),
                   help="directory of the runs' outputs (default out/chaos)")
    p.add_argument("--results", default=str(ROOT / "chaos-results.json"),
                   help="where to write the results (default chaos-results.json)")
    args = p.parse_args(argv)
    trials = args.trials if args.trials is not None else (4 if args.short else 20)
    tickets = args.tickets or (300 if args.short else 500)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    if trials < 1 or tickets < 50:
        p.error("--trials must be >= 1 and --tickets >= 50")
    for text in args.spec:
        try:
            inject.ChaosSpec.parse(text)
        except ValueError as exc:
            p.error(str(exc))
    cluster = not (args.short or args.no_cluster or args.spec)
    postgres = not (args.short or args.no_postgres or args.spec)
    rng = random.Random(seed)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    # Outputs of an earlier run (only what this harness writes; a cluster left in
    # <work>/cluster is stopped by the cluster trial).
    for pattern in ("reference*", "t[0-9][0-9]*", "bad-input.jsonl"):
        for old in work.glob(pattern):
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()
    started = time.monotonic()
    os.environ[PASSWORD_ENV] = PASSWORD  # the jobs' and this process's stores read it
    env = dict(os.environ)
    ctx = Context(work=work, tickets=tickets, input_file=work / "bad-input.jsonl", env=env,
                  commit=args.commit)
    write_input_file(str(ctx.input_file))
    plans = plan_trials(rng, trials, tickets, args.short, cluster, postgres)
    if args.spec:
        plans = [Plan(f"t{i:02d}", inject.ChaosSpec.parse(text).point, text,
                      parallelism=args.parallelism) for i, text in enumerate(args.spec, 1)]
    print(f"chaos: commit {ctx.commit}, seed {seed}, {tickets} generated tickets + "
          f"{len(bad_inputs())} bad inputs per run, checkpoints every "
          f"{CHECKPOINT_INTERVAL_MS} ms; {len(plans)} trials; outputs in {work}", flush=True)

    verdicts: list[Verdict] = []
    reference_verdict: Optional[Verdict] = None
    try:
        ref_plan = Plan("reference", "reference")
        print(f"[ref] failure-free reference run: {ref_plan.describe()}", flush=True)
        reference_verdict = run_mini(ctx, ref_plan)
        if not reference_verdict.passed or reference_verdict.reexecuted_unrecorded:
            raise ToolError("the reference run is not clean:\n  "
                               + "\n  ".join(reference_verdict.problems))
        ctx.reference = collect(work / ref_plan.name)
        print(f"      {reference_verdict.seconds:.1f}s, {len(ctx.reference.results)} results, "
              f"{len(ctx.reference.dead_letters)} dead letters", flush=True)
        if postgres:
            ctx.pg = PgServer(ROOT / ".pg" / "chaos")
            ctx.pg.start()
        for i, plan in enumerate(plans, 1):
            print(f"[{i:>2}/{len(plans)}] {plan.name} {plan.describe()}", flush=True)
            try:
                if plan.kind == "taskmanager-kill":
                    verdict = run_taskmanager_kill(ctx, plan)
                elif plan.kind == "postgres-restart":
                    verdict = run_pg_restart(ctx, plan)
                else:
                    verdict = run_mini(ctx, plan)
            except ToolError as exc:
                verdict = Verdict(plan.name, plan.kind, plan.spec, plan.runtime, plan.store,
                                  plan.parallelism, harness_error=str(exc),
                                  problems=[f"harness error: {exc}"])
            verdicts.append(verdict)
            what = verdict.injection.get("detail") or ", ".join(
                f"{k} {v}" for k, v in verdict.injection.items()
                if k not in ("injected", "why", "flink_failures"))
            print(f"        {verdict.seconds:.1f}s, restarts {verdict.restarts}, "
                  f"{'ok' if verdict.passed else 'FAILED'}: {what}", flush=True)
            for problem in verdict.problems:
                print(f"        ! {problem}", flush=True)
    except ToolError as exc:
        print(f"chaos: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if ctx.pg is not None:
            try:
                ctx.pg.stop()
            except ToolError as exc:
                print(f"warning: {exc}", file=sys.stderr)

    total = aggregate(verdicts)
    duration = round(time.monotonic() - started, 1)
    by_kind = {kind: aggregate([v for v in verdicts if v.kind == kind])
               for kind in KINDS if any(v.kind == kind for v in verdicts)}
    results = {
        "trials": total["trials"],
        "commit": ctx.commit,
        "duplicates": total["duplicates"],
        "lost": total["lost"],
        "dead_lettered": total["dead_lettered"],
        "unexpected": total["unexpected"],
        "failures_injected": total["injected"],
        "reexecuted_unrecorded": total["reexecuted_unrecorded"],
        "reconciled": total["reconciled"],
        "store_records_left": total["store_records_left"],
        "passed": total["passed"] == total["trials"],
        "failed_trials": [v.name for v in verdicts if not v.passed],
        "by_kind": by_kind,
        "kinds": KINDS,
        "bad_input": {"per_run": len(bad_inputs()),
                      "kinds": {b.kind: b.reason for b in bad_inputs()}},
        "seed": seed, "tickets": tickets, "checkpoint_interval_ms": CHECKPOINT_INTERVAL_MS,
        "duration_s": duration, "machine": machine(),
        "reference": asdict(reference_verdict) if reference_verdict else None,
        "runs": [asdict(v) | {"passed": v.passed} for v in verdicts],
    }
    harness_errors = [v.name for v in verdicts if v.harness_error]
    results["harness_errors"] = harness_errors
    Path(args.results).write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(table(verdicts))
    print(f"\nchaos: {total['passed']}/{total['trials']} trials passed, {total['injected']} "
          f"failures injected, {total['duplicates']} duplicates, {total['lost']} lost, "
          f"{total['dead_lettered']} dead-lettered; {duration:.0f} s; seed {seed}; "
          f"results in {args.results}")
    if harness_errors:
        print(f"chaos: the harness failed in {', '.join(harness_errors)}", file=sys.stderr)
        return 2
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
