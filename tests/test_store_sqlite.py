"""The SQLite action state store: the backend contract plus SQLite-specific behaviour."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from flink_agents_ext.store import (
    ActionRecord,
    ActionStateStore,
    RecordId,
    SQLiteStore,
    StoreConfigError,
    StoreError,
    open_store,
)
from flink_agents_ext.store.base import LineageRecord
from flink_agents_ext.store.sqlite import APPLICATION_ID, SCHEMA_VERSION
from tests.store_contract import (
    StoreContract,
    StoreFactory,
    action_record,
    check_processes_creating_at_once,
    check_put_survives_a_killed_process,
    rid,
)


class TestSQLiteStoreContract(StoreContract):
    """The backend contract on a SQLite file in the test's temporary directory."""

    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> StoreFactory:
        path = str(tmp_path / "store.db")
        return lambda: SQLiteStore(path)


def raw(path: Path, sql: str) -> Any:
    """Run one statement on the file with a plain connection; return its first row."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchone()
    finally:
        conn.close()


# -- configuration and opening -------------------------------------------------------------
@pytest.mark.parametrize("synchronous", ["normal", "OFF", "FULL", "Extra"])
def test_synchronous_modes_are_accepted(tmp_path: Path, synchronous: str) -> None:
    SQLiteStore(str(tmp_path / "s.db"), synchronous=synchronous).close()


@pytest.mark.parametrize("synchronous", ["SOMETIMES", "", "2", None, 1])
def test_bad_synchronous_is_a_config_error(tmp_path: Path, synchronous: Any) -> None:
    with pytest.raises(StoreConfigError, match="synchronous"):
        SQLiteStore(str(tmp_path / "s.db"), synchronous=synchronous)
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize("timeout", [-1, 1.5, "10", True])
def test_bad_busy_timeout_is_a_config_error(tmp_path: Path, timeout: Any) -> None:
    with pytest.raises(StoreConfigError, match="busy_timeout_ms"):
        SQLiteStore(str(tmp_path / "s.db"), busy_timeout_ms=timeout)


def test_new_file_gets_schema_wal_and_incremental_auto_vacuum(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "store.db"  # parent directories are created
    SQLiteStore(str(path)).close()
    assert raw(path, "PRAGMA user_version") == (SCHEMA_VERSION,)
    assert raw(path, "PRAGMA application_id") == (APPLICATION_ID,)
    assert raw(path, "PRAGMA journal_mode") == ("wal",)
    assert raw(path, "PRAGMA auto_vacuum") == (2,)  # INCREMENTAL
    assert raw(path, "SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_master "
                     "WHERE type = 'table' ORDER BY name)") == (
        "actions,calls,lineages,prune_boundary,prune_marks",)


def test_version_1_file_is_upgraded_and_keeps_its_records(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with SQLiteStore(str(path)) as store:
        store.put_action(action_record(rid("ns")))
    raw(path, "DROP TABLE lineages")  # the layout of version 1
    raw(path, "PRAGMA user_version = 1")
    with SQLiteStore(str(path)) as store:
        assert store.get_action(rid("ns")) == action_record(rid("ns"))
        assert store.get_lineage("ns") is None
        store.set_lineage("ns", LineageRecord("job", (("job", None),)))
    assert raw(path, "PRAGMA user_version") == (SCHEMA_VERSION,) == (2,)


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with SQLiteStore(str(path)) as store:
        store.put_action(action_record(rid("ns")))
    raw(path, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        SQLiteStore(str(path))


def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE actions (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not an action state store"):
        SQLiteStore(str(path))
    raw(path, "PRAGMA user_version = 7")
    with pytest.raises(StoreError, match="not an action state store"):
        SQLiteStore(str(path))


@pytest.mark.parametrize("content", [b"this is not a database" * 100, b"\x00" * 5000])
def test_garbage_file_is_a_store_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(content)
    with pytest.raises(StoreError, match=str(path)) as info:
        SQLiteStore(str(path))
    assert not isinstance(info.value, StoreConfigError)


def test_directory_as_path_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open"):
        SQLiteStore(str(tmp_path))


def test_in_memory_database(tmp_path: Path) -> None:
    with SQLiteStore(":memory:") as store:
        store.put_action(action_record(rid("ns")))
        assert store.size() == 1


def test_payload_columns_must_be_bytes(tmp_path: Path) -> None:
    with SQLiteStore(str(tmp_path / "s.db")) as store:
        bad = ActionRecord(rid("ns"), event="text", outputs=b"", events=b"",  # type: ignore[arg-type]
                           memory_updates=b"", completed=True)
        with pytest.raises(TypeError, match="event must be bytes"):
            store.put_action(bad)
        store.put_action(ActionRecord(rid("ns"), event=bytearray(b"e"), outputs=b"",  # type: ignore[arg-type]
                                      events=memoryview(b"v"), memory_updates=b"",  # type: ignore[arg-type]
                                      completed=True))
        got = store.get_action(rid("ns"))
        assert got is not None and (got.event, got.events) == (b"e", b"v")


# -- durability ------------------------------------------------------------------------------
def test_put_survives_a_killed_process(tmp_path: Path) -> None:
    path = str(tmp_path / "store.db")
    check_put_survives_a_killed_process(
        f"from flink_agents_ext.store import SQLiteStore\nstore = SQLiteStore({path!r})",
        lambda: SQLiteStore(path))


def test_processes_creating_the_same_file_at_once(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    check_processes_creating_at_once(
        f"from flink_agents_ext.store import SQLiteStore\nstore = SQLiteStore({str(path)!r})",
        lambda: SQLiteStore(str(path)), writes=20)
    assert raw(path, "PRAGMA auto_vacuum") == (2,)


# -- file size ---------------------------------------------------------------------------------
PAYLOAD = bytes(range(256)) * 4  # ~1 KB, not compressible by the page layout


def write_round(store: ActionStateStore, round_no: int, records: int) -> None:
    """One round: ``records`` keys each get run ``round_no`` with a ~1 KB event."""
    for i in range(records):
        store.put_action(ActionRecord(RecordId("ns", f"key-{i}", round_no, "act", 0),
                                      event=PAYLOAD, outputs=b"[]", events=b"[]",
                                      memory_updates=b"{}", completed=True))


def steady_state_sizes(path: Path, rounds: int, records: int, prune: bool) -> list[int]:
    """Write ``rounds`` rounds, pruning the previous round after each when ``prune``;
    return the main database file's size after every round."""
    sizes = []
    with SQLiteStore(str(path)) as store:
        for round_no in range(rounds):
            write_round(store, round_no, records)
            if prune and round_no > 0:
                deleted = store.prune("ns", {f"key-{i}": round_no - 1 for i in range(records)})
                assert deleted == records
            sizes.append(path.stat().st_size)
        wal = Path(f"{path}-wal")
        assert wal.stat().st_size <= SQLiteStore.JOURNAL_SIZE_LIMIT
    return sizes


