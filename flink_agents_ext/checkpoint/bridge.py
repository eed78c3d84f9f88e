"""The Python half of the checkpoint bridge, shared by thread and process mode.

The Java operator of each mode calls a :class:`CheckpointBridge` at the checkpoint events it
sees (snapshot, complete, abort, restore). The bridge keeps the :class:`PayloadLedger`, calls
the user's :class:`CheckpointedKeyedProcessFunction` callbacks, and returns the serialised
ledger to store with each checkpoint. What differs between modes is only how changed keys
are enumerated (``changed_keys`` below) and how calls arrive.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable, Iterator, Optional

from flink_agents_ext.checkpoint.completions import Completions
from flink_agents_ext.checkpoint.function import CheckpointedKeyedProcessFunction, SnapshotContext
from flink_agents_ext.checkpoint.ledger import PayloadLedger
from flink_agents_ext.checkpoint.timeline import JobTimeline

_log = logging.getLogger(__name__)


class CheckpointBridge:
    """Drives one subtask's :class:`CheckpointedKeyedProcessFunction` from checkpoint events.

    Args:
        function: the user function.
        changed_keys: returns an iterator over the keys changed since the previous snapshot,
            making each the current key while the iterator stands on it, and forgets them.
        key_handle: the current key's handle for :class:`Completions` (default: the
            function cannot hand work back; see :mod:`.completions`).
        operator_tracks_work: see :class:`Completions`.
        discard_changed_keys: forgets the changed keys at once, for a snapshot whose
            function did not walk them (default: walk them without looking).
    """

    def __init__(
        self,
        function: CheckpointedKeyedProcessFunction,
        changed_keys: Callable[[], Iterator[Any]],
        key_handle: Optional[Callable[[], Any]] = None,
        operator_tracks_work: bool = False,
        discard_changed_keys: Optional[Callable[[], None]] = None,
    ) -> None:
        self.function = function
        self._changed_keys = changed_keys
        self._discard_changed_keys = discard_changed_keys
        self.ledger = PayloadLedger()
        self.restored_from: Optional[int] = None
        self.timeline: Optional[JobTimeline] = None
        self.completions = Completions(key_handle or _no_key_handle, operator_tracks_work)
        function.bind_completions(self.completions)

    def open_timeline(self, timeline: JobTimeline | str | bytes) -> None:
        """Hand the subtask's job timeline (or its wire form) to the function, once."""
        if not isinstance(timeline, JobTimeline):
            timeline = JobTimeline.from_wire(timeline)
        self.timeline = timeline
        _log.info("job timeline: lineage %r, job %s, attempt %d, restored from %s",
                  timeline.lineage, timeline.job_id, timeline.attempt,
                  "nothing" if not timeline.restored else
                  f"checkpoint {timeline.restored_checkpoint_id} of job "
                  f"{timeline.restored_checkpoint_job_id}")
        self.function.open_timeline(timeline)

    def take_completions(self) -> tuple[Any, ...]:
        """The handles of the keys whose work finished since the last call (a tuple: pemja
        hands it to Java as ``Object[]``)."""
        return tuple(self.completions.take())

    def snapshot(self, checkpoint_id: int) -> bytes:
        """Run the snapshot callback for ``checkpoint_id``; return the ledger to store."""
        started = time.perf_counter()
        checkpoint_id = int(checkpoint_id)
        context = SnapshotContext(checkpoint_id, self._changed_keys)
        payload = self.function.snapshot_state(context)
        if not context.consumed:
            # The changed-key set is per snapshot interval: forget it even if unused.
            if self._discard_changed_keys is not None:
                self._discard_changed_keys()
            else:
                for _ in context.changed_keys():
                    pass
        self.ledger.add(checkpoint_id, payload)
        blob = self.ledger.to_bytes()
        _log.debug(
            "snapshot %d: %d pending, %d ledger bytes, %.1f ms",
            checkpoint_id, len(self.ledger), len(blob), (time.perf_counter() - started) * 1e3,
        )
        return blob

    def complete(self, checkpoint_id: int) -> None:
        """Hand every pending payload with an id <= ``checkpoint_id`` to the function."""
        checkpoint_id = int(checkpoint_id)
        payloads = self.ledger.complete(checkpoint_id)
        _log.debug("checkpoint %d complete: %d payloads", checkpoint_id, len(payloads))
        self.function.notify_checkpoint_complete(checkpoint_id, payloads)

    def abort(self, checkpoint_id: int) -> None:
        """Release the payload of ``checkpoint_id`` and hand it to the function."""
        checkpoint_id = int(checkpoint_id)
        payloads = self.ledger.abort(checkpoint_id)
        _log.info("checkpoint %d aborted (%d payloads released)", checkpoint_id, len(payloads))
        self.function.notify_checkpoint_aborted(checkpoint_id, payloads)

    def restore(self, checkpoint_id: int, blobs: Iterable[bytes]) -> None:
        """Deliver the unconfirmed payloads stored with ``checkpoint_id`` to the function."""
        checkpoint_id = int(checkpoint_id)
        restored = PayloadLedger.from_bytes(blobs)
        payloads = restored.drain()
        self.restored_from = checkpoint_id
        _log.info("restored from checkpoint %d: %d unconfirmed payloads",
                  checkpoint_id, len(payloads))
        self.function.restore_state(checkpoint_id, payloads)


def _no_key_handle() -> Any:
    raise RuntimeError("this operator gives its function no key handles for completions")
