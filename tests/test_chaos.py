"""The fault-injection suite (``chaos/``, ``make chaos``).

* its hooks, driven through the test harness (no Flink): an unrecorded durable call runs
  again on replay, a reconcilable one runs its reconciler instead, a notification lost before
  pruning is made up for by the restore;
* its checks, on synthetic outputs: they catch a duplicate, a loss, a missing dead letter,
  records left in the store, a failure that never fired;
* a short run on the mini-cluster (marked ``flink``): a reference run and 4 trials, one per
  failure point 1-4 of the issue, SQLite; no recorded call twice, nothing lost.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Optional

import pytest

from chaos import inject
from chaos.checks import Verdict, check_run, collect
from chaos.inputs import bad_inputs
from chaos.plan import Plan
from flink_agents_ext.store import open_store
from flink_agents_ext.testing import KeyedFunctionHarness
from jobs.support_triage import (
    TriageFunction,
    build_agent,
    generated_ticket,
    page_id,
    page_oncall,
)
from tests.conftest import ROOT

#: A generated ticket whose ``respond`` pages on-call (urgent, gold customer).
PAGER_TICKET = 6


def test_spec_grammar() -> None:
    assert str(inject.ChaosSpec.parse("none")) == "none"
    spec = inject.ChaosSpec.parse("unrecorded:page_oncall:12")
    assert (spec.point, spec.target, spec.trigger) == ("unrecorded", "page_oncall", 12)
    for bad in ("explode:now:1", "snapshot:during:2", "after-call:respond", "notify:before:0",
                "before-call:classify:x"):
        with pytest.raises(ValueError, match="bad chaos spec"):
            inject.ChaosSpec.parse(bad)


# -- the hooks, through the harness ---------------------------------------------------------
def make_function(out: Path, spec: str) -> TriageFunction:
    """The job's function with chaos hooks, on a SQLite store in ``out``."""
    hooks = inject.ChaosHooks(spec, True, str(out), page_oncall, page_id)
    agent, cls, store = hooks.instrument(
        build_agent(str(out), 0), TriageFunction,
        {"backend": "sqlite", "path": str(out / "actions.db")})
    function: TriageFunction = cls(agent, store, "chaos-test", stats_dir=str(out / "stats"))
    return function


def ticket(n: int) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(generated_ticket(n))
    return data


def ledger(out: Path) -> list[tuple[str, str]]:
    path = out / inject.LEDGER
    return [(e["call"], e["ticket"]) for e in map(json.loads, path.read_text().splitlines())]


def run_until_failure(out: Path, spec: str, tickets: Iterable[int]) -> tuple[Any, Any]:
    """Process ``tickets`` after an empty checkpoint until the injected failure; return the
    harness and that checkpoint."""
    h = KeyedFunctionHarness(make_function(out, spec))
    snap = h.snapshot()
    with pytest.raises(inject.ChaosFailure):
        for n in tickets:
            h.process_element(ticket(n), key=ticket(n)["customer"])
    assert inject.describe(str(out)) is not None
    return h, snap


@pytest.mark.parametrize("call", ["model_classify", "crm_lookup", "model_draft_reply"])
def test_unrecorded_call_runs_again_on_replay(tmp_path: Path, call: str) -> None:
    h, snap = run_until_failure(tmp_path, f"unrecorded:{call}:{PAGER_TICKET}", [PAGER_TICKET])
    h2 = h.restore(snap, make_function(tmp_path, f"unrecorded:{call}:{PAGER_TICKET}"))
    out = h2.process_element(ticket(PAGER_TICKET), key=ticket(PAGER_TICKET)["customer"])
    assert len(out) == 1 and json.loads(out[0])["page"].startswith("PAGE-")
    calls = ledger(tmp_path)
    ticket_id = f"G-{PAGER_TICKET:06d}"
    # The call whose record was lost ran twice; every recorded call once.
    assert calls.count((call, ticket_id)) == 2
    assert all(calls.count(c) == 1 for c in calls if c[0] != call)


