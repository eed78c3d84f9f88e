"""The benchmark agent on Apache Flink Agents 0.3.1 (the anchor): imported by the anchor's
embedded Python (pemja) by module and name, so it lives in a module of its own.

The same agent as ours (``bench/anchor/ours_job.py``): one action on the input ``(key, i)``,
one durable call, one output ``(i, result)``. The run's settings come from the environment
(the action is a static method the runtime imports): ``FAE_ANCHOR_PROBE`` (the probe file),
``FAE_ANCHOR_FAIL_AT`` (raise once on that input), ``FAE_ANCHOR_CALL_S`` (the slow call's
seconds). Runs only in the anchor's virtual environment.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from flink_agents.api.agents.agent import Agent
from flink_agents.api.decorators import action
from flink_agents.api.events.event import Event, InputEvent, OutputEvent
from flink_agents.api.runner_context import RunnerContext

from bench.anchor.probe import FailOnce, mark_input

PROBE = os.environ.get("FAE_ANCHOR_PROBE", "")
FAIL = FailOnce(PROBE, int(os.environ.get("FAE_ANCHOR_FAIL_AT", "0")))
CALL_S = float(os.environ.get("FAE_ANCHOR_CALL_S", "1.0"))


def trivial_call(i: int) -> str:
    """The trivial durable call: a SHA-256 of the input (ours is the same)."""
    return hashlib.sha256(f"ticket-{i}".encode()).hexdigest()[:16]


def slow_call(i: int, seconds: float) -> str:
    """The simulated slow call: sleeps ``seconds`` (ours is the same)."""
    time.sleep(seconds)
    return f"answer-{i}"


def _input(event: Event) -> Any:
    mark_input(PROBE)
    value = InputEvent.from_event(event).input
    FAIL.check(value[1])
    return value


class TrivialAgent(Agent):
    """One action, one durable call of trivial work (``durable_execute``)."""

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    def act(event: Event, ctx: RunnerContext) -> None:
        """Hash the input as a durable call; emit ``(i, hash)``."""
        i = _input(event)[1]
        result = ctx.durable_execute(trivial_call, i)
        ctx.send_event(OutputEvent(output=(i, result)))


class SlowAgent(Agent):
    """One action, one simulated slow call (``durable_execute_async`` on the runtime's
    thread pool, ``num-async-threads`` threads)."""

    @action(InputEvent.EVENT_TYPE)
    @staticmethod
    async def act(event: Event, ctx: RunnerContext) -> None:
        """Sleep ``CALL_S`` as a durable asynchronous call; emit ``(i, answer)``."""
        i = _input(event)[1]
        result = await ctx.durable_execute_async(slow_call, i, CALL_S)
        ctx.send_event(OutputEvent(output=(i, result)))
