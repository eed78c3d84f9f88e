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

The contract is split by subject into modules (``records``, ``pruning``, ``lifecycle``,
``lineage``), each a mixin over :class:`~tests.store_contract.base.ContractBase`;
:class:`StoreContract` combines them. A new subject gets its own module and is added to
the bases below.
"""

from __future__ import annotations

from typing import Callable

from flink_agents_ext.store.base import ActionStateStore
from tests.store_contract.helpers import (
    ROOT,
    StoreFactory,
    action_record,
    call_record,
    check_processes_creating_at_once,
    check_put_survives_a_killed_process,
    fill,
    rid,
    run_threads,
)
from tests.store_contract.lifecycle import LifecycleContract
from tests.store_contract.lineage import LineageContract
from tests.store_contract.pruning import PruneContract
from tests.store_contract.records import RecordsContract

__all__ = ["ROOT", "GroupCommitContract", "StoreContract", "StoreFactory", "action_record",
           "call_record", "check_processes_creating_at_once",
           "check_put_survives_a_killed_process", "fill", "rid", "run_threads"]


class StoreContract(RecordsContract, PruneContract, LifecycleContract, LineageContract):
    """The behaviour every :class:`ActionStateStore` backend must have."""


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
