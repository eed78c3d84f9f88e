"""One run of the scale benchmark: ``--in-flight`` runs in flight, each one durable call that
takes ``--call-ms`` (``time.sleep``, or ``asyncio.sleep`` in an ``async def`` action with
``--async``); thread mode, SQLite (``--commit``, default group), checkpoints every
``--interval`` ms.

Writes one JSON line to ``--result``: runs applied, the steady-state window (first to last
run applied), the process CPU seconds and peak RSS of the process running the function
(thread mode: the Flink JVM with its embedded Python), and per checkpoint the runs in flight
at its snapshot and its end-to-end duration (from the mini-cluster's REST API).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import tempfile
import threading
import time
from typing import Any, Iterator

from pyflink.common import Configuration, Types

from bench.common import keyed_numbers, sample_stacks
from flink_agents_ext import process_with_checkpoints
from flink_agents_ext.actions import INPUT, ActionContext, Agent, DurableAgentFunction
from flink_agents_ext.actions.gc_tuning import DEFAULT_GC_THRESHOLD
from flink_agents_ext.checkpoint import SnapshotContext
from scripts.jobrun import watch_completed_checkpoints


def model_call(i: int, seconds: float) -> int:
    time.sleep(seconds)
    return i


async def model_call_async(i: int, seconds: float) -> int:
    await asyncio.sleep(seconds)
    return i


def agent(call_s: float, use_async: bool) -> Agent:
    a = Agent("scale")
    if use_async:
        @a.action(on=INPUT)
        async def act_async(event: Any, ctx: ActionContext) -> None:
            ctx.emit(await ctx.durable_execute_async(model_call_async, event[1], call_s))
    else:
        @a.action(on=INPUT)
        def act(event: Any, ctx: ActionContext) -> None:
            ctx.emit(ctx.durable_execute(model_call, event[1], call_s))
    return a


class Measured(DurableAgentFunction):
    """Counts applied runs, CPU and RSS; records the runs in flight at each snapshot."""

    def __init__(self, *args: Any, result: str, profile: str = "", switch_ms: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.result = result
        self.profile = profile
        self.switch_ms = switch_ms

    def open(self, runtime_context: Any) -> None:
        super().open(runtime_context)
        if self.switch_ms:
            import sys
            sys.setswitchinterval(self.switch_ms / 1000)
        self.done = 0
        self.first_in = self.first_out = self.last_out = 0.0
        self.cpu_start = 0.0
        self.in_flight_at: dict[int, int] = {}
        self.snapshot_ms: dict[int, float] = {}
        self.stop_profile = threading.Event()
        if self.profile:
            threading.Thread(target=sample_stacks, args=(self.profile, self.stop_profile),
                             daemon=True).start()

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        if not self.first_in:
            self.first_in = time.perf_counter()
            self.cpu_start = time.process_time()
        yield from self._count(super().process_element(value, ctx))

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        yield from self._count(super().on_timer(timestamp, ctx))

    def _count(self, outputs: Iterator[Any]) -> Iterator[Any]:
        for out in outputs:
            self.done += 1
            self.last_out = time.perf_counter()
            if not self.first_out:
                self.first_out = self.last_out
            yield out

    def snapshot_state(self, context: SnapshotContext) -> Any:
        started = time.perf_counter()
        self.in_flight_at[context.checkpoint_id] = len(self.runs.runs_in_flight())
        payload = super().snapshot_state(context)
        self.snapshot_ms[context.checkpoint_id] = (time.perf_counter() - started) * 1000
        return payload

    def close(self) -> None:
        self.stop_profile.set()
        cpu = time.process_time() - self.cpu_start
        with open(self.result, "a") as fh:
            fh.write(json.dumps({
                "records": self.done, "seconds": self.last_out - self.first_out,
                "total_seconds": self.last_out - self.first_in, "cpu_s": cpu,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "in_flight_at": self.in_flight_at, "snapshot_ms": self.snapshot_ms}) + "\n")
        super().close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--in-flight", type=int, required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--keys", type=int, default=20000)
    p.add_argument("--call-ms", type=float, default=1000)
    p.add_argument("--async", dest="use_async", action="store_true")
    p.add_argument("--interval", type=int, default=1000)
    p.add_argument("--commit", default="group", choices=["each", "group"])
    p.add_argument("--debloat", action="store_true", help="buffer debloating, 200 ms target")
    p.add_argument("--unaligned", action="store_true", help="unaligned checkpoints")
    p.add_argument("--switch-ms", type=float, default=0.0,
                   help="sys.setswitchinterval in the function's interpreter (0: default)")
    p.add_argument("--rest-port", type=int, required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--profile", default="", help="write sampled stacks to this file")
    p.add_argument("--no-gc-tuning", action="store_true",
                   help="gc_threshold=None (the collector's defaults)")
    args = p.parse_args()
    conf = Configuration()
    conf.set_string("rest.port", str(args.rest_port))
    if args.debloat:
        # Buffers hold ~200 ms of input: aligned barriers do not queue behind seconds of
        # records waiting for a free slot (README: slow checkpoints under backpressure).
        conf.set_string("taskmanager.network.memory.buffer-debloat.enabled", "true")
        conf.set_string("taskmanager.network.memory.buffer-debloat.target", "200 ms")
    if args.unaligned:
        # Barriers overtake the buffered input, which goes into the checkpoint as channel state.
        conf.set_string("execution.checkpointing.unaligned.enabled", "true")
    env, keyed = keyed_numbers(conf, "thread", args.n, args.keys, interval_ms=args.interval,
                               string_keys=True)
    db = os.path.join(tempfile.mkdtemp(prefix="fae-scale-"), "a.db")
    fn = Measured(agent(args.call_ms / 1000, args.use_async),
                  {"backend": "sqlite", "path": db, "commit": args.commit}, "scale",
                  max_in_flight=args.in_flight, result=args.result, profile=args.profile,
                  switch_ms=args.switch_ms,
                  gc_threshold=None if args.no_gc_tuning else DEFAULT_GC_THRESHOLD)
    process_with_checkpoints(keyed, fn, Types.LONG())
    client = env.execute_async("scale-bench")
    stats: dict[int, dict[str, Any]] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=watch_completed_checkpoints, daemon=True, args=(
        args.rest_port, str(client.get_job_id()), stats, stop, 0.5))
    watcher.start()
    client.get_job_execution_result().result()
    stop.set()
    watcher.join()
    with open(args.result, "a") as fh:
        fh.write(json.dumps({"checkpoint_ms": {cid: float(cp["end_to_end_duration"])
                                               for cid, cp in stats.items()}}) + "\n")


if __name__ == "__main__":
    main()
