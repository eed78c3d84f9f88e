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
from flink_agents_ext.checkpoint.completions import RESUME_TIMER, Completions
from flink_agents_ext.keys import encode_key

#: Timestamp of the event-time timer that fires with the final watermark of a bounded input
#: (the key has a run in flight or queued; after a restore the operator resumes it).
END_OF_INPUT = RESUME_TIMER


class ConcurrentRuns(RunMode):
    """Up to ``max_in_flight`` runs execute at once, on a pool of workers (an agent whose
    actions are all ``async def``: as coroutines on one event loop); a key's runs one at a
    time.

    Keyed state, besides ``fae-next-seq`` (advanced when a run *starts*) and the memory:
    ``fae-pending``, the key's inputs not yet completed (the head is the run in flight),
    ``fae-running-seq``, the sequence of the run in flight, and ``fae-last-completed-seq``,
    written when a run is applied. A finished run is pushed to ``completions``; the operator
    then fires the key's processing-time ``on_timer``, which applies the run, emits its
    outputs and starts the next queued one (no timer per key while the run executes). A key
    with a run in flight or queued holds an event-time timer at :data:`END_OF_INPUT`.
    """

    def __init__(self, env: RunEnv, runtime_context: Any, max_in_flight: int,
                 completions: Optional[Completions]) -> None:
        super().__init__(env, runtime_context)
        self.last_completed = runtime_context.get_state(
            ValueStateDescriptor("fae-last-completed-seq", Types.LONG()))
        # The key's queue of inputs (the head is the run in flight, whose sequence is
        # running_seq). Pickled by PyFlink, as any PICKLED_BYTE_ARRAY state.
        self.pending = runtime_context.get_list_state(
            ListStateDescriptor("fae-pending", Types.PICKLED_BYTE_ARRAY()))
        self.running_seq = runtime_context.get_state(
            ValueStateDescriptor("fae-running-seq", Types.LONG()))
        self.completions = completions
        self.executor = RunExecutor(max_in_flight)
        self._runs: dict[str, tuple[int, Any, Future[RunResult]]] = {}

    def process_element(self, key: Any, key_enc: str, value: Any,
                        ctx: Any) -> Iterator[Any]:
        """Queue the input; start its run when the key has none in flight."""
        self.pending.add(value)
        if self.running_seq.value() is None:
            # Fires when the final watermark arrives at the end of a bounded input: the key's
            # remaining runs are then waited for (end of input waits for in-flight runs).
            ctx.timer_service().register_event_time_timer(END_OF_INPUT)
            self._start(key, key_enc, value, resume=False)
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

    def _start(self, key: Any, key_enc: str, value: Any, resume: bool) -> None:
        """Submit the run of ``value``, the head of the key's queue (after a restore: resume
        it)."""
        if resume:
            seq = self.running_seq.value()
        else:
            seq = self.next_seq.value() or 0
            self.next_seq.update(seq + 1)
            self.running_seq.update(seq)
        completions = self.completions
        if completions is None:
            raise RuntimeError("runs in flight need the operator of process_with_checkpoints "
                               "(the function was given no completions)")
        handle = completions.handle()
        if self.env.agent.is_async:  # a coroutine: no thread while it awaits
            future = self.executor.submit_async(self.env.execute_async, key, key_enc, seq,
                                                value, self.memory())
        else:
            future = self.executor.submit(self.env.execute, key, key_enc, seq, value,
                                          self.memory())
        self._runs[key_enc] = (seq, value, future)
        future.add_done_callback(lambda _: completions.push(handle))

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        """Apply the key's finished run and start the next queued one (resume the run in
        flight after a restore); at the end of input, wait for all of the key's runs."""
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
                self._start(key, key_enc, next(iter(self.pending.get())), resume=True)
                entry = self._runs[key_enc]
            _, value, future = entry
            if not future.done() and not end_of_input:
                return  # its completion fires this again
            del self._runs[key_enc]
            result, failure = self.env.outcome(future.result)
            self.last_completed.update(seq)
            yield from self.apply(key, seq, value, result, failure)
            queue = list(self.pending.get())[1:]
            self.pending.clear()
            self.running_seq.clear()
            if not queue:
                if not end_of_input:
                    ctx.timer_service().delete_event_time_timer(END_OF_INPUT)
                return
            self.pending.add_all(queue)
            self._start(key, key_enc, queue[0], resume=False)
            if not end_of_input:
                return
