"""The lineage rules of :mod:`flink_agents_ext.lineage` and fencing, driven by the harness on
a real SQLite store: the refuse option, several subtasks of one fresh job, a savepoint
resumed twice (one after the other, and at once), a restore of an abandoned branch or of a
lineage whose namespace was taken over, and a run that outlives ``close_timeout_s``."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from flink_agents_ext.actions import INPUT, ActionContext, Agent, DurableAgentFunction
from flink_agents_ext.keys import encode_key
from flink_agents_ext.lineage import ForeignLineageError, LineageError
from flink_agents_ext.pruning import RestoreBoundaryError
from flink_agents_ext.store import SQLiteStore
from flink_agents_ext.testing import KeyedFunctionHarness
from tests.test_restore_timelines import NS, Calls, agent, item


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "actions.db")


def fn(db: str, calls: Calls, **options: Any) -> DurableAgentFunction:
    return DurableAgentFunction(agent(calls), {"backend": "sqlite", "path": db}, NS, **options)


def recorded(db: str) -> set[tuple[str, int]]:
    with SQLiteStore(db) as store:
        return store.recorded_runs(NS)


def test_refuse_names_the_namespace_and_what_to_do(db):
    calls = Calls()
    a = KeyedFunctionHarness(fn(db, calls), job_id="job-a")
    a.process_element(item(1), key="k")
    a.close()
    with pytest.raises(ForeignLineageError, match=f"namespace '{NS}' holds 2 action records "
                       "of lineage 'job-a'.*flink run -s.*on_foreign_lineage='reclaim'"):
        KeyedFunctionHarness(fn(db, calls, on_foreign_lineage="refuse"), job_id="job-b")
    assert len(recorded(db)) == 1, "a refused start removes nothing"
    with pytest.raises(ValueError, match="on_foreign_lineage"):
        fn(db, calls, on_foreign_lineage="ignore")


def test_refuse_accepts_a_namespace_whose_records_were_all_pruned(db):
    calls = Calls()
    a = KeyedFunctionHarness(fn(db, calls), job_id="job-a")
    a.process_element(item(1), key="k")
    a.notify_complete(a.snapshot().checkpoint_id)  # 0 records, a boundary remains
    a.close()
    b = KeyedFunctionHarness(fn(db, calls, on_foreign_lineage="refuse"), job_id="job-b")
    s1 = b.snapshot()
    b.notify_complete(s1.checkpoint_id)
    b.restore(s1, fn(db, calls, on_foreign_lineage="refuse"))  # no boundary of job a


def test_subtasks_of_a_fresh_job_remove_the_earlier_lineage_once(db, caplog):
    calls = Calls()
    for key in ("a1", "a2", "a3"):
        KeyedFunctionHarness(fn(db, calls), job_id="job-a").process_element(item(0), key=key)
    caplog.set_level("WARNING", logger="flink_agents_ext.lineage")
    first = KeyedFunctionHarness(fn(db, calls), job_id="job-b")  # subtask 0 of job b
    first.process_element(item(1), key="b1")
    second = KeyedFunctionHarness(fn(db, calls), job_id="job-b")  # subtask 1 opens later
    second.process_element(item(2), key="b2")
    assert (first.function.lineage.removed_records,
            second.function.lineage.removed_records) == (6, 0)
    assert recorded(db) == {(encode_key("b1"), 0), (encode_key("b2"), 0)}
    assert [r.getMessage() for r in caplog.records if "removed 6" in r.getMessage()]


def test_a_savepoint_resumed_twice_one_after_the_other(db):
    calls = Calls()
    a = KeyedFunctionHarness(fn(db, calls), job_id="job-a")
    a.process_element(item(0), key="k")
    savepoint = a.snapshot()
    a.notify_complete(savepoint.checkpoint_id)
    a.close()
    b = a.restore(savepoint, fn(db, calls), job_id="job-b")
    assert b.process_element(item(1), key="k") == [{"id": 1, "label": "label(text 1)"}]
    b.close()  # cancelled before its first checkpoint completed
    c = a.restore(savepoint, fn(db, calls), job_id="job-c")  # the same savepoint again
    assert c.process_element(item(1), key="k") == [{"id": 1, "label": "label(text 1)"}]
    assert calls.twice() == [], "job b's record of run 1 was replayed"


def test_two_jobs_of_one_lineage_at_once_fail_the_earlier_before_it_prunes(db):
    calls = Calls()
    a = KeyedFunctionHarness(fn(db, calls), job_id="job-a")
    savepoint = a.snapshot()
    a.notify_complete(savepoint.checkpoint_id)
    a.close()
    b = a.restore(savepoint, fn(db, calls), job_id="job-b")
    b.process_element(item(1), key="k")
    b_snap = b.snapshot()
    c = a.restore(savepoint, fn(db, calls), job_id="job-c")  # b still runs
    c.process_element(item(1), key="k")
    with pytest.raises(LineageError, match=r"job job-b .* is no longer the head.*job job-c"):
        b.notify_complete(b_snap.checkpoint_id)
    assert len(recorded(db)) == 1, "job b pruned nothing"
    with pytest.raises(LineageError, match="not on the lineage's current branch"):
        b.restore(b_snap, fn(db, calls))  # b's failover is refused too
    c.notify_complete(c.snapshot().checkpoint_id)
    assert recorded(db) == set()


def test_restoring_an_abandoned_branch_is_refused_unless_reexecution_is_allowed(db):
    calls = Calls()
    a = KeyedFunctionHarness(fn(db, calls, retention=3), job_id="job-a")
    s1 = a.snapshot()
    a.notify_complete(s1.checkpoint_id)
    a.process_element(item(1), key="k")
    s2 = a.snapshot()
    a.notify_complete(s2.checkpoint_id)
    a.close()
    b = a.restore(s1, fn(db, calls, retention=3), job_id="job-b")  # abandons a's s2
    b.process_element(item(1), key="k")
    b.close()
    with pytest.raises(LineageError, match="checkpoint 2 of job job-a: that checkpoint is "
                                           "not on the lineage's current branch"):
        a.restore(s2, fn(db, calls, retention=3), job_id="job-c")
    c = a.restore(s2, fn(db, calls, retention=3, allow_reexecution=True), job_id="job-c")
    assert c.process_element(item(2), key="k") == [{"id": 2, "label": "label(text 2)"}]


def test_restoring_a_lineage_whose_namespace_was_taken_over_is_refused(db):
    calls = Calls()
    a = KeyedFunctionHarness(fn(db, calls), job_id="job-a")
    snap = a.snapshot()
    a.process_element(item(1), key="k")
    a.close()
    KeyedFunctionHarness(fn(db, calls), job_id="job-b").close()  # a fresh start took it
    with pytest.raises(LineageError, match="now belongs to lineage 'job-b'"):
        a.restore(snap, fn(db, calls), job_id="job-c")


class _SharedStore(SQLiteStore):
    """One store object for every function instance of the process (a factory that caches
    it): closing a function does not close it."""

    def close(self) -> None:
        pass

    def really_close(self) -> None:
        super().close()


def slow_agent(calls: Calls, gate: threading.Event, done: threading.Event) -> Agent:
    """The first call (of all attempts) blocks until ``gate``; ``done`` is set when an
    action ends (returned or raised)."""
    a = Agent("slow")

    def call(text: str) -> str:
        calls.classify(text)
        n = len(calls.made)
        if n == 1:
            gate.wait(10)  # the first attempt's call outlives close_timeout_s
        return f"call-{n}"

    @a.action(on=INPUT)
    def act(event: dict, ctx: ActionContext) -> None:
        try:
            ctx.emit(ctx.durable_execute(call, event["text"]))
        finally:
            done.set()

    return a


def test_a_run_that_outlives_close_timeout_cannot_write_the_new_attempts_records(db):
    calls, gate, done = Calls(), threading.Event(), threading.Event()
    shared = _SharedStore(db)
    try:
        def make() -> DurableAgentFunction:
            return DurableAgentFunction(slow_agent(calls, gate, done), lambda: shared, NS,
                                        max_in_flight=1, poll_interval_ms=1,
                                        close_timeout_s=0.2)

        h1 = KeyedFunctionHarness(make())
        s0 = h1.snapshot()
        h1.process_element(item(1), key="k")  # blocks in its durable call
        started = time.monotonic()
        h1.close()  # the failover closes the attempt: waits 0.2 s, then fences it
        assert time.monotonic() - started < 5
        done.clear()
        h2 = h1.restore(s0, make())
        assert h2.process_element(item(1), key="k") + h2.run_until_idle() == ["call-2"]
        gate.set()  # the old attempt's call returns now and tries to record "call-1"
        assert done.wait(10)
        time.sleep(0.1)
        h2.close()
        h3 = h1.restore(s0, make())
        assert h3.process_element(item(1), key="k") + h3.run_until_idle() == ["call-2"], \
            "the fenced attempt's result replaced the new attempt's record"
        assert len(calls.made) == 2
        h3.close()
    finally:
        gate.set()
        shared.really_close()


def test_a_refused_restore_leaves_the_lineage_as_it_was(db):
    """Model counterexample C4: the boundary refusal came after the lineage was changed."""
    calls = Calls()
    a = KeyedFunctionHarness(fn(db, calls), job_id="job-a")
    s1 = a.snapshot()
    a.notify_complete(s1.checkpoint_id)
    a.process_element(item(1), key="k")
    s2 = a.snapshot()  # stop with savepoint: prunes run 1, boundary 2
    a.notify_complete(s2.checkpoint_id)
    a.close()
    a.restore(s2, fn(db, calls), job_id="job-b").close()
    with pytest.raises(RestoreBoundaryError, match="pruned up to checkpoint 2"):
        a.restore(s1, fn(db, calls), job_id="job-c")
    d = a.restore(s2, fn(db, calls), job_id="job-d")  # the branch's savepoint still works
    assert d.process_element(item(2), key="k") == [{"id": 2, "label": "label(text 2)"}]


def test_taking_a_namespace_back_refuses_older_restores_afterwards(db):
    """Model counterexample C5: after an allow_reexecution take-back the boundary was gone,
    so an older restore without it replayed from records the fresh start had removed."""
    calls = Calls()
    a = KeyedFunctionHarness(fn(db, calls), job_id="job-a")
    s1 = a.snapshot()
    a.process_element(item(1), key="k")
    s2 = a.snapshot()
    a.close()
    KeyedFunctionHarness(fn(db, calls), job_id="job-f").close()  # removes job a's records
    a.restore(s2, fn(db, calls, allow_reexecution=True, retention=2), job_id="job-g").close()
    with pytest.raises(RestoreBoundaryError):
        a.restore(s1, fn(db, calls), job_id="job-h")
