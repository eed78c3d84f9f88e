"""A probe job for the checkpoint-bridge tests: logs every event it sees to a file.

Each function instance (one per subtask and attempt) writes JSON lines, in the order it saw
them, to ``<out>/events-<instance>.jsonl``:

* ``{"ev": "open", "inst": ...}``
* ``{"ev": "el", "key": k, "count": c, "i": i}``: element ``i`` of key ``k``; ``c`` is the
  key's count after it (the count before is ``c - 1``; after a restore it must continue from
  the restored checkpoint's value).
* ``{"ev": "timer", "key": k, "count": c}``: a user timer fired.
* ``{"ev": "snap", "cp": n, "changed": {k: count}}``: snapshot callback.
* ``{"ev": "complete", "cp": n, "payloads": [[id, payload], ...]}``
* ``{"ev": "abort", "cp": n, "payloads": [...]}``
* ``{"ev": "slow-snap", "cp": n}``: this snapshot is made slower than the checkpoint timeout.
* ``{"ev": "fail", "i": i}``: the injected failure (first attempt only).
* ``{"ev": "restore", "cp": n, "payloads": [[id, payload], ...]}``
* ``{"ev": "close"}``

Run: ``python -m tests.jobs.bridge_probe --out DIR --mode thread --n 4000 ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from typing import Any, Sequence

from pyflink.common import Configuration, Types, WatermarkStrategy
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.connectors.number_seq import NumberSequenceSource
from pyflink.datastream.state import ValueStateDescriptor

from flink_agents_ext import (
    CheckpointedKeyedProcessFunction,
    CheckpointPayload,
    JobTimeline,
    SnapshotContext,
    configure_environment,
    process_with_checkpoints,
)
from tests.jobs.lines import LineWriter


class ProbeFunction(CheckpointedKeyedProcessFunction):
    """Counts elements per key and logs every callback."""

    def __init__(self, out_dir: str, fail_at: int, slow_snapshot_at: int,
                 slow_snapshot_s: float, timer_every: int) -> None:
        self.out_dir = out_dir
        self.fail_at = fail_at
        self.slow_snapshot_at = slow_snapshot_at
        self.slow_snapshot_s = slow_snapshot_s
        self.timer_every = timer_every

    def open(self, runtime_context: Any) -> None:
        self.count = runtime_context.get_state(ValueStateDescriptor("count", Types.LONG()))
        self.inst = uuid.uuid4().hex[:12]
        self.file = open(os.path.join(self.out_dir, f"events-{self.inst}.jsonl"), "a")
        self._log({"ev": "open"})

    def _log(self, event: dict) -> None:
        event["inst"] = self.inst
        self.file.write(json.dumps(event) + "\n")
        self.file.flush()

    def process_element(self, value: Any, ctx: Any):  # type: ignore[no-untyped-def]
        key, i = value
        if self.fail_at >= 0 and i == self.fail_at:
            marker = os.path.join(self.out_dir, "failed-once")
            if not os.path.exists(marker):
                open(marker, "w").close()
                self._log({"ev": "fail", "i": i})
                raise RuntimeError(f"injected failure at element {i}")
        c = (self.count.value() or 0) + 1
        self.count.update(c)
        self._log({"ev": "el", "key": key, "count": c, "i": i})
        if self.timer_every and c % self.timer_every == 0:
            ctx.timer_service().register_processing_time_timer(
                ctx.timer_service().current_processing_time())
        yield f"{key}:{c}"

    def on_timer(self, timestamp: int, ctx: Any):  # type: ignore[no-untyped-def]
        key = ctx.get_current_key()
        c = (self.count.value() or 0) + 1000
        self.count.update(c)
        self._log({"ev": "timer", "key": key, "count": c})
        yield f"{key}:timer:{c}"

    def snapshot_state(self, context: SnapshotContext) -> Any:
        if context.checkpoint_id == self.slow_snapshot_at:
            # Longer than the checkpoint timeout: Flink expires (aborts) this checkpoint.
            self._log({"ev": "slow-snap", "cp": context.checkpoint_id})
            time.sleep(self.slow_snapshot_s)
        changed = {str(k): self.count.value() for k in context.changed_keys()}
        self._log({"ev": "snap", "cp": context.checkpoint_id, "changed": changed})
        return {"cp": context.checkpoint_id, "inst": self.inst, "n": len(changed)}

    def notify_checkpoint_complete(self, checkpoint_id: int,
                                   payloads: Sequence[CheckpointPayload]) -> None:
        self._log({"ev": "complete", "cp": checkpoint_id,
                   "payloads": [[p.checkpoint_id, p.payload] for p in payloads]})

    def notify_checkpoint_aborted(self, checkpoint_id: int,
                                  payloads: Sequence[CheckpointPayload]) -> None:
        self._log({"ev": "abort", "cp": checkpoint_id,
                   "payloads": [[p.checkpoint_id, p.payload] for p in payloads]})

    def open_timeline(self, timeline: JobTimeline) -> None:
        self._log({"ev": "timeline", "lineage": timeline.lineage, "job": timeline.job_id,
                   "attempt": timeline.attempt, "cp": timeline.restored_checkpoint_id,
                   "cp_job": timeline.restored_checkpoint_job_id})

    def restore_state(self, checkpoint_id: int, payloads: Sequence[CheckpointPayload]) -> None:
        self._log({"ev": "restore", "cp": checkpoint_id,
                   "payloads": [[p.checkpoint_id, p.payload] for p in payloads]})

    def close(self) -> None:
        self._log({"ev": "close"})
        self.file.close()


def build(args: argparse.Namespace) -> StreamExecutionEnvironment:
    conf = Configuration()
    conf.set_string("restart-strategy.type", "fixed-delay")
    conf.set_string("restart-strategy.fixed-delay.attempts", "3")
    conf.set_string("restart-strategy.fixed-delay.delay", "200 ms")
    conf.set_string("execution.checkpointing.tolerable-failed-checkpoints", "100")
    conf.set_string("python.fn-execution.bundle.size", "100")
    conf.set_string("python.fn-execution.bundle.time", "100")
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    configure_environment(env, args.mode)
    env.set_parallelism(args.parallelism)
    env.enable_checkpointing(args.interval)
    keys = args.keys
    block = args.block

    src = env.from_source(NumberSequenceSource(0, args.n - 1),
                          WatermarkStrategy.no_watermarks(), "numbers")
    delay = args.delay

    def to_pair(i: int) -> tuple:
        # The pacing sits before the shuffle, so barriers never queue behind a backlog.
        if delay:
            time.sleep(delay)
        return (f"k{(i // block) % keys}", i)

    pairs = src.map(to_pair, output_type=Types.TUPLE([Types.STRING(), Types.LONG()]))
    keyed = pairs.key_by(lambda t: t[0], key_type=Types.STRING())
    if args.checkpoint_timeout:
        env.get_checkpoint_config().set_checkpoint_timeout(args.checkpoint_timeout)
    probe = ProbeFunction(args.out, args.fail_at, args.slow_snapshot_at,
                          args.slow_snapshot_s, args.timer_every)
    out = process_with_checkpoints(keyed, probe, Types.STRING(), name="probe", uid="probe")
    if args.chain:
        # A downstream Python operator that PyFlink chains into ours.
        out = out.map(lambda s: s.upper(), output_type=Types.STRING())
    out.map(LineWriter(args.out), output_type=Types.STRING()).name("writer")
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--mode", choices=["thread", "process"], default="thread")
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--block", type=int, default=25,
                        help="consecutive elements per key run, so intervals touch subsets")
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument("--interval", type=int, default=200, help="checkpoint interval, ms")
    parser.add_argument("--delay", type=float, default=0.001,
                        help="source pacing, seconds per element")
    parser.add_argument("--fail-at", type=int, default=-1)
    parser.add_argument("--slow-snapshot-at", type=int, default=-1,
                        help="checkpoint whose snapshot sleeps --slow-snapshot-s")
    parser.add_argument("--slow-snapshot-s", type=float, default=2.0)
    parser.add_argument("--checkpoint-timeout", type=int, default=0, help="ms; 0: default")
    parser.add_argument("--timer-every", type=int, default=0)
    parser.add_argument("--chain", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    build(args).execute("bridge-probe")


if __name__ == "__main__":
    main()
