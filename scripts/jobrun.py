"""The one job runner of tests, benchmarks and chaos: ``python -m MODULE ARGS`` in a
subprocess, in its own session (so that a kill takes the JVM it started with it), with a
hard timeout, an optional monitor called while it runs, and detection of the known PyFlink
process-mode race.

:data:`UPSTREAM_RACE` is the message of a PyFlink 2.3.0 race (README, "Known issues"): in
process mode a failover can cancel an upstream *stock* Python operator while its
asynchronous flush still closes a Beam bundle; the TaskManager then fails with this message
and the local mini-cluster waits for slots forever. Reproduced without this package:
``scripts/pyflink_process_mode_race.py``. With ``detect_upstream_race`` the job's own Flink log is
watched and the job is stopped at once when the race shows up, so the caller can run it
again instead of waiting for the timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from scripts import PY, ROOT

UPSTREAM_RACE = "Reference count must not be negative"
#: How often the Flink log is searched for the race (seconds).
RACE_CHECK_S = 2.0


@dataclass
class JobResult:
    """How a job subprocess ended, with what it printed."""

    argv: list[str]
    returncode: Optional[int]
    seconds: float
    timed_out: bool
    #: Stopped because the PyFlink process-mode race showed up in the Flink log.
    upstream_race: bool
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        """It exited with status 0 by itself."""
        return self.returncode == 0 and not self.timed_out and not self.upstream_race

    def command(self) -> str:
        """The command line, shortened to the module and its arguments."""
        return " ".join(self.argv[1:])

    def describe(self, timeout: Optional[float] = None) -> str:
        """Why it failed (or ``ok``), with the end of its output."""
        if self.ok:
            return "ok"
        why = ("hit the PyFlink process-mode race (README, Known issues)" if self.upstream_race
               else f"did not finish in {timeout or round(self.seconds)}s" if self.timed_out
               else f"failed ({self.returncode})")
        return f"job {self.command()} {why}:\n{self.stdout[-3000:]}\n{self.stderr[-6000:]}"

    def tail(self, lines: int = 25) -> str:
        """The last lines of its output (stdout, then stderr)."""
        text = (self.stdout + "\n" + self.stderr).strip().splitlines()
        return "\n".join(text[-lines:])


def race_in_logs(log_dir: Path) -> bool:
    """Whether a Flink log in ``log_dir`` (one job's own) shows the race."""
    for path in log_dir.glob("flink-*.log"):
        try:
            if UPSTREAM_RACE in path.read_text(errors="replace"):
                return True
        except OSError:
            continue
    return False


def kill_group(proc: subprocess.Popen[Any]) -> None:
    """``SIGKILL`` the process group of ``proc`` (its own session) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def run_job(module: str, args: Sequence[Any], *, timeout: float,
            env: Optional[Mapping[str, str]] = None, log: Optional[Path] = None,
            monitor: Optional[Callable[[subprocess.Popen[Any]], None]] = None,
            detect_upstream_race: bool = False, python: Optional[str] = None) -> JobResult:
    """Run ``python -m module args`` from the repository root and wait for it.

    Args:
        timeout: seconds before the job (its whole process group) is killed.
        python: the interpreter (default: this project's virtual environment's).
        env: its environment (default: this process's).
        log: keep its output in ``<log>.out`` and ``<log>.err``, and its Flink log in
            ``<log>.flink-log/`` (default: temporary files). Every job has a Flink log
            directory of its own (``FLINK_LOG_DIR``), so that jobs that run at once (parallel
            tests, chaos trials) never read each other's log.
        monitor: called with the process about every 0.2 s while it runs.
        detect_upstream_race: stop it when the PyFlink race shows up (see the module).

    Returns:
        The :class:`JobResult`; it never raises for the job's own failure.
    """
    argv = [python or PY, "-m", module, *map(str, args)]
    with tempfile.TemporaryDirectory(prefix="fae-job-") as tmp:
        base = log if log is not None else Path(tmp) / "job"
        base.parent.mkdir(parents=True, exist_ok=True)
        out_path, err_path = Path(f"{base}.out"), Path(f"{base}.err")
        log_dir = Path(f"{base}.flink-log")
        shutil.rmtree(log_dir, ignore_errors=True)
        log_dir.mkdir()
        job_env = {**(env if env is not None else os.environ), "FLINK_LOG_DIR": str(log_dir)}
        started = time.monotonic()
        timed_out = race = False
        with open(out_path, "w") as out, open(err_path, "w") as err:
            proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=err,
                                    env=job_env,
                                    start_new_session=True)
            try:
                next_race_check = started + RACE_CHECK_S
                while proc.poll() is None:
                    now = time.monotonic()
                    if now - started > timeout:
                        timed_out = True
                        break
                    if detect_upstream_race and now >= next_race_check:
                        next_race_check = now + RACE_CHECK_S
                        if race_in_logs(log_dir):
                            race = True
                            break
                    if monitor is not None:
                        monitor(proc)
                    time.sleep(0.2)
            finally:
                if proc.poll() is None:
                    kill_group(proc)
        return JobResult(argv, None if timed_out or race else proc.returncode,
                         round(time.monotonic() - started, 1), timed_out, race,
                         out_path.read_text(errors="replace"),
                         err_path.read_text(errors="replace"))


def watch_completed_checkpoints(port: int, job_id: str, found: dict[int, dict[str, Any]],
                                stop: threading.Event, period_s: float = 0.2) -> None:
    """Inside a job (a thread of its client): until ``stop`` is set, read the job's
    checkpoint history from the mini-cluster's REST API on ``port`` every ``period_s``;
    ``found[id]`` is each completed checkpoint's statistics as Flink reports them
    (``end_to_end_duration`` ms, ``checkpoint_type``, ``persisted_data`` bytes...)."""
    url = f"http://127.0.0.1:{port}/jobs/{job_id}/checkpoints"
    while not stop.wait(period_s):
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                history = json.load(resp).get("history", [])
        except (OSError, ValueError):
            continue
        for cp in history:
            if cp.get("status") == "COMPLETED":
                found[int(cp["id"])] = cp
