"""Model-based test of the durable-action protocol (issue 10): a fixed-seed, bounded run of
:class:`tests.protocol_model.ProtocolMachine` (``make fuzz`` runs it long and at random),
and proof that it fails on deliberately broken builds."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from flink_agents_ext.pruning import PrunePolicy
from tests.protocol_model import machine
from tests.protocol_reference import enabled_from_env

#: make test: the same examples every run, a bounded time (~30 s on 2 idle cores)
FIXED = settings(derandomize=True, max_examples=100, stateful_step_count=30, deadline=None,
                 database=None, suppress_health_check=list(HealthCheck))


@pytest.mark.timeout(600)
def test_protocol_against_the_reference_model() -> None:
    run_state_machine_as_test(machine(enabled_from_env()), settings=FIXED)


def test_an_abort_notified_after_a_later_snapshot_is_covered_by_its_completion() -> None:
    """A counterexample the model found (C6 in the notes): the marks of aborted snapshot 2
    waited for the next snapshot although checkpoint 3, taken before the abort arrived,
    completed and covers them (the records stayed; lost at a failure before snapshot 4)."""
    state = machine(frozenset())()
    try:
        state.start(retention=1, commit="each", max_in_flight=0, allow_reexecution=False)
        state.snapshot()
        state.input(block=False, key=1)
        state.snapshot()
        state.snapshot()
        state.abort(i=1, notify=True)
        state.complete(i=1, notify=True)
        state.store_is_bounded()
        assert state.reader.size("model") == 0
    finally:
        state.teardown()


def _prune_at_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prunes what a snapshot captures at once, before its checkpoint completes."""
    original = PrunePolicy.snapshot_payload

    def broken(self: PrunePolicy, changed: Mapping[str, int]) -> dict[str, int]:
        payload = original(self, changed)
        self.store.prune(self.namespace, payload)
        return payload

    monkeypatch.setattr(PrunePolicy, "snapshot_payload", broken)


def _prune_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    """Marks one run too many: the key's run after the last completed one (the next
    input's, replayed after a restore) is pruned too."""
    original = PrunePolicy.snapshot_payload

    def broken(self: PrunePolicy, changed: Mapping[str, int]) -> dict[str, int]:
        return original(self, {key: seq + 1 for key, seq in changed.items()})

    monkeypatch.setattr(PrunePolicy, "snapshot_payload", broken)


BROKEN: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    "prune_at_snapshot": _prune_at_snapshot,
    "prune_in_flight": _prune_in_flight,
}
#: generation only (no shrinking): the point is that a failure is found, fast
HUNT = settings(derandomize=True, max_examples=200, stateful_step_count=25, deadline=None,
                database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(BROKEN))
def test_the_model_finds_a_deliberately_broken_pruning_policy(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    BROKEN[name](monkeypatch)
    with pytest.raises(AssertionError) as found:  # the core rules, without the switches
        run_state_machine_as_test(machine(frozenset()), settings=HUNT)
    message: Any = found.value
    assert str(message), "the model failed without saying why"
