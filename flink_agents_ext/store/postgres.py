"""PostgreSQL backend of the action state store (psycopg 3): one connection per store object.

Layout (schema version :data:`SCHEMA_VERSION`), in the PostgreSQL schema given by the
``schema`` setting (default ``public``; several jobs share it through their namespaces):

* ``action_store_version``: one row, ``(version, application)``; the analogue of SQLite's
  ``PRAGMA user_version``/``application_id``. Newer versions are refused, and so are tables
  with our names but without this row (someone else's ``actions`` table: choose another
  ``schema``);
* ``actions``: one row per action execution, primary key
  ``(namespace, key, seq, action, occurrence)``;
* ``calls``: the durable-call journal, primary key ``(namespace, key, seq, action,
  occurrence, position)``;
* ``prune_marks``: ``(namespace, checkpoint_id, key) -> seq``;
* ``prune_boundary``: ``namespace -> checkpoint_id``.

Text columns use the ``"C"`` collation (byte order of UTF-8, i.e. code-point order, whatever
the database's default collation); payloads are ``BYTEA``, sent and read in binary format.
The tables are created by the first store object that finds them missing, inside a
transaction holding an advisory lock (:data:`LOCK_KEY`), so processes starting together
neither fail nor create them twice.

Durability: every ``put_*`` is a committed transaction (autocommit) before it returns; with
the server's default ``synchronous_commit = on`` the commit is flushed to the WAL.

Connection loss: an operation that fails with a connection-level error
(:class:`psycopg.OperationalError`: lost connection, server shutting down or starting up,
too many connections, deadlock or serialization failure...) is retried up to ``retries``
times on a new connection, after ``backoff_s * 2**attempt`` seconds (capped at
:attr:`PostgresStore.MAX_BACKOFF_S`, +-20 % jitter); then :class:`StoreError` is raised. Every
operation is a single statement or one transaction of upserts, deletes and selects, so
running it again after an unknown outcome (the connection died during ``COMMIT``) leaves the
same state. Only the returned counts can then be lower, and :meth:`PostgresStore.take_prune_marks`
returns ``{}`` if its first attempt had committed (those marks are dropped, as when a prune
after ``take_prune_marks`` fails: their records are pruned with the key's next marks).
Authentication failures and a missing database or role are not retried.

Upper bound of the time an operation can take when the server is unreachable: about
``(retries + 1) * connect_timeout_s + sum of the backoffs`` (defaults: 6 * 5 s + 6.2 s when
connection attempts time out; 6.2 s when they are refused at once). A server that accepts
the connection but never answers is not bounded by this (no statement timeout is set).

Thread safety: one connection guarded by a lock; operations of several threads on one store
object are serialised. Open one store object per subtask (or per thread that needs
parallelism).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar

import psycopg
from psycopg import sql

from flink_agents_ext.store._rows import (
    action_from_row,
    action_params,
    call_params,
    calls_from_rows,
    id_params,
)
from flink_agents_ext.store.base import (
    ActionRecord,
    ActionStateStore,
    CallRecord,
    RecordId,
    StoreConfigError,
    StoreError,
)

__all__ = ["APPLICATION", "LOCK_KEY", "SCHEMA_VERSION", "PostgresStore"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Version of the table layout this module reads and writes (``action_store_version``).
SCHEMA_VERSION = 1
#: ``action_store_version.application`` of an action store.
APPLICATION = "flink-agents-ext"
#: Advisory lock taken while the tables are created ("FAES" << 32 | 1).
LOCK_KEY = (0x46414553 << 32) | 1
#: The tables of the layout, in creation order (the version row is written last).
TABLES = ("actions", "calls", "prune_marks", "prune_boundary", "action_store_version")

# Connection-failure messages (libpq/server, English) that retrying cannot fix.
_PERMANENT_CONNECT_ERRORS = (
    "password authentication failed",
    "no password supplied",
    "authentication failed",
    "does not exist",  # database or role
    "no pg_hba.conf entry",
    "permission denied",
    "not permitted to log in",
    "SSL is not enabled",
    "invalid connection option",
    "invalid port",
    "could not translate host name",
)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS {schema}.actions (
        namespace TEXT COLLATE "C" NOT NULL,
        key TEXT COLLATE "C" NOT NULL,
        seq BIGINT NOT NULL,
        action TEXT COLLATE "C" NOT NULL,
        occurrence BIGINT NOT NULL,
        event BYTEA NOT NULL,
        outputs BYTEA NOT NULL,
        events BYTEA NOT NULL,
        memory_updates BYTEA NOT NULL,
        completed BOOLEAN NOT NULL,
        PRIMARY KEY (namespace, key, seq, action, occurrence)
    )""",
    """CREATE TABLE IF NOT EXISTS {schema}.calls (
        namespace TEXT COLLATE "C" NOT NULL,
        key TEXT COLLATE "C" NOT NULL,
        seq BIGINT NOT NULL,
        action TEXT COLLATE "C" NOT NULL,
        occurrence BIGINT NOT NULL,
        position BIGINT NOT NULL,
        function TEXT NOT NULL,
        digest TEXT NOT NULL,
        status TEXT NOT NULL,
        result BYTEA,
        error_type TEXT,
        error_message TEXT,
        PRIMARY KEY (namespace, key, seq, action, occurrence, position)
    )""",
    """CREATE TABLE IF NOT EXISTS {schema}.prune_marks (
        namespace TEXT COLLATE "C" NOT NULL,
        checkpoint_id BIGINT NOT NULL,
        key TEXT COLLATE "C" NOT NULL,
        seq BIGINT NOT NULL,
        PRIMARY KEY (namespace, checkpoint_id, key)
    )""",
    """CREATE TABLE IF NOT EXISTS {schema}.prune_boundary (
        namespace TEXT COLLATE "C" NOT NULL PRIMARY KEY,
        checkpoint_id BIGINT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS {schema}.action_store_version (
        singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
        version INTEGER NOT NULL,
        application TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
)

_FIND_TABLES = """
SELECT c.relname FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = ANY(%s)
"""
_FIND_SCHEMA = "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s"
_GET_VERSION = "SELECT version, application FROM {schema}.action_store_version"
_SET_VERSION = """
INSERT INTO {schema}.action_store_version (singleton, version, application)
VALUES (TRUE, %s, %s)
"""

_PUT_ACTION = """
INSERT INTO {schema}.actions (namespace, key, seq, action, occurrence,
                              event, outputs, events, memory_updates, completed)
