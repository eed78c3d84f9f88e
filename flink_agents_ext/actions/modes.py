"""How a key's runs are sequenced: the run modes of :class:`DurableAgentFunction`.

One interface, :class:`RunMode`, and one class per mode, each owning its keyed state and so
the invariants between a key's *started* and *last completed* sequences:

* :class:`InlineRuns` (``max_in_flight=0``): a run executes within ``process_element``;
* :class:`~flink_agents_ext.actions.concurrent.ConcurrentRuns` (``max_in_flight > 0``):
  runs execute off the task thread and are applied on it when they finish.

What both need from the function (the agent, the store, the counters, dead letters) is a
:class:`RunEnv`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any, Callable, Iterator, Optional

from pyflink.common import Types
from pyflink.datastream.state import ValueStateDescriptor

from flink_agents_ext.actions.agent import Agent
from flink_agents_ext.actions.metrics import RunMetrics
from flink_agents_ext.actions.runner import (
    ActionFailed,
    RunResult,
    execute_run,
    execute_run_async,
)
from flink_agents_ext.errors import NotRecoverableError
from flink_agents_ext.serde import Serializer
from flink_agents_ext.store import ActionStateStore

#: Builds a dead-letter record: ``(key, seq, input, action, reason) -> (tag, json)``.
DeadLetter = Callable[[Any, Optional[int], Any, Optional[str], str], Any]

#: Keyed state of :class:`InlineRuns`: the sequence of the key's next input.
NEXT_SEQ_STATE = "fae-next-seq"
#: Keyed state of :class:`~flink_agents_ext.actions.concurrent.ConcurrentRuns`: the key's
#: sequences and run in flight, one tuple.
RUNS_STATE = "fae-runs"


class RunEnv:
    """What every run mode shares: executing a run against the store, applying its
    outcome (memory, counters, outputs, dead letters).

    Args:
        dead_letter: builds the dead-letter record of a failed run (and counts it).
    """

    def __init__(self, agent: Agent, store: ActionStateStore, serializer: Serializer,
                 namespace: str, max_actions: int, on_action_error: str,
                 metrics: RunMetrics, dead_letter: DeadLetter) -> None:
        self.agent = agent
        self.store = store
        self.serializer = serializer
        self.namespace = namespace
        self.max_actions = max_actions
        self.on_action_error = on_action_error
        self.metrics = metrics
        self.dead_letter = dead_letter
        # Runs that may have records (from an earlier attempt): only these read the store
        # before running. Small: everything a completed checkpoint covered is pruned.
        self._recorded = store.recorded_runs(namespace)

    def reload_recorded(self) -> None:
        """Read the recorded runs again (after the lineage rules removed records)."""
        self._recorded = self.store.recorded_runs(self.namespace)

    def execute(self, key: Any, key_enc: str, seq: int, value: Any,
                memory: dict[str, Any] | Callable[[], dict[str, Any]]) -> RunResult:
        """Execute (or replay) run ``seq`` of ``key``; any thread.

        Raises:
            ActionFailed: see :func:`execute_run`.
        """
        return execute_run(self.agent, self.store, self.serializer, self.namespace, key,
                           key_enc, seq, value, memory, self.max_actions,
                           self._maybe_recorded(key_enc, seq))

    async def execute_async(self, key: Any, key_enc: str, seq: int, value: Any,
                            memory: dict[str, Any]) -> RunResult:
        """:meth:`execute` as a coroutine, for an agent whose actions are all ``async def``.

        Raises:
            ActionFailed: see :func:`execute_run`.
        """
        return await execute_run_async(self.agent, self.store, self.serializer,
                                       self.namespace, key, key_enc, seq, value, memory,
                                       self.max_actions, self._maybe_recorded(key_enc, seq))

    def _maybe_recorded(self, key_enc: str, seq: int) -> bool:
        if not self._recorded:
            return False
        try:
            self._recorded.remove((key_enc, seq))
        except KeyError:
            return False
        return True

    def outcome(self, run: Callable[[], RunResult]) -> tuple[RunResult, Optional[ActionFailed]]:
        """``run()``'s result; a failed run gives its partial result and the failure, or
        fails the task (``on_action_error="fail"``, or any other exception)."""
        try:
            return run(), None
        except ActionFailed as exc:
            if self.on_action_error == "fail":
                raise
            return exc.result, exc


class _NotKept(dict[str, int]):
    """Completed keys that nobody takes (a job without checkpointing): dropped."""

    def __setitem__(self, key: str, value: int) -> None:
        return None


class RunMode(ABC):
    """Sequences the runs of each key and keeps the keyed state that says which of them
    completed. Everything runs on the task thread with the run's key current, unless said
    otherwise.

    Keyed state every mode has: ``fae-memory`` (the key's memory, JSON); the sequences are
    the mode's own. Besides, in memory, the keys whose runs completed since the last
    :meth:`take_completed` (each with its last completed sequence): what the next snapshot
    marks for pruning, without a call into Flink per key.
    """

    def __init__(self, env: RunEnv, runtime_context: Any) -> None:
        self.env = env
        self.memory_state = runtime_context.get_state(
            ValueStateDescriptor("fae-memory", Types.STRING()))
        self.completed: dict[str, int] = {}

    def stop_keeping_completed(self) -> None:
        """The job has no checkpointing: no snapshot will take the completed keys, so they
        are not kept (they would grow by one entry per key)."""
        self.completed = _NotKept()

    def take_completed(self) -> dict[str, int]:
        """``{encoded key: last completed sequence}`` of the keys whose runs completed (were
        recorded as completed in the mode's keyed state) since the last call; forgets them."""
        completed, self.completed = self.completed, {}
        return completed

    @abstractmethod
    def process_element(self, key: Any, key_enc: str, value: Any,
                        ctx: Any) -> Iterator[Any]:
        """Run (or start, or queue) the run of ``value``; yield what is emitted now."""

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        """A timer of the current key fired; yield what is emitted."""
        return iter(())

    def runs_in_flight(self) -> list[tuple[str, int]]:
        """``(encoded key, sequence)`` of the runs started and not yet applied."""
        return []

    def close(self, timeout_s: float) -> None:
        """Release what the mode holds, waiting up to ``timeout_s`` for runs executing."""
        return None

    def memory(self) -> dict[str, Any]:
        """The current key's memory."""
        raw = self.memory_state.value()
        return json.loads(raw) if raw else {}

    def apply(self, key: Any, seq: int, value: Any, result: RunResult,
              failure: Optional[ActionFailed]) -> Iterator[Any]:
        """Apply a finished run (a dead-lettered one too) in its key's context: count it,
        write the memory, yield its outputs and, for a failure, the dead letter. The caller
        records the completion in its sequence state."""
        self.env.metrics.account(result)
        if result.memory_changed:
            self.memory_state.update(json.dumps(result.memory, sort_keys=True))
        yield from result.outputs
        if failure is not None:
            yield self.env.dead_letter(key, seq, value, failure.action, failure.reason)


class InlineRuns(RunMode):
    """``max_in_flight=0``: each run executes within its ``process_element``.

    Keyed state, besides the memory: ``fae-next-seq``, the sequence the key's next input
    gets (0 for its first); it advances when the run finished, so the last completed
    sequence is ``fae-next-seq - 1``; a run that raises fails the task and does not advance
    it. A key first seen by this mode after a restore of state written with
    ``max_in_flight > 0`` continues at that state's next sequence.
    """

    def __init__(self, env: RunEnv, runtime_context: Any) -> None:
        super().__init__(env, runtime_context)
        self.next_seq = runtime_context.get_state(
            ValueStateDescriptor(NEXT_SEQ_STATE, Types.LONG()))
        # The concurrent mode's state, read only for a key this mode has not seen.
        self.concurrent_runs = runtime_context.get_state(
            ValueStateDescriptor(RUNS_STATE, Types.PICKLED_BYTE_ARRAY()))

    def _next_seq(self, key: Any) -> int:
        seq: Optional[int] = self.next_seq.value()
        if seq is not None:
            return seq
        runs = self.concurrent_runs.value()
        if runs is None:
            return 0
        if runs[1] is not None:
            raise NotRecoverableError(
                f"key {key!r} has runs in flight or queued in state written with "
                f"max_in_flight > 0; restore this state with max_in_flight > 0 (they would "
                f"never run with max_in_flight=0)")
        self.concurrent_runs.clear()  # from now on fae-next-seq holds it
        return int(runs[0])

    def process_element(self, key: Any, key_enc: str, value: Any,
                        ctx: Any) -> Iterator[Any]:
        """Execute the run now; yield its outputs."""
        seq = self._next_seq(key)
        # The memory is read from keyed state only if an action uses it.
        result, failure = self.env.outcome(
            lambda: self.env.execute(key, key_enc, seq, value, self.memory))
        self.next_seq.update(seq + 1)
        self.completed[key_enc] = seq
        yield from self.apply(key, seq, value, result, failure)
