"""Store contract: recorded runs, clearing a namespace, action records, the call journal."""

from __future__ import annotations

from flink_agents_ext.store.base import (
    ActionRecord,
    ActionStateStore,
    CallRecord,
    CallStatus,
    LineageRecord,
)
from tests.store_contract.base import ContractBase
from tests.store_contract.helpers import (
    action_record,
    call_record,
    rid,
)


class RecordsContract(ContractBase):
    """Store contract: recorded runs, clearing a namespace, action records, the call journal."""

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
            store.set_lineage(namespace, LineageRecord(namespace, ((namespace, None),)))
        assert store.clear_namespace(ns) == 2
        assert store.size(ns) == 0 and store.get_prune_boundary(ns) is None
        assert store.get_lineage(ns) is None and store.get_lineage(other) is not None
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