VALUES (%s, %s, %s, %s, %s, %b, %b, %b, %b, %s)
ON CONFLICT (namespace, key, seq, action, occurrence) DO UPDATE SET
    event = EXCLUDED.event, outputs = EXCLUDED.outputs, events = EXCLUDED.events,
    memory_updates = EXCLUDED.memory_updates, completed = EXCLUDED.completed
"""
_ACTION_COLUMNS = ("namespace, key, seq, action, occurrence, event, outputs, events, "
                   "memory_updates, completed")
_GET_ACTION = f"""
SELECT {_ACTION_COLUMNS} FROM {{schema}}.actions
WHERE namespace = %s AND key = %s AND seq = %s AND action = %s AND occurrence = %s
"""
_GET_RUN = f"""
SELECT {_ACTION_COLUMNS} FROM {{schema}}.actions
WHERE namespace = %s AND key = %s AND seq = %s
ORDER BY action COLLATE "C", occurrence
"""
_PUT_CALL = """
INSERT INTO {schema}.calls (namespace, key, seq, action, occurrence, position,
                            function, digest, status, result, error_type, error_message)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %b, %s, %s)
ON CONFLICT (namespace, key, seq, action, occurrence, position) DO UPDATE SET
    function = EXCLUDED.function, digest = EXCLUDED.digest, status = EXCLUDED.status,
    result = EXCLUDED.result, error_type = EXCLUDED.error_type,
    error_message = EXCLUDED.error_message
"""
_GET_CALLS = """
SELECT position, function, digest, status, result, error_type, error_message
FROM {schema}.calls
WHERE namespace = %s AND key = %s AND seq = %s AND action = %s AND occurrence = %s
ORDER BY position
"""
_TRUNCATE_CALLS = """
DELETE FROM {schema}.calls
WHERE namespace = %s AND key = %s AND seq = %s AND action = %s AND occurrence = %s
  AND position >= %s
