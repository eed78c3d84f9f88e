"""``make chaos``: trials of the main job with injected failures, checked against a clean run.

    python -m chaos.run [--trials 60] [--short] [--seed S] [--tickets N]
                        [--no-cluster] [--no-postgres] [--no-kafka] [--work DIR]
                        [--results FILE]
    python -m chaos.run --spec SPEC [--spec SPEC...] [--kind K] [configuration options]
                                                                        # chosen trials

Every trial draws its **configuration** (:mod:`chaos.config`: execution mode, max_in_flight,
commit mode, retention, parallelism, life cycle run / savepoint / fresh-on-used, store
backend) as well as its failure point; what each configuration promises is printed before
the trials run and checked after each. A failing trial prints the command that reruns
exactly it (``--spec`` with its configuration options and the seed).

1. A failure-free **reference run** of the main job with the hooks of :mod:`chaos.inject`
   (``chaos/job.py``; mini-cluster, SQLite, parallelism 1) on the same input as every trial:
   ``--tickets`` generated tickets plus the bad-input file of :mod:`chaos.inputs`, with
   ``--spec none --bad-input``.
2. ``--trials`` **mini-cluster trials**, each with one failure at a random point
   (:mod:`chaos.inject`): inside an action before / after a durable call, between a durable
   call and its record, during a snapshot, between a checkpoint's completion and its
   notification. Random parameters (action or call, ticket, checkpoint), each in a drawn
   configuration (SQLite, PostgreSQL and Kafka stores; PostgreSQL and Kafka servers are
   started for the run).
3. Unless ``--short``: a **PostgreSQL restart** while a job on a PostgreSQL server of its
   own runs (``scripts/pg-test-server.sh restart``) and two **TaskManager kills** (``kill
   -9`` of the TaskManager JVM of a standalone cluster started by ``scripts/cluster.sh``,
   then a new TaskManager), with ``commit: each`` and ``commit: group``, each once a random fraction
   (15-60 %) of the durable calls ran. The cluster jobs use PostgreSQL too.

Everything runs ``--jobs`` at once (default 3: the jobs wait much of their time): the
reference while the servers start, then the trials, the longest first; a trial's check waits
for the reference. The mini-cluster jobs get a faster JVM start (:mod:`scripts.jvmfast`: C1
only, a class-data-sharing archive written once per installation).

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
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Optional

from chaos import config as cfgs
from chaos import inject
from chaos.checks import Verdict, collect
from chaos.inputs import bad_inputs, write_input_file
from chaos.plan import KINDS, MINI_KINDS, SLOW_RATE, Plan, plan_trials
from chaos.report import aggregate, by_config, config_table, machine, table
from chaos.trials import (
    CHECKPOINT_INTERVAL_MS,
    Context,
    UpstreamRace,
    run_mini,
    run_pg_restart,
    run_taskmanager_kill,
)
from scripts import ROOT, ToolError, jvmfast
from scripts.kafkaserver import KafkaServer
from scripts.pgserver import PASSWORD, PASSWORD_ENV, PgServer

#: Attempts of a trial whose job hits the PyFlink process-mode race (README, Known issues).
RACE_ATTEMPTS = 3


# -- main -----------------------------------------------------------------------------------
def arguments() -> argparse.ArgumentParser:
    """The command line (see the module)."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=None,
                   help="mini-cluster trials (default 60; 4 with --short)")
    p.add_argument("--short", action="store_true",
                   help="a short form: 4 mini-cluster trials (one per failure point 1-4) in "
                        "drawn configurations, SQLite only, no cluster, no servers")
    p.add_argument("--tickets", type=int, default=None,
                   help="generated tickets per run (default 200)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p.add_argument("--jobs", type=int, default=3,
                   help="trials that run at once (default 3; the two TaskManager kills "
                        "share one cluster and run one after the other)")
    p.add_argument("--no-cluster", action="store_true", help="skip the TaskManager kills")
    p.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    p.add_argument("--no-kafka", action="store_true", help="skip the Kafka store")
    p.add_argument("--work", default=str(ROOT / "out" / "chaos"),
                   help="directory of the runs' outputs (default out/chaos)")
    p.add_argument("--results", default=str(ROOT / "chaos-results.json"),
                   help="where to write the results (default chaos-results.json)")
    chosen = p.add_argument_group("chosen trials (--spec; what a failing trial prints)")
    chosen.add_argument("--spec", action="append", default=[],
                        help="run this trial (a chaos.inject spec, e.g. notify:before:2) "
                             "instead of random ones; repeatable")
    chosen.add_argument("--kind", choices=list(KINDS), default=None,
                        help="the failure kind (default: the spec's point)")
    chosen.add_argument("--mode", choices=cfgs.MODES, default="thread")
    chosen.add_argument("--max-in-flight", type=int, default=0)
    chosen.add_argument("--commit", choices=cfgs.COMMITS, default="each")
    chosen.add_argument("--retention", type=int, choices=cfgs.RETENTIONS, default=1)
    chosen.add_argument("--parallelism", type=int, default=1)
    chosen.add_argument("--lifecycle", choices=cfgs.LIFECYCLES, default="run")
    chosen.add_argument("--resume-parallelism", type=int, default=0)
    chosen.add_argument("--backend", choices=cfgs.BACKENDS, default="sqlite")
    chosen.add_argument("--stop-fraction", type=float, default=0.2,
                        help="savepoint / fresh-on-used: stop or kill the first job then")
    chosen.add_argument("--at-fraction", type=float, default=0.3,
                        help="TaskManager kill / PostgreSQL restart: once this fraction ran")
    chosen.add_argument("--rate", type=int, default=0, help="generated tickets per second")
    return p


