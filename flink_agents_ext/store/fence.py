"""Fencing: the runs of a closed attempt cannot write to the store any more.

A run still executing when its subtask closes (a failover: Flink closes the failed attempt,
which waits up to ``close_timeout_s`` for its runs) finishes in the background. Its writes
must not land among the records the restarted attempt replays and writes as its own.
:class:`FencedStore` is the view of the store the runs of one attempt write through; at
close, :meth:`FencedStore.fence` waits for a write in progress and then refuses every
later one with :class:`FencedError`, whatever store object is behind it (also a store
shared by several function instances of one process, or a group-committing one).
"""

from __future__ import annotations

import threading
from typing import Mapping, Optional, Sequence

from flink_agents_ext.store.base import (
    ActionRecord,
    ActionStateStore,
    CallRecord,
    LineageRecord,
    NamespaceReset,
    RecordId,
    StoreError,
)

__all__ = ["FencedError", "FencedStore"]


class FencedError(StoreError):
    """A run of a closed (fenced) attempt tried to use the store."""


class FencedStore(ActionStateStore):
    """``inner`` as seen by the runs of one attempt, until :meth:`fence` (see the module
    documentation). Closing it does not close ``inner``.

    Args:
        inner: the store.
        name: what the attempt is called in :class:`FencedError` messages.
    """

    def __init__(self, inner: ActionStateStore, name: str = "this attempt") -> None:
        self.inner = inner
        self.name = name
        self._lock = threading.Lock()
        self._fenced = False

    def fence(self) -> None:
        """Wait for a write in progress; refuse every later use."""
        with self._lock:
            self._fenced = True

    @property
    def fenced(self) -> bool:
        """Whether :meth:`fence` was called."""
        return self._fenced

    def _open(self) -> ActionStateStore:
        if self._fenced:
            raise FencedError(f"{self.name} was closed: a run still executing after the "
                              f"close timeout cannot use the store any more (the restarted "
                              f"attempt replays the run)")
        return self.inner

    # -- writes: serialised with fence() ---------------------------------------------------
    def put_action(self, record: ActionRecord) -> None:
        """See :meth:`ActionStateStore.put_action`."""
        with self._lock:
            self._open().put_action(record)

    def put_call(self, call: CallRecord) -> None:
        """See :meth:`ActionStateStore.put_call`."""
        with self._lock:
            self._open().put_call(call)

    def put_many(self, actions: Sequence[ActionRecord], calls: Sequence[CallRecord]) -> None:
        """See :meth:`ActionStateStore.put_many`."""
        with self._lock:
            self._open().put_many(actions, calls)

    def truncate_calls(self, record_id: RecordId, from_position: int) -> int:
        """See :meth:`ActionStateStore.truncate_calls`."""
        with self._lock:
            return self._open().truncate_calls(record_id, from_position)

    def flush(self) -> None:
        """See :meth:`ActionStateStore.flush`."""
        with self._lock:
            self._open().flush()

    # -- reads -----------------------------------------------------------------------------
    def get_action(self, record_id: RecordId) -> Optional[ActionRecord]:
        """See :meth:`ActionStateStore.get_action`."""
        return self._open().get_action(record_id)

    def get_run(self, namespace: str, key: str, seq: int) -> list[ActionRecord]:
        """See :meth:`ActionStateStore.get_run`."""
        return self._open().get_run(namespace, key, seq)

    def recorded_runs(self, namespace: str) -> set[tuple[str, int]]:
        """See :meth:`ActionStateStore.recorded_runs`."""
        return self._open().recorded_runs(namespace)

    def get_calls(self, record_id: RecordId) -> list[CallRecord]:
        """See :meth:`ActionStateStore.get_calls`."""
        return self._open().get_calls(record_id)

    # -- not for runs: refused ---------------------------------------------------------------
    def _not_for_runs(self, operation: str) -> StoreError:
        return StoreError(f"FencedStore: {operation} is not an operation of a run")

    def prune(self, namespace: str, up_to: Mapping[str, int]) -> int:
        """Not an operation of a run: raises :class:`StoreError`."""
        raise self._not_for_runs("prune")

    def add_prune_marks(self, namespace: str, checkpoint_id: int,
                        up_to: Mapping[str, int]) -> None:
        """Not an operation of a run: raises :class:`StoreError`."""
        raise self._not_for_runs("add_prune_marks")

    def take_prune_marks(self, namespace: str, up_to_checkpoint: int) -> dict[str, int]:
        """Not an operation of a run: raises :class:`StoreError`."""
        raise self._not_for_runs("take_prune_marks")

    def discard_prune_marks(self, namespace: str, after_checkpoint: int) -> int:
        """Not an operation of a run: raises :class:`StoreError`."""
        raise self._not_for_runs("discard_prune_marks")

    def get_prune_boundary(self, namespace: str) -> Optional[int]:
        """Not an operation of a run: raises :class:`StoreError`."""
        raise self._not_for_runs("get_prune_boundary")

    def set_prune_boundary(self, namespace: str, checkpoint_id: int, *,
                           force: bool = False) -> None:
        """Not an operation of a run: raises :class:`StoreError`."""
        raise self._not_for_runs("set_prune_boundary")

    def get_lineage(self, namespace: str) -> Optional[LineageRecord]:
        """Not an operation of a run: raises :class:`StoreError`."""
        raise self._not_for_runs("get_lineage")

    def set_lineage(self, namespace: str, record: LineageRecord) -> None:
        """Not an operation of a run: raises :class:`StoreError`."""
        raise self._not_for_runs("set_lineage")

    def reset_namespace(self, namespace: str, record: LineageRecord) -> Optional[NamespaceReset]:
        """Not an operation of a run: raises :class:`StoreError`."""
        raise self._not_for_runs("reset_namespace")

    def clear_namespace(self, namespace: str) -> int:
        """Not an operation of a run: raises :class:`StoreError`."""
        raise self._not_for_runs("clear_namespace")

    def size(self, namespace: Optional[str] = None) -> int:
        """See :meth:`ActionStateStore.size`."""
        return self._open().size(namespace)

    def close(self) -> None:
        """Fence (``inner`` stays open: its owner closes it)."""
        self.fence()
