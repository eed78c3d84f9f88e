"""What a chaos run left (:func:`collect`) and its checks against the reference
(:func:`check_run`, giving a :class:`Verdict`)."""

from __future__ import annotations

import glob
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from chaos import inject
from chaos.config import expectation
from chaos.inputs import check_dead_letters
from chaos.plan import Plan


@dataclass
class Outputs:
    """A run's outputs, as the checks need them."""

    results: list[str]
    dead_letters: list[str]
    ledger: Counter[tuple[str, str]]
    #: The ledger's (call, ticket) entries in file order (first executions first).
    ledger_order: list[tuple[str, str]]
    ledger_bad_lines: int
    reconciled: list[dict[str, Any]]
    restores: list[dict[str, Any]]
    fired: Optional[dict[str, Any]]
    uncommitted_files: int
    #: Stats files: one per opened instance of the agent function (subtask attempt).
    instances: int
    #: (call, ticket) -> when the call first returned to its action (its record written).
    recorded_at: dict[tuple[str, str], float] = field(default_factory=dict)


def _part_lines(directory: Path) -> tuple[list[str], int]:
    lines: list[str] = []
    for path in glob.glob(str(directory / "*" / "part-*")):
        lines += [line for line in Path(path).read_text().splitlines() if line]
    return sorted(lines), len(glob.glob(str(directory / "*" / ".part-*")))


def _jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    entries, bad = [], 0
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                bad += 1  # e.g. a line cut by a kill -9
    return entries, bad


def collect(out: Path) -> Outputs:
    """Read a run's output directory."""
    results, uncommitted = _part_lines(out / "results")
    dead, uncommitted_dead = _part_lines(out / "dead_letters")
    ledger_entries, bad = _jsonl(out / inject.LEDGER)
    return Outputs(
        results=results, dead_letters=dead,
        ledger=Counter((e["call"], e["ticket"]) for e in ledger_entries),
        ledger_order=[(e["call"], e["ticket"]) for e in ledger_entries], ledger_bad_lines=bad,
        reconciled=_jsonl(out / inject.RECONCILED)[0],
        restores=_jsonl(out / inject.RESTORES)[0],
        fired=inject.describe(str(out)), uncommitted_files=uncommitted + uncommitted_dead,
        instances=len(glob.glob(str(out / "stats" / "*.json"))),
        recorded_at=_first_times(_jsonl(out / inject.RECORDED)[0]))


