"""The harness keys state as Flink does: equal-but-distinct Python keys are distinct keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flink_agents_ext.actions import INPUT, ActionContext, Agent, DurableAgentFunction
from flink_agents_ext.keys import encode_key
from flink_agents_ext.store import SQLiteStore
from flink_agents_ext.testing import KeyedFunctionHarness

#: Equal in Python (1 == 1.0 == True) or alike, but six different Flink keys.
KEYS: tuple[Any, ...] = (1, 1.0, True, "1", (1,), b"1")


def agent(calls: list[tuple[str, int]]) -> Agent:
    a = Agent("keys")

    def call(key_enc: str, seq: int) -> str:
        calls.append((key_enc, seq))
        return f"{key_enc}@{seq}"

    @a.action(on=INPUT)
    def act(value: Any, ctx: ActionContext) -> None:
        key_enc = encode_key(ctx.key)
        result = ctx.durable_execute(call, key_enc, ctx.seq)
        ctx.memory["n"] = ctx.memory.get("n", 0) + 1
        ctx.emit(json.dumps([key_enc, type(ctx.key).__name__, ctx.seq, result,
                             ctx.memory["n"]]))

    return a


@pytest.mark.parametrize("max_in_flight", [0, 2])
def test_equal_but_distinct_keys_have_their_own_sequences_state_and_timers(
        tmp_path: Path, max_in_flight: int) -> None:
    calls: list[tuple[str, int]] = []
    db = str(tmp_path / "a.db")
    fn = DurableAgentFunction(agent(calls), {"backend": "sqlite", "path": db}, "ns",
                              max_in_flight=max_in_flight, poll_interval_ms=1)
    h = KeyedFunctionHarness(fn)
    for round_ in range(2):
        for key in KEYS:
            h.process_element(round_, key=key)
        h.run_until_idle()
    outputs = sorted(json.loads(o) for o in h.outputs)
    # Each key ran its own runs 0 and 1, saw its own memory and its own type.
    assert outputs == sorted(
        [encode_key(k), type(k).__name__, seq, f"{encode_key(k)}@{seq}", seq + 1]
        for k in KEYS for seq in (0, 1))
    assert sorted(calls) == sorted((encode_key(k), seq) for k in KEYS for seq in (0, 1))
    for key in KEYS:
        if max_in_flight:
            assert h.state("fae-runs", key)[:3] == (2, None, 1)  # next, running, completed
        else:
            assert h.state("fae-next-seq", key) == 2
        assert json.loads(h.state("fae-memory", key)) == {"n": 2}
    # Every key's runs are covered by the checkpoint and pruned: nothing collides or leaks.
    snap = h.snapshot()
    h.notify_complete(snap.checkpoint_id)
    with SQLiteStore(db) as store:
        assert store.size("ns") == 0
    h.close()


def test_restore_keeps_keys_apart_and_get_current_key_returns_the_original(
        tmp_path: Path) -> None:
    calls: list[tuple[str, int]] = []
    db = str(tmp_path / "a.db")

    def make() -> DurableAgentFunction:
        return DurableAgentFunction(agent(calls), {"backend": "sqlite", "path": db}, "ns")

    h = KeyedFunctionHarness(make())
    snap = h.snapshot()
    for key in KEYS:
        h.process_element(0, key=key)
    first = sorted(h.outputs)
    h2 = h.restore(snap, make())
    for key in KEYS:
        h2.process_element(0, key=key)  # the replay: every run replayed, none run again
    assert sorted(h2.outputs) == first
    assert len(calls) == len(KEYS)
    assert [type(json.loads(o)[1]) for o in h2.outputs] == [str] * len(KEYS)
    assert {json.loads(o)[1] for o in h2.outputs} == {"int", "float", "bool", "str",
                                                       "tuple", "bytes"}
    assert sorted(h2.state_items("fae-next-seq"), key=repr) == sorted(
        ((k, 1) for k in KEYS), key=repr)
