"""Durable actions: agents whose actions run at most once per key and input.

* :mod:`.agent`: :class:`Agent`, :data:`INPUT`: declaring actions.
* :mod:`.context`: :class:`ActionContext`: what an action sees, durable calls.
* :mod:`.runner`: :func:`execute_run`: running/replaying one run (pure logic).
* :mod:`.function`: :class:`DurableAgentFunction`: the Flink keyed function.
"""

from flink_agents_ext.actions.agent import INPUT, Action, Agent, AgentDefinitionError, Event
from flink_agents_ext.actions.context import (
    ActionContext,
    Memory,
    ReplayedCallError,
    durable_name,
)
from flink_agents_ext.actions.function import DEAD_LETTER_TAG, DurableAgentFunction
from flink_agents_ext.actions.runner import (
    ActionFailed,
    RetryableActionError,
    RunResult,
    execute_run,
)
from flink_agents_ext.errors import RestoreBoundaryError

__all__ = [
    "DEAD_LETTER_TAG",
    "INPUT",
    "Action",
    "ActionContext",
    "ActionFailed",
    "Agent",
    "AgentDefinitionError",
    "DurableAgentFunction",
    "Event",
    "Memory",
    "ReplayedCallError",
    "RestoreBoundaryError",
    "RetryableActionError",
    "RunResult",
    "durable_name",
    "execute_run",
]
