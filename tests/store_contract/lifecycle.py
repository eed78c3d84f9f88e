"""Store contract: size, close, concurrent use and durability across reopen."""

from __future__ import annotations

from typing import Callable

import pytest

from flink_agents_ext.store.base import (
    ActionStateStore,
    CallStatus,
    StoreError,
)
from tests.store_contract.base import ContractBase
from tests.store_contract.helpers import (
    StoreFactory,
    action_record,
    call_record,
    fill,
    rid,
    run_threads,
)


class LifecycleContract(ContractBase):
    """Store contract: size, close, concurrent use and durability across reopen."""

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
