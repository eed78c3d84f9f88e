"""Running chaos trials: the job of one trial on the local mini-cluster (:func:`run_mini`),
with PostgreSQL restarted under it (:func:`run_pg_restart`), or on a standalone cluster whose
TaskManager is killed (:func:`run_taskmanager_kill`); each run checked
(:func:`chaos.checks.check_run`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from chaos import inject
from chaos.checks import Outputs, Verdict, check_run, collect
from chaos.config import FRESH_START_KEEPS_NAMESPACE
from chaos.plan import SAVEPOINT_FIRST_RATE, Plan
from flink_agents_ext.config import load_config
from flink_agents_ext.store import open_store
from jobs.triage_summary import summary as job_summary
from scripts import ROOT, ToolError
from scripts.cluster import LIVE_STATES, Cluster
from scripts.jobrun import JobResult, kill_group, run_job
from scripts.kafkaserver import KafkaServer
from scripts.pgserver import PgServer

#: One namespace for every run: dead letters name it, and must equal the reference's.
NAMESPACE = "support-triage-chaos"
#: Hard limit for one job (a mini-cluster run, or the cluster job until FINISHED).
JOB_TIMEOUT_S = int(os.environ.get("FAE_CHAOS_JOB_TIMEOUT_S", "240"))
CHECKPOINT_INTERVAL_MS = 250
#: A repeat after a killed process is "of the last batch" when its first execution came at
#: most this long before the kill (group commit keeps puts in memory up to 2 x 50 ms).
LAST_BATCH_S = 0.5
#: Generated tickets per second of the earlier job of a ``fresh-on-used`` trial (it is killed
#: by a monitor polling every 0.2 s once enough calls ran).
EARLIER_RATE = 100
#: Seconds the generated input of a mini-cluster trial lasts (~10 checkpoints).
INPUT_SECONDS = 2.5
JOB_FILE = ROOT / "chaos" / "job.py"


class UpstreamRace(ToolError):
    """A job before the trial's last one hit the PyFlink process-mode race (README, Known
    issues): the trial is run again, as when its last job hits it."""


@dataclass
class Context:
    """What every run shares."""

    work: Path
    tickets: int
    input_file: Path
    env: dict[str, str]
    #: ``JVM_ARGS`` of the mini-cluster jobs (:func:`scripts.jvmfast.jvm_args`: a faster JVM
    #: start); not given to the standalone cluster (its scripts read ``JVM_ARGS`` too).
    jvm_args: str = ""
    pg: Optional[PgServer] = None
    #: The server of the PostgreSQL-restart trial (its own: the trials on ``pg`` run at the
    #: same time and must not see the restart).
    pg_restart: Optional[PgServer] = None
    kafka: Optional[KafkaServer] = None
    reference: Optional[Outputs] = None
    #: Set once the reference run ended (``reference`` is then its outputs, or ``None`` when
    #: it failed): trials that run at the same time wait for it before their check.
    reference_done: threading.Event = field(default_factory=threading.Event)

    def reference_for(self, plan: Plan) -> Optional[Outputs]:
        """The reference outputs a trial is checked against (``None`` for the reference run
        itself); waits until the reference run ended."""
        if plan.kind == "reference":
            return None
        self.reference_done.wait()
        if self.reference is None:
            raise ToolError("the reference run failed: the trial cannot be checked")
        return self.reference

    def job_env(self) -> dict[str, str]:
        """The environment of a mini-cluster job: ``env`` with :attr:`jvm_args` added to
        ``JVM_ARGS``."""
        args = " ".join(a for a in (self.env.get("JVM_ARGS", ""), self.jvm_args) if a)
        return {**self.env, "JVM_ARGS": args} if args else self.env


def write_config(ctx: Context, plan: Plan, out: Path, store: dict[str, Any],
                 name: str = "", rate: int = 0, bad_input_file: bool = True) -> Path:
    """The job configuration of one run (its own output directory and store) in the
    trial's configuration; ``name``: of the file (default: the plan's)."""
    config = plan.config
    data = {
        "job": {"name": f"support-triage-chaos-{name or plan.name}", "namespace": NAMESPACE,
                "parallelism": config.parallelism, "execution_mode": config.mode},
        "checkpoints": {"interval_ms": CHECKPOINT_INTERVAL_MS, "retention": config.retention,
                        "restart_attempts": 3},
        "store": store,
        "input": {"generate": ctx.tickets,
                  "rate": rate or plan.rate or round(ctx.tickets / INPUT_SECONDS),
                  **({"path": str(ctx.input_file)} if bad_input_file else {})},
        "output": {"dir": str(out)},
    }
    path = ctx.work / f"{name or plan.name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def summary_of(config: Path) -> dict[str, Any]:
    """The job's summary (outputs and store) of a run, read here."""
    cfg = load_config(str(config))
    return job_summary(cfg, os.path.abspath(cfg.output_dir))


