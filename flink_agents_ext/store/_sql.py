"""The SQL core of the action state store: tables, statements and operations, written once.

:class:`SQLStore` implements every operation of :class:`ActionStateStore` over a DB-API
connection. A backend (:mod:`~flink_agents_ext.store.sqlite`,
:mod:`~flink_agents_ext.store.postgres`) subclasses it and supplies only its *dialect*:

* :attr:`SQLStore.PARAM`, :attr:`SQLStore.BLOB_PARAM`, :attr:`SQLStore.GREATEST` and
  :attr:`SQLStore.COLUMN_TYPES`: how the statements below are spelled for it;
* :meth:`SQLStore._connect` (a ready connection), :meth:`SQLStore._prepare` (once, on the
  first connection: check or create the layout), :meth:`SQLStore._transaction`,
  :meth:`SQLStore._read` and :meth:`SQLStore._idle`;
* error classification: :attr:`SQLStore.DRIVER_ERRORS` (wrapped in :class:`StoreError`),
  :attr:`SQLStore.TRANSIENT_ERRORS` (retried on a new connection, up to ``retries`` times
  with backoff) and :meth:`SQLStore._permanent` (a failed connection attempt that retrying
  cannot fix);
* optionally faster forms of the bulk operations (:meth:`SQLStore._prune_keys`,
  :meth:`SQLStore._add_marks`, :meth:`SQLStore._take_marks`) and housekeeping after a prune.

Statements are written with ``%s`` for a parameter, ``%b`` for a payload (bytes) parameter,
``{schema}`` before each table name and ``{greatest}`` for the two-argument maximum; each
store renders them once for its dialect. The tables are declared once, in :data:`TABLES`:
both backends create them from there, and the upserts and the column lists of the reads
are derived from there.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence, TypeVar

from flink_agents_ext.store._rows import (
    action_from_row,
    action_params,
    call_params,
    calls_from_rows,
    id_params,
    lineage_from_row,
    lineage_params,
)
from flink_agents_ext.store._sql_layout import STATEMENTS, TABLES, Column, create_table
from flink_agents_ext.store.base import (
    ActionRecord,
    ActionStateStore,
    CallRecord,
    LineageRecord,
    NamespaceReset,
    RecordId,
    StoreError,
)

__all__ = ["TABLES", "Column", "SQLStore", "create_table"]

_T = TypeVar("_T")


class SQLStore(ActionStateStore):
    """An :class:`ActionStateStore` over one SQL connection, guarded by a lock.

    Subclasses call :meth:`_start` at the end of their constructor (see the module
    documentation for what they provide). An operation that fails with one of
    :attr:`TRANSIENT_ERRORS` is run again on a new connection up to ``retries`` times, after
    ``backoff_s * 2**attempt`` seconds (capped at :attr:`MAX_BACKOFF_S`, +-20 % jitter);
    every operation is one statement or one transaction, so running it again after an
    unknown outcome leaves the same state.
    """

    #: Placeholder of a parameter, and of a payload (bytes) parameter.
    PARAM: ClassVar[str] = "%s"
    BLOB_PARAM: ClassVar[str] = "%b"
    #: The two-argument maximum function.
    GREATEST: ClassVar[str] = "GREATEST"
    #: Column type of each abstract type of :data:`TABLES`.
    COLUMN_TYPES: ClassVar[Mapping[str, str]] = {}
    #: Errors of the driver, wrapped in :class:`StoreError`.
    DRIVER_ERRORS: ClassVar[tuple[type[BaseException], ...]] = ()
    #: Errors after which the connection is dropped and the operation retried.
    TRANSIENT_ERRORS: ClassVar[tuple[type[BaseException], ...]] = ()
    #: The dialect's own statements (templates like :data:`STATEMENTS`), by name.
    EXTRA_STATEMENTS: ClassVar[Mapping[str, str]] = {}
    #: Longest delay between two attempts, in seconds.
    MAX_BACKOFF_S = 5.0

    _log: ClassVar[logging.Logger] = logging.getLogger(__name__)

    def _start(self, label: str, target: str, schema_sql: str, *, retries: int = 0,
               backoff_s: float = 0.0) -> None:
        """Set up the core (``label`` starts every message, e.g. ``"SQLite store x.db"``;
        ``target`` names the database in the ``repr``; ``schema_sql`` is what ``{schema}``
        becomes) and open the first connection."""
        self._label = label
        self._target = target
        self._schema_sql = schema_sql
        self._retries = retries
        self._backoff_s = float(backoff_s)
        self._sql = {name: self._render(text)
                     for name, text in {**STATEMENTS, **self.EXTRA_STATEMENTS}.items()}
        self._lock = threading.Lock()
        self._conn: Any = None
        self._closed = False
        self._prepared = False
        self._run("open", lambda conn: None)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"{type(self).__name__}({self._target!r}, {state})"

    def _render(self, template: str) -> str:
        """``template`` in this dialect."""
        return (template.replace("{schema}", self._schema_sql)
                .replace("{greatest}", self.GREATEST)
                .replace("%b", self.BLOB_PARAM).replace("%s", self.PARAM))

    # -- the dialect -----------------------------------------------------------------------
    def _connect(self) -> Any:
        """A new connection, configured and ready (autocommit: every statement outside
        :meth:`_transaction` commits on its own)."""
        raise NotImplementedError

    def _prepare(self, conn: Any) -> None:
        """Check or create the layout; run on the first connection only."""

    def _transaction(self, conn: Any) -> contextlib.AbstractContextManager[Any]:
        """One write transaction on ``conn``: committed at the end, rolled back on error."""
        raise NotImplementedError

    def _read(self, conn: Any, query: str, params: Sequence[Any]) -> Any:
        """Execute a ``SELECT`` and return its cursor."""
        return conn.execute(query, params)

    def _idle(self, conn: Any) -> bool:
        """Whether ``conn`` can be used again after a failed operation."""
        return True

    def _permanent(self, exc: BaseException) -> bool:
        """Whether a failed connection attempt cannot succeed when retried."""
        return False

    def _lock_namespace(self, conn: Any, namespace: str) -> None:
        """Inside :meth:`_transaction`: serialise the transactions that change the lineage
        of ``namespace`` (SQLite: its write transactions are serialised already)."""

    def _describe(self, exc: BaseException) -> str:
        """``exc`` for a message (one line; backends remove secrets)."""
        return " ".join(f"{type(exc).__name__}: {exc}".split())

    # -- plumbing --------------------------------------------------------------------------
    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _delay(self, attempt: int) -> float:
        delay = min(self.MAX_BACKOFF_S, self._backoff_s * (2 ** attempt))
        return delay * random.uniform(0.8, 1.2)

    def _run(self, operation: str, work: Callable[[Any], _T]) -> _T:
        """Run ``work(connection)`` holding the lock; connect first if needed; after a
        transient failure reconnect and run it again (bounded retries with backoff); wrap
        driver errors in :class:`StoreError`. ``work`` must be one statement or one
        transaction."""
        with self._lock:
            attempt = 0
            while True:
                if self._closed:
                    raise StoreError(f"{self._label}: {operation} on a closed store")
                connecting = False
                try:
                    if self._conn is None:
                        connecting = True
                        self._conn = self._connect()
                        connecting = False
                        if not self._prepared:
                            try:
                                self._prepare(self._conn)
                            except BaseException:
                                self._drop_connection()  # also on a refused layout
                                raise
                            self._prepared = True
                    return work(self._conn)
                except self.TRANSIENT_ERRORS as exc:
                    self._drop_connection()
                    if connecting and self._permanent(exc):
                        raise StoreError(f"{self._label}: cannot connect (not retried): "
                                         f"{self._describe(exc)}") from exc
                    if attempt >= self._retries:
                        raise StoreError(
                            f"{self._label}: {operation} failed after {attempt + 1} "
                            f"attempt(s): {self._describe(exc)}", transient=True) from exc
                    delay = self._delay(attempt)
                    attempt += 1
                    self._log.warning(
                        "%s: %s failed (%s); reconnecting in %.2f s (retry %d of %d)",
                        self._label, operation, self._describe(exc), delay, attempt,
                        self._retries)
                    time.sleep(delay)
                except self.DRIVER_ERRORS as exc:
                    self._reset_if_not_idle()
                    raise StoreError(f"{self._label}: {operation} failed: "
                                     f"{self._describe(exc)}") from exc
                except BaseException:
                    # A StoreError of the layout check, or e.g. KeyboardInterrupt inside a
                    # statement: do not reuse a connection that may be inside a transaction.
                    self._reset_if_not_idle()
                    raise

    def _reset_if_not_idle(self) -> None:
        if self._conn is not None and not self._idle(self._conn):
            self._drop_connection()

    def _execute(self, operation: str, name: str, params: Sequence[Any]) -> int:
        """Run the statement ``name`` on its own; return its row count."""
        query = self._sql[name]
        return int(self._run(operation, lambda conn: conn.execute(query, params).rowcount))

    def _fetch(self, operation: str, name: str, params: Sequence[Any]) -> list[Any]:
        """Run the ``SELECT`` ``name``; return its rows."""
        query = self._sql[name]
        return list(self._run(operation,
                              lambda conn: self._read(conn, query, params).fetchall()))

    def _many(self, conn: Any, name: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run the statement ``name`` once per parameter row; return the total row count."""
        if not rows:
            return 0
        with contextlib.closing(conn.cursor()) as cur:
            cur.executemany(self._sql[name], rows)
            return int(cur.rowcount)

    # -- action records --------------------------------------------------------------------
    def put_action(self, record: ActionRecord) -> None:
        """Insert or replace the action record ``record.id``, committed before returning."""
        self._execute("put_action", "put_action", action_params(record))

    def get_action(self, record_id: RecordId) -> Optional[ActionRecord]:
        """Return the action record ``record_id``, or ``None``."""
        rows = self._fetch("get_action", "get_action", id_params(record_id))
        return action_from_row(rows[0]) if rows else None

    def get_run(self, namespace: str, key: str, seq: int) -> list[ActionRecord]:
        """Return every action record of one run, ordered by (action, occurrence); actions
        compare by code point."""
        return [action_from_row(row)
                for row in self._fetch("get_run", "get_run", (namespace, key, seq))]

    def recorded_runs(self, namespace: str) -> set[tuple[str, int]]:
        """The (key, seq) pairs that have any action or call record in ``namespace``."""
        rows = self._fetch("recorded_runs", "recorded_runs", (namespace, namespace))
        return {(str(key), int(seq)) for key, seq in rows}

    # -- durable-call journal --------------------------------------------------------------
    def _call_params(self, call: CallRecord) -> tuple[Any, ...]:
        """The parameters of a ``calls`` upsert (backends adapt values their types cannot
        hold)."""
        return call_params(call)

    def put_call(self, call: CallRecord) -> None:
        """Insert or replace the journal entry (``call.id``, ``call.position``), committed
        before returning."""
        self._execute("put_call", "put_call", self._call_params(call))

    def put_many(self, actions: Sequence[ActionRecord], calls: Sequence[CallRecord]) -> None:
        """Insert or replace the records, in order, in one committed transaction."""
        call_rows = [self._call_params(call) for call in calls]
        action_rows = [action_params(record) for record in actions]
        if not call_rows and not action_rows:
            return

        def work(conn: Any) -> None:
            with self._transaction(conn):
                self._many(conn, "put_call", call_rows)
                self._many(conn, "put_action", action_rows)

        self._run("put_many", work)

    def get_calls(self, record_id: RecordId) -> list[CallRecord]:
        """Return the journal of one action execution, ordered by position."""
        return calls_from_rows(record_id,
                               self._fetch("get_calls", "get_calls", id_params(record_id)))

    def truncate_calls(self, record_id: RecordId, from_position: int) -> int:
        """Delete journal entries at ``from_position`` and after; return how many."""
        return self._execute("truncate_calls", "truncate_calls",
                             (*id_params(record_id), from_position))

    # -- pruning ---------------------------------------------------------------------------
    def prune(self, namespace: str, up_to: Mapping[str, int]) -> int:
        """For each ``key -> seq`` delete the key's action and call records with a sequence
        ``<= seq``, in one transaction. Return the number of rows deleted."""
        return self._run("prune", lambda conn: self._prune_keys(conn, namespace, up_to)
                         if up_to else 0)

    def _prune_keys(self, conn: Any, namespace: str, up_to: Mapping[str, int]) -> int:
        """The prune of :meth:`prune` (``up_to`` not empty) on ``conn``."""
        params = [(namespace, key, seq) for key, seq in up_to.items()]
        with self._transaction(conn):
            return self._many(conn, "prune_actions", params) + self._many(
                conn, "prune_calls", params)

    def add_prune_marks(self, namespace: str, checkpoint_id: int,
                        up_to: Mapping[str, int]) -> None:
        """Remember that checkpoint ``checkpoint_id`` captured ``key -> last completed seq``
        (a key marked twice for one checkpoint keeps the higher sequence)."""
        def work(conn: Any) -> None:
            if up_to:
                self._add_marks(conn, namespace, checkpoint_id, up_to)

        self._run("add_prune_marks", work)

    def _add_marks(self, conn: Any, namespace: str, checkpoint_id: int,
                   up_to: Mapping[str, int]) -> None:
        """The insert of :meth:`add_prune_marks` (``up_to`` not empty) on ``conn``."""
        with self._transaction(conn):
            self._many(conn, "add_mark",
                       [(namespace, checkpoint_id, key, seq) for key, seq in up_to.items()])

    def take_prune_marks(self, namespace: str, up_to_checkpoint: int) -> dict[str, int]:
        """Remove and return the marks of checkpoints ``<= up_to_checkpoint``, merged to the
        highest sequence per key, atomically."""
        rows = self._run("take_prune_marks",
                         lambda conn: self._take_marks(conn, namespace, up_to_checkpoint))
        return {key: int(seq) for key, seq in rows}

    def _take_marks(self, conn: Any, namespace: str, up_to_checkpoint: int) -> list[Any]:
        """The ``(key, max seq)`` rows of :meth:`take_prune_marks`, deleted, on ``conn``."""
        with self._transaction(conn):
            rows = self._read(conn, self._sql["select_marks"],
                              (namespace, up_to_checkpoint)).fetchall()
            if rows:
                conn.execute(self._sql["delete_marks"], (namespace, up_to_checkpoint))
        return list(rows)

    def get_prune_boundary(self, namespace: str) -> Optional[int]:
        """The newest checkpoint whose captured sequences were pruned, or ``None``."""
        rows = self._fetch("get_prune_boundary", "get_boundary", (namespace,))
        return int(rows[0][0]) if rows else None

    def set_prune_boundary(self, namespace: str, checkpoint_id: int, *,
                           force: bool = False) -> None:
        """Raise the prune boundary to ``checkpoint_id`` (never lower it unless ``force``)."""
        self._execute("set_prune_boundary", "force_boundary" if force else "raise_boundary",
                      (namespace, checkpoint_id))

    def discard_prune_marks(self, namespace: str, after_checkpoint: int) -> int:
        """Delete the marks of checkpoints ``> after_checkpoint``; return how many."""
        return self._execute("discard_prune_marks", "discard_marks",
                             (namespace, after_checkpoint))

    # -- lineage ---------------------------------------------------------------------------
    def get_lineage(self, namespace: str) -> Optional[LineageRecord]:
        """The lineage ``namespace`` belongs to, or ``None``."""
        rows = self._fetch("get_lineage", "get_lineage", (namespace,))
        return lineage_from_row(rows[0] if rows else None)

    def set_lineage(self, namespace: str, record: LineageRecord) -> None:
        """Set the lineage record of ``namespace``."""
        self._execute("set_lineage", "set_lineage", lineage_params(namespace, record))

    def reset_namespace(self, namespace: str, record: LineageRecord) -> Optional[NamespaceReset]:
        """Unless ``namespace`` belongs to ``record.lineage``: delete everything of it and
        set its lineage, in one transaction serialised with the other lineage changes of
        the namespace (see :meth:`ActionStateStore.reset_namespace`)."""
        def work(conn: Any) -> Optional[NamespaceReset]:
            with self._transaction(conn):
                self._lock_namespace(conn, namespace)
                previous = lineage_from_row(next(iter(self._read(
                    conn, self._sql["get_lineage"], (namespace,)).fetchall()), None))
                if previous is not None and previous.lineage == record.lineage:
                    return None
                removed = self._clear(conn, namespace)
                conn.execute(self._sql["set_lineage"], lineage_params(namespace, record))
            return NamespaceReset(previous, removed)

        return self._run("reset_namespace", work)

    def _clear(self, conn: Any, namespace: str) -> int:
        """Delete everything of ``namespace`` (in the caller's transaction); return the
        number of action and call records deleted."""
        counts = {table: conn.execute(self._sql[f"clear_{table}"], (namespace,)).rowcount
                  for table in TABLES}
        return int(counts["actions"] + counts["calls"])

    # -- housekeeping ----------------------------------------------------------------------
    def clear_namespace(self, namespace: str) -> int:
        """Delete every record, mark, the boundary and the lineage of ``namespace`` in one
        transaction; return the number of action and call records deleted."""
        def work(conn: Any) -> int:
            with self._transaction(conn):
                return self._clear(conn, namespace)

        return self._run("clear_namespace", work)

    def size(self, namespace: Optional[str] = None) -> int:
        """Number of action and call records (of one namespace, or all)."""
        rows = (self._fetch("size", "size_all", ()) if namespace is None
                else self._fetch("size", "size_namespace", (namespace, namespace)))
        return int(rows[0][0]) if rows else 0

    def close(self) -> None:
        """Close the connection. Idempotent; any later use raises :class:`StoreError`."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                conn.close()
            except self.DRIVER_ERRORS as exc:
                raise StoreError(f"{self._label}: close failed: "
                                 f"{self._describe(exc)}") from exc

