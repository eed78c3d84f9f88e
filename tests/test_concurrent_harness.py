"""Concurrent runs (max_in_flight > 0), driven by the harness on a real SQLite store."""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from flink_agents_ext.actions import INPUT, ActionContext, Agent, DurableAgentFunction
from flink_agents_ext.checkpoint.completions import RESUME_TIMER
from flink_agents_ext.keys import encode_key
from flink_agents_ext.store import RecordId, SQLiteStore
from flink_agents_ext.testing import KeyedFunctionHarness

NS = "concurrent"


class Gauge:
    """Tracks how many calls run at once. With ``until``, a call stays in flight until that
    many run at once (at most ``WAIT_S``), so that the peak does not depend on how fast a
    loaded machine starts them."""

    WAIT_S = 20.0

    def __init__(self, until: int = 0) -> None:
        self.now = 0
        self.peak = 0
        self.until = until
        self.lock = threading.Condition()
        self.calls: list[Any] = []

    def call(self, item: Any, seconds: float) -> Any:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.calls.append(item)
            self.lock.notify_all()
            if self.until:
                self.lock.wait_for(lambda: self.peak >= self.until, timeout=self.WAIT_S)
        time.sleep(seconds)
        with self.lock:
            self.now -= 1
        return item


def slow_agent(gauge: Gauge, seconds: Any) -> Agent:
    agent = Agent("slow")

    @agent.action(on=INPUT)
    def act(event: list, ctx: ActionContext) -> None:
        delay = seconds() if callable(seconds) else seconds
        item = ctx.durable_execute(gauge.call, event, delay)
        ctx.memory["n"] = ctx.memory.get("n", 0) + 1
        ctx.emit({"key": ctx.key, "item": item, "n": ctx.memory["n"], "seq": ctx.seq})

    return agent


def make(db: Path, agent: Agent, max_in_flight: int, commit: str = "each"
         ) -> DurableAgentFunction:
    return DurableAgentFunction(agent, {"backend": "sqlite", "path": str(db),
                                        "commit": commit}, NS,
                                max_in_flight=max_in_flight, poll_interval_ms=2)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("commit", ["each", "group"])
def test_per_key_order_holds_while_keys_overlap(tmp_path: Path, commit: str) -> None:
    gauge = Gauge()
    rnd = random.Random(3)
    agent = slow_agent(gauge, lambda: rnd.uniform(0.001, 0.02))
    h = KeyedFunctionHarness(make(tmp_path / "a.db", agent, max_in_flight=8, commit=commit))
    inputs = [(f"k{i % 12}", i) for i in range(120)]
    for key, i in inputs:
        h.process_element([key, i], key=key)
        if i % 10 == 0:
            h.advance_processing_time(h.processing_time + 1)
    h.end_input()
    assert not h._timers or h.run_until_idle() == []
    by_key: dict[str, list[int]] = defaultdict(list)
    for out in h.outputs:
        by_key[out["key"]].append(out["item"][1])
    assert sum(map(len, by_key.values())) == 120
    for key, items in by_key.items():
        assert items == sorted(items), f"{key}: outputs out of input order: {items}"
    for out in h.outputs:
        assert out["n"] == out["seq"] + 1  # memory applied run after run
    assert 1 < gauge.peak <= 8


@pytest.mark.timeout(60)
def test_slow_calls_of_different_keys_overlap(tmp_path: Path) -> None:
    gauge = Gauge(until=16)
    h = KeyedFunctionHarness(make(tmp_path / "a.db", slow_agent(gauge, 0.01), max_in_flight=16))
    for i in range(16):
        h.process_element([f"k{i}", i], key=f"k{i}")
    h.end_input()
    assert len(h.outputs) == 16
    # All 16 calls were executing at the same moment (speed is measured by make bench).
    assert gauge.peak == 16


