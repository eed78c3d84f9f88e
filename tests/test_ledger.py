"""Pure-logic tests of the payload ledger and the bridge (no JVM)."""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import pytest

from flink_agents_ext.checkpoint.bridge import CheckpointBridge
from flink_agents_ext.checkpoint.function import CheckpointedKeyedProcessFunction, SnapshotContext
from flink_agents_ext.checkpoint.ledger import CheckpointPayload, PayloadLedger
from flink_agents_ext.errors import CheckpointLedgerError, PayloadSerializationError


def ids(payloads: Sequence[CheckpointPayload]) -> list[int]:
    return [p.checkpoint_id for p in payloads]


def test_complete_hands_over_subsumed_entries_oldest_first_exactly_once() -> None:
    ledger = PayloadLedger()
    for cid in (1, 2, 3, 4):
        ledger.add(cid, {"cp": cid})
    # Notifications for 1 and 2 were skipped: 3 subsumes them.
    done = ledger.complete(3)
    assert ids(done) == [1, 2, 3]
    assert [p.payload for p in done] == [{"cp": 1}, {"cp": 2}, {"cp": 3}]
    assert ledger.complete(3) == []
    assert ledger.complete(2) == []  # a late, out-of-order notification hands over nothing
    assert ids(ledger.complete(10)) == [4]
    assert len(ledger) == 0


def test_abort_releases_only_its_entry() -> None:
    ledger = PayloadLedger()
    for cid in (5, 6, 7):
        ledger.add(cid, cid)
    assert ids(ledger.abort(6)) == [6]
    assert ledger.abort(6) == []
    assert ledger.abort(42) == []
    assert ledger.pending_ids() == [5, 7]
    assert ids(ledger.complete(7)) == [5, 7]


def test_complete_abort_interleaved() -> None:
    ledger = PayloadLedger()
    ledger.add(1, "a")
    ledger.add(2, "b")
    assert ids(ledger.complete(1)) == [1]
    ledger.add(3, "c")
    assert ids(ledger.abort(2)) == [2]
    ledger.add(4, "d")
    assert ids(ledger.complete(3)) == [3]
    assert ledger.pending_ids() == [4]


def test_payload_kinds_round_trip_through_bytes() -> None:
    ledger = PayloadLedger()
    ledger.add(1, None)
    ledger.add(2, b"\x00\xffraw")
    ledger.add(3, {"k": [1, 2, "x"]})
    ledger.add(4, 7)
    restored = PayloadLedger.from_bytes([ledger.to_bytes()])
    assert [(p.checkpoint_id, p.payload) for p in restored.drain()] == [
        (1, None), (2, b"\x00\xffraw"), (3, {"k": [1, 2, "x"]}), (4, 7)]


def test_rescaled_restore_merges_blobs_of_several_subtasks() -> None:
    a, b = PayloadLedger(), PayloadLedger()
    a.add(3, "a3")
    a.add(4, "a4")
    b.add(4, "b4")
    merged = PayloadLedger.from_bytes([a.to_bytes(), b.to_bytes()])
    assert [(p.checkpoint_id, p.payload) for p in merged.drain()] == [
        (3, "a3"), (4, "a4"), (4, "b4")]


def test_bad_payloads_and_blobs_fail_clearly() -> None:
    ledger = PayloadLedger()
    with pytest.raises(PayloadSerializationError, match="bytes or a JSON-serialisable"):
        ledger.add(1, object())
    with pytest.raises(PayloadSerializationError):
        ledger.add(1, float("nan"))
    assert len(ledger) == 0
    ledger.add(2, 1)
    with pytest.raises(CheckpointLedgerError, match="must grow"):
        ledger.add(2, 1)
    with pytest.raises(CheckpointLedgerError, match="corrupt"):
        PayloadLedger.from_bytes([b"\x80not json"])
    with pytest.raises(CheckpointLedgerError, match="format"):
        PayloadLedger.from_bytes([b'{"format": 99, "entries": []}'])


