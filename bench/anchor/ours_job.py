"""Our side of the anchor benchmark: the agent on ``flink_agents_ext`` (thread mode,
checkpoints every second, durable calls journaled in the store given by ``--store``).

The agent, the same as the anchor's (``bench/anchor/anchor_job.py``): one action on the input
``(key, i)``; it makes one durable call and emits ``(i, result)``.

* ``--case trivial``: the call is a SHA-256 of the input (about a microsecond), inline;
* ``--case slow``: the call sleeps ``--call-s`` seconds (a simulated model call); up to
  ``--max-in-flight`` runs execute at once (a pool of that many threads);
* ``--fail-at N``: the action raises once on input ``N`` (``RetryableActionError``: the task
  fails, Flink restarts it from the last checkpoint and the run is replayed).

Every output goes through :class:`bench.anchor.probe.OutputProbe`; the probe file
(``--probe``) gets the times the orchestrator turns into rates and recovery times.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from typing import Any

from pyflink.common import Types

from bench.anchor.job_common import Probe, job_configuration
from bench.anchor.probe import FailOnce, mark_input
from bench.common import keyed_numbers
from flink_agents_ext import process_with_checkpoints
from flink_agents_ext.actions import (
    INPUT,
    ActionContext,
    Agent,
    DurableAgentFunction,
    RetryableActionError,
)


def trivial_call(i: int) -> str:
    """The trivial durable call: a SHA-256 of the input (the anchor's is the same)."""
    return hashlib.sha256(f"ticket-{i}".encode()).hexdigest()[:16]


def slow_call(i: int, seconds: float) -> str:
    """The simulated slow call: sleeps ``seconds`` (the anchor's is the same)."""
    time.sleep(seconds)
    return f"answer-{i}"


def build_agent(case: str, probe: str, fail_at: int, call_s: float) -> Agent:
    """The benchmark agent: one action, one durable call, one output."""
    agent = Agent("anchor-bench")
    fail = FailOnce(probe, fail_at)

    @agent.action(on=INPUT)
    def act(event: Any, ctx: ActionContext) -> None:
        mark_input(probe)
        i = event[1]
        try:
            fail.check(i)
        except RuntimeError as exc:
            raise RetryableActionError(str(exc)) from exc
        if case == "slow":
            result = ctx.durable_execute(slow_call, i, call_s)
        else:
            result = ctx.durable_execute(trivial_call, i)
        ctx.emit((i, result))

    return agent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=["trivial", "slow"], required=True)
    p.add_argument("--store", required=True, help="store configuration (JSON)")
    p.add_argument("--namespace", default="anchor-bench")
    p.add_argument("--n", type=int, required=True, help="inputs")
    p.add_argument("--keys", type=int, required=True)
    p.add_argument("--call-s", type=float, default=1.0)
    p.add_argument("--max-in-flight", type=int, default=0)
    p.add_argument("--fail-at", type=int, default=0)
    p.add_argument("--probe", required=True)
    p.add_argument("--stats", help="write the function's counters here at close (JSON)")
    args = p.parse_args()

    env, keyed = keyed_numbers(job_configuration(), "thread", args.n, args.keys)
    agent = build_agent(args.case, args.probe, args.fail_at, args.call_s)
    fn = StatsOnClose(agent, json.loads(args.store), args.namespace,
                      max_in_flight=args.max_in_flight, on_action_error="fail",
                      stats_path=args.stats)
    out = process_with_checkpoints(keyed, fn, Types.TUPLE([Types.LONG(), Types.STRING()]),
                                   name="agent", uid="agent")
    out.map(Probe(args.probe, args.fail_at), Types.LONG())
    env.execute(f"anchor-bench-ours-{args.case}")


class StatsOnClose(DurableAgentFunction):
    """The durable function, writing its counters (``stats()``) to a file when it closes."""

    def __init__(self, *args: Any, stats_path: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stats_path = stats_path

    def close(self) -> None:
        if self.stats_path:
            with open(self.stats_path, "a") as fh:
                fh.write(json.dumps(self.stats()) + "\n")
        super().close()


if __name__ == "__main__":
    main()
