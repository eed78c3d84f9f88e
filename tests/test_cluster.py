"""The main job on a real standalone Flink cluster, end to end, through scripts/cluster.sh.

start the cluster -> submit the job (a rate-limited generated stream, ~30 s) -> completed
checkpoints visible over REST -> stop with a savepoint midway -> resume from the savepoint ->
wait until FINISHED -> check the outputs and the store -> a pipeline of one's own
(jobs/own_pipeline.py, no config file, no options of the main job: ``cluster.sh submit-py``,
then ``wait``) -> stop the cluster.

The cluster runs from a temporary cluster directory on free ports, so it neither disturbs nor
is disturbed by a cluster started with ``make cluster-start``. The store is PostgreSQL, on a
throwaway server of ``scripts/pg-test-server.sh`` (in ``.pg/cluster-test``, on a free port;
stopped at the end), or SQLite when that script is missing or ``FAE_CLUSTER_TEST_STORE=sqlite``.
Whatever happens, the fixtures stop the cluster and the server.
"""

from __future__ import annotations

import glob
import json
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from flink_agents_ext.store import open_store
from jobs.support_triage import ParseTicket
from scripts import ToolError
from scripts.cluster import LIVE_STATES, Cluster
from scripts.pgserver import PG_SH, PgServer
from tests.conftest import ROOT

pytestmark = pytest.mark.flink

