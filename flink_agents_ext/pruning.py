"""The pruning policy: which records may go, and when.

A record may be pruned only when its run is **completed** and that completion is **covered
by a completed checkpoint** that is no longer needed for a restore:

* at a snapshot, the payload is ``{key: last completed sequence}`` of the keys changed since
  the previous snapshot (plus what an aborted snapshot captured, carried over);
* when checkpoint ``n`` completes, the payloads of every pending snapshot ``<= n`` become
  *prune marks*; marks of checkpoints that the last ``retention`` completed checkpoints no
  longer need are applied: each key is pruned up to its highest marked sequence, and the
  store's *prune boundary* is raised to that checkpoint;
* a run in flight is never pruned: its sequence is above the last completed one;
* a restore from a checkpoint older than the boundary would need records that are gone: it
  fails with :class:`RestoreBoundaryError`, unless re-execution was allowed.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Callable, Mapping, Optional, Sequence

from flink_agents_ext.checkpoint.ledger import CheckpointPayload
from flink_agents_ext.errors import RestoreBoundaryError
from flink_agents_ext.store.base import ActionStateStore

_log = logging.getLogger(__name__)


def check_retention(retention: object, name: str = "retention") -> int:
    """``retention`` (completed checkpoints that stay restorable) if it is an integer >= 1;
    ``name`` is what the message calls it.

    Raises:
        ValueError: it is not.
    """
    if isinstance(retention, bool) or not isinstance(retention, int) or retention < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {retention!r}")
    return retention


def merge_max(into: dict[str, int], marks: Mapping[str, Any]) -> dict[str, int]:
    """Merge ``key -> seq`` marks into ``into``, keeping the highest sequence per key."""
    for key, seq in marks.items():
        seq = int(seq)
        if into.get(key, -1) < seq:
            into[key] = seq
    return into


def check_restore_boundary(store: ActionStateStore, namespace: str, checkpoint_id: int,
                           allow_reexecution: bool) -> None:
    """Refuse a restore from ``checkpoint_id`` older than the prune boundary; with
    ``allow_reexecution`` log it and lower the boundary to ``checkpoint_id`` instead.

    Raises:
        RestoreBoundaryError: the store pruned records that this restore needs.
    """
    boundary: Optional[int] = store.get_prune_boundary(namespace)
    if boundary is None or checkpoint_id >= boundary:
        return
    message = (
        f"restoring namespace {namespace!r} from checkpoint {checkpoint_id}, "
        f"but its action records were pruned up to checkpoint {boundary}: completed "
        f"actions after checkpoint {checkpoint_id} would run again. Restore from "
        f"checkpoint {boundary} or later, raise the retention, or allow "
        f"re-execution (allow_reexecution=True) to accept that.")
    if not allow_reexecution:
        raise RestoreBoundaryError(message)
    _log.warning("%s Continuing: re-execution is allowed.", message)
    store.set_prune_boundary(namespace, checkpoint_id, force=True)


class PrunePolicy:
    """Checkpoint-driven pruning of one namespace, for one subtask.

    Args:
        store: the action state store.
        namespace: the job's namespace in the store.
        retention: how many completed checkpoints must stay restorable (>= 1). With 1, the
            records a completed checkpoint covers are pruned at its notification; with
            ``k``, at the notification of the ``k``-th checkpoint after it. Match Flink's
            ``state.checkpoints.num-retained`` if you restore from retained checkpoints.
        allow_reexecution: on a restore from a checkpoint older than the prune boundary,
            log and continue (actions whose records are gone run again) instead of failing.
        check_head: called before a completion writes marks or prunes; raises if this job
            may no longer prune the namespace
            (:meth:`~flink_agents_ext.lineage.LineageGuard.check_head`).
    """

    def __init__(self, store: ActionStateStore, namespace: str, retention: int = 1,
                 allow_reexecution: bool = False,
                 check_head: Optional[Callable[[], None]] = None) -> None:
        self.store = store
        self.namespace = namespace
        self.retention = check_retention(retention)
        self.allow_reexecution = allow_reexecution
        self._check_head = check_head
        self._carry: dict[str, int] = {}
        # (id, marks) of aborted snapshots: a later checkpoint's completion covers them,
        # also when it was taken before the abort was notified.
        self._aborted: list[tuple[int, dict[str, int]]] = []
        self._completed: deque[int] = deque(maxlen=retention)

    def snapshot_payload(self, changed: Mapping[str, int]) -> dict[str, int]:
        """The payload for a snapshot: ``changed`` plus marks carried over from aborts."""
        payload = merge_max(dict(self._carry), changed)
        self._carry.clear()
        return payload

    def on_aborted(self, payloads: Sequence[CheckpointPayload]) -> None:
        """An aborted snapshot's marks are carried into the next snapshot, and applied by
        the completion of any later checkpoint (one taken before the abort arrived, too)."""
        for p in payloads:
            merge_max(self._carry, p.payload or {})
            self._aborted.append((p.checkpoint_id, dict(p.payload or {})))

    def on_complete(self, checkpoint_id: int, payloads: Sequence[CheckpointPayload]) -> int:
        """Checkpoint ``checkpoint_id`` completed: record its marks, prune what retention
        allows. Returns the number of records pruned."""
        marks: dict[str, int] = {}
        for p in payloads:
            merge_max(marks, p.payload or {})
        for aborted, carried in self._aborted:
            if aborted < checkpoint_id:
                merge_max(marks, carried)
        self._aborted = [(a, m) for a, m in self._aborted if a >= checkpoint_id]
        if self._completed and checkpoint_id <= self._completed[-1]:
            return 0  # a late notification: already covered
        if self._check_head is not None and (marks or self.retention > 1):
            self._check_head()
        self._completed.append(checkpoint_id)
        if self.retention == 1:
            # Fast path: apply directly, no marks table round trip.
            return self._prune(checkpoint_id, marks)
        if marks:
            self.store.add_prune_marks(self.namespace, checkpoint_id, marks)
        if len(self._completed) < self.retention:
            return 0
        oldest_needed = self._completed[0]
        return self._prune(oldest_needed,
                           self.store.take_prune_marks(self.namespace, oldest_needed))

    def _prune(self, checkpoint_id: int, marks: Mapping[str, int]) -> int:
        if not marks:
            return 0
        # Boundary first: a crash between the two leaves a boundary that is too high (an
        # old restore is refused although its records are still there), never one too low.
        self.store.set_prune_boundary(self.namespace, checkpoint_id)
        deleted = self.store.prune(self.namespace, marks)
        _log.debug("checkpoint %d: pruned %d records of %d keys", checkpoint_id, deleted,
                   len(marks))
        return deleted

    def on_restore(self, checkpoint_id: int, payloads: Sequence[CheckpointPayload]) -> int:
        """The job restored from ``checkpoint_id``: check the prune boundary, then treat the
        restored payloads as completed (the restore proves the checkpoint completed).

        Raises:
            RestoreBoundaryError: the store pruned records that this restore needs.
        """
        check_restore_boundary(self.store, self.namespace, checkpoint_id,
                               self.allow_reexecution)
        self._completed.clear()
        pruned = self.on_complete(checkpoint_id, payloads)
        if self.retention == 1:
            # Marks an earlier job of the lineage left with a higher retention: covered by
            # the restored checkpoint, the only one that must stay restorable now.
            pruned += self._prune(checkpoint_id,
                                  self.store.take_prune_marks(self.namespace, checkpoint_id))
        return pruned
