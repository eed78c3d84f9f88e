"""What ``make chaos`` runs: the failure points and the trials (:class:`Plan`), drawn at
random from a seed."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Optional

from chaos import inject
from chaos.config import BACKENDS, LIFECYCLES, MODES, TrialConfig, draw_configs
from jobs.support_triage import _score, generated_ticket

KINDS = {
    "before-call": "1 in an action, before its durable call",
    "after-call": "1 in an action, after its durable call",
    "unrecorded": "2 between a durable call and its record",
    "snapshot": "3 during a snapshot",
    "notify": "4 between checkpoint completion and notification",
    "taskmanager-kill": "5 TaskManager killed (standalone cluster)",
    "postgres-restart": "6 PostgreSQL restarted while the job runs",
}
MINI_KINDS = ("before-call", "after-call", "unrecorded", "snapshot", "notify")
#: Generated tickets per second of the runs that must still be running when the TaskManager
#: is killed or PostgreSQL restarts.
SLOW_RATE = 40
#: Generated tickets per second of the first job of a ``savepoint`` trial (stopped once 8-25 %
#: of the calls ran; it must not reach the failure's target ticket, after 60 %, before its
#: savepoint completes: ~2 s to spare with 200 tickets).
SAVEPOINT_FIRST_RATE = 30


@dataclass
class Plan:
    """One run: what fails where, on which runtime, in which configuration."""

    name: str
    kind: str
    spec: str = "none"
    runtime: str = "mini-cluster"
    config: TrialConfig = field(default_factory=TrialConfig)
    #: Generated tickets per second (0: ``tickets / INPUT_SECONDS``).
    rate: int = 0
    #: TaskManager kill / PostgreSQL restart: once this fraction of the calls ran.
    at_fraction: float = 0.0
    #: ``savepoint`` life cycle: stop with a savepoint once this fraction of the calls ran.
    stop_fraction: float = 0.0

    @property
    def store(self) -> str:
        """The store backend."""
        return self.config.backend

    @property
    def parallelism(self) -> int:
        """The agent's parallelism when the failure is injected (after a resume: the
        resumed job's)."""
        if self.config.lifecycle == "savepoint" and self.config.resume_parallelism:
            return self.config.resume_parallelism
        return self.config.parallelism

    def describe(self) -> str:
        """One line: kind, spec, runtime, configuration."""
        what = self.spec if self.spec != "none" else self.kind
        if self.at_fraction:
            what += f"@{self.at_fraction:.0%}"
        if self.stop_fraction:
            what += f" (stop@{self.stop_fraction:.0%})"
        return f"{what:<34} {self.runtime} {self.config.label()}"

    def rerun_command(self, seed: int, tickets: int) -> str:
        """The command that reruns exactly this trial (a failing trial prints it)."""
        args = ["python", "-m", "chaos.run", "--spec", self.spec, "--kind", self.kind,
                *self.config.args(), "--tickets", str(tickets), "--seed", str(seed)]
        if self.stop_fraction:
            args += ["--stop-fraction", str(self.stop_fraction)]
        if self.at_fraction:
            args += ["--at-fraction", str(self.at_fraction)]
        if self.rate:
            args += ["--rate", str(self.rate)]
        return " ".join(args)


def pager_tickets(tickets: int) -> list[int]:
    """Generated tickets whose ``respond`` pages on-call (urgent and a gold customer).

    Mirrors the job's rules: ``model_classify`` (urgent when the text has a "!") and
    ``crm_lookup`` (gold when ``_score(customer) % 3 == 0``).
    """
    found = []
    for n in range(1, tickets + 1):
        ticket = json.loads(generated_ticket(n))
        if "!" in ticket["text"] and _score(ticket["customer"]) % 3 == 0:
            found.append(n)
    return found


