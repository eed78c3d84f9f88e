"""The Flink side of durable actions: a checkpointed keyed function that runs an agent."""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import Future
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

from pyflink.common import Types
from pyflink.datastream import OutputTag, TimeDomain
from pyflink.datastream.state import ListStateDescriptor, ValueStateDescriptor

from flink_agents_ext.actions.agent import Agent
from flink_agents_ext.actions.executor import RunExecutor
from flink_agents_ext.actions.runner import (
    DEFAULT_MAX_ACTIONS_PER_RUN,
    ActionFailed,
    RunResult,
    execute_run,
)
from flink_agents_ext.checkpoint.function import CheckpointedKeyedProcessFunction, SnapshotContext
from flink_agents_ext.checkpoint.ledger import CheckpointPayload
from flink_agents_ext.keys import KeyEncodingError, encode_key
from flink_agents_ext.pruning import PrunePolicy, check_retention
from flink_agents_ext.serde import JsonSerializer, Serializer
from flink_agents_ext.store import (
    ActionStateStore,
    StoreConfigError,
    check_store_config,
    open_store,
)

_log = logging.getLogger(__name__)

#: Side output of records that could not be processed, as JSON strings with a reason.
DEAD_LETTER_TAG = OutputTag("flink-agents-ext-dead-letters", Types.STRING())

#: Timestamp of the event-time timer that fires with the final watermark of a bounded input.
END_OF_INPUT = 2**63 - 1

StoreSpec = Union[Mapping[str, Any], Callable[[], ActionStateStore]]
ON_ACTION_ERROR = ("dead_letter", "fail")
#: Counter names in :meth:`DurableAgentFunction.stats`.
STAT_NAMES = ("runs", "actions_run", "actions_replayed", "durable_calls_run",
              "durable_calls_replayed", "records_pruned", "dead_letters")
#: The counters also published as Flink metrics (group ``flink_agents_ext``).
METRIC_COUNTERS = ("actions_run", "actions_replayed", "durable_calls_replayed",
                   "records_pruned", "dead_letters")
#: Most seconds between two publications of the counters to Flink's metrics.
METRICS_INTERVAL_S = 1.0


