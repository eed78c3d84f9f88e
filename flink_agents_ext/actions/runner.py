"""Executing one run: everything one input triggers, replaying what the store recorded.

Pure logic over an :class:`ActionStateStore`: no Flink. The Flink function
(:mod:`flink_agents_ext.actions.function`) and the test harness both call
:func:`execute_run`.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, NamedTuple, Optional

from flink_agents_ext.actions.agent import INPUT, Action, Agent, Event
from flink_agents_ext.actions.context import (
    ActionContext,
    CallStats,
    Memory,
    apply_memory_updates,
)
from flink_agents_ext.actions.executor import run_coroutine
from flink_agents_ext.errors import FlinkAgentsExtError
from flink_agents_ext.serde import JsonSerializer, SerializationError, Serializer
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

    What the run's *completed* actions did stays: their outputs (in ``result.outputs``),
    their memory updates (in ``result.memory``), their records and durable calls in the
    store. The failing action's own emits, sent events and memory changes are discarded
    (its durable calls stay journaled).

    Attributes:
        action: the failing action's name (or ``None`` for a run-level problem).
        reason: a one-line description for the dead-letter output.
        result: what the run's completed actions did until the failure.
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
    #: Recorded actions not replayed because their recorded triggering event differs.
    input_mismatches: int = 0
    calls: CallStats = field(default_factory=CallStats)


class _Invoke(NamedTuple):
    """One action invocation the driver performs: ``action.fn(payload, ctx)``."""

    action: Action
    payload: Any
    ctx: ActionContext


#: A run's steps: yields the invocations, gets each one's outcome (``None``, or its
#: exception thrown in), returns the run's result.
_Steps = Generator[_Invoke, None, RunResult]


def execute_run(agent: Agent, store: ActionStateStore, serializer: Serializer, namespace: str,
                key: Any, key_enc: str, seq: int, value: Any,
                memory: dict[str, Any] | Callable[[], dict[str, Any]],
                max_actions: int = DEFAULT_MAX_ACTIONS_PER_RUN,
                maybe_recorded: bool = True) -> RunResult:
    """Run (or replay) run ``seq`` of ``key`` for input ``value``, on this thread
    (``async def`` actions on the shared event loop, this thread waiting).

    Completed actions found in the store are not run again: their recorded outputs and
    events are re-emitted and their memory updates re-applied. Other actions run, and each
    is recorded as completed before its effects are applied. A record (or journal) is used
    only if its recorded triggering event equals the action's event now: a different input
    under the same key and sequence (a source that does not replay the same records) is
    logged, counted (``RunResult.input_mismatches``) and run afresh, and its records
    replace the old ones. When an action fails, the
    :class:`ActionFailed` carries what the completed actions before it did (see there).

    Args:
        memory: the key's memory before the run (not modified; see ``RunResult.memory``),
            or a function returning it, called only if an action uses the memory.
        maybe_recorded: ``False`` when the caller knows the store has no record of this run
            (see :meth:`ActionStateStore.recorded_runs`): the store is then not read.

    Raises:
        ActionFailed: an action raised, or its effects could not be recorded, or an event
            had no action, or the run exceeded ``max_actions``.
    """
    steps = _run_steps(agent, store, serializer, namespace, key, key_enc, seq, value, memory,
                       max_actions, maybe_recorded)
    step = _advance(steps, None)
    while isinstance(step, _Invoke):
        step = _advance(steps, _invoke(step))
    return step


async def execute_run_async(agent: Agent, store: ActionStateStore, serializer: Serializer,
                            namespace: str, key: Any, key_enc: str, seq: int, value: Any,
                            memory: dict[str, Any] | Callable[[], dict[str, Any]],
                            max_actions: int = DEFAULT_MAX_ACTIONS_PER_RUN,
                            maybe_recorded: bool = True) -> RunResult:
    """:func:`execute_run` as a coroutine, for an agent whose actions are all ``async def``
    (:attr:`Agent.is_async`): it holds no thread while its actions await. The store is
    called on the event loop's thread.

    Raises:
        ActionFailed: see :func:`execute_run`.
    """
    steps = _run_steps(agent, store, serializer, namespace, key, key_enc, seq, value, memory,
                       max_actions, maybe_recorded)
    step = _advance(steps, None)
    while isinstance(step, _Invoke):
        step = _advance(steps, await _invoke_async(step))
    return step


def _advance(steps: _Steps, error: Optional[Exception]) -> _Invoke | RunResult:
    """The run's next invocation, given the last one's exception (if any); or its result."""
    try:
        return steps.throw(error) if error is not None else steps.send(None)
    except StopIteration as stop:
        result: RunResult = stop.value
        return result


def _invoke(step: _Invoke) -> Optional[Exception]:
    """Perform ``step`` on this thread; its exception, if it raised one."""
    try:
        if step.action.is_async:
            run_coroutine(step.action.fn(step.payload, step.ctx))
        else:
            step.action.fn(step.payload, step.ctx)
    except Exception as exc:
        return exc
    return None


async def _invoke_async(step: _Invoke) -> Optional[Exception]:
    """Await the ``async def`` action of ``step``; its exception, if it raised one."""
    try:
        await step.action.fn(step.payload, step.ctx)
    except Exception as exc:
        return exc
    return None


def _run_steps(agent: Agent, store: ActionStateStore, serializer: Serializer, namespace: str,
               key: Any, key_enc: str, seq: int, value: Any,
               memory: dict[str, Any] | Callable[[], dict[str, Any]],
               max_actions: int, maybe_recorded: bool) -> _Steps:
    """The run, one yielded invocation per action that is not replayed."""
    result = RunResult(seq=seq)
    run_memory = _RunMemory(memory)
    recorded = ({(r.id.action, r.id.occurrence): r
                 for r in store.get_run(namespace, key_enc, seq)} if maybe_recorded else {})
    occurrences: dict[str, int] = {}
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
            occurrence = occurrences.get(action.name, 0)
            occurrences[action.name] = occurrence + 1
            record_id = RecordId(namespace, key_enc, seq, action.name, occurrence)
            record = recorded.get((action.name, occurrence))
            event_data: Optional[bytes] = None
            stale = False
            if record is not None:
                event_data = _event_data(serializer, event, action.name, result)
                if record.event != event_data:
                    _log.warning(
                        "run %d of key %s: action %s#%d was recorded for another triggering "
                        "event (the input differs from the one recorded under this key and "
                        "sequence); not replayed, it runs for the new event", seq, key_enc,
                        action.name, occurrence)
                    result.input_mismatches += 1
                    record, stale = None, True
            if record is not None and record.completed:
                outputs = serializer.loads(record.outputs)
                events = serializer.loads(record.events)
                updates = serializer.loads(record.memory_updates)
                result.actions_replayed += 1
            else:
                outputs, events, updates = yield from _run_action(
                    action, event, key, record_id, result, run_memory, store, serializer,
                    maybe_recorded and not stale, record is None, event_data, stale)
                result.actions_run += 1
            result.outputs.extend(outputs)
            if events:
                queue.extend(Event(t, p) for t, p in events)
            if (updates.get("set") or updates.get("unset")) and \
                    apply_memory_updates(run_memory.get(), updates):
                result.memory_changed = True
                # Current after every completed action: a later failure keeps it.
                result.memory = run_memory.get()
    if run_memory.loaded:
        result.memory = run_memory.get()
    return result


class _RunMemory:
    """The key's memory during a run, read from its source when first needed."""

    __slots__ = ("_data", "_source")

    def __init__(self, source: dict[str, Any] | Callable[[], dict[str, Any]]) -> None:
        self._source = source
        self._data: Optional[dict[str, Any]] = None

    @property
    def loaded(self) -> bool:
        return self._data is not None

    def get(self) -> dict[str, Any]:
        if self._data is None:
            source = self._source
            self._data = dict(source() if callable(source) else source)
        return self._data


