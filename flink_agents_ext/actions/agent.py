"""Declaring an agent: named actions that react to event types."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional

from flink_agents_ext.errors import FlinkAgentsExtError

if TYPE_CHECKING:
    from flink_agents_ext.actions.context import ActionContext

#: The event type of a run's input record.
INPUT = "input"

#: An action: ``fn(event_payload, ctx)``, or an ``async def`` one (awaited on a shared
#: event loop; its durable calls can be awaited with ``ctx.durable_execute_async``).
ActionFn = Callable[[Any, "ActionContext"], Any]


class AgentDefinitionError(FlinkAgentsExtError, ValueError):
    """An agent is declared wrongly (duplicate action name, bad event type...)."""


class Event(NamedTuple):
    """An event inside a run: the input (type :data:`INPUT`) or one an action sent."""

    type: str
    payload: Any


@dataclass(frozen=True)
class Action:
    """A named action and the event types that trigger it."""

    name: str
    on: tuple[str, ...]
    fn: ActionFn
    #: ``async def``: awaited on the shared event loop.
    is_async: bool = False


class Agent:
    """A set of named actions; each reacts to one or more event types.

    Example::

        agent = Agent("triage")

        @agent.action(on=INPUT)
        def classify(ticket, ctx):
            label = ctx.durable_execute(call_model, ticket["text"])
            ctx.send("classified", {"label": label})

        @agent.action(on="classified")
        def reply(event, ctx):
            ctx.emit({"label": event["label"]})

    Actions run in the order they were declared when several react to one event. A run is
    everything one input triggers: the input event, then every event its actions send, in
    the order they were sent.
    """

    def __init__(self, name: str) -> None:
        if not name or not isinstance(name, str):
            raise AgentDefinitionError("an agent needs a non-empty name")
        self.name = name
        self._actions: dict[str, Action] = {}
        self._by_event: dict[str, list[Action]] = {}

    def add_action(self, fn: ActionFn, on: str | tuple[str, ...] | list[str] = INPUT,
                   name: Optional[str] = None) -> Action:
        """Register ``fn(event_payload, ctx)`` under ``name`` (default: its ``__name__``).

        ``fn`` may be ``async def``: it is awaited on a shared event loop, so that it can
        ``await ctx.durable_execute_async(...)`` calls of async clients.

        The name is part of every record's identity: renaming an action makes its old
        records unreachable, so keep names stable across deployments.
        """
        action_name = name or getattr(fn, "__name__", None)
        if not action_name or not isinstance(action_name, str):
            raise AgentDefinitionError("an action needs a name")
        if action_name in self._actions:
            raise AgentDefinitionError(f"action {action_name!r} is declared twice")
        if not callable(fn):
            raise AgentDefinitionError(f"action {action_name!r} is not callable")
        events = (on,) if isinstance(on, str) else tuple(on)
        if not events or not all(isinstance(e, str) and e for e in events):
            raise AgentDefinitionError(f"action {action_name!r}: 'on' must name event types")
        action = Action(action_name, events, fn, inspect.iscoroutinefunction(fn))
        self._actions[action_name] = action
        for event_type in events:
            self._by_event.setdefault(event_type, []).append(action)
        return action

    def action(self, on: str | tuple[str, ...] | list[str] = INPUT,
               name: Optional[str] = None) -> Callable[[ActionFn], ActionFn]:
        """Decorator form of :meth:`add_action`."""

        def register(fn: ActionFn) -> ActionFn:
            self.add_action(fn, on=on, name=name)
            return fn

        return register

    def actions_for(self, event_type: str) -> list[Action]:
        """The actions triggered by ``event_type``, in declaration order."""
        return self._by_event.get(event_type, [])

    @property
    def actions(self) -> list[Action]:
        """Every action, in declaration order."""
        return list(self._actions.values())

    @property
    def is_async(self) -> bool:
        """Whether every action is ``async def``: a run with runs in flight then executes on
        the subtask's event loop, holding no thread while it awaits."""
        return bool(self._actions) and all(a.is_async for a in self._actions.values())

    def validate(self) -> None:
        """Check the agent can run: at least one action reacts to the input."""
        if not self._by_event.get(INPUT):
            raise AgentDefinitionError(
                f"agent {self.name!r} has no action for the input (on={INPUT!r})")
