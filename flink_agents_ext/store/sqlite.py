"""SQLite backend of the action state store: one database file, WAL mode, one connection.

Layout (schema version :data:`SCHEMA_VERSION`, kept in ``PRAGMA user_version``; the file is
tagged with ``PRAGMA application_id`` = :data:`APPLICATION_ID`):

* ``actions``: one row per action execution, primary key
  ``(namespace, key, seq, action, occurrence)``;
* ``calls``: the durable-call journal, primary key ``(namespace, key, seq, action,
  occurrence, position)``;
* ``prune_marks``: ``(namespace, checkpoint_id, key) -> seq``;
* ``prune_boundary``: ``namespace -> checkpoint_id``.

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
import threading
from collections import deque
from typing import Iterator, Mapping, Optional, Sequence

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

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "SYNCHRONOUS_MODES", "SQLiteStore"]

_log = logging.getLogger(__name__)

#: Version of the table layout this module reads and writes (``PRAGMA user_version``).
SCHEMA_VERSION = 1
#: ``PRAGMA application_id`` of an action-store file ("FAES"), to refuse foreign files.
APPLICATION_ID = 0x46414553
#: Accepted values of the ``synchronous`` setting.
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")

_SCHEMA = (
    """CREATE TABLE actions (
        namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        seq INTEGER NOT NULL,
        action TEXT NOT NULL,
        occurrence INTEGER NOT NULL,
        event BLOB NOT NULL,
        outputs BLOB NOT NULL,
        events BLOB NOT NULL,
        memory_updates BLOB NOT NULL,
        completed INTEGER NOT NULL,
        PRIMARY KEY (namespace, key, seq, action, occurrence)
    )""",
    """CREATE TABLE calls (
        namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        seq INTEGER NOT NULL,
        action TEXT NOT NULL,
        occurrence INTEGER NOT NULL,
        position INTEGER NOT NULL,
        function TEXT NOT NULL,
        digest TEXT NOT NULL,
        status TEXT NOT NULL,
        result BLOB,
        error_type TEXT,
        error_message TEXT,
        PRIMARY KEY (namespace, key, seq, action, occurrence, position)
    )""",
    """CREATE TABLE prune_marks (
        namespace TEXT NOT NULL,
        checkpoint_id INTEGER NOT NULL,
        key TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (namespace, checkpoint_id, key)
    )""",
    """CREATE TABLE prune_boundary (
        namespace TEXT NOT NULL PRIMARY KEY,
        checkpoint_id INTEGER NOT NULL
    )""",
)

_PUT_ACTION = """
INSERT INTO actions (namespace, key, seq, action, occurrence,
                     event, outputs, events, memory_updates, completed)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (namespace, key, seq, action, occurrence) DO UPDATE SET
    event = excluded.event, outputs = excluded.outputs, events = excluded.events,
    memory_updates = excluded.memory_updates, completed = excluded.completed
"""
_ACTION_COLUMNS = "namespace, key, seq, action, occurrence, event, outputs, events, " \
                  "memory_updates, completed"
_GET_ACTION = f"""
SELECT {_ACTION_COLUMNS} FROM actions
WHERE namespace = ? AND key = ? AND seq = ? AND action = ? AND occurrence = ?
"""
_GET_RUN = f"""
SELECT {_ACTION_COLUMNS} FROM actions
WHERE namespace = ? AND key = ? AND seq = ?
ORDER BY action, occurrence
"""
_PUT_CALL = """
INSERT INTO calls (namespace, key, seq, action, occurrence, position,
                   function, digest, status, result, error_type, error_message)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (namespace, key, seq, action, occurrence, position) DO UPDATE SET
    function = excluded.function, digest = excluded.digest, status = excluded.status,
    result = excluded.result, error_type = excluded.error_type,
    error_message = excluded.error_message
"""
_GET_CALLS = """
SELECT position, function, digest, status, result, error_type, error_message FROM calls
WHERE namespace = ? AND key = ? AND seq = ? AND action = ? AND occurrence = ?
ORDER BY position
"""
_TRUNCATE_CALLS = """
DELETE FROM calls
WHERE namespace = ? AND key = ? AND seq = ? AND action = ? AND occurrence = ?
  AND position >= ?
"""
_PRUNE_ACTIONS = "DELETE FROM actions WHERE namespace = ? AND key = ? AND seq <= ?"
_PRUNE_CALLS = "DELETE FROM calls WHERE namespace = ? AND key = ? AND seq <= ?"
_ADD_MARK = """
INSERT INTO prune_marks (namespace, checkpoint_id, key, seq) VALUES (?, ?, ?, ?)
ON CONFLICT (namespace, checkpoint_id, key) DO UPDATE SET
    seq = max(prune_marks.seq, excluded.seq)
