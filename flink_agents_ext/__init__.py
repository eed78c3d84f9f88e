"""flink-agents-ext: durable, replay-safe keyed actions for PyFlink.

Public names:

* :class:`CheckpointedKeyedProcessFunction`: a ``KeyedProcessFunction`` with snapshot,
  checkpoint-complete, checkpoint-aborted and restore callbacks driven by real checkpoints.
* :func:`process_with_checkpoints`: apply such a function to a ``KeyedStream``.
* :func:`configure_environment`: prepare a ``StreamExecutionEnvironment`` (jar, Python).
* :class:`CheckpointPayload`, :class:`SnapshotContext`, :class:`JobTimeline`: callback
  arguments.
* :func:`stop_with_savepoint`: stop a job with a savepoint (PyFlink 2.3.0's own
  ``JobClient.stop_with_savepoint`` is broken).
"""

from flink_agents_ext._compat import stop_with_savepoint
from flink_agents_ext.checkpoint import (
    CheckpointedKeyedProcessFunction,
    CheckpointPayload,
    JobTimeline,
    SnapshotContext,
    process_with_checkpoints,
)
from flink_agents_ext.environment import configure_environment

__version__ = "0.1.0"

__all__ = [
    "CheckpointPayload",
    "CheckpointedKeyedProcessFunction",
    "JobTimeline",
    "SnapshotContext",
    "configure_environment",
    "process_with_checkpoints",
    "stop_with_savepoint",
]
