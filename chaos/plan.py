"""What ``make chaos`` runs: the failure points and the trials (:class:`Plan`), drawn at
random from a seed."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Optional

from chaos import inject
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


@dataclass
class Plan:
    """One run: what fails where, on which runtime and store."""

    name: str
    kind: str
    spec: str = "none"
    runtime: str = "mini-cluster"
    store: str = "sqlite"
    parallelism: int = 1
    #: Generated tickets per second (0: ``tickets / INPUT_SECONDS``).
    rate: int = 0
    #: TaskManager kill / PostgreSQL restart: once this fraction of the calls ran.
    at_fraction: float = 0.0

    def describe(self) -> str:
        """One line: kind, spec, runtime, store, parallelism."""
        what = self.spec if self.spec != "none" else self.kind
        if self.at_fraction:
            what += f"@{self.at_fraction:.0%}"
        return f"{what:<28} {self.runtime} {self.store} p{self.parallelism}"


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
                reconcilable: Optional[bool] = None, side: Optional[str] = None) -> str:
    """A chaos spec of ``kind`` at a random point of a run of ``tickets`` tickets.

    ``reconcilable`` (``unrecorded`` only): target the reconcilable pager call (``True``),
    another call (``False``), or any (``None``). ``side`` (``snapshot``, ``notify``):
    ``before`` or ``after``, random when ``None``.
    """
    lo, hi = max(1, tickets // 10), max(2, tickets * 9 // 10)
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
        return f"{kind}:{side or rng.choice(('before', 'after'))}:{rng.randint(1, 3)}"
    raise ValueError(f"no random spec for {kind}")


def plan_trials(rng: random.Random, count: int, tickets: int, short: bool,
                cluster: bool, postgres: bool) -> list[Plan]:
    """The trials: ``count`` mini-cluster ones (every kind in turn, random parameters; every
    other ``unrecorded`` one on the reconcilable call), then the TaskManager kill and the
    PostgreSQL restart when asked for."""
    pagers = pager_tickets(tickets)
    if short:
        first = rng.choice(("before-call", "after-call"))
        kinds = [first, "unrecorded", "snapshot", "notify", *MINI_KINDS][:count]
    else:
        kinds = [MINI_KINDS[i % len(MINI_KINDS)] for i in range(count)]
        rng.shuffle(kinds)
    plans = []
    unrecorded = 0
    for i, kind in enumerate(kinds, 1):
        parallelism = 2 if not short and i % 3 == 0 else 1
        reconcilable = None
        if kind == "unrecorded" and not short:
            reconcilable, unrecorded = unrecorded % 2 == 1, unrecorded + 1
        # The short form's notification is lost before pruning: the restore must prune.
        side = "before" if short and kind == "notify" else None
        plans.append(Plan(f"t{i:02d}", kind,
                          random_spec(rng, kind, tickets, pagers, reconcilable, side),
                          parallelism=parallelism))
    if postgres:
        plans.append(Plan(f"t{len(plans) + 1:02d}", "postgres-restart", store="postgres",
                          rate=SLOW_RATE, at_fraction=round(rng.uniform(0.15, 0.6), 2)))
    if cluster:
        plans.append(Plan(f"t{len(plans) + 1:02d}", "taskmanager-kill",
                          runtime="standalone cluster",
                          store="postgres" if postgres else "sqlite", parallelism=2,
                          rate=SLOW_RATE, at_fraction=round(rng.uniform(0.15, 0.6), 2)))
    return plans


# -- running the job --------------------------------------------------------------------------
