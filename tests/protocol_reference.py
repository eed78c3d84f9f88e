"""The reference side of the protocol model (:mod:`tests.protocol_model`): the agent and
its durable calls counted outside the store, the outputs a failure-free run emits, what the
model remembers of snapshots and jobs, and the switches of rules that reach known bugs."""

from __future__ import annotations

import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

from flink_agents_ext.actions import INPUT, ActionContext, Agent
from flink_agents_ext.testing import HarnessSnapshot

NAMESPACE = "model"
#: Keys: equal in Python, four distinct Flink keys; plus one more.
KEYS = (1, 1.0, True, "1", "b")
#: Action and call records one run leaves at most: two actions, one durable call each.
RECORDS_PER_RUN = 4
#: Rules that reach bugs of issue 10 not fixed on main yet. Off in ``make test`` until the
#: fix lands (then they move to :data:`ENABLED_BY_DEFAULT`); ``make fuzz
#: FUZZ_ENABLE=refused_restore,...`` or ``FAE_MODEL_ENABLE`` turns them on.
KNOWN_UNFIXED: dict[str, str] = {
    "fresh_start": "a fresh start (a new job, no restore) on a used namespace replays the "
                   "earlier job's records; the earlier job's prune boundary refuses the "
                   "new job's restores (fixed: 6356ae7)",
    "older_restore": "a restore from a retained checkpoint older than the latest, or a "
                     "savepoint, with retention >= 2 applies the abandoned branch's prune "
                     "marks (calls run twice) (fixed: 6356ae7)",
    "retention_change": "a new job with retention 1 resumed from a job with retention >= 2 "
                        "never applies the prune marks that job left in the store (its "
                        "covered records stay until their key runs again) (fixed: b8bb336)",
    "refused_restore": "a resume from a checkpoint or savepoint Flink no longer retains for "
                       "the current job: a refused one still moves the lineage's history and "
                       "drops marks, so the legitimate resume after it is refused too; one "
                       "accepted with allow_reexecution over another lineage leaves no prune "
                       "boundary, so a later older restore replays from records that are gone",
}
ENABLED_BY_DEFAULT: frozenset[str] = frozenset(
    {"fresh_start", "older_restore", "retention_change"})


def enabled_from_env(default: frozenset[str] = ENABLED_BY_DEFAULT) -> frozenset[str]:
    """The switches of :data:`KNOWN_UNFIXED` turned on: ``default`` plus those named in
    ``FAE_MODEL_ENABLE`` (comma-separated, ``all`` for every one)."""
    names = {n.strip() for n in os.environ.get("FAE_MODEL_ENABLE", "").split(",") if n.strip()}
    if "all" in names:
        names = set(KNOWN_UNFIXED)
    unknown = names - set(KNOWN_UNFIXED)
    if unknown:
        raise ValueError(f"unknown FAE_MODEL_ENABLE switches {sorted(unknown)}; "
                         f"known: {sorted(KNOWN_UNFIXED)}")
    return frozenset(default | names)


class Effects:
    """The side effects of the durable calls, counted outside the store (thread-safe).

    A call is identified by its name and the input's unique id ``u``. Running it again
    after one execution *returned* (and so was recorded) is a violation, unless ``u`` is in
    :attr:`reexecution_allowed`. A first execution of ``call_a`` for an input in
    :attr:`blocked` waits until released (a slow call in concurrent mode).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: Counter[tuple[str, int]] = Counter()
        self.returned: Counter[tuple[str, int]] = Counter()
        self.violations: list[str] = []
        self.reexecution_allowed: set[int] = set()
        self.blocked: dict[int, threading.Event] = {}
        self.entered: dict[int, threading.Event] = {}
        #: inputs whose blocked call was left running by a failed attempt: when it
        #: returns, nothing records it (the attempt is gone), so it may run again
        self.orphaned: set[int] = set()

    def _begin(self, call: tuple[str, int]) -> bool:
        with self.lock:
            if self.returned[call] and call[1] not in self.reexecution_allowed:
                self.violations.append(f"durable call {call[0]}(u={call[1]}) ran again after "
                                       f"an execution of it returned and was recorded")
            first = self.started[call] == 0
            self.started[call] += 1
        if first and call[0] == "a" and call[1] in self.blocked:
            self.entered[call[1]].set()
            self.blocked[call[1]].wait(60)
            return True
        return False

    def _end(self, call: tuple[str, int], blocked: bool = False) -> None:
        with self.lock:
            if not (blocked and call[1] in self.orphaned):
                self.returned[call] += 1

    def call_a(self, u: int) -> str:
        """The first durable call of input ``u``."""
        self._end(("a", u), self._begin(("a", u)))
        return f"a{u}"

    def call_b(self, u: int, a: str) -> str:
        """The second durable call of input ``u`` (takes the first's result)."""
        self._begin(("b", u))
        self._end(("b", u))
        return f"b{u}-{a}"

    def release_all(self) -> None:
        """Release every blocked call."""
        for event in self.blocked.values():
            event.set()


def make_agent(fx: Effects) -> Agent:
    """Two actions, one durable call each; memory counts the key's inputs."""
    agent = Agent("model")

    @agent.action(on=INPUT)
    def first(event: dict, ctx: ActionContext) -> None:
        a = ctx.durable_execute(fx.call_a, event["u"])
        ctx.memory["n"] = ctx.memory.get("n", 0) + 1
        ctx.send("second", {"u": event["u"], "a": a})

    @agent.action(on="second")
    def second(event: dict, ctx: ActionContext) -> None:
        b = ctx.durable_execute(fx.call_b, event["u"], event["a"])
        ctx.emit({"u": event["u"], "a": event["a"], "b": b, "n": ctx.memory["n"],
                  "seq": ctx.seq})

    return agent


def expected_output(u: int, count: int) -> dict[str, Any]:
    """What a failure-free run emits for input ``u``, the key's ``count``-th input."""
    return {"u": u, "a": f"a{u}", "b": f"b{u}-a{u}", "n": count, "seq": count - 1}


@dataclass
class Snap:
    """A snapshot the model took: the harness's, and where the timeline stood."""

    uid: int
    hs: HarnessSnapshot
    lineage: int  # index of the input log
    offset: int  # inputs of the log consumed
    outputs: list[Any]  # the timeline's outputs before it
    path: tuple[int, ...]  # uids of the snapshots of this timeline, up to and incl. this
    job: int
    savepoint: bool
    completed: dict[str, int]  # encoded key -> runs completed (applied)
    max_in_flight: int

    def __repr__(self) -> str:
        kind = "savepoint" if self.savepoint else "checkpoint"
        return f"<{kind} {self.hs.checkpoint_id} of job {self.job} (snap {self.uid})>"


@dataclass
class Job:
    """A Flink job as the JobManager sees it."""

    number: int
    retention: int
    commit: str
    max_in_flight: int
    allow_reexecution: bool
    base: Optional[Snap] = None  # what it was restored from
    attempt: int = 0
    completed: list[Snap] = field(default_factory=list)
    pending: list[Snap] = field(default_factory=list)

    @property
    def job_id(self) -> str:
        return f"job-{self.number}"

    def retained(self) -> list[Snap]:
        """The checkpoints Flink keeps for this job (``num-retained`` = retention)."""
        pool = ([self.base] if self.base else []) + self.completed
        return pool[-self.retention:]
