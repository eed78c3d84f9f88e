"""Store contract: pruning, prune marks and the prune boundary."""

from __future__ import annotations

from flink_agents_ext.store.base import (
    ActionStateStore,
)
from tests.store_contract.base import ContractBase
from tests.store_contract.helpers import (
    call_record,
    fill,
    rid,
)


class PruneContract(ContractBase):
    """Store contract: pruning, prune marks and the prune boundary."""

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
