"""Python's cyclic garbage collector while a durable function is open.

With runs in flight, every run keeps its objects (coroutine or thread, frames, futures, its
records) alive for as long as its slow call takes. With CPython's default thresholds
``(700, 10, 10)`` a young-generation collection runs every 700 allocations and finds most
young objects still alive, so it promotes them, and the older generations' collections walk
thousands of live runs again and again. Measured in ``bench.scale`` (4,096 ``async def`` runs
in flight, each a 1 s call): the collector took 5.8 s of a 12.5 s run; with
:data:`DEFAULT_GC_THRESHOLD` 1.0 s, and runs/s rose from 2,620 to 3,427 (CPU per run from
0.42 to 0.23 ms).

The collector is one per interpreter: in thread mode every Python function of a
TaskManager shares it, in process mode every function of a Python worker. So the thresholds
are only ever *raised* (per generation, to at least the wanted value), once for all the
functions that ask while any of them is open, and put back when the last one closes (unless
someone else changed them meanwhile). Reference counting frees most objects at once either
way; raising the thresholds only delays the collection of garbage in reference cycles.
"""

from __future__ import annotations

import gc
import logging
import threading
from typing import Optional

_log = logging.getLogger(__name__)

#: ``(generation 0, 1, 2)`` thresholds a durable function asks for by default.
DEFAULT_GC_THRESHOLD = (50_000, 20, 100)

GcThreshold = tuple[int, int, int]

_lock = threading.Lock()
_holders: dict[int, GcThreshold] = {}  # id(holder) -> what it asked for
_original: Optional[GcThreshold] = None  # the thresholds before the first holder
_applied: Optional[GcThreshold] = None  # what we set last


def check_gc_threshold(value: object) -> Optional[GcThreshold]:
    """``value`` as thresholds (``None``: leave the collector alone).

    Raises:
        ValueError: not ``None`` nor three integers >= 1.
    """
    if value is None:
        return None
    if (not isinstance(value, (tuple, list)) or len(value) != 3
            or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in value)):
        raise ValueError(f"gc_threshold must be None or three integers >= 1 (generations 0, "
                         f"1, 2, as gc.set_threshold takes them), got {value!r}")
    return (value[0], value[1], value[2])


def _wanted() -> GcThreshold:
    """Per generation, the highest of the original thresholds and the holders' (``_lock``
    held, at least one holder)."""
    assert _original is not None
    a, b, c = (max(column) for column in zip(_original, *_holders.values()))
    return (a, b, c)


def raise_threshold(holder: object, threshold: GcThreshold) -> None:
    """Raise the collector's thresholds to at least ``threshold`` while ``holder`` holds them
    (until :func:`release`). Idempotent per holder."""
    global _original, _applied
    with _lock:
        current = gc.get_threshold()
        if not _holders or current != _applied:
            _original = current  # first holder, or someone else set them since
        _holders[id(holder)] = threshold
        wanted = _wanted()
        if wanted != current:
            gc.set_threshold(*wanted)
            _log.info("Python gc thresholds raised from %s to %s while runs are in flight "
                      "(gc_threshold=None leaves them alone)", current, wanted)
        _applied = wanted


def release(holder: object) -> None:
    """``holder`` no longer needs raised thresholds: the last holder puts back the ones from
    before the first (unless they were changed by someone else meanwhile)."""
    global _original, _applied
    with _lock:
        if _holders.pop(id(holder), None) is None:
            return
        current = gc.get_threshold()
        if current != _applied:
            return  # someone else set them: theirs now
        wanted = _wanted() if _holders else _original
        assert wanted is not None
        if wanted != current:
            gc.set_threshold(*wanted)
        _applied = wanted if _holders else None
        if not _holders:
            _original = None
