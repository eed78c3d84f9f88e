"""Job timelines (lineages): the wire format the Java operators use, and the harness."""

from __future__ import annotations

from typing import Any, Sequence

import pytest

from flink_agents_ext import CheckpointedKeyedProcessFunction, CheckpointPayload, JobTimeline
from flink_agents_ext.errors import CheckpointLedgerError
from flink_agents_ext.testing import KeyedFunctionHarness


def test_wire_format_round_trips_and_matches_the_java_layout() -> None:
    fresh = JobTimeline.fresh("a" * 32, attempt=2)
    assert fresh.to_wire() == f"{'a' * 32}\n{'a' * 32}\n2\n-1\n\n1"
    assert JobTimeline.from_wire(fresh.to_wire()) == fresh and not fresh.restored
    resumed = JobTimeline("a" * 32, "b" * 32, 0, 7, "a" * 32)
    assert JobTimeline.from_wire(resumed.to_wire().encode()) == resumed and resumed.restored
    unchecked = JobTimeline("a", "a", checkpointing=False)
    assert unchecked.to_wire().endswith("\n0") and JobTimeline.from_wire(
        unchecked.to_wire()) == unchecked
    with pytest.raises(CheckpointLedgerError, match="corrupt job timeline"):
        JobTimeline.from_wire("x\ny")


class Recorder(CheckpointedKeyedProcessFunction):
    def __init__(self) -> None:
        self.events: list[Any] = []

    def process_element(self, value: Any, ctx: Any) -> None:
        self.events.append(("element", value))

    def open_timeline(self, timeline: JobTimeline) -> None:
        self.events.append(("timeline", timeline))

    def restore_state(self, checkpoint_id: int, payloads: Sequence[CheckpointPayload]) -> None:
        self.events.append(("restore", checkpoint_id))


def test_harness_hands_over_the_timeline_once_before_the_restore() -> None:
    first = Recorder()
    h = KeyedFunctionHarness(first, job_id="job-a")
    assert first.events == [("timeline", JobTimeline("job-a", "job-a", 0))]
    snap = h.snapshot()
    assert (snap.lineage, snap.job_id) == ("job-a", "job-a")
    failover = Recorder()
    h.restore(snap, failover)  # the same job's next attempt
    assert failover.events == [("timeline", JobTimeline("job-a", "job-a", 1, 1, "job-a")),
                               ("restore", 1)]
    resumed = Recorder()
    h2 = h.restore(snap, resumed, job_id="job-b")  # flink run -s: a new job, same lineage
    assert resumed.events[0] == ("timeline", JobTimeline("job-a", "job-b", 0, 1, "job-a"))
    snap2 = h2.snapshot()
    assert (snap2.lineage, snap2.job_id) == ("job-a", "job-b")
