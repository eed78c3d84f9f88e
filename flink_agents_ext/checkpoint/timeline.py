"""The job timeline a subtask runs in: which lineage, which job, which attempt.

A *lineage* is the timeline of one job across its failovers, changes of parallelism and
savepoint resumes. It begins when a job starts fresh (not restored from a checkpoint or
savepoint) and is named after that job's id, so every subtask of the job agrees on it
without talking to the others. The Java operators keep it in *union* operator state with
every checkpoint, so every subtask of every job restored from one of those checkpoints (any
parallelism) is handed the same lineage. A job resumed from an older savepoint or retained
checkpoint stays in the lineage; a fresh start (a plain ``flink run`` without ``-s``, a
redeploy) begins a new one.

The Java operator hands a :class:`JobTimeline` to the bridge once, after ``open`` and
before any element and before ``restore_state``
(:meth:`CheckpointedKeyedProcessFunction.open_timeline`). Wire format (thread mode: a
string argument; process mode: the payload of a signal): UTF-8 lines ``lineage``,
``job id``, ``attempt``, ``restored checkpoint id`` (``-1`` when not restored), ``id of
the job that took the restored checkpoint``, ``checkpointing`` (``1`` when the job has
checkpointing enabled, ``0`` when not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from flink_agents_ext.errors import CheckpointLedgerError

#: The lineage of a job restored from a checkpoint taken before lineages existed.
LEGACY_LINEAGE = ""


@dataclass(frozen=True)
class JobTimeline:
    """Where a subtask stands: its lineage, its job and attempt, and what it restored.

    Attributes:
        lineage: the lineage id (the id of the job that started it fresh;
            :data:`LEGACY_LINEAGE` after a restore from a checkpoint without one).
        job_id: the id of the running job (Flink's job id, hex).
        attempt: this subtask's execution attempt (0 for its first; a restart after a
            failure counts up, a new job starts at 0 again).
        restored_checkpoint_id: the checkpoint or savepoint the job restored from, or
            ``None`` for a fresh start (then the job id is the lineage).
        restored_checkpoint_job_id: the id of the job that took that checkpoint (the
            current job's id after a failover; an earlier job's after ``flink run -s``).
        checkpointing: whether the job has checkpointing enabled (without it, no
            checkpoint callback is ever called).
    """

    lineage: str
    job_id: str
    attempt: int = 0
    restored_checkpoint_id: Optional[int] = None
    restored_checkpoint_job_id: Optional[str] = None
    checkpointing: bool = True

    @property
    def restored(self) -> bool:
        """Whether the job was restored from a checkpoint or savepoint."""
        return self.restored_checkpoint_id is not None

    @classmethod
    def fresh(cls, job_id: str, attempt: int = 0) -> JobTimeline:
        """The timeline of a job started without restoring: a lineage named after it."""
        return cls(job_id, job_id, attempt)

    def to_wire(self) -> str:
        """The wire format (see the module documentation)."""
        cid = -1 if self.restored_checkpoint_id is None else self.restored_checkpoint_id
        return "\n".join([self.lineage, self.job_id, str(self.attempt), str(cid),
                          self.restored_checkpoint_job_id or "",
                          "1" if self.checkpointing else "0"])

    @classmethod
    def from_wire(cls, data: Union[str, bytes]) -> JobTimeline:
        """Parse the wire format.

        Raises:
            CheckpointLedgerError: the data is not a timeline.
        """
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else str(data)
        parts = text.split("\n")
        try:
            lineage, job_id, attempt, cid, cp_job, checkpointing = parts
            restored = int(cid)
            if checkpointing not in ("0", "1"):
                raise ValueError(checkpointing)
            return cls(lineage, job_id, int(attempt),
                       None if restored < 0 else restored,
                       cp_job if restored >= 0 else None, checkpointing == "1")
        except ValueError as exc:
            raise CheckpointLedgerError(f"corrupt job timeline from the operator: "
                                        f"{text!r}") from exc