"""
# One statement (one round trip, atomic) for any number of keys: the bounds arrive as two
# arrays; each key's rows are found through the primary key index.
_PRUNE = """
WITH bound AS (
    SELECT b.key, b.seq FROM unnest(%(keys)s::text[], %(seqs)s::bigint[]) AS b (key, seq)
), pruned_actions AS (
    DELETE FROM {schema}.actions a USING bound
    WHERE a.namespace = %(ns)s AND a.key = bound.key AND a.seq <= bound.seq
    RETURNING 1
), pruned_calls AS (
    DELETE FROM {schema}.calls c USING bound
    WHERE c.namespace = %(ns)s AND c.key = bound.key AND c.seq <= bound.seq
    RETURNING 1
)
SELECT (SELECT count(*) FROM pruned_actions) + (SELECT count(*) FROM pruned_calls)
"""
_ADD_MARKS = """
INSERT INTO {schema}.prune_marks (namespace, checkpoint_id, key, seq)
SELECT %(ns)s::text, %(checkpoint)s::bigint, m.key, m.seq
FROM unnest(%(keys)s::text[], %(seqs)s::bigint[]) AS m (key, seq)
ON CONFLICT (namespace, checkpoint_id, key) DO UPDATE SET
    seq = GREATEST(prune_marks.seq, EXCLUDED.seq)
"""
_TAKE_MARKS = """
WITH taken AS (
    DELETE FROM {schema}.prune_marks WHERE namespace = %s AND checkpoint_id <= %s
    RETURNING key, seq
)
SELECT key, max(seq) FROM taken GROUP BY key
"""
_GET_BOUNDARY = "SELECT checkpoint_id FROM {schema}.prune_boundary WHERE namespace = %s"
_RAISE_BOUNDARY = """
INSERT INTO {schema}.prune_boundary (namespace, checkpoint_id) VALUES (%s, %s)
ON CONFLICT (namespace) DO UPDATE SET
    checkpoint_id = GREATEST(prune_boundary.checkpoint_id, EXCLUDED.checkpoint_id)
"""
_FORCE_BOUNDARY = """
INSERT INTO {schema}.prune_boundary (namespace, checkpoint_id) VALUES (%s, %s)
ON CONFLICT (namespace) DO UPDATE SET checkpoint_id = EXCLUDED.checkpoint_id
"""
_CLEAR = (
    "DELETE FROM {schema}.actions WHERE namespace = %s",
    "DELETE FROM {schema}.calls WHERE namespace = %s",
    "DELETE FROM {schema}.prune_marks WHERE namespace = %s",
    "DELETE FROM {schema}.prune_boundary WHERE namespace = %s",
)
_SIZE_NAMESPACE = """
SELECT (SELECT count(*) FROM {schema}.actions WHERE namespace = %s)
     + (SELECT count(*) FROM {schema}.calls WHERE namespace = %s)