def chosen_plans(args: argparse.Namespace) -> list[Plan]:
    """The trials of ``--spec`` in the configuration of the command line."""
    config = cfgs.TrialConfig(args.mode, args.max_in_flight, args.commit, args.retention,
                              args.parallelism, args.lifecycle, args.resume_parallelism,
                              args.backend)
    plans = []
    for i, text in enumerate(args.spec, 1):
        kind = args.kind or inject.ChaosSpec.parse(text).point
        kill = kind in ("taskmanager-kill", "postgres-restart")
        plans.append(Plan(f"t{i:02d}", kind, text, config=config,
                          runtime="standalone cluster" if kind == "taskmanager-kill"
                          else "mini-cluster",
                          rate=args.rate or (SLOW_RATE if kill else 0),
                          at_fraction=args.at_fraction if kill else 0.0,
                          stop_fraction=(args.stop_fraction if args.lifecycle != "run"
                                         else 0.0)))
    return plans


def run_trial(ctx: Context, plan: Plan) -> Verdict:
    """One trial; run again (at most :data:`RACE_ATTEMPTS` in all) while its job hits the
    PyFlink process-mode race."""
    started = time.monotonic()
    for attempt in range(1, RACE_ATTEMPTS + 1):
        try:
            if plan.kind == "taskmanager-kill":
                verdict = run_taskmanager_kill(ctx, plan)
            elif plan.kind == "postgres-restart":
                verdict = run_pg_restart(ctx, plan)
            else:
                verdict = run_mini(ctx, plan)
        except UpstreamRace:
            verdict = unchecked(plan, upstream_race=True,
                                problems=["the first job hit the PyFlink process-mode race "
                                          "(README, Known issues)"])
        except ToolError as exc:
            verdict = unchecked(plan, harness_error=str(exc),
                                problems=[f"harness error: {exc}"])
        verdict.attempts = attempt
        verdict.seconds = round(time.monotonic() - started, 1)  # every phase and attempt
        if not verdict.upstream_race:
            break
        print(f"        {plan.name}: attempt {attempt} hit the PyFlink process-mode race "
              f"(README, Known issues){'; again' if attempt < RACE_ATTEMPTS else ''}",
              flush=True)
    return verdict


