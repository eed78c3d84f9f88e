"""Completions: work that finished off the task thread, handed back to it without polling.

A function that runs work on other threads (``DurableAgentFunction`` with
``max_in_flight > 0``) must apply each result on the task thread, with the result's key
current (keyed state, outputs). Instead of a processing-time timer per key per poll
interval, the Java operators run *one* non-keyed processing-time callback every
:meth:`~flink_agents_ext.checkpoint.function.CheckpointedKeyedProcessFunction.completion_interval_ms`
while work is outstanding. It takes the finished keys' handles (:meth:`Completions.take`)
and fires, for each, the function's ``on_timer`` (processing-time domain, the current
processing time as timestamp) with that key current: the same path, outputs and keyed
state as a timer of that key, one firing per finished run.

* On the task thread, when work for the current key starts, the function takes the key's
  :meth:`Completions.handle` (thread mode: a number the Java operator maps to its key;
  process mode: PyFlink's state key); when the work finishes, any thread
  :meth:`Completions.push` es it.
* A key with work outstanding keeps an event-time timer at :data:`RESUME_TIMER` (the end of
  a bounded input fires it, so the function can wait for its work). After a restore, the
  Java operator fires one processing-time timer for each key holding such a timer, so the
  function resumes the work the checkpoint had in flight.
* The thread-mode operator tracks the work itself (:attr:`Completions.operator_tracks_work`,
  no call from Python for it): taking a handle registers the key's :data:`RESUME_TIMER`
  timer, a fired key that took no new handle has it deleted, and after the final watermark's
  timers fired (end of a bounded input) the operator keeps collecting and firing finished
  keys until no handle is outstanding, before it forwards the watermark. The function then
  never waits for work in ``on_timer``: at the end of input every key starts its next piece
  of work before any is waited for. In process mode the function registers and deletes the
  timer itself, and the Python bridge does the same drain (:meth:`Completions.finish`) when
  the first key's :data:`RESUME_TIMER` fires, before that timer's ``on_timer``: there too
  every key starts its next piece of work as soon as its previous one finished, instead of
  one key after another.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Optional

#: The event-time timer a key with outstanding work holds (the final watermark fires it).
RESUME_TIMER = 2**63 - 1


class Completions:
    """A thread-safe queue of key handles whose work finished.

    Args:
        key_handle: returns the current key's handle (task thread only).
        operator_tracks_work: the operator keeps each key's :data:`RESUME_TIMER` timer and
            drains the outstanding work at the end of input (see above).

    Attributes:
        operator_tracks_work: as given.
    """

    def __init__(self, key_handle: Callable[[], Any],
                 operator_tracks_work: bool = False) -> None:
        self._key_handle = key_handle
        self.operator_tracks_work = operator_tracks_work
        self._done: deque[Any] = deque()
        self._lock = threading.Lock()
        self._pushed = threading.Event()
        self._waiting = False  # only :meth:`finish` waits: no Event.set per push before
        self._outstanding = 0

    @property
    def outstanding(self) -> int:
        """Handles given out by :meth:`handle` and not yet returned by :meth:`take`."""
        return self._outstanding

    def handle(self) -> Any:
        """The current key's handle, for one piece of work about to start (task thread)."""
        with self._lock:
            self._outstanding += 1
        return self._key_handle()

    def push(self, handle: Any) -> None:
        """The work of ``handle`` finished (any thread)."""
        self._done.append(handle)
        if self._waiting:
            self._pushed.set()

    def take(self) -> list[Any]:
        """Every handle pushed since the last call, in push order (task thread)."""
        done = self._done
        taken = []
        while done:
            taken.append(done.popleft())
        if taken:
            with self._lock:
                self._outstanding -= len(taken)
        return taken

    def _wait_take(self, timeout_s: float) -> list[Any]:
        """:meth:`take`, waiting at most ``timeout_s`` for a first handle when none is there
        (task thread)."""
        self._waiting = True  # before the take: a push after it sets the event
        self._pushed.clear()
        taken = self.take()
        if not taken and self._pushed.wait(timeout_s):
            taken = self.take()
        return taken

    def finish(self, fire: Callable[[list[Any]], Iterable[Any]], poll_s: float = 0.05,
               timeout_s: Optional[float] = None) -> Iterator[Any]:
        """At the end of input: hand every finished handle to ``fire`` (which applies that
        key's work and may start its next piece, taking a new handle) until none is
        outstanding; yield what ``fire`` emits (task thread). Waits as long as the work takes
        (the end of input waits for it), or at most ``timeout_s``.

        Raises:
            TimeoutError: work was still outstanding after ``timeout_s``.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while self._outstanding > 0:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"{self._outstanding} piece(s) of work still "
                                       f"outstanding at the end of input after {timeout_s} s")
                taken = self._wait_take(poll_s)
                if taken:
                    yield from fire(taken)
        finally:
            self._waiting = False
