"""A pure-Python test harness for checkpointed keyed functions: no JVM, no cluster.

The PyFlink analogue of Flink's ``KeyedOneInputStreamOperatorTestHarness``: drive a
:class:`~flink_agents_ext.checkpoint.CheckpointedKeyedProcessFunction` (for instance a
:class:`~flink_agents_ext.actions.DurableAgentFunction`) with elements, take snapshots,
notify completion or abort, restore a snapshot into a fresh instance, and inspect outputs,
keyed state and metrics::

    h = KeyedFunctionHarness(make_function())
    h.process_element({"id": 1}, key="alice")
    snap = h.snapshot()                 # checkpoint 1
    h.notify_complete(snap.checkpoint_id)
    h2 = h.restore(snap, make_function())   # a fresh instance, as after a failover
    h2.process_element({"id": 1}, key="alice")

Keyed state lives in the harness (``ValueState``, ``ListState``, ``MapState`` are
supported); the checkpoint callbacks go through the same
:class:`~flink_agents_ext.checkpoint.bridge.CheckpointBridge` as on a cluster. Work a function
finishes off the task thread comes back as in the Java operators
(:mod:`~flink_agents_ext.checkpoint.completions`): when processing time advances past the next
collection (every ``completion_interval_ms``), each finished key's ``on_timer`` fires with
that key current; after a restore, each key holding a ``RESUME_TIMER`` event-time timer fires
once at the first collection. ``mode`` says which operator is modelled: ``"thread"`` (default)
keeps the keys' ``RESUME_TIMER`` timers itself and drains the outstanding work at the end of
input (:attr:`~flink_agents_ext.checkpoint.completions.Completions.operator_tracks_work`);
``"process"`` leaves both to the function. Keys are
told apart as Flink tells them apart, by value *and type*: ``1``, ``1.0``, ``True``,
``"1"``, ``(1,)`` and ``b"1"`` are six keys with six sets of state and timers (Python's
``1 == 1.0 == True`` does not merge them), while ``get_current_key()`` returns the object
the element was keyed with.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, cast

from pyflink.datastream import OutputTag, TimeDomain

from flink_agents_ext._harness_state import (
    _flink_key,
    _FlinkKey,
    _KeyedStore,
    _ListState,
    _MapState,
    _ValueState,
)
from flink_agents_ext.checkpoint.bridge import CheckpointBridge
from flink_agents_ext.checkpoint.completions import RESUME_TIMER
from flink_agents_ext.checkpoint.function import CheckpointedKeyedProcessFunction
from flink_agents_ext.checkpoint.timeline import JobTimeline


class _Counter:
    def __init__(self) -> None:
        self.count = 0

    def inc(self, n: int = 1) -> None:
        self.count += n

    def dec(self, n: int = 1) -> None:
        self.count -= n

    def get_count(self) -> int:
        return self.count


class FakeMetricGroup:
    """Records counters and gauges by name (dotted with the group path)."""

    def __init__(self, registry: Optional[dict[str, Any]] = None, prefix: str = "") -> None:
        self.registry: dict[str, Any] = {} if registry is None else registry
        self.prefix = prefix

    def add_group(self, name: str, extra: Optional[str] = None) -> FakeMetricGroup:
        return FakeMetricGroup(self.registry, f"{self.prefix}{name}.")

    def counter(self, name: str) -> _Counter:
        counter: _Counter = self.registry.setdefault(self.prefix + name, _Counter())
        return counter

    def gauge(self, name: str, obj: Callable[[], int]) -> None:
        self.registry[self.prefix + name] = obj


class _RuntimeContext:
    def __init__(self, harness: KeyedFunctionHarness) -> None:
        self._h = harness

    def get_state(self, descriptor: Any) -> _ValueState:
        return _ValueState(self._h._state, descriptor.name)

    def get_list_state(self, descriptor: Any) -> _ListState:
        return _ListState(self._h._state, descriptor.name)

    def get_map_state(self, descriptor: Any) -> _MapState:
        return _MapState(self._h._state, descriptor.name)

    def get_metrics_group(self) -> FakeMetricGroup:
        return self._h.metrics

    def get_index_of_this_subtask(self) -> int:
        return 0

    def get_number_of_parallel_subtasks(self) -> int:
        return 1


class _TimerService:
    def __init__(self, harness: KeyedFunctionHarness) -> None:
        self._h = harness

    def current_processing_time(self) -> int:
        return self._h.processing_time

    def current_watermark(self) -> int:
        return -(2**63)

    def register_processing_time_timer(self, timestamp: int) -> None:
        self._h._timers.add((timestamp, self._current()))

    def delete_processing_time_timer(self, timestamp: int) -> None:
        self._h._timers.discard((timestamp, self._current()))

    def register_event_time_timer(self, timestamp: int) -> None:
        self._h._event_timers.add((timestamp, self._current()))

    def delete_event_time_timer(self, timestamp: int) -> None:
        self._h._event_timers.discard((timestamp, self._current()))

    def _current(self) -> _FlinkKey:
        current = self._h._state.current
        assert current is not None, "a timer registered without a current key"
        return current


class _Context:
    def __init__(self, harness: KeyedFunctionHarness,
                 domain: TimeDomain = TimeDomain.PROCESSING_TIME) -> None:
        self._h = harness
        self._domain = domain

    def get_current_key(self) -> Any:
        return self._h._state.current_key

    def timer_service(self) -> _TimerService:
        return _TimerService(self._h)

    def timestamp(self) -> Optional[int]:
        return None

    def time_domain(self) -> TimeDomain:
        return self._domain


@dataclass(frozen=True)
class HarnessSnapshot:
    """A checkpoint taken by :meth:`KeyedFunctionHarness.snapshot`."""

    checkpoint_id: int
    #: state name -> key -> value (keys wrapped so that equal-but-distinct keys stay apart)
    keyed_state: dict[str, dict[Any, Any]]
    ledger: bytes
    timers: frozenset[tuple[int, Any]] = frozenset()
    event_timers: frozenset[tuple[int, Any]] = frozenset()
    #: the lineage the snapshot belongs to (the operator's union state)
    lineage: str = ""
    #: the id of the job that took the snapshot
    job_id: str = ""


class KeyedFunctionHarness:
    """Drives one instance (one subtask) of a checkpointed keyed function.

    Args:
        function: the function (a fresh instance).
        keyed_state: initial keyed state, ``{state name: {key: value}}``.
        open_function: call ``open`` (and ``open_timeline``) now.
        job_id: the id of the simulated Flink job; a fresh start begins a lineage named
            after it (see :class:`~flink_agents_ext.checkpoint.timeline.JobTimeline`).
        attempt: the attempt number (``> 0``: the job restarted before any checkpoint).
        timeline: the timeline to hand over instead (:meth:`restore` passes it).
        mode: the ``python.execution-mode`` whose operator is modelled (see the module).

    Attributes:
        outputs: records emitted on the main output, in order.
        side_outputs: tag id -> records emitted to that side output.
        metrics: name -> counter (``.count``) or gauge callable.
        processing_time: the time timers see; advance with :meth:`advance_processing_time`.
    """

    def __init__(self, function: CheckpointedKeyedProcessFunction,
                 keyed_state: Optional[dict[str, dict[Any, Any]]] = None,
                 open_function: bool = True, *, job_id: str = "harness-job",
                 attempt: int = 0, timeline: Optional[JobTimeline] = None,
                 mode: str = "thread") -> None:
        if not isinstance(function, CheckpointedKeyedProcessFunction):
            raise TypeError("the harness drives CheckpointedKeyedProcessFunction subclasses")
        if mode not in ("thread", "process"):
            raise ValueError(f"mode must be 'thread' or 'process', got {mode!r}")
        self.function = function
        self.mode = mode
        self._state = _KeyedStore(copy.deepcopy(keyed_state) if keyed_state else None)
        self._changed: dict[_FlinkKey, None] = {}
        self._timers: set[tuple[int, _FlinkKey]] = set()
        self._event_timers: set[tuple[int, _FlinkKey]] = set()
        self._last_checkpoint = 0
        self.outputs: list[Any] = []
        self.side_outputs: dict[str, list[Any]] = {}
        self.metrics = FakeMetricGroup()
        self.processing_time = 0
        self._handle_taken = False
        self.bridge = CheckpointBridge(function, self._walk_changed_keys, self._key_handle,
                                       operator_tracks_work=mode == "thread",
                                       discard_changed_keys=self._discard_changed_keys)
        self._completion_interval_ms = function.completion_interval_ms()
        self._next_drain = 0
        self._resume: list[_FlinkKey] = []
        self.timeline = timeline or JobTimeline.fresh(job_id, attempt)
        if open_function:
            function.open(cast(Any, _RuntimeContext(self)))
            self.bridge.open_timeline(self.timeline)

    def _walk_changed_keys(self) -> Iterator[Any]:
        keys, self._changed = list(self._changed), {}
        for key in keys:
            self._state.current = key
            yield key.key

    def _discard_changed_keys(self) -> None:
        self._changed = {}

    def _key_handle(self) -> _FlinkKey:
        """The current key as its handle; the thread-mode operator registers its resume
        timer."""
        current = self._state.current
        assert current is not None, "a key handle taken without a current key"
        self._handle_taken = True
        if self.mode == "thread":
            self._event_timers.add((RESUME_TIMER, current))
        return current

    def _set_current(self, key: Any) -> _FlinkKey:
        current = self._state.current = _flink_key(key)
        self._changed[current] = None
        return current

    def _collect(self, results: Optional[Iterable[Any]]) -> list[Any]:
        emitted = []
        for item in results or ():
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], OutputTag):
                self.side_outputs.setdefault(item[0].tag_id, []).append(item[1])
            else:
                self.outputs.append(item)
                emitted.append(item)
        return emitted

    def process_element(self, value: Any, key: Any) -> list[Any]:
        """Process ``value`` under ``key``; return the main-output records it emitted."""
        self._set_current(key)
        return self._collect(self.function.process_element(value, cast(Any, _Context(self))))

    def advance_processing_time(self, timestamp: int) -> list[Any]:
        """Fire the timers due at ``timestamp``, in time order; return what they emitted."""
        self.processing_time = timestamp
        emitted: list[Any] = []
        for ts, key in sorted((t for t in self._timers if t[0] <= timestamp),
                              key=lambda t: (t[0], repr(t[1].identity))):
            self._timers.discard((ts, key))
            self._set_current(key)
            emitted += self._collect(self.function.on_timer(ts, cast(Any, _Context(self))))
        if self._completion_interval_ms and timestamp >= self._next_drain:
            self._next_drain = timestamp + self._completion_interval_ms
            emitted += self._drain_completions(timestamp)
        return emitted

    def _drain_completions(self, timestamp: int) -> list[Any]:
        """The operators' non-keyed callback: fire the resumed and the finished keys."""
        resume, self._resume = self._resume, []
        return self._fire(timestamp, [*resume, *self.bridge.take_completions()])

    def _fire(self, timestamp: int, keys: Iterable[_FlinkKey]) -> list[Any]:
        """Fire each key's processing-time ``on_timer``; the thread-mode operator deletes
        the resume timer of a key that took no new handle."""
        emitted: list[Any] = []
        for key in keys:
            current = self._set_current(key)
            self._handle_taken = False
            emitted += self._collect(self.function.on_timer(timestamp,
                                                            cast(Any, _Context(self))))
            if self.mode == "thread" and not self._handle_taken:
                self._event_timers.discard((RESUME_TIMER, current))
        return emitted

    @property
    def work_outstanding(self) -> bool:
        """Whether work started off the task thread is not yet handed back (or a key is
        still to resume after a restore)."""
        return bool(self._resume) or self.bridge.completions.outstanding > 0

    def run_until_idle(self, timeout_s: float = 30.0, step_ms: int = 5) -> list[Any]:
        """Advance processing time in steps (sleeping as much in real time) until no
        processing-time timer is left and no work is outstanding
        (:attr:`work_outstanding`), e.g. until every run in flight was applied; return what
        the timers emitted.

        Raises:
            TimeoutError: timers or work were still pending after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        emitted: list[Any] = []
        while self._timers or self.work_outstanding:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self._timers)} timers still pending, work "
                                   f"outstanding: {self.work_outstanding}")
            time.sleep(step_ms / 1000)
            emitted += self.advance_processing_time(self.processing_time + step_ms)
        return emitted

    def end_input(self, timeout_s: float = 60.0) -> list[Any]:
        """Deliver the final watermark of a bounded input: the keys still to resume fire
        (both operators fire them right after a restore), then each key whose work finishes,
        until none is outstanding (waiting in real time, at most ``timeout_s``): the
        thread-mode operator does this before the final watermark's timers, the process-mode
        bridge (with :meth:`Completions.finish`, as here) when the first key's resume timer
        fires. Then every event-time timer fires, in time order. Return what was emitted.

        Raises:
            TimeoutError: work was still outstanding after ``timeout_s``.
        """
        emitted: list[Any] = []
        if self._completion_interval_ms:
            resume, self._resume = self._resume, []
            emitted += self._fire(self.processing_time, resume)
            if self.mode == "thread" or any(ts == RESUME_TIMER for ts, _ in self._event_timers):
                emitted += self.bridge.completions.finish(
                    lambda keys: self._fire(self.processing_time, keys), poll_s=0.01,
                    timeout_s=timeout_s)
        while self._event_timers:
            ts, key = min(self._event_timers, key=lambda t: (t[0], repr(t[1].identity)))
            self._event_timers.discard((ts, key))
            self._set_current(key)
            ctx = _Context(self, TimeDomain.EVENT_TIME)
            emitted += self._collect(self.function.on_timer(ts, cast(Any, ctx)))
        return emitted

    def snapshot(self, checkpoint_id: Optional[int] = None) -> HarnessSnapshot:
        """Take checkpoint ``checkpoint_id`` (default: the next id) and return it."""
        cid = self._last_checkpoint + 1 if checkpoint_id is None else checkpoint_id
        self._last_checkpoint = cid
        ledger = self.bridge.snapshot(cid)
        return HarnessSnapshot(cid, copy.deepcopy(self._state.data), ledger,
                               frozenset(self._timers), frozenset(self._event_timers),
                               self.timeline.lineage, self.timeline.job_id)

    def notify_complete(self, checkpoint_id: int) -> None:
        """Deliver ``notifyCheckpointComplete(checkpoint_id)``."""
        self.bridge.complete(checkpoint_id)

    def notify_abort(self, checkpoint_id: int) -> None:
        """Deliver ``notifyCheckpointAborted(checkpoint_id)``."""
        self.bridge.abort(checkpoint_id)

    def restore(self, snapshot: HarnessSnapshot, function: CheckpointedKeyedProcessFunction,
                *, job_id: Optional[str] = None,
                attempt: Optional[int] = None) -> KeyedFunctionHarness:
        """A new harness for ``function`` (a fresh instance) restored from ``snapshot``:
        its keyed state and timers are the snapshot's, it is handed the snapshot's lineage,
        and its restore callback runs after ``open``.

        Args:
            job_id: ``None`` (default): a failover of this harness's job (the next attempt;
                checkpoint ids continue after the newest this harness took); another id: a
                new job resumed from the snapshot (``flink run -s``; ids continue after the
                snapshot's).
            attempt: the attempt number (default: the next one after a failover, 0 for a
                new job).
        """
        same_job = job_id is None or job_id == self.timeline.job_id
        jid = self.timeline.job_id if job_id is None else job_id
        if attempt is None:
            attempt = self.timeline.attempt + 1 if same_job else 0
        timeline = JobTimeline(snapshot.lineage, jid, attempt, snapshot.checkpoint_id,
                               snapshot.job_id)
        restored = KeyedFunctionHarness(function, snapshot.keyed_state, timeline=timeline,
                                        mode=self.mode)
        # As Flink numbers checkpoints: a failover keeps the job's counter (no id repeats);
        # a new job resumed from a checkpoint continues after the restored one's id (so it
        # can repeat ids of the branch it abandoned).
        restored._last_checkpoint = (max(self._last_checkpoint, snapshot.checkpoint_id)
                                     if same_job else snapshot.checkpoint_id)
        # Timers are part of a checkpoint; overdue ones fire as soon as time advances.
        restored._timers = set(snapshot.timers)
        restored._event_timers = set(snapshot.event_timers)
        if restored._completion_interval_ms:
            restored._resume = sorted({k for ts, k in restored._event_timers
                                       if ts == RESUME_TIMER}, key=lambda k: repr(k.identity))
        restored.processing_time = self.processing_time
        restored.bridge.restore(snapshot.checkpoint_id, [snapshot.ledger])
        return restored

    def state(self, name: str, key: Any) -> Any:
        """The value of keyed state ``name`` for ``key`` (``None`` when unset)."""
        return self._state.table(name).get(_flink_key(key))

    def state_items(self, name: str) -> list[tuple[Any, Any]]:
        """Every ``(key, value)`` of keyed state ``name``."""
        return [(k.key, v) for k, v in self._state.table(name).items()]

    def metric(self, name: str) -> int:
        """The value of a counter or gauge whose name ends with ``name``, as published to
        Flink (``DurableAgentFunction`` publishes its counters at most every second, at
        snapshots and on close; its ``stats()`` are always current)."""
        for full, metric in self.metrics.registry.items():
            if full == name or full.endswith("." + name):
                return metric() if callable(metric) else int(metric.count)
        raise KeyError(f"no metric {name!r}; have {sorted(self.metrics.registry)}")

    def close(self) -> None:
        """Close the function."""
        self.function.close()
