"""Executing one run: everything one input triggers, replaying what the store recorded.

Pure logic over an :class:`ActionStateStore`: no Flink. The Flink function
(:mod:`flink_agents_ext.actions.function`) and the test harness both call
:func:`execute_run`.
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from flink_agents_ext.actions.agent import INPUT, Agent, Event
from flink_agents_ext.actions.context import (
    ActionContext,
    CallStats,
    Memory,
    apply_memory_updates,
)
from flink_agents_ext.actions.executor import run_coroutine
from flink_agents_ext.errors import FlinkAgentsExtError
from flink_agents_ext.serde import SerializationError, Serializer
from flink_agents_ext.store.base import ActionRecord, ActionStateStore, RecordId

_log = logging.getLogger(__name__)

#: Default bound on actions per run, against event loops between actions.
DEFAULT_MAX_ACTIONS_PER_RUN = 1000


class RetryableActionError(FlinkAgentsExtError):
    """Raise it (or a subclass) from an action for a transient failure: the task fails and
    Flink restarts it from the last checkpoint, replaying the run (durable calls already
    recorded are not repeated), whatever ``on_action_error`` says."""


class ActionFailed(FlinkAgentsExtError):
    """An action of a run failed; the run stops there.

    Attributes:
        action: the failing action's name (or ``None`` for a run-level problem).
        reason: a one-line description for the dead-letter output.
        result: what the run did until the failure (its completed actions stay recorded).
    """

    def __init__(self, action: str | None, reason: str, result: RunResult) -> None:
        super().__init__(f"action {action}: {reason}" if action else reason)
        self.action = action
        self.reason = reason
        self.result = result


@dataclass
class RunResult:
    """What a run produced, in order, and how much of it was replayed."""

    seq: int
    outputs: list[Any] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)
    memory_changed: bool = False
    actions_run: int = 0
    actions_replayed: int = 0
    calls: CallStats = field(default_factory=CallStats)


def execute_run(agent: Agent, store: ActionStateStore, serializer: Serializer, namespace: str,
                key: Any, key_enc: str, seq: int, value: Any, memory: dict[str, Any],
                max_actions: int = DEFAULT_MAX_ACTIONS_PER_RUN,
                maybe_recorded: bool = True) -> RunResult:
    """Run (or replay) run ``seq`` of ``key`` for input ``value``.

    Completed actions found in the store are not run again: their recorded outputs and
    events are re-emitted and their memory updates re-applied. Other actions run, and each
    is recorded as completed before its effects are applied.

    Args:
        memory: the key's memory before the run (not modified; see ``RunResult.memory``).
        maybe_recorded: ``False`` when the caller knows the store has no record of this run
            (see :meth:`ActionStateStore.recorded_runs`): the store is then not read.

    Raises:
        ActionFailed: an action raised, or its effects could not be recorded, or an event
            had no action, or the run exceeded ``max_actions``.
    """
    result = RunResult(seq=seq, memory=dict(memory))
    recorded = ({(r.id.action, r.id.occurrence): r
                 for r in store.get_run(namespace, key_enc, seq)} if maybe_recorded else {})
    occurrences: Counter[str] = Counter()
    queue: deque[Event] = deque([Event(INPUT, value)])
    executed = 0
    while queue:
        event = queue.popleft()
        actions = agent.actions_for(event.type)
        if not actions:
            raise ActionFailed(None, f"no action reacts to event type {event.type!r}", result)
        for action in actions:
            executed += 1
            if executed > max_actions:
                raise ActionFailed(action.name, f"run exceeded {max_actions} actions "
                                   f"(an event loop between actions?)", result)
            occurrence = occurrences[action.name]
            occurrences[action.name] += 1
            record_id = RecordId(namespace, key_enc, seq, action.name, occurrence)
            record = recorded.get((action.name, occurrence))
            if record is not None and record.completed:
                outputs = serializer.loads(record.outputs)
                events = serializer.loads(record.events)
                updates = serializer.loads(record.memory_updates)
                result.actions_replayed += 1
            else:
                outputs, events, updates = _run_action(
                    action.name, action.fn, event, key, record_id, result, store, serializer,
                    maybe_recorded)
                result.actions_run += 1
            result.outputs.extend(outputs)
            queue.extend(Event(t, p) for t, p in events)
            if apply_memory_updates(result.memory, updates):
                result.memory_changed = True
    return result


def _run_action(name: str, fn: Any, event: Event, key: Any, record_id: RecordId,
                result: RunResult, store: ActionStateStore, serializer: Serializer,
                maybe_recorded: bool) -> tuple[list[Any], list[tuple[str, Any]], dict]:
    journal = store.get_calls(record_id) if maybe_recorded else []
    view = Memory(result.memory)
    ctx = ActionContext(key, record_id, event.type, view, store, serializer, journal,
                        result.calls)
    try:
        if inspect.iscoroutinefunction(fn):
            run_coroutine(fn(event.payload, ctx))
        else:
            fn(event.payload, ctx)
    except RetryableActionError:
        raise
    except Exception as exc:
        raise ActionFailed(name, f"{type(exc).__name__}: {exc}", result) from exc
    updates = view.updates()
    events = [[t, p] for t, p in ctx.events]
    try:
        record = ActionRecord(
            record_id,
            event=serializer.dumps(event.payload),
            outputs=serializer.dumps(ctx.outputs),
            events=serializer.dumps(events),
            memory_updates=serializer.dumps(updates),
            completed=True,
        )
    except SerializationError as exc:
        raise ActionFailed(name, f"cannot record the action's effects: {exc}", result) from exc
    store.put_action(record)
    # Apply what was recorded, exactly as a replay would (e.g. tuples become lists).
    return (serializer.loads(record.outputs),
            [(t, p) for t, p in serializer.loads(record.events)],
            serializer.loads(record.memory_updates))
