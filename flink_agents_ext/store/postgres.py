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
* ``prune_boundary``: ``namespace -> checkpoint_id``;
* ``lineages``: ``namespace -> (lineage, history)`` (since schema version 2; tables of
  version 1 get it when first opened by this version).

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

import logging
import os
from typing import Any, Mapping, Optional

import psycopg
from psycopg import sql

from flink_agents_ext.store._rows import call_params
from flink_agents_ext.store._sql import TABLES as CORE_TABLES
from flink_agents_ext.store._sql import SQLStore, create_table
from flink_agents_ext.store._sql_layout import ADDED_IN
from flink_agents_ext.store.base import CallRecord, StoreConfigError, StoreError
from flink_agents_ext.store.settings import check_settings

__all__ = ["APPLICATION", "LOCK_KEY", "SCHEMA_VERSION", "PostgresStore"]

_log = logging.getLogger(__name__)

#: Version of the table layout this module reads and writes (``action_store_version``).
SCHEMA_VERSION = 2
#: ``action_store_version.application`` of an action store.
APPLICATION = "flink-agents-ext"
#: Advisory lock taken while the tables are created ("FAES" << 32 | 1).
LOCK_KEY = (0x46414553 << 32) | 1
#: The tables of the layout, in creation order (the version row is written last).
TABLES = (*CORE_TABLES, "action_store_version")
#: Column types: text compared by code point whatever the database's collation.
COLUMN_TYPES = {"key": 'TEXT COLLATE "C"', "text": "TEXT", "int": "BIGINT", "blob": "BYTEA",
                "bool": "BOOLEAN"}

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

_CREATE_VERSION = """CREATE TABLE IF NOT EXISTS {schema}.action_store_version (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    version INTEGER NOT NULL,
    application TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
)"""
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
_UPGRADE_VERSION = "UPDATE {schema}.action_store_version SET version = %s"
#: Serialises the lineage changes of one namespace (transaction-scoped advisory lock).
_LOCK_NAMESPACE = "SELECT pg_advisory_xact_lock(%s::integer, hashtext(%s))"

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