#: Generated tickets and their rate per source subtask (the job runs with parallelism 2, so
#: twice this many per second): ~30 s of input.
GENERATE, RATE = 6000, 100
NAMESPACE = "support-triage-cluster-test"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The job's store settings: a throwaway PostgreSQL server, else SQLite."""
    if not PG_SH.exists() or os.environ.get("FAE_CLUSTER_TEST_STORE") == "sqlite":
        yield {"backend": "sqlite", "path": str(tmp_path / "out" / "actions.db")}
        return
    server = PgServer(ROOT / ".pg" / "cluster-test")
    for name, value in server.env().items():  # for the test's own look at the store
        monkeypatch.setenv(name, value)
    try:
        server.start()
    except ToolError as exc:
        pytest.fail(str(exc))
    try:
        yield server.settings()
    finally:
        server.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster (started by the test: its start is measured); always stopped, and nothing
    of it may be left running."""
    handle = Cluster(tmp_path / "cluster")
    try:
        yield handle
    finally:
        handle.stop()
        left = handle.processes()
        assert not left, f"cluster processes left after 'cluster.sh stop': {left}"


def expected_file_tickets() -> set[str]:
    """Ticket ids of the valid tickets in the job's input file (the job's own parser)."""
    parser, ids = ParseTicket(), set()
    for line in (ROOT / "data" / "tickets.jsonl").read_text().splitlines():
        for item in parser.process_element(line, None):
            if isinstance(item, dict):
                ids.add(item["ticket_id"])
    return ids


def part_lines(directory: Path) -> list[str]:
    """The lines of the committed part files under ``directory`` (one bucket level)."""
    found: list[str] = []
    for part in glob.glob(str(directory / "*" / "part-*")):  # committed files only
        found += [line for line in Path(part).read_text().splitlines() if line]
    return found


def check_own_pipeline(cluster: Cluster, out: Path) -> None:
    """Submit jobs/own_pipeline.py with ``cluster.sh submit-py`` (an option of ``flink run``
    among the script's arguments is refused), wait for it, check its outputs and store."""
    with pytest.raises(Exception, match="an option of 'flink run'"):
        cluster.sh("submit-py", "jobs/own_pipeline.py", "-d", "--out", str(out))
    stdout = cluster.sh("submit-py", str(ROOT / "jobs" / "own_pipeline.py"), "--out", str(out))
    job_id = Cluster._job_id(stdout)
    assert (cluster.directory / "job-id").read_text().strip() == job_id
    assert (cluster.directory / "job-args").read_text().splitlines() == [
        str(ROOT / "jobs" / "own_pipeline.py"), "--out", str(out)]
    cluster.wait(300)
    results = [json.loads(line) for line in part_lines(out / "results")]
    assert len(results) == 200
    assert {r["tickets"] for r in results if r["customer"] == "c0"} == set(range(1, 30))
    [letter] = [json.loads(line) for line in part_lines(out / "dead_letters")]
    assert letter["key"] is None and "key is None" in letter["reason"]
    with open_store({"backend": "sqlite", "path": str(out / "actions.db")}) as own:
        assert own.size("own-pipeline") == 0, "the final checkpoint pruned every record"


def ledger_lines(out: Path) -> int:
    ledger = out / "side_effects.jsonl"
    return sum(1 for _ in ledger.open()) if ledger.exists() else 0


@pytest.mark.timeout(600, method="signal")
def test_submit_savepoint_resume_on_a_standalone_cluster(
        tmp_path: Path, store: dict[str, Any], cluster: Cluster) -> None:
    """What no mini-cluster test can show: the scripts, REST API, ``flink run -d``, a
    savepoint taken by ``flink stop`` and a resume with ``-s`` on a real JobManager and
    TaskManager, with the job's Python shipped as ``-pyfs``; then, on the same cluster,
    ``cluster.sh submit-py`` ships a user's own script (:func:`check_own_pipeline`)."""
    out = tmp_path / "out"
    profile = yaml.safe_load((ROOT / "conf" / "cluster.yaml").read_text())
    profile["job"]["namespace"] = NAMESPACE
    profile["store"] = store
    profile["input"].update(generate=GENERATE, rate=RATE)
    profile["output"]["dir"] = str(out)
    config = tmp_path / "cluster-test.yaml"
    config.write_text(yaml.safe_dump(profile))
    timings: dict[str, float] = {}

    def timed(name: str, *args: str, timeout: float = 240) -> str:
        started = time.monotonic()
        stdout = cluster.sh(*args, timeout=timeout)
        timings[name] = round(time.monotonic() - started, 1)
        return stdout

    # 1. Start: REST answers and a TaskManager with 2 slots is registered.
    timed("start", "start", timeout=200)
    overview = cluster.rest("/overview")
    assert overview["taskmanagers"] == 1 and overview["slots-total"] == 2
    assert "already running" in cluster.sh("start", timeout=60)  # idempotent

    # 2. Submit: returns at once with the job id, which is saved.
    stdout = timed("submit", "submit", "--config", str(config))
    job = re.search(r"^JOB_ID ([0-9a-f]{32})$", stdout, re.M)
    assert job, stdout
    job_id = job.group(1)
    assert (cluster.directory / "job-id").read_text().strip() == job_id
    assert cluster.state(job_id) in LIVE_STATES

    # 3. Completed checkpoints over REST, then a savepoint midway (a third of the calls).
    total_calls = 3 * GENERATE  # at least: classify, crm_lookup, draft_reply per ticket
    deadline = time.monotonic() + 240  # bounded: a loaded machine is slow
    while True:
        counts = cluster.rest(f"/jobs/{job_id}/checkpoints")["counts"]
        if counts["completed"] >= 2 and ledger_lines(out) >= total_calls // 3:
            break
        state = cluster.state(job_id)
        assert state in LIVE_STATES, f"job {job_id} is {state}"
        assert time.monotonic() < deadline, f"no progress: {counts}, {ledger_lines(out)} calls"
        time.sleep(1)
    shown = cluster.sh("checkpoints")
    assert re.search(r"checkpoints: [1-9]\d* completed", shown), shown
    latest = cluster.rest(f"/jobs/{job_id}/checkpoints")["latest"]["completed"]
    job_checkpoints = cluster.directory / "checkpoints" / job_id
    assert latest["external_path"].startswith(f"file:{job_checkpoints}/chk-"), latest
    # (retention 1: the one shown may be subsumed by now, but one is always retained)
    assert glob.glob(str(job_checkpoints / "chk-*" / "_metadata"))

    stdout = timed("savepoint", "savepoint", timeout=200)
    savepoint = re.search(r"^SAVEPOINT (\S+)$", stdout, re.M)
    assert savepoint, stdout
    savepoint_path = savepoint.group(1)
    assert (cluster.directory / "savepoint").read_text().strip() == savepoint_path
    assert Path(savepoint_path.removeprefix("file:"), "_metadata").exists()
    # Stopped: the REST API may say RUNNING for a moment after 'flink stop' returned.
    assert cluster.wait_for_state(job_id, ["FINISHED", "FAILED", "CANCELED"]) == "FINISHED"
    calls_at_savepoint = ledger_lines(out)
    assert calls_at_savepoint < total_calls, "the job ended before the savepoint"

    # 4. Resume from the savepoint, wait until the whole stream is done.
    stdout = timed("resume", "resume")
    resumed = re.search(r"^JOB_ID ([0-9a-f]{32})$", stdout, re.M)
    assert resumed and resumed.group(1) != job_id, stdout
    resumed_id = resumed.group(1)
    timed("wait", "wait", "300", timeout=330)
    restored = cluster.rest(f"/jobs/{resumed_id}/checkpoints")["latest"]["restored"]
    assert restored["is_savepoint"] and restored["external_path"] == savepoint_path
    cluster.sh("status")
    # 5. Outputs: every ticket exactly once, no durable call executed twice.
    expected = {f"G-{n:06d}" for n in range(1, GENERATE + 1)} | expected_file_tickets()
    lines = part_lines(out / "results")
    ids = Counter(json.loads(line)["ticket_id"] for line in lines)
    assert len(lines) == len(expected), (len(lines), len(expected))
    assert not [t for t, n in ids.items() if n > 1], "duplicates in the exactly-once sink"
    assert set(ids) == expected
    assert not glob.glob(str(out / "results" / "*" / ".part-*")), "uncommitted result files"
    calls: Counter[tuple[str, str]] = Counter()
    with (out / "side_effects.jsonl").open() as fh:
        calls.update((e["call"], e["ticket"]) for e in map(json.loads, fh))
    assert not [c for c, n in calls.items() if n > 1], "a durable call ran twice"
    for call in ("model_classify", "crm_lookup", "model_draft_reply"):
        assert {t for c, t in calls if c == call} == expected, call
    assert ledger_lines(out) > calls_at_savepoint

    # 6. The store: nothing left for the namespace once the final checkpoint completed.
    summary_json = tmp_path / "summary.json"
    cluster.sh("summary", "--summary-json", str(summary_json), timeout=120)
    summary = json.loads(summary_json.read_text())
    assert summary["results"] == len(expected)
    assert summary["dead_letters"] == 3
    assert summary["durable_calls_run_twice"] == 0
    assert summary["records_pruned"] > 0
    assert summary["store_records_left"] == 0
    with open_store(store) as opened:
        assert opened.size(NAMESPACE) == 0

    # 7. A pipeline of one's own on the same cluster (one cluster start for both).
    check_own_pipeline(cluster, tmp_path / "own")

    # 8. Stop (the fixture stops again, harmlessly, and checks nothing is left).
    timed("stop", "stop", timeout=120)
    assert not cluster.processes()
    print(f"\nstore {store['backend']}; timings (s): {json.dumps(timings)}")