@pytest.mark.timeout(60)
def test_backpressure_bounds_runs_in_flight(tmp_path: Path) -> None:
    gauge = Gauge()
    h = KeyedFunctionHarness(make(tmp_path / "a.db", slow_agent(gauge, 0.02), max_in_flight=3))
    for i in range(30):
        h.process_element([f"k{i}", i], key=f"k{i}")  # blocks while 3 runs execute
        assert h.function.runs.executor.in_flight <= 3  # type: ignore[attr-defined]
    h.end_input()
    assert len(h.outputs) == 30
    assert gauge.peak == 3


class Gate:
    """An action that records a durable call and then waits for its key's gate."""

    def __init__(self) -> None:
        self.open: dict[str, threading.Event] = defaultdict(threading.Event)
        self.executed: list[tuple[str, int]] = []

    def step(self, key: str, seq: int) -> str:
        self.executed.append((key, seq))
        return f"{key}-{seq}"

    def agent(self) -> Agent:
        agent = Agent("gated")

        @agent.action(on=INPUT)
        def act(event: str, ctx: ActionContext) -> None:
            done = ctx.durable_execute(self.step, ctx.key, ctx.seq)
            if not self.open[ctx.key].wait(timeout=20):
                raise TimeoutError("gate never opened")
            ctx.emit(done)

        return agent


def seqs(db: Path, key: str) -> list[int]:
    """Sequences of ``key`` that have action or call records."""
    with SQLiteStore(str(db)) as store:
        found = set()
        for seq in range(10):
            if store.get_run(NS, encode_key(key), seq) or store.get_calls(
                    RecordId(NS, encode_key(key), seq, "act", 0)):
                found.add(seq)
        return sorted(found)