def fresh_dir(path: Path) -> Path:
    """An empty directory at ``path``."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def store_for(ctx: Context, plan: Plan, out: Path) -> dict[str, Any]:
    """The run's store settings: its own SQLite file, the chaos PostgreSQL server, or its
    own topic on the chaos Kafka broker; the commit mode of the trial's configuration."""
    commit = plan.config.commit
    if plan.store == "postgres":
        pg = ctx.pg_restart if plan.kind == "postgres-restart" else ctx.pg
        if pg is None:
            raise ToolError("internal: a PostgreSQL run without a server")
        # A schema of its own: trials run at once (chaos.run --jobs).
        return {**pg.settings(schema=f"chaos_{plan.name}"), "commit": commit}
    if plan.store == "kafka":
        if ctx.kafka is None:
            raise ToolError("internal: a Kafka run without a broker")
        return ctx.kafka.settings(f"chaos-{plan.name}-{os.getpid()}", commit=commit)
    return {"backend": "sqlite", "path": str(out / "actions.db"), "commit": commit}


def job_args(plan: Plan, config: Path, *extra: Any) -> list[Any]:
    """Arguments of ``chaos.job`` in the trial's configuration."""
    return ["--config", config, "--max-in-flight", plan.config.max_in_flight, *extra]


def run_earlier_job(ctx: Context, plan: Plan, store: dict[str, Any]) -> dict[str, Any]:
    """``fresh-on-used``: an earlier job on the same store and namespace, with other
    tickets, killed (``kill -9`` of its process group) once ``plan.stop_fraction`` of its
    calls ran; what it left in the store is what the trial's fresh start finds."""
    out = fresh_dir(ctx.work / f"{plan.name}-earlier")
    config = write_config(ctx, plan, out, store, name=f"{plan.name}-earlier",
                          rate=EARLIER_RATE, bad_input_file=False)
    target = int(expected_calls(ctx.tickets) * plan.stop_fraction)
    facts: dict[str, Any] = {"killed_after_calls": None}

    def monitor(proc: subprocess.Popen[Any]) -> None:
        calls = ledger_lines(out)
        if facts["killed_after_calls"] is None and calls >= target:
            kill_group(proc)
            facts["killed_after_calls"] = calls

    job = run_job("chaos.job", job_args(plan, config, "--other-tickets"),
                  timeout=JOB_TIMEOUT_S, env=ctx.job_env(),
                  log=ctx.work / f"{plan.name}-earlier-job", monitor=monitor)
    if facts["killed_after_calls"] is None:
        raise ToolError(f"the earlier job ended before {target} calls ran: "
                        f"{job.describe(JOB_TIMEOUT_S)}")
    with open_store(store) as opened:
        facts["records_left"] = opened.size(NAMESPACE)
    return facts


def stop_with_savepoint(ctx: Context, plan: Plan, out: Path, config: Path) -> tuple[str, int]:
    """``savepoint``: the trial's job runs (slowly) until ``plan.stop_fraction`` of the calls
    ran and is stopped with a savepoint; returns its path and the function instances
    (stats files) the first job opened."""
    calls = max(1, int(expected_calls(ctx.tickets) * plan.stop_fraction))
    job = run_job("chaos.job", job_args(plan, config, "--bad-input", "--stop-after-calls",
                                        calls),
                  timeout=JOB_TIMEOUT_S, env=ctx.job_env(), log=ctx.work / f"{plan.name}-first-job",
                  detect_upstream_race=plan.config.mode == "process")
    found = [line.split()[1] for line in job.stdout.splitlines()
             if line.startswith("SAVEPOINT ")]
    if job.upstream_race:  # a declined stop fails the job over: the race can strike
        raise UpstreamRace(f"the first job hit the PyFlink process-mode race: "
                           f"{job.describe(JOB_TIMEOUT_S)}")
    if not job.ok or not found:
        raise ToolError(f"stop with a savepoint failed: {job.describe(JOB_TIMEOUT_S)}")
    return found[0], len(list((out / "stats").glob("*.json")))


