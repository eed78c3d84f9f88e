"""Running chaos trials: the job of one trial on the local mini-cluster (:func:`run_mini`),
with PostgreSQL restarted under it (:func:`run_pg_restart`), or on a standalone cluster whose
TaskManager is killed (:func:`run_taskmanager_kill`); each run checked
(:func:`chaos.checks.check_run`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from chaos import inject
from chaos.checks import Outputs, Verdict, check_run, collect
from chaos.plan import Plan
from flink_agents_ext.config import load_config
from jobs.triage_summary import summary as job_summary
from scripts import ROOT, ToolError
from scripts.cluster import LIVE_STATES, Cluster
from scripts.jobrun import run_job
from scripts.pgserver import PgServer

#: One namespace for every run: dead letters name it, and must equal the reference's.
NAMESPACE = "support-triage-chaos"
#: Hard limit for one job (a mini-cluster run, or the cluster job until FINISHED).
JOB_TIMEOUT_S = int(os.environ.get("FAE_CHAOS_JOB_TIMEOUT_S", "240"))
CHECKPOINT_INTERVAL_MS = 250
#: Seconds the generated input of a mini-cluster trial lasts (~10 checkpoints).
INPUT_SECONDS = 2.5
JOB_FILE = ROOT / "chaos" / "job.py"


@dataclass
class Context:
    """What every run shares."""

    work: Path
    tickets: int
    input_file: Path
    env: dict[str, str]
    pg: Optional[PgServer] = None
    reference: Optional[Outputs] = None
    #: The store's commit mode in every run (``each``, the default, or ``group``).
    commit: str = "each"


def write_config(ctx: Context, plan: Plan, out: Path, store: dict[str, Any]) -> Path:
    """The job configuration of one run (its own output directory and store)."""
    data = {
        "job": {"name": f"support-triage-chaos-{plan.name}", "namespace": NAMESPACE,
                "parallelism": plan.parallelism, "execution_mode": "thread"},
        "checkpoints": {"interval_ms": CHECKPOINT_INTERVAL_MS, "retention": 1,
                        "restart_attempts": 3},
        "store": store,
        "input": {"path": str(ctx.input_file), "generate": ctx.tickets,
                  "rate": plan.rate or round(ctx.tickets / INPUT_SECONDS)},
        "output": {"dir": str(out)},
    }
    path = out.parent / f"{plan.name}.yaml"
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
    """The run's store settings: its own SQLite file, or the chaos PostgreSQL server."""
    if plan.store == "postgres":
        if ctx.pg is None:
            raise ToolError("internal: a PostgreSQL run without a server")
        return {**ctx.pg.settings(), "commit": ctx.commit}
    return {"backend": "sqlite", "path": str(out / "actions.db"), "commit": ctx.commit}


def run_mini(ctx: Context, plan: Plan,
             monitor: Optional[Callable[[subprocess.Popen[Any]], None]] = None,
             injection: Optional[dict[str, Any]] = None) -> Verdict:
    """One run on the local mini-cluster, checked."""
    out = fresh_dir(ctx.work / plan.name)
    config = write_config(ctx, plan, out, store_for(ctx, plan, out))
    summary_path = ctx.work / f"{plan.name}-summary.json"
    summary_path.unlink(missing_ok=True)
    job = run_job("chaos.job", ["--config", config, "--summary-json", summary_path,
                                "--spec", plan.spec, "--bad-input"],
                  timeout=JOB_TIMEOUT_S, env=ctx.env, log=ctx.work / f"{plan.name}-job",
                  monitor=monitor)
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    completed = summary is not None and not job.timed_out
    failure = (f"timed out after {JOB_TIMEOUT_S}s" if job.timed_out else
               f"exit status {job.returncode}; end of its output:\n{job.tail()}")
    return check_run(plan, out, completed, failure, summary, ctx.reference, ctx.tickets,
                     injection=injection, seconds=job.seconds,
                     log_text=job.stdout + job.stderr)


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
    """A run on the PostgreSQL store whose server restarts once ``plan.at_fraction`` of the
    calls ran."""
    assert ctx.pg is not None
    pg = ctx.pg
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
    injection: dict[str, Any] = {"injected": False, "why": "the job ended first"}
    started = time.monotonic()
    completed, failure, log_text = False, "", ""
    summary = None
    try:
        t0 = time.monotonic()
        cluster.start()
        injection["cluster_start_s"] = round(time.monotonic() - t0, 1)
        job_id = cluster.submit(config, "--spec", "none", "--bad-input", job=JOB_FILE)
        deadline = time.monotonic() + 180
        while True:
            state = cluster.state(job_id)
            try:
                done = cluster.rest(f"/jobs/{job_id}/checkpoints")["counts"]["completed"]
            except OSError:  # REST busy for a moment: ask again
                done = 0
            calls = ledger_lines(out)
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
        killed_at = time.time()
        pid = cluster.kill_taskmanager()
        injection.update(injected=True, why="", killed_pid=pid, calls_before=calls,
                         checkpoints_before=done)
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
    finally:
        try:
            cluster.stop()
        except ToolError as exc:
            print(f"warning: {exc}")
    return check_run(plan, out, completed, failure, summary, ctx.reference, ctx.tickets,
                     injection=injection, seconds=time.monotonic() - started,
                     log_text=log_text)
