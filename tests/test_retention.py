"""Pruning with retention >= 2 over many checkpoints, driven by the harness on a real SQLite
store: the retention window, repeated and late notifications, invalid retention values,
``allow_reexecution`` lowering the prune boundary; and a hypothesis stateful exploration of
snapshots, completions (repeated, late, skipped) and aborts against a model of the window."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from flink_agents_ext.actions import INPUT, ActionContext, Agent, DurableAgentFunction
from flink_agents_ext.errors import RestoreBoundaryError
from flink_agents_ext.keys import encode_key
from flink_agents_ext.pruning import PrunePolicy, check_retention, merge_max
from flink_agents_ext.store import SQLiteStore
from flink_agents_ext.testing import KeyedFunctionHarness

NS = "retention"


def agent(calls: list[Any]) -> Agent:
    a = Agent("counter")

    def note(value: Any) -> Any:
        calls.append(value)
        return value

    @a.action(on=INPUT)
    def act(event: Any, ctx: ActionContext) -> None:
        ctx.emit(ctx.durable_execute(note, event))

    return a


def make(db: str, calls: list[Any], **options: Any) -> DurableAgentFunction:
    return DurableAgentFunction(agent(calls), {"backend": "sqlite", "path": db}, NS, **options)


def stored_seqs(db: str, key: Any, up_to: int = 40) -> list[int]:
    with SQLiteStore(db) as store:
        return [s for s in range(up_to) if store.get_run(NS, encode_key(key), s)]


def boundary(db: str) -> int | None:
    with SQLiteStore(db) as store:
        return store.get_prune_boundary(NS)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "a.db")


def test_retention_three_over_many_checkpoints(db):
    calls: list[Any] = []
    h = KeyedFunctionHarness(make(db, calls, retention=3))
    snaps = []
    for run in range(6):
        h.process_element(run, key="k")  # run `run` is covered by checkpoint run + 1
        snaps.append(h.snapshot())
        h.notify_complete(snaps[-1].checkpoint_id)
        c = snaps[-1].checkpoint_id
        if c < 3:
            assert stored_seqs(db, "k") == list(range(run + 1)), f"checkpoint {c}"
            assert boundary(db) is None
        else:
            # The last 3 completed checkpoints stay restorable: c - 2 is the oldest, so
            # what checkpoint c - 2 covers (runs up to c - 3) is gone.
            assert stored_seqs(db, "k") == list(range(c - 2, run + 1)), f"checkpoint {c}"
            assert boundary(db) == c - 2
    assert h.metric("records_pruned") == 2 * 4  # runs 0..3: an action and a call each
    with pytest.raises(RestoreBoundaryError, match="pruned up to checkpoint 4"):
        h.restore(snaps[2], make(db, calls, retention=3))
    # The oldest checkpoint of the window restores, and its replay repeats no call.
    before = len(calls)
    h2 = h.restore(snaps[3], make(db, calls, retention=3))
    assert [h2.process_element(run, key="k") for run in (4, 5)] == [[4], [5]]
    assert len(calls) == before


@pytest.mark.parametrize("retention", [1, 2])
def test_repeated_and_late_notifications_change_nothing(db, retention):
    calls: list[Any] = []
    h = KeyedFunctionHarness(make(db, calls, retention=retention))
    snaps = []
    for run in range(3):
        h.process_element(run, key="k")
        snaps.append(h.snapshot())
        h.notify_complete(snaps[-1].checkpoint_id)
    kept, pruned = stored_seqs(db, "k"), h.metric("records_pruned")
    assert kept == list(range(4 - retention, 3))
    for snap in (snaps[2], snaps[2], snaps[1], snaps[0]):
        h.notify_complete(snap.checkpoint_id)
    assert stored_seqs(db, "k") == kept
    assert h.metric("records_pruned") == pruned
    assert boundary(db) == 4 - retention
    # Every checkpoint of the window is still restorable.
    h.restore(snaps[3 - retention], make(db, calls, retention=retention))


def test_lost_notification_with_retention_two_is_pruned_by_the_next_completion(db):
    """Retention 2, checkpoint 3's notification lost, restore from 3: the restore keeps
    what checkpoints 2 and 3 need (it cannot know which older checkpoints are retained),
    and the first completion after it prunes what the lost notification would have."""
    calls: list[Any] = []
    h = KeyedFunctionHarness(make(db, calls, retention=2))
    snaps = []
    for run in range(3):
        h.process_element(run, key="k")
        snaps.append(h.snapshot())
        if run < 2:
            h.notify_complete(snaps[-1].checkpoint_id)  # the third one is lost
    assert stored_seqs(db, "k") == [1, 2]  # checkpoint 2 pruned what checkpoint 1 covers
    h2 = h.restore(snaps[2], make(db, calls, retention=2))
    assert stored_seqs(db, "k") == [1, 2], "the restore pruned what checkpoint 2 still needs"
    h2.process_element(3, key="k")
    h2.notify_complete(h2.snapshot().checkpoint_id)
    # Checkpoints 3 and 4 stay restorable: runs 0-2 are covered by both, run 3 is not.
    assert stored_seqs(db, "k") == [3]
    assert calls == [0, 1, 2, 3]


def test_checkpoints_that_cover_nothing_set_no_boundary(db):
    calls: list[Any] = []
    h = KeyedFunctionHarness(make(db, calls))
    first = h.snapshot()
    h.notify_complete(first.checkpoint_id)
    h.notify_complete(h.snapshot().checkpoint_id)
    assert boundary(db) is None
    assert h.function.stats()["records_pruned"] == 0
    h.restore(first, make(db, calls))  # nothing was pruned: the oldest one restores


@pytest.mark.parametrize("bad", [0, -1, True, False, 1.0, 2.5, "2", None])
def test_invalid_retention_values_are_refused(db, bad):
    message = f"retention must be an integer >= 1, got {bad!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        check_retention(bad)
    with pytest.raises(ValueError, match="retention must be an integer >= 1"):
        make(db, [], retention=bad)
    with SQLiteStore(db) as store, pytest.raises(ValueError, match="retention must be"):
        PrunePolicy(store, NS, bad)


def test_valid_retention_values_and_the_name_in_the_message():
    assert check_retention(1) == 1 and check_retention(7) == 7
    with pytest.raises(ValueError, match=r"^keep must be an integer >= 1, got 0$"):
        check_retention(0, "keep")


def test_merge_max_keeps_the_highest_sequence():
    into = {"a": 3, "b": 1}
    assert merge_max(into, {"a": 2, "b": "4", "c": 0}) is into
    assert into == {"a": 3, "b": 4, "c": 0}


def test_allow_reexecution_lowers_the_boundary_to_the_restored_checkpoint(db, caplog):
    calls: list[Any] = []
    h = KeyedFunctionHarness(make(db, calls))
    h.process_element(0, key="k")
    old = h.snapshot()
    h.notify_complete(old.checkpoint_id)
    for run in (1, 2):
        h.process_element(run, key="k")
        h.notify_complete(h.snapshot().checkpoint_id)
    assert boundary(db) == 3
    with caplog.at_level(logging.WARNING, logger="flink_agents_ext.pruning"):
        h2 = h.restore(old, make(db, calls, allow_reexecution=True))
    assert "pruned up to checkpoint 3" in caplog.text
    assert "Continuing: re-execution is allowed." in caplog.text
    assert boundary(db) == old.checkpoint_id
    assert h2.process_element(1, key="k") == [1] and calls == [0, 1, 2, 1], "run 1 re-ran"
    # The boundary now says the truth: the same old checkpoint restores without the option.
    h.restore(old, make(db, calls))


# -- exploration -----------------------------------------------------------------------------
KEYS = ("a", "b")
RETENTIONS = st.integers(min_value=1, max_value=3)


class PruningMachine(RuleBasedStateMachine):
    """Runs, snapshots, completions (in order, repeated, late, skipping) and aborts against
    a model: every checkpoint of the retention window keeps what its restore replays, and
    checkpoints without new runs eventually prune everything."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="fae-pruning-")
        self.db = str(Path(self.dir) / "a.db")
        self.calls: list[Any] = []
        self.retention = 0
        self.h: KeyedFunctionHarness | None = None
        self.next_seq = dict.fromkeys(KEYS, 0)
        self.covered: dict[int, dict[str, int]] = {}  # checkpoint -> last seq per key
        self.pending: list[int] = []
        self.completed: list[int] = []  # the policy's window, oldest first

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    @precondition(lambda self: self.h is None)
    @rule(retention=RETENTIONS)
    def start(self, retention: int) -> None:
        self.retention = retention
        self.h = KeyedFunctionHarness(make(self.db, self.calls, retention=retention))

    @precondition(lambda self: self.h is not None)
    @rule(key=st.sampled_from(KEYS))
    def run(self, key: str) -> None:
        assert self.h is not None
        seq = self.next_seq[key]
        assert self.h.process_element(seq, key=key) == [seq]
        self.next_seq[key] = seq + 1

    @precondition(lambda self: self.h is not None)
    @rule()
    def snapshot(self) -> None:
        assert self.h is not None
        cid = self.h.snapshot().checkpoint_id
        self.covered[cid] = {k: n - 1 for k, n in self.next_seq.items()}
        self.pending.append(cid)

    @precondition(lambda self: self.h is not None and self.covered)
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        assert self.h is not None
        cid = data.draw(st.sampled_from(sorted(self.covered)))
        self.h.notify_complete(cid)
        self.pending = [p for p in self.pending if p > cid]
        if not self.completed or cid > self.completed[-1]:
            self.completed = ([*self.completed, cid])[-self.retention:]

    @precondition(lambda self: self.h is not None and self.pending)
    @rule(data=st.data())
    def abort(self, data: st.DataObject) -> None:
        assert self.h is not None
        cid = data.draw(st.sampled_from(self.pending))
        self.h.notify_abort(cid)
        self.pending.remove(cid)
        del self.covered[cid]

    @invariant()
    def window_keeps_what_its_restores_replay(self) -> None:
        if self.h is None:
            return
        with SQLiteStore(self.db) as store:
            for cid in self.completed:
                for key in KEYS:
                    for seq in range(self.covered[cid][key] + 1, self.next_seq[key]):
                        assert store.get_run(NS, encode_key(key), seq), (
                            f"run {seq} of {key} gone, but checkpoint {cid} of the window "
                            f"{self.completed} replays it")
            found = store.get_prune_boundary(NS)
            if self.completed and found is not None:
                assert found <= self.completed[0]

    def settle(self) -> None:
        """Checkpoints without new runs: after ``retention`` of them nothing is kept."""
        assert self.h is not None
        for _ in range(self.retention):
            self.snapshot()
            self.h.notify_complete(self.pending[-1])
            self.completed = ([*self.completed, self.pending[-1]])[-self.retention:]
            self.pending.clear()
        with SQLiteStore(self.db) as store:
            assert store.size(NS) == 0, "checkpoints covering every run left records"

    @precondition(lambda self: self.h is not None)
    @rule()
    def settle_now(self) -> None:
        self.settle()


# Under mutation testing (make mutate) a failure needs no minimal example: no shrinking.
PruningMachine.TestCase.settings = settings(
    max_examples=20, stateful_step_count=15, derandomize=True, deadline=None,
    suppress_health_check=[HealthCheck.too_slow], database=None,
    phases=[Phase.generate] if os.environ.get("MUTANT_UNDER_TEST") else list(Phase))
test_pruning_model = PruningMachine.TestCase