class DurableAgentFunction(CheckpointedKeyedProcessFunction):
    """Runs an :class:`Agent`'s actions per key, durably, with checkpoint-safe pruning.

    Per key it keeps, in Flink keyed state: ``next_seq`` (the sequence of the key's next
    run; 0 for its first input), the key's memory and, with ``max_in_flight > 0``,
    ``last_completed_seq``. Inline (``max_in_flight=0``) a run executes within one
    ``process_element`` and ``next_seq`` is advanced when it finished, so the last
    completed sequence is ``next_seq - 1``; concurrent runs advance ``next_seq`` when they
    start and write ``last_completed_seq`` when they finish.

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
            namespaces. Keep it across restores of the same job; a job started fresh (not
            restored) needs an empty one (``ActionStateStore.clear_namespace``): records of
            an earlier job would be replayed as this job's.
        retention: completed checkpoints that stay restorable (see :class:`PrunePolicy`).
        serializer: how recorded values are serialised (default JSON; never pickle).
        allow_reexecution: accept restoring from a checkpoint older than the prune boundary.
        on_action_error: ``"dead_letter"`` (default): a failing action sends the input to
            :data:`DEAD_LETTER_TAG` with the reason and the key moves on; ``"fail"``: the
            task fails and Flink restarts it from the last checkpoint. An action raising
            :class:`RetryableActionError` always fails the task.
        max_actions_per_run: bound on actions in one run.
        max_in_flight: ``0`` (default): each run executes inline in ``process_element``.
            ``n > 0``: runs execute on a pool of ``n`` worker threads, so the slow calls of
            up to ``n`` keys overlap; a key's runs still execute one at a time in input
            order (later inputs wait in the key's queue in keyed state); results are
            applied and emitted by the key's timer; ``process_element`` blocks while ``n``
            runs execute (backpressure). Runs in flight at a checkpoint are part of it (the
            queue is keyed state) and resume after a restore; a bounded input's end waits
            for them.
        poll_interval_ms: how often a key's timer checks its run in flight.
        close_timeout_s: on close (also after a failure), how long to wait for runs still
            executing, so that they do not overlap the restarted attempt's replay.
    """

    def __init__(self, agent: Agent, store: StoreSpec, namespace: str, *,
                 retention: int = 1, serializer: Optional[Serializer] = None,
                 allow_reexecution: bool = False, on_action_error: str = "dead_letter",
                 max_actions_per_run: int = DEFAULT_MAX_ACTIONS_PER_RUN,
                 max_in_flight: int = 0, poll_interval_ms: int = 5,
                 close_timeout_s: float = 60.0) -> None:
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
        self.agent = agent
        self.store_spec = store
        self.namespace = namespace
        self.retention = retention
        self.serializer: Serializer = serializer or JsonSerializer()
        self.allow_reexecution = allow_reexecution
        self.on_action_error = on_action_error
        self.max_actions_per_run = max_actions_per_run
        if not isinstance(max_in_flight, int) or max_in_flight < 0:
            raise ValueError(f"max_in_flight must be an integer >= 0, got {max_in_flight!r}")
        if not isinstance(poll_interval_ms, int) or poll_interval_ms < 1:
            raise ValueError(f"poll_interval_ms must be an integer >= 1, "
                             f"got {poll_interval_ms!r}")
        self.max_in_flight = max_in_flight
        self.poll_interval_ms = poll_interval_ms
        self.close_timeout_s = close_timeout_s

    # -- lifecycle -----------------------------------------------------------------------
    def open(self, runtime_context: Any) -> None:
        """Open the store, the keyed state and the metrics."""
        spec = self.store_spec
        self.store: ActionStateStore = spec() if callable(spec) else open_store(spec)
        self.next_seq = runtime_context.get_state(
            ValueStateDescriptor("fae-next-seq", Types.LONG()))
        self.last_completed_seq = runtime_context.get_state(
            ValueStateDescriptor("fae-last-completed-seq", Types.LONG()))
        self.memory_state = runtime_context.get_state(
            ValueStateDescriptor("fae-memory", Types.STRING()))
        # Concurrent mode: the key's queue of inputs (the head is the run in flight, whose
        # sequence is running_seq). Pickled by PyFlink, as any PICKLED_BYTE_ARRAY state.
        self.pending = runtime_context.get_list_state(
            ListStateDescriptor("fae-pending", Types.PICKLED_BYTE_ARRAY()))
        self.running_seq = runtime_context.get_state(
            ValueStateDescriptor("fae-running-seq", Types.LONG()))
        self._executor = RunExecutor(self.max_in_flight) if self.max_in_flight else None
        self._runs: dict[str, tuple[int, Any, Future[RunResult]]] = {}
        self.policy = PrunePolicy(self.store, self.namespace, self.retention,
                                  self.allow_reexecution)
        self._store_records = self.store.size(self.namespace)
        # Runs that may have records (from an earlier attempt): only these read the store
        # before running. Small: everything a completed checkpoint covered is pruned.
        self._recorded = self.store.recorded_runs(self.namespace)
        self._completions = 0
        group = runtime_context.get_metrics_group().add_group("flink_agents_ext")
        self._counters = {name: group.counter(name) for name in METRIC_COUNTERS}
        group.gauge("store_records", lambda: self._store_records)
        group.gauge("runs_in_flight", lambda: len(self._runs))
        self._stats = dict.fromkeys(STAT_NAMES, 0)
        self._published = dict.fromkeys(STAT_NAMES, 0)
        self._metrics_due = time.monotonic() + METRICS_INTERVAL_S

    def stats(self) -> dict[str, int]:
        """This instance's counters since ``open`` (the metrics' values), and the store's
        record count for the namespace as last measured."""
        return {**self._stats, "store_records": self._store_records}

    def close(self) -> None:
        """Stop the executor, publish the last counts and close the store."""
        if hasattr(self, "_counters"):
            self._publish_metrics()
        executor = getattr(self, "_executor", None)
        if executor is not None:
            executor.shutdown(self.close_timeout_s)
        store = getattr(self, "store", None)
        if store is not None:
            store.close()

    # -- records -------------------------------------------------------------------------
    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        """Start (or queue) the run of ``value`` for the current key.

        Inline (``max_in_flight=0``): the run executes now and its outputs are yielded.
        Concurrent: the input joins the key's queue in keyed state; the run starts when the
        key has none in flight, and its outputs are emitted by the key's timer once done.
        """
        key = ctx.get_current_key()
        try:
            key_enc = encode_key(key)
        except KeyEncodingError as exc:
            yield self._dead_letter(key, None, value, None, f"key cannot be encoded: {exc}")
            return
        if self._executor is None:
            seq = self.next_seq.value() or 0
            failure: Optional[ActionFailed] = None
            try:
                # The memory is read from keyed state only if an action uses it.
                result = execute_run(self.agent, self.store, self.serializer, self.namespace,
                                     key, key_enc, seq, value, self._memory,
                                     self.max_actions_per_run, self._maybe_recorded(key_enc, seq))
            except ActionFailed as exc:
                if self.on_action_error == "fail":
                    raise
                failure, result = exc, exc.result
            # Completed (a dead-lettered run too). A run that raised fails the task and is
            # not counted: the snapshot's last completed sequence is next_seq - 1.
            self.next_seq.update(seq + 1)
            yield from self._finish(key, seq, value, result, failure)
            return
        self.pending.add(value)
        if self.running_seq.value() is None:
            self._start(key, key_enc, ctx, resume=False)

    def _maybe_recorded(self, key_enc: str, seq: int) -> bool:
        if not self._recorded:
            return False
        try:
            self._recorded.remove((key_enc, seq))
        except KeyError:
            return False
        return True

    def _memory(self) -> dict[str, Any]:
        raw = self.memory_state.value()
        return json.loads(raw) if raw else {}

    def _finish(self, key: Any, seq: int, value: Any, result: RunResult,
                failure: Optional[ActionFailed]) -> Iterator[Any]:
        """Apply a finished run in its key's context: memory, completion, outputs."""
        self._account(result)
        if result.memory_changed:
            self.memory_state.update(json.dumps(result.memory, sort_keys=True))
        # The run is finished (a dead-lettered run too): only now is it completed.
        if self._executor is not None:
            self.last_completed_seq.update(seq)
        yield from result.outputs
        if failure is not None:
            yield self._dead_letter(key, seq, value, failure.action, failure.reason)

    # -- concurrent runs -----------------------------------------------------------------
    def _start(self, key: Any, key_enc: str, ctx: Any, resume: bool) -> None:
        """Submit the run of the head of the key's queue (after a restore: resume it)."""
        value = next(iter(self.pending.get()))
        if resume:
            seq = self.running_seq.value()
        else:
            seq = self.next_seq.value() or 0
            self.next_seq.update(seq + 1)
            self.running_seq.update(seq)
        assert self._executor is not None
        future = self._executor.submit(
            execute_run, self.agent, self.store, self.serializer, self.namespace, key,
            key_enc, seq, value, self._memory(), self.max_actions_per_run,
            self._maybe_recorded(key_enc, seq))
        self._runs[key_enc] = (seq, value, future)
        timers = ctx.timer_service()
        timers.register_processing_time_timer(
            timers.current_processing_time() + self.poll_interval_ms)
        # Fires when the final watermark arrives at the end of a bounded input: the key's
        # remaining runs are then waited for (end of input waits for in-flight runs).
        timers.register_event_time_timer(END_OF_INPUT)

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        """Apply the key's finished runs and start the next queued one."""
        if self._executor is None:
            return
        key = ctx.get_current_key()
        key_enc = encode_key(key)
        end_of_input = ctx.time_domain() == TimeDomain.EVENT_TIME
        while True:
            seq = self.running_seq.value()
            if seq is None:
                return
            entry = self._runs.get(key_enc)
            if entry is None or entry[0] != seq:
                # Restored from a checkpoint with this run in flight: resume it (its
                # recorded actions and durable calls are replayed, not repeated).
                self._start(key, key_enc, ctx, resume=True)
                entry = self._runs[key_enc]
            _, value, future = entry
            if not future.done() and not end_of_input:
                timers = ctx.timer_service()
                timers.register_processing_time_timer(
                    timers.current_processing_time() + self.poll_interval_ms)
                return
            del self._runs[key_enc]
            failure: Optional[ActionFailed] = None
            try:
                result = future.result()
            except ActionFailed as exc:
                if self.on_action_error == "fail":
                    raise
                failure, result = exc, exc.result
            yield from self._finish(key, seq, value, result, failure)
            queue = list(self.pending.get())[1:]
            self.pending.clear()
            self.running_seq.clear()
            if not queue:
                return
            self.pending.add_all(queue)
            self._start(key, key_enc, ctx, resume=False)
            if not end_of_input:
                return

    def _account(self, result: RunResult) -> None:
        self._store_records += result.actions_run + result.calls.executed
        stats = self._stats
        stats["runs"] += 1
        stats["actions_run"] += result.actions_run
        stats["actions_replayed"] += result.actions_replayed
        stats["durable_calls_run"] += result.calls.executed
        stats["durable_calls_replayed"] += result.calls.replayed
        if time.monotonic() >= self._metrics_due:
            self._publish_metrics()

    def _publish_metrics(self) -> None:
        """Add the counts since the last call to the Flink counters. Each increment is a
        call into Java in thread mode (~15 us), so counters are published at most every
        :data:`METRICS_INTERVAL_S`, at snapshots and on close, not per record."""
        stats, published = self._stats, self._published
        for name, counter in self._counters.items():
            delta = stats[name] - published[name]
            if delta:
                counter.inc(delta)
                published[name] = stats[name]
        self._metrics_due = time.monotonic() + METRICS_INTERVAL_S

    def _dead_letter(self, key: Any, seq: Optional[int], value: Any, action: Optional[str],
                     reason: str) -> tuple[OutputTag, str]:
        self._stats["dead_letters"] += 1
        self._publish_metrics()  # rare: at once
        _log.warning("dead letter (key %r, run %s, action %s): %s", key, seq, action, reason)
        record = {"namespace": self.namespace, "key": _jsonable(key), "seq": seq,
                  "action": action, "reason": reason, "input": _jsonable(value)}
        return DEAD_LETTER_TAG, json.dumps(record, sort_keys=True)

    # -- checkpoints ---------------------------------------------------------------------
    def snapshot_state(self, context: SnapshotContext) -> Any:
        """Capture the last completed sequence of the keys changed since the last snapshot
        (after writing what a group-committing store still buffers)."""
        self.store.flush()
        self._publish_metrics()
        changed: dict[str, int] = {}
        inline = self._executor is None
        for key in context.changed_keys():
            if inline:
                started = self.next_seq.value()
                seq = None if not started else started - 1
            else:
                seq = self.last_completed_seq.value()
            if seq is not None:
                changed[encode_key(key)] = seq
        return self.policy.snapshot_payload(changed)

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
        self._stats["records_pruned"] += count
        self._publish_metrics()  # once per checkpoint
        self._completions += 1
        if self._completions % 100 == 0:
            self._store_records = self.store.size(self.namespace)
        else:
            self._store_records = max(0, self._store_records - count)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)[:1000]
