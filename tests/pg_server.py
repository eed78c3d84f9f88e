"""The PostgreSQL server of the PostgreSQL tests (fixture ``pg``) and their helpers.

The server: ``scripts/pg-test-server.sh`` starts (or reuses) a throwaway server once per
session, in ``.pg/test`` on 127.0.0.1:$FAE_PG_TEST_PORT (default 55433; each parallel worker
its own, :mod:`tests.workers`): not the server of
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
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from flink_agents_ext.store.postgres import PostgresStore
from tests import workers

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "pg-test-server.sh"
#: The environment variable the stores of these tests read their password from.
PASSWORD_ENV = "FAE_TEST_PG_PASSWORD"
#: Retry settings of the test stores: a server restart (~1 s) fits in the budget.
RETRIES, BACKOFF_S = 5, 0.2
#: The test server's directory and port (see the module documentation).
SERVER_DIR = workers.server_dir(ROOT / ".pg" / "test")
SERVER_PORT = str(workers.port(os.environ.get("FAE_PG_TEST_PORT", "55433")))


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
