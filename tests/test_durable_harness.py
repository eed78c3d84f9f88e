"""Durable actions and checkpoint-safe pruning, driven by the pure-Python harness on a real
SQLite store (the scenarios of the Java runtime's tests, and its weaknesses)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from flink_agents_ext.actions import INPUT, ActionContext, Agent, DurableAgentFunction
from flink_agents_ext.keys import encode_key
from flink_agents_ext.pruning import RestoreBoundaryError
from flink_agents_ext.store import SQLiteStore
from flink_agents_ext.testing import KeyedFunctionHarness

NS = "test-job"


class SideEffects:
    """Counts real executions of side-effecting calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def charge(self, order: str, amount: int) -> str:
        self.calls.append(("charge", order))
        return f"receipt-{order}-{amount}"

    def classify(self, text: str) -> str:
        self.calls.append(("classify", text))
        return "urgent" if "!" in text else "normal"


def make_agent(fx: SideEffects, fail_on: str | None = None) -> Agent:
    agent = Agent("shop")

    @agent.action(on=INPUT)
    def triage(event: dict, ctx: ActionContext) -> None:
        label = ctx.durable_execute(fx.classify, event["text"])
        ctx.memory["seen"] = ctx.memory.get("seen", 0) + 1
        ctx.send("classified", {"order": event["order"], "label": label})

    @agent.action(on="classified")
    def pay(event: dict, ctx: ActionContext) -> None:
        if fail_on and event["order"] == fail_on:
            raise RuntimeError(f"payment service down for {fail_on}")
        receipt = ctx.durable_execute(fx.charge, event["order"], 10)
        ctx.emit({"order": event["order"], "label": event["label"], "receipt": receipt,
                  "seen": ctx.memory["seen"]})

    return agent


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "actions.db")


@pytest.fixture
def fx() -> SideEffects:
    return SideEffects()


def function(db: str, fx: SideEffects, **options: Any) -> DurableAgentFunction:
    fail_on = options.pop("fail_on", None)
    return DurableAgentFunction(make_agent(fx, fail_on), {"backend": "sqlite", "path": db},
                                NS, **options)


def order(n: int, text: str = "hello") -> dict:
    return {"order": f"o{n}", "text": f"{text} {n}"}


def seqs_in_store(db: str, key: Any) -> list[int]:
    with SQLiteStore(db) as store:
        enc = encode_key(key)
        return sorted({r.id.seq for s in range(50) for r in store.get_run(NS, enc, s)})


def test_nothing_pruned_before_completion_then_exactly_the_completed_sequence(db, fx):
    h = KeyedFunctionHarness(function(db, fx))
    h.process_element(order(0), key="alice")
    assert seqs_in_store(db, "alice") == [0]
    snap = h.snapshot()
    assert seqs_in_store(db, "alice") == [0], "a snapshot alone must not prune"
    h.process_element(order(1), key="alice")  # after the barrier: not covered
    h.notify_complete(snap.checkpoint_id)
    assert seqs_in_store(db, "alice") == [1]
    assert h.metric("records_pruned") == 4  # 2 actions + 2 durable calls of run 0


def test_run_started_but_not_completed_is_never_pruned(db, fx):
    # on_action_error="fail": run 1 dies mid-way after its first durable call.
    h = KeyedFunctionHarness(function(db, fx, on_action_error="fail", fail_on="o1"))
    h.process_element(order(0), key="k")
    with pytest.raises(Exception, match="payment service down"):
        h.process_element(order(1), key="k")
    # Run 1 failed the task: it is not counted as completed (inline, the last completed
    # sequence is next_seq - 1).
    assert h.state("fae-next-seq", "k") == 1
    snap = h.snapshot()
    h.notify_complete(snap.checkpoint_id)
    with SQLiteStore(db) as store:
        assert store.get_run(NS, encode_key("k"), 0) == []
        assert [r.id.action for r in store.get_run(NS, encode_key("k"), 1)] == ["triage"]


def test_several_keys_done_then_checkpoint_leaves_store_empty(db, fx):
    h = KeyedFunctionHarness(function(db, fx))
    for i, key in enumerate(["a", "b", "c", "a"]):
        h.process_element(order(i), key=key)
    snap = h.snapshot()
    h.notify_complete(snap.checkpoint_id)
    with SQLiteStore(db) as store:
        assert store.size(NS) == 0
    assert h.metric("store_records") == 0


