"""A model-based test of the whole durable-action protocol (issue 10), shared by the test
suite (``tests/test_protocol_model.py``) and ``make fuzz`` (:mod:`tests.protocol_fuzz`).

:class:`ProtocolMachine` is a hypothesis ``RuleBasedStateMachine`` that drives one subtask
of a :class:`DurableAgentFunction` through :class:`KeyedFunctionHarness` on a real SQLite
store: inputs for keys that are equal in Python but distinct for Flink (``1``, ``1.0``,
``True``, ``"1"``), snapshots, completions of any pending checkpoint (subsuming older ones,
with or without the notification), aborts (notified or not), failovers, new jobs resumed
from any retained checkpoint or savepoint (with another retention, commit mode or
re-execution setting), fresh starts on the same namespace, concurrent runs with a run
blocked in a durable call, group commit.

The reference model is small: the source is a log of inputs per lineage (a restore rewinds
to the checkpoint's offset and the same inputs come again, as from Kafka); the outputs of a
failure-free run of the inputs a timeline consumed are computed directly from that log;
durable calls count their executions outside the store (:class:`Effects`). After every
step (invariants):

* no durable call runs again after one execution of it returned (was recorded), unless the
  job allows re-execution and was resumed from a checkpoint that need not be restorable;
* the timeline's outputs (those emitted before the restored checkpoint, then the restored
  job's) equal the failure-free run's, per key in order; no dead letters;
* the store holds at most :data:`RECORDS_PER_RUN` records per run not yet covered by the
  prune point (the oldest checkpoint the retention still needs, among those notified);
* nothing is pruned at a snapshot or an abort.

A restore from a checkpoint Flink still retains for the current job (the last
``retention`` completed ones, or its savepoints not older than those) must succeed; one
from anything else (an abandoned branch, an old savepoint) may be refused with a
:class:`FlinkAgentsExtError` (the model then restarts the previous job) or must behave.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from typing import Any, Optional

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from flink_agents_ext.actions import DurableAgentFunction
from flink_agents_ext.errors import FlinkAgentsExtError
from flink_agents_ext.keys import encode_key
from flink_agents_ext.store import SQLiteStore
from flink_agents_ext.testing import KeyedFunctionHarness
from tests.protocol_reference import (
    ENABLED_BY_DEFAULT,
    KEYS,
    NAMESPACE,
    RECORDS_PER_RUN,
    Effects,
    Job,
    Snap,
    expected_output,
    make_agent,
)

retentions = st.integers(1, 3)
commits = st.sampled_from(["each", "group"])


class ProtocolMachine(RuleBasedStateMachine):
    """The protocol against the reference model (see the module documentation)."""

    #: switches of :data:`KNOWN_UNFIXED` that are on (a subclass sets its own)
    enabled: frozenset[str] = ENABLED_BY_DEFAULT

    def __init__(self) -> None:
        super().__init__()
        # in memory where there is a tmpfs: the store's files need no disk here
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.dir = tempfile.mkdtemp(prefix="fae-model-", dir=shm)
        self.db = os.path.join(self.dir, "actions.db")
        self.fx = Effects()
        self.reader = SQLiteStore(self.db)
        self.logs: list[list[tuple[int, Any]]] = []
        self.next_u = 0
        self.snaps: list[Snap] = []
        self.jobs = 0
        # lineage -> encoded key -> runs covered by the prune point / runs ever started
        self.cov: list[dict[str, int]] = []
        self.started: list[dict[str, int]] = []
        self.h: Optional[KeyedFunctionHarness] = None
        self.mode = "thread"
        self.job: Job = Job(0, 1, "each", 0, False)
        self.lin = 0
        self.offset = 0
        self.base_outputs: list[Any] = []
        self.path: tuple[int, ...] = ()
        self.window: list[Snap] = []  # checkpoints notified to this attempt (and its base)
        self.blocked_u: Optional[int] = None
        self.key_of: dict[int, Any] = {}
        self.completed_uids: set[int] = set()

    # -- jobs ---------------------------------------------------------------------------
    def _function(self, job: Job) -> DurableAgentFunction:
        return DurableAgentFunction(
            make_agent(self.fx), {"backend": "sqlite", "path": self.db, "commit": job.commit},
            NAMESPACE, retention=job.retention, allow_reexecution=job.allow_reexecution,
            max_in_flight=job.max_in_flight, poll_interval_ms=1, close_timeout_s=0.05)

    def _new_job(self, retention: int, commit: str, max_in_flight: int,
                 allow_reexecution: bool, base: Optional[Snap]) -> Job:
        self.jobs += 1
        if "retention_change" not in self.enabled and self.jobs > 1 and retention == 1:
            retention = self.job.retention
        return Job(self.jobs, retention, commit, max_in_flight, allow_reexecution, base)

    def _start_fresh(self, job: Job, new_lineage: bool) -> None:
        """Start ``job``'s attempt without a restore (a fresh job, or a restart before any
        checkpoint completed)."""
        if new_lineage:
            self.logs.append([])
            self.cov.append({})
            self.started.append({})
            self.lin = len(self.logs) - 1
        self.job, self.offset, self.base_outputs, self.path = job, 0, [], ()
        self.window, self.blocked_u = [], None
        self.h = KeyedFunctionHarness(self._function(job), job_id=job.job_id,
                                      attempt=job.attempt, mode=self.mode)

    def _start_restored(self, job: Job, snap: Snap) -> None:
        fn = self._function(job)
        old = self.h
        assert old is not None
        try:
            same = job is self.job
            self.h = old.restore(snap.hs, fn, job_id=None if same else job.job_id,
                                 attempt=job.attempt)
        except BaseException:
            fn.close()
            raise
        self.job, self.lin, self.offset = job, snap.lineage, snap.offset
        self.base_outputs, self.path = list(snap.outputs), snap.path
        self.window, self.blocked_u = [snap], None
        cov = self.cov[self.lin]
        for key in list(cov):
            cov[key] = min(cov[key], snap.completed.get(key, 0))
        self._advance_cov()

    def _stop(self) -> None:
        if self.blocked_u is not None:
            self.fx.orphaned.add(self.blocked_u)
        if self.h is not None:
            self.h.close()

    @initialize(retention=retentions, commit=commits, max_in_flight=st.sampled_from([0, 2]),
                allow_reexecution=st.booleans(), mode=st.sampled_from(["thread", "process"]))
    def start(self, retention: int, commit: str, max_in_flight: int,
              allow_reexecution: bool, mode: str = "thread") -> None:
        self.mode = mode  # the operator modelled: who keeps resume timers, drains at the end
        self._start_fresh(self._new_job(retention, commit, max_in_flight, allow_reexecution,
                                        None), new_lineage=True)

    # -- inputs -------------------------------------------------------------------------
    def _timeline_outputs(self) -> list[Any]:
        assert self.h is not None
        return self.base_outputs + self.h.outputs

    def _completed_per_key(self) -> dict[str, int]:
        done: Counter[str] = Counter()
        for out in self._timeline_outputs():
            done[encode_key(self.key_of[out["u"]])] += 1
        return dict(done)

    def _fed_per_key(self) -> dict[str, list[int]]:
        fed: dict[str, list[int]] = {}
        for u, key in self.logs[self.lin][:self.offset]:
            fed.setdefault(encode_key(key), []).append(u)
        return fed

    @rule(key=st.sampled_from(KEYS), block=st.booleans())
    def input(self, key: Any, block: bool) -> None:
        """The source's next record: a replayed one after a restore, else a new one."""
        assert self.h is not None
        log = self.logs[self.lin]
        if self.offset < len(log):
            u, key = log[self.offset]
            block = False
        else:
            u = self.next_u
            self.next_u += 1
            log.append((u, key))
            self.key_of[u] = key
            enc = encode_key(key)
            idle = self._completed_per_key().get(enc, 0) == len(
                self._fed_per_key().get(enc, []))
            block = block and bool(self.job.max_in_flight) and self.blocked_u is None and idle
            if block:
                self.fx.blocked[u] = threading.Event()
                self.fx.entered[u] = threading.Event()
        self.offset += 1
        enc = encode_key(key)
        fed = len(self._fed_per_key()[enc])
        started = self.started[self.lin]
        started[enc] = max(started.get(enc, 0), fed)
        self.h.process_element({"u": u}, key)
        if block:
            assert self.fx.entered[u].wait(10), f"the run of u={u} never started its call"
            self.blocked_u = u
        self._settle()

    @precondition(lambda self: self.blocked_u is not None or any(
        not e.is_set() for e in self.fx.blocked.values()))
    @rule()
    def release(self) -> None:
        """The slow call returns (in whichever attempt it runs)."""
        self.fx.release_all()
        self.blocked_u = None
        self._settle()

    def _settle(self) -> None:
        """Concurrent mode: let every run that can finish be applied (timers fire)."""
        if not self.job.max_in_flight:
            return
        assert self.h is not None
        deadline = time.monotonic() + 20
        while True:
            done = self._completed_per_key()
            want = {}
            for enc, us in self._fed_per_key().items():
                want[enc] = us.index(self.blocked_u) if self.blocked_u in us else len(us)
            if all(done.get(enc, 0) >= n for enc, n in want.items()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"runs not applied within 20 s: done {done}, "
                                     f"expected {want}")
            time.sleep(0.001)
            self.h.advance_processing_time(self.h.processing_time + 5)

    # -- checkpoints --------------------------------------------------------------------
    def _take(self, savepoint: bool) -> Snap:
        assert self.h is not None
        self.h.function.store.flush()  # as the snapshot does first: group commit's puts
        before = self._size()           # are counted before, not during the snapshot
        hs = self.h.snapshot()
        assert self._size() >= before, "records were pruned at a snapshot"
        uid = len(self.snaps)
        snap = Snap(uid, hs, self.lin, self.offset, self._timeline_outputs(),
                    (*self.path, uid), self.job.number, savepoint,
                    self._completed_per_key(), self.job.max_in_flight)
        self.snaps.append(snap)
        self.path = snap.path
        return snap

    @rule()
    def snapshot(self) -> None:
        """A checkpoint is taken (pending until completed or aborted)."""
        self.job.pending.append(self._take(savepoint=False))

    @precondition(lambda self: "older_restore" in self.enabled)
    @rule()
    def savepoint(self) -> None:
        """An intermediate savepoint: taken and kept, never notified."""
        self._take(savepoint=True)

    @rule(notify=st.booleans())
    def checkpoint(self, notify: bool) -> None:
        """A checkpoint is taken and completes at once (one at a time, Flink's default)."""
        self.snapshot()
        self.complete(-1, notify)

    @precondition(lambda self: self.job.pending)
    @rule(i=st.integers(0, 3), notify=st.booleans())
    def complete(self, i: int, notify: bool) -> None:
        """A pending checkpoint completes (older pending ones are subsumed); its
        notification may be lost."""
        assert self.h is not None
        pending = self.job.pending
        snap = pending[i % len(pending)]
        self.job.pending = [s for s in pending if s.hs.checkpoint_id > snap.hs.checkpoint_id]
        self.job.completed.append(snap)
        self.completed_uids.add(snap.uid)
        if notify:
            self.h.notify_complete(snap.hs.checkpoint_id)
            if not self.window or snap.hs.checkpoint_id > self.window[-1].hs.checkpoint_id:
                self.window.append(snap)
            self._advance_cov()

    def _advance_cov(self) -> None:
        """The prune point: the oldest notified checkpoint the retention still needs."""
        if len(self.window) < self.job.retention:
            return
        point = self.window[-self.job.retention]
        cov = self.cov[point.lineage]
        for enc, n in point.completed.items():
            cov[enc] = max(cov.get(enc, 0), n)

    @precondition(lambda self: self.job.pending)
    @rule(i=st.integers(0, 3), notify=st.booleans())
    def abort(self, i: int, notify: bool) -> None:
        """A pending checkpoint is aborted; the notification may not come."""
        assert self.h is not None
        snap = self.job.pending.pop(i % len(self.job.pending))
        if notify:
            before = self._size()
            self.h.notify_abort(snap.hs.checkpoint_id)
            assert self._size() >= before, "records were pruned at an abort"

    # -- failures and new jobs ----------------------------------------------------------
    def failover(self, i: int, retention: int, commit: str, allow_reexecution: bool) -> None:
        """The task fails; Flink restarts the job from its latest completed checkpoint."""
        self._stop()
        self._failover()

    def _failover(self) -> None:
        job = self.job
        job.attempt += 1
        job.pending = []
        retained = job.retained()
        if retained:
            self._start_restored(job, retained[-1])
        else:
            self._start_fresh(job, new_lineage=False)

    def _targets(self) -> list[Snap]:
        """What a new job may be resumed from: any completed checkpoint or savepoint of
        any job (only the latest retained one while ``older_restore`` is off; only those
        Flink retains for the current job while ``refused_restore`` is off)."""
        if "older_restore" not in self.enabled:
            return self.job.retained()[-1:]
        targets = [s for s in self.snaps if s.savepoint or s.uid in self.completed_uids]
        if "refused_restore" not in self.enabled:
            targets = [s for s in targets if self._must_restore(s)]
        return targets

    def _must_restore(self, snap: Snap) -> bool:
        """Flink still retains ``snap`` for the current job: a restore must succeed."""
        retained = self.job.retained()
        if any(snap is r for r in retained):
            return True
        if not snap.savepoint or snap.uid not in self.path:
            return False
        return not retained or self.path.index(snap.uid) >= self.path.index(retained[0].uid)

    def resume(self, i: int, retention: int, commit: str, allow_reexecution: bool) -> None:
        """The job stops; a new job is resumed from a retained checkpoint or a savepoint
        (``flink run -s``), possibly with another retention or commit mode."""
        targets = [s for s in self._targets() if s.max_in_flight == self.job.max_in_flight]
        if not targets:
            return
        snap = targets[i % len(targets)]
        must = self._must_restore(snap)
        previous = self.job
        self._stop()
        job = self._new_job(retention, commit, previous.max_in_flight, allow_reexecution,
                            snap)
        try:
            self._start_restored(job, snap)
        except FlinkAgentsExtError as exc:
            if must:
                raise AssertionError(f"the restore from {snap!r}, which Flink retains, was "
                                     f"refused: {exc}") from exc
            self.job = previous  # refused: the previous job restarts
            self._failover()
            return
        if not must and allow_reexecution:
            # every run not completed at the snapshot (also those in flight then)
            seen: Counter[str] = Counter()
            for u, key in self.logs[snap.lineage]:
                seen[encode_key(key)] += 1
                if seen[encode_key(key)] > snap.completed.get(encode_key(key), 0):
                    self.fx.reexecution_allowed.add(u)

    def stop_with_savepoint(self, i: int, retention: int, commit: str,
                            allow_reexecution: bool) -> None:
        """``flink stop --savepointPath``, then a new job resumed from that savepoint."""
        assert self.h is not None
        snap = self._take(savepoint=True)
        self.h.notify_complete(snap.hs.checkpoint_id)  # a stop's savepoint is notified
        self.window.append(snap)
        self._advance_cov()
        previous = self.job
        self._stop()
        self._start_restored(self._new_job(retention, commit, previous.max_in_flight,
                                           allow_reexecution, snap), snap)

    def fresh_start(self, i: int, retention: int, commit: str,
                    allow_reexecution: bool) -> None:
        """The job stops; a new job starts on the same namespace without restoring (a
        redeploy), reading new inputs."""
        previous = self.job
        self._stop()
        self._start_fresh(self._new_job(retention, commit, previous.max_in_flight,
                                        allow_reexecution, None), new_lineage=True)

    # -- invariants ---------------------------------------------------------------------
    def _size(self) -> int:
        return self.reader.size(NAMESPACE)

    @invariant()
    def no_call_ran_twice(self) -> None:
        assert not self.fx.violations, self.fx.violations

    @invariant()
    def outputs_equal_a_failure_free_run(self) -> None:
        if self.h is None:
            return
        assert not self.h.side_outputs, f"dead letters: {self.h.side_outputs}"
        got: dict[str, list[Any]] = {}
        for out in self._timeline_outputs():
            got.setdefault(encode_key(self.key_of.get(out.get("u"), "?")), []).append(out)
        want: dict[str, list[Any]] = {}
        for u, key in self.logs[self.lin][:self.offset]:
            outs = want.setdefault(encode_key(key), [])
            outs.append(expected_output(u, len(outs) + 1))
        for enc, outs in got.items():
            assert outs == want.get(enc, [])[:len(outs)], (
                f"key {enc}: outputs {outs} != failure-free {want.get(enc)}")
        if not self.job.max_in_flight:
            assert self._timeline_outputs() == [
                expected_output(u, n) for u, n in self._counts()], "outputs out of order"

    def _counts(self) -> list[tuple[int, int]]:
        seen: Counter[str] = Counter()
        result = []
        for u, key in self.logs[self.lin][:self.offset]:
            seen[encode_key(key)] += 1
            result.append((u, seen[encode_key(key)]))
        return result

    @invariant()
    def store_is_bounded(self) -> None:
        uncovered = sum(n - cov.get(enc, 0) for cov, started in zip(self.cov, self.started)
                        for enc, n in started.items())
        size = self._size()
        assert size <= RECORDS_PER_RUN * uncovered, (
            f"{size} records in the store, but only {uncovered} runs are not covered by "
            f"a completed checkpoint the retention no longer needs")

    def teardown(self) -> None:
        self.fx.release_all()
        try:
            if self.h is not None:
                self.h.close()
        finally:
            self.reader.close()
            shutil.rmtree(self.dir, ignore_errors=True)


RESTARTS = ("failover", "resume", "stop_with_savepoint", "fresh_start")


def machine(enabled: frozenset[str]) -> type[ProtocolMachine]:
    """:class:`ProtocolMachine` with the switches ``enabled`` on. Its one rule for every
    kind of restart (:data:`RESTARTS`; ``fresh_start`` only when switched on) keeps
    restarts as likely as any other step, so that the runs between them get long."""
    kinds = [k for k in RESTARTS if k != "fresh_start" or "fresh_start" in enabled]

    class Configured(ProtocolMachine):
        @rule(kind=st.sampled_from(kinds), i=st.integers(0, 7), retention=retentions,
              commit=commits, allow_reexecution=st.booleans())
        def restart(self, kind: str, i: int, retention: int, commit: str,
                    allow_reexecution: bool) -> None:
            """The job fails or stops, and a job runs again (see :data:`RESTARTS`)."""
            getattr(self, kind)(i, retention, commit, allow_reexecution)

    Configured.enabled = enabled
    Configured.__name__ = Configured.__qualname__ = "ProtocolMachine"
    return Configured