def _first_times(entries: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    first: dict[tuple[str, str], float] = {}
    for e in entries:
        key = (e["call"], e["ticket"])
        first[key] = min(first.get(key, e["time"]), e["time"])
    return first

def last_batch_calls(o: Outputs, repeats: str,
                     injection: dict[str, Any]) -> set[tuple[str, str]]:
    """The calls an expectation lets run twice after a kill: ``last-batch``: first executed
    from the ledger line ``last_batch_from`` (counted shortly before the kill) up to the
    kill; ``unrecorded``: first executed before the kill and not returned to their action
    (record not written) by then."""
    if repeats == "unrecorded" and "killed_at" in injection:
        killed_at = float(injection["killed_at"])
        before = set(o.ledger_order[:int(injection.get("calls_at_kill", 0))])
        return {c for c in before if o.recorded_at.get(c, killed_at + 1) > killed_at}
    if repeats != "last-batch" or "calls_at_kill" not in injection:
        return set()
    first = int(injection.get("last_batch_from", 0))
    upto = int(injection["calls_at_kill"])
    return set(o.ledger_order[first:upto])


# -- checks ---------------------------------------------------------------------------------
@dataclass
class Verdict:
    """The checked outcome of one run (one row of ``runs`` in chaos-results.json)."""

    name: str
    kind: str
    spec: str
    runtime: str
    store: str
    parallelism: int
    #: The trial's configuration (:meth:`chaos.config.TrialConfig.as_dict`).
    config: dict[str, Any] = field(default_factory=dict)
    #: What the configuration promises (:meth:`chaos.config.Expectation.describe`).
    expected: str = ""
    seconds: float = 0.0
    completed: bool = False
    injected: bool = False
    injection: dict[str, Any] = field(default_factory=dict)
    #: Job restarts (attempts of the agent operator after the first one).
    restarts: int = 0
    #: Checkpoints the agent function was restored from.
    restored_from: list[int] = field(default_factory=list)
    duplicates: int = 0
    duplicate_calls: list[str] = field(default_factory=list)
    #: Repeats the configuration allows (group commit's last batch after a kill).
    repeats: int = 0
    repeated_calls: list[str] = field(default_factory=list)
    #: Reference calls that never ran in this trial (e.g. another job's record replayed).
    skipped_calls: int = 0
    reexecuted_unrecorded: int = 0
    reexecuted_calls: list[str] = field(default_factory=list)
    reconciled: int = 0
    lost: int = 0
    unexpected: int = 0
    dead_lettered: int = 0
    store_records_left: Optional[int] = None
    #: Of the runs left: those no remaining prune mark covers (with ``retention`` k the
    #: records of the last k - 1 checkpoints stay, restorable; anything else is a leak).
    store_runs_unmarked: Optional[int] = None
    uncommitted_files: int = 0
    problems: list[str] = field(default_factory=list)
    #: The harness itself failed in this trial (e.g. the cluster did not start).
    harness_error: str = ""
    #: The job hit the PyFlink process-mode race (README, Known issues) in every attempt.
    upstream_race: bool = False
    #: Attempts of this trial (more than 1 after the race).
    attempts: int = 1
    #: What the trial's earlier phases did (savepoint path, the earlier job).
    phases: dict[str, Any] = field(default_factory=dict)
    #: The command that reruns exactly this trial.
    rerun: str = ""

    @property
    def passed(self) -> bool:
        """No problem found."""
        return not self.problems


def check_run(plan: Plan, out: Path, completed: bool, failure: str,
              summary: Optional[dict[str, Any]], reference: Optional[Outputs],
              tickets: int, injection: Optional[dict[str, Any]] = None,
              seconds: float = 0.0, log_text: str = "", base_instances: int = 0) -> Verdict:
    """Check one run's outputs (against the reference, unless this is the reference) and
    against what its configuration promises. ``base_instances``: function instances an
    earlier job of the trial opened (before a resume from a savepoint)."""
    o = collect(out)
    promise = expectation(plan.config, plan.kind)
    v = Verdict(plan.name, plan.kind, plan.spec, plan.runtime, plan.store, plan.parallelism,
                config=plan.config.as_dict(), expected=promise.describe(),
                seconds=round(seconds, 1), completed=completed,
                restarts=max(0, -(-(o.instances - base_instances) // plan.parallelism) - 1),
                restored_from=sorted({int(r["checkpoint"]) for r in o.restores}),
                uncommitted_files=o.uncommitted_files)
    problems = v.problems
    if not completed:
        problems.append(f"the job did not complete: {failure}")
    if "RestoreBoundaryError" in log_text:
        problems.append("RestoreBoundaryError: a restore needed records that were pruned")
    for r in o.restores:
        if "error" in r:
            problems.append(f"restore from checkpoint {r['checkpoint']} failed: {r['error']}")

    # The failure must really have happened.
    spec = inject.ChaosSpec.parse(plan.spec)
    if spec.point != "none":
        v.injection = o.fired or {}
        v.injected = o.fired is not None
        if not v.injected:
            problems.append(f"the failure {plan.spec} was never injected (trigger not reached)")
        elif not v.restarts:
            problems.append("the failure fired but the job did not restart")
    elif injection is not None:
        v.injection = injection
        v.injected = bool(injection.get("injected"))
        if not v.injected:
            problems.append(f"the {plan.kind} did not happen while the job ran: "
                            f"{injection.get('why', '')}")

    # Durable calls: a recorded call never runs twice; an unrecorded one may, once more;
    # after a kill with group commit, one of the last batch may (counted as a repeat).
    target_ticket = f"G-{spec.trigger:06d}" if spec.point == "unrecorded" else ""
    reconcilable = spec.target in inject.RECONCILABLE_CALLS
    last_batch = last_batch_calls(o, promise.repeats, v.injection)
    for (call, ticket), count in sorted(o.ledger.items()):
        if count < 2:
            continue
        label = f"{call}({ticket}) x{count}"
        unrecorded = call == inject.UNRECORDABLE_CALL or (
            spec.point == "unrecorded" and not reconcilable
            and (call, ticket) == (spec.target, target_ticket) and count == 2)
        if unrecorded:
            v.reexecuted_unrecorded += count - 1
            v.reexecuted_calls.append(label)
        elif (call, ticket) in last_batch and count == 2:
            v.repeats += 1
            v.repeated_calls.append(label)
        else:
            v.duplicates += count - 1
            v.duplicate_calls.append(label)
    if v.duplicates:
        shown = ", ".join(v.duplicate_calls[:8])
        more = len(v.duplicate_calls) - 8
        problems.append(f"recorded durable calls executed twice: {shown}"
                        + (f" and {more} more" if more > 0 else ""))
    if reference is not None:
        skipped = sorted(set(reference.ledger) - set(o.ledger))
        v.skipped_calls = len(skipped)
        if skipped:
            problems.append(f"{len(skipped)} durable call(s) of the reference never ran (a "
                            f"record of another job replayed?), e.g. {skipped[:4]}")
    if o.ledger_bad_lines:
        problems.append(f"{o.ledger_bad_lines} unreadable line(s) in the side-effect ledger")
    if spec.point == "unrecorded" and v.injected:
        runs = o.ledger[(spec.target, target_ticket)]
        if reconcilable:
            hits = [r for r in o.reconciled if r.get("ticket") == target_ticket]
            v.reconciled = len(hits)
            if not hits or not all(r.get("found") for r in hits):
                problems.append(f"the reconciler of {spec.target}({target_ticket}) did not run "
                                f"(or did not find the call): {hits}")
            if runs != 1:
                problems.append(f"reconcilable {spec.target}({target_ticket}) ran {runs} times")
        elif runs != 2:
            problems.append(f"unrecorded {spec.target}({target_ticket}) ran {runs} time(s); "
                            f"expected once more on replay (2)")
    # A notification lost before pruning: with retention 1 the restore prunes the restored
    # payloads itself: no run they cover is left after it (it may prune nothing: a key whose
    # run was in flight at the snapshot covers only runs an earlier checkpoint pruned).
    # With retention k > 1 the restore only records them as marks (the checkpoints before it
    # that stay restorable are not known to the restored job): the
    # (k-1)-th completion after the restore prunes them, which the store check at the end
    # (nothing left but what the final checkpoint's marks keep) proves.
    if spec.point == "notify" and spec.target == "before" and v.injected:
        lost_cp = int(v.injection.get("checkpoint", -1))
        covering = [r for r in o.restores if r["checkpoint"] >= lost_cp
                    and any(p >= lost_cp for p in r["payloads"])]
        if not covering:
            problems.append(f"no restore got the payloads of checkpoint {lost_cp}, whose "
                            f"notification was lost: {o.restores}")
        elif plan.config.retention == 1 and any(r.get("covered_left", 1) for r in covering):
            problems.append(f"the restore after the lost notification of checkpoint {lost_cp} "
                            f"left runs its payloads cover: {covering}")

    # Outputs: every generated ticket answered once; bad input dead-lettered with its reason.
    ids = Counter(json.loads(line).get("ticket_id") for line in o.results)
    expected = {f"G-{n:06d}" for n in range(1, tickets + 1)}
    missing = expected - set(ids)
    if missing:
        problems.append(f"{len(missing)} generated ticket(s) without a result, "
                        f"e.g. {sorted(missing)[:5]}")
    if set(ids) - expected or any(n > 1 for n in ids.values()):
        problems.append("results for unknown tickets or tickets answered twice")
    letters = [json.loads(line) for line in o.dead_letters]
    v.dead_lettered = len(letters)
    for kind, problem in check_dead_letters(letters).items():
        problems.append(f"bad input {kind}: {problem}")
    if reference is not None:
        ref_lines = Counter(reference.results) + Counter(reference.dead_letters)
        lines = Counter(o.results) + Counter(o.dead_letters)
        v.lost = sum((ref_lines - lines).values())
        v.unexpected = sum((lines - ref_lines).values())
        if v.lost or v.unexpected:
            problems.append(f"outputs differ from the reference: {v.lost} missing, "
                            f"{v.unexpected} unexpected line(s)")

    # The store is bounded: nothing left once the final checkpoint completed.
    if summary is not None:
        v.store_records_left = int(summary["store_records_left"])
        retained = plan.config.retention > 1
        if "store_runs_unmarked" in summary:
            v.store_runs_unmarked = int(summary["store_runs_unmarked"])
        if v.store_records_left != 0 and not retained:
            problems.append(f"{v.store_records_left} store record(s) left after the final "
                            f"checkpoint")
        elif v.store_records_left and retained and v.store_runs_unmarked != 0:
            problems.append(f"{v.store_records_left} store record(s) left after the final "
                            f"checkpoint, of {v.store_runs_unmarked} run(s) no prune mark "
                            f"of a retained checkpoint covers")
    elif completed:
        problems.append("no summary")
    return v


