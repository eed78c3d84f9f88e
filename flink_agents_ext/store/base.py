"""The action state store: one interface, one module per backend.

What a store keeps, per job *namespace* (several jobs can share one database):

* **action records**, one per (namespace, key, sequence, action, occurrence): the triggering
  event, the outputs and events the action emitted, its memory updates, and whether it
  completed. ``key`` is the stable encoding of the Flink key (:mod:`flink_agents_ext.keys`);
  ``sequence`` is the key's run number; ``occurrence`` is the ordinal of this action among
  the action's invocations in the run, so sibling events with equal content do not share a
  record.
* **call records**, the journal of durable calls inside an action, by position.
* **prune marks**, per checkpoint: the last completed sequence of the keys a checkpoint
  captured, waiting until the retention policy allows pruning them.
* the **prune boundary**: the newest checkpoint whose captured sequences were pruned, so a
  restore from an older checkpoint can be refused.
* the namespace's **lineage** (:class:`LineageRecord`): the job timeline its records, marks
  and boundary belong to, and the jobs of that timeline. A namespace holds one lineage at a
  time: a fresh start takes it over (:meth:`ActionStateStore.reset_namespace`), which removes
  what the earlier lineage left (see :mod:`flink_agents_ext.lineage`).

Payload columns (event, outputs, results...) are opaque ``bytes`` written by the caller's
serializer; stores never interpret them.

Implementations must be safe to call from several threads (one store object per subtask,
possibly shared by an executor's worker threads) and must make every ``put_*`` durable
before returning. Group commit (:mod:`flink_agents_ext.store.group_commit`) is a wrapper that
relaxes exactly this, by configuration: its puts are made durable in batches.

The record types are named tuples: immutable, and cheap to build (one or more per action).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from typing import Mapping, NamedTuple, Optional, Sequence, TypeVar

from flink_agents_ext.errors import FlinkAgentsExtError

_S = TypeVar("_S", bound="ActionStateStore")


class StoreError(FlinkAgentsExtError):
    """The action state store failed (after any retries the backend makes).

    Attributes:
        transient: whether the failure may go away by itself: a server that could not be
            reached within the retries (down, starting, restarting). ``False`` (the default)
            for what a restart cannot fix: a bad configuration, a refused login, a path that
            cannot be written, a file or schema that is not an action state store.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class StoreConfigError(StoreError):
    """The store configuration is invalid (unknown backend, missing setting...).

    Attributes:
        setting: the bad setting's name, when one setting is to blame, else ``None``.
        problem: what is wrong with it (e.g. ``"must be an integer >= 0, got str '1'"``).
    """

    def __init__(self, message: str, *, setting: Optional[str] = None,
                 problem: Optional[str] = None) -> None:
        super().__init__(message)
        self.setting = setting
        self.problem = problem or message


class RecordId(NamedTuple):
    """Identity of one action execution."""

    namespace: str
    key: str
    seq: int
    action: str
    occurrence: int


class ActionRecord(NamedTuple):
    """The recorded result of one action execution.

    Attributes:
        id: the record's identity.
        event: the serialised triggering event.
        outputs: the serialised list of records the action emitted downstream.
        events: the serialised list of events the action sent to other actions.
        memory_updates: the serialised mapping of per-key memory updates it made.
        completed: ``True`` once the action finished; replay skips completed actions.
    """

    id: RecordId
    event: bytes
    outputs: bytes
    events: bytes
    memory_updates: bytes
    completed: bool


class CallStatus(str, enum.Enum):
    """State of one durable call in the journal."""

    PENDING = "pending"  #: written before a reconcilable call; the call may or may not have run
    OK = "ok"  #: the call returned; ``result`` holds its serialised value
    ERROR = "error"  #: the call raised; ``error_type``/``error_message`` describe it


class CallRecord(NamedTuple):
    """One entry of an action's durable-call journal.

    Attributes:
        id: the action execution the call belongs to.
        position: 0-based position of the call within the action execution.
        function: the called function's identity (e.g. ``module.qualname``).
        digest: digest of the call's arguments.
        status: see :class:`CallStatus`.
        result: serialised return value (``OK``), else ``None``.
        error_type: qualified name of the exception class (``ERROR``), else ``None``.
        error_message: ``str()`` of the exception (``ERROR``), else ``None``.
    """

    id: RecordId
    position: int
    function: str
    digest: str
    status: CallStatus
    result: Optional[bytes] = None
    error_type: Optional[str] = None
    error_message: Optional[str] = None


class LineageRecord(NamedTuple):
    """The lineage (job timeline) a namespace belongs to, and its history.

    Attributes:
        lineage: the lineage id (the id of the job that started it fresh).
        history: the jobs of the lineage's current branch, oldest first: ``(job id, last
            checkpoint of that job the next job resumed from)``; the last entry is the job
            running the lineage now (its limit is ``None``). A checkpoint ``(job, n)`` is on
            the branch if the job is in the history and ``n`` is at most its limit.
    """

    lineage: str
    history: tuple[tuple[str, Optional[int]], ...] = ()

    @property
    def head(self) -> Optional[str]:
        """The job running the lineage now (the last of the history), or ``None``."""
        return self.history[-1][0] if self.history else None