def test_unrecorded_reconcilable_call_runs_its_reconciler(tmp_path: Path) -> None:
    spec = f"unrecorded:page_oncall:{PAGER_TICKET}"
    h, snap = run_until_failure(tmp_path, spec, [PAGER_TICKET])
    h2 = h.restore(snap, make_function(tmp_path, spec))
    out = h2.process_element(ticket(PAGER_TICKET), key=ticket(PAGER_TICKET)["customer"])
    ticket_id = f"G-{PAGER_TICKET:06d}"
    assert json.loads(out[0])["page"] == page_id(ticket_id, json.loads(out[0])["category"])
    assert ledger(tmp_path).count(("page_oncall", ticket_id)) == 1
    reconciled = [json.loads(line) for line in
                  (tmp_path / inject.RECONCILED).read_text().splitlines()]
    assert reconciled == [{"call": "page_oncall", "ticket": ticket_id, "found": True}]


def test_lost_notification_is_made_up_for_by_the_restore(tmp_path: Path) -> None:
    spec = "notify:before:1"
    h = KeyedFunctionHarness(make_function(tmp_path, spec))
    for n in range(1, 6):
        h.process_element(ticket(n), key=ticket(n)["customer"])
    snap = h.snapshot()
    with pytest.raises(inject.ChaosFailure, match="before pruning"):
        h.notify_complete(snap.checkpoint_id)
    with open_store({"backend": "sqlite", "path": str(tmp_path / "actions.db")}) as store:
        assert store.size("chaos-test") > 0  # the failed notification pruned nothing
    h.restore(snap, make_function(tmp_path, spec))
    with open_store({"backend": "sqlite", "path": str(tmp_path / "actions.db")}) as store:
        assert store.size("chaos-test") == 0  # the restore pruned what checkpoint 1 covered
    restores = [json.loads(line) for line in
                (tmp_path / inject.RESTORES).read_text().splitlines()]
    assert restores[0]["checkpoint"] == snap.checkpoint_id and restores[0]["pruned"] > 0


# -- the checks, on synthetic outputs -------------------------------------------------------
TICKETS = 3
CALLS = ("model_classify", "crm_lookup", "model_draft_reply")


def fake_run(root: Path, name: str, *, extra_calls: Iterable[tuple[str, str]] = (),
             drop_result: bool = False, drop_dead_letter: bool = False,
             fired: Optional[str] = None, instances: int = 1) -> Path:
    """An output directory as the job leaves it, for ``TICKETS`` tickets."""
    out = root / name
    shutil.rmtree(out, ignore_errors=True)
    (out / "results" / "b").mkdir(parents=True)
    (out / "dead_letters" / "b").mkdir(parents=True)
    (out / "stats").mkdir()
    results = [json.dumps({"ticket_id": f"G-{n:06d}", "reply": "r"})
               for n in range(1, TICKETS + 1)]
    (out / "results" / "b" / "part-0").write_text("\n".join(results[drop_result:]) + "\n")
    letters = []
    for bad in bad_inputs():
        if bad.stage == "parse":
            letters.append({"reason": f"{bad.reason}: ...", "input": bad.line[:2000]})
        else:
            letters.append({"action": bad.action, "input": json.loads(bad.line),
                            "reason": f"x: {bad.reason}"})
    lines = [json.dumps(d, sort_keys=True) for d in letters[drop_dead_letter:]]
    (out / "dead_letters" / "b" / "part-0").write_text("\n".join(lines) + "\n")
    calls = [(c, f"G-{n:06d}") for n in range(1, TICKETS + 1) for c in CALLS]
    calls += list(extra_calls)
    (out / inject.LEDGER).write_text(
        "".join(json.dumps({"call": c, "ticket": t}) + "\n" for c, t in calls))
    for i in range(instances):
        (out / "stats" / f"{i}.json").write_text("{}")
    if fired:
        (out / inject.MARKER).write_text(json.dumps({"spec": fired, "detail": "test"}))
    return out