def unchecked(plan: Plan, **outcome: Any) -> Verdict:
    """The verdict of a trial that could not be checked (``outcome``: why)."""
    return Verdict(plan.name, plan.kind, plan.spec, plan.runtime, plan.store, plan.parallelism,
                   config=plan.config.as_dict(), **outcome)


def start_servers(ctx: Context, plans: list[Plan]) -> None:
    """The PostgreSQL servers (one for the trials, one of its own for the restart trial)
    and the Kafka broker the trials need."""
    if any(p.store == "postgres" and p.kind != "postgres-restart" for p in plans):
        ctx.pg = PgServer(ROOT / ".pg" / "chaos")
        ctx.pg.start()
    if any(p.kind == "postgres-restart" for p in plans):
        ctx.pg_restart = PgServer(ROOT / ".pg" / "chaos-restart")
        ctx.pg_restart.start()
    if any(p.store == "kafka" for p in plans):
        ctx.kafka = KafkaServer(ROOT / ".kafka" / "chaos")
        ctx.kafka.start()


def stop_servers(ctx: Context) -> None:
    """Stop what :func:`start_servers` started."""
    for server in (ctx.pg, ctx.pg_restart, ctx.kafka):
        if server is not None:
            try:
                server.stop()
            except ToolError as exc:
                print(f"warning: {exc}", file=sys.stderr)


def clean_work(work: Path) -> None:
    """Remove the outputs of an earlier run (only what this harness writes; a cluster left
    in <work>/cluster is stopped by the cluster trial)."""
    work.mkdir(parents=True, exist_ok=True)
    for pattern in ("reference*", "t[0-9][0-9]*", "bad-input.jsonl"):
        for old in work.glob(pattern):
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()


def main(argv: Optional[list[str]] = None) -> int:
    """Run the reference and the trials; print the tables; write the results."""
    p = arguments()
    args = p.parse_args(argv)
    trials = args.trials if args.trials is not None else (4 if args.short else 60)
    tickets = args.tickets or 200
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    if trials < 1 or tickets < 50:
        p.error("--trials must be >= 1 and --tickets >= 50")
    for text in args.spec:
        try:
            inject.ChaosSpec.parse(text)
        except ValueError as exc:
            p.error(str(exc))
    quick = args.short or bool(args.spec)
    rng = random.Random(seed)
    work = Path(args.work).resolve()
    clean_work(work)
    started = time.monotonic()
    os.environ[PASSWORD_ENV] = PASSWORD  # the jobs' and this process's stores read it
    jvmfast.ensure_archive()  # once per JDK and PyFlink installation
    ctx = Context(work=work, tickets=tickets, input_file=work / "bad-input.jsonl",
                  env=dict(os.environ), jvm_args=jvmfast.jvm_args())
    write_input_file(str(ctx.input_file))
    plans = (chosen_plans(args) if args.spec else
             plan_trials(rng, trials, tickets, args.short, not (quick or args.no_cluster),
                         not (quick or args.no_postgres), not (quick or args.no_kafka)))
    print(f"chaos: seed {seed}, {tickets} generated tickets + {len(bad_inputs())} bad inputs "
          f"per run, checkpoints every {CHECKPOINT_INTERVAL_MS} ms; {len(plans)} trials; "
          f"outputs in {work}\nexpected, stated before the trials run:", flush=True)
    for where, what in cfgs.EXPECTATIONS.items():
        print(f"  {where}: {what}", flush=True)

    verdicts: list[Verdict] = []
    reference: list[Verdict] = []  # the reference run's verdict, once it ran

    def done(verdict: Verdict) -> None:
        verdicts.append(verdict)
        # What ran so far, in case the run is cut short ("complete": false until the end).
        write_results(args, verdicts, reference[0] if reference else None, seed, tickets,
                      round(time.monotonic() - started, 1), complete=False)

    try:
        run_all(ctx, plans, max(1, args.jobs), seed, tickets, reference, done)
        order = {plan.name: i for i, plan in enumerate(plans)}
        verdicts.sort(key=lambda v: order[v.name])
    except ToolError as exc:
        print(f"chaos: error: {exc}", file=sys.stderr)
        return 2
    finally:
        stop_servers(ctx)
    return report(args, verdicts, reference[0] if reference else None, seed, tickets,
                  round(time.monotonic() - started, 1))