def run_mini(ctx: Context, plan: Plan,
             monitor: Optional[Callable[[subprocess.Popen[Any]], None]] = None,
             injection: Optional[dict[str, Any]] = None) -> Verdict:
    """One trial on the local mini-cluster in its configuration's life cycle, checked."""
    out = fresh_dir(ctx.work / plan.name)
    store = store_for(ctx, plan, out)
    lifecycle = plan.config.lifecycle
    phases: dict[str, Any] = {}
    extra: list[Any] = []
    base_instances = 0
    if lifecycle == "fresh-on-used":
        phases["earlier_job"] = run_earlier_job(ctx, plan, store)
        phases["earlier_job"]["namespace_kept"] = FRESH_START_KEEPS_NAMESPACE
        if FRESH_START_KEEPS_NAMESPACE:
            extra.append("--keep-namespace")
    if lifecycle == "savepoint":
        first = write_config(ctx, plan, out, store, name=f"{plan.name}-first",
                             rate=SAVEPOINT_FIRST_RATE)
        savepoint, base_instances = stop_with_savepoint(ctx, plan, out, first)
        phases["savepoint"] = savepoint
        phases["calls_before_savepoint"] = ledger_lines(out)
        spec = inject.ChaosSpec.parse(plan.spec)
        ticket = f"G-{spec.trigger:06d}"
        if spec.point in ("before-call", "after-call", "unrecorded") and any(
                t == ticket for _, t in collect(out).ledger):
            raise ToolError(f"the first job ran past ticket {ticket}, the failure's target, "
                            f"before its savepoint completed")
        extra += ["--from-savepoint", savepoint, "--parallelism", plan.parallelism]
    config = write_config(ctx, plan, out, store)
    summary_path = ctx.work / f"{plan.name}-summary.json"
    summary_path.unlink(missing_ok=True)
    job = run_job("chaos.job", job_args(plan, config, "--summary-json", summary_path,
                                        "--spec", plan.spec, "--bad-input", *extra),
                  timeout=JOB_TIMEOUT_S, env=ctx.job_env(), log=ctx.work / f"{plan.name}-job",
                  monitor=monitor, detect_upstream_race=plan.config.mode == "process")
    return check_job(ctx, plan, out, job, summary_path, injection, phases, base_instances)


def retained_runs(plan: Plan, store: dict[str, Any], summary: dict[str, Any]) -> dict[str, int]:
    """With ``retention`` > 1 the records of the last checkpoints stay at the end (a retained
    checkpoint can still be restored): ``store_runs_unmarked`` counts the runs left that no
    remaining prune mark covers (must be 0). Consumes the marks (the job has ended)."""
    if plan.config.retention <= 1 or not summary.get("store_records_left"):
        return {}
    with open_store(store) as opened:
        runs = opened.recorded_runs(NAMESPACE)
        marks = opened.take_prune_marks(NAMESPACE, 2**62)
    return {"store_runs_unmarked": sum(1 for key, seq in runs if seq > marks.get(key, -1))}


def check_job(ctx: Context, plan: Plan, out: Path, job: JobResult, summary_path: Path,
              injection: Optional[dict[str, Any]], phases: dict[str, Any],
              base_instances: int) -> Verdict:
    """Check the trial's (last) job."""
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    if summary is not None:
        summary.update(retained_runs(plan, store_for(ctx, plan, out), summary))
    completed = summary is not None and not job.timed_out and not job.upstream_race
    failure = (f"timed out after {JOB_TIMEOUT_S}s" if job.timed_out else
               "hit the PyFlink process-mode race (README, Known issues)" if job.upstream_race
               else f"exit status {job.returncode}; end of its output:\n{job.tail()}")
    verdict = check_run(plan, out, completed, failure, summary, ctx.reference_for(plan),
                        ctx.tickets,
                        injection=injection, seconds=job.seconds,
                        log_text=job.stdout + job.stderr, base_instances=base_instances)
    verdict.phases = phases
    verdict.upstream_race = job.upstream_race
    return verdict


def ledger_lines(out: Path) -> int:
    """Real durable-call executions so far."""
    path = out / inject.LEDGER
    if not path.exists():
        return 0
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def expected_calls(tickets: int) -> int:
    """At least this many durable calls run in a whole run (three per ticket)."""
    return 3 * tickets


