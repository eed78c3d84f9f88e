"""A pipeline of one's own (jobs/own_pipeline.py, no config file, no options of the main
job) on a real standalone cluster: ``scripts/cluster.sh submit-py``, then ``wait``."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest

from flink_agents_ext.store import open_store
from scripts.cluster import Cluster
from tests.conftest import ROOT
from tests.test_cluster import cluster  # noqa: F401  (the fixture)

pytestmark = pytest.mark.flink


def lines(directory: Path) -> list[str]:
    found: list[str] = []
    for part in glob.glob(str(directory / "*" / "part-*")):  # committed files only
        found += [line for line in Path(part).read_text().splitlines() if line]
    return found


@pytest.mark.timeout(420, method="signal")
def test_submit_py_runs_a_pipeline_of_ones_own(tmp_path: Path,
                                               cluster: Cluster) -> None:  # noqa: F811
    """Only a real cluster proves it: ``cluster.sh submit-py`` ships a user's own script
    and this package to a standalone cluster's TaskManagers, where it runs with
    checkpoints to its end."""
    out = tmp_path / "out"
    cluster.start()
    with pytest.raises(Exception, match="an option of 'flink run'"):
        cluster.sh("submit-py", "jobs/own_pipeline.py", "-d", "--out", str(out))
    stdout = cluster.sh("submit-py", str(ROOT / "jobs" / "own_pipeline.py"), "--out", str(out))
    job_id = Cluster._job_id(stdout)
    assert (cluster.directory / "job-id").read_text().strip() == job_id
    assert (cluster.directory / "job-args").read_text().splitlines() == [
        str(ROOT / "jobs" / "own_pipeline.py"), "--out", str(out)]
    cluster.wait(300)
    results = [json.loads(line) for line in lines(out / "results")]
    assert len(results) == 200
    assert {r["tickets"] for r in results if r["customer"] == "c0"} == set(range(1, 30))
    [letter] = [json.loads(line) for line in lines(out / "dead_letters")]
    assert letter["key"] is None and "key is None" in letter["reason"]
    with open_store({"backend": "sqlite", "path": str(out / "actions.db")}) as store:
        assert store.size("own-pipeline") == 0, "the final checkpoint pruned every record"
