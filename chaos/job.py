"""The main job with the fault-injection hooks of :mod:`chaos.inject` (what ``make chaos``
runs, on the mini-cluster or submitted to a standalone cluster):

    python -m chaos.job --config F [--spec SPEC] [--bad-input] [--max-in-flight N]
                        [--parallelism P] [--mode thread|process] [--from-savepoint SP]
                        [--keep-namespace] [--summary-json FILE] [--other-tickets]
                        [--stop-after-calls N]

``--spec`` is a :class:`chaos.inject.ChaosSpec` (``none`` for none); ``--bad-input`` turns
the tickets of :mod:`chaos.inputs` bad inside the agent. Everything before the agent runs
with parallelism 1, so that each key's tickets arrive in the same order in every run,
whatever the agent's parallelism. A fresh run (no ``--from-savepoint``) empties the outputs
and, unless ``--keep-namespace``, the store namespace (``--keep-namespace``: a fresh start on
the namespace of an earlier job, as a careless redeploy would do). ``--other-tickets``:
the generated tickets have other texts (:func:`chaos.inputs.other_ticket`: the earlier job of
a fresh start on a used namespace). ``--stop-after-calls N``: stop the job with a savepoint
(in ``<output>/savepoints``) once N durable calls ran; prints ``SAVEPOINT <path>``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Callable

from pyflink.datastream import DataStream, KeyedStream

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from chaos import inject
from chaos.inputs import other_ticket
from flink_agents_ext import stop_with_savepoint
from jobs import support_triage as triage
from jobs.triage_summary import LEDGER

#: Longest wait for the calls a stop with a savepoint waits for (seconds).
STOP_WAIT_S = 180
#: How long the stop with a savepoint is asked again (1 s apart) while Flink declines it
#: because a task is not ready: a job that failed over in between (a Python worker lost on
#: a loaded machine) restarts its tasks first, which took more than 10 s under load 29.
STOP_RETRY_S = 120
#: Why Flink declines a stop with a savepoint that a later attempt may pass (see
#: :func:`stop_midway`); any other ``CheckpointException`` too, while the job runs.
DECLINED = ("not ready", "Task local checkpoint failure", "task is closing",
            "Not all required tasks are currently running", "CheckpointException")
#: Pacing of the generated tickets until a checkpoint failure fired (see
#: :meth:`ChaosVariant.ticket_generator`): after this many tickets, this much more per
#: ticket, at most this much in all (seconds).
PACE_AFTER, PACE_S, PACE_MAX_S = 50, 0.05, 60.0
#: Python bundles of a process-mode chaos job: elements, milliseconds (see
#: :meth:`ChaosVariant.configure`).
BUNDLE_SIZE, BUNDLE_TIME_MS = 50, 200


class ChaosVariant(triage.Variant):
    """The main job instrumented by :class:`chaos.inject.ChaosHooks`."""

    upstream_parallelism = 1

    def __init__(self, hooks: inject.ChaosHooks, max_in_flight: int = 0,
                 other_tickets: bool = False) -> None:
        self.hooks = hooks
        self.max_in_flight = max_in_flight
        self.other_tickets = other_tickets

    def ticket_generator(self) -> Callable[[int], str]:
        """The generated tickets, or other ones (``--other-tickets``). With a failure at a
        checkpoint (``snapshot``, ``notify``), tickets after the first
        :data:`PACE_AFTER` come slower until it fired (at most :data:`PACE_MAX_S` in all),
        so that the input lasts for the checkpoint it waits for also on a loaded machine
        (barriers pass between tickets; a sleep inside one would hold them)."""
        make = other_ticket if self.other_tickets else triage.generated_ticket
        if self.hooks.spec.point not in ("snapshot", "notify"):
            return make
        marker = os.path.join(self.hooks.out_dir, inject.MARKER)
        waited = [0.0]

        def paced(n: int) -> str:
            if n > PACE_AFTER and waited[0] < PACE_MAX_S and not os.path.exists(marker):
                time.sleep(PACE_S)
                waited[0] += PACE_S
            return make(n)

        return paced

    def key_by(self, parsed: DataStream) -> KeyedStream:
        """Keys are pickled here (no key type), so that an unencodable one reaches the agent."""
        return parsed.key_by(self.hooks.key_selector())

    def instrument(self, agent: Any, function_cls: type, store: Any) -> tuple[Any, type, Any]:
        """The agent, function class and store wrapped with the failure hooks."""
        return self.hooks.instrument(agent, function_cls, store)

    def function_options(self) -> dict[str, Any]:
        """``max_in_flight`` of the trial."""
        return {"max_in_flight": self.max_in_flight}

    def configure(self, env: Any) -> None:
        """Smaller Python bundles (process mode): a checkpoint barrier waits for the bundle
        before it, and the default 1000-element bundles would hold the whole input of a
        trial, so that a loaded machine completed too few checkpoints for a failure at the
        K-th snapshot or notification (and a savepoint came only at the end). Not too small:
        with 5-element / 20 ms bundles the upstream Python operators flush nearly all the
        time, the window of the PyFlink process-mode failover race (README, Known issues:
        a failover cancels an operator while its asynchronous flush closes a bundle), and
        every bundle costs CPU; 50 / 200 ms still gives checkpoints (every 250 ms) fresh
        elements."""
        from pyflink.util.java_utils import get_j_env_configuration

        conf = get_j_env_configuration(env._j_stream_execution_environment)
        conf.setString("python.fn-execution.bundle.size", str(BUNDLE_SIZE))
        conf.setString("python.fn-execution.bundle.time", str(BUNDLE_TIME_MS))


def main(argv: list[str] | None = None) -> int:
    """Run the instrumented job; print progress and the summary."""
    p = triage.arguments(__doc__ or "")
    p.add_argument("--spec", default="none",
                   help="inject one failure: none or POINT:TARGET:TRIGGER (chaos/inject.py)")
    p.add_argument("--bad-input", action="store_true",
                   help="tickets with a 'chaos' field turn bad in the agent (chaos/inputs.py)")
    p.add_argument("--max-in-flight", type=int, default=0, help="runs in flight per subtask")
    p.add_argument("--keep-namespace", action="store_true",
                   help="a fresh run that does not empty the store namespace first")
    p.add_argument("--other-tickets", action="store_true",
                   help="generate other tickets (same ids and customers, other texts)")
    p.add_argument("--stop-after-calls", type=int, default=0,
                   help="stop with a savepoint once this many durable calls ran")
    args = p.parse_args(argv)
    try:
        inject.ChaosSpec.parse(args.spec)
    except ValueError as exc:
        p.error(str(exc))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = triage.load(args)
    out_dir = os.path.abspath(cfg.output_dir)
    if not args.from_savepoint:
        triage.prepare_outputs(cfg, out_dir, files=inject.OUTPUT_FILES,
                               clear_namespace=not args.keep_namespace)
    hooks = inject.ChaosHooks(args.spec, args.bad_input, out_dir, triage.page_oncall,
                              triage.page_id)
    variant = ChaosVariant(hooks, args.max_in_flight, args.other_tickets)
    if args.stop_after_calls:
        return stop_midway(cfg, out_dir, variant, args.stop_after_calls, args.from_savepoint)
    return triage.run(cfg, out_dir, savepoint=args.from_savepoint, variant=variant,
                      summary_json=args.summary_json,
                      note=f", chaos {args.spec}, max_in_flight {args.max_in_flight}")


def stop_midway(cfg: Any, out_dir: str, variant: ChaosVariant, calls: int,
                savepoint: str = "") -> int:
    """Run the job until ``calls`` durable calls ran, then stop it with a savepoint in
    ``<out_dir>/savepoints``; print ``SAVEPOINT <path>``. Exit status 3 when the job ended
    (or the wait timed out) first."""
    env = triage.make_env(cfg, savepoint or None)
    triage.build(env, cfg, out_dir, 0, variant)
    client = env.execute_async(cfg.name)
    outcome = client.get_job_execution_result()
    ledger = os.path.join(out_dir, LEDGER)
    deadline = time.monotonic() + STOP_WAIT_S
    while True:
        ran = sum(1 for _ in open(ledger)) if os.path.exists(ledger) else 0
        if ran >= calls:
            break
        if outcome.done() or time.monotonic() > deadline:
            print(f"the job {'ended' if outcome.done() else 'was still short'} before "
                  f"{calls} durable calls ran ({ran})", file=sys.stderr, flush=True)
            return 3
        time.sleep(0.05)
    target = "file://" + os.path.join(out_dir, "savepoints")
    retry_until = time.monotonic() + STOP_RETRY_S
    attempt = 0
    while True:
        attempt += 1
        try:
            path = stop_with_savepoint(client, target)
            break
        except Exception as exc:  # py4j wraps Flink's CheckpointException
            # A savepoint is declined while a task is not running yet ("tasks not ready",
            # reported as a task local checkpoint failure) or while the bounded file source
            # closes ("task is closing"; both seen on a loaded machine); a declined stop
            # fails the job over (a global failure), and until it runs again the next one
            # is refused ("Not all required tasks are currently running", or "Checkpoint
            # needs at least one vertex that commits the checkpoint"): ask again.
            why = next((w for w in DECLINED if w in str(exc)), "")
            if time.monotonic() > retry_until or outcome.done() or not why:
                raise
            print(f"stop with a savepoint declined ({why}), attempt {attempt}",
                  file=sys.stderr, flush=True)
            time.sleep(1)
    print(f"SAVEPOINT {path} after {ran} calls", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
