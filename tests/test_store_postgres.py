"""The PostgreSQL action state store: the backend contract against a real server, plus
PostgreSQL-specific behaviour (passwords, connection loss, schema creation).

The server: ``scripts/pg-test-server.sh`` starts (or reuses) a throwaway server once per
session, in ``.pg/test`` on 127.0.0.1:$FAE_PG_TEST_PORT (default 55433): not the server of
the cluster profile (``.pg``, port 55432), because these tests stop and restart theirs. A
server this session started is stopped at its end. To use another server instead, set
``FAE_PG_DSN`` to a libpq connection string or URL (host, port, dbname, user, password); the
tests that must stop or restart the server then fail, saying so. When the server
cannot be started or reached, the tests fail with the reason.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from flink_agents_ext.store import (
    ActionRecord,
    CallRecord,
    CallStatus,
    GroupCommitStore,
    StoreConfigError,
    StoreError,
    open_store,
)
from flink_agents_ext.store.postgres import SCHEMA_VERSION, TABLES, PostgresStore
from tests.store_contract import (
    GroupCommitContract,
    StoreContract,
    StoreFactory,
    action_record,
    call_record,
    fill,
    rid,
    run_threads,
)

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "pg-test-server.sh"
#: The environment variable the stores of these tests read their password from.
PASSWORD_ENV = "FAE_TEST_PG_PASSWORD"
#: Retry settings of the test stores: a server restart (~1 s) fits in the budget.
RETRIES, BACKOFF_S = 5, 0.2
#: The test server's directory and port (see the module documentation).
SERVER_DIR = ROOT / ".pg" / "test"
SERVER_PORT = os.environ.get("FAE_PG_TEST_PORT", "55433")


@dataclass
class PgServer:
    """The server the tests use."""

    host: str
    port: int
    dbname: str
    user: str
    password: str
    #: Started by scripts/pg-test-server.sh: the tests may stop and restart it.
    managed: bool
    #: This session started it (and stops it at the end).
    started_here: bool = False
    #: Schema of the contract tests (dropped at the end of the session).
    schema: str = field(default_factory=lambda: f"fae_test_{uuid.uuid4().hex[:10]}")

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """Constructor arguments of a store on this server (password from PASSWORD_ENV)."""
        kwargs: dict[str, Any] = dict(host=self.host, port=self.port, dbname=self.dbname,
                                      user=self.user, password_env=PASSWORD_ENV,
                                      retries=RETRIES, backoff_s=BACKOFF_S, schema=self.schema)
        kwargs.update(overrides)
        return kwargs

    def store(self, **overrides: Any) -> PostgresStore:
        """A new store object on this server."""
        return PostgresStore(**self.settings(**overrides))

    def connect(self) -> psycopg.Connection[Any]:
        """A plain autocommit connection (test set-up and inspection)."""
        return psycopg.connect(host=self.host, port=self.port, dbname=self.dbname,
                               user=self.user, password=self.password, autocommit=True,
                               connect_timeout=10)

    def query(self, statement: Any, params: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement on a fresh connection; return its rows (if any)."""
        with self.connect() as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def control(self, command: str) -> None:
        """``stop``, ``start`` or ``restart`` the server (managed servers only)."""
        if not self.managed:
            pytest.fail(f"this test must {command} its server: unset FAE_PG_DSN so that "
                        f"scripts/pg-test-server.sh provides one")
        proc = subprocess.run(["bash", str(SCRIPT), command], capture_output=True, text=True,
                              timeout=120, env=server_env(self.password))
        assert proc.returncode == 0, f"pg-test-server.sh {command} failed:\n{proc.stderr}"


def server_env(password: str) -> dict[str, str]:
    # fsync off: commits of a throwaway server need not reach the disk (faster suite).
    return {**os.environ, "FAE_PG_PASSWORD": password, "FAE_PG_DIR": str(SERVER_DIR),
            "FAE_PG_PORT": SERVER_PORT, "FAE_PG_FSYNC": "off"}


