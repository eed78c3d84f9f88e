"""The checkpoint bridge: real Flink checkpoint callbacks for Python keyed functions.

* :mod:`.function`: :class:`CheckpointedKeyedProcessFunction`, the class users subclass.
* :mod:`.timeline`: :class:`JobTimeline`, the lineage/job/attempt a subtask runs in.
* :mod:`.ledger`: payload bookkeeping (subsumed notifications, restore), pure Python.
* :mod:`.bridge`: the mode-independent Python half that the Java operators call.
* :mod:`._thread_mode`, :mod:`._process_mode`: how each execution mode reaches the bridge.
* :mod:`.operator`: :func:`process_with_checkpoints`, used in place of ``KeyedStream.process``.
"""

from flink_agents_ext.checkpoint.function import CheckpointedKeyedProcessFunction, SnapshotContext
from flink_agents_ext.checkpoint.ledger import CheckpointPayload, PayloadLedger
from flink_agents_ext.checkpoint.operator import process_with_checkpoints
from flink_agents_ext.checkpoint.timeline import JobTimeline

__all__ = [
    "CheckpointPayload",
    "CheckpointedKeyedProcessFunction",
    "JobTimeline",
    "PayloadLedger",
    "SnapshotContext",
    "process_with_checkpoints",
]
