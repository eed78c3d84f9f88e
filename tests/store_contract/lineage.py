"""Store contract: a namespace's lineage record, taking a namespace over for a lineage, and
discarding the prune marks an abandoned branch left."""

from __future__ import annotations

import threading
from typing import Callable

from flink_agents_ext.store.base import (
    ActionRecord,
    ActionStateStore,
    CallRecord,
    CallStatus,
    LineageRecord,
    NamespaceReset,
    RecordId,
)
from tests.store_contract.base import ContractBase


def _record(ns: str, key: str, seq: int, tag: str = "") -> ActionRecord:
    return ActionRecord(RecordId(ns, key, seq, "a", 0), b"e" + tag.encode(), b"o", b"v",
                        b"m", True)


class LineageContract(ContractBase):
    """Store contract: lineages."""

    def test_lineage_record_round_trips_per_namespace(self, store: ActionStateStore,
                                                      ns: str) -> None:
        assert store.get_lineage(ns) is None
        first = LineageRecord("job-a", (("job-a", 3), ("job-b", None)))
        store.set_lineage(ns, first)
        store.set_lineage(ns + "-other", LineageRecord("job-x", (("job-x", None),)))
        assert store.get_lineage(ns) == first
        assert first.head == "job-b"
        second = LineageRecord("job-a", (("job-a", 3), ("job-b", 5), ("job-c", None)))
        store.set_lineage(ns, second)
        assert store.get_lineage(ns) == second
        store.clear_namespace(ns)
        assert store.get_lineage(ns) is None
        assert store.get_lineage(ns + "-other") == LineageRecord("job-x", (("job-x", None),))

    def test_reset_namespace_removes_the_earlier_lineage_once(self, store: ActionStateStore,
                                                              ns: str) -> None:
        old = LineageRecord("job-a", (("job-a", None),))
        store.set_lineage(ns, old)
        store.put_action(_record(ns, "k", 0))
        store.put_call(CallRecord(RecordId(ns, "k", 1, "a", 0), 0, "f", "d", CallStatus.OK,
                                  b"r"))
        store.put_action(_record(ns + "-other", "k", 0))
        store.add_prune_marks(ns, 4, {"k": 0})
        store.set_prune_boundary(ns, 3)
        new = LineageRecord("job-b", (("job-b", None),))
        assert store.reset_namespace(ns, new) == NamespaceReset(old, 2)
        assert store.size(ns) == 0 and store.get_prune_boundary(ns) is None
        assert store.take_prune_marks(ns, 10) == {}
        assert store.get_lineage(ns) == new
        assert store.size(ns + "-other") == 1
        store.put_action(_record(ns, "k", 0, "new"))
        assert store.reset_namespace(ns, new) is None, "the namespace is job-b's already"
        assert store.get_run(ns, "k", 0) == [_record(ns, "k", 0, "new")]

    def test_reset_of_a_namespace_without_lineage(self, store: ActionStateStore,
                                                  ns: str) -> None:
        record = LineageRecord("job-a", (("job-a", None),))
        assert store.reset_namespace(ns, record) == NamespaceReset(None, 0)
        ns2 = ns + "-legacy"
        store.put_action(_record(ns2, "k", 0))  # written before lineages existed
        assert store.reset_namespace(ns2, record) == NamespaceReset(None, 1)
        assert store.size(ns2) == 0

    def test_concurrent_resets_of_one_lineage_keep_what_the_new_lineage_wrote(
            self, opened: Callable[[], ActionStateStore], ns: str) -> None:
        setup = opened()
        setup.set_lineage(ns, LineageRecord("job-a", (("job-a", None),)))
        for seq in range(5):
            setup.put_action(_record(ns, f"old{seq}", seq))
        setup.flush()
        stores = [opened() for _ in range(4)]
        new = LineageRecord("job-b", (("job-b", None),))
        removed: list[int] = []
        lock = threading.Lock()
        barrier = threading.Barrier(len(stores))
        errors: list[BaseException] = []

        def subtask(i: int) -> None:
            try:
                barrier.wait()
                reset = stores[i].reset_namespace(ns, new)
                with lock:
                    removed.append(reset.removed if reset else 0)
                stores[i].put_action(_record(ns, f"new{i}", 0))  # after its own reset
                stores[i].flush()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=subtask, args=(i,)) for i in range(len(stores))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        assert sum(removed) == 5, "the earlier lineage's records were removed once"
        assert setup.recorded_runs(ns) == {(f"new{i}", 0) for i in range(len(stores))}
        assert setup.get_lineage(ns) == new

    def test_discard_prune_marks_after_a_checkpoint(self, store: ActionStateStore,
                                                    ns: str) -> None:
        store.add_prune_marks(ns, 1, {"a": 1, "b": 2})
        store.add_prune_marks(ns, 2, {"a": 5})
        store.add_prune_marks(ns, 3, {"a": 7, "c": 1})
        store.add_prune_marks(ns + "-other", 3, {"a": 9})
        assert store.discard_prune_marks(ns, 1) == 3
        assert store.discard_prune_marks(ns, 1) == 0
        assert store.take_prune_marks(ns, 10) == {"a": 1, "b": 2}
        assert store.take_prune_marks(ns + "-other", 10) == {"a": 9}
