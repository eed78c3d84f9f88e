"""The configurations a chaos trial runs in (:class:`TrialConfig`), drawn so that every
choice a user can make is covered (:func:`draw_configs`), and what each configuration
promises under each failure (:func:`expectation`), stated before any trial runs.

A configuration is what a user picks for the main job: the execution mode (``thread``,
``process``), ``max_in_flight`` (0: inline runs; 8, 256: runs in flight at the failure),
the store's commit mode (``each``, ``group``), the checkpoint retention (1, 2), the agent's
parallelism (1, 2), the store backend (SQLite, PostgreSQL, Kafka) and the job's life cycle:

==================  ===========================================================================
``run``             one job from a fresh start to the end
``savepoint``       the job is stopped with a savepoint midway (``stop-with-savepoint``) and
                    resumed from it, possibly with another parallelism; the failure is
                    injected after the resume
``fresh-on-used``   an earlier job (other tickets, same store and namespace) is killed
                    midway, then this job starts fresh on that namespace: a careless redeploy
==================  ===========================================================================

The store treats a fresh start as a new lineage (``flink_agents_ext/lineage.py``): the
fresh start removes what the earlier job left and never replays it. Before that, such a
start replayed the earlier job's records; :data:`FRESH_START_KEEPS_NAMESPACE` ``False``
(``FAE_CHAOS_KEEP_NAMESPACE=0``) makes the ``fresh-on-used`` trials clear the namespace
before the fresh start instead (the earlier job still runs and is killed).
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass
from typing import Any, Sequence

MODES = ("thread", "process")
MAX_IN_FLIGHT = (0, 8, 256)
COMMITS = ("each", "group")
RETENTIONS = (1, 2)
PARALLELISMS = (1, 2)
LIFECYCLES = ("run", "savepoint", "fresh-on-used")
BACKENDS = ("sqlite", "postgres", "kafka")
#: The columns of ``by_config`` in chaos-results.json: dimension -> TrialConfig attribute.
DIMENSIONS = {"mode": "mode", "commit": "commit", "concurrency": "concurrency",
              "backend": "backend", "lifecycle": "lifecycle", "retention": "retention",
              "parallelism": "parallelism"}

#: Whether a ``fresh-on-used`` trial starts on the earlier job's records (``True``, the
#: default) or clears the namespace first (``False``, for a store without lineages; see the
#: module). ``FAE_CHAOS_KEEP_NAMESPACE=0`` / ``1`` chooses.
FRESH_START_KEEPS_NAMESPACE = os.environ.get("FAE_CHAOS_KEEP_NAMESPACE", "1") == "1"

#: Failure kinds that kill a process outright (no exception handling, no flush).
KILLS = ("taskmanager-kill",)


@dataclass(frozen=True)
class TrialConfig:
    """What the user picked for one trial's job (see the module)."""

    mode: str = "thread"
    max_in_flight: int = 0
    commit: str = "each"
    retention: int = 1
    parallelism: int = 1
    lifecycle: str = "run"
    #: ``savepoint``: the parallelism of the resumed job (may differ from ``parallelism``).
    resume_parallelism: int = 0
    backend: str = "sqlite"

    @property
    def concurrency(self) -> str:
        """``inline`` (``max_in_flight`` 0) or ``in-flight N``."""
        return "inline" if not self.max_in_flight else f"in-flight {self.max_in_flight}"

    def label(self) -> str:
        """A short description, e.g. ``process mif8 group r2 p1 savepoint->p2 kafka``."""
        life = self.lifecycle
        if self.lifecycle == "savepoint":
            life += f"->p{self.resume_parallelism or self.parallelism}"
        return (f"{self.mode} mif{self.max_in_flight} {self.commit} r{self.retention} "
                f"p{self.parallelism} {life} {self.backend}")

    def args(self) -> list[str]:
        """Command-line options of ``python -m chaos.run --spec`` that rerun it."""
        out = ["--mode", self.mode, "--max-in-flight", str(self.max_in_flight),
               "--commit", self.commit, "--retention", str(self.retention),
               "--parallelism", str(self.parallelism), "--lifecycle", self.lifecycle,
               "--backend", self.backend]
        if self.lifecycle == "savepoint":
            out += ["--resume-parallelism", str(self.resume_parallelism or self.parallelism)]
        return out

    def as_dict(self) -> dict[str, Any]:
        """The fields plus ``concurrency``."""
        return {**asdict(self), "concurrency": self.concurrency}


