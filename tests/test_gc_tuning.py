"""The garbage collector's thresholds while durable functions with runs in flight are open:
raised per generation, shared by every function of the interpreter, put back by the last."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any, Iterator

import pytest

from flink_agents_ext.actions import INPUT, ActionContext, Agent, DurableAgentFunction, gc_tuning
from flink_agents_ext.actions.gc_tuning import (
    DEFAULT_GC_THRESHOLD,
    check_gc_threshold,
    raise_threshold,
    release,
)
from flink_agents_ext.testing import KeyedFunctionHarness


@pytest.fixture(autouse=True)
def known_thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    # Holders left by other tests of this process (functions never closed) do not count.
    gc_tuning._holders.clear()
    yield
    gc_tuning._holders.clear()
    gc.set_threshold(*before)


def test_raised_per_generation_and_put_back_by_the_last_holder() -> None:
    a, b = object(), object()
    gc.set_threshold(700, 30, 10)
    raise_threshold(a, (50_000, 20, 100))
    assert gc.get_threshold() == (50_000, 30, 100)  # never lowered: generation 1 keeps 30
    raise_threshold(b, (80_000, 5, 5))
    assert gc.get_threshold() == (80_000, 30, 100)
    release(b)
    assert gc.get_threshold() == (50_000, 30, 100)  # a still holds its own
    release(a)
    assert gc.get_threshold() == (700, 30, 10)
    release(a)  # twice: nothing
    assert gc.get_threshold() == (700, 30, 10)


def test_thresholds_someone_else_set_meanwhile_are_left_alone() -> None:
    a = object()
    raise_threshold(a, DEFAULT_GC_THRESHOLD)
    gc.set_threshold(1234, 5, 6)
    release(a)
    assert gc.get_threshold() == (1234, 5, 6)
    # and the next holder raises from those
    raise_threshold(a, (2000, 1, 1))
    assert gc.get_threshold() == (2000, 5, 6)
    release(a)
    assert gc.get_threshold() == (1234, 5, 6)


@pytest.mark.parametrize("bad", [(1, 2), (0, 1, 1), (1.5, 1, 1), "50000,20,100", (True, 1, 1)])
def test_bad_thresholds_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="gc_threshold"):
        check_gc_threshold(bad)
    assert check_gc_threshold(None) is None
    assert check_gc_threshold([5, 6, 7]) == (5, 6, 7)


def _agent() -> Agent:
    agent = Agent("gc")

    @agent.action(on=INPUT)
    def act(event: Any, ctx: ActionContext) -> None:
        ctx.emit(ctx.durable_execute(str, event))

    return agent


def _function(tmp_path: Path, **kwargs: Any) -> DurableAgentFunction:
    return DurableAgentFunction(_agent(), {"backend": "sqlite", "path": str(tmp_path / "a.db")},
                                "gc", **kwargs)


def test_a_function_with_runs_in_flight_raises_them_while_open(tmp_path: Path) -> None:
    h = KeyedFunctionHarness(_function(tmp_path, max_in_flight=4))
    assert gc.get_threshold() == DEFAULT_GC_THRESHOLD
    h.process_element("one", key="k")
    h.end_input()
    assert h.outputs == ["one"]
    h.close()
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.parametrize("kwargs", [{}, {"max_in_flight": 4, "gc_threshold": None}],
                         ids=["inline", "gc_threshold=None"])
def test_inline_or_none_leaves_the_collector_alone(tmp_path: Path, kwargs: dict) -> None:
    h = KeyedFunctionHarness(_function(tmp_path, **kwargs))
    h.process_element("one", key="k")
    h.end_input()
    assert gc.get_threshold() == (700, 10, 10)
    h.close()


def test_the_function_checks_the_setting_where_it_is_built(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="gc_threshold"):
        _function(tmp_path, max_in_flight=4, gc_threshold=(0, 0, 0))
