"""Group commit edges the mutation testing showed unpinned (issue 16), over a real SQLite
file: the defaults, settings checked by the constructor, the background thread (a daemon,
gone after close), the closed-store error, and a batch written every interval under steady
puts instead of being postponed by each new put."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from flink_agents_ext.store import GroupCommitStore, SQLiteStore, StoreConfigError, StoreError
from tests.store_contract import action_record, rid

NS = "gc-edges"
THREAD = "flink-agents-ext-group-commit"


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "gc.db")


def flushers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD]


def durable(path: str) -> int:
    """Records another connection sees."""
    with SQLiteStore(path) as other:
        return other.size(NS)


def test_defaults_and_repr(path: str) -> None:
    inner = SQLiteStore(path)
    store = GroupCommitStore(inner)
    try:
        assert repr(store) == f"GroupCommitStore({inner!r}, interval_ms=50, max_records=10000)"
        assert store.interval_s == 0.05 and store.max_records == 10_000
    finally:
        store.close()


@pytest.mark.parametrize("options, setting", [
    ({"interval_ms": 0}, "commit_interval_ms"),
    ({"interval_ms": -5}, "commit_interval_ms"),
    ({"max_records": 0}, "commit_max_records"),
])
def test_constructor_checks_its_settings(path: str, options: dict, setting: str) -> None:
    before = len(flushers())
    with pytest.raises(StoreConfigError, match=setting):
        GroupCommitStore(SQLiteStore(path), **options)
    assert len(flushers()) == before, "no thread left behind"


def test_flusher_is_a_daemon_thread_that_ends_with_close(path: str) -> None:
    before = set(flushers())
    store = GroupCommitStore(SQLiteStore(path), interval_ms=60_000)
    [mine] = [t for t in flushers() if t not in before]
    assert mine.daemon, "an unclosed store must not keep the process alive"
    store.close()
    assert not mine.is_alive(), "close waits for the flusher"


def test_closed_store_error(path: str) -> None:
    store = GroupCommitStore(SQLiteStore(path))
    store.close()
    with pytest.raises(StoreError, match=r"^group commit: the store is closed$"):
        store.put_action(action_record(rid(NS)))


def test_steady_puts_are_written_every_interval(path: str) -> None:
    # Each put finds whether the oldest buffered put is interval_ms old: a stream of puts
    # closer together than the interval must not postpone the batch forever.
    store = GroupCommitStore(SQLiteStore(path), interval_ms=150)
    try:
        started = time.monotonic()
        seq = 0
        while time.monotonic() - started < 1.0:
            store.put_action(action_record(rid(NS, seq=seq)))
            seq += 1
            time.sleep(0.02)
        assert durable(path) > 0, "no batch was written while puts kept coming"
    finally:
        store.close()
    assert durable(path) == seq