#: What the store holds after the final checkpoint.
STORE_PROMISE = ("store empty (retention 2: only runs the final checkpoint's prune marks "
                 "cover, kept restorable)")


@dataclass(frozen=True)
class Expectation:
    """What a configuration promises under one kind of failure."""

    #: ``"none"``: no durable call runs twice (but the injected unrecorded one);
    #: ``"last-batch"``: calls whose records were still in the group-commit buffer when the
    #: process was killed may run once more (counted as ``repeats``, not ``duplicates``), no
    #: other; ``"unrecorded"``: calls that had run but had not returned to their action
    #: (record not committed) when the process was killed may run once more, no other.
    repeats: str = "none"
    #: Results and dead letters lost: always 0.
    lost: int = 0
    #: Store records left after the final checkpoint: always 0.
    store_left: int = 0

    def describe(self) -> str:
        """One line for the report."""
        dup = {"none": "0 duplicates",
               "last-batch": "repeats of the last unwritten group-commit batch allowed "
                             "(counted apart), no other duplicate",
               "unrecorded": "repeats of calls that ran but were not recorded yet when the "
                             "process died allowed (counted apart), no recorded call twice",
               }[self.repeats]
        return f"{dup}; 0 lost; {STORE_PROMISE}"


def expectation(config: TrialConfig, kind: str) -> Expectation:
    """What ``config`` promises under a failure of ``kind`` (see :data:`EXPECTATIONS`)."""
    if kind in KILLS:
        return Expectation(repeats="last-batch" if config.commit == "group" else "unrecorded")
    return Expectation()


#: The expectations, stated up front (printed by ``make chaos`` and in chaos-results.json).
EXPECTATIONS = {
    "commit group + a killed process (TaskManager kill -9)":
        Expectation(repeats="last-batch").describe(),
    "commit each + a killed process (TaskManager kill -9)":
        Expectation(repeats="unrecorded").describe(),
    "everything else (every mode, concurrency, retention, parallelism, life cycle, "
    "backend; every in-process failure)":
        Expectation().describe(),
    "process mode":
        "as above; a run that hits the PyFlink 2.3.0 failover race (README, Known issues) "
        "is stopped as soon as the race shows in the Flink log and run again (at most "
        "twice more); a trial whose every attempt hit it is reported as 'race', not passed",
}


def _cycle(rng: random.Random, values: Sequence[Any], count: int) -> list[Any]:
    """``count`` values: every value equally often (as far as ``count`` allows), shuffled."""
    out = [values[i % len(values)] for i in range(count)]
    rng.shuffle(out)
    return out


def draw_configs(rng: random.Random, count: int, backends: Sequence[str] = BACKENDS,
                 lifecycles: Sequence[str] = LIFECYCLES,
                 modes: Sequence[str] = MODES) -> list[TrialConfig]:
    """``count`` configurations; each dimension's values are spread evenly over them and
    combined at random (each dimension shuffled on its own)."""
    dims = {
        "mode": _cycle(rng, modes, count),
        "max_in_flight": _cycle(rng, MAX_IN_FLIGHT, count),
        "commit": _cycle(rng, COMMITS, count),
        "retention": _cycle(rng, RETENTIONS, count),
        "parallelism": _cycle(rng, PARALLELISMS, count),
        "lifecycle": _cycle(rng, lifecycles, count),
        "backend": _cycle(rng, backends, count),
    }
    configs = []
    for i in range(count):
        picked = {name: values[i] for name, values in dims.items()}
        resume = 0
        if picked["lifecycle"] == "savepoint":
            resume = rng.choice(PARALLELISMS)
        configs.append(TrialConfig(resume_parallelism=resume, **picked))
    return configs