_EMPTY_FORMS: dict[int, tuple[Serializer, bytes, bytes]] = {}


def _empty_forms(serializer: Serializer) -> tuple[bytes, bytes]:
    """``serializer``'s form of "no events" and "no memory updates", computed once."""
    entry = _EMPTY_FORMS.get(id(serializer))
    if entry is None or entry[0] is not serializer:
        if len(_EMPTY_FORMS) > 64:
            _EMPTY_FORMS.clear()
        entry = (serializer, serializer.dumps([]), serializer.dumps({"set": {}, "unset": []}))
        _EMPTY_FORMS[id(serializer)] = entry
    return entry[1], entry[2]


#: Values the JSON serializer round-trips unchanged: their recorded form need not be read
#: back before they are emitted.
_JSON_EXACT = frozenset({str, int, float, bool, type(None)})


def _event_data(serializer: Serializer, event: Event, action: str,
                result: RunResult) -> bytes:
    """The recorded form of ``event``'s payload."""
    try:
        return serializer.dumps(event.payload)
    except SerializationError as exc:
        raise ActionFailed(action, f"cannot record the effects of action {action}: the "
                                   f"{event.type!r} event it reacted to: {exc}",
                           result) from exc


def _run_action(action: Action, event: Event, key: Any, record_id: RecordId,
                result: RunResult, run_memory: _RunMemory, store: ActionStateStore,
                serializer: Serializer, maybe_recorded: bool, unrecorded: bool,
                event_data: Optional[bytes], stale: bool
                ) -> Generator[_Invoke, None, tuple[list[Any], list[tuple[str, Any]], dict]]:
    """Run one action (``unrecorded``: it has no record yet, so its first journal entry
    goes with a started record; ``stale``: its records are of another event: removed)."""
    name = action.name
    if stale:
        store.truncate_calls(record_id, 0)
    journal = store.get_calls(record_id) if maybe_recorded else []
    view = Memory(run_memory.get)
    empty_list, empty_updates = _empty_forms(serializer)
    if event_data is None:
        event_data = _event_data(serializer, event, name, result)
    started = (ActionRecord(record_id, event_data, empty_list, empty_list, empty_updates, False)
               if unrecorded else None)
    ctx = ActionContext(key, record_id, event.type, view, store, serializer, journal,
                        result.calls, started)
    try:
        yield _Invoke(action, event.payload, ctx)
    except RetryableActionError:
        raise
    except Exception as exc:
        raise ActionFailed(name, f"{type(exc).__name__}: {exc}", result) from exc
    updates = view.updates()
    sent = ctx.events
    no_updates = not updates["set"] and not updates["unset"]
    try:
        record = ActionRecord(
            record_id,
            event_data,
            serializer.dumps(ctx.outputs),
            serializer.dumps([[t, p] for t, p in sent]) if sent else empty_list,
            empty_updates if no_updates else serializer.dumps(updates),
            True,
        )
    except SerializationError as exc:
        where, cause = _unrecordable(serializer, event, ctx.outputs, sent, updates, exc)
        raise ActionFailed(name, f"cannot record the effects of action {name}: {where}: "
                                 f"{cause}", result) from exc
    store.put_action(record)
    # Apply what was recorded, exactly as a replay would (e.g. tuples become lists); what
    # the recording cannot have changed is not read back.
    json_exact = type(serializer) is JsonSerializer
    if json_exact and all(type(o) in _JSON_EXACT for o in ctx.outputs):
        outputs = ctx.outputs
    else:
        outputs = serializer.loads(record.outputs)
    events = [(t, p) for t, p in serializer.loads(record.events)] if sent else []
    if no_updates:
        return outputs, events, updates
    return outputs, events, serializer.loads(record.memory_updates)


def _unrecordable(serializer: Serializer, event: Event, outputs: list[Any],
                  sent: list[tuple[str, Any]], updates: dict[str, Any],
                  error: SerializationError) -> tuple[str, SerializationError]:
    """Which of an action's values the serializer refused (the user's value, not the list
    holding it), and why."""
    candidates: list[tuple[str, Any]] = [(f"the {event.type!r} event it reacted to",
                                          event.payload)]
    candidates += [(f"the value of ctx.emit() #{i + 1}", o) for i, o in enumerate(outputs)]
    candidates += [(f"the payload of ctx.send({t!r})", p) for t, p in sent]
    candidates += [(f"ctx.memory[{n!r}]", v) for n, v in updates["set"].items()]
    for where, value in candidates:
        try:
            serializer.dumps(value)
        except SerializationError as exc:
            return where, exc
    return "its effects", error