class PostgresStore(SQLStore):
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

    COLUMN_TYPES = COLUMN_TYPES
    EXTRA_STATEMENTS = {"prune_unnest": _PRUNE, "add_marks_unnest": _ADD_MARKS,
                        "take_marks_returning": _TAKE_MARKS}
    DRIVER_ERRORS = (psycopg.Error,)
    #: Connection-level failures: lost connection, server shutting down or starting up, too
    #: many connections, deadlock or serialization failure...
    TRANSIENT_ERRORS = (psycopg.OperationalError,)
    _log = _log
    #: ``application_name`` of the store's connections (visible in ``pg_stat_activity``).
    APPLICATION_NAME = "flink-agents-ext"

    def __init__(self, *, host: str, port: int, dbname: str, user: str,
                 password_env: str = "", password: Optional[str] = None,
                 connect_timeout_s: float = 5, retries: int = 5, backoff_s: float = 0.2,
                 schema: str = "public") -> None:
        check_settings("postgres", host=host, port=port, dbname=dbname, user=user,
                       password_env=password_env, connect_timeout_s=connect_timeout_s,
                       retries=retries, backoff_s=backoff_s, schema=schema)
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
        self._schema = schema
        self._where = f"{user}@{host}:{port}/{dbname}"
        if schema != "public":
            self._where += f" (schema {schema})"
        # Connect and check (or create) the tables.
        self._start(f"PostgreSQL store {self._where}", self._where,
                    sql.Identifier(schema).as_string(None), retries=retries, backoff_s=backoff_s)

    # -- opening -------------------------------------------------------------------------
    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding the tables."""
        return self._schema

    @property
    def target(self) -> str:
        """``user@host:port/dbname`` (and the schema unless ``public``); no password."""
        return self._where

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

    def _prepare(self, conn: psycopg.Connection[Any]) -> None:
        if self._check_schema(conn):
            return
        with conn.transaction():
            # Serialises creators; CREATE TABLE IF NOT EXISTS alone can still fail when two
            # sessions create the same table at once.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            if self._check_schema(conn):  # created meanwhile by another store object
                return
            version = self._version(conn)
            if version:  # an older layout: add the tables of the versions after it
                for added in range(version + 1, SCHEMA_VERSION + 1):
                    for table in ADDED_IN.get(added, ()):
                        conn.execute(self._render(create_table(table, COLUMN_TYPES, True)))
                conn.execute(self._render(_UPGRADE_VERSION), (SCHEMA_VERSION,))
                _log.info("PostgreSQL store %s: schema version %d upgraded to %d",
                          self._where, version, SCHEMA_VERSION)
                return
            if conn.execute(_FIND_SCHEMA, (self._schema,)).fetchone() is None:
                # Only when missing: CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege
                # on the database even when the schema exists.
                conn.execute(self._render("CREATE SCHEMA {schema}"))
            for table in CORE_TABLES:
                conn.execute(self._render(create_table(table, COLUMN_TYPES, True)))
            conn.execute(self._render(_CREATE_VERSION))
            conn.execute(self._render(_SET_VERSION), (SCHEMA_VERSION, APPLICATION))
        _log.info("PostgreSQL store %s: created the action store tables (schema version %d)",
                  self._where, SCHEMA_VERSION)

    def _check_schema(self, conn: psycopg.Connection[Any]) -> bool:
        """``True`` if the schema holds our current tables, ``False`` if it has none or an
        older version of them."""
        version = self._version(conn)
        return version == SCHEMA_VERSION

    def _version(self, conn: psycopg.Connection[Any]) -> int:
        """The layout version of the schema's tables (0: none); refuses foreign tables and
        newer versions."""
        found = {row[0] for row in conn.execute(_FIND_TABLES, (self._schema, list(TABLES)))}
        if "action_store_version" not in found:
            if found:
                raise StoreError(
                    f"PostgreSQL store {self._where}: schema {self._schema!r} already has "
                    f"table(s) {', '.join(sorted(found))} that do not belong to an action "
                    f"state store (no action_store_version table); set the store's 'schema' "
                    f"to another schema")
            return 0
        row = conn.execute(self._render(_GET_VERSION)).fetchone()
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
        return version

    def _redact(self, text: str) -> str:
        """``text`` without the password (defence in depth: libpq does not echo it)."""
        if self._password and len(self._password) >= 4:
            text = text.replace(self._password, "***")
        return text

    def _describe(self, exc: BaseException) -> str:
        return self._redact(super()._describe(exc))

    # -- the dialect -----------------------------------------------------------------------
    def _transaction(self, conn: psycopg.Connection[Any]) -> Any:
        return conn.transaction()

    def _read(self, conn: psycopg.Connection[Any], query: str, params: Any) -> Any:
        return conn.execute(query, params, binary=True)  # payloads as bytes, unescaped

    def _lock_namespace(self, conn: Any, namespace: str) -> None:
        conn.execute(_LOCK_NAMESPACE, (LOCK_KEY >> 32, namespace))

    def _idle(self, conn: psycopg.Connection[Any]) -> bool:
        return (not conn.closed
                and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE)

    def _permanent(self, exc: BaseException) -> bool:
        text = str(exc)
        return any(pattern in text for pattern in _PERMANENT_CONNECT_ERRORS)

    def _call_params(self, call: CallRecord) -> tuple[Any, ...]:
        """PostgreSQL text cannot hold NUL characters: any in ``error_message`` are stored
        as U+FFFD."""
        message = call.error_message
        if message is not None and "\x00" in message:
            call = call._replace(error_message=message.replace("\x00", "\ufffd"))
        return call_params(call)

    # -- bulk operations: one statement with array parameters, one round trip ---------------
    def _prune_keys(self, conn: Any, namespace: str, up_to: Mapping[str, int]) -> int:
        row = conn.execute(self._sql["prune_unnest"], {"ns": namespace, "keys": list(up_to),
                                             "seqs": list(up_to.values())}).fetchone()
        return 0 if row is None else int(row[0])

    def _add_marks(self, conn: Any, namespace: str, checkpoint_id: int,
                   up_to: Mapping[str, int]) -> None:
        conn.execute(self._sql["add_marks_unnest"], {"ns": namespace, "checkpoint": checkpoint_id,
                                           "keys": list(up_to), "seqs": list(up_to.values())})

    def _take_marks(self, conn: Any, namespace: str, up_to_checkpoint: int) -> list[Any]:
        # DELETE ... RETURNING: marks added concurrently are either taken or kept.
        return list(conn.execute(self._sql["take_marks_returning"],
                                 (namespace, up_to_checkpoint)).fetchall())
