"""The fault-injection suite (``chaos/``, ``make chaos``).

* its hooks, driven through the test harness (no Flink): an unrecorded durable call runs
  again on replay, a reconcilable one runs its reconciler instead, a notification lost before
  pruning is made up for by the restore;
* its checks, on synthetic outputs: they catch a duplicate, a loss, a missing dead letter,
  records left in the store, a failure that never fired;
* its plan: configurations drawn over every mode a user can pick, the expectations stated
  per configuration, the command that reruns a trial;
* a short run on the mini-cluster (marked ``flink``): a reference run and 4 trials, one per
  failure point 1-4 of the issue, in configurations drawn from a printed seed (random unless
  ``FAE_CHAOS_SEED``), SQLite; no recorded call twice, nothing lost.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterable, Optional

import pytest

from chaos import config as cfgs
from chaos import inject
from chaos import run as chaos_run
from chaos.checks import Verdict, check_run, collect
from chaos.inputs import bad_inputs
from chaos.plan import Plan, plan_trials
from chaos.report import by_config
from chaos.run import arguments, chosen_plans, expected_cost
from chaos.trials import Context, UpstreamRace
from flink_agents_ext.store import open_store
from flink_agents_ext.testing import KeyedFunctionHarness
from jobs.support_triage import (
    TriageFunction,
    build_agent,
    generated_ticket,
    page_id,
    page_oncall,
)
from scripts import ToolError
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
    assert restores[0]["covered_left"] == 0


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


def verdict(root: Path, spec: str, out: Path, store_left: int = 0,
            plan: Optional[Plan] = None, injection: Optional[dict[str, Any]] = None,
            unmarked: Optional[int] = None) -> Verdict:
    reference = collect(fake_run(root, "reference"))
    summary: dict[str, Any] = {"store_records_left": store_left}
    if unmarked is not None:
        summary["store_runs_unmarked"] = unmarked
    return check_run(plan or Plan(out.name, spec.split(":")[0], spec), out, True, "",
                     summary, reference, TICKETS, injection=injection)


def test_retention_keeps_the_last_checkpoints_records_only(tmp_path: Path) -> None:
    spec = "snapshot:after:1"
    plan = Plan("t", "snapshot", spec, config=cfgs.TrialConfig(retention=2))
    out = fake_run(tmp_path, "t", fired=spec, instances=2)
    v = verdict(tmp_path, spec, out, store_left=40, plan=plan, unmarked=0)
    assert v.passed, v.problems
    v = verdict(tmp_path, spec, out, store_left=40, plan=plan, unmarked=3)
    assert not v.passed and "no prune mark" in v.problems[0]
    v = verdict(tmp_path, spec, out, store_left=40)  # retention 1: the store must be empty
    assert v.problems == ["40 store record(s) left after the final checkpoint"]


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


def test_checks_catch_a_skipped_call(tmp_path: Path) -> None:
    # A fresh start that replays another job's record never runs the call itself.
    spec = "after-call:respond:2"
    out = fake_run(tmp_path, "t", fired=spec, instances=2)
    lines = (out / inject.LEDGER).read_text().splitlines()
    (out / inject.LEDGER).write_text("\n".join(lines[1:]) + "\n")
    v = verdict(tmp_path, spec, out)
    assert v.skipped_calls == 1 and any("never ran" in p for p in v.problems)


def kill_plan(commit: str) -> Plan:
    return Plan("t", "taskmanager-kill", config=cfgs.TrialConfig(commit=commit, parallelism=1))


def test_group_commit_kill_allows_repeats_of_the_last_batch_only(tmp_path: Path) -> None:
    # Ledger order: 3 calls per ticket; the kill came after line 8, the last batch began
    # at line 6: G-000003's calls may run again, G-000001's may not.
    fired = {"injected": True, "calls_at_kill": 8, "last_batch_from": 6}
    again = [("model_classify", "G-000003"), ("crm_lookup", "G-000003")]
    out = fake_run(tmp_path, "t", instances=2, extra_calls=again)
    v = verdict(tmp_path, "none", out, plan=kill_plan("group"), injection=fired)
    assert v.passed, v.problems
    assert (v.repeats, v.duplicates) == (2, 0) and "repeats" in v.expected
    out = fake_run(tmp_path, "u", instances=2,
                   extra_calls=[*again, ("model_classify", "G-000001")])
    v = verdict(tmp_path, "none", out, plan=kill_plan("group"), injection=fired)
    assert (v.repeats, v.duplicates) == (2, 1) and not v.passed


def test_commit_each_kill_allows_repeats_of_unrecorded_calls_only(tmp_path: Path) -> None:
    # commit: each: a call that had returned to its action before the kill (its record was
    # committed) must never run again; one that ran but had not returned may, once.
    fired = {"injected": True, "calls_at_kill": 8, "killed_at": 100.0}
    again = [("model_classify", "G-000003"), ("crm_lookup", "G-000003")]
    out = fake_run(tmp_path, "w", instances=2, extra_calls=again)
    recorded = [("model_classify", "G-000003", 99.0), ("crm_lookup", "G-000003", 100.5)]
    (out / inject.RECORDED).write_text("".join(
        json.dumps({"call": c, "ticket": t, "time": at}) + "\n" for c, t, at in recorded))
    v = verdict(tmp_path, "none", out, plan=kill_plan("each"), injection=fired)
    assert (v.repeats, v.duplicates) == (1, 1) and not v.passed
    assert v.duplicate_calls == ["model_classify(G-000003) x2"]
    assert "not recorded yet" in v.expected
    (out / inject.RECORDED).write_text(json.dumps(
        {"call": "model_classify", "ticket": "G-000003", "time": 101.0}) + "\n")
    v = verdict(tmp_path, "none", out, plan=kill_plan("each"), injection=fired)
    assert (v.repeats, v.duplicates) == (2, 0) and v.passed, v.problems


def test_expectations_per_configuration() -> None:
    group = cfgs.TrialConfig(commit="group")
    assert cfgs.expectation(group, "taskmanager-kill").repeats == "last-batch"
    for kind in ("before-call", "after-call", "unrecorded", "snapshot", "notify",
                 "postgres-restart"):
        assert cfgs.expectation(group, kind).repeats == "none"
        assert cfgs.expectation(cfgs.TrialConfig(), kind).repeats == "none"
    assert cfgs.expectation(cfgs.TrialConfig(), "taskmanager-kill").repeats == "unrecorded"


def test_plan_covers_every_choice_a_user_can_make() -> None:
    import random

    plans = plan_trials(random.Random(5), 60, 300, short=False, cluster=True, postgres=True,
                        kafka=True)
    assert len(plans) >= 60
    seen = {dim: {getattr(p.config, attr) for p in plans} for dim, attr in
            cfgs.DIMENSIONS.items()}
    assert seen["mode"] == set(cfgs.MODES) and seen["commit"] == set(cfgs.COMMITS)
    assert seen["concurrency"] == {"inline", "in-flight 8", "in-flight 256"}
    assert seen["backend"] == set(cfgs.BACKENDS)
    assert seen["lifecycle"] == set(cfgs.LIFECYCLES)
    assert seen["retention"] == {1, 2} and seen["parallelism"] == {1, 2}
    resumed = [p for p in plans if p.config.lifecycle == "savepoint"]
    assert any(p.config.resume_parallelism != p.config.parallelism for p in resumed)
    kills = [p for p in plans if p.kind == "taskmanager-kill"]
    assert {p.config.commit for p in kills} == {"each", "group"}
    # Every kind gets every mode at least once (with 60 trials).
    for kind in ("before-call", "after-call", "unrecorded", "snapshot", "notify"):
        assert len({p.config.lifecycle for p in plans if p.kind == kind}) >= 2


def test_short_plans_differ_by_seed_and_stay_on_sqlite() -> None:
    import random

    labels = set()
    for seed in range(6):
        plans = plan_trials(random.Random(seed), 4, 300, short=True, cluster=False,
                            postgres=False)
        assert [p.kind for p in plans][1:] == ["unrecorded", "snapshot", "notify"]
        assert {p.store for p in plans} == {"sqlite"}
        labels.add(tuple(p.config.label() for p in plans))
    assert len(labels) == 6


def test_a_trial_reruns_exactly_from_its_command() -> None:
    import random

    for plan in plan_trials(random.Random(11), 20, 300, short=False, cluster=True,
                            postgres=True, kafka=True):
        argv = plan.rerun_command(11, 300).split()[3:]
        [again] = chosen_plans(arguments().parse_args(argv))
        assert (again.kind, again.spec, again.config) == (plan.kind, plan.spec, plan.config)
        assert (again.stop_fraction, again.at_fraction) == (plan.stop_fraction,
                                                            plan.at_fraction)


def test_by_config_sums_per_dimension(tmp_path: Path) -> None:
    spec = "after-call:respond:2"
    runs = []
    for name, commit, extra in (("a", "each", []), ("b", "group", [("crm_lookup", "G-000001")])):
        plan = Plan(name, "after-call", spec, config=cfgs.TrialConfig(commit=commit))
        runs.append(verdict(tmp_path, spec, fake_run(tmp_path, name, fired=spec, instances=2,
                                                     extra_calls=extra), plan=plan))
    table = by_config(runs)
    assert table["commit"]["each"]["duplicates"] == 0
    assert table["commit"]["group"]["duplicates"] == 1
    assert table["mode"]["thread"]["trials"] == 2 and table["backend"]["sqlite"]["lost"] == 0
    # A trial whose every attempt hit the upstream race is counted, its outcome is not.
    runs[1].upstream_race = True
    table = by_config(runs)
    group = table["commit"]["group"]
    assert (group["trials"], group["checked"], group["upstream_race"]) == (1, 0, 1)
    assert group["duplicates"] == 0 and table["mode"]["thread"]["checked"] == 1


# -- scheduling: trials beside the reference, longest first ----------------------------------
def test_a_trial_checks_against_the_reference_once_it_ran(tmp_path: Path) -> None:
    """Trials run while the reference runs: a trial's check waits for it, and cannot pass
    without it (the reference failed: a harness error, not a verdict on nothing)."""
    ctx = Context(work=tmp_path, tickets=50, input_file=tmp_path / "in", env={})
    trial = Plan("t01", "notify", "notify:before:1")
    assert ctx.reference_for(Plan("reference", "reference")) is None
    got: list[Any] = []
    waiting = threading.Thread(target=lambda: got.append(ctx.reference_for(trial)))
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive() and not got
    ctx.reference = collect(tmp_path)
    ctx.reference_done.set()
    waiting.join(5)
    assert got == [ctx.reference]
    failed = Context(work=tmp_path, tickets=50, input_file=tmp_path / "in", env={})
    failed.reference_done.set()
    with pytest.raises(ToolError, match="reference run failed"):
        failed.reference_for(trial)


def test_faster_jvm_for_mini_cluster_jobs_only(tmp_path: Path) -> None:
    ctx = Context(work=tmp_path, tickets=50, input_file=tmp_path / "in",
                  env={"JVM_ARGS": "-Xmx2g", "PATH": "/bin"}, jvm_args="-XX:TieredStopAtLevel=1")
    assert ctx.job_env()["JVM_ARGS"] == "-Xmx2g -XX:TieredStopAtLevel=1"
    assert ctx.env["JVM_ARGS"] == "-Xmx2g"  # what the standalone cluster gets
    assert Context(work=tmp_path, tickets=50, input_file=tmp_path / "in",
                   env={"PATH": "/bin"}).job_env() == {"PATH": "/bin"}


def test_a_race_in_the_first_job_runs_the_trial_again(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The first job of a savepoint trial can hit the PyFlink race too (a declined stop
    fails it over): the trial runs again, and is reported as raced, not as a harness error."""
    calls: list[str] = []

    def racing(ctx: Context, plan: Plan) -> Verdict:
        calls.append(plan.name)
        raise UpstreamRace("the first job hit the PyFlink process-mode race")

    monkeypatch.setattr(chaos_run, "run_mini", racing)
    ctx = Context(work=tmp_path, tickets=50, input_file=tmp_path / "in", env={})
    plan = Plan("t01", "notify", "notify:before:1",
                config=cfgs.TrialConfig(mode="process", lifecycle="savepoint"))
    verdict = chaos_run.run_trial(ctx, plan)
    assert calls == ["t01"] * chaos_run.RACE_ATTEMPTS
    assert verdict.upstream_race and not verdict.passed and not verdict.harness_error
    assert verdict.attempts == chaos_run.RACE_ATTEMPTS


