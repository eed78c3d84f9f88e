"""Lineages in the store: which job timeline a namespace's records belong to.

A namespace holds the records, prune marks and prune boundary of one lineage (see
:mod:`flink_agents_ext.checkpoint.timeline`) at a time, and the lineage's *history*: the
jobs of its current branch and the checkpoint each next job resumed from
(:class:`~flink_agents_ext.store.LineageRecord`). :class:`LineageGuard` applies the rules
when a subtask starts (:meth:`LineageGuard.open`) and at every checkpoint completion
(:meth:`LineageGuard.check_head`):

* **fresh start** (not restored) of job ``J``: the lineage is ``J``. A namespace of another
  lineage (or records without one) is taken over: with ``on_foreign_lineage="reclaim"`` (the
  default) everything the earlier lineage left is removed, once for the whole job and
  without touching what the new job writes (:meth:`ActionStateStore.reset_namespace`), and
  the removal is logged with its count; with ``"refuse"`` the start fails with
  :class:`ForeignLineageError` while records of another lineage remain. A namespace without
  records is taken over silently in both modes. A restart of ``J`` before its first
  checkpoint is the same lineage: its records are replayed.
* **restore** from checkpoint ``n`` taken by job ``R`` (failover, ``flink run -s`` from a
  savepoint or retained checkpoint): ``(R, n)`` must be on the lineage's history. Then the
  prune marks of checkpoints ``> n`` (left by the abandoned branch; their ids repeat in the
  restored job) are discarded, and the history becomes ``...(R, n), (J, -)``. Marks of
  checkpoints ``<= n`` are kept: they prune as the restored job's checkpoints complete.
  Restoring a checkpoint that is *not* on the history (a branch abandoned by a later
  resume), or of a lineage whose namespace was taken over since, fails with
  :class:`LineageError` unless ``allow_reexecution`` (then the marks are dropped and the
  restore proceeds; runs whose records are gone execute again).
* **two jobs of one lineage at once** (a savepoint resumed twice while the first job still
  runs): the later job becomes the lineage's head; the earlier one fails with
  :class:`LineageError` at its next checkpoint completion, before it prunes anything, and a
  restore of it is refused as above. Two branches never prune each other's records.
"""

from __future__ import annotations

import logging
from typing import Optional

from flink_agents_ext.checkpoint.timeline import JobTimeline
from flink_agents_ext.errors import NotRecoverableError
from flink_agents_ext.pruning import check_restore_boundary
from flink_agents_ext.store.base import ActionStateStore, LineageRecord

_log = logging.getLogger(__name__)

#: Values of ``on_foreign_lineage``.
ON_FOREIGN_LINEAGE = ("reclaim", "refuse")
#: The history keeps at most this many jobs (older ones: restoring them is refused).
MAX_HISTORY = 64


class LineageError(NotRecoverableError):
    """The namespace's lineage does not allow this job to run: restarting cannot fix it."""


class ForeignLineageError(LineageError):
    """A fresh start found records of another lineage in its namespace and
    ``on_foreign_lineage="refuse"`` was set."""


def check_on_foreign_lineage(value: object) -> str:
    """``value`` if it is one of :data:`ON_FOREIGN_LINEAGE`.

    Raises:
        ValueError: it is not.
    """
    if value not in ON_FOREIGN_LINEAGE:
        raise ValueError(f"on_foreign_lineage must be one of {ON_FOREIGN_LINEAGE}, "
                         f"got {value!r}")
    return str(value)


def on_history(record: LineageRecord, job_id: str, checkpoint_id: int) -> bool:
    """Whether checkpoint ``checkpoint_id`` of ``job_id`` is on the lineage's branch."""
    return any(job == job_id and (limit is None or checkpoint_id <= limit)
               for job, limit in record.history)


def resumed_history(record: LineageRecord, job_id: str, checkpoint_id: int,
                    new_job: str) -> tuple[tuple[str, Optional[int]], ...]:
    """The history after ``new_job`` resumed from ``(job_id, checkpoint_id)``."""
    kept: list[tuple[str, Optional[int]]] = []
    for job, limit in record.history:
        if job == job_id:
            kept.append((job, checkpoint_id if limit is None else min(limit, checkpoint_id)))
            break
        kept.append((job, limit))
    else:
        kept.append((job_id, checkpoint_id))
    if new_job != job_id:
        kept.append((new_job, None))
    else:
        kept[-1] = (job_id, None)
    return tuple(kept[-MAX_HISTORY:])