def start_server() -> PgServer:
    """Use FAE_PG_DSN, else start (or reuse) the throwaway server; fail with the reason."""
    dsn = os.environ.get("FAE_PG_DSN")
    if dsn:
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            pytest.fail(f"FAE_PG_DSN is not a valid connection string: {exc}")
        return PgServer(host=str(params.get("host") or "127.0.0.1"),
                        port=int(params.get("port") or 5432),
                        dbname=str(params.get("dbname") or "postgres"),
                        user=str(params.get("user") or "postgres"),
                        password=str(params.get("password") or ""), managed=False)
    password = os.environ.get("FAE_PG_PASSWORD", "flink_agents")
    started = time.monotonic()
    try:
        proc = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True,
                              timeout=300, env=server_env(password))
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"scripts/pg-test-server.sh did not finish in {exc.timeout}s:\n"
                    f"{exc.stderr!r}")
    if proc.returncode != 0:
        pytest.fail(f"cannot start the PostgreSQL test server (scripts/pg-test-server.sh, "
                    f"exit {proc.returncode}):\n{proc.stderr}")
    values = dict(item.split("=", 1) for item in proc.stdout.split())
    logging.getLogger(__name__).info("PostgreSQL test server ready in %.2f s",
                                     time.monotonic() - started)
    return PgServer(host=values["FAE_PG_HOST"], port=int(values["FAE_PG_PORT"]),
                    dbname=values["FAE_PG_DBNAME"], user=values["FAE_PG_USER"],
                    password=password, managed=True,
                    started_here="pg-test-server: started" in proc.stderr)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    """The server, reachable with the password in PASSWORD_ENV; the contract schema is
    dropped at the end."""
    server = start_server()
    try:
        server.query("SELECT 1")
    except psycopg.Error as exc:
        pytest.fail(f"the PostgreSQL server {server.user}@{server.host}:{server.port}/"
                    f"{server.dbname} is not reachable: {exc}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PASSWORD_ENV, server.password)
        yield server
    try:
        drop_schema(server, server.schema)
    except psycopg.Error:  # e.g. a test left the server stopped
        pass
    if server.started_here:
        server.control("stop")


def drop_schema(server: PgServer, schema: str) -> None:
    server.query(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def fresh_schema(pg: PgServer) -> Iterator[str]:
    """The name of a schema that does not exist yet (dropped after the test)."""
    name = f"fae_fresh_{uuid.uuid4().hex[:10]}"
    yield name
    drop_schema(pg, name)


@pytest.fixture
def ensure_running(pg: PgServer) -> Iterator[PgServer]:
    """For tests that stop the server: start it again afterwards whatever happened."""
    yield pg
    if pg.managed:
        pg.control("start")


def assert_no_secret(secret: str, *texts: str) -> None:
    """No ``text`` contains ``secret`` (when it is distinctive: the test server's default
    password equals its user and database name, which messages do contain)."""
    if not secret or secret == "flink_agents":
        return
    for text in texts:
        assert secret not in text, f"the password leaked into: {text[:300]}"


def exception_texts(exc: BaseException) -> list[str]:
    """``str`` and ``repr`` of an exception and of its causes/contexts."""
    texts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return texts


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
    script = textwrap.dedent(f"""
        import sys, time
        from flink_agents_ext.store import ActionRecord, RecordId
        from flink_agents_ext.store.postgres import PostgresStore
        time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
        with PostgresStore(host={pg.host!r}, port={pg.port}, dbname={pg.dbname!r},
                           user={pg.user!r}, password_env={PASSWORD_ENV!r},
                           schema={fresh_schema!r}) as store:
            for seq in range(10):
                store.put_action(ActionRecord(RecordId("ns", sys.argv[2], seq, "a", 0),
                                              b"e", b"o", b"v", b"m", True))
                store.prune("ns", {{sys.argv[2]: seq - 5}})
    """)
    start = time.time() + 2.0
    procs = [subprocess.Popen([sys.executable, "-c", script, str(start), f"p{i}"], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True) for i in range(6)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    with pg.store(schema=fresh_schema) as store:
        assert store.size("ns") == 6 * 5


def test_newer_schema_version_is_refused(pg: PgServer, fresh_schema: str) -> None:
    with pg.store(schema=fresh_schema) as store:
        store.put_action(action_record(rid("ns")))
    pg.query(sql.SQL("UPDATE {}.action_store_version SET version = %s")
             .format(sql.Identifier(fresh_schema)), (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        pg.store(schema=fresh_schema)


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

