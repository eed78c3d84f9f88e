"""Dead letters, driven by the harness on a real SQLite store: what a dead-lettered run
keeps (its completed actions' memory, outputs and durable calls) and what it discards (the
failing action's own effects), valid JSON whatever the input, the user's value named."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from flink_agents_ext.actions import INPUT, ActionContext, Agent, DurableAgentFunction
from flink_agents_ext.actions.dead_letters import MAX_REPR, dead_letter, jsonable
from flink_agents_ext.testing import KeyedFunctionHarness

NS = "dead-letters"
TAG = "flink-agents-ext-dead-letters"


def counting_agent(calls: list[str]) -> Agent:
    """``count`` counts in memory, calls ``note`` durably and emits; ``check`` notes the
    input in memory, and for "bad" also poisons the memory and emits, then raises."""
    agent = Agent("count")

    def note(text: str) -> str:
        calls.append(text)
        return f"noted {text}"

    @agent.action(on=INPUT)
    def count(text: str, ctx: ActionContext) -> None:
        ctx.memory["count"] = ctx.memory.get("count", 0) + 1
        noted = ctx.durable_execute(note, text)
        ctx.emit({"text": text, "count": ctx.memory["count"], "noted": noted,
                  "checked": ctx.memory.get("checked"), "poison": ctx.memory.get("poison")})
        ctx.send("check", text)

    @agent.action(on="check")
    def check(text: str, ctx: ActionContext) -> None:
        ctx.memory["checked"] = text
        if text == "bad":
            ctx.memory["poison"] = True
            ctx.emit("emitted by the failing action")
            raise RuntimeError(f"cannot check {text}")

    return agent


def make(tmp_path: Path, agent: Agent, **options: Any) -> DurableAgentFunction:
    return DurableAgentFunction(agent, {"backend": "sqlite", "path": str(tmp_path / "a.db")},
                                NS, poll_interval_ms=2, **options)


def letters(h: KeyedFunctionHarness) -> list[dict]:
    return [json.loads(x) for x in h.side_outputs.get(TAG, [])]


def feed(h: KeyedFunctionHarness, concurrent: bool, items: list[tuple[str, Any]]) -> None:
    for key, value in items:
        h.process_element(value, key=key)
        if concurrent:
            h.run_until_idle()


@pytest.mark.parametrize("max_in_flight", [0, 2], ids=["inline", "concurrent"])
def test_dead_letter_keeps_completed_actions_memory_and_outputs(tmp_path, max_in_flight):
    calls: list[str] = []
    h = KeyedFunctionHarness(make(tmp_path, counting_agent(calls),
                                  max_in_flight=max_in_flight))
    feed(h, max_in_flight > 0, [("k", "ok1"), ("k", "bad"), ("k", "ok2")])
    # The output of "count" in the dead-lettered run is kept; "check"'s emit is not.
    assert h.outputs == [
        {"text": "ok1", "count": 1, "noted": "noted ok1", "checked": None, "poison": None},
        {"text": "bad", "count": 2, "noted": "noted bad", "checked": "ok1", "poison": None},
        {"text": "ok2", "count": 3, "noted": "noted ok2", "checked": "ok1", "poison": None},
    ]
    # count's memory update of the dead-lettered run is kept; check's changes are not.
    assert json.loads(h.state("fae-memory", "k")) == {"count": 3, "checked": "ok2"}
    [letter] = letters(h)
    assert (letter["seq"], letter["action"], letter["input"]) == (1, "check", "bad")
    assert letter["reason"] == "RuntimeError: cannot check bad"
    assert calls == ["ok1", "bad", "ok2"]
    assert h.function.stats()["dead_letters"] == 1


def test_replay_of_a_dead_lettered_run_keeps_the_same_memory(tmp_path):
    calls: list[str] = []
    agent = counting_agent(calls)
    h = KeyedFunctionHarness(make(tmp_path, agent))
    snap = h.snapshot()  # before the dead-lettered run: a failover replays it
    feed(h, False, [("k", "bad"), ("k", "ok")])
    h2 = h.restore(snap, make(tmp_path, agent))
    feed(h2, False, [("k", "bad"), ("k", "ok")])
    assert h2.outputs == h.outputs
    assert h2.state("fae-memory", "k") == h.state("fae-memory", "k")
    assert len(letters(h2)) == 1
    assert calls == ["bad", "ok"], "the completed action's durable call is not repeated"


def test_dead_letters_are_valid_json_for_nan_and_infinite_keys_and_values(tmp_path):
    h = KeyedFunctionHarness(make(tmp_path, counting_agent([])))
    h.process_element({"score": math.nan, "limits": (math.inf, -math.inf), 1: "x"},
                      key=math.nan)
    [raw] = h.side_outputs[TAG]
    letter = json.loads(raw, parse_constant=lambda c: pytest.fail(f"{c} in {raw}"))
    assert letter["key"] == "NaN" and letter["seq"] is None and letter["action"] is None
    assert "NaN" in letter["reason"]
    assert letter["input"] == {"score": "NaN", "limits": ["Infinity", "-Infinity"], "1": "x"}


def test_unserialisable_emit_names_the_users_value_and_the_action(tmp_path):
    agent = Agent("emit")

    @agent.action(on=INPUT)
    def tally(value: Any, ctx: ActionContext) -> None:
        ctx.emit("fine")
        ctx.emit({"tags": {"a", "b"}})

    h = KeyedFunctionHarness(make(tmp_path, agent))
    h.process_element("x", key="k")
    [letter] = letters(h)
    assert letter["action"] == "tally"
    assert "action tally" in letter["reason"]
    assert "ctx.emit() #2" in letter["reason"]
    assert "type dict" in letter["reason"] and "type set" in letter["reason"]
    assert "type list" not in letter["reason"], "names the user's value, not the outputs"
    assert h.outputs == []


def test_unserialisable_memory_value_and_event_payload_are_named(tmp_path):
    agent = Agent("memory")

    @agent.action(on=INPUT)
    def remember(value: Any, ctx: ActionContext) -> None:
        if value == "memory":
            ctx.memory["seen"] = {1, 2}
        else:
            ctx.send("next", object())

    @agent.action(on="next")
    def after(value: Any, ctx: ActionContext) -> None:
        pass

    h = KeyedFunctionHarness(make(tmp_path, agent))
    h.process_element("memory", key="k")
    h.process_element("event", key="k")
    first, second = letters(h)
    assert "ctx.memory['seen']" in first["reason"] and "type set" in first["reason"]
    assert "ctx.send('next')" in second["reason"] and "type object" in second["reason"]


def test_a_none_key_is_dead_lettered_with_the_reason_not_run(tmp_path):
    calls: list[str] = []
    h = KeyedFunctionHarness(make(tmp_path, counting_agent(calls)))
    h.process_element("ok", key=None)
    [letter] = letters(h)
    assert letter["key"] is None and letter["seq"] is None
    assert "key is None" in letter["reason"] and "missing key field" in letter["reason"]
    assert calls == [] and h.outputs == []
    assert h.state("fae-next-seq", None) is None


def test_jsonable_renders_what_json_cannot_hold() -> None:
    class Thing:
        def __repr__(self) -> str:
            return "Thing" * 500

    assert jsonable([1.5, True, None, "s", (1, 2)]) == [1.5, True, None, "s", [1, 2]]
    assert jsonable({(1, 2): 1, None: 2, 2.5: math.nan}) == {"[1, 2]": 1, "null": 2,
                                                             "2.5": "NaN"}
    assert jsonable(Thing()) == ("Thing" * 500)[:MAX_REPR]
    assert jsonable(b"\x00") == "b'\\x00'"
    deep: list[Any] = []
    for _ in range(200):
        deep = [deep]
    json.dumps(jsonable(deep), allow_nan=False)
    text = dead_letter("ns", math.inf, None, None, "why", {"v": -math.inf})
    assert json.loads(text) == {"namespace": "ns", "key": "Infinity", "seq": None,
                                "action": None, "reason": "why", "input": {"v": "-Infinity"}}
