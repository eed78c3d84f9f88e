"""Parallel test workers (pytest-xdist, ``make test`` runs ``-n``): each worker's own
throwaway servers, and the groups of tests that must share one worker.

A worker (``PYTEST_XDIST_WORKER`` = ``gw0``, ``gw1``, ...) starts its own PostgreSQL server
and Kafka broker, in its own directory on its own port (the base port plus its number), the
first time one of its tests needs it. To start as few as possible, the tests that use the
``pg`` fixture run on one worker, those that use ``kafka`` on one, and those that start the
standalone cluster (one REST port) on one (:func:`group_of`).
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