def test_levels_are_counters_moved_to_the_current_value(db, fx):
    """store_records / runs_in_flight are counters, never Python gauges (Flink would call a
    gauge from its metrics thread: in thread mode a TaskManager died of it)."""
    h = KeyedFunctionHarness(function(db, fx))
    assert not [name for name, m in h.metrics.registry.items() if callable(m)]
    for i, key in enumerate(["a", "b", "c"]):
        h.process_element(order(i), key=key)
    snap = h.snapshot()  # publishes
    with SQLiteStore(db) as store:
        assert h.metric("store_records") == store.size(NS) > 0
    assert h.metric("runs_in_flight") == 0
    h.notify_complete(snap.checkpoint_id)  # prunes, publishes: the counter goes down
    assert h.metric("store_records") == 0


def test_restore_earlier_snapshot_and_replay_runs_no_durable_call_again(db, fx):
    h = KeyedFunctionHarness(function(db, fx))
    h.process_element(order(0), key="alice")
    snap = h.snapshot()
    h.notify_complete(snap.checkpoint_id)
    out = h.process_element(order(1, "refund!"), key="alice")
    calls_before = list(fx.calls)
    # Failover: a fresh instance restored from the earlier checkpoint, same store; Flink
    # replays the input that came after the checkpoint.
    h2 = h.restore(snap, function(db, fx))
    replayed = h2.process_element(order(1, "refund!"), key="alice")
    assert replayed == out
    assert fx.calls == calls_before, "a recorded durable call ran again"
    assert h2.function.stats()["actions_replayed"] == 2
    assert h2.function.stats()["durable_calls_replayed"] == 0  # whole actions were replayed
    assert h2.state("fae-memory", "alice") == h.state("fae-memory", "alice")


def test_replay_in_fresh_instance_with_same_store_runs_no_completed_action(db, fx):
    h = KeyedFunctionHarness(function(db, fx))
    outs = [h.process_element(order(i), key=f"k{i % 2}") for i in range(4)]
    calls = len(fx.calls)
    h2 = KeyedFunctionHarness(function(db, fx))  # fresh state: sequences start at 0 again
    again = [h2.process_element(order(i), key=f"k{i % 2}") for i in range(4)]
    assert again == outs
    assert len(fx.calls) == calls
    assert h2.function.stats()["actions_run"] == 0 and h2.function.stats()["actions_replayed"] == 8


def test_crash_between_calls_replays_journal_then_runs_the_rest(db, fx):
    h = KeyedFunctionHarness(function(db, fx, on_action_error="fail", fail_on="o0"))
    snap = h.snapshot()
    with pytest.raises(Exception, match="payment service down"):
        h.process_element(order(0), key="k")
    assert fx.calls == [("classify", "hello 0")]
    # The fault is gone after the restart.
    h2 = h.restore(snap, function(db, fx))
    out = h2.process_element(order(0), key="k")
    assert fx.calls == [("classify", "hello 0"), ("charge", "o0")]
    assert out[0]["receipt"] == "receipt-o0-10"
    assert h2.function.stats()["actions_replayed"] == 1  # triage completed before the crash


def test_abort_releases_without_pruning_and_interleaving(db, fx):
    h = KeyedFunctionHarness(function(db, fx))
    h.process_element(order(0), key="k")
    s1 = h.snapshot()
    h.notify_abort(s1.checkpoint_id)
    assert seqs_in_store(db, "k") == [0]
    h.process_element(order(1), key="k")
    s2 = h.snapshot()
    h.process_element(order(2), key="k")
    s3 = h.snapshot()
    h.notify_complete(s2.checkpoint_id)
    assert seqs_in_store(db, "k") == [2]
    h.notify_abort(s3.checkpoint_id)
    assert seqs_in_store(db, "k") == [2], "an aborted checkpoint prunes nothing"
    s4 = h.snapshot()  # carries the aborted snapshot's marks
    h.notify_complete(s4.checkpoint_id)
    assert seqs_in_store(db, "k") == []