"""
_SIZE_ALL = """
SELECT (SELECT count(*) FROM {schema}.actions) + (SELECT count(*) FROM {schema}.calls)
"""

#: The statements of the operations, by name (``{schema}`` is filled in per store).
_RECORDED_RUNS = """
SELECT key, seq FROM {schema}.actions WHERE namespace = %s
UNION SELECT key, seq FROM {schema}.calls WHERE namespace = %s
"""

_STATEMENTS = {
    "put_action": _PUT_ACTION, "get_action": _GET_ACTION, "get_run": _GET_RUN,
    "put_call": _PUT_CALL, "get_calls": _GET_CALLS, "truncate_calls": _TRUNCATE_CALLS,
    "prune": _PRUNE, "add_marks": _ADD_MARKS, "take_marks": _TAKE_MARKS,
    "get_boundary": _GET_BOUNDARY, "raise_boundary": _RAISE_BOUNDARY,
    "force_boundary": _FORCE_BOUNDARY, "size_namespace": _SIZE_NAMESPACE, "size_all": _SIZE_ALL,
    "recorded_runs": _RECORDED_RUNS,
    **{f"clear_{i}": statement for i, statement in enumerate(_CLEAR)},
}


def _call_params(call: CallRecord) -> tuple[Any, ...]:
    """PostgreSQL text cannot hold NUL characters: any in ``error_message`` become U+FFFD."""
    message = call.error_message
    if message is not None and "\x00" in message:
        call = call._replace(error_message=message.replace("\x00", "\ufffd"))
    return call_params(call)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class PostgresStore(ActionStateStore):
    """An :class:`ActionStateStore` in a PostgreSQL database.

    Args:
        host: server host name or address (or a Unix socket directory).
        port: server port.
        dbname: database name.
        user: role to log in as.
        password_env: name of the environment variable holding the password (read when the
            store is opened). Empty: ``password`` if given, else libpq's own sources
            (``PGPASSWORD``, ``~/.pgpass``) or a password-less login.
        password: the password itself (programmatic use; wins over ``password_env``). Never
            logged nor put into error messages.
        connect_timeout_s: timeout of one connection attempt, in seconds.
        retries: how many times an operation is retried on a new connection after a
            connection-level failure before :class:`StoreError` is raised.
        backoff_s: delay before the first retry; doubled for each further retry.
        schema: the PostgreSQL schema holding the tables; created if missing.

    Raises:
        StoreConfigError: an invalid setting, or ``password_env`` names a variable that is
            not set.
        StoreError: the server cannot be reached after the retries, the login is refused,
            the schema holds foreign tables with our names, or the tables have a newer
            layout than this version supports.
    """

    #: Longest delay between two attempts, in seconds.
    MAX_BACKOFF_S = 5.0
    #: ``application_name`` of the store's connections (visible in ``pg_stat_activity``).
    APPLICATION_NAME = "flink-agents-ext"

    def __init__(self, *, host: str, port: int, dbname: str, user: str,
                 password_env: str = "", password: Optional[str] = None,
                 connect_timeout_s: float = 5, retries: int = 5, backoff_s: float = 0.2,
                 schema: str = "public") -> None:
        for name, value in (("host", host), ("dbname", dbname), ("user", user),
                            ("schema", schema)):
            if not isinstance(value, str) or not value:
                raise StoreConfigError(
                    f"PostgreSQL store {name} must be a non-empty string, got {value!r}")
        if not _is_int(port) or not 0 < port < 65536:
            raise StoreConfigError(
                f"PostgreSQL store port must be an integer in 1..65535, got {port!r}")
        if not _is_number(connect_timeout_s) or connect_timeout_s <= 0:
            raise StoreConfigError(
                f"PostgreSQL store connect_timeout_s must be a number > 0, "
                f"got {connect_timeout_s!r}")
        if not _is_int(retries) or retries < 0:
            raise StoreConfigError(
                f"PostgreSQL store retries must be an integer >= 0, got {retries!r}")
        if not _is_number(backoff_s) or backoff_s < 0:
            raise StoreConfigError(
                f"PostgreSQL store backoff_s must be a number >= 0, got {backoff_s!r}")
        if not isinstance(password_env, str):
            raise StoreConfigError(
                f"PostgreSQL store password_env must be the name of an environment variable, "
                f"got {type(password_env).__name__}")
        if password is not None and not isinstance(password, str):
            # The value is a secret: name its type only.
            raise StoreConfigError(
                f"PostgreSQL store password must be a string, got {type(password).__name__}")
        if password is None and password_env:
            password = os.environ.get(password_env)
            if password is None:
                raise StoreConfigError(
                    f"PostgreSQL store password_env: environment variable {password_env!r} "
                    f"is not set")
            if not password:
                raise StoreConfigError(
                    f"PostgreSQL store password_env: environment variable {password_env!r} "
                    f"is empty")
        self._host = host
        self._port = port
        self._dbname = dbname
        self._user = user
        self._password = password
        self._connect_timeout_s = connect_timeout_s
        self._retries = retries
        self._backoff_s = float(backoff_s)
        self._schema = schema
        self._where = f"{user}@{host}:{port}/{dbname}"
        if schema != "public":
            self._where += f" (schema {schema})"
        self._quoted_schema = sql.Identifier(schema).as_string(None)
        self._sql = {name: self._q(text) for name, text in _STATEMENTS.items()}
        self._lock = threading.Lock()
        self._conn: Optional[psycopg.Connection[Any]] = None
        self._closed = False
        self._schema_checked = False
        self._run("open", lambda conn: None)  # connect and check/create the tables

    # -- opening -------------------------------------------------------------------------
    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding the tables."""
        return self._schema

    @property
    def target(self) -> str:
        """``user@host:port/dbname`` (and the schema unless ``public``); no password."""
        return self._where

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"PostgresStore({self._where!r}, {state})"

    def _q(self, template: str) -> str:
        """``template`` with ``{schema}`` replaced by the quoted schema name."""
        return template.replace("{schema}", self._quoted_schema)

    def _connect(self) -> psycopg.Connection[Any]:
        """A new autocommit connection to the server."""
        timeout = max(1, round(self._connect_timeout_s))
        return psycopg.connect(
            host=self._host, port=self._port, dbname=self._dbname, user=self._user,
            password=self._password, connect_timeout=timeout,
            application_name=self.APPLICATION_NAME, autocommit=True,
            # Notice a dead peer: idle probes, and unacknowledged sends are given up after
            # 30 s (TCP only; ignored on Unix sockets).
            keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3,
            tcp_user_timeout=30000)

    def _ensure_schema(self, conn: psycopg.Connection[Any]) -> None:
        if self._check_schema(conn):
            return
        with conn.transaction():
            # Serialises creators; CREATE TABLE IF NOT EXISTS alone can still fail when two
            # sessions create the same table at once.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            if self._check_schema(conn):  # created meanwhile by another store object
                return
            if conn.execute(_FIND_SCHEMA, (self._schema,)).fetchone() is None:
                # Only when missing: CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege
                # on the database even when the schema exists.
                conn.execute(self._q("CREATE SCHEMA {schema}"))
            for statement in _SCHEMA:
                conn.execute(self._q(statement))
            conn.execute(self._q(_SET_VERSION), (SCHEMA_VERSION, APPLICATION))
        _log.info("PostgreSQL store %s: created the action store tables (schema version %d)",
                  self._where, SCHEMA_VERSION)

    def _check_schema(self, conn: psycopg.Connection[Any]) -> bool:
        """``True`` if the schema holds our current tables, ``False`` if it has none."""
        found = {row[0] for row in conn.execute(_FIND_TABLES, (self._schema, list(TABLES)))}
        if "action_store_version" not in found:
            if found:
                raise StoreError(
                    f"PostgreSQL store {self._where}: schema {self._schema!r} already has "
                    f"table(s) {', '.join(sorted(found))} that do not belong to an action "
                    f"state store (no action_store_version table); set the store's 'schema' "
                    f"to another schema")
            return False
        row = conn.execute(self._q(_GET_VERSION)).fetchone()
        if row is None or row[1] != APPLICATION:
            raise StoreError(
                f"PostgreSQL store {self._where}: schema {self._schema!r} is not an action "
                f"state store (action_store_version holds {row!r})")
        version = int(row[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"PostgreSQL store {self._where}: schema version {version} is newer than "
                f"version {SCHEMA_VERSION} supported by this flink-agents-ext; upgrade "
                f"flink-agents-ext or use another schema")
        # 1 <= version <= SCHEMA_VERSION: there is only version 1 so far. A later version
        # migrates older layouts here, inside the locked transaction.
        return True

    # -- plumbing ------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        """``text`` without the password (defence in depth: libpq does not echo it)."""
        if self._password and len(self._password) >= 4:
            text = text.replace(self._password, "***")
        return text

    def _describe(self, exc: BaseException) -> str:
        return self._redact(" ".join(f"{type(exc).__name__}: {exc}".split()))

    def _delay(self, attempt: int) -> float:
        delay = min(self.MAX_BACKOFF_S, self._backoff_s * (2 ** attempt))
        return delay * random.uniform(0.8, 1.2)

    @staticmethod
    def _permanent(exc: psycopg.OperationalError) -> bool:
        """Whether a failed connection attempt cannot succeed when retried."""
        text = str(exc)
        return any(pattern in text for pattern in _PERMANENT_CONNECT_ERRORS)

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _run(self, operation: str, work: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """Run ``work(connection)`` holding the lock; reconnect and run it again after a
        connection-level failure (bounded retries with backoff); wrap errors in
        :class:`StoreError`. ``work`` must be idempotent: one statement or one transaction."""
        with self._lock:
            attempt = 0
            while True:
                if self._closed:
                    raise StoreError(
                        f"PostgreSQL store {self._where}: {operation} on a closed store")
                connecting = False
                try:
                    if self._conn is None:
                        connecting = True
                        self._conn = self._connect()
                        connecting = False
                        if not self._schema_checked:
                            try:
                                self._ensure_schema(self._conn)
                            except BaseException:
                                self._drop_connection()  # also on a refused layout
                                raise
                            self._schema_checked = True
                    return work(self._conn)
                except psycopg.OperationalError as exc:
                    self._drop_connection()
                    if connecting and self._permanent(exc):
                        raise StoreError(
                            f"PostgreSQL store {self._where}: cannot connect (not retried): "
                            f"{self._describe(exc)}") from exc
                    if attempt >= self._retries:
                        raise StoreError(
                            f"PostgreSQL store {self._where}: {operation} failed after "
                            f"{attempt + 1} attempt(s): {self._describe(exc)}") from exc
                    delay = self._delay(attempt)
                    attempt += 1
                    _log.warning(
                        "PostgreSQL store %s: %s failed (%s); reconnecting in %.2f s "
                        "(retry %d of %d)", self._where, operation, self._describe(exc),
                        delay, attempt, self._retries)
                    time.sleep(delay)
                except psycopg.Error as exc:
                    self._reset_if_not_idle()
                    raise StoreError(
                        f"PostgreSQL store {self._where}: {operation} failed: "
                        f"{self._describe(exc)}") from exc
                except BaseException:
                    # A StoreError of the schema check, or e.g. KeyboardInterrupt inside a
                    # statement: do not reuse a connection that may be in the middle of
                    # something.
                    self._reset_if_not_idle()
                    raise

    def _reset_if_not_idle(self) -> None:
        conn = self._conn
        if conn is None:
            return
        if conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self._drop_connection()

    # -- action records ------------------------------------------------------------------
    def put_action(self, record: ActionRecord) -> None:
        """Insert or replace the action record ``record.id``, committed before returning."""
        params = action_params(record)
        query = self._sql["put_action"]
        self._run("put_action", lambda conn: conn.execute(query, params))

    def get_action(self, record_id: RecordId) -> Optional[ActionRecord]:
        """Return the action record ``record_id``, or ``None``."""
        query, params = self._sql["get_action"], id_params(record_id)
        row = self._run("get_action",
                        lambda conn: conn.execute(query, params, binary=True).fetchone())
        return None if row is None else action_from_row(row)

    def get_run(self, namespace: str, key: str, seq: int) -> list[ActionRecord]:
        """Return every action record of one run, ordered by (action, occurrence); actions
        compare by code point (``COLLATE "C"``)."""
        query = self._sql["get_run"]
        rows = self._run("get_run", lambda conn: conn.execute(
            query, (namespace, key, seq), binary=True).fetchall())
        return [action_from_row(row) for row in rows]

    # -- durable-call journal ------------------------------------------------------------
    def put_call(self, call: CallRecord) -> None:
        """Insert or replace the journal entry (``call.id``, ``call.position``), committed
        before returning. PostgreSQL text cannot hold NUL characters: any in
        ``error_message`` are stored as U+FFFD."""
        params = _call_params(call)
        query = self._sql["put_call"]
        self._run("put_call", lambda conn: conn.execute(query, params))

    def put_many(self, actions: Sequence[ActionRecord], calls: Sequence[CallRecord]) -> None:
        """Insert or replace the records, in order, in one committed transaction (the
        statements are pipelined: one round trip per batch, not per record)."""
        call_rows = [_call_params(call) for call in calls]
        action_rows = [action_params(record) for record in actions]
        if not call_rows and not action_rows:
            return
        put_call, put_action = self._sql["put_call"], self._sql["put_action"]

        def work(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction(), conn.cursor() as cur:
                if call_rows:
                    cur.executemany(put_call, call_rows)
                if action_rows:
                    cur.executemany(put_action, action_rows)

        self._run("put_many", work)

    def get_calls(self, record_id: RecordId) -> list[CallRecord]:
        """Return the journal of one action execution, ordered by position."""
        query, params = self._sql["get_calls"], id_params(record_id)
        rows = self._run("get_calls",
                         lambda conn: conn.execute(query, params, binary=True).fetchall())
        return calls_from_rows(record_id, rows)

    def truncate_calls(self, record_id: RecordId, from_position: int) -> int:
        """Delete journal entries at ``from_position`` and after; return how many."""
        query, params = self._sql["truncate_calls"], (*id_params(record_id), from_position)
        return self._run("truncate_calls", lambda conn: conn.execute(query, params).rowcount)

    # -- pruning -------------------------------------------------------------------------
    def prune(self, namespace: str, up_to: Mapping[str, int]) -> int:
        """For each ``key -> seq`` delete the key's action and call records with a sequence
        ``<= seq``, in one statement (one transaction, one round trip). Return the number of
        rows deleted."""
        params = {"ns": namespace, "keys": list(up_to.keys()), "seqs": list(up_to.values())}
        query = self._sql["prune"]

        def work(conn: psycopg.Connection[Any]) -> int:
            if not params["keys"]:
                return 0
            row = conn.execute(query, params).fetchone()
            return 0 if row is None else int(row[0])

        return self._run("prune", work)

    def add_prune_marks(self, namespace: str, checkpoint_id: int,
                        up_to: Mapping[str, int]) -> None:
        """Remember that checkpoint ``checkpoint_id`` captured ``key -> last completed seq``
        (a key marked twice for one checkpoint keeps the higher sequence)."""
        params = {"ns": namespace, "checkpoint": checkpoint_id, "keys": list(up_to.keys()),
                  "seqs": list(up_to.values())}
        query = self._sql["add_marks"]

        def work(conn: psycopg.Connection[Any]) -> None:
            if params["keys"]:
                conn.execute(query, params)

        self._run("add_prune_marks", work)

    def take_prune_marks(self, namespace: str, up_to_checkpoint: int) -> dict[str, int]:
        """Remove and return the marks of checkpoints ``<= up_to_checkpoint``, merged to the
        highest sequence per key, in one statement."""
        query = self._sql["take_marks"]
        rows = self._run("take_prune_marks", lambda conn: conn.execute(
            query, (namespace, up_to_checkpoint)).fetchall())
        return {key: int(seq) for key, seq in rows}

    def get_prune_boundary(self, namespace: str) -> Optional[int]:
        """The newest checkpoint whose captured sequences were pruned, or ``None``."""
        query = self._sql["get_boundary"]
        row = self._run("get_prune_boundary",
                        lambda conn: conn.execute(query, (namespace,)).fetchone())
        return None if row is None else int(row[0])

    def set_prune_boundary(self, namespace: str, checkpoint_id: int, *,
                           force: bool = False) -> None:
        """Raise the prune boundary to ``checkpoint_id`` (never lower it unless ``force``)."""
        query = self._sql["force_boundary" if force else "raise_boundary"]
        self._run("set_prune_boundary",
                  lambda conn: conn.execute(query, (namespace, checkpoint_id)))

    # -- housekeeping --------------------------------------------------------------------
    def clear_namespace(self, namespace: str) -> int:
        """Delete every record, mark and the boundary of ``namespace`` in one transaction;
        return the number of action and call records deleted."""
        queries = [self._sql[f"clear_{i}"] for i in range(len(_CLEAR))]

        def work(conn: psycopg.Connection[Any]) -> int:
            counts = []
            with conn.transaction():
                for query in queries:
                    counts.append(conn.execute(query, (namespace,)).rowcount)
            return counts[0] + counts[1]

        return self._run("clear_namespace", work)

    def recorded_runs(self, namespace: str) -> set[tuple[str, int]]:
        """The (key, seq) pairs that have any action or call record in ``namespace``."""
        query = self._sql["recorded_runs"]
        rows = self._run("recorded_runs",
                         lambda conn: conn.execute(query, (namespace, namespace)).fetchall())
        return {(str(key), int(seq)) for key, seq in rows}

    def size(self, namespace: Optional[str] = None) -> int:
        """Number of action and call records (of one namespace, or all)."""
        params: tuple[str, ...] = ()
        query = self._sql["size_all"]
        if namespace is not None:
            query, params = self._sql["size_namespace"], (namespace, namespace)
        row = self._run("size", lambda conn: conn.execute(query, params).fetchone())
        return 0 if row is None else int(row[0])

    def close(self) -> None:
        """Close the connection. Idempotent; any later use raises :class:`StoreError`."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                conn.close()
            except psycopg.Error as exc:
                raise StoreError(f"PostgreSQL store {self._where}: close failed: "
                                 f"{self._describe(exc)}") from exc
