"""``max_in_flight > 0``: a key's runs execute off the task thread, one at a time per key."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Iterator, Optional

from pyflink.common import Types
from pyflink.datastream import TimeDomain
from pyflink.datastream.state import ListStateDescriptor, ValueStateDescriptor

from flink_agents_ext.actions.executor import RunExecutor
from flink_agents_ext.actions.modes import RunEnv, RunMode
from flink_agents_ext.actions.runner import RunResult
from flink_agents_ext.keys import encode_key

#: Timestamp of the event-time timer that fires with the final watermark of a bounded input.
END_OF_INPUT = 2**63 - 1


class ConcurrentRuns(RunMode):
    """Runs execute on a pool of ``max_in_flight`` workers; a key's runs one at a time.

    Keyed state, besides ``fae-next-seq`` (advanced when a run *starts*) and the memory:
    ``fae-pending``, the key's inputs not yet completed (the head is the run in flight),
    ``fae-running-seq``, the sequence of the run in flight, and ``fae-last-completed-seq``,
    written when a run is applied. The key's timer applies a finished run, emits its outputs
    and starts the next queued one.
    """

    def __init__(self, env: RunEnv, runtime_context: Any, max_in_flight: int,
                 poll_interval_ms: int) -> None:
        super().__init__(env, runtime_context)
        self.last_completed = runtime_context.get_state(
            ValueStateDescriptor("fae-last-completed-seq", Types.LONG()))
        # The key's queue of inputs (the head is the run in flight, whose sequence is
        # running_seq). Pickled by PyFlink, as any PICKLED_BYTE_ARRAY state.
        self.pending = runtime_context.get_list_state(
            ListStateDescriptor("fae-pending", Types.PICKLED_BYTE_ARRAY()))
        self.running_seq = runtime_context.get_state(
            ValueStateDescriptor("fae-running-seq", Types.LONG()))
        self.poll_interval_ms = poll_interval_ms
        self.executor = RunExecutor(max_in_flight)
        self._runs: dict[str, tuple[int, Any, Future[RunResult]]] = {}

    def process_element(self, key: Any, key_enc: str, value: Any,
                        ctx: Any) -> Iterator[Any]:
        """Queue the input; start its run when the key has none in flight."""
        self.pending.add(value)
        if self.running_seq.value() is None:
            self._start(key, key_enc, ctx, resume=False)
        return iter(())

    def last_completed_seq(self) -> Optional[int]:
        """``fae-last-completed-seq``."""
        seq: Optional[int] = self.last_completed.value()
        return seq

    def runs_in_flight(self) -> list[tuple[str, int]]:
        """``(encoded key, sequence)`` of the runs submitted and not yet applied."""
        return [(key_enc, seq) for key_enc, (seq, _, _) in list(self._runs.items())]

    def close(self, timeout_s: float) -> None:
        """Stop the executor (see :meth:`RunExecutor.shutdown`)."""
        self.executor.shutdown(timeout_s)

    def _start(self, key: Any, key_enc: str, ctx: Any, resume: bool) -> None:
        """Submit the run of the head of the key's queue (after a restore: resume it)."""
        value = next(iter(self.pending.get()))
        if resume:
            seq = self.running_seq.value()
        else:
            seq = self.next_seq.value() or 0
            self.next_seq.update(seq + 1)
            self.running_seq.update(seq)
        future = self.executor.submit(self.env.execute, key, key_enc, seq, value,
                                      self.memory())
        self._runs[key_enc] = (seq, value, future)
        timers = ctx.timer_service()
        timers.register_processing_time_timer(
            timers.current_processing_time() + self.poll_interval_ms)
        # Fires when the final watermark arrives at the end of a bounded input: the key's
        # remaining runs are then waited for (end of input waits for in-flight runs).
        timers.register_event_time_timer(END_OF_INPUT)

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        """Apply the key's finished runs and start the next queued one."""
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
            result, failure = self.env.outcome(future.result)
            self.last_completed.update(seq)
            yield from self.apply(key, seq, value, result, failure)
            queue = list(self.pending.get())[1:]
            self.pending.clear()
            self.running_seq.clear()
            if not queue:
                return
            self.pending.add_all(queue)
            self._start(key, key_enc, ctx, resume=False)
            if not end_of_input:
                return