@pytest.mark.timeout(60)
def test_checkpoint_with_runs_in_flight_prunes_only_completed(tmp_path: Path) -> None:
    gate, db = Gate(), tmp_path / "a.db"
    h = KeyedFunctionHarness(make(db, gate.agent(), max_in_flight=4))
    gate.open["done"].set()
    h.process_element("x", key="done")
    h.process_element("y", key="busy")  # stays in flight: its gate is closed
    deadline = time.monotonic() + 5
    while len(h.outputs) < 1 and time.monotonic() < deadline:
        h.advance_processing_time(h.processing_time + 5)
        time.sleep(0.005)
    assert h.outputs == ["done-0"]
    while seqs(db, "busy") != [0]:  # its durable call is recorded; the run still waits
        assert time.monotonic() < deadline, "the busy run's call was not recorded"
        time.sleep(0.005)
    next_seq, running, last_completed = h.state("fae-runs", "busy")[:3]
    assert (next_seq, running, last_completed) == (1, 0, None)
    snap = h.snapshot()
    h.notify_complete(snap.checkpoint_id)
    assert seqs(db, "done") == [], "the completed run is pruned"
    assert seqs(db, "busy") == [0], "the run in flight is never pruned"
    gate.open["busy"].set()
    h.run_until_idle()
    assert h.outputs == ["done-0", "busy-0"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("commit", ["each", "group"])
def test_restore_resumes_runs_in_flight_without_repeating_calls(tmp_path: Path,
                                                                commit: str) -> None:
    gate, db = Gate(), tmp_path / "a.db"
    h = KeyedFunctionHarness(make(db, gate.agent(), max_in_flight=4, commit=commit))
    h.process_element("a1", key="a")
    h.process_element("a2", key="a")  # queued behind a1, in keyed state
    h.process_element("b1", key="b")
    # Wait until both calls are recorded (not only executed): a call that ran but whose
    # record was not written yet would legitimately run again after the restore.
    deadline = time.monotonic() + 5
    while seqs(db, "a") != [0] or seqs(db, "b") != [0]:
        assert time.monotonic() < deadline, "the durable calls were not recorded"
        time.sleep(0.005)
    assert sorted(gate.executed) == [("a", 0), ("b", 0)]
    snap = h.snapshot()  # a1 and b1 in flight, a2 queued
    # Failover: a fresh instance restored from the snapshot. (The old instance's workers
    # stay parked on their gates, as a cancelled task's would.)
    fresh_gate = Gate()
    for key in ("a", "b"):
        fresh_gate.open[key].set()
    fresh_gate.executed = gate.executed  # one ledger across both instances
    h2 = h.restore(snap, make(db, fresh_gate.agent(), max_in_flight=4, commit=commit))
    out = h2.end_input()
    assert sorted(out) == ["a-0", "a-1", "b-0"]
    assert [o for o in out if o.startswith("a")] == ["a-0", "a-1"]
    # a1's and b1's durable calls were replayed from the journal, not executed again.
    assert sorted(gate.executed) == [("a", 0), ("a", 1), ("b", 0)]
    for event in gate.open.values():
        event.set()


@pytest.mark.timeout(60)
def test_async_actions_await_durable_calls_and_replay(tmp_path: Path) -> None:
    import asyncio

    calls: list[str] = []
    running = {"now": 0, "peak": 0}

    async def model(prompt: str) -> str:
        calls.append(prompt)
        running["now"] += 1
        running["peak"] = max(running["peak"], running["now"])
        await asyncio.sleep(0.05)
        running["now"] -= 1
        if prompt.startswith("bad"):
            raise ValueError(f"model refused {prompt}")
        return prompt.upper()

    agent = Agent("async")

    @agent.action(on=INPUT)
    async def ask(event: str, ctx: ActionContext) -> None:
        try:
            ctx.emit(await ctx.durable_execute_async(model, event))
        except ValueError as exc:
            ctx.emit(f"refused: {exc}")

    db = tmp_path / "a.db"
    inputs = [f"q{i}" for i in range(8)] + ["bad-1"]
    h = KeyedFunctionHarness(make(db, agent, max_in_flight=8))
    for i, text in enumerate(inputs):
        h.process_element(text, key=f"k{i}")
    out = sorted(h.end_input())
    assert out == sorted([t.upper() for t in inputs[:-1]] + ["refused: model refused bad-1"])
    assert running["peak"] > 1, "async calls of different keys did not overlap"
    # A fresh instance on the same store replays: no call runs again, the recorded
    # exception is raised again with its type and message.
    h2 = KeyedFunctionHarness(make(db, agent, max_in_flight=8))
    for i, text in enumerate(inputs):
        h2.process_element(text, key=f"k{i}")
    assert sorted(h2.end_input()) == out
    assert len(calls) == len(inputs)


@pytest.mark.timeout(60)
def test_runs_in_flight_hold_no_timer_per_key(tmp_path: Path) -> None:
    """Completions are pushed: a key with a run in flight holds no processing-time timer,
    only its end-of-input timer, which goes once the key is idle."""
    gate, db = Gate(), tmp_path / "a.db"
    h = KeyedFunctionHarness(make(db, gate.agent(), max_in_flight=64))
    keys = [f"k{i}" for i in range(50)]
    for key in keys:
        h.process_element("x", key=key)
    h.advance_processing_time(h.processing_time + 100)
    assert h._timers == set(), "a processing-time timer per key while runs execute"
    assert {(ts, k.key) for ts, k in h._event_timers} == {(RESUME_TIMER, k) for k in keys}
    assert h.work_outstanding
    for key in keys:
        gate.open[key].set()
    h.run_until_idle()
    assert sorted(h.outputs) == sorted(f"{k}-0" for k in keys)
    assert h._event_timers == set() and not h.work_outstanding


@pytest.mark.timeout(60)
def test_restore_resumes_runs_in_flight_before_end_of_input(tmp_path: Path) -> None:
    """After a restore the operator fires each key holding a resume timer (no end of input
    needed): the runs in flight at the checkpoint resume and complete."""
    gate, db = Gate(), tmp_path / "a.db"
    h = KeyedFunctionHarness(make(db, gate.agent(), max_in_flight=4))
    h.process_element("a1", key="a")
    h.process_element("a2", key="a")
    h.process_element("b1", key="b")
    snap = h.snapshot()
    fresh = Gate()
    for key in ("a", "b"):
        fresh.open[key].set()
    h2 = h.restore(snap, make(db, fresh.agent(), max_in_flight=4))
    assert sorted(h2.run_until_idle()) == ["a-0", "a-1", "b-0"]
    assert h2._event_timers == set()
    for event in gate.open.values():
        event.set()


@pytest.mark.timeout(60)
def test_async_runs_hold_no_thread_while_they_await(tmp_path: Path) -> None:
    import asyncio

    agent = Agent("async-many")
    release = threading.Event()

    @agent.action(on=INPUT)
    async def ask(event: int, ctx: ActionContext) -> None:
        while not release.is_set():
            await asyncio.sleep(0.01)
        ctx.emit(event)

    h = KeyedFunctionHarness(make(tmp_path / "a.db", agent, max_in_flight=300))
    before = threading.active_count()
    for i in range(300):
        h.process_element(i, key=f"k{i}")
    assert h.function.runs.executor.in_flight == 300  # type: ignore[attr-defined]
    assert threading.active_count() - before <= 2, "a thread per awaiting run"
    release.set()
    h.run_until_idle()
    assert sorted(h.outputs) == list(range(300))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["thread", "process"])
