"""Group commit: a store wrapper that makes puts durable in batches instead of one by one.

Every backend commits each ``put_*`` before returning: a durable call's record is durable
microseconds after the call returned, at the price of one transaction per record (tens of
microseconds with SQLite, a round trip with PostgreSQL). :class:`GroupCommitStore` buffers
action records and journal entries in memory and writes them in one transaction
(:meth:`ActionStateStore.put_many`) when

* a put finds that ``interval_ms`` passed since the oldest buffered put (with no put, a
  background thread writes the batch once twice that passed), or
* ``max_records`` are buffered (the put that reaches it writes the batch), or
* any other store operation runs (reads, pruning, marks...: they see every put before
  them), or :meth:`flush` is called (the durable function flushes at every snapshot), or
  the store is closed (also when a task fails and Flink closes its function).

What it costs: a process that dies abruptly (``kill -9``, out of memory, a lost machine)
loses the puts of about the last ``interval_ms`` (at most twice that); after the restart
the actions they recorded run again, so their durable calls are repeated. The journal
entries of an action whose completed record is in the same batch are not written at all
(a replay never reads them), nor is the action's started record that came with its first
journal entry (the completed record replaces it). Nothing else changes: replay,
pruning and the checkpoint rules are the same, and a task failure inside a live process
(an exception, a cancelled task) loses nothing, because close flushes. Calls whose
repetition is not acceptable must be reconcilable (``durable_execute_reconcilable``): their
PENDING entry is written through, together with everything buffered before it, before the
call runs.

A failed background write is kept and raised (as :class:`StoreError`) by the next store
operation, so the task fails and Flink replays from the last checkpoint: never a silent
loss.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Mapping, Optional, Sequence

from flink_agents_ext.store.base import (
    ActionRecord,
    ActionStateStore,
    CallRecord,
    CallStatus,
    LineageRecord,
    NamespaceReset,
    RecordId,
    StoreError,
)
from flink_agents_ext.store.settings import COMMIT_MODES, check_settings

__all__ = ["COMMIT_MODES", "GroupCommitStore"]

_log = logging.getLogger(__name__)



class GroupCommitStore(ActionStateStore):
    """Buffers the puts of ``inner`` and writes them in batches (see the module docs).

    Args:
        inner: the backend; closed with this store.
        interval_ms: the most time a put stays only in memory (> 0).
        max_records: the most puts kept in memory; reaching it writes the batch (>= 1).

    Raises:
        StoreConfigError: an invalid setting.
    """

    def __init__(self, inner: ActionStateStore, *, interval_ms: int = 50,
                 max_records: int = 10_000) -> None:
        check_settings(None, commit_interval_ms=interval_ms, commit_max_records=max_records)
        self.inner = inner
        self.interval_s = interval_ms / 1000.0
        self.max_records = max_records
        # ``_lock`` guards the buffer (held briefly by puts); ``_io`` is held while a batch
        # is taken and written and during every other operation on ``inner``, so a read
        # that flushed first cannot overtake a batch still being written.
        self._lock = threading.Lock()
        self._io = threading.RLock()
        # The last buffered record of each action: a later one replaces it (the started
        # record of an action whose completed record is in the same batch is not written).
        self._actions: dict[RecordId, ActionRecord] = {}
        # Journal entries by action execution: a completed action's record makes its
        # buffered entries unnecessary (a replay never reads the journal of a completed
        # action), so they are dropped instead of written.
        self._calls: dict[RecordId, list[CallRecord]] = {}
        self._ncalls = 0
        self._oldest = 0.0  # monotonic time of the oldest buffered put
        self._error: Optional[BaseException] = None
        self._closed = False
        self._wake = threading.Event()
        self._flusher = threading.Thread(target=self._run_flusher, daemon=True,
                                         name="flink-agents-ext-group-commit")
        self._flusher.start()

    def __repr__(self) -> str:
        return (f"GroupCommitStore({self.inner!r}, interval_ms={self.interval_s * 1000:g}, "
                f"max_records={self.max_records})")

    # -- the buffer ------------------------------------------------------------------------
    @property
    def buffered(self) -> int:
        """Puts not yet written."""
        return len(self._actions) + self._ncalls

    def _check(self) -> None:
        if self._error is not None:
            raise StoreError(
                f"group commit: an earlier batch could not be written ({self._error}); "
                f"its records are lost, so the task must restart from the last checkpoint"
            ) from self._error
        if self._closed:
            raise StoreError("group commit: the store is closed")

    def _write(self) -> None:
        """Take the buffer and write it; ``_io`` must be held. On failure the batch is
        lost and the error kept: every later operation raises it."""
        with self._lock:
            self._check()
            if not self._actions and not self._calls:
                return
            actions = list(self._actions.values())
            calls = [call for entries in self._calls.values() for call in entries]
            self._actions, self._calls, self._ncalls = {}, {}, 0
        try:
            self.inner.put_many(actions, calls)
        except BaseException as exc:
            with self._lock:
                self._error = exc
            _log.error("group commit: writing %d records failed: %s",
                       len(actions) + len(calls), exc)
            raise

    def flush(self) -> None:
        """Write every buffered put now (one transaction)."""
        with self._io:
            self._write()

    def _run_flusher(self) -> None:
        # Under load the thread that puts writes the batch when it is due (see put_many):
        # a writer thread of its own would contend for the GIL with the task thread at
        # every row, which measured slower. This thread only writes a batch that nobody
        # put after (an idle key space), at the latest twice the interval after its first put.
        while not self._wake.wait(self.interval_s / 2):
            with self._lock:
                if self._closed or self._error is not None:
                    return
                due = bool(self._actions or self._calls) and \
                    time.monotonic() - self._oldest >= 2 * self.interval_s
            if due:
                try:
                    self.flush()
                except BaseException:  # kept in self._error, raised by the next call
                    return

    # -- puts --------------------------------------------------------------------------------
    def put_action(self, record: ActionRecord) -> None:
        """Buffer the action record (a completed one replaces its buffered journal)."""
        self.put_many((record,), ())

    def put_call(self, call: CallRecord) -> None:
        """Buffer the journal entry; a PENDING entry (a reconcilable call is about to run) is
        written at once, with everything buffered before it."""
        self.put_many((), (call,))

    def put_many(self, actions: Sequence[ActionRecord], calls: Sequence[CallRecord]) -> None:
        """Buffer the records (written at once if a PENDING entry is among them)."""
        write_through = False
        with self._lock:
            self._check()
            if not self._actions and not self._calls:
                self._oldest = time.monotonic()
            for call in calls:
                self._calls.setdefault(call.id, []).append(call)
                self._ncalls += 1
                if call.status is CallStatus.PENDING:
                    write_through = True
            for record in actions:
                if record.completed:
                    dropped = self._calls.pop(record.id, None)
                    if dropped:
                        self._ncalls -= len(dropped)
                self._actions[record.id] = record
            due = (len(self._actions) + self._ncalls >= self.max_records
                   or time.monotonic() - self._oldest >= self.interval_s)
        if write_through or due:
            self.flush()

    # -- everything else: flush first, then delegate -------------------------------------
    def get_action(self, record_id: RecordId) -> Optional[ActionRecord]:
        """See :meth:`ActionStateStore.get_action`."""
        with self._io:
            self._write()
            return self.inner.get_action(record_id)

    def get_run(self, namespace: str, key: str, seq: int) -> list[ActionRecord]:
        """See :meth:`ActionStateStore.get_run`."""
        with self._io:
            self._write()
            return self.inner.get_run(namespace, key, seq)

    def recorded_runs(self, namespace: str) -> set[tuple[str, int]]:
        """See :meth:`ActionStateStore.recorded_runs`."""
        with self._io:
            self._write()
            return self.inner.recorded_runs(namespace)

    def get_calls(self, record_id: RecordId) -> list[CallRecord]:
        """See :meth:`ActionStateStore.get_calls`."""
        with self._io:
            self._write()
            return self.inner.get_calls(record_id)

    def truncate_calls(self, record_id: RecordId, from_position: int) -> int:
        """See :meth:`ActionStateStore.truncate_calls`."""
        with self._io:
            self._write()
            return self.inner.truncate_calls(record_id, from_position)

    def prune(self, namespace: str, up_to: Mapping[str, int]) -> int:
        """See :meth:`ActionStateStore.prune` (buffered records are written first, so
        none is written after the prune that covers it)."""
        with self._io:
            self._write()
            return self.inner.prune(namespace, up_to)

    def add_prune_marks(self, namespace: str, checkpoint_id: int,
                        up_to: Mapping[str, int]) -> None:
        """See :meth:`ActionStateStore.add_prune_marks`."""
        with self._io:
            self._write()
            self.inner.add_prune_marks(namespace, checkpoint_id, up_to)

    def take_prune_marks(self, namespace: str, up_to_checkpoint: int) -> dict[str, int]:
        """See :meth:`ActionStateStore.take_prune_marks`."""
        with self._io:
            self._write()
            return self.inner.take_prune_marks(namespace, up_to_checkpoint)

    def get_prune_boundary(self, namespace: str) -> Optional[int]:
        """See :meth:`ActionStateStore.get_prune_boundary`."""
        with self._io:
            self._write()
            return self.inner.get_prune_boundary(namespace)

    def set_prune_boundary(self, namespace: str, checkpoint_id: int, *,
                           force: bool = False) -> None:
        """See :meth:`ActionStateStore.set_prune_boundary`."""
        with self._io:
            self._write()
            self.inner.set_prune_boundary(namespace, checkpoint_id, force=force)

    def discard_prune_marks(self, namespace: str, after_checkpoint: int) -> int:
        """See :meth:`ActionStateStore.discard_prune_marks`."""
        with self._io:
            self._write()
            return self.inner.discard_prune_marks(namespace, after_checkpoint)

    def get_lineage(self, namespace: str) -> Optional[LineageRecord]:
        """See :meth:`ActionStateStore.get_lineage`."""
        with self._io:
            self._write()
            return self.inner.get_lineage(namespace)

    def set_lineage(self, namespace: str, record: LineageRecord) -> None:
        """See :meth:`ActionStateStore.set_lineage`."""
        with self._io:
            self._write()
            self.inner.set_lineage(namespace, record)

    def reset_namespace(self, namespace: str, record: LineageRecord) -> Optional[NamespaceReset]:
        """See :meth:`ActionStateStore.reset_namespace`."""
        with self._io:
            self._write()
            return self.inner.reset_namespace(namespace, record)

    def clear_namespace(self, namespace: str) -> int:
        """See :meth:`ActionStateStore.clear_namespace`."""
        with self._io:
            self._write()
            return self.inner.clear_namespace(namespace)

    def size(self, namespace: Optional[str] = None) -> int:
        """See :meth:`ActionStateStore.size`."""
        with self._io:
            self._write()
            return self.inner.size(namespace)

    def close(self) -> None:
        """Write what is buffered (errors are logged), stop the flusher, close ``inner``.
        Idempotent."""
        with self._io:
            if self._closed:
                return
            try:
                if self._error is None:
                    self._write()
            except BaseException as exc:
                _log.error("group commit: the last batch was not written on close: %s", exc)
            finally:
                with self._lock:
                    self._closed = True
                self._wake.set()
                self.inner.close()
        if self._flusher is not threading.current_thread():
            self._flusher.join(timeout=5)