def test_aborted_snapshot_marks_are_carried_over(db, fx):
    h = KeyedFunctionHarness(function(db, fx))
    h.process_element(order(0), key="k")
    s1 = h.snapshot()
    h.notify_abort(s1.checkpoint_id)
    s2 = h.snapshot()  # "k" did not change since s1, but s1 was aborted
    h.notify_complete(s2.checkpoint_id)
    assert seqs_in_store(db, "k") == []


def test_skipped_notification_is_subsumed_by_a_later_one(db, fx):
    h = KeyedFunctionHarness(function(db, fx))
    h.process_element(order(0), key="a")
    h.snapshot()  # 1: its notification never comes
    h.process_element(order(1), key="b")
    s2 = h.snapshot()
    h.notify_complete(s2.checkpoint_id)
    assert seqs_in_store(db, "a") == [] and seqs_in_store(db, "b") == []


def test_key_types_do_not_collide(db, fx):
    h = KeyedFunctionHarness(function(db, fx))
    outs = {}
    for key in [1, "1", (1,), 1.0, True, b"1"]:
        outs[repr(key)] = h.process_element(order(len(outs)), key=key)
    assert len(fx.calls) == 12, "each key type ran its own actions"
    assert len({encode_key(k) for k in [1, "1", (1,), 1.0, True, b"1"]}) == 6


def test_restore_older_than_prune_boundary_fails_clearly(db, fx):
    h = KeyedFunctionHarness(function(db, fx))
    h.process_element(order(0), key="k")
    old = h.snapshot()
    h.notify_complete(old.checkpoint_id)
    h.process_element(order(1), key="k")
    newer = h.snapshot()
    h.notify_complete(newer.checkpoint_id)  # prunes run 1: boundary = checkpoint 2
    with pytest.raises(RestoreBoundaryError, match="pruned up to checkpoint 2"):
        h.restore(old, function(db, fx))
    # Opting into re-execution: the restore proceeds and run 1 executes again.
    h2 = h.restore(old, function(db, fx, allow_reexecution=True))
    calls = len(fx.calls)
    h2.process_element(order(1), key="k")
    assert len(fx.calls) == calls + 2
    # The newest checkpoint restores fine.
    h.restore(newer, function(db, fx))


def test_retention_two_keeps_the_previous_checkpoint_restorable(db, fx):
    h = KeyedFunctionHarness(function(db, fx, retention=2))
    h.process_element(order(0), key="k")
    s1 = h.snapshot()
    h.notify_complete(s1.checkpoint_id)
    assert seqs_in_store(db, "k") == [0], "retention 2: checkpoint 1 prunes nothing yet"
    h.process_element(order(1), key="k")
    s2 = h.snapshot()
    h.notify_complete(s2.checkpoint_id)
    assert seqs_in_store(db, "k") == [1], "now what only checkpoint 1 needed is gone"
    calls = len(fx.calls)
    h2 = h.restore(s1, function(db, fx, retention=2))  # still restorable
    h2.process_element(order(1), key="k")
    assert len(fx.calls) == calls


def test_restore_prunes_the_unconfirmed_payloads_of_the_restored_checkpoint(db, fx):
    h = KeyedFunctionHarness(function(db, fx))
    h.process_element(order(0), key="k")
    snap = h.snapshot()  # the notification is lost in the failover
    assert seqs_in_store(db, "k") == [0]
    h.restore(snap, function(db, fx))
    assert seqs_in_store(db, "k") == []


def test_recorded_exception_is_reraised_with_type_and_message(db, fx):
    agent = Agent("errors")
    attempts: list[int] = []
    crash = {"once": True}

    def flaky(n: int) -> int:
        attempts.append(n)
        raise KeyError(f"no such order {n}")

    @agent.action(on=INPUT)
    def act(event: int, ctx: ActionContext) -> None:
        try:
            ctx.durable_execute(flaky, event)
        except KeyError as exc:
            ctx.emit(f"caught {type(exc).__name__}: {exc.args[0]}")
        if crash.pop("once", False):
            raise RuntimeError("the task dies before the action is recorded")

    def make() -> DurableAgentFunction:
        return DurableAgentFunction(agent, {"backend": "sqlite", "path": db}, NS,
                                    on_action_error="fail")

    with pytest.raises(Exception, match="task dies"):
        KeyedFunctionHarness(make()).process_element(7, key="k")
    h2 = KeyedFunctionHarness(make())
    assert h2.process_element(7, key="k") == ["caught KeyError: no such order 7"]
    assert attempts == [7], "the recorded exception was re-raised, the call not re-run"
    assert h2.function.stats()["durable_calls_replayed"] == 1


