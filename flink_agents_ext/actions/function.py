"""The Flink side of durable actions: a checkpointed keyed function that runs an agent."""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

from pyflink.datastream import OutputTag

from flink_agents_ext.actions.agent import Agent
from flink_agents_ext.actions.concurrent import ConcurrentRuns
from flink_agents_ext.actions.dead_letters import DEAD_LETTER_TAG, dead_letter
from flink_agents_ext.actions.gc_tuning import (
    DEFAULT_GC_THRESHOLD,
    check_gc_threshold,
    raise_threshold,
    release,
)
from flink_agents_ext.actions.metrics import RunMetrics
from flink_agents_ext.actions.modes import InlineRuns, RunEnv, RunMode
from flink_agents_ext.actions.runner import DEFAULT_MAX_ACTIONS_PER_RUN
from flink_agents_ext.checkpoint.completions import Completions
from flink_agents_ext.checkpoint.function import CheckpointedKeyedProcessFunction, SnapshotContext
from flink_agents_ext.checkpoint.ledger import CheckpointPayload
from flink_agents_ext.checkpoint.timeline import JobTimeline
from flink_agents_ext.errors import NotRecoverableError
from flink_agents_ext.keys import KeyEncodingError, encode_key
from flink_agents_ext.lineage import LineageGuard, check_on_foreign_lineage
from flink_agents_ext.pruning import PrunePolicy, check_retention
from flink_agents_ext.serde import JsonSerializer, Serializer
from flink_agents_ext.store import (
    ActionStateStore,
    StoreConfigError,
    StoreError,
    check_store_config,
    open_store,
)
from flink_agents_ext.store.fence import FencedStore

_log = logging.getLogger(__name__)

StoreSpec = Union[Mapping[str, Any], Callable[[], ActionStateStore]]
ON_ACTION_ERROR = ("dead_letter", "fail")


