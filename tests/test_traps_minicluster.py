"""What a new user hits, in real jobs on the mini-cluster (tests/jobs/traps_probe.py):
a dead-lettered run keeps its completed actions' memory and outputs, the library's default
execution mode is thread, a store that cannot open fails the job once (no restart loop)
while a transient failure still restarts, and a job without checkpointing is refused
unless allowed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flink_agents_ext.store import SQLiteStore
from tests.conftest import JOB_TIMEOUT_S, ROOT

pytestmark = pytest.mark.flink
NOT_RECOVERABLE = "(not recoverable: the job is not restarted)"


def run_probe(out: Path, store: dict[str, Any], *args: str) -> subprocess.CompletedProcess:
    """Run the probe job (which may fail) with a hard timeout; never hangs the suite."""
    cmd = [sys.executable, "-m", "tests.jobs.traps_probe", "--out", str(out),
           "--store", json.dumps(store), *args]
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=JOB_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            pytest.fail(f"the probe job did not end in {JOB_TIMEOUT_S}s (restarting "
                        f"forever?):\n{stdout[-2000:]}\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def sqlite(out: Path) -> dict[str, Any]:
    return {"backend": "sqlite", "path": str(out / "actions.db")}


def opens(out: Path) -> int:
    return len((out / "opens.txt").read_text().splitlines())


def collected(out: Path) -> tuple[list[Any], list[dict]]:
    outputs, letters = [], []
    for line in (out / "collected.jsonl").read_text().splitlines():
        item = json.loads(line)
        if item["stream"] == "out":
            outputs.append(json.loads(item["value"]))
        else:  # strict JSON: no NaN
            letters.append(json.loads(item["value"], parse_constant=pytest.fail))
    return outputs, letters


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", [None, "process"], ids=["default", "process"])
def test_dead_letter_keeps_completed_actions_memory_and_outputs(tmp_path, mode):
    """Only a real job proves it: the dead-letter side output of the real operator carries
    the reasons, the default execution mode of a job is thread, in a job's output."""
    out = tmp_path / "out"
    done = run_probe(out, sqlite(out), *(["--mode", mode] if mode else []))
    assert done.returncode == 0, done.stderr[-4000:]
    outputs, letters = collected(out)
    alice = [o for o in outputs if o["key"] == "alice"]
    # The second run of alice was dead-lettered in "check": its "count" output and memory
    # update stay, "check"'s memory changes (checked, poison) and emit do not.
    assert [(o["text"], o["count"], o["checked"], o["poison"]) for o in alice] == [
        ("ok1", 1, None, None), ("bad", 2, "ok1", None), ("ok2", 3, "ok1", None)]
    assert "never emitted" not in json.dumps(outputs)
    # Without a mode set the agent runs in thread mode (the embedded interpreter in Java).
    expected_exe = "java" if mode is None else "python"
    assert {o["exe"].rstrip("0123456789.") for o in outputs} == {expected_exe}
    reasons = {(d["key"], d["action"]): d["reason"] for d in letters}
    assert reasons[("alice", "check")] == "RuntimeError: bad ticket"
    assert "ctx.emit() #1" in reasons[("bob", "check")]
    assert "type set" in reasons[("bob", "check")]
    assert "key is None" in reasons[(None, None)]
    assert len(letters) == 3


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", ["thread", "process"])
def test_store_that_cannot_open_fails_the_job_once_with_the_reason(tmp_path, mode):
    """Only a real job proves it: Flink's restart strategy is suppressed (one open, not a
    restart loop) and the reason reaches the job's error output, in both modes."""
    out = tmp_path / "out"
    store = {"backend": "sqlite", "path": str(out / "blocker" / "actions.db")}
    # A restart loop would open 1000 times, 2 s apart: far past the job timeout.
    done = run_probe(out, store, "--mode", mode, "--restarts", "1000",
                     "--restart-delay-ms", "2000", "--block-store-dir")
    assert done.returncode != 0
    assert "SuppressRestartsException" in done.stderr
    assert (f"flink-agents-ext: cannot open the action state store: SQLite store "
            f"{out / 'blocker' / 'actions.db'}: cannot create directory") in done.stderr
    assert NOT_RECOVERABLE in done.stderr
    assert opens(out) == 1


@pytest.mark.timeout(600)
def test_transient_store_failure_still_restarts(tmp_path):
    """Only a real job proves it: a transient store error leaves Flink's restart strategy
    in charge (the store is opened again by each restart)."""
    out = tmp_path / "out"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there: PostgreSQL "not up yet"
    store = {"backend": "postgres", "host": "127.0.0.1", "port": port, "dbname": "x",
             "user": "x", "retries": 0, "connect_timeout_s": 1}
    done = run_probe(out, store, "--mode", "thread", "--restarts", "2")
    assert done.returncode != 0
    assert NOT_RECOVERABLE not in done.stderr and "SuppressRestartsException" not in done.stderr
    assert "failed after 1 attempt(s)" in done.stderr
    assert opens(out) == 3, "the first attempt and both restarts opened the store"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", ["thread", "process"])
def test_job_without_checkpointing_is_refused_once(tmp_path, mode):
    """Only a real job proves it: the operator sees the job's real checkpoint
    configuration at open and fails the job once, without restarts, in both modes."""
    out = tmp_path / "out"
    done = run_probe(out, sqlite(out), "--mode", mode, "--no-checkpointing",
                     "--restarts", "1000", "--restart-delay-ms", "2000")
    assert done.returncode != 0
    assert "runs in a job without checkpointing" in done.stderr
    assert "allow_no_checkpointing=True" in done.stderr and NOT_RECOVERABLE in done.stderr
    assert opens(out) == 1


@pytest.mark.timeout(600)
def test_job_without_checkpointing_runs_when_allowed_and_prunes_nothing(tmp_path):
    """Only a real job proves it: with allow_no_checkpointing a job without checkpoints
    runs to its end, and since no checkpoint ever completes nothing is pruned."""
    out = tmp_path / "out"
    done = run_probe(out, sqlite(out), "--mode", "thread", "--no-checkpointing",
                     "--allow-no-checkpointing")
    assert done.returncode == 0, done.stderr[-4000:]
    outputs, letters = collected(out)
    assert len(outputs) == 6 and len(letters) == 3
    with SQLiteStore(str(out / "actions.db")) as store:
        assert store.size("traps") > 0, "nothing is pruned without checkpoints"