def run_reference(ctx: Context, found: list[Verdict]) -> None:
    """The failure-free reference run; its outputs become ``ctx.reference`` (the trials'
    checks wait for it: :meth:`Context.reference_for`). Raises ``ToolError`` when it is not
    clean."""
    try:
        ref_plan = Plan("reference", "reference")
        print(f"[ref] failure-free reference run: {ref_plan.describe()}", flush=True)
        verdict = run_mini(ctx, ref_plan)
        found.append(verdict)
        if not verdict.passed or verdict.reexecuted_unrecorded:
            raise ToolError("the reference run is not clean:\n  "
                            + "\n  ".join(verdict.problems))
        ctx.reference = collect(ctx.work / ref_plan.name)
        print(f"      reference: {verdict.seconds:.1f}s, {len(ctx.reference.results)} results, "
              f"{len(ctx.reference.dead_letters)} dead letters", flush=True)
    finally:
        ctx.reference_done.set()


def run_all(ctx: Context, plans: list[Plan], jobs: int, seed: int, tickets: int,
            reference: list[Verdict], done: Callable[[Verdict], None]) -> None:
    """Run the reference and the trials, ``jobs`` at once (each trial has its own output
    directory, store file, PostgreSQL schema or Kafka topics, and Flink log; the
    PostgreSQL restart has a server of its own; the two TaskManager kills share the
    standalone cluster, so they run one after the other in one task).

    The reference runs while the servers start; the trials start once the servers are up
    (their checks wait for the reference), the longest first (:func:`expected_cost`), so that
    no long trial is left alone at the end. Each trial's lines are printed when it ends."""
    lock = threading.Lock()
    numbered = {plan.name: i for i, plan in enumerate(plans, 1)}

    def one(plan: Plan) -> None:
        if ctx.reference_done.is_set() and ctx.reference is None:
            return  # the reference failed: the run is over
        verdict = run_trial(ctx, plan)
        verdict.rerun = plan.rerun_command(seed, tickets)
        with lock:
            print(f"[{numbered[plan.name]:>2}/{len(plans)}] {plan.name} {plan.describe()}",
                  flush=True)
            print_verdict(verdict)
            done(verdict)

    def chain(group: list[Plan]) -> None:
        for plan in group:
            one(plan)

    kills = [plan for plan in plans if plan.kind == "taskmanager-kill"]
    others = sorted((plan for plan in plans if plan.kind != "taskmanager-kill"),
                    key=expected_cost, reverse=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        ref = pool.submit(run_reference, ctx, reference)
        try:
            start_servers(ctx, plans)
        except ToolError:
            ref.result()  # let the reference end (it needs no server)
            raise
        futures = [pool.submit(chain, kills)] if kills else []
        futures += [pool.submit(one, plan) for plan in others]
        ref.result()  # raises when the reference is not clean (the trials then stop early)
        for future in futures:
            future.result()


def expected_cost(plan: Plan) -> float:
    """A rough relative duration of a trial (for the order they start in): process mode
    and a second job (savepoint, fresh start on a used namespace) cost most; the server
    trials run slowly on purpose."""
    cost = 1.0
    if plan.config.mode == "process":
        cost *= 1.8
    if plan.config.lifecycle != "run":
        cost *= 1.8
    if plan.kind in ("postgres-restart", "taskmanager-kill"):
        cost *= 2.5
    return cost


def print_verdict(verdict: Verdict) -> None:
    """A trial's outcome; a failing one with the command that reruns it."""
    what = verdict.injection.get("detail") or ", ".join(
        f"{k} {v}" for k, v in verdict.injection.items()
        if k not in ("injected", "why", "flink_failures"))
    state = ("ok" if verdict.passed else "RACE (not checked)" if verdict.upstream_race
             else "FAILED")
    print(f"        {verdict.seconds:.1f}s, restarts {verdict.restarts}, {state}: {what}",
          flush=True)
    for problem in verdict.problems:
        print(f"        ! {problem}", flush=True)
    if not verdict.passed:
        print(f"        rerun: {verdict.rerun}", flush=True)


def write_results(args: argparse.Namespace, verdicts: list[Verdict],
                  reference_verdict: Optional[Verdict], seed: int, tickets: int,
                  duration: float, complete: bool = True) -> dict[str, Any]:
    """Write chaos-results.json (``complete``: every planned trial ran); return it."""
    total = aggregate(verdicts)
    raced = [v.name for v in verdicts if v.upstream_race]
    checked = [v for v in verdicts if not v.upstream_race]
    results = {
        "trials": total["trials"],
        "duplicates": total["duplicates"],
        "repeats_allowed": total["repeats"],
        "lost": total["lost"],
        "dead_lettered": total["dead_lettered"],
        "unexpected": total["unexpected"],
        "skipped_calls": total["skipped_calls"],
        "failures_injected": total["injected"],
        "reexecuted_unrecorded": total["reexecuted_unrecorded"],
        "reconciled": total["reconciled"],
        "store_records_left": total["store_records_left"],
        "passed": all(v.passed for v in checked),
        "failed_trials": [v.name for v in checked if not v.passed],
        "upstream_race_trials": raced,
        "rerun": {v.name: v.rerun for v in verdicts if not v.passed},
        "expectations": cfgs.EXPECTATIONS,
        "by_config": by_config(verdicts),
        "by_kind": {kind: aggregate([v for v in verdicts if v.kind == kind])
                    for kind in KINDS if any(v.kind == kind for v in verdicts)},
        "kinds": KINDS,
        "mini_kinds": list(MINI_KINDS),
        "bad_input": {"per_run": len(bad_inputs()),
                      "kinds": {b.kind: b.reason for b in bad_inputs()}},
        "seed": seed, "tickets": tickets, "checkpoint_interval_ms": CHECKPOINT_INTERVAL_MS,
        "duration_s": duration, "machine": machine(),
        "reference": asdict(reference_verdict) if reference_verdict else None,
        "runs": [asdict(v) | {"passed": v.passed} for v in verdicts],
    }
    results["harness_errors"] = [v.name for v in verdicts if v.harness_error]
    results["complete"] = complete
    Path(args.results).write_text(json.dumps(results, indent=2) + "\n")
    return results


def report(args: argparse.Namespace, verdicts: list[Verdict],
           reference_verdict: Optional[Verdict], seed: int, tickets: int,
           duration: float) -> int:
    """Write chaos-results.json, print the tables; the exit status."""
    results = write_results(args, verdicts, reference_verdict, seed, tickets, duration)
    total = aggregate(verdicts)
    raced = results["upstream_race_trials"]
    harness_errors = results["harness_errors"]
    print()
    print(table(verdicts))
    print()
    print(config_table(verdicts))
    print(f"\nchaos: {total['passed']}/{total['trials']} trials passed, {total['injected']} "
          f"failures injected, {total['duplicates']} duplicates, {total['repeats']} allowed "
          f"repeats, {total['lost']} lost, {total['dead_lettered']} dead-lettered, "
          f"{total['store_records_left']} store records left; {len(raced)} hit the PyFlink "
          f"race; {duration:.0f} s; seed {seed}; results in {args.results}")
    for v in verdicts:
        if not v.passed:
            print(f"chaos: {v.name} {'raced' if v.upstream_race else 'FAILED'}; rerun: "
                  f"{v.rerun}")
    if harness_errors:
        print(f"chaos: the harness failed in {', '.join(harness_errors)}", file=sys.stderr)
        return 2
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