class DurableAgentFunction(CheckpointedKeyedProcessFunction):
    """Runs an :class:`Agent`'s actions per key, durably, with checkpoint-safe pruning.

    How a key's runs are sequenced, and the keyed state that says which completed, is the
    run mode's: :class:`~flink_agents_ext.actions.modes.InlineRuns` (``max_in_flight=0``)
    or :class:`~flink_agents_ext.actions.concurrent.ConcurrentRuns`. Per key there is
    always the sequence of the key's next input (0 for its first; ``fae-next-seq`` inline,
    in ``fae-runs`` with runs in flight) and the key's memory.

    Every action's effects and every durable call are recorded in the action state store
    before they take effect (committed at once, or in batches with the store setting
    ``commit: group``, see :mod:`flink_agents_ext.store.group_commit`); after a failover
    the replayed inputs get the same sequence numbers, and completed actions are replayed
    from the store instead of running again. Records are pruned only for completed runs
    covered by a completed checkpoint (see :mod:`flink_agents_ext.pruning`).

    Runs of one key happen one at a time, in input order.

    Args:
        agent: the actions.
        store: store configuration (``{"backend": "sqlite", "path": ...}``, see
            :func:`flink_agents_ext.store.open_store`) or a zero-argument factory; opened in
            each subtask's ``open``. A configuration is checked here
            (:func:`flink_agents_ext.store.check_store_config`): a bad one raises
            :class:`~flink_agents_ext.store.StoreConfigError` naming the setting.
        namespace: the job's namespace in the store; jobs sharing a database need distinct
            namespaces (two jobs running at once on one namespace: the later one's start
            fails the earlier one, see :mod:`flink_agents_ext.lineage`). Keep it across
            restores of the same job. A job started fresh (not restored) begins a new
            lineage: it never replays what an earlier job left in the namespace (see
            ``on_foreign_lineage``).
        retention: completed checkpoints that stay restorable (see :class:`PrunePolicy`).
        serializer: how recorded values are serialised (default JSON; never pickle).
        allow_reexecution: accept restores that may run completed actions again: from a
            checkpoint older than the prune boundary, from a branch of the lineage that a
            later resume abandoned, or of a lineage whose namespace was taken over since.
        on_foreign_lineage: what a fresh start does when the namespace holds records of
            another lineage (an earlier job that was not restored): ``"reclaim"`` (default)
            removes them (once, logged with their count; this job never replays them);
            ``"refuse"`` fails the start with
            :class:`~flink_agents_ext.lineage.ForeignLineageError` naming the namespace.
        on_action_error: ``"dead_letter"`` (default): a failing action sends the input to
            :data:`DEAD_LETTER_TAG` with the reason and the key moves on; ``"fail"``: the
            task fails and Flink restarts it from the last checkpoint. An action raising
            :class:`RetryableActionError` always fails the task. A dead-lettered run keeps
            what its completed actions did (memory updates, emitted outputs, recorded
            durable calls); the failing action's own emits and memory changes are
            discarded. A record whose key is ``None`` (a missing key field?) or cannot be
            encoded is dead-lettered too, without a run.
        max_actions_per_run: bound on actions in one run (an integer >= 1); a run that
            would execute more is dead-lettered (an event loop between actions?).
        max_in_flight: ``0`` (default): each run executes inline in ``process_element``.
            ``n > 0``: up to ``n`` runs execute off the task thread, so the slow calls of
            up to ``n`` keys overlap; a key's runs still execute one at a time in input
            order (later inputs wait in the key's queue in keyed state); a finished run is
            applied and emitted on the task thread, collected with every other finished run
            by one operator callback (no timer per key while its run executes);
            ``process_element`` blocks while ``n`` runs execute (backpressure). An agent
            whose actions are all ``async def`` runs them as coroutines on one event loop per
            subtask (no thread per run); other agents on a pool of ``n`` threads. Runs in
            flight at a checkpoint are part of it (the queue is keyed state) and resume
            after a restore; a bounded input's end waits for them.
        poll_interval_ms: how often finished runs are collected and applied (one callback
            per subtask, whatever the number of runs in flight).
        close_timeout_s: on close (also after a failure), how long to wait for runs still
            executing, so that they do not overlap the restarted attempt's replay. A run
            still executing after it is fenced: its later store writes fail
            (:class:`~flink_agents_ext.store.fence.FencedError`), so they never land among
            the restarted attempt's records.
        allow_no_checkpointing: run in a job without checkpointing. Nothing is ever pruned
            then (the store keeps every run's records) and a loud warning is logged; without
            this option such a job fails at start with :class:`NotRecoverableError`.
        gc_threshold: with ``max_in_flight > 0``, while the function is open, Python's
            cyclic garbage collector runs with its thresholds (generations 0, 1, 2) raised
            to at least these, default ``(50000, 20, 100)``: with the defaults
            ``(700, 10, 10)`` it spends much of its time walking the objects of runs in
            flight (see :mod:`flink_agents_ext.actions.gc_tuning`: 4,096 runs in flight went
            from 2,620 to 3,427 runs/s). The collector is shared by every function in the
            interpreter: the thresholds are only raised, and put back when the last function
            that raised them closes. ``None`` leaves the collector alone.

    A store that cannot be opened fails the job once with :class:`NotRecoverableError`
    (no restart loop) when restarting cannot fix it: a bad configuration, a path that
    cannot be written, a refused login. A transient failure (PostgreSQL not reachable
    within the store's retries) fails the task, and Flink's restart strategy retries.
    """

    def __init__(self, agent: Agent, store: StoreSpec, namespace: str, *,
                 retention: int = 1, serializer: Optional[Serializer] = None,
                 allow_reexecution: bool = False, on_action_error: str = "dead_letter",
                 max_actions_per_run: int = DEFAULT_MAX_ACTIONS_PER_RUN,
                 max_in_flight: int = 0, poll_interval_ms: int = 5,
                 close_timeout_s: float = 60.0, allow_no_checkpointing: bool = False,
                 on_foreign_lineage: str = "reclaim",
                 gc_threshold: Optional[tuple[int, int, int]] = DEFAULT_GC_THRESHOLD) -> None:
        if not isinstance(agent, Agent):
            raise TypeError(f"agent must be an Agent, got {type(agent).__name__}")
        agent.validate()
        if not isinstance(namespace, str) or not namespace:
            raise ValueError("namespace must be a non-empty string")
        if on_action_error not in ON_ACTION_ERROR:
            raise ValueError(f"on_action_error must be one of {ON_ACTION_ERROR}, "
                             f"got {on_action_error!r}")
        if isinstance(store, Mapping):
            check_store_config(store)  # fail here, on the client, not in every task's open
        elif not callable(store):
            raise StoreConfigError("store must be a configuration mapping or a factory")
        check_retention(retention)
        self.on_foreign_lineage = check_on_foreign_lineage(on_foreign_lineage)
        self.agent = agent
        self.store_spec = store
        self.namespace = namespace
        self.retention = retention
        self.serializer: Serializer = serializer or JsonSerializer()
        self.allow_reexecution = allow_reexecution
        self.on_action_error = on_action_error
        if (not isinstance(max_actions_per_run, int) or isinstance(max_actions_per_run, bool)
                or max_actions_per_run < 1):
            raise ValueError(f"max_actions_per_run must be an integer >= 1, "
                             f"got {max_actions_per_run!r}")
        self.max_actions_per_run = max_actions_per_run
        if not isinstance(max_in_flight, int) or max_in_flight < 0:
            raise ValueError(f"max_in_flight must be an integer >= 0, got {max_in_flight!r}")
        if not isinstance(poll_interval_ms, int) or poll_interval_ms < 1:
            raise ValueError(f"poll_interval_ms must be an integer >= 1, "
                             f"got {poll_interval_ms!r}")
        self.max_in_flight = max_in_flight
        self.poll_interval_ms = poll_interval_ms
        self.close_timeout_s = close_timeout_s
        self.allow_no_checkpointing = allow_no_checkpointing
        self.gc_threshold = check_gc_threshold(gc_threshold)
        # stats() of an instance never opened (e.g. the client's copy): zeros.
        self._metrics = RunMetrics()
        self._completions: Optional[Completions] = None

    def completion_interval_ms(self) -> Optional[int]:
        """``poll_interval_ms`` with runs in flight (``max_in_flight > 0``), else ``None``."""
        return self.poll_interval_ms if self.max_in_flight else None

    def bind_completions(self, completions: Completions) -> None:
        """Where the runs in flight hand their keys back when they finish (thread mode binds
        after ``open``, process mode before)."""
        self._completions = completions
        runs = getattr(self, "runs", None)
        if isinstance(runs, ConcurrentRuns):
            runs.completions = completions

    # -- lifecycle -----------------------------------------------------------------------
    def open(self, runtime_context: Any) -> None:
        """Open the store, the run mode (and its keyed state) and the metrics.

        Raises:
            NotRecoverableError: the store cannot be opened and restarting cannot fix it.
            StoreError: a transient failure to open the store (Flink restarts the task).
        """
        self.store: ActionStateStore = _open_store(self.store_spec)
        if self.gc_threshold is not None and self.max_in_flight:
            raise_threshold(self, self.gc_threshold)
        self._metrics = RunMetrics()
        self._fence = FencedStore(self.store, f"namespace {self.namespace!r}: the closed "
                                              f"attempt")
        env = RunEnv(self.agent, self._fence, self.serializer, self.namespace,
                     self.max_actions_per_run, self.on_action_error, self._metrics,
                     self._dead_letter)
        self.runs: RunMode = (
            ConcurrentRuns(env, runtime_context, self.max_in_flight, self._completions)
            if self.max_in_flight else InlineRuns(env, runtime_context))
        self.lineage = LineageGuard(self.store, self.namespace, self.on_foreign_lineage,
                                    self.allow_reexecution)
        self.policy = PrunePolicy(self.store, self.namespace, self.retention,
                                  self.allow_reexecution, self.lineage.check_head)
        self._metrics.open(runtime_context.get_metrics_group(),
                           lambda: len(self.runs.runs_in_flight()),
                           self.store.size(self.namespace))

    def open_timeline(self, timeline: JobTimeline) -> None:
        """Refuse a job without checkpointing unless ``allow_no_checkpointing``; apply the
        lineage rules (:class:`~flink_agents_ext.lineage.LineageGuard`).

        Raises:
            NotRecoverableError: checkpointing is off and not allowed.
            LineageError: the namespace's lineage does not allow this start (see
                :mod:`flink_agents_ext.lineage`).
        """
        self._check_checkpointing(timeline)
        if not timeline.checkpointing:
            self.runs.stop_keeping_completed()  # no snapshot will take them
        self.lineage.open(timeline)
        if self.lineage.removed_records or self.lineage.discarded_marks:
            self.runs.env.reload_recorded()

    def _check_checkpointing(self, timeline: JobTimeline) -> None:
        if timeline.checkpointing:
            return
        if not self.allow_no_checkpointing:
            raise NotRecoverableError(
                f"DurableAgentFunction (namespace {self.namespace!r}) runs in a job without "
                f"checkpointing: its action state store is pruned only when checkpoints "
                f"complete, so it would keep every run's records. Enable checkpointing "
                f"(env.enable_checkpointing(ms)), or pass allow_no_checkpointing=True to run "
                f"without pruning")
        _log.warning(
            "CHECKPOINTING IS OFF: DurableAgentFunction (namespace %r) runs without "
            "checkpoints (allow_no_checkpointing=True): NOTHING WILL BE PRUNED, the action "
            "state store keeps the records of every run", self.namespace)

    def stats(self) -> dict[str, int]:
        """This instance's counters since ``open`` (the metrics' values), and the store's
        record count for the namespace as last measured; zeros before ``open`` (on the
        client, the function is a copy that never opens: read the job's metrics)."""
        return {**self._metrics.stats, "store_records": self._metrics.store_records}

    def close(self) -> None:
        """Stop the runs in flight, publish the last counts and close the store."""
        metrics = getattr(self, "_metrics", None)
        if metrics is not None:
            metrics.publish()
        runs = getattr(self, "runs", None)
        if runs is not None:
            runs.close(self.close_timeout_s)
        fence = getattr(self, "_fence", None)
        if fence is not None:
            fence.fence()
        store = getattr(self, "store", None)
        if store is not None:
            store.close()
        release(self)

    # -- records -------------------------------------------------------------------------
    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        """Run, start or queue the run of ``value`` for the current key (see the run mode,
        :class:`InlineRuns` or :class:`ConcurrentRuns`); a key that cannot be encoded is
        dead-lettered."""
        key = ctx.get_current_key()
        if key is None:
            yield self._dead_letter(key, None, value, None, _NONE_KEY)
            return
        try:
            key_enc = encode_key(key)
        except KeyEncodingError as exc:
            yield self._dead_letter(key, None, value, None, f"key cannot be encoded: {exc}")
            return
        yield from self.runs.process_element(key, key_enc, value, ctx)

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        """Timers belong to the run mode."""
        yield from self.runs.on_timer(timestamp, ctx)

    def _dead_letter(self, key: Any, seq: Optional[int], value: Any, action: Optional[str],
                     reason: str) -> tuple[OutputTag, str]:
        self._metrics.dead_letter()
        _log.warning("dead letter (key %r, run %s, action %s): %s", key, seq, action, reason)
        return DEAD_LETTER_TAG, dead_letter(self.namespace, key, seq, action, reason, value)

    # -- checkpoints ---------------------------------------------------------------------
    def snapshot_state(self, context: SnapshotContext) -> Any:
        """Capture the last completed sequence of the keys whose runs completed since the
        last snapshot (after writing what a group-committing store still buffers). The run
        mode keeps them as it records the completions: no call into Flink per key."""
        self.store.flush()
        self._metrics.publish()
        return self.policy.snapshot_payload(self.runs.take_completed())

    def notify_checkpoint_complete(self, checkpoint_id: int,
                                   payloads: Sequence[CheckpointPayload]) -> None:
        """Prune what the completed checkpoint covers (subject to retention)."""
        self._pruned(self.policy.on_complete(checkpoint_id, payloads))

    def notify_checkpoint_aborted(self, checkpoint_id: int,
                                  payloads: Sequence[CheckpointPayload]) -> None:
        """Nothing is pruned; the aborted snapshot's marks go into the next snapshot."""
        self.policy.on_aborted(payloads)

    def restore_state(self, checkpoint_id: int, payloads: Sequence[CheckpointPayload]) -> None:
        """Check the prune boundary; prune what the restored checkpoint covered."""
        self._pruned(self.policy.on_restore(checkpoint_id, payloads))

    def _pruned(self, count: int) -> None:
        self._metrics.pruned(count, lambda: self.store.size(self.namespace))


_NONE_KEY = ("the record's key is None (a missing key field?): records without a key are "
             "not run, or they would all share the key None")


def _open_store(spec: StoreSpec) -> ActionStateStore:
    """Open the store of ``spec``; a failure a restart cannot fix is not recoverable."""
    try:
        return spec() if callable(spec) else open_store(spec)
    except StoreError as exc:
        if exc.transient:
            raise
        raise NotRecoverableError(f"cannot open the action state store: {exc}") from exc
