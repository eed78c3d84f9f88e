"""The user-facing base class: a keyed process function told about real Flink checkpoints."""

from __future__ import annotations

from abc import ABC
from typing import Any, Callable, Iterator, Optional, Sequence

from pyflink.datastream.functions import KeyedProcessFunction

from flink_agents_ext.checkpoint.completions import Completions
from flink_agents_ext.checkpoint.ledger import CheckpointPayload
from flink_agents_ext.checkpoint.timeline import JobTimeline


class SnapshotContext:
    """What :meth:`CheckpointedKeyedProcessFunction.snapshot_state` gets to work with.

    Attributes:
        checkpoint_id: the id of the checkpoint being taken.
    """

    def __init__(self, checkpoint_id: int, changed_keys: Callable[[], Iterator[Any]]) -> None:
        self.checkpoint_id = checkpoint_id
        self._changed_keys = changed_keys
        self._consumed = False

    @property
    def consumed(self) -> bool:
        """Whether :meth:`changed_keys` was called for this snapshot."""
        return self._consumed

    def changed_keys(self) -> Iterator[Any]:
        """Iterate over the keys whose element or timer was processed since the previous
        snapshot of this subtask (since the restore, for the first snapshot after one).

        While the iterator stands on a key, that key is the current key: the function's keyed
        state (``ValueState.value()`` etc.) reads that key's values as of this checkpoint.
        The cost is proportional to the number of changed keys, never to all keys in state.
        The set can be iterated once per snapshot.
        """
        if self._consumed:
            raise RuntimeError("SnapshotContext.changed_keys() can be iterated only once")
        self._consumed = True
        return self._changed_keys()


class CheckpointedKeyedProcessFunction(KeyedProcessFunction, ABC):
    """A :class:`~pyflink.datastream.functions.KeyedProcessFunction` with checkpoint callbacks.

    Subclass it as you would ``KeyedProcessFunction`` (``open``, ``process_element``,
    ``on_timer``, ``close``) and override any of the callbacks below. Apply it with
    :func:`flink_agents_ext.process_with_checkpoints` instead of ``KeyedStream.process``;
    the callbacks are driven by the real checkpoints of the job, in thread and process mode.

    Once per subtask, after ``open`` and before any element, :meth:`open_timeline` tells
    the function which job timeline (lineage, job, attempt) it runs in, and whether (and
    from which checkpoint) the job was restored; :meth:`restore_state` follows if it was.

    Order of events for one checkpoint ``n`` of one subtask:

    1. :meth:`snapshot_state` (``n``): runs where every keyed-state update made before it is
       part of checkpoint ``n``. Its return value (the *payload*) is stored with the
       checkpoint.
    2. Either :meth:`notify_checkpoint_complete` (``n``) once the checkpoint is globally
       complete, or :meth:`notify_checkpoint_aborted` (``n``) where Flink reports an abort.

    Flink may skip a completion notification when a later one subsumes it; the completion of
    ``n`` therefore hands over the payloads of *every* unconfirmed snapshot with an id <= ``n``,
    oldest first, each exactly once. After a failover, :meth:`restore_state` gets the payloads
    that were still unconfirmed in the restored checkpoint: their completion notification may
    have been lost (or may have run before the failure), so the work done for them must be
    idempotent.

    Callbacks run on the task thread, between elements; they must not emit records.
    """

    def open_timeline(self, timeline: JobTimeline) -> None:
        """Called once after ``open``, before any element and before :meth:`restore_state`.

        Args:
            timeline: the lineage (job timeline), the job id and attempt, and the
                checkpoint the job restored from, if any (see
                :class:`~flink_agents_ext.checkpoint.timeline.JobTimeline`). The lineage is
                the same in every subtask and survives failovers, rescales and savepoint
                resumes; a fresh start begins a new one.
        """

    def completion_interval_ms(self) -> Optional[int]:
        """How often the operator collects work finished off the task thread (see
        :mod:`~flink_agents_ext.checkpoint.completions`); ``None`` (default): the function
        runs nothing off the task thread. Read on the client when the operator is built."""
        return None

    def bind_completions(self, completions: Completions) -> None:
        """Called once per subtask, before any element: where to take key handles from and
        push finished work to (see :mod:`~flink_agents_ext.checkpoint.completions`)."""

    def snapshot_state(self, context: SnapshotContext) -> Any:
        """Called when checkpoint ``context.checkpoint_id`` is taken.

        Returns:
            ``None``, ``bytes`` or a JSON-serialisable value, stored with the checkpoint and
            handed to :meth:`notify_checkpoint_complete` (or :meth:`restore_state`). Keep it
            small: it is part of operator state of every checkpoint until confirmed.
        """
        return None

    def notify_checkpoint_complete(
        self, checkpoint_id: int, payloads: Sequence[CheckpointPayload]
    ) -> None:
        """Called after checkpoint ``checkpoint_id`` completed globally.

        Args:
            checkpoint_id: the notified checkpoint.
            payloads: the payloads of every snapshot with an id <= ``checkpoint_id`` not
                confirmed before, oldest first (empty if this subtask took none).
        """

    def notify_checkpoint_aborted(
        self, checkpoint_id: int, payloads: Sequence[CheckpointPayload]
    ) -> None:
        """Called where Flink reports that checkpoint ``checkpoint_id`` was aborted.

        Args:
            checkpoint_id: the aborted checkpoint.
            payloads: the payload of this subtask's snapshot for it, if one was taken (empty
                otherwise). It is released here and never handed to
                :meth:`notify_checkpoint_complete`. What it described (for instance the keys
                changed before that snapshot) is *not* reported again by the next snapshot's
                :meth:`SnapshotContext.changed_keys`: carry it over yourself if you need it.

        Best effort, like Flink's own: an abort may go unreported; the entry is then handed
        over by the completion of a later checkpoint, which covers everything the aborted
        snapshot saw.
        """

    def restore_state(self, checkpoint_id: int, payloads: Sequence[CheckpointPayload]) -> None:
        """Called once after ``open`` when the job was restored from ``checkpoint_id``.

        Args:
            checkpoint_id: the checkpoint (or savepoint) the job restored from.
            payloads: the payloads stored with that checkpoint that were not yet confirmed
                when it was taken, oldest first. The restore proves the checkpoint completed,
                so these are confirmed now; they are not handed over again.
        """
