"""``make chaos``: trials of the main job with injected failures, checked against a clean run.

    python -m chaos.run [--trials 20] [--short] [--seed S] [--tickets N]
                        [--no-cluster] [--no-postgres] [--work DIR] [--results FILE]
    python -m chaos.run --spec SPEC [--spec SPEC...] [--parallelism 2]   # chosen trials

1. A failure-free **reference run** of ``jobs/support_triage.py`` (mini-cluster, SQLite,
   parallelism 1) on the same input as every trial: ``--tickets`` generated tickets plus the
   bad-input file of :mod:`chaos.inputs`, with ``--chaos none --chaos-bad-input``.
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
import glob
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from chaos import inject
from chaos.inputs import bad_inputs, check_dead_letters, write_input_file

ROOT = Path(__file__).resolve().parent.parent
JOB = ROOT / "jobs" / "support_triage.py"
CLUSTER_SH = ROOT / "scripts" / "cluster.sh"
PG_SH = ROOT / "scripts" / "pg-test-server.sh"
PY = sys.executable
#: One namespace for every run: dead letters name it, and must equal the reference's.
NAMESPACE = "support-triage-chaos"
#: Hard limit for one job (a mini-cluster run, or the cluster job until FINISHED).
JOB_TIMEOUT_S = int(os.environ.get("FAE_CHAOS_JOB_TIMEOUT_S", "240"))
PG_PASSWORD = os.environ.get("FAE_PG_PASSWORD", "flink_agents")
CHECKPOINT_INTERVAL_MS = 250
#: Seconds the generated input of a mini-cluster trial lasts (~10 checkpoints), and the rate
#: of the runs that must still be running when the TaskManager is killed or PostgreSQL
#: restarts (tickets per second).
INPUT_SECONDS, SLOW_RATE = 2.5, 40

KINDS = {
    "before-call": "1 in an action, before its durable call",
    "after-call": "1 in an action, after its durable call",
    "unrecorded": "2 between a durable call and its record",
    "snapshot": "3 during a snapshot",
    "notify": "4 between checkpoint completion and notification",
    "taskmanager-kill": "5 TaskManager killed (standalone cluster)",
    "postgres-restart": "6 PostgreSQL restarted while the job runs",
}
MINI_KINDS = ("before-call", "after-call", "unrecorded", "snapshot", "notify")


class HarnessError(Exception):
    """The harness could not run (a set-up step failed); not a finding about the job."""


# -- plans ----------------------------------------------------------------------------------
@dataclass
class Plan:
    """One run: what fails where, on which runtime and store."""

    name: str
    kind: str
    spec: str = "none"
    runtime: str = "mini-cluster"
    store: str = "sqlite"
    parallelism: int = 1
    #: Generated tickets per second (0: ``tickets / INPUT_SECONDS``).
    rate: int = 0
    #: TaskManager kill / PostgreSQL restart: once this fraction of the calls ran.
    at_fraction: float = 0.0

    def describe(self) -> str:
        """One line: kind, spec, runtime, store, parallelism."""
        what = self.spec if self.spec != "none" else self.kind
        if self.at_fraction:
            what += f"@{self.at_fraction:.0%}"
        return f"{what:<28} {self.runtime} {self.store} p{self.parallelism}"


def pager_tickets(tickets: int) -> list[int]:
    """Generated tickets whose ``respond`` pages on-call (urgent and a gold customer).

    Mirrors the job's rules: ``model_classify`` (urgent when the text has a "!") and
    ``crm_lookup`` (gold when ``_score(customer) % 3 == 0``).
    """
    sys.path.insert(0, str(ROOT))
    from jobs.support_triage import _score, generated_ticket

    found = []
    for n in range(1, tickets + 1):
        ticket = json.loads(generated_ticket(n))
        if "!" in ticket["text"] and _score(ticket["customer"]) % 3 == 0:
            found.append(n)
    return found


def random_spec(rng: random.Random, kind: str, tickets: int, pagers: list[int],
                reconcilable: Optional[bool] = None, side: Optional[str] = None) -> str:
    """A chaos spec of ``kind`` at a random point of a run of ``tickets`` tickets.

    ``reconcilable`` (``unrecorded`` only): target the reconcilable pager call (``True``),
    another call (``False``), or any (``None``). ``side`` (``snapshot``, ``notify``):
    ``before`` or ``after``, random when ``None``.
    """
    lo, hi = max(1, tickets // 10), max(2, tickets * 9 // 10)
    if kind in ("before-call", "after-call"):
        return f"{kind}:{rng.choice(inject.ACTIONS)}:{rng.randint(lo, hi)}"
    if kind == "unrecorded":
        calls = sorted(inject.CALLS)
        if reconcilable is not None:
            calls = [c for c in calls if (c in inject.RECONCILABLE_CALLS) == reconcilable]
        call = rng.choice(calls)
        candidates = [n for n in pagers if lo <= n <= hi]
        if call in inject.RECONCILABLE_CALLS and candidates:
            return f"unrecorded:{call}:{rng.choice(candidates)}"
        if call in inject.RECONCILABLE_CALLS:  # no paging ticket in range (tiny runs)
            call = "model_draft_reply"
        return f"unrecorded:{call}:{rng.randint(lo, hi)}"
    if kind in ("snapshot", "notify"):
        return f"{kind}:{side or rng.choice(('before', 'after'))}:{rng.randint(1, 3)}"
    raise ValueError(f"no random spec for {kind}")


def plan_trials(rng: random.Random, count: int, tickets: int, short: bool,
                cluster: bool, postgres: bool) -> list[Plan]:
    """The trials: ``count`` mini-cluster ones (every kind in turn, random parameters; every
    other ``unrecorded`` one on the reconcilable call), then the TaskManager kill and the
    PostgreSQL restart when asked for."""
    pagers = pager_tickets(tickets)
    if short:
        first = rng.choice(("before-call", "after-call"))
        kinds = [first, "unrecorded", "snapshot", "notify", *MINI_KINDS][:count]
    else:
        kinds = [MINI_KINDS[i % len(MINI_KINDS)] for i in range(count)]
        rng.shuffle(kinds)
    plans = []
    unrecorded = 0
    for i, kind in enumerate(kinds, 1):
        parallelism = 2 if not short and i % 3 == 0 else 1
        reconcilable = None
        if kind == "unrecorded" and not short:
            reconcilable, unrecorded = unrecorded % 2 == 1, unrecorded + 1
        # The short form's notification is lost before pruning: the restore must prune.
        side = "before" if short and kind == "notify" else None
        plans.append(Plan(f"t{i:02d}", kind,
                          random_spec(rng, kind, tickets, pagers, reconcilable, side),
                          parallelism=parallelism))
    if postgres:
        plans.append(Plan(f"t{len(plans) + 1:02d}", "postgres-restart", store="postgres",
                          rate=SLOW_RATE, at_fraction=round(rng.uniform(0.15, 0.6), 2)))
    if cluster:
        plans.append(Plan(f"t{len(plans) + 1:02d}", "taskmanager-kill",
                          runtime="standalone cluster",
                          store="postgres" if postgres else "sqlite", parallelism=2,
                          rate=SLOW_RATE, at_fraction=round(rng.uniform(0.15, 0.6), 2)))
    return plans


# -- running the job --------------------------------------------------------------------------
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


@dataclass
class JobRun:
    """How a job subprocess ended."""

    returncode: Optional[int]
    seconds: float
    timed_out: bool
    log: Path
    summary: Optional[dict[str, Any]]

    def tail(self, lines: int = 25) -> str:
        """The end of the job's log, for failure messages."""
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def kill_group(proc: subprocess.Popen[Any]) -> None:
    """Kill the process group of ``proc`` (started with its own session: the job's client
    and the JVM it started)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def run_job(config: Path, args: list[str], out: Path, env: dict[str, str],
            monitor: Optional[Callable[[subprocess.Popen[Any]], None]] = None,
            timeout: float = JOB_TIMEOUT_S) -> JobRun:
    """Run the job on the local mini-cluster (a subprocess with a hard timeout).

    ``monitor(proc)`` is called about every 0.2 s while the job runs.
    """
    summary_path = out.parent / f"{out.name}-summary.json"
    log = out.parent / f"{out.name}-job.log"
    summary_path.unlink(missing_ok=True)
    cmd = [PY, str(JOB), "--config", str(config), "--summary-json", str(summary_path), *args]
    started = time.monotonic()
    timed_out = False
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            while proc.poll() is None:
                if time.monotonic() - started > timeout:
                    timed_out = True
                    break
                if monitor is not None:
                    monitor(proc)
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                kill_group(proc)
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    return JobRun(proc.returncode, time.monotonic() - started, timed_out, log, summary)


def job_summary(config: Path, out: Path, env: dict[str, str]) -> Optional[dict[str, Any]]:
    """The job's ``--summary-only`` (outputs and store) of a run that ran elsewhere."""
    path = out.parent / f"{out.name}-summary.json"
    path.unlink(missing_ok=True)
    proc = subprocess.run([PY, str(JOB), "--config", str(config), "--summary-only",
                           "--summary-json", str(path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    if not path.exists():
        raise HarnessError(f"the job's --summary-only failed ({proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


# -- what a run left --------------------------------------------------------------------------
@dataclass
class Outputs:
    """A run's outputs, as the checks need them."""

    results: list[str]
    dead_letters: list[str]
    ledger: Counter[tuple[str, str]]
    ledger_bad_lines: int
    reconciled: list[dict[str, Any]]
    restores: list[dict[str, Any]]
    fired: Optional[dict[str, Any]]
    uncommitted_files: int
    #: Stats files: one per opened instance of the agent function (subtask attempt).
    instances: int


def _part_lines(directory: Path) -> tuple[list[str], int]:
    lines: list[str] = []
    for path in glob.glob(str(directory / "*" / "part-*")):
        lines += [line for line in Path(path).read_text().splitlines() if line]
    return sorted(lines), len(glob.glob(str(directory / "*" / ".part-*")))


def _jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    entries, bad = [], 0
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                bad += 1  # e.g. a line cut by a kill -9
    return entries, bad


def collect(out: Path) -> Outputs:
    """Read a run's output directory."""
    results, uncommitted = _part_lines(out / "results")
    dead, uncommitted_dead = _part_lines(out / "dead_letters")
    ledger_entries, bad = _jsonl(out / inject.LEDGER)
    return Outputs(
        results=results, dead_letters=dead,
        ledger=Counter((e["call"], e["ticket"]) for e in ledger_entries), ledger_bad_lines=bad,
        reconciled=_jsonl(out / inject.RECONCILED)[0],
        restores=_jsonl(out / inject.RESTORES)[0],
        fired=inject.describe(str(out)), uncommitted_files=uncommitted + uncommitted_dead,
        instances=len(glob.glob(str(out / "stats" / "*.json"))))


# -- checks ---------------------------------------------------------------------------------
@dataclass
class Verdict:
    """The checked outcome of one run (one row of ``runs`` in chaos-results.json)."""

    name: str
    kind: str
    spec: str
    runtime: str
    store: str
    parallelism: int
    seconds: float = 0.0
    completed: bool = False
    injected: bool = False
    injection: dict[str, Any] = field(default_factory=dict)
    #: Job restarts (attempts of the agent operator after the first one).
    restarts: int = 0
    #: Checkpoints the agent function was restored from.
    restored_from: list[int] = field(default_factory=list)
    duplicates: int = 0
    duplicate_calls: list[str] = field(default_factory=list)
    reexecuted_unrecorded: int = 0
    reexecuted_calls: list[str] = field(default_factory=list)
    reconciled: int = 0
    lost: int = 0
    unexpected: int = 0
    dead_lettered: int = 0
    store_records_left: Optional[int] = None
    uncommitted_files: int = 0
    problems: list[str] = field(default_factory=list)
    #: The harness itself failed in this trial (e.g. the cluster did not start).
    harness_error: str = ""

    @property
    def passed(self) -> bool:
        """No problem found."""
        return not self.problems


def check_run(plan: Plan, out: Path, completed: bool, failure: str,
              summary: Optional[dict[str, Any]], reference: Optional[Outputs],
              tickets: int, injection: Optional[dict[str, Any]] = None,
              seconds: float = 0.0, log_text: str = "") -> Verdict:
    """Check one run's outputs (against the reference, unless this is the reference)."""
    o = collect(out)
    v = Verdict(plan.name, plan.kind, plan.spec, plan.runtime, plan.store, plan.parallelism,
                seconds=round(seconds, 1), completed=completed,
                restarts=max(0, -(-o.instances // plan.parallelism) - 1),
                restored_from=sorted({int(r["checkpoint"]) for r in o.restores}),
                uncommitted_files=o.uncommitted_files)
    problems = v.problems
    if not completed:
        problems.append(f"the job did not complete: {failure}")
    if "RestoreBoundaryError" in log_text:
        problems.append("RestoreBoundaryError: a restore needed records that were pruned")
    for r in o.restores:
        if "error" in r:
            problems.append(f"restore from checkpoint {r['checkpoint']} failed: {r['error']}")

    # The failure must really have happened.
    spec = inject.ChaosSpec.parse(plan.spec)
    if spec.point != "none":
        v.injection = o.fired or {}
        v.injected = o.fired is not None
        if not v.injected:
            problems.append(f"the failure {plan.spec} was never injected (trigger not reached)")
        elif not v.restarts:
            problems.append("the failure fired but the job did not restart")
    elif injection is not None:
        v.injection = injection
        v.injected = bool(injection.get("injected"))
        if not v.injected:
            problems.append(f"the {plan.kind} did not happen while the job ran: "
                            f"{injection.get('why', '')}")

    # Durable calls: a recorded call never runs twice; an unrecorded one may, once more.
    target_ticket = f"G-{spec.trigger:06d}" if spec.point == "unrecorded" else ""
    reconcilable = spec.target in inject.RECONCILABLE_CALLS
    for (call, ticket), count in sorted(o.ledger.items()):
        if count < 2:
            continue
        label = f"{call}({ticket}) x{count}"
        unrecorded = call == inject.UNRECORDABLE_CALL or (
            spec.point == "unrecorded" and not reconcilable
            and (call, ticket) == (spec.target, target_ticket) and count == 2)
        if unrecorded:
            v.reexecuted_unrecorded += count - 1
            v.reexecuted_calls.append(label)
        else:
            v.duplicates += count - 1
            v.duplicate_calls.append(label)
    if v.duplicates:
        shown = ", ".join(v.duplicate_calls[:8])
        more = len(v.duplicate_calls) - 8
        problems.append(f"recorded durable calls executed twice: {shown}"
                        + (f" and {more} more" if more > 0 else ""))
    if o.ledger_bad_lines:
        problems.append(f"{o.ledger_bad_lines} unreadable line(s) in the side-effect ledger")
    if spec.point == "unrecorded" and v.injected:
        runs = o.ledger[(spec.target, target_ticket)]
        if reconcilable:
            hits = [r for r in o.reconciled if r.get("ticket") == target_ticket]
            v.reconciled = len(hits)
            if not hits or not all(r.get("found") for r in hits):
                problems.append(f"the reconciler of {spec.target}({target_ticket}) did not run "
                                f"(or did not find the call): {hits}")
            if runs != 1:
                problems.append(f"reconcilable {spec.target}({target_ticket}) ran {runs} times")
        elif runs != 2:
            problems.append(f"unrecorded {spec.target}({target_ticket}) ran {runs} time(s); "
                            f"expected once more on replay (2)")
    # A notification lost before pruning: the restore prunes the restored payloads.
    if spec.point == "notify" and spec.target == "before" and v.injected:
        lost_cp = int(v.injection.get("checkpoint", -1))
        covering = [r for r in o.restores if r["checkpoint"] >= lost_cp
                    and any(p >= lost_cp for p in r["payloads"])]
        if not covering:
            problems.append(f"no restore got the payloads of checkpoint {lost_cp}, whose "
                            f"notification was lost: {o.restores}")
        elif sum(r.get("pruned", 0) for r in covering) <= 0:
            problems.append(f"the restore after the lost notification of checkpoint {lost_cp} "
                            f"pruned nothing: {covering}")

    # Outputs: every generated ticket answered once; bad input dead-lettered with its reason.
    ids = Counter(json.loads(line).get("ticket_id") for line in o.results)
    expected = {f"G-{n:06d}" for n in range(1, tickets + 1)}
    missing = expected - set(ids)
    if missing:
        problems.append(f"{len(missing)} generated ticket(s) without a result, "
                        f"e.g. {sorted(missing)[:5]}")
    if set(ids) - expected or any(n > 1 for n in ids.values()):
        problems.append("results for unknown tickets or tickets answered twice")
    letters = [json.loads(line) for line in o.dead_letters]
    v.dead_lettered = len(letters)
    for kind, problem in check_dead_letters(letters).items():
        problems.append(f"bad input {kind}: {problem}")
    if reference is not None:
        ref_lines = Counter(reference.results) + Counter(reference.dead_letters)
        lines = Counter(o.results) + Counter(o.dead_letters)
        v.lost = sum((ref_lines - lines).values())
        v.unexpected = sum((lines - ref_lines).values())
        if v.lost or v.unexpected:
            problems.append(f"outputs differ from the reference: {v.lost} missing, "
                            f"{v.unexpected} unexpected line(s)")

    # The store is bounded: nothing left once the final checkpoint completed.
    if summary is not None:
        v.store_records_left = int(summary["store_records_left"])
        if v.store_records_left != 0:
            problems.append(f"{v.store_records_left} store record(s) left after the final "
                            f"checkpoint")
    elif completed:
        problems.append("no summary")
    return v


# -- mini-cluster runs ----------------------------------------------------------------------
def fresh_dir(path: Path) -> Path:
    """An empty directory at ``path``."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def store_for(ctx: Context, plan: Plan, out: Path) -> dict[str, Any]:
    """The run's store settings: its own SQLite file, or the chaos PostgreSQL server."""
    if plan.store == "postgres":
        if ctx.pg is None:
            raise HarnessError("internal: a PostgreSQL run without a server")
        return {**ctx.pg.settings(), "commit": ctx.commit}
    return {"backend": "sqlite", "path": str(out / "actions.db"), "commit": ctx.commit}


def run_mini(ctx: Context, plan: Plan,
             monitor: Optional[Callable[[subprocess.Popen[Any]], None]] = None,
             injection: Optional[dict[str, Any]] = None) -> Verdict:
    """One run on the local mini-cluster, checked."""
    out = fresh_dir(ctx.work / plan.name)
    config = write_config(ctx, plan, out, store_for(ctx, plan, out))
    job = run_job(config, ["--chaos", plan.spec, "--chaos-bad-input"], out, ctx.env,
                  monitor)
    completed = job.summary is not None and not job.timed_out
    failure = (f"timed out after {JOB_TIMEOUT_S}s" if job.timed_out else
               f"exit status {job.returncode}; end of {job.log}:\n{job.tail()}")
    return check_run(plan, out, completed, failure, job.summary, ctx.reference, ctx.tickets,
                     injection=injection, seconds=job.seconds,
                     log_text=job.log.read_text(errors="replace"))


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
            except HarnessError as exc:
                injection.update(restart_failed=str(exc), why=str(exc))
                return
            # Evidence that the job's sessions were cut (the server logs one line each).
            with open(pg.log, errors="replace") as fh:
                fh.seek(offset)
                cut = fh.read().count("terminating connection due to administrator command")
            injection.update(injected=True, calls_before=calls, sessions_cut=cut,
                             restart_s=round(time.monotonic() - started, 1), why="")

    return run_mini(ctx, plan, monitor, injection)


# -- PostgreSQL ------------------------------------------------------------------------------
def free_port() -> int:
    """A free TCP port on localhost."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgServer:
    """A throwaway server of ``scripts/pg-test-server.sh`` for the chaos runs."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.log = directory / "postgres.log"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "FAE_PG_PORT": str(self.port), "FAE_PG_PASSWORD": PG_PASSWORD,
                "FAE_PG_FSYNC": "off"}

    def _script(self, command: str, timeout: float = 180) -> str:
        try:
            proc = subprocess.run(["bash", str(PG_SH), command, str(self.directory)],
                                  env=self._env(), capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(f"pg-test-server.sh {command} did not return in "
                               f"{timeout}s") from exc
        if proc.returncode != 0:
            raise HarnessError(f"pg-test-server.sh {command} failed:\n{proc.stderr[-3000:]}")
        return proc.stdout

    def start(self) -> None:
        """Start a fresh server (stopping one a previous run may have left in the directory)."""
        self._script("stop")
        self._script("start", timeout=300)

    def restart(self) -> None:
        """Restart it (fast shutdown: every session is cut)."""
        self._script("restart")

    def stop(self) -> None:
        """Stop it; errors are reported, not raised (used in cleanup)."""
        try:
            self._script("stop")
        except HarnessError as exc:
            print(f"warning: {exc}", file=sys.stderr)

    def settings(self) -> dict[str, Any]:
        """Store settings of a job on this server."""
        return {"backend": "postgres", "host": "127.0.0.1", "port": self.port,
                "dbname": "flink_agents", "user": "flink_agents",
                "password_env": "FAE_PG_PASSWORD", "retries": 8}


# -- the standalone cluster -------------------------------------------------------------------
class Cluster:
    """A standalone cluster of ``scripts/cluster.sh`` in its own directory, on free ports."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.directory = directory
        self.rest_port = free_port()
        self.env = {**env, "FAE_CLUSTER_DIR": str(directory), "FAE_PYTHON": PY,
                    "FAE_REST_PORT": str(self.rest_port), "FAE_JM_RPC_PORT": str(free_port()),
                    "FAE_PG_PASSWORD": PG_PASSWORD}
        self.flink = directory / "flink"

    def sh(self, *args: str, timeout: float = 240, env: Optional[dict[str, str]] = None) -> str:
        """``scripts/cluster.sh ARGS`` (checked, bounded)."""
        try:
            proc = subprocess.run(["bash", str(CLUSTER_SH), *args], cwd=ROOT,
                                  env=env or self.env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(f"cluster.sh {' '.join(args)} did not return in "
                               f"{timeout}s") from exc
        if proc.returncode != 0:
            raise HarnessError(f"cluster.sh {' '.join(args)} failed ({proc.returncode}):\n"
                               f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        return proc.stdout

    def start(self) -> None:
        """Start it; a cluster an interrupted run left in the directory is stopped first."""
        if (self.flink / "ports").exists():
            env = {k: v for k, v in self.env.items()
                   if k not in ("FAE_REST_PORT", "FAE_JM_RPC_PORT")}
            self.sh("stop", timeout=120, env=env)
        self.sh("start", timeout=240)

    def stop(self) -> None:
        """Stop it; errors are reported, not raised (used in cleanup)."""
        try:
            self.sh("stop", timeout=120)
        except HarnessError as exc:
            print(f"warning: {exc}", file=sys.stderr)

    def rest(self, path: str) -> Any:
        """GET a REST path (JSON)."""
        url = f"http://localhost:{self.rest_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.load(resp)

    def submit(self, config: Path, *job_args: str) -> str:
        """Submit the main job (``cluster.sh submit``); return its id."""
        stdout = self.sh("submit", "--config", str(config), *job_args, timeout=240)
        for line in stdout.splitlines():
            if line.startswith("JOB_ID "):
                return line.split()[1]
        raise HarnessError(f"cluster.sh submit printed no JOB_ID:\n{stdout}")

    def taskmanager_pids(self) -> list[int]:
        """Live TaskManager JVMs of this cluster (from its pid files)."""
        pids = []
        for path in glob.glob(str(self.flink / "pid" / "flink-*-taskexecutor.pid")):
            for word in Path(path).read_text().split():
                try:
                    cmdline = Path(f"/proc/{int(word)}/cmdline").read_bytes()
                except (OSError, ValueError):
                    continue
                if str(self.flink / "conf").encode() in cmdline:
                    pids.append(int(word))
        return pids

    def kill_taskmanager(self) -> int:
        """``kill -9`` the TaskManager JVM; return its pid once it is gone."""
        pids = self.taskmanager_pids()
        if len(pids) != 1:
            raise HarnessError(f"expected one TaskManager process, found {pids}")
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 15
        while Path(f"/proc/{pids[0]}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        return pids[0]

    def start_taskmanager(self) -> None:
        """Start a new TaskManager (``bin/taskmanager.sh start``, as ``cluster.sh`` starts
        the daemons: our configuration, lib and log directories, the repository as cwd)."""
        import pyflink

        home = Path(pyflink.__file__).resolve().parent
        env = {**self.env, "FLINK_CONF_DIR": str(self.flink / "conf"),
               "FLINK_LOG_DIR": str(self.flink / "log"),
               "FLINK_PID_DIR": str(self.flink / "pid"),
               "FLINK_LIB_DIR": str(self.flink / "lib")}
        try:
            proc = subprocess.run(["bash", str(home / "bin" / "taskmanager.sh"), "start"],
                                  cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=60)
        except subprocess.TimeoutExpired as exc:
            raise HarnessError("taskmanager.sh start did not return in 60s") from exc
        if proc.returncode != 0:
            raise HarnessError(f"taskmanager.sh start failed:\n{proc.stdout}\n{proc.stderr}")

    def exceptions(self, job_id: str) -> list[str]:
        """The job's failure history (newest first), one line each."""
        try:
            data = self.rest(f"/jobs/{job_id}/exceptions")
        except OSError:
            return []
        entries = (data.get("exceptionHistory") or {}).get("entries") or []
        return [(e.get("stacktrace") or e.get("exceptionName") or "").splitlines()[0][:200]
                for e in entries]


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
        job_id = cluster.submit(config, "--chaos", "none", "--chaos-bad-input")
        deadline = time.monotonic() + 180
        while True:
            try:
                state = cluster.rest(f"/jobs/{job_id}")["state"]
                done = cluster.rest(f"/jobs/{job_id}/checkpoints")["counts"]["completed"]
            except OSError:  # REST busy for a moment: ask again
                state, done = "RUNNING", 0
            calls = ledger_lines(out)
            if (state == "RUNNING" and done >= 1
                    and calls >= expected_calls(ctx.tickets) * plan.at_fraction):
                break
            if state not in ("CREATED", "INITIALIZING", "RUNNING"):
                raise HarnessError(f"job {job_id} is {state} before the kill: "
                                   f"{cluster.exceptions(job_id)}")
            if time.monotonic() > deadline:
                raise HarnessError(f"no progress before the kill: {state}, {done} "
                                   f"checkpoints, {calls} calls")
            time.sleep(0.2)
        killed_at = time.time()
        pid = cluster.kill_taskmanager()
        injection.update(injected=True, why="", killed_pid=pid, calls_before=calls,
                         checkpoints_before=done)
        cluster.start_taskmanager()
        try:
            cluster.sh("wait", str(JOB_TIMEOUT_S), timeout=JOB_TIMEOUT_S + 30)
            completed = True
        except HarnessError as exc:
            failure = str(exc)
        restores = collect(out).restores
        if restores:
            injection["recovered_after_s"] = round(min(r["time"] for r in restores)
                                                   - killed_at, 1)
        injection["flink_failures"] = cluster.exceptions(job_id)[:3]
        log_text = "\n".join(injection["flink_failures"])
        summary = job_summary(config, out, ctx.env)
    finally:
        cluster.stop()
    return check_run(plan, out, completed, failure, summary, ctx.reference, ctx.tickets,
                     injection=injection, seconds=time.monotonic() - started,
                     log_text=log_text)


# -- report --------------------------------------------------------------------------------
COLUMNS = [("trials", "trials"), ("injected", "injected"), ("restarts", "restarts"),
           ("duplicates", "dup"), ("reexecuted_unrecorded", "re-exec(unrec)"),
           ("reconciled", "reconciled"), ("lost", "lost"), ("unexpected", "unexp"),
           ("dead_lettered", "dead-lettered"), ("store_records_left", "store-left"),
           ("passed", "passed")]


def aggregate(verdicts: list[Verdict]) -> dict[str, int]:
    """Sums over ``verdicts`` (``passed``: how many passed)."""
    return {
        "trials": len(verdicts),
        "injected": sum(v.injected for v in verdicts),
        "restarts": sum(v.restarts for v in verdicts),
        "duplicates": sum(v.duplicates for v in verdicts),
        "reexecuted_unrecorded": sum(v.reexecuted_unrecorded for v in verdicts),
        "reconciled": sum(v.reconciled for v in verdicts),
        "lost": sum(v.lost for v in verdicts),
        "unexpected": sum(v.unexpected for v in verdicts),
        "dead_lettered": sum(v.dead_lettered for v in verdicts),
        "store_records_left": sum(v.store_records_left or 0 for v in verdicts),
        "passed": sum(v.passed for v in verdicts),
    }


def table(verdicts: list[Verdict]) -> str:
    """The per-kind table, with a total row."""
    rows = []
    for kind, title in KINDS.items():
        group = [v for v in verdicts if v.kind == kind]
        if group:
            rows.append((title, aggregate(group)))
    rows.append(("total", aggregate(verdicts)))
    width = max(len(title) for title, _ in rows)
    head = f"{'failure point':<{width}}  " + " ".join(f"{h:>{max(len(h), 5)}}"
                                                     for _, h in COLUMNS)
    lines = [head, "-" * len(head)]
    for title, agg in rows:
        lines.append(f"{title:<{width}}  " + " ".join(
            f"{agg[key]:>{max(len(h), 5)}}" for key, h in COLUMNS))
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """Where the run happened."""
    import pyflink.version

    java = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": model, "platform": platform.platform(),
            "python": platform.python_version(), "flink": pyflink.version.__version__,
            "java": (java.stderr or java.stdout).splitlines()[0] if java.returncode == 0
            else "?"}


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
    env = {**os.environ, "FAE_PG_PASSWORD": PG_PASSWORD}
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
            raise HarnessError("the reference run is not clean:\n  "
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
            except HarnessError as exc:
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
    except HarnessError as exc:
        print(f"chaos: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if ctx.pg is not None:
            ctx.pg.stop()

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
