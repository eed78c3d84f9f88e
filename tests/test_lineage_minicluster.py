"""Restore timelines on real Flink jobs (mini-cluster, thread mode, SQLite store): a fresh
start on a used namespace, and a restore from an older retained checkpoint with retention 2.

What a harness test cannot prove here: that the job timeline the Java operators hand over
(the lineage from union operator state, the job id, the checkpoint a new job restored from)
drives the store's lineage rules in a real job; that a restore from a retained checkpoint
(``execution.savepoint.path`` = ``.../chk-n``, a new job whose checkpoint ids repeat the
abandoned ones) and a cancelled job's leftovers behave as the harness says.
"""

from __future__ import annotations

import pytest

from flink_agents_ext.store import SQLiteStore
from tests.conftest import run_module
from tests.test_durable_minicluster import NS, expected_lines, ledger, sink_lines

pytestmark = pytest.mark.flink
def checkpoints(stdout: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in stdout.splitlines()
            if line.startswith("CHECKPOINT ")]


@pytest.mark.timeout(600)
def test_fresh_start_on_a_used_namespace_runs_its_own_calls(tmp_path):
    """Job A is cancelled before any checkpoint completed: all its records stay. Job B
    starts fresh (no -s) on the same namespace with other inputs under the same keys and
    sequences: it must run every call of its own and emit its own results (on the code
    before lineages it replayed A's records instead)."""
    db = tmp_path / "actions.db"
    a, b = tmp_path / "a", tmp_path / "b"
    run_module("tests.jobs.durable_probe",
               ["--out", str(a), "--db", str(db), "--n", "2000", "--interval", "60000",
                "--cancel-after-lines", "300"])
    with SQLiteStore(str(db)) as store:
        left = store.size(NS)
    # About one record per ledger line; fewer when the cancel lands under load (268 of 300
    # seen with three parallel workers): enough that B's sequences meet A's records.
    assert left >= 100, f"job A must leave records behind ({left})"
    n = 200
    run_module("tests.jobs.durable_probe",
               ["--out", str(b), "--db", str(db), "--n", str(n), "--offset", "100000"])
    calls = ledger(b)
    assert sum(calls.values()) == 2 * n and max(calls.values()) == 1
    assert set(sink_lines(b)) == expected_lines(range(100000, 100000 + n))
    assert len(sink_lines(b)) == n
    with SQLiteStore(str(db)) as store:
        assert store.size(NS) == 0, "A's records were removed, B's pruned"
        lineage = store.get_lineage(NS)
    assert lineage is not None and len(lineage.history) == 1


@pytest.mark.timeout(600)
def test_restore_from_an_older_retained_checkpoint_runs_no_call_twice(tmp_path):
    """Job A (retention 2, retained checkpoints kept on cancel) is cancelled after its 4th
    checkpoint; job B is started from the OLDER retained checkpoint and replays slower than
    A ran, while its own checkpoints (ids repeating A's) complete. No durable call may run
    twice, and A's and B's outputs together are exactly the expected ones (on the code
    before lineages, A's unapplied marks of the newer checkpoint pruned records B had not
    replayed yet)."""
    db, out = tmp_path / "actions.db", tmp_path / "run"
    n = 800
    common = ["--out", str(out), "--db", str(db), "--n", str(n), "--retention", "2",
              "--interval", "200"]
    stdout = run_module("tests.jobs.durable_probe",
                        [*common, "--delay", "0.003", "--checkpoint-dir",
                         str(tmp_path / "ck-a"), "--cancel-after-checkpoints", "4"])
    retained = checkpoints(stdout)
    assert len(retained) >= 2, stdout[-2000:]
    older = retained[-2]
    first = ledger(out)
    assert 0 < sum(first.values()) < 2 * n, "job A must stop midway"
    run_module("tests.jobs.durable_probe",
               [*common, "--delay", "0.01", "--checkpoint-dir", str(tmp_path / "ck-b"),
                "--from-savepoint", older])
    calls = ledger(out)
    twice = [call for call, count in calls.items() if count > 1]
    assert twice == [], f"{len(twice)} durable calls ran twice, e.g. {twice[:5]}"
    assert sum(calls.values()) == 2 * n
    assert set(sink_lines(out)) == expected_lines(range(n))
    with SQLiteStore(str(db)) as store:
        # Retention 2: the runs the last two checkpoints cover stay restorable; the rest,
        # also what the restored checkpoint's marks covered, was pruned.
        left = store.recorded_runs(NS)
        lineage = store.get_lineage(NS)
    assert len(left) < n // 4, f"{len(left)} of {n} runs were never pruned"
    assert lineage is not None and lineage.history[0][0] == lineage.lineage
    assert len(lineage.history) == 2 and lineage.history[0][1] == int(older.rsplit("-", 1)[1])
