"""``max_in_flight > 0``: a key's runs execute off the task thread, one at a time per key."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Iterator, Optional

from pyflink.common import Types
from pyflink.datastream.state import ListStateDescriptor, ValueStateDescriptor

from flink_agents_ext.actions.executor import RunExecutor
from flink_agents_ext.actions.modes import NEXT_SEQ_STATE, RUNS_STATE, RunEnv, RunMode
from flink_agents_ext.actions.runner import RunResult
from flink_agents_ext.checkpoint.completions import RESUME_TIMER, Completions
from flink_agents_ext.keys import encode_key

#: Timestamp of the event-time timer that fires with the final watermark of a bounded input
#: (the key has a run in flight or queued; after a restore the operator resumes it).
END_OF_INPUT = RESUME_TIMER

#: ``fae-runs`` of a key never seen: ``(next seq, running seq, last completed seq, queued,
#: memory written, input of the run in flight)``.
_NEW = (0, None, None, 0, False, None)


class ConcurrentRuns(RunMode):
    """Up to ``max_in_flight`` runs execute at once, on a pool of workers (an agent whose
    actions are all ``async def``: as coroutines on one event loop); a key's runs one at a
    time.

    Keyed state, besides the memory: ``fae-runs``, one small tuple read once and written
    once per run start and per run applied: the sequence the key's next input gets (advanced
    when a run *starts*), the sequence of the run in flight (``None``: none), the last
    completed sequence (written when a run is applied), how many inputs wait in
    ``fae-pending``, whether a run ever wrote the key's memory (else it is not read) and the
    input of the run in flight. ``fae-pending`` holds the inputs queued behind the run in
    flight; it is not touched while a key has none.

    A finished run is pushed to ``completions``; the operator then fires the key's
    processing-time ``on_timer``, which applies the run, emits its outputs and starts the
    next queued one (no timer per key while the run executes). A key with a run in flight or
    queued holds an event-time timer at :data:`END_OF_INPUT`: the thread-mode operator keeps
    it itself (:attr:`Completions.operator_tracks_work`), otherwise this class does. At the
    end of a bounded input the thread-mode operator drains the outstanding work before the
    final watermark (each completion fires its key as above, so every key's next run starts
    as soon as its previous one finished) and the timer does nothing; without such an
    operator (process mode), each key's timer waits for the key's remaining runs.

    A key first seen by this mode after a restore of state written with
    ``max_in_flight=0`` continues at that state's ``fae-next-seq``.
    """

    def __init__(self, env: RunEnv, runtime_context: Any, max_in_flight: int,
                 completions: Optional[Completions]) -> None:
        super().__init__(env, runtime_context)
        self.runs_state = runtime_context.get_state(
            ValueStateDescriptor(RUNS_STATE, Types.PICKLED_BYTE_ARRAY()))
        # The inline mode's sequence, read only for a key this mode has not seen.
        self.inline_next_seq = runtime_context.get_state(
            ValueStateDescriptor(NEXT_SEQ_STATE, Types.LONG()))
        # Inputs queued behind the run in flight. Pickled by PyFlink, as any
        # PICKLED_BYTE_ARRAY state.
        self.pending = runtime_context.get_list_state(
            ListStateDescriptor("fae-pending", Types.PICKLED_BYTE_ARRAY()))
        self.completions = completions
        self.executor = RunExecutor(max_in_flight)
        self._runs: dict[str, tuple[int, Any, Future[RunResult]]] = {}

    def _key_runs(self) -> tuple[Any, ...]:
        """The current key's ``fae-runs`` (for a new key: from the inline mode's state)."""
        runs: Optional[tuple[Any, ...]] = self.runs_state.value()
        if runs is not None:
            return runs
        inline_next = self.inline_next_seq.value()
        if not inline_next:
            return _NEW
        self.inline_next_seq.clear()  # from now on fae-runs holds it
        return (inline_next, None, inline_next - 1, 0, True, None)

    def process_element(self, key: Any, key_enc: str, value: Any,
                        ctx: Any) -> Iterator[Any]:
        """Start the input's run, or queue the input while the key has a run in flight."""
        next_seq, running, last, queued, memory, head = self._key_runs()
        if running is not None:
            self.pending.add(value)
            self.runs_state.update((next_seq, running, last, queued + 1, memory, head))
            return iter(())
        self.runs_state.update((next_seq + 1, next_seq, last, 0, memory, value))
        if not self._operator_tracks_work():
            # Fires when the final watermark arrives at the end of a bounded input: the key's
            # remaining runs are then waited for (end of input waits for in-flight runs).
            ctx.timer_service().register_event_time_timer(END_OF_INPUT)
        self._submit(key, key_enc, next_seq, value, memory)
        return iter(())

    def runs_in_flight(self) -> list[tuple[str, int]]:
        """``(encoded key, sequence)`` of the runs submitted and not yet applied."""
        return [(key_enc, seq) for key_enc, (seq, _, _) in list(self._runs.items())]

    def close(self, timeout_s: float) -> None:
        """Stop the executor (see :meth:`RunExecutor.shutdown`)."""
        self.executor.shutdown(timeout_s)

    def _operator_tracks_work(self) -> bool:
        return self.completions is not None and self.completions.operator_tracks_work

    def _submit(self, key: Any, key_enc: str, seq: int, value: Any, memory: bool) -> None:
        """Submit run ``seq`` of ``value`` (``memory``: read the key's memory for it)."""
        completions = self.completions
        if completions is None:
            raise RuntimeError("runs in flight need the operator of process_with_checkpoints "
                               "(the function was given no completions)")
        handle = completions.handle()
        state = self.memory() if memory else {}
        if self.env.agent.is_async:  # a coroutine: no thread while it awaits
            future = self.executor.submit_async(self.env.execute_async, key, key_enc, seq,
                                                value, state)
        else:
            future = self.executor.submit(self.env.execute, key, key_enc, seq, value, state)
        self._runs[key_enc] = (seq, value, future)
        future.add_done_callback(lambda _: completions.push(handle))

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        """Apply the key's finished run and start the next queued one (resume the run in
        flight after a restore). At the end of input without an operator that drains the
        work (process mode), wait for all of the key's runs."""
        end_of_input = timestamp == END_OF_INPUT
        if end_of_input and self._operator_tracks_work():
            return  # the operator drained the work before the final watermark
        key = ctx.get_current_key()
        key_enc = encode_key(key)
        runs = self.runs_state.value()
        while runs is not None and runs[1] is not None:
            next_seq, seq, _, queued, memory, value = runs
            entry = self._runs.get(key_enc)
            if entry is None or entry[0] != seq:
                # Restored from a checkpoint with this run in flight: resume it (its
                # recorded actions and durable calls are replayed, not repeated).
                self._submit(key, key_enc, seq, value, memory)
                entry = self._runs[key_enc]
            future = entry[2]
            if not future.done() and not end_of_input:
                return  # its completion fires this again
            del self._runs[key_enc]
            result, failure = self.env.outcome(future.result)
            memory = memory or result.memory_changed
            head = None
            if queued:
                waiting = list(self.pending.get())
                head = waiting[0]
                if len(waiting) > 1:
                    self.pending.update(waiting[1:])
                else:
                    self.pending.clear()
                runs = (next_seq + 1, next_seq, seq, queued - 1, memory, head)
            else:
                runs = (next_seq, None, seq, 0, memory, None)
            self.runs_state.update(runs)
            self.completed[key_enc] = seq
            yield from self.apply(key, seq, value, result, failure)
            if not queued:
                if not end_of_input and not self._operator_tracks_work():
                    ctx.timer_service().delete_event_time_timer(END_OF_INPUT)
                return
            self._submit(key, key_enc, next_seq, head, memory)
            if not end_of_input:
                return
