"""Parallel test workers (pytest-xdist, ``make test`` runs ``-n``): each worker's own
throwaway servers, and the groups of tests that must share one worker.

A worker (``PYTEST_XDIST_WORKER`` = ``gw0``, ``gw1``, ...) starts its own PostgreSQL server
and Kafka broker, in its own directory on its own port (the base port plus its number), the
first time one of its tests needs it. To start as few as possible, the tests that use the
``pg`` fixture run on one worker, those that use ``kafka`` on one, and those that start the
standalone cluster (one REST port) on one (:func:`group_of`). The groups start first (xdist
hands out the work units with the most tests first), then the single tests in the order of
:func:`start_rank`: the longest first, the quick unit tests last, to fill the gaps.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional

#: This process's worker name ("" when the suite runs in one process).
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
#: This worker's number (0 without xdist).
NUMBER = int(WORKER[2:]) if WORKER.startswith("gw") and WORKER[2:].isdigit() else 0


def server_dir(base: Path) -> Path:
    """``base`` for the whole suite, ``base-gwN`` for worker N."""
    return base.with_name(f"{base.name}-{WORKER}") if WORKER else base


def port(base: Optional[str]) -> Optional[str]:
    """The base port plus the worker's number (None stays None: a free port)."""
    return None if not base else str(int(base) + NUMBER)


def group_of(path: str, fixtures: Iterable[str]) -> Optional[str]:
    """The xdist group of a test (its file ``path`` and the fixtures it uses), or None."""
    names = set(fixtures)
    if "kafka" in names:
        return "kafka"
    if "pg" in names:
        return "pg"
    if Path(path).name.startswith("test_cluster"):
        return "cluster"
    return None


#: Test files whose tests take longest (the chaos short form: minutes), started first.
FIRST = ("test_chaos.py",)


def start_rank(path: str, flink: bool) -> int:
    """The rank of a test in the start order: 0 for the Flink tests of :data:`FIRST`, 1 for
    the other Flink tests, 2 for the rest (the order of the collection is kept within a
    rank)."""
    if not flink:
        return 2
    return 0 if Path(path).name in FIRST else 1