def test_nondeterministic_call_cuts_the_journal_and_runs(db, fx):
    agent = Agent("nd")
    version = {"v": 1}
    ran: list[str] = []

    def step(name: str) -> str:
        ran.append(name)
        return name.upper()

    @agent.action(on=INPUT)
    def act(event: Any, ctx: ActionContext) -> None:
        ctx.durable_execute(step, "first")
        ctx.durable_execute(step, "second" if version["v"] == 1 else "changed")
        raise RuntimeError("crash before the action completes")

    make: Callable[[], DurableAgentFunction] = lambda: DurableAgentFunction(  # noqa: E731
        agent, {"backend": "sqlite", "path": db}, NS, on_action_error="fail")
    with pytest.raises(Exception, match="crash"):
        KeyedFunctionHarness(make()).process_element("x", key="k")
    version["v"] = 2
    with pytest.raises(Exception, match="crash"):
        KeyedFunctionHarness(make()).process_element("x", key="k")
    assert ran == ["first", "second", "changed"]


def test_reconcilable_pending_call_runs_the_reconciler(db, fx):
    agent = Agent("pay")
    charged: list[str] = []
    looked_up: list[str] = []

    def charge(order_id: str) -> str:
        charged.append(order_id)
        raise SystemExit("the task dies after the charge, before its record")

    def lookup(order_id: str) -> str:
        looked_up.append(order_id)
        return f"receipt-{order_id}"

    @agent.action(on=INPUT)
    def act(event: str, ctx: ActionContext) -> None:
        ctx.emit(ctx.durable_execute_reconcilable(charge, lookup, event))

    def make() -> DurableAgentFunction:
        return DurableAgentFunction(agent, {"backend": "sqlite", "path": db}, NS)

    with pytest.raises(SystemExit):
        KeyedFunctionHarness(make()).process_element("o1", key="k")
    out = KeyedFunctionHarness(make()).process_element("o1", key="k")
    assert out == ["receipt-o1"]
    assert charged == ["o1"] and looked_up == ["o1"]


def test_unserialisable_result_and_bad_key_go_to_dead_letters(db, fx):
    agent = Agent("bad")

    @agent.action(on=INPUT)
    def act(event: Any, ctx: ActionContext) -> None:
        ctx.emit(object())

    h = KeyedFunctionHarness(DurableAgentFunction(agent, {"backend": "sqlite", "path": db}, NS))
    assert h.process_element("x", key="k") == []
    assert h.process_element("y", key=object()) == []
    letters = [json.loads(x) for x in h.side_outputs["flink-agents-ext-dead-letters"]]
    assert [d["input"] for d in letters] == ["x", "y"]
    assert "cannot record" in letters[0]["reason"] and letters[0]["action"] == "act"
    assert "key cannot be encoded" in letters[1]["reason"]
    assert h.state("fae-next-seq", "k") == 1, "the key moves on"
    assert h.metric("dead_letters") == 2


def test_memory_updates_are_reapplied_on_replay(db, fx):
    h = KeyedFunctionHarness(function(db, fx))
    outs = [h.process_element(order(i), key="m") for i in range(3)]
    assert [o[0]["seen"] for o in outs] == [1, 2, 3]
    h2 = KeyedFunctionHarness(function(db, fx))
    again = [h2.process_element(order(i), key="m") for i in range(3)]
    assert again == outs
    assert h2.state("fae-memory", "m") == h.state("fae-memory", "m")


def test_counters_reach_flink_metrics_at_a_snapshot(db, fx):
    h = KeyedFunctionHarness(function(db, fx))
    for i in range(3):
        h.process_element(order(i), key="k")
    stats = h.function.stats()
    assert stats["actions_run"] == 6 and stats["durable_calls_run"] == 6
    h.snapshot()  # publishes (otherwise at most every METRICS_INTERVAL_S)
    assert h.metric("actions_run") == 6
    assert h.metric("actions_replayed") == 0