class NamespaceReset(NamedTuple):
    """What :meth:`ActionStateStore.reset_namespace` did.

    Attributes:
        previous: the namespace's lineage before (``None``: it had none).
        removed: action and call records removed.
    """

    previous: Optional[LineageRecord]
    removed: int


class ActionStateStore(ABC):
    """Durable storage of action records, durable-call journals and pruning marks."""

    # -- action records --------------------------------------------------------------
    @abstractmethod
    def put_action(self, record: ActionRecord) -> None:
        """Insert or replace the action record ``record.id``."""

    @abstractmethod
    def get_action(self, record_id: RecordId) -> Optional[ActionRecord]:
        """Return the action record ``record_id``, or ``None``."""

    @abstractmethod
    def get_run(self, namespace: str, key: str, seq: int) -> list[ActionRecord]:
        """Return every action record of one run, ordered by (action, occurrence)."""

    @abstractmethod
    def recorded_runs(self, namespace: str) -> set[tuple[str, int]]:
        """The (key, seq) pairs that have any action or call record in ``namespace``.

        Everything older than the prune boundary is gone, so this is small: the runs of the
        last checkpoint interval(s). A run not in it has nothing to replay."""

    # -- durable-call journal ----------------------------------------------------------
    @abstractmethod
    def put_call(self, call: CallRecord) -> None:
        """Insert or replace the journal entry (``call.id``, ``call.position``)."""

    def put_many(self, actions: Sequence[ActionRecord], calls: Sequence[CallRecord]) -> None:
        """Insert or replace several records, in order, as one durable unit where the
        backend can (one transaction). The default puts them one by one."""
        for call in calls:
            self.put_call(call)
        for record in actions:
            self.put_action(record)

    def flush(self) -> None:  # noqa: B027 - deliberately a no-op by default
        """Make every put so far durable. A no-op for stores whose puts are durable on
        return (all backends); group commit writes its batch."""

    @abstractmethod
    def get_calls(self, record_id: RecordId) -> list[CallRecord]:
        """Return the journal of one action execution, ordered by position."""

    @abstractmethod
    def truncate_calls(self, record_id: RecordId, from_position: int) -> int:
        """Delete journal entries at ``from_position`` and after; return how many."""

    # -- pruning ---------------------------------------------------------------------
    @abstractmethod
    def prune(self, namespace: str, up_to: Mapping[str, int]) -> int:
        """For each ``key -> seq`` delete the key's action and call records with a sequence
        ``<= seq``, in one transaction. Return the number of rows deleted."""

    @abstractmethod
    def add_prune_marks(self, namespace: str, checkpoint_id: int,
                        up_to: Mapping[str, int]) -> None:
        """Remember that checkpoint ``checkpoint_id`` captured ``key -> last completed seq``."""

    @abstractmethod
    def take_prune_marks(self, namespace: str, up_to_checkpoint: int) -> dict[str, int]:
        """Remove and return the marks of checkpoints ``<= up_to_checkpoint``, merged to the
        highest sequence per key."""

    @abstractmethod
    def get_prune_boundary(self, namespace: str) -> Optional[int]:
        """The newest checkpoint whose captured sequences were pruned, or ``None``."""

    @abstractmethod
    def set_prune_boundary(self, namespace: str, checkpoint_id: int, *,
                           force: bool = False) -> None:
        """Raise the prune boundary to ``checkpoint_id`` (never lower it unless ``force``)."""

    @abstractmethod
    def discard_prune_marks(self, namespace: str, after_checkpoint: int) -> int:
        """Delete the marks of checkpoints ``> after_checkpoint`` (what an abandoned branch
        left after a restore from an older checkpoint); return how many were deleted."""

    # -- lineage -----------------------------------------------------------------------
    @abstractmethod
    def get_lineage(self, namespace: str) -> Optional[LineageRecord]:
        """The lineage ``namespace`` belongs to, or ``None``."""

    @abstractmethod
    def set_lineage(self, namespace: str, record: LineageRecord) -> None:
        """Set the lineage record of ``namespace`` (same lineage: a new history)."""

    @abstractmethod
    def reset_namespace(self, namespace: str, record: LineageRecord) -> Optional[NamespaceReset]:
        """Give ``namespace`` to lineage ``record.lineage``, atomically: unless it belongs to
        that lineage already, delete every record, mark and the boundary of the namespace
        and set its lineage record to ``record``. Several callers of one lineage at once
        (the subtasks of a job) remove the earlier lineage's records once, and never a
        record written after the namespace became ``record.lineage``'s.

        Returns:
            ``None`` if the namespace already belonged to ``record.lineage`` (nothing done),
            else what was removed.
        """

    # -- housekeeping ------------------------------------------------------------------
    @abstractmethod
    def clear_namespace(self, namespace: str) -> int:
        """Delete every record, mark, the boundary and the lineage of ``namespace``. Return
        the number of action and call records deleted."""

    @abstractmethod
    def size(self, namespace: Optional[str] = None) -> int:
        """Number of action and call records (of one namespace, or all)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections. Idempotent."""

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
