"""The PostgreSQL action state store: the backend contract against a real server, plus
PostgreSQL-specific behaviour (passwords, connection loss, schema creation).

The server: :mod:`tests.pg_server`. Connection loss and errors:
``test_store_postgres_faults.py``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import pytest
from psycopg import sql

from flink_agents_ext.store import (
    GroupCommitStore,
    StoreConfigError,
    StoreError,
    open_store,
)
from flink_agents_ext.store.postgres import SCHEMA_VERSION, TABLES, PostgresStore
from tests.pg_server import (
    PASSWORD_ENV,
    PgServer,
    assert_no_secret,
    drop_schema,
    exception_texts,
)
from tests.store_contract import (
    GroupCommitContract,
    StoreContract,
    StoreFactory,
    action_record,
    check_processes_creating_at_once,
    rid,
    run_threads,
)


class TestPostgresStoreContract(StoreContract):
    """The backend contract on the test server, in a schema of this session."""

    @pytest.fixture
    def store_factory(self, pg: PgServer) -> StoreFactory:
        return lambda: pg.store()


class TestPostgresGroupCommitContract(GroupCommitContract):
    """The contract through group commit (``put_many`` pipelined in one transaction)."""

    @pytest.fixture
    def store_factory(self, pg: PgServer) -> StoreFactory:
        return lambda: GroupCommitStore(pg.store(), interval_ms=60_000)


# -- configuration ---------------------------------------------------------------------------
def test_server_default_collation_is_not_code_point_order(pg: PgServer) -> None:
    # The contract's code-point ordering test means something only when the database's own
    # collation orders differently (pg-test-server.sh uses ICU en-US).
    if not pg.managed:
        pytest.fail("this test needs a server whose collation it chose: unset FAE_PG_DSN")
    assert pg.query("SELECT 'B' < 'a', 'B' < 'a' COLLATE \"C\"") == [(False, True)]


def test_open_store_opens_postgres(pg: PgServer, fresh_schema: str) -> None:
    config = {"backend": "postgres", "host": pg.host, "port": pg.port, "dbname": pg.dbname,
              "user": pg.user, "password_env": PASSWORD_ENV, "connect_timeout_s": 3,
              "retries": 2, "backoff_s": 0.05, "schema": fresh_schema}
    with open_store(config) as store:
        assert isinstance(store, PostgresStore) and store.schema == fresh_schema
        store.put_action(action_record(rid("ns")))
        assert store.size("ns") == 1
    # As flink_agents_ext.config produces it: defaults written out, None for "default".
    config.update(connect_timeout_s=5, retries=5, backoff_s=None)
    with open_store(config) as again:
        assert again.size("ns") == 1


def test_open_store_default_schema_is_public(pg: PgServer) -> None:
    with open_store({"backend": "postgres", "host": pg.host, "port": pg.port,
                     "dbname": pg.dbname, "user": pg.user,
                     "password_env": PASSWORD_ENV}) as store:
        assert isinstance(store, PostgresStore) and store.schema == "public"
        ns = f"ns-{uuid.uuid4().hex[:8]}"
        store.put_action(action_record(rid(ns)))
        assert store.clear_namespace(ns) == 1


BASE = {"backend": "postgres", "host": "127.0.0.1", "port": 1, "dbname": "d", "user": "u"}


@pytest.mark.parametrize(("config", "message"), [
    ({k: v for k, v in BASE.items() if k != "host"}, "'host' is missing"),
    ({k: v for k, v in BASE.items() if k != "port"}, "'port' is missing"),
    ({k: v for k, v in BASE.items() if k != "dbname"}, "'dbname' is missing"),
    ({k: v for k, v in BASE.items() if k != "user"}, "'user' is missing"),
    ({**BASE, "port": "5432"}, "'port' must be an integer in 1..65535, got str"),
    ({**BASE, "port": True}, "'port' must be an integer in 1..65535, got bool"),
    ({**BASE, "port": 70000}, "'port' must be an integer in 1..65535, got int 70000"),
    ({**BASE, "host": ""}, "'host' .* non-empty string"),
    ({**BASE, "retries": 1.5}, "'retries' must be an integer >= 0, got float 1.5"),
    ({**BASE, "retries": -1}, "'retries' must be an integer >= 0, got int -1"),
    ({**BASE, "connect_timeout_s": "5"}, "'connect_timeout_s' must be a number > 0, got str"),
    ({**BASE, "connect_timeout_s": 0}, "'connect_timeout_s' must be a number > 0, got int 0"),
    ({**BASE, "backoff_s": -0.1}, "'backoff_s' must be a number >= 0, got float -0.1"),
    ({**BASE, "schema": ""}, "'schema' .* non-empty string"),
    ({**BASE, "password_env": 3}, "'password_env' must be a string, got int 3"),
    # Secrets are never settings: the password comes from the environment.
    ({**BASE, "password": "hunter2"}, "unknown store setting.*'password'"),
    ({**BASE, "dsn": "postgresql://u@h/d"}, "unknown store setting.*'dsn'"),
    ({"backend": "postgress", **{k: v for k, v in BASE.items() if k != "backend"}},
     "'backend' must be one of \\['sqlite', 'postgres', 'kafka'\\]"),
])
def test_open_store_config_errors_name_the_key(config: dict[str, Any], message: str) -> None:
    with pytest.raises(StoreConfigError, match=message) as info:
        open_store(config)
    assert "hunter2" not in str(info.value)


def test_missing_password_env_var_is_a_config_error(pg: PgServer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAE_TEST_NO_SUCH_VAR", raising=False)
    started = time.monotonic()
    with pytest.raises(StoreConfigError, match="'FAE_TEST_NO_SUCH_VAR' is not set") as info:
        pg.store(password_env="FAE_TEST_NO_SUCH_VAR")
    assert time.monotonic() - started < 1  # no connection attempt
    assert_no_secret(pg.password, *exception_texts(info.value))
    monkeypatch.setenv("FAE_TEST_NO_SUCH_VAR", "")
    with pytest.raises(StoreConfigError, match="'FAE_TEST_NO_SUCH_VAR' is empty"):
        pg.store(password_env="FAE_TEST_NO_SUCH_VAR")


def test_wrong_password_fails_fast_without_leaking_it(
        pg: PgServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    wrong = "Wr0ng-S3cret-" + uuid.uuid4().hex[:8]
    monkeypatch.setenv("FAE_TEST_WRONG_PW", wrong)
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    with pytest.raises(StoreError, match="password authentication failed") as info:
        pg.store(password_env="FAE_TEST_WRONG_PW", retries=5, backoff_s=1.0)
    elapsed = time.monotonic() - started
    assert not isinstance(info.value, StoreConfigError)
    assert elapsed < 3, f"an authentication failure took {elapsed:.1f}s (retried?)"
    assert_no_secret(wrong, *exception_texts(info.value), caplog.text)
    with pytest.raises(StoreError) as info:
        pg.store(password=wrong, retries=0)
    assert_no_secret(wrong, *exception_texts(info.value), caplog.text)


def test_repr_and_target_hold_no_password(pg: PgServer) -> None:
    with pg.store() as store:
        target = f"{pg.user}@{pg.host}:{pg.port}/{pg.dbname} (schema {pg.schema})"
        assert store.target == target
        assert repr(store) == f"PostgresStore({target!r}, open)"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"port": 0}, "port"), ({"port": "5432"}, "port"), ({"host": ""}, "host"),
    ({"dbname": None}, "dbname"), ({"user": ""}, "user"), ({"schema": ""}, "schema"),
    ({"retries": True}, "retries"), ({"backoff_s": "1"}, "backoff_s"),
    ({"connect_timeout_s": -1}, "connect_timeout_s"), ({"password_env": None}, "password_env"),
    ({"password": b"bytes-pw", "password_env": ""}, "password must be a string, got bytes"),
])
def test_constructor_validates_settings(pg: PgServer, kwargs: dict[str, Any],
                                        message: str) -> None:
    with pytest.raises(StoreConfigError, match=message) as info:
        pg.store(**kwargs)
    assert "bytes-pw" not in str(info.value)


# -- the schema --------------------------------------------------------------------------------
def tables_in(pg: PgServer, schema: str) -> set[str]:
    rows = pg.query("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))
    return {row[0] for row in rows}


def test_schema_is_created_with_version_and_c_collation(pg: PgServer,
                                                       fresh_schema: str) -> None:
    with pg.store(schema=fresh_schema):
        pass
    assert tables_in(pg, fresh_schema) == set(TABLES)
    version = pg.query(sql.SQL("SELECT version, application FROM {}.action_store_version")
                       .format(sql.Identifier(fresh_schema)))
    assert version == [(SCHEMA_VERSION, "flink-agents-ext")]
    collations = pg.query(
        "SELECT table_name, column_name, collation_name FROM information_schema.columns "
        "WHERE table_schema = %s AND column_name IN ('namespace', 'key', 'action')",
        (fresh_schema,))
    assert collations and all(row[2] == "C" for row in collations), collations
    types = dict(((r[0], r[1]), r[2]) for r in pg.query(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = %s", (fresh_schema,)))
    assert types[("actions", "event")] == "bytea" and types[("calls", "result")] == "bytea"
    assert types[("actions", "seq")] == "bigint"


def test_schema_created_concurrently_by_several_store_objects(pg: PgServer,
                                                              fresh_schema: str) -> None:
    count = 8
    stores: list[PostgresStore] = []
    lock = threading.Lock()

    def open_one(i: int) -> None:
        store = pg.store(schema=fresh_schema)
        with lock:
            stores.append(store)
        store.put_action(action_record(rid("ns", f"k{i}")))

    try:
        run_threads(count, open_one)
    finally:
        for store in stores:
            store.close()
    assert tables_in(pg, fresh_schema) == set(TABLES)
    with pg.store(schema=fresh_schema) as store:
        assert store.size("ns") == count


def test_schema_created_concurrently_by_several_processes(pg: PgServer,
                                                          fresh_schema: str) -> None:
    check_processes_creating_at_once(
        "from flink_agents_ext.store.postgres import PostgresStore\n"
        f"store = PostgresStore(host={pg.host!r}, port={pg.port}, dbname={pg.dbname!r}, "
        f"user={pg.user!r}, password_env={PASSWORD_ENV!r}, schema={fresh_schema!r})",
        lambda: pg.store(schema=fresh_schema), writes=10)


def test_newer_schema_version_is_refused(pg: PgServer, fresh_schema: str) -> None:
    with pg.store(schema=fresh_schema) as store:
        store.put_action(action_record(rid("ns")))
    pg.query(sql.SQL("UPDATE {}.action_store_version SET version = %s")
             .format(sql.Identifier(fresh_schema)), (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        pg.store(schema=fresh_schema)


def test_version_1_tables_are_upgraded_and_keep_their_records(pg: PgServer,
                                                              fresh_schema: str) -> None:
    with pg.store(schema=fresh_schema) as store:
        store.put_action(action_record(rid("ns")))
    schema = sql.Identifier(fresh_schema)
    pg.query(sql.SQL("DROP TABLE {}.lineages").format(schema))  # the layout of version 1
    pg.query(sql.SQL("UPDATE {}.action_store_version SET version = 1").format(schema))
    with pg.store(schema=fresh_schema) as store:
        assert store.get_action(rid("ns")) == action_record(rid("ns"))
        assert store.get_lineage("ns") is None
    assert pg.query(sql.SQL("SELECT version FROM {}.action_store_version").format(schema)) \
        == [(SCHEMA_VERSION,)] == [(2,)]
    assert "lineages" in tables_in(pg, fresh_schema)


def test_foreign_tables_are_refused(pg: PgServer, fresh_schema: str) -> None:
    schema = sql.Identifier(fresh_schema)
    pg.query(sql.SQL("CREATE SCHEMA {}").format(schema))
    pg.query(sql.SQL("CREATE TABLE {}.actions (id int)").format(schema))
    with pytest.raises(StoreError, match="actions that do not belong to an action state"):
        pg.store(schema=fresh_schema)
    assert tables_in(pg, fresh_schema) == {"actions"}  # nothing was created


def test_odd_schema_name_is_quoted(pg: PgServer) -> None:
    schema = f'Odd "Schema"; DROP {uuid.uuid4().hex[:6]}'
    try:
        with pg.store(schema=schema) as store:
            store.put_action(action_record(rid("ns")))
            assert store.get_run("ns", "k", 1) == [action_record(rid("ns"))]
        assert tables_in(pg, schema) == set(TABLES)
    finally:
        drop_schema(pg, schema)