class Recorder(CheckpointedKeyedProcessFunction):
    """Records every callback; its snapshot reads a fake keyed state."""

    def __init__(self, state: dict[str, int]) -> None:
        self.state = state
        self.current: str | None = None
        self.calls: list[tuple[Any, ...]] = []

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        yield value

    def snapshot_state(self, context: SnapshotContext) -> Any:
        seen = {k: self.state[k] for k in context.changed_keys()}
        self.calls.append(("snap", context.checkpoint_id, seen))
        return seen

    def notify_checkpoint_complete(self, checkpoint_id: int,
                                   payloads: Sequence[CheckpointPayload]) -> None:
        self.calls.append(("complete", checkpoint_id, [(p.checkpoint_id, p.payload)
                                                       for p in payloads]))

    def notify_checkpoint_aborted(self, checkpoint_id: int,
                                  payloads: Sequence[CheckpointPayload]) -> None:
        self.calls.append(("abort", checkpoint_id, ids(payloads)))

    def restore_state(self, checkpoint_id: int, payloads: Sequence[CheckpointPayload]) -> None:
        self.calls.append(("restore", checkpoint_id, ids(payloads)))


def make_bridge(state: dict[str, int], changed: list[str]) -> tuple[CheckpointBridge, Recorder]:
    func = Recorder(state)

    def changed_keys() -> Iterator[str]:
        keys, changed[:] = list(changed), []
        for key in keys:
            func.current = key
            yield key

    return CheckpointBridge(func, changed_keys), func


def test_bridge_snapshot_complete_abort_restore() -> None:
    state = {"a": 1, "b": 2}
    changed = ["a", "b"]
    bridge, func = make_bridge(state, changed)
    blob1 = bridge.snapshot(1)
    state["a"] = 5
    changed.append("a")
    bridge.snapshot(2)
    bridge.abort(2)
    bridge.snapshot(3)  # nothing changed
    bridge.complete(3)  # the notification of 1 was skipped
    assert func.calls == [
        ("snap", 1, {"a": 1, "b": 2}),
        ("snap", 2, {"a": 5}),
        ("abort", 2, [2]),
        ("snap", 3, {}),
        ("complete", 3, [(1, {"a": 1, "b": 2}), (3, {})]),
    ]
    # A fresh instance restored from checkpoint 1 gets what was unconfirmed at 1.
    bridge2, func2 = make_bridge(state, [])
    bridge2.restore(1, [blob1])
    assert func2.calls == [("restore", 1, [1])]
    bridge2.snapshot(4)
    bridge2.complete(4)
    assert func2.calls[-1] == ("complete", 4, [(4, {})])  # restored entries are not repeated


def test_snapshot_drains_unread_changed_keys() -> None:
    class Silent(CheckpointedKeyedProcessFunction):
        def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
            yield value

    changed = ["x"]

    def changed_keys() -> Iterator[str]:
        keys, changed[:] = list(changed), []
        yield from keys

    bridge = CheckpointBridge(Silent(), changed_keys)
    bridge.snapshot(1)
    assert changed == []


def test_snapshot_discards_unread_changed_keys_in_one_call() -> None:
    class Reader(CheckpointedKeyedProcessFunction):
        def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
            yield value

        def snapshot_state(self, context: SnapshotContext) -> Any:
            return sorted(context.changed_keys()) if read else None

    walked: list[str] = []
    discarded: list[int] = []

    def changed_keys() -> Iterator[str]:
        walked.append("walk")
        yield "x"

    bridge = CheckpointBridge(Reader(), changed_keys,
                              discard_changed_keys=lambda: discarded.append(1))
    read = False
    bridge.snapshot(1)
    assert (walked, discarded) == ([], [1]), "not walked key by key"
    read = True
    bridge.snapshot(2)
    assert (walked, discarded) == (["walk"], [1]), "walked by the function: not discarded"
    assert bridge.ledger.complete(2)[-1].payload == ["x"]


def test_changed_keys_iterates_once() -> None:
    context = SnapshotContext(1, lambda: iter(["a"]))
    assert list(context.changed_keys()) == ["a"]
    with pytest.raises(RuntimeError, match="only once"):
        context.changed_keys()