def random_spec(rng: random.Random, kind: str, tickets: int, pagers: list[int],
                reconcilable: Optional[bool] = None, side: Optional[str] = None,
                after: float = 0.1) -> str:
    """A chaos spec of ``kind`` at a random point of a run of ``tickets`` tickets.

    ``reconcilable`` (``unrecorded`` only): target the reconcilable pager call (``True``),
    another call (``False``), or any (``None``). ``side`` (``snapshot``, ``notify``):
    ``before`` or ``after``, random when ``None``. ``after``: the first fraction of the
    tickets a target ticket may have (a resumed job's failure comes after its savepoint).
    """
    lo, hi = max(1, int(tickets * after)), max(2, tickets * 9 // 10)
    if kind in ("before-call", "after-call"):
        return f"{kind}:{rng.choice(inject.ACTIONS)}:{rng.randint(lo, hi)}"
    if kind == "unrecorded":
        calls = sorted(inject.CALLS)
        if reconcilable is not None:
            calls = [c for c in calls if (c in inject.RECONCILABLE_CALLS) == reconcilable]
        call = rng.choice(calls)
        candidates = [n for n in pagers if lo <= n <= hi]
        if call in inject.RECONCILABLE_CALLS and candidates:
            return f"unrecorded:{call}:{rng.choice(candidates)}"
        if call in inject.RECONCILABLE_CALLS:  # no paging ticket in range (tiny runs)
            call = "model_draft_reply"
        return f"unrecorded:{call}:{rng.randint(lo, hi)}"
    if kind in ("snapshot", "notify"):
        # After a resume little input is left: the first snapshot / notification with data.
        last = 1 if after > 0.5 else 3
        return f"{kind}:{side or rng.choice(('before', 'after'))}:{rng.randint(1, last)}"
    raise ValueError(f"no random spec for {kind}")


def mini_plan(rng: random.Random, name: str, kind: str, config: TrialConfig, tickets: int,
              pagers: list[int], reconcilable: Optional[bool] = None,
              side: Optional[str] = None) -> Plan:
    """A mini-cluster trial of ``kind`` in ``config`` at a random point."""
    stop = 0.0
    after = 0.1
    if config.lifecycle == "savepoint":
        # Stopped early (the first job runs at SAVEPOINT_FIRST_RATE); the failure comes after
        # the resume.
        stop, after = round(rng.uniform(0.08, 0.25), 2), 0.6
    elif config.lifecycle == "fresh-on-used":
        stop = round(rng.uniform(0.2, 0.6), 2)  # the earlier job is killed here
    return Plan(name, kind, random_spec(rng, kind, tickets, pagers, reconcilable, side, after),
                config=config, stop_fraction=stop)


def plan_trials(rng: random.Random, count: int, tickets: int, short: bool,
                cluster: bool, postgres: bool, kafka: bool = False) -> list[Plan]:
    """The trials: ``count`` mini-cluster ones (every kind in turn, random parameters; every
    other ``unrecorded`` one on the reconcilable call), each in a configuration of
    :func:`chaos.config.draw_configs` (SQLite, and PostgreSQL / Kafka when asked for), then
    a PostgreSQL restart and TaskManager kills (``commit`` each and group) when asked for.

    The short form: 4 trials, one per failure point 1-4, SQLite, configurations drawn from
    every mode, concurrency, commit mode, retention, parallelism and life cycle."""
    pagers = pager_tickets(tickets)
    backends = [b for b in BACKENDS if b == "sqlite" or (b == "postgres" and postgres)
                or (b == "kafka" and kafka)]
    if short:
        first = rng.choice(("before-call", "after-call"))
        kinds = [first, "unrecorded", "snapshot", "notify", *MINI_KINDS][:count]
    else:
        kinds = [MINI_KINDS[i % len(MINI_KINDS)] for i in range(count)]
        rng.shuffle(kinds)
    configs = draw_configs(rng, len(kinds), backends, LIFECYCLES, MODES)
    plans = []
    unrecorded = 0
    for i, (kind, config) in enumerate(zip(kinds, configs), 1):
        reconcilable = None
        if kind == "unrecorded" and not short:
            reconcilable, unrecorded = unrecorded % 2 == 1, unrecorded + 1
        # The short form's notification is lost before pruning: the restore must prune.
        side = "before" if short and kind == "notify" else None
        plans.append(mini_plan(rng, f"t{i:02d}", kind, config, tickets, pagers, reconcilable,
                               side))
    # The server and cluster trials first: a run cut short still has them.
    minis, plans = plans, []
    if postgres:
        config = TrialConfig(mode="thread", max_in_flight=rng.choice((0, 8, 256)),
                             commit=rng.choice(("each", "group")), backend="postgres",
                             retention=rng.choice((1, 2)), parallelism=rng.choice((1, 2)))
        plans.append(Plan(f"t{len(plans) + 1:02d}", "postgres-restart", config=config,
                          rate=SLOW_RATE, at_fraction=round(rng.uniform(0.15, 0.6), 2)))
    if cluster:
        for commit in ("each", "group"):
            config = TrialConfig(mode="thread", max_in_flight=rng.choice((0, 8, 256)),
                                 commit=commit, retention=rng.choice((1, 2)), parallelism=2,
                                 backend="postgres" if postgres else "sqlite")
            plans.append(Plan(f"t{len(plans) + 1:02d}", "taskmanager-kill",
                              runtime="standalone cluster", config=config, rate=SLOW_RATE,
                              at_fraction=round(rng.uniform(0.15, 0.6), 2)))
    plans += minis
    for i, plan in enumerate(plans, 1):
        plan.name = f"t{i:02d}"
    return plans


# -- running the job --------------------------------------------------------------------------
