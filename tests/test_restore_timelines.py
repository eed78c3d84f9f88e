"""Restore timelines (issue 10), driven by the harness on a real SQLite store: a fresh start
on a used namespace, a restore from an older retained checkpoint, the prune boundary of an
earlier job, a replay handed a different input, and a run that outlives ``close_timeout_s``.

Each of these failed on the code before lineages reached the store."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from flink_agents_ext.actions import INPUT, ActionContext, Agent, DurableAgentFunction
from flink_agents_ext.actions.runner import ActionFailed
from flink_agents_ext.store import SQLiteStore
from flink_agents_ext.testing import KeyedFunctionHarness

NS = "timelines"


class Calls:
    """Counts the real executions of a durable call, by argument."""

    def __init__(self) -> None:
        self.made: list[str] = []
        self.lock = threading.Lock()

    def classify(self, text: str) -> str:
        with self.lock:
            self.made.append(text)
        return f"label({text})"

    def twice(self) -> list[str]:
        return sorted({t for t in self.made if self.made.count(t) > 1})


def agent(calls: Calls) -> Agent:
    a = Agent("timelines")

    @a.action(on=INPUT)
    def classify(event: dict, ctx: ActionContext) -> None:
        label = ctx.durable_execute(calls.classify, event["text"])
        if event.get("crash"):
            raise RuntimeError("the task dies after the call was journaled")
        ctx.emit({"id": event["id"], "label": label})

    return a


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "actions.db")


def fn(db: str, calls: Calls, commit: str = "each", **options: Any) -> DurableAgentFunction:
    return DurableAgentFunction(agent(calls), {"backend": "sqlite", "path": db,
                                               "commit": commit}, NS, **options)


def feed(h: KeyedFunctionHarness, value: dict, key: Any) -> list[Any]:
    """Process ``value`` and, in concurrent mode, wait until its run was applied."""
    out = h.process_element(value, key=key)
    return out + h.run_until_idle()


def item(n: int, text: str = "") -> dict:
    return {"id": n, "text": text or f"text {n}"}


def test_fresh_start_on_a_used_namespace_never_replays_the_earlier_jobs_records(db):
    calls = Calls()
    a = KeyedFunctionHarness(fn(db, calls), job_id="job-a")
    a.process_element(item(1, "from job a"), key="k")
    a.close()  # stopped before a checkpoint completed: its records remain
    b = KeyedFunctionHarness(fn(db, calls), job_id="job-b")  # a plain `flink run` again
    out = b.process_element(item(2, "from job b"), key="k")
    assert out == [{"id": 2, "label": "label(from job b)"}], "job a's result was replayed"
    assert calls.made == ["from job a", "from job b"]
    assert b.function.stats()["actions_replayed"] == 0


@pytest.mark.parametrize("commit", ["each", "group"])
@pytest.mark.parametrize("max_in_flight", [0, 2])
def test_restore_from_an_older_retained_checkpoint_runs_no_call_twice(db, commit,
                                                                      max_in_flight):
    calls = Calls()
    options = {"retention": 2, "commit": commit, "max_in_flight": max_in_flight}
    a = KeyedFunctionHarness(fn(db, calls, **options), job_id="job-a")
    feed(a, item(0), "k")
    s1 = a.snapshot()
    a.notify_complete(s1.checkpoint_id)
    for n in (1, 2, 3):
        feed(a, item(n), "k")
    s2 = a.snapshot()
    a.notify_complete(s2.checkpoint_id)  # the abandoned branch marks k up to run 3
    a.close()
    # `flink run -s <checkpoint 1>`: a new job; its checkpoint ids repeat 2, 3...
    b = a.restore(s1, fn(db, calls, **options), job_id="job-b")
    outputs = []
    for n in (1, 2, 3):
        outputs += feed(b, item(n), "k")
        snap = b.snapshot()
        b.notify_complete(snap.checkpoint_id)
    assert calls.twice() == [], "a recorded durable call ran again"
    assert outputs == [{"id": n, "label": f"label(text {n})"} for n in (1, 2, 3)]
    # The marks the restored checkpoint covered still prune: nothing leaks.
    for _ in range(2):
        b.notify_complete(b.snapshot().checkpoint_id)
    with SQLiteStore(db) as store:
        assert store.size(NS) == 0


def test_a_fresh_job_is_not_refused_by_the_prune_boundary_of_an_earlier_job(db):
    calls = Calls()
    a = KeyedFunctionHarness(fn(db, calls), job_id="job-a")
    for n in range(3):
        a.process_element(item(n), key="k")
        a.notify_complete(a.snapshot().checkpoint_id)  # prunes everything, boundary 3
    a.close()
    b = KeyedFunctionHarness(fn(db, calls), job_id="job-b")
    b.process_element(item(10), key="k")
    s1 = b.snapshot()
    b.notify_complete(s1.checkpoint_id)
    b.process_element(item(11), key="k")
    b.close()
    b2 = b.restore(s1, fn(db, calls))  # job b fails over to its own checkpoint 1
    assert b2.process_element(item(11), key="k") == [{"id": 11, "label": "label(text 11)"}]
    assert calls.twice() == []


def test_a_replay_handed_a_different_input_runs_it_instead_of_replaying(db):
    calls = Calls()
    a = KeyedFunctionHarness(fn(db, calls))
    s0 = a.snapshot()
    a.process_element(item(1, "first input"), key="k")
    a.close()
    # After the failover the source delivers another record first (not replayable).
    b = a.restore(s0, fn(db, calls))
    out = b.process_element(item(2, "another input"), key="k")
    assert out == [{"id": 2, "label": "label(another input)"}]
    assert calls.made == ["first input", "another input"]
    assert b.function.stats()["input_mismatches"] == 1
    b.snapshot()  # publishes the counters
    assert b.metric("input_mismatches") == 1
    # Its records replaced the old ones: a second failover replays the new input.
    b.close()
    c = b.restore(s0, fn(db, calls))
    assert c.process_element(item(2, "another input"), key="k") == out
    assert calls.made == ["first input", "another input"]


def test_a_journal_of_another_input_is_not_replayed(db):
    """The earlier attempt died inside the action, after its durable call: only the journal
    (and the action's started record) is there; another input with the same call argument
    must not be handed that journal's result."""
    calls = Calls()
    a = KeyedFunctionHarness(fn(db, calls, on_action_error="fail"))
    s0 = a.snapshot()
    with pytest.raises(ActionFailed, match="dies after the call"):
        a.process_element({"id": 1, "text": "same text", "crash": True}, key="k")
    a.close()
    b = a.restore(s0, fn(db, calls))
    out = b.process_element(item(2, "same text"), key="k")
    assert out == [{"id": 2, "label": "label(same text)"}]
    assert calls.made == ["same text", "same text"], "the new input's call must run"
    assert b.function.stats()["input_mismatches"] == 1
    # The journal of the same input is replayed (the started record matches).
    c = KeyedFunctionHarness(fn(db, calls, on_action_error="fail"), job_id="job-c")
    s1 = c.snapshot()
    with pytest.raises(ActionFailed, match="dies after the call"):
        c.process_element({"id": 3, "text": "third", "crash": True}, key="k")
    c.close()
    d = c.restore(s1, fn(db, calls, on_action_error="fail"))
    with pytest.raises(ActionFailed, match="dies after the call"):
        d.process_element({"id": 3, "text": "third", "crash": True}, key="k")
    assert calls.made.count("third") == 1, "the journaled call was replayed"


def test_a_lower_retention_after_a_resume_still_prunes_the_earlier_marks(db):
    calls = Calls()
    a = KeyedFunctionHarness(fn(db, calls, retention=3), job_id="job-a")
    for n in range(3):
        a.process_element(item(n), key=f"k{n}")
        savepoint = a.snapshot()
        a.notify_complete(savepoint.checkpoint_id)  # marks wait: retention 3
    a.close()
    b = a.restore(savepoint, fn(db, calls, retention=1), job_id="job-b")
    with SQLiteStore(db) as store:
        assert store.size(NS) == 0, "the marks of retention 3 leaked"
    b.process_element(item(3), key="k0")
    b.notify_complete(b.snapshot().checkpoint_id)
    with SQLiteStore(db) as store:
        assert store.size(NS) == 0
