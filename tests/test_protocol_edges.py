"""Edges of the run protocol that the mutation testing of the core showed unpinned (issue 16),
driven by the harness on a real SQLite store: the same action twice in one run, memory
deletions without a set, an ordinary exception in dead-letter mode, the run-level guards,
and values that JSON changes (tuples) being the same on the first run and on replay."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from flink_agents_ext.actions import (
    INPUT,
    ActionContext,
    ActionFailed,
    Agent,
    DurableAgentFunction,
    RetryableActionError,
    RunResult,
    execute_run,
)
from flink_agents_ext.actions.runner import _EMPTY_FORMS, _empty_forms, execute_run_async
from flink_agents_ext.keys import encode_key
from flink_agents_ext.serde import JsonSerializer, SerializationError
from flink_agents_ext.store import SQLiteStore
from flink_agents_ext.store.base import RecordId
from flink_agents_ext.testing import KeyedFunctionHarness

NS = "edges"
TAG = "flink-agents-ext-dead-letters"


def make(tmp_path: Path, agent: Agent, **options: Any) -> DurableAgentFunction:
    return DurableAgentFunction(agent, {"backend": "sqlite", "path": str(tmp_path / "a.db")},
                                NS, poll_interval_ms=2, **options)


def letters(h: KeyedFunctionHarness) -> list[dict]:
    return [json.loads(x) for x in h.side_outputs.get(TAG, [])]


def records(tmp_path: Path, key: Any, seq: int) -> list[tuple[str, int]]:
    """(action, occurrence) of the completed action records of run ``seq`` of ``key``."""
    with SQLiteStore(str(tmp_path / "a.db")) as store:
        return sorted((r.id.action, r.id.occurrence)
                      for r in store.get_run(NS, encode_key(key), seq) if r.completed)


def memory(h: KeyedFunctionHarness, key: Any) -> dict:
    raw = h.state("fae-memory", key)
    return json.loads(raw) if raw is not None else {}


# -- the same action twice in one run --------------------------------------------------------
def twice_agent(calls: list[str], crash: dict[str, bool]) -> Agent:
    """``step`` reacts to the input and to "again": two executions in one run, each with
    its own durable call and output; the second may crash (once) before it completes."""
    agent = Agent("twice")

    def look_up(what: str) -> str:
        calls.append(what)
        return f"looked up {what}"

    @agent.action(on=(INPUT, "again"))
    def step(event: dict, ctx: ActionContext) -> None:
        ctx.emit({"round": event["round"], "found": ctx.durable_execute(look_up,
                                                                        event["what"])})
        if event["round"] == 1:
            ctx.send("again", {"round": 2, "what": event["what"] + "-2"})
        elif crash.pop("second", False):
            raise SystemExit("the task dies in the second execution")

    return agent


def test_same_action_twice_in_a_run_is_recorded_and_replayed_per_occurrence(tmp_path):
    calls: list[str] = []
    h = KeyedFunctionHarness(make(tmp_path, twice_agent(calls, {})))
    out = h.process_element({"round": 1, "what": "x"}, key="k")
    assert out == [{"round": 1, "found": "looked up x"}, {"round": 2, "found": "looked up x-2"}]
    assert records(tmp_path, "k", 0) == [("step", 0), ("step", 1)]
    # Replay in a fresh instance: each execution gets its own record back.
    h2 = KeyedFunctionHarness(make(tmp_path, twice_agent(calls, {})))
    assert h2.process_element({"round": 1, "what": "x"}, key="k") == out
    assert calls == ["x", "x-2"], "no durable call ran again"
    assert h2.function.stats()["actions_replayed"] == 2
    assert h2.function.stats()["actions_run"] == 0


def test_second_execution_after_a_crash_runs_instead_of_replaying_the_first(tmp_path):
    calls: list[str] = []
    crash = {"second": True}
    h = KeyedFunctionHarness(make(tmp_path, twice_agent(calls, crash), on_action_error="fail"))
    with pytest.raises(SystemExit):
        h.process_element({"round": 1, "what": "x"}, key="k")
    assert records(tmp_path, "k", 0) == [("step", 0)]
    h2 = KeyedFunctionHarness(make(tmp_path, twice_agent(calls, crash)))
    out = h2.process_element({"round": 1, "what": "x"}, key="k")
    assert out == [{"round": 1, "found": "looked up x"}, {"round": 2, "found": "looked up x-2"}]
    # The second execution's journaled call is replayed, the first execution is not re-run.
    assert calls == ["x", "x-2"]
    assert h2.function.stats()["actions_replayed"] == 1
    assert h2.function.stats()["actions_run"] == 1
    assert h2.function.stats()["durable_calls_replayed"] == 1


# -- memory deletions without a set ----------------------------------------------------------
def forgetful_agent() -> Agent:
    """"set" sets ``note``; "forget" deletes it (``del`` or ``Memory.delete``) and nothing
    else, and reports what the action itself then sees."""
    agent = Agent("forget")

    @agent.action(on=INPUT)
    def act(event: str, ctx: ActionContext) -> None:
        if event == "set":
            ctx.memory["note"] = "kept"
            ctx.memory.set("other", 1)
        elif event == "del":
            del ctx.memory["note"]
        elif event == "delete":
            ctx.memory.delete("note")
            ctx.memory.delete("never-set")  # absent: no error
        ctx.emit({"event": event, "note": ctx.memory.get("note", "gone"),
                  "has": "note" in ctx.memory, "names": list(ctx.memory)})

    return agent


@pytest.mark.parametrize("how", ["del", "delete"])
def test_memory_deletion_without_a_set_live_and_on_replay(tmp_path, how):
    h = KeyedFunctionHarness(make(tmp_path, forgetful_agent()))
    h.process_element("set", key="k")
    snap = h.snapshot()
    assert memory(h, "k") == {"note": "kept", "other": 1}
    out = h.process_element(how, key="k")
    assert out == [{"event": how, "note": "gone", "has": False, "names": ["other"]}]
    assert memory(h, "k") == {"other": 1}, "a deletion alone changes the memory"
    # Replay from the checkpoint before the deletion: the recorded deletion is re-applied.
    h2 = h.restore(snap, make(tmp_path, forgetful_agent()))
    assert memory(h2, "k") == {"note": "kept", "other": 1}
    assert h2.process_element(how, key="k") == out
    assert h2.function.stats()["actions_replayed"] == 1
    assert memory(h2, "k") == {"other": 1}
    # And from nothing: both runs replayed in a fresh instance give the same memory.
    h3 = KeyedFunctionHarness(make(tmp_path, forgetful_agent()))
    h3.process_element("set", key="k")
    h3.process_element(how, key="k")
    assert memory(h3, "k") == {"other": 1}


def test_memory_view_of_one_action(tmp_path):
    agent = Agent("view")

    @agent.action(on=INPUT)
    def act(event: Any, ctx: ActionContext) -> None:
        m = ctx.memory
        seen: dict[str, Any] = {"before": list(m), "missing": m.get("x", "dflt")}
        try:
            m["x"]
        except KeyError as exc:
            seen["keyerror"] = exc.args[0]
        m["x"] = 1
        m.delete("x")
        seen["after-delete"] = ("x" in m, m.get("x"))
        m["x"] = 2  # set after delete: set wins
        seen["in"] = ["x" in m, 1 in m]
        m["b"], m["a"] = 0, 0
        seen["names"] = list(m)
        seen["x"] = m["x"]
        with pytest.raises(TypeError, match=r"^memory names are strings, got int$"):
            m.set(1, "one")  # type: ignore[arg-type]
        ctx.emit(seen)

    h = KeyedFunctionHarness(make(tmp_path, agent))
    [seen] = h.process_element("go", key="k")
    assert seen == {"before": [], "missing": "dflt", "keyerror": "x",
                    "after-delete": [False, None], "in": [True, False],
                    "names": ["a", "b", "x"], "x": 2}
    assert memory(h, "k") == {"a": 0, "b": 0, "x": 2}


# -- an ordinary exception in dead-letter mode -----------------------------------------------
def chain_agent(calls: list[str]) -> Agent:
    agent = Agent("chain")

    def fetch(n: int) -> int:
        calls.append(f"fetch {n}")
        return n * 10

    @agent.action(on=INPUT)
    def first(n: int, ctx: ActionContext) -> None:
        ctx.memory["first"] = n
        ctx.emit(f"first saw {n}")
        ctx.send("checked", ctx.durable_execute(fetch, n))

    @agent.action(on="checked")
    def second(value: int, ctx: ActionContext) -> None:
        ctx.memory["second"] = value
        ctx.emit(f"second saw {value}")
        if value == 30:
            raise ValueError(f"bad value {value}")

    return agent


def test_ordinary_exception_dead_letters_the_run_with_what_earlier_actions_did(tmp_path):
    calls: list[str] = []
    h = KeyedFunctionHarness(make(tmp_path, chain_agent(calls)))
    assert h.process_element(1, key="k") == ["first saw 1", "second saw 10"]
    assert h.process_element(3, key="k") == ["first saw 3"]
    [letter] = letters(h)
    assert letter == {"namespace": NS, "key": "k", "seq": 1, "action": "second",
                      "reason": "ValueError: bad value 30", "input": 3}
    assert memory(h, "k") == {"first": 3, "second": 10}
    assert h.metric("dead_letters") == 1
    # Replayed in a fresh instance: the same outputs and dead letter, no call repeated.
    h2 = KeyedFunctionHarness(make(tmp_path, chain_agent(calls)))
    assert h2.process_element(1, key="k") == ["first saw 1", "second saw 10"]
    assert h2.process_element(3, key="k") == ["first saw 3"]
    assert letters(h2) == [letter]
    assert calls == ["fetch 1", "fetch 3"]
    assert memory(h2, "k") == memory(h, "k")


def test_ordinary_exception_fails_the_task_in_fail_mode(tmp_path):
    h = KeyedFunctionHarness(make(tmp_path, chain_agent([]), on_action_error="fail"))
    with pytest.raises(Exception, match="action second: ValueError: bad value 30"):
        h.process_element(3, key="k")
    assert letters(h) == []


# -- the run-level guards --------------------------------------------------------------------
def loop_agent(hops: int | None) -> Agent:
    """``hop`` sends "hop" to itself ``hops`` times (forever with ``None``)."""
    agent = Agent("loop")

    @agent.action(on=(INPUT, "hop"))
    def hop(n: int, ctx: ActionContext) -> None:
        ctx.emit(n)
        if hops is None or n + 1 < hops:
            ctx.send("hop", n + 1)

    return agent


def test_max_actions_per_run_allows_exactly_the_limit(tmp_path):
    h = KeyedFunctionHarness(make(tmp_path, loop_agent(5), max_actions_per_run=5))
    assert h.process_element(0, key="k") == [0, 1, 2, 3, 4]
    assert letters(h) == []


@pytest.mark.parametrize("bad", [0, -1, 2.5, "5", True, None])
def test_max_actions_per_run_below_one_is_a_clear_error(tmp_path, bad):
    # 0 would dead-letter every run ("run exceeded 0 actions"): refused at construction.
    with pytest.raises(ValueError, match=f"max_actions_per_run must be an integer >= 1, "
                                         f"got {re.escape(repr(bad))}"):
        make(tmp_path, loop_agent(1), max_actions_per_run=bad)


def test_max_actions_per_run_stops_an_event_loop(tmp_path):
    h = KeyedFunctionHarness(make(tmp_path, loop_agent(None), max_actions_per_run=5))
    assert h.process_element(0, key="k") == [0, 1, 2, 3, 4]
    [letter] = letters(h)
    assert letter["action"] == "hop" and letter["seq"] == 0
    assert letter["reason"] == "run exceeded 5 actions (an event loop between actions?)"
    assert h.state("fae-next-seq", "k") == 1, "the key moves on"


def test_event_no_action_reacts_to_dead_letters_the_run(tmp_path):
    agent = Agent("lost")

    @agent.action(on=INPUT)
    def start(event: str, ctx: ActionContext) -> None:
        ctx.memory["started"] = event
        ctx.emit("started")
        ctx.send("nobody-listens", event)

    h = KeyedFunctionHarness(make(tmp_path, agent))
    assert h.process_element("x", key="k") == ["started"]
    [letter] = letters(h)
    assert letter["action"] is None and letter["seq"] == 0
    assert letter["reason"] == "no action reacts to event type 'nobody-listens'"
    assert memory(h, "k") == {"started": "x"}, "the completed action's memory is kept"


# -- values JSON changes ---------------------------------------------------------------------
def tuple_agent() -> Agent:
    agent = Agent("tuples")

    @agent.action(on=INPUT)
    def make_tuples(event: str, ctx: ActionContext) -> None:
        ctx.emit("plain")
        ctx.emit((1, 2))
        ctx.emit({"t": (3,)})
        ctx.memory["pair"] = (4, 5)
        ctx.send("pair", (6, 7))

    @agent.action(on="pair")
    def see(pair: Any, ctx: ActionContext) -> None:
        ctx.emit({"type": type(pair).__name__, "memory": ctx.memory["pair"],
                  "memory_type": type(ctx.memory["pair"]).__name__})

    return agent


def test_values_json_changes_are_the_same_on_the_first_run_and_on_replay(tmp_path):
    h = KeyedFunctionHarness(make(tmp_path, tuple_agent()))
    out = h.process_element("go", key="k")
    assert out == ["plain", [1, 2], {"t": [3]},
                   {"type": "list", "memory": [4, 5], "memory_type": "list"}]
    assert [type(o) for o in out[1:3]] == [list, dict] and type(out[2]["t"]) is list
    h2 = KeyedFunctionHarness(make(tmp_path, tuple_agent()))
    assert h2.process_element("go", key="k") == out
    assert h2.function.stats()["actions_replayed"] == 2
    assert memory(h2, "k") == memory(h, "k") == {"pair": [4, 5]}


def test_event_no_action_reacts_to_fails_the_task_in_fail_mode(tmp_path):
    agent = Agent("lost")

    @agent.action(on=INPUT)
    def start(event: str, ctx: ActionContext) -> None:
        ctx.send("nobody-listens", event)

    h = KeyedFunctionHarness(make(tmp_path, agent, on_action_error="fail"))
    with pytest.raises(Exception, match=r"^no action reacts to event type 'nobody-listens'$"):
        h.process_element("x", key="k")


# -- effects that cannot be recorded ---------------------------------------------------------
class SmallSerializer(JsonSerializer):
    """JSON, refusing anything longer than 24 bytes."""

    def dumps(self, value: Any) -> bytes:
        data = super().dumps(value)
        if len(data) > 24:
            raise SerializationError(f"{len(data)} bytes is too long")
        return data


def test_unrecordable_effects_name_the_value_or_say_it_is_all_of_them(tmp_path):
    agent = Agent("small")

    @agent.action(on=INPUT)
    def act(event: Any, ctx: ActionContext) -> None:
        ctx.emit("a" * 10)
        ctx.emit("b" * 10)  # each fits, the two together do not

    h = KeyedFunctionHarness(make(tmp_path, agent, serializer=SmallSerializer()))
    assert h.process_element(1, key="k") == []
    assert h.process_element("a much longer input value", key="k") == []
    effects, event = (d["reason"] for d in letters(h))
    assert re.fullmatch(r"cannot record the effects of action act: its effects: "
                        r"\d+ bytes is too long", effects)
    assert event == ("cannot record the effects of action act: the 'input' event it "
                     "reacted to: 27 bytes is too long")


# -- execute_run, called directly (public) -----------------------------------------------------
def test_execute_run_directly_replays_what_the_store_recorded(tmp_path):
    calls: list[str] = []
    agent = chain_agent(calls)
    with SQLiteStore(str(tmp_path / "direct.db")) as store:
        first = execute_run(agent, store, JsonSerializer(), NS, "k", encode_key("k"), 4, 1, {})
        again = execute_run(agent, store, JsonSerializer(), NS, "k", encode_key("k"), 4, 1,
                            lambda: {"old": True})
    assert first.seq == again.seq == 4
    assert first.outputs == again.outputs == ["first saw 1", "second saw 10"]
    assert (first.actions_run, first.actions_replayed) == (2, 0)
    assert (again.actions_run, again.actions_replayed) == (0, 2), "replayed by default"
    assert calls == ["fetch 1"]
    assert again.memory == {"old": True, "first": 1, "second": 10} and again.memory_changed
    assert first.memory == {"first": 1, "second": 10}


def test_empty_forms_are_per_serializer_object():
    # The cache is keyed by id(): an entry left by a collected serializer whose id is reused
    # must not be handed to the new one.
    class Prefixed(JsonSerializer):
        def dumps(self, value: Any) -> bytes:
            return b"p" + super().dumps(value)

    fresh = Prefixed()
    _EMPTY_FORMS[id(fresh)] = (JsonSerializer(), b"[]", b"{}")
    assert _empty_forms(fresh) == (b"p[]", b'p{"set":{},"unset":[]}')
    assert _empty_forms(fresh) == (b"p[]", b'p{"set":{},"unset":[]}')


def test_execute_run_async_directly_runs_and_replays(tmp_path):
    agent = Agent("async-chain")

    async def look_up(n: int) -> int:
        await asyncio.sleep(0)
        return n + 100

    @agent.action(on=INPUT)
    async def first(n: int, ctx: ActionContext) -> None:
        ctx.memory["n"] = n
        ctx.emit(await ctx.durable_execute_async(look_up, n))
        ctx.send("second", [n, ctx.key])

    @agent.action(on="second")
    async def second(payload: list, ctx: ActionContext) -> None:
        if payload[0] < 0:
            raise ValueError("negative")
        ctx.emit(payload)

    def run(store: SQLiteStore, seq: int, value: int, **options: Any) -> RunResult:
        return asyncio.run(execute_run_async(agent, store, JsonSerializer(), NS, "k",
                                             encode_key("k"), seq, value, {}, **options))

    with SQLiteStore(str(tmp_path / "direct.db")) as store:
        first_run, again = run(store, 0, 1), run(store, 0, 1)
        with pytest.raises(ActionFailed, match=r"^action second: ValueError: negative$"):
            run(store, 1, -1)
        with pytest.raises(ActionFailed, match="run exceeded 1 actions"):
            run(store, 2, 5, max_actions=1)
        fresh = run(store, 0, 1, maybe_recorded=False)
    assert first_run.outputs == again.outputs == fresh.outputs == [101, [1, "k"]]
    assert first_run.seq == 0 and first_run.memory == {"n": 1}
    assert (first_run.actions_run, again.actions_replayed, fresh.actions_run) == (2, 2, 2)


def test_replay_with_another_input_counts_each_mismatch_and_names_the_action(tmp_path):
    calls: list[str] = []
    h = KeyedFunctionHarness(make(tmp_path, chain_agent(calls)))
    h.process_element(1, key="k")
    # A fresh instance is handed another input for the same key and sequence: both recorded
    # actions are run afresh, and counted.
    h2 = KeyedFunctionHarness(make(tmp_path, chain_agent(calls)))
    assert h2.process_element(2, key="k") == ["first saw 2", "second saw 20"]
    assert h2.function.stats()["input_mismatches"] == 2
    assert calls == ["fetch 1", "fetch 2"]
    # Another input that cannot be recorded at all: the run is dead-lettered, the action named.
    small = Agent("small-replay")

    @small.action(on=INPUT)
    def act(event: Any, ctx: ActionContext) -> None:
        ctx.emit("ok")

    path = tmp_path / "small"
    path.mkdir()
    KeyedFunctionHarness(make(path, small, serializer=SmallSerializer())).process_element(
        1, key="k")
    h3 = KeyedFunctionHarness(make(path, small, serializer=SmallSerializer()))
    assert h3.process_element("a much longer input value", key="k") == []
    [letter] = letters(h3)
    assert letter["action"] == "act" and letter["seq"] == 0
    assert letter["reason"] == ("cannot record the effects of action act: the 'input' event it "
                                "reacted to: 27 bytes is too long")


# -- a journal recorded for another input ------------------------------------------------------
def test_a_journal_recorded_for_another_input_is_removed_from_its_start(tmp_path):
    """A started action whose journal (two calls) was recorded for input 1 gets input 2 under
    the same key and sequence: the whole old journal goes, so a replay of input 2 never
    returns a result recorded for input 1 (here: the charge)."""
    charges: list[str] = []
    crash: dict[str, Any] = {"after": 2}

    def fetch(n: int) -> int:
        return n * 10

    def charge(order: str) -> int:
        charges.append(order)
        return len(charges)

    agent = Agent("stale-journal")

    @agent.action(on=INPUT)
    def act(n: int, ctx: ActionContext) -> None:
        ctx.emit(ctx.durable_execute(fetch, n))
        if crash["after"] == 1:
            raise RetryableActionError("the task dies after the first call")
        ctx.emit(ctx.durable_execute(charge, "order-7"))
        if crash["after"] == 2:
            raise RetryableActionError("the task dies after the second call")

    def run(store: SQLiteStore, n: int) -> RunResult:
        return execute_run(agent, store, JsonSerializer(), NS, "k", encode_key("k"), 0, n, {})

    record_id = RecordId(NS, encode_key("k"), 0, "act", 0)
    with SQLiteStore(str(tmp_path / "j.db")) as store:
        with pytest.raises(RetryableActionError):
            run(store, 1)
        assert [c.position for c in store.get_calls(record_id)] == [0, 1]
        crash["after"] = 1
        with pytest.raises(RetryableActionError):
            run(store, 2)
        assert [(c.position, c.result) for c in store.get_calls(record_id)] == [(0, b"20")]
        crash["after"] = None
        result = run(store, 2)
    assert result.outputs == [20, 2] and result.calls.replayed == 1
    assert charges == ["order-7", "order-7"]


@pytest.mark.parametrize("by_keyword", [False, True])
def test_an_async_durable_call_with_other_arguments_runs_again(tmp_path, by_keyword):
    """The journal of an ``async def`` action matches a call by its arguments too
    (positional and keyword): other arguments on replay run the call."""
    now: dict[str, Any] = {"n": 1, "crash": True}
    seen: list[int] = []

    async def look(n: int) -> int:
        seen.append(n)
        return n * 100

    agent = Agent("async-arguments")

    @agent.action(on=INPUT)
    async def act(value: str, ctx: ActionContext) -> None:
        n = now["n"]
        ctx.emit(await (ctx.durable_execute_async(look, n=n) if by_keyword
                        else ctx.durable_execute_async(look, n)))
        if now["crash"]:
            raise RetryableActionError("the task dies")

    def run(store: SQLiteStore) -> RunResult:
        return asyncio.run(execute_run_async(agent, store, JsonSerializer(), NS, "k",
                                             encode_key("k"), 0, "in", {}))

    with SQLiteStore(str(tmp_path / "a.db")) as store:
        with pytest.raises(RetryableActionError):
            run(store)
        now.update(n=2, crash=False)
        assert run(store).outputs == [200]
    assert seen == [1, 2]
