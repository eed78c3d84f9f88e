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
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable

#: The event-time timer a key with outstanding work holds (the final watermark fires it).
RESUME_TIMER = 2**63 - 1


class Completions:
    """A thread-safe queue of key handles whose work finished.

    Args:
        key_handle: returns the current key's handle (task thread only).
    """

    def __init__(self, key_handle: Callable[[], Any]) -> None:
        self._key_handle = key_handle
        self._done: deque[Any] = deque()
        self._lock = threading.Lock()
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
