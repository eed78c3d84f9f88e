"""PrunePolicy used directly on a real SQLite store (it is public): without a lineage guard,
when the guard is asked (only when a completion writes marks or prunes), and a restore with
retention 1 that also applies the marks an earlier job left with a higher retention."""

from __future__ import annotations

from pathlib import Path

import pytest

from flink_agents_ext.checkpoint.ledger import CheckpointPayload
from flink_agents_ext.pruning import PrunePolicy, RestoreBoundaryError
from flink_agents_ext.store import SQLiteStore
from tests.store_contract import action_record, rid

NS = "policy"


class HeadLost(Exception):
    pass


@pytest.fixture
def store(tmp_path: Path):
    with SQLiteStore(str(tmp_path / "p.db")) as s:
        for seq in range(4):
            s.put_action(action_record(rid(NS, key="k", seq=seq)))
        yield s


def seqs(store: SQLiteStore) -> list[int]:
    return [s for s in range(4) if store.get_run(NS, "k", s)]


def test_without_a_guard(store: SQLiteStore) -> None:
    policy = PrunePolicy(store, NS)
    assert policy.on_complete(1, [CheckpointPayload(1, {"k": 1})]) == 2
    assert seqs(store) == [2, 3]
    assert store.get_prune_boundary(NS) == 1


def test_the_guard_is_asked_only_before_marks_or_pruning(store: SQLiteStore) -> None:
    asked: list[int] = []

    def lost() -> None:
        asked.append(1)
        raise HeadLost("another job prunes this namespace now")

    one = PrunePolicy(store, NS, retention=1, check_head=lost)
    assert one.on_complete(1, [CheckpointPayload(1, None)]) == 0, "nothing to prune: not asked"
    assert asked == []
    with pytest.raises(HeadLost):
        one.on_complete(2, [CheckpointPayload(2, {"k": 0})])
    two = PrunePolicy(store, NS, retention=2, check_head=lost)
    with pytest.raises(HeadLost):  # retention > 1: a completion always counts in the window
        two.on_complete(3, [])
    assert seqs(store) == [0, 1, 2, 3], "nothing pruned while the head is lost"


def test_restore_with_retention_one_applies_marks_an_earlier_job_left(store: SQLiteStore
                                                                      ) -> None:
    store.add_prune_marks(NS, 1, {"k": 1})  # an earlier job with retention 2 left them
    policy = PrunePolicy(store, NS, retention=1)
    # The restored checkpoint's own payload covers run 0; the earlier marks run 1.
    assert policy.on_restore(2, [CheckpointPayload(2, {"k": 0})]) == 2
    assert seqs(store) == [2, 3]


def test_a_restore_older_than_the_boundary_is_refused_by_default(store: SQLiteStore) -> None:
    PrunePolicy(store, NS).on_complete(3, [CheckpointPayload(3, {"k": 1})])
    with pytest.raises(RestoreBoundaryError, match="pruned up to checkpoint 3"):
        PrunePolicy(store, NS).on_restore(2, [])
    assert seqs(store) == [2, 3]


def test_an_aborted_snapshots_marks_go_into_the_next_snapshot(store: SQLiteStore) -> None:
    # They are then part of a checkpoint: a restore from it still prunes them.
    policy = PrunePolicy(store, NS)
    policy.on_aborted([CheckpointPayload(1, {"k": 1})])
    assert policy.snapshot_payload({"j": 5}) == {"k": 1, "j": 5}
    assert policy.snapshot_payload({}) == {}, "carried once"
    restored = PrunePolicy(store, NS)
    assert restored.on_restore(2, [CheckpointPayload(2, {"k": 1, "j": 5})]) == 2
    assert seqs(store) == [2, 3]


def test_an_abort_after_a_later_snapshot_is_applied_by_that_snapshots_completion(
        store: SQLiteStore) -> None:
    # Snapshot 6 was taken before the abort of 5 arrived, so its payload lacks 5's marks.
    policy = PrunePolicy(store, NS)
    five = policy.snapshot_payload({"k": 1})
    six = policy.snapshot_payload({})
    policy.on_aborted([CheckpointPayload(5, five)])
    assert policy.on_complete(6, [CheckpointPayload(6, six)]) == 2
    assert seqs(store) == [2, 3]
    assert policy.on_complete(7, [CheckpointPayload(7, policy.snapshot_payload({}))]) == 0
