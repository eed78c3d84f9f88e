"""Durable actions on the mini-cluster with real checkpoints: failover and rescale."""

from __future__ import annotations

import collections
import glob
import json
import shutil
from pathlib import Path

import pytest

from flink_agents_ext.store import SQLiteStore
from tests.conftest import run_module, run_with_upstream_race_retries
from tests.jobs.lines import read_lines

pytestmark = pytest.mark.flink
MODES = ["thread", "process"]
NS = "durable-probe"


def ledger(out: Path) -> collections.Counter:
    with open(out / "ledger.jsonl") as fh:
        return collections.Counter(
            (e["key"], e["seq"], e["pos"]) for e in map(json.loads, fh))


def sink_lines(out: Path) -> list[str]:
    lines: list[str] = []
    # Finished part files only: in-progress/pending files start with a dot.
    for path in glob.glob(str(out / "sink" / "*" / "part-*")):
        with open(path) as fh:
            lines += [line.rstrip("\n") for line in fh]
    return sorted(lines)


def writer_lines(out: Path) -> list[str]:
    return sorted(read_lines(str(out / "writer")))


def expected_lines(numbers: range, keys: int = 25) -> set[str]:
    """What the probe emits for elements ``numbers`` when each key's runs are numbered from
    0 in input order (parallelism 1)."""
    lines = set()
    seqs: collections.Counter = collections.Counter()
    for i in numbers:
        key = f"k{i % keys}"
        seq = seqs[key]
        seqs[key] += 1
        thought = f"t{i}@{seq}.0"
        lines.add(json.dumps({"key": key, "seq": seq, "i": i, "done": f"{thought}@{seq}.1",
                              "runs": seq + 1}, sort_keys=True))
    return lines


def store_state(db: Path) -> tuple[int, int | None]:
    with SQLiteStore(str(db)) as store:
        return store.size(NS), store.get_prune_boundary(NS)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("mode", MODES)
def test_failover_runs_every_durable_call_once_and_outputs_match(tmp_path, mode):
    """A failure inside an action, after its durable call, restarts the job from its last
    checkpoint. What a harness test cannot prove: Flink's own replay of the inputs since that
    checkpoint, on the real bridge, in both modes, meets every recorded call. The outputs of
    the exactly-once sink are those of a failure-free run (:func:`expected_lines`: with
    parallelism 1 each key's runs are numbered in input order)."""
    n, out = 1500, tmp_path / "failed"
    args = ["--out", str(out), "--db", str(out / "actions.db"), "--mode", mode,
            "--n", str(n), "--fail-at", str(n // 2)]
    # Process mode: retried if the job hits the PyFlink race (README, "Known issues").
    run_with_upstream_race_retries(
        lambda: run_module("tests.jobs.durable_probe", args,
                           detect_upstream_race=mode == "process"),
        lambda: shutil.rmtree(out, ignore_errors=True))
    assert (out / "failed-once").exists(), "the failure was not injected"
    # The side-effect ledger: every durable call ran exactly once per (key, seq, position),
    # although the failed run replayed inputs from its last checkpoint.
    calls = ledger(out)
    assert sum(calls.values()) == 2 * n
    assert max(calls.values()) == 1, [k for k, v in calls.items() if v > 1][:5]
    # The exactly-once sink holds the records of a failure-free run, each once.
    lines = sink_lines(out)
    assert len(lines) == n
    assert set(lines) == expected_lines(range(n))
    # Every sequence completed and was covered by the final checkpoint: nothing is left.
    size, boundary = store_state(out / "actions.db")
    assert size == 0
    assert boundary is not None and boundary > 0


@pytest.mark.timeout(600)
def test_failover_with_group_commit_runs_every_durable_call_once(tmp_path):
    """Only a real job proves it: with group commit the failed task's close (called by
    Flink on failover) writes the buffered records before the restart replays."""
    # Group commit buffers records; the failed task's close writes them, so the replay
    # still finds every call that ran (only a process killed outright would lose some).
    n, out = 1500, tmp_path / "group"
    store = {"backend": "sqlite", "path": str(out / "actions.db"), "commit": "group",
             "commit_interval_ms": 200}
    run_module("tests.jobs.durable_probe",
               ["--out", str(out), "--store", json.dumps(store), "--mode", "thread",
                "--n", str(n), "--fail-at", str(n // 2)])
    assert (out / "failed-once").exists(), "the failure was not injected"
    calls = ledger(out)
    assert sum(calls.values()) == 2 * n
    assert max(calls.values()) == 1, [k for k, v in calls.items() if v > 1][:5]
    assert len(sink_lines(out)) == n
    size, boundary = store_state(out / "actions.db")
    assert size == 0
    assert boundary is not None and boundary > 0


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", MODES)
def test_rescale_through_savepoint_finds_every_record(tmp_path, mode):
    """Only a real job proves it: a savepoint taken by Flink at parallelism 2 and restored
    at 3 redistributes the keyed state (sequences, memory) over new key groups, and every
    recorded call is found by the subtask that now owns its key."""
    n, out, db = 2400, tmp_path / "run", tmp_path / "run" / "actions.db"
    common = ["--out", str(out), "--db", str(db), "--mode", mode, "--n", str(n),
              "--sink", "writer", "--delay", "0.002"]
    stdout = run_module("tests.jobs.durable_probe",
                        [*common, "--parallelism", "2", "--stop-after", str(n // 2)])
    [savepoint] = [line.split(" ", 1)[1] for line in stdout.splitlines()
                   if line.startswith("SAVEPOINT ")]
    first = ledger(out)
    assert 0 < sum(first.values()) < 2 * n, "the job must stop midway"
    _, boundary_at_savepoint = store_state(db)
    run_module("tests.jobs.durable_probe",
               [*common, "--parallelism", "3", "--from-savepoint", savepoint])
    calls = ledger(out)
    assert sum(calls.values()) == 2 * n
    assert max(calls.values()) == 1
    lines = writer_lines(out)
    assert len(lines) == n and len(set(lines)) == n
    # Per-key memory survived the rescale: each key's run counter is consecutive.
    runs = collections.defaultdict(list)
    for rec in map(json.loads, lines):
        runs[rec["key"]].append((rec["seq"], rec["runs"]))
    for key, pairs in runs.items():
        assert sorted(pairs) == [(s, s + 1) for s in range(len(pairs))], key
    size, boundary = store_state(db)
    assert size == 0
    assert boundary_at_savepoint is not None and boundary is not None
    assert boundary > boundary_at_savepoint
