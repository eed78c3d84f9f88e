"""SQLite backend of the action state store: one database file, WAL mode, one connection.

Layout (schema version :data:`SCHEMA_VERSION`, kept in ``PRAGMA user_version``; the file is
tagged with ``PRAGMA application_id`` = :data:`APPLICATION_ID`):

* ``actions``: one row per action execution, primary key
  ``(namespace, key, seq, action, occurrence)``;
* ``calls``: the durable-call journal, primary key ``(namespace, key, seq, action,
  occurrence, position)``;
* ``prune_marks``: ``(namespace, checkpoint_id, key) -> seq``;
* ``prune_boundary``: ``namespace -> checkpoint_id``;
* ``lineages``: ``namespace -> (lineage, history)`` (since schema version 2; a version 1
  file gets the table when it is first opened).

Durability: every ``put_*`` is its own committed transaction before it returns. In WAL mode
``synchronous=NORMAL`` (the default) survives a crash of the process but a power loss or OS
crash may lose the last transactions; ``FULL`` (or ``EXTRA``) also survives those, at the cost
of an fsync per commit.

Space: the file is created with ``auto_vacuum=INCREMENTAL``. Pages freed by
:meth:`SQLiteStore.prune` are reused by later writes, so with a steady write and prune rate
the file stops growing by itself. When a prune frees much more than the recent prunes did
(a backlog was pruned), an incremental vacuum hands the excess back to the file system,
followed by a ``wal_checkpoint(TRUNCATE)``. The ``-wal`` file is also truncated every
:attr:`SQLiteStore.WAL_TRUNCATE_EVERY_ROWS` pruned rows and capped by ``journal_size_limit``.

Thread safety: one connection guarded by a lock. Several store objects (threads, processes)
may open the same file; SQLite serialises their writes (``busy_timeout_ms``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections import deque
from typing import Any, Iterator, Mapping

from flink_agents_ext.store._sql import TABLES, SQLStore, create_table
from flink_agents_ext.store._sql_layout import ADDED_IN
from flink_agents_ext.store.base import StoreError
from flink_agents_ext.store.settings import SYNCHRONOUS_MODES, check_settings

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "SYNCHRONOUS_MODES", "SQLiteStore"]

_log = logging.getLogger(__name__)

#: Version of the table layout this module reads and writes (``PRAGMA user_version``).
SCHEMA_VERSION = 2
#: ``PRAGMA application_id`` of an action-store file ("FAES"), to refuse foreign files.
APPLICATION_ID = 0x46414553


class SQLiteStore(SQLStore):
    """An :class:`ActionStateStore` in one SQLite database file.

    Args:
        path: the database file; missing parent directories are created. ``":memory:"``
            gives a private, non-durable in-memory database (tests only).
        synchronous: ``PRAGMA synchronous``: ``"OFF"``, ``"NORMAL"`` (default), ``"FULL"``
            or ``"EXTRA"`` (case-insensitive). See the module documentation.
        busy_timeout_ms: how long a statement waits for another connection's lock on the
            same file before failing, in milliseconds.

    Raises:
        StoreConfigError: an invalid setting.
        StoreError: the file cannot be opened or created, is not an action-store database,
            or has a newer schema than this version supports.
    """

    PARAM = BLOB_PARAM = "?"
    GREATEST = "max"
    COLUMN_TYPES = {"key": "TEXT", "text": "TEXT", "int": "INTEGER", "blob": "BLOB",
                    "bool": "INTEGER"}
    DRIVER_ERRORS = (sqlite3.Error,)
    _log = _log

    #: Free pages beyond the *reserve* (the most pages one of the last
    #: :attr:`VACUUM_HISTORY` prunes freed: the next writes reuse that many) are given back
    #: to the file system after a prune when they are at least this many ...
    VACUUM_MIN_FREE_PAGES = 256
    #: ... and at least this fraction of the file.
    VACUUM_MIN_FREE_FRACTION = 0.1
    #: Prunes whose freed pages make up the reserve.
    VACUUM_HISTORY = 8
    #: At most this many pages are released per prune (bounds the pause).
    VACUUM_MAX_PAGES = 8192
    #: Truncate the ``-wal`` file after this many rows were pruned since the last time.
    WAL_TRUNCATE_EVERY_ROWS = 50_000
    #: ``PRAGMA journal_size_limit``: the ``-wal`` file is cut back to this after a reset.
    JOURNAL_SIZE_LIMIT = 16 * 1024 * 1024

    def __init__(self, path: str, *, synchronous: str = "NORMAL",
                 busy_timeout_ms: int = 10000) -> None:
        check_settings("sqlite", path=path, synchronous=synchronous,
                       busy_timeout_ms=busy_timeout_ms)
        self._path = path
        self._synchronous = synchronous.upper()
        self._busy_timeout_ms = busy_timeout_ms
        self._rows_since_wal_truncate = 0
        self._recent_freed: deque[int] = deque(maxlen=self.VACUUM_HISTORY)
        # Tables are named ``main.<table>``: the file's own schema.
        self._start(f"SQLite store {path}", path, "main")

    # -- opening -------------------------------------------------------------------------
    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    def _connect(self) -> sqlite3.Connection:
        if self._path != ":memory:":
            parent = os.path.dirname(os.path.abspath(self._path))
            try:
                os.makedirs(parent, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"SQLite store {self._path}: cannot create directory "
                                 f"{parent}: {exc}") from exc
        try:
            conn = sqlite3.connect(self._path, timeout=self._busy_timeout_ms / 1000.0,
                                   isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self._path}: cannot open: {exc}") from exc
        try:
            self._configure(conn)
            self._ensure_schema(conn)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"SQLite store {self._path}: cannot open: {exc}") from exc
            raise
        return conn

    def _configure(self, conn: sqlite3.Connection) -> None:
        # PRAGMA values cannot be bound as parameters; each one is a validated constant here.
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
            # Only possible before the first table exists (and before WAL writes page 1).
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal" and self._path != ":memory:":
            _log.warning("SQLite store %s: WAL journal mode unavailable (got %r); "
                         "concurrent readers will block writers", self._path, mode)
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute(f"PRAGMA journal_size_limit = {int(self.JOURNAL_SIZE_LIMIT)}")

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        if self._check_schema(conn):
            return
        with self._transaction(conn):
            if self._check_schema(conn):  # another process created it meanwhile
                return
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version:  # an older layout: add the tables of the versions after it
                for added in range(version + 1, SCHEMA_VERSION + 1):
                    for table in ADDED_IN.get(added, ()):
                        conn.execute(self._render(create_table(table, self.COLUMN_TYPES)))
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                _log.info("SQLite store %s: schema version %d upgraded to %d", self._path,
                          version, SCHEMA_VERSION)
                return
            tables = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            ).fetchone()[0]
            if tables:
                raise StoreError(
                    f"SQLite store {self._path}: the file already holds a database that is "
                    f"not an action state store (it has tables but no schema version)")
            for table in TABLES:
                conn.execute(self._render(create_table(table, self.COLUMN_TYPES)))
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
            _log.warning("SQLite store %s: auto_vacuum is not INCREMENTAL; the file will not "
                         "shrink after pruning", self._path)

    def _check_schema(self, conn: sqlite3.Connection) -> bool:
        """``True`` if the file holds our current schema, ``False`` if it is empty."""
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if app_id not in (0, APPLICATION_ID) or (app_id == 0 and version != 0):
            raise StoreError(
                f"SQLite store {self._path}: the file is not an action state store "
                f"(application_id={app_id}, user_version={version})")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"SQLite store {self._path}: schema version {version} is newer than version "
                f"{SCHEMA_VERSION} supported by this flink-agents-ext; upgrade flink-agents-ext "
                f"or use another file")
        # 0: empty; 1 <= version < SCHEMA_VERSION: upgraded by _ensure_schema.
        return bool(version == SCHEMA_VERSION)

    # -- the dialect -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        """One write transaction; the write lock is taken up front (no upgrade deadlock)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # also when COMMIT itself failed (e.g. disk full)
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    def _idle(self, conn: sqlite3.Connection) -> bool:
        return not conn.in_transaction

    # -- pruning: give space back ------------------------------------------------------------
    def _prune_keys(self, conn: Any, namespace: str, up_to: Mapping[str, int]) -> int:
        """The prune, then the housekeeping of :meth:`_after_prune` (see the module docs)."""
        free_before = conn.execute("PRAGMA freelist_count").fetchone()[0]
        deleted = super()._prune_keys(conn, namespace, up_to)
        if deleted:
            self._after_prune(conn, deleted, free_before)
        return deleted

    def _after_prune(self, conn: sqlite3.Connection, deleted: int, free_before: int) -> None:
        """Housekeeping after a prune (lock held): incremental vacuum, WAL truncation.

        Pages a prune frees are normally reused by the writes until the next prune, so in a
        steady state the file stops growing by itself; vacuuming those pages would only
        make the file shrink and grow again. Only free pages beyond the recent per-prune
        churn (e.g. after a backlog was pruned) are released.
        """
        self._rows_since_wal_truncate += deleted
        # Housekeeping must not stall on other connections: wait briefly, retry next prune.
        conn.execute(f"PRAGMA busy_timeout = {min(self._busy_timeout_ms, 200)}")
        try:
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            reserve = max(self._recent_freed, default=0)
            self._recent_freed.append(max(0, free - free_before))
            excess = free - reserve
            vacuumed = False
            if (excess >= self.VACUUM_MIN_FREE_PAGES
                    and excess >= pages * self.VACUUM_MIN_FREE_FRACTION):
                count = int(min(excess, self.VACUUM_MAX_PAGES))
                # executescript steps the pragma to completion; execute() frees one page.
                conn.executescript(f"PRAGMA incremental_vacuum({count});")
                vacuumed = True
                _log.debug("SQLite store %s: released %d of %d free pages", self._path,
                           count, free)
            if vacuumed or self._rows_since_wal_truncate >= self.WAL_TRUNCATE_EVERY_ROWS:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                self._rows_since_wal_truncate = 0
        except sqlite3.Error as exc:
            busy = (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == 5  # SQLITE_BUSY
            _log.log(logging.DEBUG if busy else logging.WARNING,
                     "SQLite store %s: housekeeping after prune failed (retried after the "
                     "next prune): %s", self._path, exc)
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