class LineageGuard:
    """The lineage rules of one subtask of one namespace (see the module documentation).

    Args:
        store: the action state store.
        namespace: the job's namespace.
        on_foreign_lineage: ``"reclaim"`` or ``"refuse"`` (see the module documentation).
        allow_reexecution: accept restores that may execute completed runs again.
    """

    def __init__(self, store: ActionStateStore, namespace: str,
                 on_foreign_lineage: str = "reclaim", allow_reexecution: bool = False) -> None:
        self.store = store
        self.namespace = namespace
        self.on_foreign_lineage = check_on_foreign_lineage(on_foreign_lineage)
        self.allow_reexecution = allow_reexecution
        self.timeline: Optional[JobTimeline] = None
        #: Prune marks discarded at the restore (what the abandoned branch left).
        self.discarded_marks = 0
        #: Records of an earlier lineage this subtask removed at a fresh start.
        self.removed_records = 0

    def open(self, timeline: JobTimeline) -> None:
        """Apply the rules for a subtask starting in ``timeline``.

        Raises:
            ForeignLineageError: a fresh start found another lineage's records and
                ``on_foreign_lineage="refuse"``.
            LineageError: a restore that would replay from records that are gone.
        """
        self.timeline = timeline
        if timeline.restored_checkpoint_id is None:
            self._fresh(timeline)
        else:
            self._restored(timeline, timeline.restored_checkpoint_id)

    def _fresh(self, timeline: JobTimeline) -> None:
        record = LineageRecord(timeline.lineage, ((timeline.job_id, None),))
        current = self.store.get_lineage(self.namespace)
        if current is not None and current.lineage == timeline.lineage:
            return  # a restart of this job before its first checkpoint: same lineage
        if self.on_foreign_lineage == "refuse":
            records = self.store.size(self.namespace)
            if records:
                owner = (f"lineage {current.lineage!r} (started by job {current.lineage})"
                         if current else "no lineage (written before lineages existed)")
                raise ForeignLineageError(
                    f"namespace {self.namespace!r} holds {records} action records of {owner}, "
                    f"and job {timeline.job_id} starts fresh (not restored from a checkpoint "
                    f"or savepoint): it would not replay them. Restore the earlier job "
                    f"(flink run -s <its savepoint or retained checkpoint>), or use another "
                    f"namespace, or clear this one (open_store(...).clear_namespace"
                    f"({self.namespace!r})), or set on_foreign_lineage='reclaim' to remove "
                    f"them at the start")
        reset = self.store.reset_namespace(self.namespace, record)
        if reset is None or (reset.previous is None and not reset.removed):
            return
        self.removed_records = reset.removed
        previous = reset.previous.lineage if reset.previous else "none (before lineages)"
        _log.warning(
            "namespace %r: fresh start of job %s begins lineage %s; removed %d action and "
            "call records (and the prune marks and boundary) of the earlier lineage %s, "
            "which this job never replays", self.namespace, timeline.job_id,
            timeline.lineage, reset.removed, previous)

    def _restored(self, timeline: JobTimeline, checkpoint_id: int) -> None:
        source = timeline.restored_checkpoint_job_id or timeline.job_id
        current = self.store.get_lineage(self.namespace)
        if not self.allow_reexecution and (current is None
                                           or current.lineage == timeline.lineage):
            # Before anything changes: a refused restore leaves the lineage as it was.
            check_restore_boundary(self.store, self.namespace, checkpoint_id, False)
        if current is None:
            # Before lineages, or a cleared namespace: this lineage takes it as it is.
            history = resumed_history(LineageRecord(timeline.lineage), source, checkpoint_id,
                                      timeline.job_id)
            self.store.set_lineage(self.namespace, LineageRecord(timeline.lineage, history))
            self.discarded_marks = self.store.discard_prune_marks(self.namespace,
                                                                  checkpoint_id)
            return
        problem = None
        if current.lineage != timeline.lineage:
            problem = (
                f"the namespace now belongs to lineage {current.lineage!r} (a job started "
                f"fresh on it after this lineage's checkpoint), whose start removed this "
                f"lineage's action records")
        elif not on_history(current, source, checkpoint_id):
            head = current.head
            problem = (
                f"that checkpoint is not on the lineage's current branch: job {head} resumed "
                f"the lineage from another checkpoint since (two jobs of one lineage at once, "
                f"or a branch abandoned by a later resume), and may have pruned records this "
                f"restore needs")
        if problem is not None:
            message = (f"restoring namespace {self.namespace!r} (lineage "
                       f"{timeline.lineage!r}) from checkpoint {checkpoint_id} of job "
                       f"{source}: {problem}. Completed actions would run again. Resume "
                       f"from the lineage's newest savepoint or checkpoint, start fresh, or "
                       f"allow re-execution (allow_reexecution=True) to accept that")
            if not self.allow_reexecution:
                raise LineageError(message)
            _log.warning("%s. Continuing: re-execution is allowed.", message)
            self.discarded_marks = self.store.discard_prune_marks(self.namespace, -1)
            record = LineageRecord(timeline.lineage, ((source, checkpoint_id),
                                                      (timeline.job_id, None)))
            if current.lineage != timeline.lineage:
                self.store.reset_namespace(self.namespace, record)
            else:
                self.store.set_lineage(self.namespace, record)
            # Records of older checkpoints may be gone: restores older than this one are
            # refused from now on (unless re-execution is allowed again).
            self.store.set_prune_boundary(self.namespace, checkpoint_id, force=True)
            return
        self.discarded_marks = self.store.discard_prune_marks(self.namespace, checkpoint_id)
        if self.discarded_marks:
            _log.info("namespace %r: restored from checkpoint %d of job %s; discarded %d "
                      "prune marks of later checkpoints of the abandoned branch",
                      self.namespace, checkpoint_id, source, self.discarded_marks)
        history = resumed_history(current, source, checkpoint_id, timeline.job_id)
        if history != current.history:
            self.store.set_lineage(self.namespace, LineageRecord(current.lineage, history))

    def check_head(self) -> None:
        """Before pruning: fail if another job took the lineage over (a fork).

        Raises:
            LineageError: this job is no longer the head of its lineage in the namespace.
        """
        timeline = self.timeline
        if timeline is None:
            return
        current = self.store.get_lineage(self.namespace)
        if current is None or (current.lineage == timeline.lineage
                               and current.head == timeline.job_id):
            return  # None: the namespace was cleared meanwhile; no other job claimed it
        owner = f"job {current.head} of lineage {current.lineage!r}"
        raise LineageError(
            f"namespace {self.namespace!r}: job {timeline.job_id} (lineage "
            f"{timeline.lineage!r}) is no longer the head of its lineage: {owner} took the "
            f"namespace over (the same savepoint or checkpoint resumed twice, or a fresh "
            f"start on this namespace). Two jobs of one namespace at once would prune each "
            f"other's records; this job stops before pruning anything. Give concurrent jobs "
            f"distinct namespaces")