"""
_SELECT_MARKS = """
SELECT key, max(seq) FROM prune_marks
WHERE namespace = ? AND checkpoint_id <= ?
GROUP BY key
"""
_DELETE_MARKS = "DELETE FROM prune_marks WHERE namespace = ? AND checkpoint_id <= ?"
_GET_BOUNDARY = "SELECT checkpoint_id FROM prune_boundary WHERE namespace = ?"
_RAISE_BOUNDARY = """
INSERT INTO prune_boundary (namespace, checkpoint_id) VALUES (?, ?)
ON CONFLICT (namespace) DO UPDATE SET
    checkpoint_id = max(prune_boundary.checkpoint_id, excluded.checkpoint_id)
"""
_FORCE_BOUNDARY = """
INSERT INTO prune_boundary (namespace, checkpoint_id) VALUES (?, ?)
ON CONFLICT (namespace) DO UPDATE SET checkpoint_id = excluded.checkpoint_id
"""
_SIZE_NAMESPACE = """
SELECT (SELECT count(*) FROM actions WHERE namespace = ?)
     + (SELECT count(*) FROM calls WHERE namespace = ?)
"""
_SIZE_ALL = "SELECT (SELECT count(*) FROM actions) + (SELECT count(*) FROM calls)"


class SQLiteStore(ActionStateStore):
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
        if not isinstance(path, str) or not path:
            raise StoreConfigError(f"SQLite store path must be a non-empty string, got {path!r}")
        if not isinstance(synchronous, str) or synchronous.upper() not in SYNCHRONOUS_MODES:
            raise StoreConfigError(
                f"SQLite store synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, "
                f"got {synchronous!r}")
        if (isinstance(busy_timeout_ms, bool) or not isinstance(busy_timeout_ms, int)
                or busy_timeout_ms < 0):
            raise StoreConfigError(
                f"SQLite store busy_timeout_ms must be an integer >= 0, got {busy_timeout_ms!r}")
        self._path = path
        self._synchronous = synchronous.upper()
        self._busy_timeout_ms = busy_timeout_ms
        self._lock = threading.Lock()
        self._rows_since_wal_truncate = 0
        self._recent_freed: deque[int] = deque(maxlen=self.VACUUM_HISTORY)
        self._conn: Optional[sqlite3.Connection] = self._open()

    # -- opening -------------------------------------------------------------------------
    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else "open"
        return f"SQLiteStore({self._path!r}, {state})"

    def _open(self) -> sqlite3.Connection:
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
            tables = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            ).fetchone()[0]
            if tables:
                raise StoreError(
                    f"SQLite store {self._path}: the file already holds a database that is "
                    f"not an action state store (it has tables but no schema version)")
            for statement in _SCHEMA:
                conn.execute(statement)
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
        if version == 0:
            return False
        # 1 <= version <= SCHEMA_VERSION: there is only version 1 so far. A later version
        # migrates older files here, inside a transaction.
        return True

    # -- plumbing ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _use(self, operation: str) -> Iterator[sqlite3.Connection]:
        """Hold the lock, yield the open connection, wrap ``sqlite3`` errors."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StoreError(f"SQLite store {self._path}: {operation} on a closed store")
            try:
                yield conn
            except sqlite3.Error as exc:
                raise StoreError(
                    f"SQLite store {self._path}: {operation} failed: "
                    f"{type(exc).__name__}: {exc}") from exc

    @staticmethod
    @contextlib.contextmanager
    def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
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

    # -- action records ------------------------------------------------------------------
    def put_action(self, record: ActionRecord) -> None:
        """Insert or replace the action record ``record.id``, committed before returning."""
        params = action_params(record)
        with self._use("put_action") as conn:
            conn.execute(_PUT_ACTION, params)

    def get_action(self, record_id: RecordId) -> Optional[ActionRecord]:
        """Return the action record ``record_id``, or ``None``."""
        with self._use("get_action") as conn:
            row = conn.execute(_GET_ACTION, id_params(record_id)).fetchone()
        return None if row is None else action_from_row(row)

    def get_run(self, namespace: str, key: str, seq: int) -> list[ActionRecord]:
        """Return every action record of one run, ordered by (action, occurrence); actions
        compare by code point (SQLite ``BINARY`` collation on UTF-8)."""
        with self._use("get_run") as conn:
            rows = conn.execute(_GET_RUN, (namespace, key, seq)).fetchall()
        return [action_from_row(row) for row in rows]

    # -- durable-call journal ------------------------------------------------------------
    def put_call(self, call: CallRecord) -> None:
        """Insert or replace the journal entry (``call.id``, ``call.position``), committed
        before returning."""
        params = call_params(call)
        with self._use("put_call") as conn:
            conn.execute(_PUT_CALL, params)

    def put_many(self, actions: Sequence[ActionRecord], calls: Sequence[CallRecord]) -> None:
        """Insert or replace the records, in order, in one committed transaction."""
        call_rows = [call_params(call) for call in calls]
        action_rows = [action_params(record) for record in actions]
        if not call_rows and not action_rows:
            return
        with self._use("put_many") as conn, self._transaction(conn):
            conn.executemany(_PUT_CALL, call_rows)
            conn.executemany(_PUT_ACTION, action_rows)

    def get_calls(self, record_id: RecordId) -> list[CallRecord]:
        """Return the journal of one action execution, ordered by position."""
        with self._use("get_calls") as conn:
            rows = conn.execute(_GET_CALLS, id_params(record_id)).fetchall()
        return calls_from_rows(record_id, rows)

    def truncate_calls(self, record_id: RecordId, from_position: int) -> int:
        """Delete journal entries at ``from_position`` and after; return how many."""
        with self._use("truncate_calls") as conn:
            return conn.execute(_TRUNCATE_CALLS,
                                (*id_params(record_id), from_position)).rowcount

    # -- pruning -------------------------------------------------------------------------
    def prune(self, namespace: str, up_to: Mapping[str, int]) -> int:
        """For each ``key -> seq`` delete the key's action and call records with a sequence
        ``<= seq``, in one transaction. Return the number of rows deleted.

        Afterwards, when the prune left much more of the file free than the next writes are
        expected to reuse, the excess is given back to the file system (incremental vacuum)
        and the ``-wal`` file is truncated; failures of that housekeeping are logged, not
        raised (the prune itself is committed).
        """
        params = [(namespace, key, seq) for key, seq in up_to.items()]
        with self._use("prune") as conn:
            if not params:
                return 0
            free_before = conn.execute("PRAGMA freelist_count").fetchone()[0]
            with self._transaction(conn):
                deleted = conn.executemany(_PRUNE_ACTIONS, params).rowcount
                deleted += conn.executemany(_PRUNE_CALLS, params).rowcount
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

    def add_prune_marks(self, namespace: str, checkpoint_id: int,
                        up_to: Mapping[str, int]) -> None:
        """Remember that checkpoint ``checkpoint_id`` captured ``key -> last completed seq``
        (a key marked twice for one checkpoint keeps the higher sequence)."""
        params = [(namespace, checkpoint_id, key, seq) for key, seq in up_to.items()]
        with self._use("add_prune_marks") as conn:
            if not params:
                return
            with self._transaction(conn):
                conn.executemany(_ADD_MARK, params)

    def take_prune_marks(self, namespace: str, up_to_checkpoint: int) -> dict[str, int]:
        """Remove and return the marks of checkpoints ``<= up_to_checkpoint``, merged to the
        highest sequence per key, in one transaction."""
        with self._use("take_prune_marks") as conn:
            with self._transaction(conn):
                rows = conn.execute(_SELECT_MARKS, (namespace, up_to_checkpoint)).fetchall()
                if rows:
                    conn.execute(_DELETE_MARKS, (namespace, up_to_checkpoint))
        return {key: seq for key, seq in rows}

    def get_prune_boundary(self, namespace: str) -> Optional[int]:
        """The newest checkpoint whose captured sequences were pruned, or ``None``."""
        with self._use("get_prune_boundary") as conn:
            row = conn.execute(_GET_BOUNDARY, (namespace,)).fetchone()
        return None if row is None else int(row[0])

    def set_prune_boundary(self, namespace: str, checkpoint_id: int, *,
                           force: bool = False) -> None:
        """Raise the prune boundary to ``checkpoint_id`` (never lower it unless ``force``)."""
        with self._use("set_prune_boundary") as conn:
            conn.execute(_FORCE_BOUNDARY if force else _RAISE_BOUNDARY,
                         (namespace, checkpoint_id))

    def recorded_runs(self, namespace: str) -> set[tuple[str, int]]:
        """The (key, seq) pairs that have any action or call record in ``namespace``."""
        with self._use("recorded_runs") as conn:
            rows = conn.execute(
                "SELECT key, seq FROM actions WHERE namespace = ? "
                "UNION SELECT key, seq FROM calls WHERE namespace = ?",
                (namespace, namespace)).fetchall()
        return {(str(key), int(seq)) for key, seq in rows}

    # -- housekeeping --------------------------------------------------------------------
    def clear_namespace(self, namespace: str) -> int:
        """Delete every record, mark and the boundary of ``namespace``; return the number of
        action and call records deleted."""
        with self._use("clear_namespace") as conn:
            with self._transaction(conn):
                deleted = conn.execute("DELETE FROM actions WHERE namespace = ?",
                                       (namespace,)).rowcount
                deleted += conn.execute("DELETE FROM calls WHERE namespace = ?",
                                        (namespace,)).rowcount
                conn.execute("DELETE FROM prune_marks WHERE namespace = ?", (namespace,))
                conn.execute("DELETE FROM prune_boundary WHERE namespace = ?", (namespace,))
        return deleted

    def size(self, namespace: Optional[str] = None) -> int:
        """Number of action and call records (of one namespace, or all)."""
        with self._use("size") as conn:
            if namespace is None:
                row = conn.execute(_SIZE_ALL).fetchone()
            else:
                row = conn.execute(_SIZE_NAMESPACE, (namespace, namespace)).fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close the connection (the last connection to the file checkpoints the WAL into
        it). Idempotent; any later use raises :class:`StoreError`."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                conn.close()
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite store {self._path}: close failed: {exc}") from exc
