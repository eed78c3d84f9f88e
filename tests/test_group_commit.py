"""Group commit (``commit: group``) over a real SQLite file: the store contract, and what
group commit changes: when puts become durable, the dropped journal of completed actions,
write-through of PENDING entries, and failures that must not pass silently."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import pytest

from flink_agents_ext.store import (
    ActionRecord,
    CallRecord,
    CallStatus,
    GroupCommitStore,
    SQLiteStore,
    StoreConfigError,
    StoreError,
    open_store,
)
from tests.store_contract import (
    GroupCommitContract,
    StoreFactory,
    action_record,
    call_record,
    rid,
)

NS = "gc"


class TestGroupCommitContract(GroupCommitContract):
    """The backend contract through group commit over SQLite."""

    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> StoreFactory:
        path = str(tmp_path / "store.db")
        return lambda: GroupCommitStore(SQLiteStore(path), interval_ms=60_000)


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "gc.db")


def rows(path: str) -> int:
    """Records another connection sees (what is durable)."""
    with SQLiteStore(path) as other:
        return other.size(NS)


def test_puts_are_written_within_the_interval_without_any_other_call(path: str) -> None:
    store = GroupCommitStore(SQLiteStore(path), interval_ms=100)
    try:
        store.put_action(action_record(rid(NS, seq=1)))
        assert store.buffered == 1
        deadline = time.monotonic() + 10
        while rows(path) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert rows(path) == 1 and store.buffered == 0
    finally:
        store.close()


def test_reaching_max_records_writes_the_batch(path: str) -> None:
    with GroupCommitStore(SQLiteStore(path), interval_ms=60_000, max_records=3) as store:
        store.put_call(call_record(rid(NS, seq=1), 0))
        store.put_call(call_record(rid(NS, seq=2), 0))
        assert rows(path) == 0
        store.put_call(call_record(rid(NS, seq=3), 0))
        assert rows(path) == 3 and store.buffered == 0


def test_completed_action_replaces_its_buffered_journal(path: str) -> None:
    with GroupCommitStore(SQLiteStore(path), interval_ms=60_000) as store:
        done, running = rid(NS, seq=1), rid(NS, seq=2)
        store.put_call(call_record(done, 0))
        store.put_call(call_record(done, 1))
        store.put_action(action_record(done))
        store.put_call(call_record(running, 0))
        store.put_action(action_record(running, completed=False))
        assert store.buffered == 3
        store.flush()
        with SQLiteStore(path) as other:
            assert other.get_calls(done) == []  # a replay never reads it: not written
            assert other.get_action(done) == action_record(done)
            assert other.get_calls(running) == [call_record(running, 0)]


def test_completed_action_replaces_its_buffered_started_record(path: str) -> None:
    written: list[ActionRecord] = []

    class Counting(SQLiteStore):
        def put_many(self, actions: Any, calls: Any) -> None:
            written.extend(actions)
            super().put_many(actions, calls)

    with GroupCommitStore(Counting(path), interval_ms=60_000) as store:
        done, other_run = rid(NS, seq=1), rid(NS, seq=2)
        started = action_record(done, completed=False)
        store.put_many((started,), (call_record(done, 0),))  # as the first durable call does
        store.put_action(action_record(other_run, completed=False))
        store.put_action(action_record(done))
        assert store.buffered == 2
        store.flush()
        assert written == [action_record(done), action_record(other_run, completed=False)]
        with SQLiteStore(path) as reader:
            assert reader.get_action(done) == action_record(done)
            assert reader.get_calls(done) == []


def test_pending_entry_is_written_through_with_everything_before_it(path: str) -> None:
    with GroupCommitStore(SQLiteStore(path), interval_ms=60_000) as store:
        store.put_action(action_record(rid(NS, seq=1)))
        pending = CallRecord(rid(NS, seq=2), 0, "pay", "d", CallStatus.PENDING)
        store.put_call(pending)
        assert store.buffered == 0
        with SQLiteStore(path) as other:
            assert other.get_calls(rid(NS, seq=2)) == [pending]
            assert other.get_action(rid(NS, seq=1)) == action_record(rid(NS, seq=1))


def test_reads_and_prune_see_every_earlier_put(path: str) -> None:
    with GroupCommitStore(SQLiteStore(path), interval_ms=60_000) as store:
        store.put_action(action_record(rid(NS, "k", 1)))
        assert store.recorded_runs(NS) == {("k", 1)}
        store.put_action(action_record(rid(NS, "k", 2)))
        store.put_call(call_record(rid(NS, "k", 3), 0))
        # The prune must not run before the buffered records: none may outlive it.
        assert store.prune(NS, {"k": 3}) == 3
        assert store.size(NS) == 0 and rows(path) == 0


def test_close_writes_the_buffer_and_later_use_raises(path: str) -> None:
    store = GroupCommitStore(SQLiteStore(path), interval_ms=60_000)
    store.put_action(action_record(rid(NS)))
    store.close()
    store.close()  # idempotent
    assert rows(path) == 1
    with pytest.raises(StoreError, match="closed"):
        store.put_action(action_record(rid(NS, seq=2)))
    with pytest.raises(StoreError, match="closed"):
        store.size(NS)


class FailingStore(SQLiteStore):
    """A real SQLite store whose batch writes fail while ``fail`` is set."""

    fail = False

    def put_many(self, actions: Sequence[ActionRecord], calls: Sequence[CallRecord]) -> None:
        if self.fail:
            raise StoreError("disk full (injected)")
        super().put_many(actions, calls)


def test_a_failed_background_write_is_raised_by_the_next_operation(path: str) -> None:
    inner = FailingStore(path)
    store = GroupCommitStore(inner, interval_ms=20)
    try:
        inner.fail = True
        store.put_action(action_record(rid(NS, seq=1)))
        deadline = time.monotonic() + 10
        while store.buffered and time.monotonic() < deadline:
            time.sleep(0.02)
        inner.fail = False  # even once the disk is fine again: the batch is gone
        for operation in (lambda: store.put_action(action_record(rid(NS, seq=2))),
                          lambda: store.get_run(NS, "k", 1), store.flush):
            with pytest.raises(StoreError, match="earlier batch could not be written"):
                operation()
    finally:
        store.close()


def test_a_failed_flush_raises_at_once(path: str) -> None:
    inner = FailingStore(path)
    with GroupCommitStore(inner, interval_ms=60_000) as store:
        store.put_action(action_record(rid(NS)))
        inner.fail = True
        with pytest.raises(StoreError, match="injected"):
            store.flush()


def test_open_store_commit_settings(path: str) -> None:
    store = open_store({"backend": "sqlite", "path": path, "commit": "group",
                        "commit_interval_ms": 25, "commit_max_records": 7})
    try:
        assert isinstance(store, GroupCommitStore)
        assert store.interval_s == 0.025 and store.max_records == 7
    finally:
        store.close()
    plain = open_store({"backend": "sqlite", "path": path, "commit": "each"})
    assert isinstance(plain, SQLiteStore)
    plain.close()


@pytest.mark.parametrize("settings, message", [
    ({"commit": "sometimes"}, "'commit' must be one of"),
    ({"commit": 1}, "'commit'"),
    ({"commit": "group", "commit_interval_ms": 0}, "commit_interval_ms"),
    ({"commit": "group", "commit_max_records": "10"}, "commit_max_records"),
    ({"commit_interval_ms": 10}, "need commit: group"),
])
def test_open_store_rejects_bad_commit_settings(path: str, settings: dict,
                                                message: str) -> None:
    with pytest.raises(StoreConfigError, match=message):
        open_store({"backend": "sqlite", "path": path, **settings})
