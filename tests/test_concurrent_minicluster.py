"""Concurrent runs on the mini-cluster: checkpoints and a failover with runs in flight."""

from __future__ import annotations

import collections
import glob
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_module, run_with_upstream_race_retries

pytestmark = pytest.mark.flink
MODES = ["thread", "process"]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("mode", MODES)
def test_failover_with_runs_in_flight(tmp_path: Path, mode: str) -> None:
    """Only a real job proves it: runs in flight (max_in_flight 16, slow calls) across
    checkpoints Flink triggers at its own moments and a real failover whose restore hands
    the runs back; pruning never touches a run in flight, no recorded call runs again and
    each key keeps its input order, in both modes (the harness chooses its moments)."""
    check_failover_with_runs_in_flight(tmp_path, mode)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("mode", MODES)
def test_failover_with_runs_in_flight_and_unaligned_checkpoints(tmp_path: Path, mode: str) -> None:
    """As above, with unaligned checkpoints (the README's advice for many runs in flight):
    only a real job has barriers that overtake the buffered input (the function blocks while
    16 runs execute) and a restore that hands that input back as channel state, to be
    processed again after the restored runs; still every input runs exactly once, no
    recorded call runs again, each key keeps its input order. In process mode the aligned
    barriers wait behind the backpressured input, so few checkpoints complete while runs are
    in flight; unaligned ones complete every interval (50-60 in a run, nearly all with an
    in-flight run that has recorded calls): here the check asks for such a run in both
    modes."""
    check_failover_with_runs_in_flight(tmp_path, mode, ["--unaligned"], ask_recorded=True)
    # Checkpoints were unaligned, and barriers did overtake buffered input (Flink takes some
    # aligned, e.g. once a task has finished its input: seen in process mode).
    stats = json.loads((tmp_path / "run" / "checkpoints.json").read_text()).values()
    assert any(cp["type"] == "UNALIGNED_CHECKPOINT" for cp in stats), stats
    assert max(cp["persisted_data"] for cp in stats) > 0, stats


def check_failover_with_runs_in_flight(tmp_path: Path, mode: str,
                                       extra: tuple[str, ...] | list[str] = (),
                                       ask_recorded: bool = False) -> None:
    """Run the probe job with runs in flight and a failover; check what the tests above
    say (``ask_recorded``: also in process mode, a checkpoint completed while an in-flight
    run had recorded calls)."""
    n, out = 1500, tmp_path / "run"
    args = ["--out", str(out), "--db", str(out / "actions.db"), "--mode", mode,
            "--n", str(n), "--keys", "100", "--max-in-flight", "16", "--call-ms", "30",
            "--fail-at", str(n // 2), "--interval", "200", "--delay", "0.002", *extra]
    # Process mode: retried if the job hits the PyFlink race (README, "Known issues").
    run_with_upstream_race_retries(
        lambda: run_module("tests.jobs.durable_probe", args,
                           detect_upstream_race=mode == "process"),
        lambda: shutil.rmtree(out, ignore_errors=True))
    assert (out / "failed-once").exists(), "the failure was not injected"

    # Checkpoints completed while runs were in flight, and pruning never touched them.
    checks = [json.loads(line) for line in (out / "inflight-check.jsonl").read_text().splitlines()]
    assert sum(c["in_flight"] for c in checks) > 0, "no checkpoint saw a run in flight"
    if mode == "thread" or ask_recorded:
        # Process mode with aligned checkpoints: few complete while runs are in flight (see
        # the unaligned test); in 1 of 3 runs none had an in-flight run with a record.
        assert sum(c["recorded"] for c in checks) > 0, "no in-flight run had recorded calls"
    assert sum(c["violations"] for c in checks) == 0

    # Every input's run completed exactly once in the exactly-once sink...
    lines = []
    for part in glob.glob(str(out / "sink" / "*" / "part-*")):
        lines += Path(part).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert sorted(r["i"] for r in records) == list(range(n))
    # ...no recorded durable call ran again...
    with open(out / "ledger.jsonl") as fh:
        calls = collections.Counter((e["key"], e["seq"], e["pos"]) for e in map(json.loads, fh))
    assert sum(calls.values()) == 2 * n and max(calls.values()) == 1
    # ...and each key's runs happened in its input order.
    by_key: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    for r in records:
        by_key[r["key"]].append((r["seq"], r["i"]))
    for key, runs in by_key.items():
        runs.sort()
        assert [s for s, _ in runs] == list(range(len(runs))), key
        inputs = [i for _, i in runs]
        assert inputs == sorted(inputs), f"{key}: runs out of input order"
