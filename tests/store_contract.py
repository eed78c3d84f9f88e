"""Backend-agnostic contract of :class:`~flink_agents_ext.store.base.ActionStateStore`.

Every backend runs the same tests: subclass :class:`StoreContract` in a ``test_*.py`` module
and provide one fixture, ``store_factory``: a zero-argument callable that opens a **new**
store object on the test's database (the same database on every call of one test)::

    class TestMyStoreContract(StoreContract):
        @pytest.fixture
        def store_factory(self, tmp_path: Path) -> StoreFactory:
            return lambda: MyStore(...)

Stores opened through ``store_factory`` must be closed by the test or are closed at
teardown. Each test works in namespaces of its own (fixture ``ns``), so the database may
be shared with other tests; only :meth:`ActionStateStore.size` without a namespace looks
at everything, and it is checked relative to its value at the start.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from flink_agents_ext.store.base import (
    ActionRecord,
    ActionStateStore,
    CallRecord,
    CallStatus,
    RecordId,
    StoreError,
)

ROOT = Path(__file__).resolve().parent.parent

#: Opens a new store object on the test's database.
StoreFactory = Callable[[], ActionStateStore]


def rid(ns: str, key: str = "k", seq: int = 1, action: str = "a",
        occurrence: int = 0) -> RecordId:
    """A record id with defaults for the parts a test does not care about."""
    return RecordId(ns, key, seq, action, occurrence)


def action_record(record_id: RecordId, tag: str = "", completed: bool = True,
                  size: int = 0) -> ActionRecord:
    """An action record whose payloads are derived from ``record_id`` and ``tag``."""
    base = f"{record_id}|{tag}".encode()
    pad = bytes(i % 251 for i in range(size))
    return ActionRecord(record_id, event=b"ev:" + base + pad, outputs=b"out:" + base,
                        events=b"evs:" + base, memory_updates=b"mem:" + base,
                        completed=completed)


def call_record(record_id: RecordId, position: int,
                status: CallStatus = CallStatus.OK, tag: str = "") -> CallRecord:
    """A call record; ``OK`` calls carry a result, ``ERROR`` calls an error."""
    if status is CallStatus.OK:
        return CallRecord(record_id, position, "mod.fn", f"d{position}{tag}", status,
                          result=f"r{position}{tag}".encode())
    if status is CallStatus.ERROR:
        return CallRecord(record_id, position, "mod.fn", f"d{position}{tag}", status,
                          error_type="builtins.ValueError", error_message=f"bad {tag}")
    return CallRecord(record_id, position, "mod.fn", f"d{position}{tag}", status)


def fill(store: ActionStateStore, ns: str, key: str, seqs: range, calls: int = 2) -> int:
    """Write one action record and ``calls`` call records per sequence; return rows."""
    for seq in seqs:
        record_id = rid(ns, key, seq)
        store.put_action(action_record(record_id))
        for position in range(calls):
            store.put_call(call_record(record_id, position))
    return len(seqs) * (1 + calls)


def run_threads(count: int, target: Callable[[int], None]) -> None:
    """Run ``target(i)`` in ``count`` threads started together; re-raise the first error."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait()
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "writer threads did not finish"
    if errors:
        raise errors[0]


def check_put_survives_a_killed_process(open_source: str,
                                        reopen: Callable[[], ActionStateStore]) -> None:
    """Put an action record and a call in a process that then kills itself (``kill -9``,
    no close); ``reopen`` must find both. ``open_source`` is Python source assigning the
    store to ``store`` (imports included)."""
    script = "\n".join([
        "import os, signal",
        "from flink_agents_ext.store import ActionRecord, CallRecord, CallStatus, RecordId",
        open_source,
        "rid = RecordId('ns', 'k', 1, 'a', 0)",
        "store.put_action(ActionRecord(rid, b'e', b'o', b'v', b'm', True))",
        "store.put_call(CallRecord(rid, 0, 'f', 'd', CallStatus.OK, result=b'r'))",
        "os.kill(os.getpid(), signal.SIGKILL)"])
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    with reopen() as store:
        record_id = RecordId("ns", "k", 1, "a", 0)
        assert store.get_action(record_id) == ActionRecord(record_id, b"e", b"o", b"v", b"m",
                                                           True)
        assert [c.result for c in store.get_calls(record_id)] == [b"r"]


