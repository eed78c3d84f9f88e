"""Durable calls (flink_agents_ext.actions.context), driven by the harness on a real SQLite
store: the identity a call is journaled under, recorded exceptions rebuilt on replay, calls
whose arguments or results cannot be recorded, a PENDING entry met by a plain call, async
calls, the action's view of its context. A task death is a ``SystemExit`` from the action
(it is not caught as an action failure), then a fresh instance on the same store replays."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from flink_agents_ext.actions import (
    INPUT,
    ActionContext,
    Agent,
    DurableAgentFunction,
    Memory,
    ReplayedCallError,
    durable_name,
)
from flink_agents_ext.actions.context import (
    apply_memory_updates,
    exception_message,
    function_identity,
    rebuild_exception,
)
from flink_agents_ext.keys import encode_key
from flink_agents_ext.store import CallStatus, RecordId, SQLiteStore
from flink_agents_ext.testing import KeyedFunctionHarness

NS = "calls"
TAG = "flink-agents-ext-dead-letters"


class Outer:
    class Inner(Exception):
        """A nested exception class: recorded as ``tests.test_durable_calls.Outer.Inner``."""


class NeedsTwo(Exception):
    def __init__(self, a: str, b: str) -> None:
        super().__init__(a, b)


class Plain:
    def __call__(self, x: int) -> int:
        return x


@durable_name("billing.charge.v2")
def charge(x: int) -> int:
    return x


def test_function_identity() -> None:
    assert function_identity(charge) == "billing.charge.v2"
    assert function_identity(durable_name("late.name")(lambda: 0)) == "late.name"
    assert function_identity(exception_message) == \
        "flink_agents_ext.actions.context.exception_message"
    assert function_identity(Outer.Inner) == "tests.test_durable_calls.Outer.Inner"
    assert function_identity(lambda: 0) == \
        "tests.test_durable_calls.test_function_identity.<locals>.<lambda>"
    assert function_identity(Plain()) == "tests.test_durable_calls.Plain"
    bare = Plain()
    bare.__module__ = None  # type: ignore[assignment]
    assert function_identity(bare) == "?.Plain"
    named = Plain()
    named.__name__ = "named"  # type: ignore[attr-defined]
    assert function_identity(named) == "tests.test_durable_calls.named"
    assert function_identity((1).__add__) == "?.int.__add__"  # no __module__ at all


def test_exception_message() -> None:
    assert exception_message(KeyError("x")) == "x"
    assert exception_message(ValueError("a", "b")) == "('a', 'b')"
    assert exception_message(ValueError(3)) == "3"
    assert exception_message(ValueError()) == ""


def test_rebuild_exception() -> None:
    for error_type, cls in [("builtins.ValueError", ValueError), ("KeyError", KeyError),
                            ("tests.test_durable_calls.Outer.Inner", Outer.Inner)]:
        exc = rebuild_exception(error_type, "why")
        assert type(exc) is cls and exception_message(exc) == "why"
    for error_type in ["no.such.module.Error", "builtins.int", "builtins.len",
                       "builtins.NoSuchError",
                       "tests.test_durable_calls.NeedsTwo"]:
        exc = rebuild_exception(error_type, "why")
        assert type(exc) is ReplayedCallError
        assert exc.error_type == error_type and str(exc) == f"{error_type}: why"


def test_apply_memory_updates_says_whether_anything_changed() -> None:
    memory = {"a": 1, "b": 2}
    assert apply_memory_updates(memory, {"set": {"a": 1}, "unset": ["zz"]}) is False
    assert apply_memory_updates(memory, {}) is False
    assert apply_memory_updates(memory, {"set": {"a": 5}, "unset": []})
    assert apply_memory_updates(memory, {"set": {}, "unset": ["b"]})
    assert apply_memory_updates(memory, {"set": {"c": None}, "unset": []})
    assert memory == {"a": 5, "c": None}


def make(tmp_path: Path, agent: Agent, **options: Any) -> DurableAgentFunction:
    return DurableAgentFunction(agent, {"backend": "sqlite", "path": str(tmp_path / "a.db")},
                                NS, **options)


def die_once(agent_body: Callable[[Any, ActionContext], None], crash: dict[str, bool]
             ) -> Agent:
    agent = Agent("calls")

    @agent.action(on=INPUT)
    def act(event: Any, ctx: ActionContext) -> None:
        agent_body(event, ctx)
        if crash.pop("once", False):
            raise SystemExit("the task dies before the action is recorded")

    return agent


def test_recorded_exceptions_replay_with_type_and_message(tmp_path: Path) -> None:
    ran: list[str] = []

    def fails(kind: str) -> None:
        ran.append(kind)
        if kind == "nested":
            raise Outer.Inner("inner trouble")
        if kind == "two":
            raise NeedsTwo("a", "b")
        if kind == "empty":
            raise ValueError()
        raise KeyError("missing")

    def body(event: Any, ctx: ActionContext) -> None:
        for kind in ("nested", "two", "empty", "key"):
            try:
                ctx.durable_execute(fails, kind)
            except Exception as exc:
                ctx.emit(f"{type(exc).__name__}: {exception_message(exc)}")

    crash = {"once": True}
    with pytest.raises(SystemExit):
        KeyedFunctionHarness(make(tmp_path, die_once(body, crash))).process_element(1, key="k")
    h = KeyedFunctionHarness(make(tmp_path, die_once(body, crash)))
    assert h.process_element(1, key="k") == [
        "Inner: inner trouble",
        "ReplayedCallError: tests.test_durable_calls.NeedsTwo: ('a', 'b')",
        "ValueError: ",
        "KeyError: missing"]
    assert ran == ["nested", "two", "empty", "key"]
    assert h.function.stats()["durable_calls_replayed"] == 4
    assert h.function.stats()["durable_calls_run"] == 0
    with SQLiteStore(str(tmp_path / "a.db")) as store:
        journal = store.get_calls(RecordId(NS, encode_key("k"), 0, "act", 0))
    assert [(c.position, c.function, c.status, c.error_type) for c in journal] == [
        (0, "tests.test_durable_calls.test_recorded_exceptions_replay_with_type_and_message."
            "<locals>.fails", CallStatus.ERROR, "tests.test_durable_calls.Outer.Inner"),
        (1, journal[0].function, CallStatus.ERROR, "tests.test_durable_calls.NeedsTwo"),
        (2, journal[0].function, CallStatus.ERROR, "builtins.ValueError"),
        (3, journal[0].function, CallStatus.ERROR, "builtins.KeyError")]


def test_results_replay_by_position_and_none_is_a_result(tmp_path: Path) -> None:
    ran: list[Any] = []

    def echo(x: Any, *, tag: str = "") -> Any:
        ran.append((x, tag))
        return None if x is None else f"{tag}{x}"

    def body(event: Any, ctx: ActionContext) -> None:
        ctx.emit([ctx.durable_execute(echo, 1), ctx.durable_execute(echo, None),
                  ctx.durable_execute(echo, 1, tag="t"), ctx.durable_execute(charge, 7)])

    crash = {"once": True}
    with pytest.raises(SystemExit):
        KeyedFunctionHarness(make(tmp_path, die_once(body, crash))).process_element(0, key="k")
    h = KeyedFunctionHarness(make(tmp_path, die_once(body, crash)))
    assert h.process_element(0, key="k") == [["1", None, "t1", 7]]
    assert ran == [(1, ""), (None, ""), (1, "t")]
    assert h.function.stats()["durable_calls_replayed"] == 4


def test_unrecordable_arguments_and_results_dead_letter_the_run(tmp_path: Path) -> None:
    agent = Agent("bad-calls")

    @agent.action(on=INPUT)
    def act(event: str, ctx: ActionContext) -> None:
        if event == "args":
            ctx.durable_execute(charge, object())
        else:
            ctx.durable_execute(lambda: {1, 2})

    h = KeyedFunctionHarness(make(tmp_path, agent))
    assert h.process_element("args", key="k") == []
    assert h.process_element("result", key="k") == []
    first, second = (json.loads(x) for x in h.side_outputs[TAG])
    assert first["action"] == "act"
    assert first["reason"].startswith("SerializationError: arguments of durable call "
                                      "billing.charge.v2 cannot be digested: values of type")
    assert "durable call tests.test_durable_calls." in second["reason"]
    assert "in act#0 (key s:\"k\", run 1) ran but its result cannot be recorded" in \
        second["reason"]


def test_pending_entry_met_by_a_plain_call_runs_it_again(tmp_path: Path) -> None:
    ran: list[str] = []

    def pay(order: str) -> str:
        ran.append(order)
        if len(ran) == 1:
            raise SystemExit("the task dies during the call")
        return f"paid {order}"

    version = {"reconcilable": True}

    def body(event: Any, ctx: ActionContext) -> None:
        if version["reconcilable"]:
            ctx.emit(ctx.durable_execute_reconcilable(pay, lambda o: "looked up", event))
        else:
            ctx.emit(ctx.durable_execute(pay, event))

    with pytest.raises(SystemExit):
        KeyedFunctionHarness(make(tmp_path, die_once(body, {}))).process_element("o", key="k")
    version["reconcilable"] = False  # a plain call cannot reconcile: it runs
    h = KeyedFunctionHarness(make(tmp_path, die_once(body, {})))
    assert h.process_element("o", key="k") == ["paid o"]
    assert ran == ["o", "o"]
    assert h.function.stats()["durable_calls_run"] == 1


def test_async_durable_calls_replay(tmp_path: Path) -> None:
    ran: list[str] = []

    async def fetch(x: str, *, suffix: str = "") -> str:
        ran.append(x)
        await asyncio.sleep(0)
        return x.upper() + suffix

    async def lookup(x: str) -> str:
        ran.append("lookup " + x)
        return "found " + x

    async def pay(x: str) -> str:
        ran.append("pay " + x)
        raise SystemExit("dies during the reconcilable call")

    agent = Agent("async")

    @agent.action(on=INPUT)
    async def act(event: str, ctx: ActionContext) -> None:
        ctx.emit(await ctx.durable_execute_async(fetch, event, suffix="!"))
        ctx.emit(await ctx.durable_execute_reconcilable_async(pay, lookup, event))

    with pytest.raises(SystemExit):
        KeyedFunctionHarness(make(tmp_path, agent)).process_element("a", key="k")
    h = KeyedFunctionHarness(make(tmp_path, agent))
    assert h.process_element("a", key="k") == ["A!", "found a"]
    assert ran == ["a", "pay a", "lookup a"]
    assert h.function.stats()["durable_calls_replayed"] == 1
    assert h.function.stats()["durable_calls_run"] == 1


def test_what_an_action_sees_of_its_context(tmp_path: Path) -> None:
    agent = Agent("ctx")

    @agent.action(on=(INPUT, "next"))
    def act(event: Any, ctx: ActionContext) -> None:
        ctx.emit([ctx.key, ctx.seq, ctx.event_type, ctx.action])
        for bad in ("", 1, None):
            with pytest.raises(ValueError, match=r"^event_type must be a non-empty string$"):
                ctx.send(bad)  # type: ignore[arg-type]
        if ctx.event_type == INPUT:
            ctx.send("next")

    @agent.action(on="next")
    def other(event: Any, ctx: ActionContext) -> None:
        ctx.emit(["other", event])

    h = KeyedFunctionHarness(make(tmp_path, agent))
    h.process_element("x", key=("a", 1))
    assert h.process_element("y", key=("a", 1)) == [
        [["a", 1], 1, INPUT, "act"], [["a", 1], 1, "next", "act"], ["other", None]]


def test_a_changed_call_cuts_the_stored_journal_and_keyword_arguments_count(tmp_path: Path
                                                                           ) -> None:
    ran: list[Any] = []

    def step(x: int, *, tag: str = "") -> str:
        ran.append((x, tag))
        return f"{tag}{x}"

    plan = {"calls": [(1, "a"), (2, "a"), (3, "a")]}

    def body(event: Any, ctx: ActionContext) -> None:
        for x, tag in plan["calls"]:
            ctx.durable_execute(step, x, tag=tag)
        raise SystemExit("the task dies before the action is recorded")

    def attempt() -> None:
        with pytest.raises(SystemExit):
            KeyedFunctionHarness(make(tmp_path, die_once(body, {}))).process_element(0, key="k")

    def journal() -> list[tuple[int, str]]:
        with SQLiteStore(str(tmp_path / "a.db")) as store:
            calls = store.get_calls(RecordId(NS, encode_key("k"), 0, "act", 0))
        return [(c.position, store_text(c.result)) for c in calls]

    attempt()
    plan["calls"] = [(1, "a"), (2, "b")]  # same function and positional argument, other kwarg
    attempt()
    assert ran == [(1, "a"), (2, "a"), (3, "a"), (2, "b")]
    assert journal() == [(0, '"a1"'), (1, '"b2"')], "cut from the changed call on"


def store_text(data: bytes | None) -> str:
    return (data or b"").decode()


def test_async_actions_run_in_a_child_forked_after_the_loop_started(tmp_path: Path) -> None:
    agent = Agent("async-fork")

    async def double(x: int) -> int:
        return 2 * x

    @agent.action(on=INPUT)
    async def act(event: int, ctx: ActionContext) -> None:
        ctx.emit(await ctx.durable_execute_async(double, event))

    assert KeyedFunctionHarness(make(tmp_path, agent)).process_element(1, key="a") == [2]
    pid = os.fork()
    if pid == 0:  # the child: the parent's loop thread is not there
        code = 3
        try:
            signal.alarm(30)  # a hang ends the child (and fails the test)
            out = KeyedFunctionHarness(make(tmp_path, agent)).process_element(4, key="b")
            code = 0 if out == [8] else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_nested_exception_classes_of_modules_not_imported_yet(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    nested = "class Outer:\n    class Inner(Exception):\n        pass\n"
    (tmp_path / "fae_top_mod.py").write_text(nested)
    (tmp_path / "fae_pkg").mkdir()
    (tmp_path / "fae_pkg" / "__init__.py").write_text("")
    (tmp_path / "fae_pkg" / "sub.py").write_text(nested)
    monkeypatch.syspath_prepend(str(tmp_path))
    for error_type in ["fae_top_mod.Outer.Inner", "fae_pkg.sub.Outer.Inner"]:
        exc = rebuild_exception(error_type, "deep")
        assert type(exc).__qualname__ == "Outer.Inner", error_type
        assert type(exc).__module__ == error_type.rsplit(".", 2)[0]
        assert str(exc) == "deep"
    for name in ["fae_top_mod", "fae_pkg", "fae_pkg.sub"]:
        sys.modules.pop(name, None)


def test_memory_over_a_plain_mapping() -> None:
    memory = Memory({"a": 1})
    assert memory.get("a") == 1 and list(memory) == ["a"]
    memory["b"] = 2
    assert memory.updates() == {"set": {"b": 2}, "unset": []}