def test_file_size_is_bounded_under_steady_write_and_prune(tmp_path: Path) -> None:
    # Freed pages are reused by later writes, so the file stops growing once the live data
    # (one round) plus what one round frees fits in it.
    rounds, records = 200, 200
    sizes = steady_state_sizes(tmp_path / "store.db", rounds, records, prune=True)
    middle, end = sizes[rounds // 2 - 1], sizes[-1]
    live = records * len(PAYLOAD)
    assert middle >= live, "the measurement does not see the data (still in the WAL?)"
    assert end <= 1.5 * middle, f"file grew from {middle} to {end} bytes"
    assert max(sizes) <= 1.5 * middle


def test_file_size_measurement_detects_growth(tmp_path: Path) -> None:
    # Control for the test above: without pruning the same measurement fails the bound.
    rounds, records = 40, 200
    sizes = steady_state_sizes(tmp_path / "store.db", rounds, records, prune=False)
    middle, end = sizes[rounds // 2 - 1], sizes[-1]
    assert end > 1.5 * middle, f"{middle} -> {end}"


def test_file_shrinks_after_a_large_prune(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    records = 3000
    with SQLiteStore(str(path)) as store:
        write_round(store, 0, records)
    peak = path.stat().st_size  # closing the last connection checkpointed the WAL
    assert peak >= records * len(PAYLOAD)
    with SQLiteStore(str(path)) as store:
        write_round(store, 1, 10)
        assert store.prune("ns", {f"key-{i}": 0 for i in range(records)}) == records
        # The prune freed most of the file: an incremental vacuum gave it back and the WAL
        # was checkpointed and truncated.
        assert path.stat().st_size < peak / 4, (peak, path.stat().st_size)
        assert Path(f"{path}-wal").stat().st_size == 0
        assert store.size("ns") == 10
    assert raw(path, "PRAGMA integrity_check") == ("ok",)


# -- the factory --------------------------------------------------------------------------------
def test_open_store_opens_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "f" / "store.db"
    store = open_store({"backend": "sqlite", "path": str(path), "synchronous": "FULL",
                        "busy_timeout_ms": 500})
    try:
        assert isinstance(store, SQLiteStore)
        store.put_action(action_record(rid("ns")))
    finally:
        store.close()
    with open_store({"backend": "sqlite", "path": str(path), "synchronous": None}) as again:
        assert again.size("ns") == 1


@pytest.mark.parametrize(("config", "message"), [
    ({}, "'backend' is missing"),
    ({"path": "x.db"}, "'backend' is missing"),
    ({"backend": "mysql", "path": "x.db"}, "'backend' must be one of \\['sqlite'"),
    ({"backend": 1, "path": "x.db"}, "'backend' must be one of"),
    ({"backend": "sqlite"}, "'path' is missing"),
    ({"backend": "sqlite", "path": None}, "'path' is missing"),
    ({"backend": "sqlite", "path": 123}, "'path' must be a non-empty string, got int"),
    ({"backend": "sqlite", "path": ""}, "'path' .* non-empty string"),
    ({"backend": "sqlite", "path": "x.db", "synchronous": 2},
     "'synchronous' must be one of OFF, NORMAL, FULL, EXTRA, got int"),
    ({"backend": "sqlite", "path": "x.db", "synchronous": "SOMETIMES"}, "synchronous"),
    ({"backend": "sqlite", "path": "x.db", "busy_timeout_ms": "10"},
     "'busy_timeout_ms' must be an integer >= 0, got str"),
    ({"backend": "sqlite", "path": "x.db", "busy_timeout_ms": True},
     "'busy_timeout_ms' must be an integer >= 0, got bool"),
    ({"backend": "sqlite", "path": "x.db", "pth": "y.db"}, "unknown store setting.*'pth'"),
])
def test_open_store_config_errors_name_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               config: dict[str, Any], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreConfigError, match=message):
        open_store(config)
    assert not (tmp_path / "x.db").exists()


def test_open_store_needs_a_mapping() -> None:
    with pytest.raises(StoreConfigError, match="mapping"):
        open_store("sqlite:///x.db")  # type: ignore[arg-type]
