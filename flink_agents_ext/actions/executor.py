"""Running runs off the task thread: a bounded pool, so slow calls of many keys overlap.

The task thread submits a run and goes on; a worker thread executes it (actions and their
durable calls, recorded in the store as they complete); the task thread later applies the
result in the key's context. :class:`RunExecutor` bounds the runs executing at once
(``max_in_flight``): :meth:`RunExecutor.submit` blocks while the bound is reached, which is
the function's backpressure. A run of an agent whose actions are all ``async def`` is a
coroutine on the executor's own event loop (:meth:`RunExecutor.submit_async`): it holds no
thread while it awaits. Elsewhere, ``async def`` actions run on one shared event loop while
their thread waits (:func:`run_coroutine`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Coroutine, Optional, TypeVar

T = TypeVar("T")
_log = logging.getLogger(__name__)

_loop_lock = threading.Lock()
_loop: Optional[asyncio.AbstractEventLoop] = None
_loop_thread: Optional[threading.Thread] = None


async def _outcome(coro: Coroutine[Any, Any, T]) -> tuple[bool, Any]:
    # A BaseException (SystemExit, KeyboardInterrupt) escaping a task stops the loop's
    # thread: the caller would wait forever, and so would every later async action.
    try:
        return True, await coro
    except BaseException as exc:
        return False, exc


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the shared background event loop and wait for its result; what it
    raises (a ``BaseException`` too) is raised here."""
    global _loop, _loop_thread
    with _loop_lock:
        # A loop whose thread is gone (the process forked after starting it) never runs
        # what it is given: start another.
        if _loop is None or _loop.is_closed() or _loop_thread is None or \
                not _loop_thread.is_alive():
            _loop, _loop_thread = _start_loop("fae-async-actions")
    ok, value = asyncio.run_coroutine_threadsafe(_outcome(coro), _loop).result()
    if not ok:
        raise value
    return value


async def _guarded(coro: Coroutine[Any, Any, T]) -> T:
    # As in _outcome: a BaseException must not escape a task and stop the loop's thread.
    try:
        return await coro
    except Exception:
        raise
    except BaseException as exc:
        raise RuntimeError(f"an async run raised {type(exc).__name__}: {exc}") from exc


def _settle(future: Future[Any], task: asyncio.Task[Any]) -> None:
    """Hand a coroutine run's outcome to the future its submitter holds."""
    if task.cancelled():
        future.set_exception(asyncio.CancelledError())
    elif task.exception() is not None:
        future.set_exception(task.exception())
    else:
        future.set_result(task.result())


def _start_loop(name: str) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=name, daemon=True)
    thread.start()
    return loop, thread


class RunExecutor:
    """Executes at most ``max_in_flight`` runs at once: sync runs on a pool of up to as many
    threads, coroutine runs on one event loop thread (both created when first needed)."""

    def __init__(self, max_in_flight: int) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.max_in_flight = max_in_flight
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._pool = ThreadPoolExecutor(max_workers=max_in_flight,
                                        thread_name_prefix="fae-run")
        self._in_flight = 0
        self._lock = threading.Lock()
        self._futures: set[Future[Any]] = set()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._starts: deque[tuple[Callable[..., Coroutine[Any, Any, Any]], tuple[Any, ...],
                                  Future[Any]]] = deque()
        self._wakeup_due = False

    @property
    def in_flight(self) -> int:
        """Runs executing now."""
        return self._in_flight

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Start ``fn(*args)`` on a worker; blocks while ``max_in_flight`` runs execute."""
        return self._started(lambda: self._pool.submit(fn, *args))

    def submit_async(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> Future[T]:
        """Start the coroutine ``fn(*args)`` on the executor's event loop; blocks while
        ``max_in_flight`` runs execute. Starts submitted while the loop has not picked up the
        earlier ones go with them: one wake-up of the loop per batch, not per run."""
        def start() -> Future[T]:
            future: Future[T] = Future()
            self._starts.append((fn, args, future))
            if not self._wakeup_due:
                self._wakeup_due = True
                if self._loop is None:
                    self._loop, _ = _start_loop("fae-async-runs")
                self._loop.call_soon_threadsafe(self._start_batch)
            return future
        return self._started(start)

    def _start_batch(self) -> None:
        """On the loop: start every coroutine submitted since the last batch."""
        self._wakeup_due = False
        loop, starts = self._loop, self._starts
        assert loop is not None
        while starts:
            fn, args, future = starts.popleft()
            if future.set_running_or_notify_cancel():
                task = loop.create_task(_guarded(fn(*args)))
                task.add_done_callback(functools.partial(_settle, future))

    def _cancel_tasks(self) -> None:
        """On the loop: cancel the coroutine runs, then stop the loop."""
        assert self._loop is not None
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        self._loop.call_soon(self._loop.stop)

    def _started(self, start: Callable[[], Future[T]]) -> Future[T]:
        self._slots.acquire()
        with self._lock:
            self._in_flight += 1
        try:
            future = start()
        except BaseException:
            self._release(None)
            raise
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._release)
        return future

    def _release(self, future: Optional[Future[Any]]) -> None:
        with self._lock:
            self._in_flight -= 1
            if future is not None:
                self._futures.discard(future)
        self._slots.release()

    def shutdown(self, timeout_s: float) -> bool:
        """Stop accepting runs, cancel those not started, and wait up to ``timeout_s`` for
        the executing ones, so that a failed attempt's runs do not overlap the restarted
        attempt's replay of them. Returns whether all of them finished."""
        with self._lock:
            running = list(self._futures)
        self._pool.shutdown(wait=False, cancel_futures=True)
        _, not_done = wait(running, timeout=timeout_s)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._cancel_tasks)
        if not_done:
            _log.warning("%d runs still executing %.0fs after close; they finish in the "
                         "background", len(not_done), timeout_s)
        return not not_done