def test_longest_trials_start_first() -> None:
    plans = plan_trials(random.Random(3), 30, 300, short=False, cluster=True, postgres=True,
                        kafka=True)
    costs = {p.name: expected_cost(p) for p in plans}
    slow = [p for p in plans if p.config.mode == "process" and p.config.lifecycle != "run"]
    quick = [p for p in plans if p.config.mode == "thread" and p.config.lifecycle == "run"
             and p.kind in inject.POINTS]
    assert slow and quick
    assert min(costs[p.name] for p in slow) > max(costs[p.name] for p in quick)
    kills = [p for p in plans if p.kind in ("taskmanager-kill", "postgres-restart")]
    assert all(costs[p.name] > max(costs[q.name] for q in quick) for p in kills)


# -- a short run on the mini-cluster --------------------------------------------------------
@pytest.mark.flink
@pytest.mark.timeout(660)
def test_short_chaos_run(tmp_path: Path) -> None:
    """4 trials (failure points 1-4) in configurations drawn from a printed seed (random
    unless FAE_CHAOS_SEED), each against a reference run: no recorded durable call executed
    twice, nothing lost, every bad input dead-lettered, the store empty at the end (with
    retention 2: only runs the final checkpoint's prune marks cover). Proves
    what harness tests cannot: real failovers, savepoints and restores of the main job."""
    results = tmp_path / "chaos-results.json"
    seed = os.environ.get("FAE_CHAOS_SEED") or str(random.SystemRandom().randrange(10**6))
    print(f"chaos short form: seed {seed} (FAE_CHAOS_SEED={seed} reruns it)")
    cmd = [sys.executable, "-m", "chaos.run", "--short", "--seed", seed,
           "--work", str(tmp_path / "work"), "--results", str(results)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=630)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"chaos.run --short did not finish in 630 s:\n{exc.stdout or ''}\n"
                    f"{exc.stderr or ''}")
    report = f"seed {seed}\n{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}"
    assert results.exists(), report
    data = json.loads(results.read_text())
    assert data["trials"] == 4, report
    assert data["failures_injected"] == 4, report
    # A process-mode trial whose every attempt hit the upstream PyFlink race (README, Known
    # issues) is not checked; the sums below are over the checked trials, at least 3 of 4.
    raced = data["upstream_race_trials"]
    assert len(raced) <= 1, report
    checked = 4 - len(raced)
    assert data["duplicates"] == 0, report
    assert data["lost"] == 0 and data["unexpected"] == 0, report
    assert data["dead_lettered"] == checked * len(bad_inputs()), report
    # Retention 1 leaves nothing; retention 2 keeps only the runs the final checkpoint's prune
    # marks cover (a retained checkpoint stays restorable): none may be left unmarked.
    by_retention = data["by_config"]["retention"]
    assert by_retention.get("1", {}).get("store_records_left", 0) == 0, report
    assert all(c["store_runs_unmarked"] == 0 for c in by_retention.values()), report
    assert {"unrecorded", "snapshot", "notify"} <= set(data["by_kind"]), report
    assert sum(c["trials"] for c in data["by_config"]["mode"].values()) == 4, report
    assert proc.returncode == 0 and data["passed"], report