def verdict(root: Path, spec: str, out: Path, store_left: int = 0) -> Verdict:
    reference = collect(fake_run(root, "reference"))
    return check_run(Plan(out.name, spec.split(":")[0], spec), out, True, "",
                     {"store_records_left": store_left}, reference, TICKETS)


def test_checks_pass_a_clean_trial(tmp_path: Path) -> None:
    spec = "after-call:respond:2"
    v = verdict(tmp_path, spec, fake_run(tmp_path, "t", fired=spec, instances=2))
    assert v.passed, v.problems
    assert v.injected and v.restarts == 1 and v.dead_lettered == len(bad_inputs())


def test_checks_catch_a_recorded_call_run_twice(tmp_path: Path) -> None:
    spec = "after-call:respond:2"
    out = fake_run(tmp_path, "t", fired=spec, instances=2,
                   extra_calls=[("model_draft_reply", "G-000002")])
    v = verdict(tmp_path, spec, out)
    assert v.duplicates == 1 and not v.passed
    assert "recorded durable calls executed twice" in v.problems[0]


def test_checks_accept_one_rerun_of_the_unrecorded_call_only(tmp_path: Path) -> None:
    spec = "unrecorded:crm_lookup:2"
    out = fake_run(tmp_path, "t", fired=spec, instances=2,
                   extra_calls=[("crm_lookup", "G-000002")])
    v = verdict(tmp_path, spec, out)
    assert v.passed, v.problems
    assert (v.duplicates, v.reexecuted_unrecorded) == (0, 1)
    out = fake_run(tmp_path, "u", fired=spec, instances=2,
                   extra_calls=[("crm_lookup", "G-000002"), ("crm_lookup", "G-000003")])
    v = verdict(tmp_path, spec, out)
    assert (v.duplicates, v.reexecuted_unrecorded) == (1, 1) and not v.passed


def test_checks_catch_losses_and_leftovers(tmp_path: Path) -> None:
    spec = "snapshot:after:1"
    v = verdict(tmp_path, spec, fake_run(tmp_path, "a", fired=spec, instances=2,
                                         drop_result=True))
    assert v.lost == 1 and any("without a result" in p for p in v.problems)
    v = verdict(tmp_path, spec, fake_run(tmp_path, "b", fired=spec, instances=2,
                                         drop_dead_letter=True))
    assert v.lost == 1 and any("malformed_json" in p for p in v.problems)
    v = verdict(tmp_path, spec, fake_run(tmp_path, "c", fired=spec, instances=2),
                store_left=5)
    assert v.problems == ["5 store record(s) left after the final checkpoint"]
    v = verdict(tmp_path, spec, fake_run(tmp_path, "d"))
    assert not v.injected and any("never injected" in p for p in v.problems)


# -- a short run on the mini-cluster --------------------------------------------------------
@pytest.mark.flink
@pytest.mark.timeout(360)
def test_short_chaos_run(tmp_path: Path) -> None:
    """4 trials (failure points 1-4), each against a reference run: no recorded durable call
    executed twice, nothing lost, every bad input dead-lettered, the store empty at the end."""
    results = tmp_path / "chaos-results.json"
    seed = os.environ.get("FAE_CHAOS_SEED", "20240")
    cmd = [sys.executable, "-m", "chaos.run", "--short", "--seed", seed,
           "--work", str(tmp_path / "work"), "--results", str(results)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=330)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"chaos.run --short did not finish in 330 s:\n{exc.stdout or ''}\n"
                    f"{exc.stderr or ''}")
    report = f"{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}"
    assert results.exists(), report
    data = json.loads(results.read_text())
    assert data["trials"] == 4, report
    assert data["failures_injected"] == 4, report
    assert data["duplicates"] == 0, report
    assert data["lost"] == 0 and data["unexpected"] == 0, report
    assert data["dead_lettered"] == 4 * len(bad_inputs()), report
    assert data["store_records_left"] == 0, report
    assert {"unrecorded", "snapshot", "notify"} <= set(data["by_kind"]), report
    assert proc.returncode == 0 and data["passed"], report