def test_end_of_input_starts_every_keys_next_run_before_waiting(tmp_path: Path,
                                                                 mode: str) -> None:
    """At the end of a bounded input, the queued runs of different keys overlap: the
    thread-mode operator, or in process mode the bridge at the first key's resume timer,
    drains the work and each completion starts its key's next run at once; they ran one key
    after another before (peak 1)."""
    gauge = Gauge()
    h = KeyedFunctionHarness(make(tmp_path / "a.db", slow_agent(gauge, 0.2), max_in_flight=8),
                             mode=mode)
    keys = [f"k{i}" for i in range(4)]
    for round_ in range(3):
        for key in keys:
            h.process_element([key, round_], key=key)
    deadline = time.monotonic() + 10
    while len(gauge.calls) < 4 or gauge.now:  # every key's first run finished
        assert time.monotonic() < deadline, "the first runs did not finish"
        time.sleep(0.005)
    gauge.peak = 0
    with gauge.lock:
        gauge.calls.clear()
    h.end_input()
    assert sorted((o["key"], o["item"][1]) for o in h.outputs) == sorted(
        (k, r) for k in keys for r in range(3))
    assert not h.work_outstanding and h._event_timers == set()
    # The queued runs (rounds 1 and 2) were started by the end of input.
    assert len(gauge.calls) >= 8
    assert gauge.peak >= 2, "queued runs of different keys ran one after another"


@pytest.mark.timeout(60)
def test_restore_switches_between_inline_and_concurrent_runs(tmp_path: Path) -> None:
    """A key continues at its sequence (and memory) when state of one run mode is restored
    into the other; a key with runs queued cannot go back to inline runs (a clear error)."""
    from flink_agents_ext.errors import NotRecoverableError

    gauge, db = Gauge(), tmp_path / "a.db"
    h = KeyedFunctionHarness(make(db, slow_agent(gauge, 0.0), max_in_flight=0))
    h.process_element(["k", 0], key="k")
    h2 = h.restore(h.snapshot(), make(db, slow_agent(gauge, 0.0), max_in_flight=2))
    h2.process_element(["k", 1], key="k")
    h2.run_until_idle()
    h3 = h2.restore(h2.snapshot(), make(db, slow_agent(gauge, 0.0), max_in_flight=0))
    h3.process_element(["k", 2], key="k")
    assert [(o["seq"], o["n"]) for o in [*h.outputs, *h2.outputs, *h3.outputs]] == [
        (0, 1), (1, 2), (2, 3)]
    gate = Gate()
    h4 = KeyedFunctionHarness(make(tmp_path / "b.db", gate.agent(), max_in_flight=2))
    h4.process_element("x", key="busy")
    h5 = h4.restore(h4.snapshot(), make(tmp_path / "b.db", gate.agent(), max_in_flight=0))
    with pytest.raises(NotRecoverableError, match="max_in_flight > 0"):
        h5.process_element("y", key="busy")
    for event in gate.open.values():
        event.set()
    h4.close()
