"""The main job (support triage) on the mini-cluster, with and without a failure."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run_module

pytestmark = pytest.mark.flink


def config(tmp_path: Path, name: str, **job: object) -> Path:
    data = yaml.safe_load((ROOT / "conf" / "local.yaml").read_text())
    out = tmp_path / name
    data["store"]["path"] = str(out / "actions.db")
    data["output"]["dir"] = str(out)
    data["input"]["generate"] = 1200
    data["input"]["rate"] = 600
    data["job"].update(job)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def results(out: Path) -> list[str]:
    lines: list[str] = []
    for part in glob.glob(str(out / "results" / "*" / "part-*")):
        lines += Path(part).read_text().splitlines()
    return sorted(lines)


@pytest.mark.timeout(600)
def test_failover_changes_nothing_in_the_results(tmp_path: Path) -> None:
    """Only a real job proves it: the shipped main job (config, source, agents, sinks) with
    a failure injected by Flink's restart gives the results of a failure-free run, replays
    completed work instead of redoing it, and prunes everything in the end."""
    summaries = {}
    for name, extra in (("clean", []), ("failed", ["--fail-after", "600"])):
        cfg = config(tmp_path, name)
        summary = tmp_path / f"{name}.json"
        stdout = run_module("jobs.support_triage",
                            ["--config", str(cfg), "--summary-json", str(summary), *extra])
        assert "durable_calls_run_twice  0" in stdout
        summaries[name] = json.loads(summary.read_text())
    clean, failed = summaries["clean"], summaries["failed"]
    assert (tmp_path / "failed" / "failed-once").exists()
    # Same results, same dead letters, every durable call exactly once in both runs.
    assert results(tmp_path / "failed") == results(tmp_path / "clean")
    assert clean["results"] == failed["results"] == 1240
    assert clean["dead_letters"] == failed["dead_letters"] == 3
    assert clean["durable_calls_run"] == failed["durable_calls_run"]
    assert failed["durable_calls_run_twice"] == 0
    # The failed run replayed completed work instead of redoing it.
    assert clean["actions_replayed"] == 0 and failed["actions_replayed"] > 0
    # Pruned as checkpoints completed; nothing left once the final checkpoint completed.
    for summary in (clean, failed):
        assert summary["records_pruned"] > 0
        assert summary["store_records_left"] == 0
