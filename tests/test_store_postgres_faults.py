"""The PostgreSQL action state store under faults: lost sessions, server restarts, an
unreachable server, statement errors, bad values (server: :mod:`tests.pg_server`)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import pytest
from psycopg import sql

from flink_agents_ext.store import (
    ActionRecord,
    CallRecord,
    CallStatus,
    StoreConfigError,
    StoreError,
)
from flink_agents_ext.store.postgres import PostgresStore
from tests.pg_server import (
    PgServer,
    assert_no_secret,
    exception_texts,
)
from tests.store_contract import (
    action_record,
    call_record,
    fill,
    rid,
    run_threads,
)


# -- connection loss ---------------------------------------------------------------------------
def backend_pid(store: PostgresStore) -> int:
    conn = store._conn
    assert conn is not None
    return int(conn.info.backend_pid)


def test_reconnects_after_its_session_is_terminated(
        pg: PgServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="flink_agents_ext.store.postgres")
    ns = f"ns-{uuid.uuid4().hex[:8]}"
    with pg.store() as store:
        store.put_action(action_record(rid(ns, seq=1)))
        old_pid = backend_pid(store)
        assert pg.query("SELECT pg_terminate_backend(%s)", (old_pid,)) == [(True,)]
        store.put_action(action_record(rid(ns, seq=2)))  # write on a new connection
        assert backend_pid(store) != old_pid
        assert [len(store.get_run(ns, "k", seq)) for seq in (1, 2)] == [1, 1]
        # Reads and multi-statement transactions reconnect too.
        pg.query("SELECT pg_terminate_backend(%s)", (backend_pid(store),))
        assert store.get_action(rid(ns, seq=2)) == action_record(rid(ns, seq=2))
        pg.query("SELECT pg_terminate_backend(%s)", (backend_pid(store),))
        assert store.clear_namespace(ns) == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and "reconnecting" in warnings[0].getMessage()
    assert_no_secret(pg.password, caplog.text)


def test_reconnects_after_a_server_restart(ensure_running: PgServer,
                                           caplog: pytest.LogCaptureFixture) -> None:
    pg = ensure_running
    caplog.set_level(logging.WARNING, logger="flink_agents_ext.store.postgres")
    ns = f"ns-{uuid.uuid4().hex[:8]}"
    with pg.store() as store:
        fill(store, ns, "k", range(1, 3))
        pg.control("restart")
        started = time.monotonic()
        store.put_action(action_record(rid(ns, seq=3)))
        store.put_call(call_record(rid(ns, seq=3), 0))
        elapsed = time.monotonic() - started
        assert store.size(ns) == 2 * 3 + 2
        assert store.prune(ns, {"k": 2}) == 6
    assert elapsed < 10
    assert any("reconnecting" in r.getMessage() for r in caplog.records)
    assert_no_secret(pg.password, caplog.text)


def test_restart_while_threads_write(ensure_running: PgServer) -> None:
    pg = ensure_running
    ns = f"ns-{uuid.uuid4().hex[:8]}"
    if not pg.managed:
        pytest.fail("this test must restart its server: unset FAE_PG_DSN")
    with pg.store(retries=8) as store:
        done = threading.Event()

        def write(i: int) -> None:
            seq = 0
            while not done.is_set() or seq < 20:
                store.put_action(action_record(rid(ns, f"t{i}", seq)))
                seq += 1
            store.put_action(action_record(rid(ns, f"t{i}", 10_000)))

        errors: list[BaseException] = []

        def run() -> None:
            try:
                run_threads(4, write)
            except BaseException as exc:
                errors.append(exc)

        workers = threading.Thread(target=run)
        workers.start()
        time.sleep(0.3)
        pg.control("restart")
        time.sleep(0.3)
        done.set()
        workers.join(timeout=60)
        assert not workers.is_alive()
        if errors:
            raise errors[0]
        for i in range(4):
            assert store.get_run(ns, f"t{i}", 10_000), f"thread {i} did not finish"
        store.clear_namespace(ns)


def test_server_down_longer_than_the_retry_budget(ensure_running: PgServer) -> None:
    pg = ensure_running
    ns = f"ns-{uuid.uuid4().hex[:8]}"
    store = pg.store(retries=3, backoff_s=0.1, connect_timeout_s=2)
    try:
        store.put_action(action_record(rid(ns, seq=1)))
        pg.control("stop")
        started = time.monotonic()
        with pytest.raises(StoreError, match="put_action failed after 4 attempt") as info:
            store.put_action(action_record(rid(ns, seq=2)))
        elapsed = time.monotonic() - started
        # 0.1 + 0.2 + 0.4 s of backoff (+-20 %), refused connections fail at once.
        assert 0.5 < elapsed < 3, elapsed
        assert_no_secret(pg.password, *exception_texts(info.value))
        with pytest.raises(StoreError, match="failed after 4 attempt"):
            store.get_action(rid(ns, seq=1))
        started = time.monotonic()
        with pytest.raises(StoreError, match="open failed after 4 attempt"):
            pg.store(retries=3, backoff_s=0.1)
        assert time.monotonic() - started < 3
        pg.control("start")
        # The same store object works again, and the failed write was not committed.
        assert store.get_action(rid(ns, seq=2)) is None
        assert store.get_action(rid(ns, seq=1)) == action_record(rid(ns, seq=1))
        assert store.clear_namespace(ns) == 1
    finally:
        store.close()


def test_unreachable_server_at_open_is_a_bounded_store_error() -> None:
    # Nothing listens on port 1: each attempt is refused at once.
    started = time.monotonic()
    with pytest.raises(StoreError, match=r"open failed after 3 attempt.*refused") as info:
        PostgresStore(host="127.0.0.1", port=1, dbname="d", user="u", password="not-logged",
                      retries=2, backoff_s=0.05)
    assert time.monotonic() - started < 2
    assert not isinstance(info.value, StoreConfigError)
    assert_no_secret("not-logged", *exception_texts(info.value))


def test_missing_database_is_not_retried(pg: PgServer) -> None:
    started = time.monotonic()
    with pytest.raises(StoreError, match=r"not retried.*does not exist"):
        pg.store(dbname="no_such_db_" + uuid.uuid4().hex[:6], retries=5, backoff_s=1.0)
    assert time.monotonic() - started < 3


def test_statement_errors_are_not_retried(pg: PgServer, fresh_schema: str,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="flink_agents_ext.store.postgres")
    with pg.store(schema=fresh_schema) as store:
        pg.query(sql.SQL("DROP TABLE {}.calls").format(sql.Identifier(fresh_schema)))
        with pytest.raises(StoreError, match="put_call failed: UndefinedTable"):
            store.put_call(call_record(rid("ns"), 0))
        store.put_action(action_record(rid("ns")))  # the connection is still usable
    assert not caplog.records


# -- PostgreSQL-specific data handling --------------------------------------------------------
def test_nul_in_error_message_is_replaced(pg: PgServer) -> None:
    ns = f"ns-{uuid.uuid4().hex[:8]}"
    with pg.store() as store:
        store.put_call(CallRecord(rid(ns), 0, "f", "d", CallStatus.ERROR,
                                  error_type="builtins.ValueError", error_message="a\x00b"))
        assert store.get_calls(rid(ns))[0].error_message == "a\ufffdb"
        store.clear_namespace(ns)


def test_nul_in_a_key_is_a_store_error(pg: PgServer) -> None:
    with pg.store() as store, pytest.raises(StoreError, match="put_action failed"):
        store.put_action(action_record(rid("ns", key="a\x00b")))


def test_payload_columns_must_be_bytes(pg: PgServer) -> None:
    ns = f"ns-{uuid.uuid4().hex[:8]}"
    with pg.store() as store:
        bad = ActionRecord(rid(ns), event="text", outputs=b"", events=b"",  # type: ignore[arg-type]
                           memory_updates=b"", completed=True)
        with pytest.raises(TypeError, match="event must be bytes"):
            store.put_action(bad)
        store.put_action(ActionRecord(rid(ns), event=bytearray(b"e"), outputs=b"",  # type: ignore[arg-type]
                                      events=memoryview(b"v"), memory_updates=b"",  # type: ignore[arg-type]
                                      completed=True))
        got = store.get_action(rid(ns))
        assert got is not None and (got.event, got.events) == (b"e", b"v")
        store.clear_namespace(ns)


def test_prune_of_many_keys_is_one_quick_statement(pg: PgServer) -> None:
    ns = f"ns-{uuid.uuid4().hex[:8]}"
    keys = [f"key-{i}" for i in range(1000)]
    with pg.store() as store:
        rows: list[tuple[Any, ...]] = [
            (ns, key, seq, "a", 0, b"e" * 100, b"", b"", b"", True)
            for key in keys for seq in (1, 2)]
        with pg.connect() as conn, conn.cursor() as cur:
            cur.executemany(sql.SQL(
                "INSERT INTO {}.actions VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")
                .format(sql.Identifier(pg.schema)), rows)
        started = time.perf_counter()
        assert store.prune(ns, {key: 1 for key in keys}) == 1000
        elapsed = time.perf_counter() - started
        assert store.size(ns) == 1000
        assert elapsed < 2.0, f"prune of 1000 keys took {elapsed:.3f}s"
        store.clear_namespace(ns)


def test_postgres_backend_is_registered() -> None:
    # The factory entry points at the real class; the password is never a setting.
    from flink_agents_ext.store import BACKENDS
    entry = BACKENDS["postgres"]
    assert (entry.module, entry.class_name) == ("flink_agents_ext.store.postgres",
                                                "PostgresStore")
    names = {s.name for s in entry.settings}
    assert "password" not in names and {"host", "port", "dbname", "user",
                                        "password_env"} <= names
