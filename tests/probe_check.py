"""Reads the event logs of ``tests/jobs/bridge_probe.py`` and checks the bridge's contract.

Each check raises ``AssertionError`` with a message naming the instance and event.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from typing import Any

from tests.jobs.lines import read_lines


@dataclass
class Instance:
    """The events one function instance (one subtask, one attempt) logged, in order."""

    inst: str
    events: list[dict[str, Any]] = field(default_factory=list)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["ev"] == kind]

    @property
    def restored_from(self) -> int | None:
        restores = self.of("restore")
        return restores[0]["cp"] if restores else None


def load(out_dir: str) -> list[Instance]:
    """All instances of a probe run, in the order their files were opened."""
    instances = []
    for path in glob.glob(os.path.join(out_dir, "events-*.jsonl")):
        with open(path) as fh:
            events = [json.loads(line) for line in fh if line.strip()]
        instances.append(Instance(events[0]["inst"], events))
    return instances


def outputs(out_dir: str) -> list[str]:
    """Every record the writer after the probe saw."""
    return read_lines(out_dir)


def check_changed_keys(inst: Instance) -> int:
    """Each snapshot reports exactly the keys processed since the previous snapshot of the
    instance (since open for the first), with the count each had at that moment.

    Returns the number of snapshots checked.
    """
    touched: dict[str, int] = {}
    checked = 0
    for e in inst.events:
        if e["ev"] in ("el", "timer"):
            touched[e["key"]] = e["count"]
        elif e["ev"] == "snap":
            assert e["changed"] == touched, (
                f"{inst.inst}: snapshot {e['cp']} reported {e['changed']}, expected {touched}")
            touched = {}
            checked += 1
    return checked


def check_order_and_exactly_once(inst: Instance) -> None:
    """Snapshot ids grow; completion of n hands over, oldest first, exactly the not yet
    handed-over snapshots <= n; every payload is handed over at most once; an aborted
    snapshot's payload goes to the abort callback and never to a completion."""
    snaps: list[int] = []
    handed: dict[int, str] = {}
    for e in inst.events:
        if e["ev"] == "snap":
            assert not snaps or e["cp"] > snaps[-1], f"{inst.inst}: snapshot ids must grow"
            snaps.append(e["cp"])
        elif e["ev"] in ("complete", "abort"):
            ids = [pid for pid, _ in e["payloads"]]
            assert ids == sorted(ids), f"{inst.inst}: payloads not oldest first: {ids}"
            for pid, payload in e["payloads"]:
                assert pid not in handed, (
                    f"{inst.inst}: payload {pid} handed over twice ({handed[pid]}, {e['ev']})")
                handed[pid] = e["ev"]
                assert payload["cp"] == pid and payload["inst"] == inst.inst, payload
            if e["ev"] == "complete":
                expected = [s for s in snaps if s <= e["cp"] and s not in handed]
                assert expected == [], (
                    f"{inst.inst}: completion {e['cp']} left snapshots {expected} behind")
                assert all(pid <= e["cp"] for pid in ids), (
                    f"{inst.inst}: completion {e['cp']} handed over a later snapshot: {ids}")
            else:
                assert ids in ([], [e["cp"]]), (
                    f"{inst.inst}: abort {e['cp']} released {ids}")


def final_counts(instances: list[Instance]) -> dict[str, int]:
    """The last count each key reached in the last attempt."""
    counts: dict[str, int] = {}
    for inst in instances:
        for e in inst.events:
            if e["ev"] in ("el", "timer"):
                counts[e["key"]] = e["count"]
    return counts


def final_totals(instances: list[Instance]) -> dict[str, int]:
    """The highest count each key reached (the last attempt replays up to it)."""
    totals: dict[str, int] = {}
    for inst in instances:
        for e in inst.events:
            if e["ev"] in ("el", "timer"):
                totals[e["key"]] = max(totals.get(e["key"], 0), e["count"])
    return totals


def check_timeline(inst: Instance, *, restored_from: int | None = None) -> dict[str, Any]:
    """The instance was told its job timeline once, right after open (before any element
    and before the restore); a fresh start's lineage is its job id. Returns the event."""
    kinds = [e["ev"] for e in inst.events]
    assert kinds[:2] == ["open", "timeline"], kinds[:3]
    assert kinds.count("timeline") == 1
    [timeline] = inst.of("timeline")
    assert len(timeline["job"]) == 32 and timeline["lineage"], timeline
    assert timeline["cp"] == restored_from, timeline
    if restored_from is None:
        assert timeline["lineage"] == timeline["job"] and timeline["cp_job"] is None
    else:
        assert kinds[2] == "restore", kinds[:4]
    return timeline


def check_restore(instances: list[Instance]) -> int:
    """After a restore from checkpoint n, each key continues from the value it had in
    checkpoint n (its last change reported by a snapshot <= n of the earlier attempt).

    Returns the restored checkpoint id.
    """
    restored = [i for i in instances if i.restored_from is not None]
    before = [i for i in instances if i.restored_from is None]
    assert restored, "no instance was restored"
    cps = {i.restored_from for i in restored}
    assert len(cps) == 1, f"instances restored from different checkpoints: {cps}"
    cp = cps.pop()
    assert cp is not None
    at_cp: dict[str, tuple[int, int]] = {}
    for inst in before:
        for e in inst.of("snap"):
            if e["cp"] <= cp:
                for key, value in e["changed"].items():
                    if key not in at_cp or at_cp[key][0] < e["cp"]:
                        at_cp[key] = (e["cp"], value)
    for inst in restored:
        seen: set[str] = set()
        for e in inst.events:
            if e["ev"] in ("el", "timer") and e["key"] not in seen:
                seen.add(e["key"])
                step = 1 if e["ev"] == "el" else 1000
                expected = at_cp.get(e["key"], (0, 0))[1]
                assert e["count"] - step == expected, (
                    f"{inst.inst}: key {e['key']} resumed from {e['count'] - step}, "
                    f"checkpoint {cp} holds {expected}")
    return cp