class StoreContract:
    """The behaviour every :class:`ActionStateStore` backend must have."""

    # -- fixtures ------------------------------------------------------------------------
    @pytest.fixture
    def opened(self, store_factory: StoreFactory) -> Iterator[Callable[[], ActionStateStore]]:
        """Like ``store_factory``, but every store it opens is closed at teardown."""
        stores: list[ActionStateStore] = []

        def open_one() -> ActionStateStore:
            store = store_factory()
            stores.append(store)
            return store

        yield open_one
        for store in stores:
            store.close()

    @pytest.fixture
    def store(self, opened: Callable[[], ActionStateStore]) -> ActionStateStore:
        """A store on the test's database."""
        return opened()

    @pytest.fixture
    def ns(self) -> str:
        """A namespace no other test uses."""
        return f"ns-{uuid.uuid4().hex[:12]}"

    # -- recorded runs --------------------------------------------------------------------
    def test_recorded_runs_lists_runs_with_any_record(self, store: ActionStateStore,
                                                      ns: str) -> None:
        assert store.recorded_runs(ns) == set()
        store.put_action(ActionRecord(rid(ns, "a", 1), b"e", b"o", b"v", b"m", True))
        store.put_call(CallRecord(rid(ns, "a", 1, "b"), 0, "f", "d", CallStatus.OK, b"r"))
        store.put_call(CallRecord(rid(ns, "b", 7), 0, "f", "d", CallStatus.PENDING))
        store.put_action(ActionRecord(rid(ns + "-x", "c", 2), b"e", b"o", b"v", b"m", True))
        assert store.recorded_runs(ns) == {("a", 1), ("b", 7)}
        store.prune(ns, {"a": 1})
        assert store.recorded_runs(ns) == {("b", 7)}

    # -- clearing a namespace -----------------------------------------------------------
    def test_clear_namespace_removes_only_that_namespace(self, store: ActionStateStore,
                                                         ns: str) -> None:
        other = ns + "-other"
        for namespace in (ns, other):
            store.put_action(ActionRecord(rid(namespace), b"e", b"o", b"v", b"m", True))
            store.put_call(CallRecord(rid(namespace), 0, "f", "d", CallStatus.OK, b"r"))
            store.add_prune_marks(namespace, 1, {"k": 3})
            store.set_prune_boundary(namespace, 4)
        assert store.clear_namespace(ns) == 2
        assert store.size(ns) == 0 and store.get_prune_boundary(ns) is None
        assert store.take_prune_marks(ns, 10) == {}
        assert store.size(other) == 2 and store.get_prune_boundary(other) == 4
        assert store.take_prune_marks(other, 10) == {"k": 3}

    # -- action records ------------------------------------------------------------------
    def test_get_missing_action_returns_none(self, store: ActionStateStore, ns: str) -> None:
        assert store.get_action(rid(ns)) is None
        assert store.get_run(ns, "k", 1) == []

    def test_put_get_action_round_trip(self, store: ActionStateStore, ns: str) -> None:
        record = ActionRecord(rid(ns), event=b"\x00\xff\x00", outputs=b"", events=b"[]",
                              memory_updates=b"{}", completed=False)
        store.put_action(record)
        got = store.get_action(rid(ns))
        assert got == record
        assert got is not None and type(got.event) is bytes and got.completed is False

    def test_put_action_replaces(self, store: ActionStateStore, ns: str) -> None:
        store.put_action(action_record(rid(ns), "first", completed=False))
        second = action_record(rid(ns), "second", completed=True)
        store.put_action(second)
        assert store.get_action(rid(ns)) == second
        assert store.get_run(ns, "k", 1) == [second]
        assert store.size(ns) == 1

    def test_large_payload_round_trip(self, store: ActionStateStore, ns: str) -> None:
        record = action_record(rid(ns), size=2 * 1024 * 1024)
        store.put_action(record)
        assert store.get_action(rid(ns)) == record

    def test_get_run_orders_by_action_then_occurrence(self, store: ActionStateStore,
                                                      ns: str) -> None:
        ids = [rid(ns, action=a, occurrence=o) for a in ("b", "a", "c") for o in (10, 2, 0)]
        for record_id in ids:
            store.put_action(action_record(record_id))
        order = [(r.id.action, r.id.occurrence) for r in store.get_run(ns, "k", 1)]
        assert order == [(a, o) for a in ("a", "b", "c") for o in (0, 2, 10)]

    def test_get_run_orders_actions_by_code_point(self, store: ActionStateStore,
                                                  ns: str) -> None:
        # Byte/code-point order, independent of any locale collation ("B" < "a" < "é").
        names = ["é", "a", "B", "_x", "a b", "ab"]
        for name in names:
            store.put_action(action_record(rid(ns, action=name)))
        assert [r.id.action for r in store.get_run(ns, "k", 1)] == sorted(names)

    def test_get_run_isolates_namespaces_keys_and_seqs(self, store: ActionStateStore,
                                                       ns: str) -> None:
        other = ns + "-other"
        ids = [rid(n, k, s, "a", 0) for n in (ns, other) for k in ("k1", "k2") for s in (1, 2)]
        for record_id in ids:
            store.put_action(action_record(record_id))
        for record_id in ids:
            run = store.get_run(record_id.namespace, record_id.key, record_id.seq)
            assert [r.id for r in run] == [record_id]
            assert run[0] == action_record(record_id)

    def test_similar_keys_stay_distinct(self, store: ActionStateStore, ns: str) -> None:
        keys = ["1", "i:1", "s:1", "", " 1", "1 ", "K", "k", "%", "_", "k%", "ü",
                "a'b", 'a"b', "x" * 600]
        for key in keys:
            store.put_action(action_record(rid(ns, key), tag=key))
        for key in keys:
            assert store.get_run(ns, key, 1) == [action_record(rid(ns, key), tag=key)]
        assert store.size(ns) == len(keys)
        assert store.prune(ns, {"1": 1}) == 1
        assert store.get_run(ns, "i:1", 1) != []
        assert store.size(ns) == len(keys) - 1

    def test_large_sequence_numbers(self, store: ActionStateStore, ns: str) -> None:
        big = 2**62
        store.put_action(action_record(rid(ns, seq=big, occurrence=big)))
        assert store.get_run(ns, "k", big)[0].id.occurrence == big
        assert store.prune(ns, {"k": big - 1}) == 0
        assert store.prune(ns, {"k": big}) == 1

    # -- durable-call journal ------------------------------------------------------------
    def test_call_journal_round_trip_in_position_order(self, store: ActionStateStore,
                                                       ns: str) -> None:
        record_id = rid(ns)
        calls = [call_record(record_id, 2, CallStatus.PENDING),
                 call_record(record_id, 0, CallStatus.OK),
                 call_record(record_id, 1, CallStatus.ERROR),
                 CallRecord(record_id, 3, "m.g", "d3", CallStatus.OK, result=b"")]
        for call in calls:
            store.put_call(call)
        got = store.get_calls(record_id)
        assert got == sorted(calls, key=lambda c: c.position)
        assert [type(c.status) for c in got] == [CallStatus] * 4
        assert got[2].result is None and got[3].result == b""

    def test_put_many_writes_calls_and_actions_in_order(self, store: ActionStateStore,
                                                        ns: str) -> None:
        first, second = rid(ns, seq=1), rid(ns, seq=2)
        store.put_many([action_record(first, "old"), action_record(first, "new"),
                        action_record(second)],
                       [call_record(first, 0, tag="old"), call_record(first, 0, tag="new"),
                        call_record(first, 1), call_record(second, 0, CallStatus.PENDING)])
        store.put_many([], [])
        assert store.get_action(first) == action_record(first, "new")
        assert store.get_action(second) == action_record(second)
        assert store.get_calls(first) == [call_record(first, 0, tag="new"),
                                          call_record(first, 1)]
        assert store.get_calls(second) == [call_record(second, 0, CallStatus.PENDING)]
        assert store.size(ns) == 5

    def test_get_calls_of_unknown_execution_is_empty(self, store: ActionStateStore,
                                                     ns: str) -> None:
        assert store.get_calls(rid(ns)) == []
        assert store.truncate_calls(rid(ns), 0) == 0

    def test_put_call_replaces(self, store: ActionStateStore, ns: str) -> None:
        record_id = rid(ns)
        store.put_call(call_record(record_id, 0, CallStatus.PENDING))
        done = call_record(record_id, 0, CallStatus.OK, tag="x")
        store.put_call(done)
        assert store.get_calls(record_id) == [done]

    def test_calls_belong_to_their_execution(self, store: ActionStateStore, ns: str) -> None:
        ids = [rid(ns), rid(ns, occurrence=1), rid(ns, action="b"), rid(ns, seq=2),
               rid(ns, key="k2"), rid(ns + "-other")]
        for i, record_id in enumerate(ids):
            store.put_call(call_record(record_id, 0, tag=str(i)))
        for i, record_id in enumerate(ids):
            assert store.get_calls(record_id) == [call_record(record_id, 0, tag=str(i))]

    def test_truncate_calls(self, store: ActionStateStore, ns: str) -> None:
        record_id, sibling = rid(ns), rid(ns, occurrence=1)
        for position in range(5):
            store.put_call(call_record(record_id, position))
            store.put_call(call_record(sibling, position))
        assert store.truncate_calls(record_id, 3) == 2
        assert [c.position for c in store.get_calls(record_id)] == [0, 1, 2]
        assert store.truncate_calls(record_id, 3) == 0
        assert store.truncate_calls(record_id, 0) == 3
        assert store.get_calls(record_id) == []
        assert len(store.get_calls(sibling)) == 5

    # -- pruning -------------------------------------------------------------------------
    def test_prune_deletes_exactly_up_to_the_bound_per_key(self, store: ActionStateStore,
                                                           ns: str) -> None:
        fill(store, ns, "a", range(1, 6))
        fill(store, ns, "b", range(1, 6))
        fill(store, ns, "c", range(1, 6))
        # A call journal without an action record (the action never completed) goes too.
        store.put_call(call_record(rid(ns, "a", 3, "orphan"), 0))
        deleted = store.prune(ns, {"a": 3, "b": 1})
        assert deleted == 3 * 3 + 1 + 1 * 3
        for seq in range(1, 6):
            assert bool(store.get_run(ns, "a", seq)) == (seq > 3)
            assert bool(store.get_calls(rid(ns, "a", seq))) == (seq > 3)
            assert bool(store.get_run(ns, "b", seq)) == (seq > 1)
            assert bool(store.get_calls(rid(ns, "b", seq))) == (seq > 1)
            assert store.get_run(ns, "c", seq) and store.get_calls(rid(ns, "c", seq))
        assert store.get_calls(rid(ns, "a", 3, "orphan")) == []
        assert store.size(ns) == 15 * 3 + 1 - deleted

    def test_prune_leaves_other_namespaces(self, store: ActionStateStore, ns: str) -> None:
        other = ns + "-other"
        fill(store, ns, "k", range(1, 4))
        fill(store, other, "k", range(1, 4))
        assert store.prune(ns, {"k": 10}) == 9
        assert store.size(ns) == 0
        assert store.size(other) == 9

    def test_prune_many_keys_in_one_call(self, store: ActionStateStore, ns: str) -> None:
        keys = [f"key-{i}" for i in range(1500)]
        for key in keys:
            fill(store, ns, key, range(1, 4), calls=1)
        deleted = store.prune(ns, {key: 2 for key in keys})
        assert deleted == len(keys) * 2 * 2
        assert store.size(ns) == len(keys) * 2
        assert [r.id.seq for r in store.get_run(ns, "key-777", 3)] == [3]
        assert store.get_run(ns, "key-777", 2) == []

    def test_prune_with_nothing_to_delete(self, store: ActionStateStore, ns: str) -> None:
        fill(store, ns, "k", range(5, 7))
        assert store.prune(ns, {}) == 0
        assert store.prune(ns, {"k": 4, "missing": 100}) == 0
        assert store.prune(ns + "-other", {"k": 100}) == 0
        assert store.size(ns) == 6

    def test_prune_marks_merge_max_per_key_up_to_checkpoint(self, store: ActionStateStore,
                                                            ns: str) -> None:
        store.add_prune_marks(ns, 1, {"a": 3, "b": 5})
        store.add_prune_marks(ns, 2, {"a": 4, "b": 2, "c": 1})
        store.add_prune_marks(ns, 3, {"a": 10})
        store.add_prune_marks(ns, 5, {"d": 7})
        assert store.take_prune_marks(ns, 2) == {"a": 4, "b": 5, "c": 1}
        assert store.take_prune_marks(ns, 2) == {}
        assert store.take_prune_marks(ns, 4) == {"a": 10}
        assert store.take_prune_marks(ns, 100) == {"d": 7}
        assert store.take_prune_marks(ns, 100) == {}

    def test_prune_marks_of_one_checkpoint_keep_the_highest(self, store: ActionStateStore,
                                                            ns: str) -> None:
        store.add_prune_marks(ns, 1, {"a": 5})
        store.add_prune_marks(ns, 1, {"a": 3, "b": 1})
        store.add_prune_marks(ns, 1, {})
        assert store.take_prune_marks(ns, 1) == {"a": 5, "b": 1}

    def test_prune_marks_are_per_namespace(self, store: ActionStateStore, ns: str) -> None:
        other = ns + "-other"
        store.add_prune_marks(ns, 1, {"a": 1})
        store.add_prune_marks(other, 1, {"a": 2})
        assert store.take_prune_marks(ns, 1) == {"a": 1}
        assert store.take_prune_marks(other, 1) == {"a": 2}

    def test_prune_marks_for_many_keys(self, store: ActionStateStore, ns: str) -> None:
        marks = {f"key-{i}": i for i in range(2000)}
        store.add_prune_marks(ns, 7, marks)
        assert store.take_prune_marks(ns, 7) == marks

    def test_prune_boundary_is_monotonic_unless_forced(self, store: ActionStateStore,
                                                       ns: str) -> None:
        other = ns + "-other"
        assert store.get_prune_boundary(ns) is None
        store.set_prune_boundary(ns, 5)
        store.set_prune_boundary(ns, 3)
        assert store.get_prune_boundary(ns) == 5
        store.set_prune_boundary(ns, 7)
        assert store.get_prune_boundary(ns) == 7
        store.set_prune_boundary(ns, 2, force=True)
        assert store.get_prune_boundary(ns) == 2
        store.set_prune_boundary(ns, 1)
        assert store.get_prune_boundary(ns) == 2
        assert store.get_prune_boundary(other) is None
        store.set_prune_boundary(other, 1, force=True)
        assert store.get_prune_boundary(other) == 1
        assert store.get_prune_boundary(ns) == 2

    # -- housekeeping --------------------------------------------------------------------
    def test_size_per_namespace_and_total(self, store: ActionStateStore, ns: str) -> None:
        other = ns + "-other"
        total = store.size()
        assert store.size(ns) == 0
        fill(store, ns, "k", range(1, 4), calls=2)  # 3 actions + 6 calls
        fill(store, other, "k", range(1, 3), calls=0)  # 2 actions
        store.put_call(call_record(rid(other, "x"), 0))  # a call without an action
        store.add_prune_marks(ns, 1, {"k": 1})  # marks and boundaries are not records
        store.set_prune_boundary(ns, 1)
        assert store.size(ns) == 9
        assert store.size(other) == 3
        assert store.size() == total + 12

    def test_close_is_idempotent_and_use_after_close_raises(
            self, store_factory: StoreFactory, ns: str) -> None:
        store = store_factory()
        store.close()
        store.close()
        record_id = rid(ns)
        operations: list[Callable[[], object]] = [
            lambda: store.put_action(action_record(record_id)),
            lambda: store.get_action(record_id),
            lambda: store.get_run(ns, "k", 1),
            lambda: store.put_call(call_record(record_id, 0)),
            lambda: store.get_calls(record_id),
            lambda: store.truncate_calls(record_id, 0),
            lambda: store.prune(ns, {"k": 1}),
            lambda: store.prune(ns, {}),
            lambda: store.add_prune_marks(ns, 1, {"k": 1}),
            lambda: store.add_prune_marks(ns, 1, {}),
            lambda: store.take_prune_marks(ns, 1),
            lambda: store.get_prune_boundary(ns),
            lambda: store.set_prune_boundary(ns, 1),
            lambda: store.size(ns),
            lambda: store.size(),
        ]
        for operation in operations:
            with pytest.raises(StoreError):
                operation()
        store.close()

    def test_context_manager_closes(self, store_factory: StoreFactory, ns: str) -> None:
        with store_factory() as store:
            store.put_action(action_record(rid(ns)))
        with pytest.raises(StoreError):
            store.get_action(rid(ns))

    # -- concurrency and durability ------------------------------------------------------
    def test_concurrent_use_of_one_store(self, store: ActionStateStore, ns: str) -> None:
        threads, per_thread, keep = 8, 40, 5

        def work(i: int) -> None:
            key = f"t{i}"
            for seq in range(per_thread):
                record_id = rid(ns, key, seq)
                store.put_action(action_record(record_id, size=300))
                store.put_call(call_record(record_id, 0))
                if seq % 10 == 9:  # transactions interleaved with other threads' writes
                    store.add_prune_marks(ns, seq, {key: seq - keep})
                    store.prune(ns, {key: seq - keep})
                    assert len(store.get_run(ns, key, seq)) == 1
                    store.size(ns)

        run_threads(threads, work)
        assert store.size(ns) == threads * keep * 2
        assert store.take_prune_marks(ns, per_thread) == {
            f"t{i}": per_thread - 1 - keep for i in range(threads)}
        for i in range(threads):
            for seq in range(per_thread - keep, per_thread):
                record_id = rid(ns, f"t{i}", seq)
                assert store.get_action(record_id) == action_record(record_id, size=300)
                assert store.get_calls(record_id) == [call_record(record_id, 0)]

    def test_concurrent_writes_through_several_store_objects(
            self, opened: Callable[[], ActionStateStore], ns: str) -> None:
        writers, per_writer = 4, 40
        stores = [opened() for _ in range(writers)]

        def write(i: int) -> None:
            mine = stores[i]
            fill(mine, ns, f"w{i}", range(per_writer), calls=1)
            mine.add_prune_marks(ns, i, {f"w{i}": per_writer // 2})
            mine.prune(ns, {f"w{i}": per_writer // 2 - 1})

        run_threads(writers, write)
        reader = opened()
        assert reader.size(ns) == writers * (per_writer // 2) * 2
        assert reader.take_prune_marks(ns, writers) == {
            f"w{i}": per_writer // 2 for i in range(writers)}

    def test_put_is_visible_to_another_store_object_at_once(
            self, opened: Callable[[], ActionStateStore], ns: str) -> None:
        writer, reader = opened(), opened()
        record_id = rid(ns)
        writer.put_action(action_record(record_id))
        writer.put_call(call_record(record_id, 0))
        assert reader.get_action(record_id) == action_record(record_id)
        assert reader.get_calls(record_id) == [call_record(record_id, 0)]

    def test_data_survives_close_and_reopen(self, store_factory: StoreFactory,
                                            ns: str) -> None:
        record_id = rid(ns)
        first = store_factory()
        first.put_action(action_record(record_id, size=1000))
        first.put_call(call_record(record_id, 0, CallStatus.ERROR))
        fill(first, ns, "pruned", range(1, 3))
        first.prune(ns, {"pruned": 1})
        first.add_prune_marks(ns, 4, {"k": 1})
        first.set_prune_boundary(ns, 3)
        first.close()
        second = store_factory()
        try:
            assert second.get_action(record_id) == action_record(record_id, size=1000)
            assert second.get_calls(record_id) == [call_record(record_id, 0, CallStatus.ERROR)]
            assert second.get_run(ns, "pruned", 1) == []
            assert len(second.get_run(ns, "pruned", 2)) == 1
            assert second.get_prune_boundary(ns) == 3
            assert second.take_prune_marks(ns, 4) == {"k": 1}
        finally:
            second.close()


class GroupCommitContract(StoreContract):
    """The contract for a store wrapped in group commit: every read flushes first; what
    differs is when puts become visible to other store objects, and that a completed
    action's buffered journal is dropped. ``store_factory`` must open a
    ``GroupCommitStore`` with a long interval."""

    def test_put_is_visible_to_another_store_object_at_once(
            self, opened: Callable[[], ActionStateStore], ns: str) -> None:
        # Group commit: visible to another store object once flushed, not before.
        writer, reader = opened(), opened()
        record_id = rid(ns)
        writer.put_call(call_record(record_id, 0))
        writer.put_action(action_record(record_id, completed=False))
        assert reader.get_action(record_id) is None
        writer.flush()
        assert reader.get_action(record_id) == action_record(record_id, completed=False)
        assert reader.get_calls(record_id) == [call_record(record_id, 0)]

    def test_put_many_writes_calls_and_actions_in_order(self, store: ActionStateStore,
                                                        ns: str) -> None:
        # As the contract, except that a completed action's buffered journal is dropped.
        first, second = rid(ns, seq=1), rid(ns, seq=2)
        store.put_many([action_record(first, "old", completed=False),
                        action_record(first, "new", completed=False), action_record(second)],
                       [call_record(first, 0, tag="old"), call_record(first, 0, tag="new"),
                        call_record(first, 1)])
        assert store.get_action(first) == action_record(first, "new", completed=False)
        assert store.get_calls(first) == [call_record(first, 0, tag="new"),
                                          call_record(first, 1)]
        assert store.size(ns) == 4
