"""Model-based test of the Kafka store's index protocol (hypothesis, stateful).

Random puts, prunes, truncations and clears go to two Kafka store objects on one topic (two
subtasks of a job; either may write, read or prune any key) and to an in-memory SQLite
store, the model: SQLite passes the same contract. Store objects are reopened at random
with marker or full-scan recovery; namespaces are tracked in random order. After every step
both Kafka objects must agree with the model on what they read.
"""

from __future__ import annotations

import uuid
from typing import Any, Optional

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from flink_agents_ext.store import ActionStateStore, CallStatus, SQLiteStore
from flink_agents_ext.store.kafka import KafkaStore
from tests.kafka_broker import KafkaBroker, kafka  # noqa: F401 (fixture)
from tests.store_contract import action_record, call_record, rid

NAMESPACES = ("n0", "n1")
keys = st.sampled_from(["k0", "k1", "k2"])
seqs = st.integers(0, 4)
actions = st.sampled_from(["a", "b"])
occurrences = st.integers(0, 1)
positions = st.integers(0, 2)
statuses = st.sampled_from(list(CallStatus))
namespaces = st.sampled_from(NAMESPACES)
stores = st.integers(0, 1)


class KafkaIndexMachine(RuleBasedStateMachine):
    """Two Kafka store objects against the SQLite model."""

    bootstrap: str = ""
    topic: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.model: ActionStateStore = SQLiteStore(":memory:")
        self.kafka: list[Optional[KafkaStore]] = [None, None]
        self.prefix = uuid.uuid4().hex[:8]  # namespaces of this run only

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def open(self, index: int, recovery: str) -> None:
        old = self.kafka[index]
        if old is not None:
            old.close()
        self.kafka[index] = KafkaStore(self.bootstrap, topic=self.topic, recovery=recovery,
                                       partitions=2, timeout_s=20)

    def both(self) -> list[KafkaStore]:
        return [store for store in self.kafka if store is not None]

    @initialize()
    def start(self) -> None:
        self.open(0, "marker")
        self.open(1, "marker")

    def teardown(self) -> None:
        for store in self.both():
            store.close()
        self.model.close()

    # -- writes ---------------------------------------------------------------------------
    @rule(via=stores, ns=namespaces, key=keys, seq=seqs, action=actions, occ=occurrences,
          tag=st.sampled_from(["x", "y"]), completed=st.booleans())
    def put_action(self, via: int, ns: str, key: str, seq: int, action: str, occ: int,
                   tag: str, completed: bool) -> None:
        record = action_record(rid(self.ns(ns), key, seq, action, occ), tag, completed)
        self.model.put_action(record)
        self.both()[via].put_action(record)

    @rule(via=stores, ns=namespaces, key=keys, seq=seqs, occ=occurrences, position=positions,
          status=statuses, tag=st.sampled_from(["x", "y"]))
    def put_call(self, via: int, ns: str, key: str, seq: int, occ: int, position: int,
                 status: CallStatus, tag: str) -> None:
        call = call_record(rid(self.ns(ns), key, seq, "a", occ), position, status, tag)
        self.model.put_call(call)
        self.both()[via].put_call(call)

    @rule(via=stores, ns=namespaces,
          bounds=st.dictionaries(keys, st.integers(-1, 4), max_size=3))
    def prune(self, via: int, ns: str, bounds: dict[str, int]) -> None:
        expected = self.model.prune(self.ns(ns), bounds)
        assert self.both()[via].prune(self.ns(ns), bounds) == expected

    @rule(via=stores, ns=namespaces, key=keys, seq=seqs, occ=occurrences, start=positions)
    def truncate(self, via: int, ns: str, key: str, seq: int, occ: int, start: int) -> None:
        record_id = rid(self.ns(ns), key, seq, "a", occ)
        expected = self.model.truncate_calls(record_id, start)
        assert self.both()[via].truncate_calls(record_id, start) == expected

    @rule(via=stores, ns=namespaces)
    def clear(self, via: int, ns: str) -> None:
        expected = self.model.clear_namespace(self.ns(ns))
        assert self.both()[via].clear_namespace(self.ns(ns)) == expected

    # -- recovery --------------------------------------------------------------------------
    @rule(index=stores, recovery=st.sampled_from(["marker", "full_scan"]),
          first=namespaces)
    def reopen(self, index: int, recovery: str, first: str) -> None:
        self.open(index, recovery)
        store = self.kafka[index]
        assert store is not None
        # The namespace used first is tracked first; the other one later.
        assert store.recorded_runs(self.ns(first)) == self.model.recorded_runs(self.ns(first))

    # -- reads -----------------------------------------------------------------------------
    @rule(via=stores, ns=namespaces, key=keys, seq=seqs, occ=occurrences)
    def read_run(self, via: int, ns: str, key: str, seq: int, occ: int) -> None:
        store = self.both()[via]
        record_id = rid(self.ns(ns), key, seq, "a", occ)
        assert store.get_run(self.ns(ns), key, seq) == self.model.get_run(self.ns(ns), key, seq)
        assert store.get_calls(record_id) == self.model.get_calls(record_id)
        assert store.get_action(record_id) == self.model.get_action(record_id)

    @invariant()
    def same_runs_and_sizes(self) -> None:
        for store in self.both():
            for name in NAMESPACES:
                ns = self.ns(name)
                assert store.recorded_runs(ns) == self.model.recorded_runs(ns)
                assert store.size(ns) == self.model.size(ns)


@pytest.mark.timeout(900)
def test_kafka_index_against_the_model(kafka: KafkaBroker) -> None:  # noqa: F811
    machine: Any = KafkaIndexMachine
    machine.bootstrap, machine.topic = kafka.bootstrap, kafka.topic("model")
    run_state_machine_as_test(machine, settings=settings(
        max_examples=30, stateful_step_count=25, deadline=None,
        suppress_health_check=list(HealthCheck)))