def run_pg_restart(ctx: Context, plan: Plan) -> Verdict:
    """A run on the PostgreSQL store whose server (:attr:`Context.pg_restart`, its own)
    restarts once ``plan.at_fraction`` of the calls ran."""
    assert ctx.pg_restart is not None
    pg = ctx.pg_restart
    out = ctx.work / plan.name
    injection: dict[str, Any] = {"injected": False, "why": "the job ended first"}

    def monitor(proc: subprocess.Popen[Any]) -> None:
        if injection["injected"] or "restart_failed" in injection:
            return
        calls = ledger_lines(out)
        if calls >= expected_calls(ctx.tickets) * plan.at_fraction and proc.poll() is None:
            started = time.monotonic()
            offset = pg.log.stat().st_size if pg.log.exists() else 0
            try:
                pg.restart()
            except ToolError as exc:
                injection.update(restart_failed=str(exc), why=str(exc))
                return
            # Evidence that the job's sessions were cut (the server logs one line each).
            with open(pg.log, errors="replace") as fh:
                fh.seek(offset)
                cut = fh.read().count("terminating connection due to administrator command")
            injection.update(injected=True, calls_before=calls, sessions_cut=cut,
                             restart_s=round(time.monotonic() - started, 1), why="")

    return run_mini(ctx, plan, monitor, injection)


def run_taskmanager_kill(ctx: Context, plan: Plan) -> Verdict:
    """The main job on a standalone cluster; its TaskManager is killed with ``kill -9`` once
    ``plan.at_fraction`` of the calls ran and a checkpoint completed; a new one is started."""
    out = fresh_dir(ctx.work / plan.name)
    config = write_config(ctx, plan, out, store_for(ctx, plan, out))
    cluster = Cluster(ctx.work / "cluster", ctx.env)
    ledger_samples: list[tuple[float, int]] = []
    injection: dict[str, Any] = {"injected": False, "why": "the job ended first"}
    started = time.monotonic()
    completed, failure, log_text = False, "", ""
    summary = None
    try:
        t0 = time.monotonic()
        cluster.start()
        injection["cluster_start_s"] = round(time.monotonic() - t0, 1)
        job_id = cluster.submit(config, "--spec", "none", "--bad-input", "--max-in-flight",
                                str(plan.config.max_in_flight), job=JOB_FILE)
        deadline = time.monotonic() + 180
        while True:
            state = cluster.state(job_id)
            try:
                done = cluster.rest(f"/jobs/{job_id}/checkpoints")["counts"]["completed"]
            except OSError:  # REST busy for a moment: ask again
                done = 0
            calls = ledger_lines(out)
            ledger_samples.append((time.monotonic(), calls))
            if (state == "RUNNING" and done >= 1
                    and calls >= expected_calls(ctx.tickets) * plan.at_fraction):
                break
            if state not in (*LIVE_STATES, "UNREACHABLE"):
                raise ToolError(f"job {job_id} is {state} before the kill: "
                                f"{cluster.exceptions(job_id)}")
            if time.monotonic() > deadline:
                raise ToolError(f"no progress before the kill: {state}, {done} "
                                f"checkpoints, {calls} calls")
            time.sleep(0.2)
        killed_at, killed_mono = time.time(), time.monotonic()
        pid = cluster.kill_taskmanager()
        # The ledger line from which a repeat is "of the last batch": the calls counted at
        # least LAST_BATCH_S before the kill (group commit holds at most 2 x 50 ms).
        window = [c for t, c in ledger_samples if t <= killed_mono - LAST_BATCH_S]
        injection.update(injected=True, why="", killed_pid=pid, killed_at=killed_at,
                         calls_before=calls,
                         checkpoints_before=done, calls_at_kill=ledger_lines(out),
                         last_batch_from=window[-1] if window else 0)
        cluster.start_taskmanager()
        try:
            cluster.wait(JOB_TIMEOUT_S)
            completed = True
        except ToolError as exc:
            failure = str(exc)
        restores = collect(out).restores
        if restores:
            injection["recovered_after_s"] = round(min(r["time"] for r in restores)
                                                   - killed_at, 1)
        injection["flink_failures"] = cluster.exceptions(job_id)[:3]
        log_text = "\n".join(injection["flink_failures"])
        summary = summary_of(config)
        summary.update(retained_runs(plan, store_for(ctx, plan, out), summary))
    finally:
        try:
            cluster.stop()
        except ToolError as exc:
            print(f"warning: {exc}")
    return check_run(plan, out, completed, failure, summary, ctx.reference_for(plan),
                     ctx.tickets,
                     injection=injection, seconds=time.monotonic() - started,
                     log_text=log_text)
