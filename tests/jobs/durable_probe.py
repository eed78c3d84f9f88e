"""A probe job for durable actions on the mini-cluster.

Every durable call appends ``{"key", "seq", "pos"}`` to ``<out>/ledger.jsonl`` when it
really executes, so a test can prove no recorded call ran twice. Outputs go to an
exactly-once FileSink under ``<out>/sink`` (or, with ``--sink writer``, to plain files).

Options inject a failure inside an action after its durable call (``--fail-at I``: element
``I``, first attempt only), stop the job with a savepoint after ``--stop-after`` ledger
lines (prints ``SAVEPOINT <path>``), or resume from ``--from-savepoint`` (a savepoint or a
retained checkpoint). ``--cancel-after-lines L`` / ``--cancel-after-checkpoints N`` cancel
the job (no savepoint) after ``L`` ledger lines or ``N`` completed checkpoints and print
the retained checkpoints (``CHECKPOINT <path>``, oldest first; ``--checkpoint-dir`` keeps
them on cancellation); ``--offset`` shifts the element numbers (other inputs, same keys).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import threading
import time
from typing import Any

from pyflink.common import Configuration, Encoder, Types, WatermarkStrategy
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.connectors.file_system import FileSink
from pyflink.datastream.connectors.number_seq import NumberSequenceSource

from flink_agents_ext import (
    configure_environment,
    process_with_checkpoints,
    stop_with_savepoint,
)
from flink_agents_ext.actions import INPUT, ActionContext, Agent, DurableAgentFunction
from flink_agents_ext.store import RecordId
from scripts import free_port
from scripts.jobrun import watch_completed_checkpoints
from tests.jobs.lines import LineWriter

CALL_SECONDS = 0.0
#: Pacing of the input until --cancel-after-checkpoints is reached (seconds per element,
#: at most in all).
PACE_S, PACE_MAX_S = 0.02, 60.0


def ledger_call(out_dir: str, key: str, seq: int, pos: int, text: str) -> str:
    """The side effect: one ledger line per real execution (after CALL_SECONDS)."""
    if CALL_SECONDS:
        time.sleep(CALL_SECONDS)
    with open(os.path.join(out_dir, "ledger.jsonl"), "a") as fh:
        fh.write(json.dumps({"key": key, "seq": seq, "pos": pos}) + "\n")
    return f"{text}@{seq}.{pos}"


class ProbeFunction(DurableAgentFunction):
    """Checks, at every checkpoint completion, that pruning left the runs in flight alone:
    their journal entries must not shrink. Appends ``{"cp", "in_flight", "violations"}`` to
    ``<out>/inflight-check.jsonl``."""

    def __init__(self, *args: Any, out_dir: str, call_seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.out_dir = out_dir
        self.call_seconds = call_seconds

    def open(self, runtime_context: Any) -> None:
        global CALL_SECONDS
        CALL_SECONDS = self.call_seconds
        super().open(runtime_context)

    def notify_checkpoint_complete(self, checkpoint_id: int, payloads: Any) -> None:
        in_flight = self.runs.runs_in_flight()
        before = {r: len(self.store.get_calls(self._rid(*r))) for r in in_flight}
        super().notify_checkpoint_complete(checkpoint_id, payloads)
        violations = [r for r in in_flight
                      if len(self.store.get_calls(self._rid(*r))) < before[r]]
        with open(os.path.join(self.out_dir, "inflight-check.jsonl"), "a") as fh:
            fh.write(json.dumps({"cp": checkpoint_id, "in_flight": len(in_flight),
                                 "recorded": sum(before.values()),
                                 "violations": len(violations)}) + "\n")

    def _rid(self, key_enc: str, seq: int) -> RecordId:
        return RecordId(self.namespace, key_enc, seq, "think", 0)


def build_agent(out_dir: str, fail_at: int) -> Agent:
    agent = Agent("probe")

    @agent.action(on=INPUT)
    def think(event: Any, ctx: ActionContext) -> None:
        key, i = event
        thought = ctx.durable_execute(ledger_call, out_dir, key, ctx.seq, 0, f"t{i}")
        ctx.memory["runs"] = ctx.memory.get("runs", 0) + 1
        ctx.send("act", {"i": i, "thought": thought})

    @agent.action(on="act")
    def act(event: dict, ctx: ActionContext) -> None:
        done = ctx.durable_execute(ledger_call, out_dir, ctx.key, ctx.seq, 1, event["thought"])
        if event["i"] == fail_at:
            marker = os.path.join(out_dir, "failed-once")
            if not os.path.exists(marker):
                open(marker, "w").close()
                raise RuntimeError(f"injected failure after the durable call of {event['i']}")
        ctx.emit(json.dumps({"key": ctx.key, "seq": ctx.seq, "i": event["i"], "done": done,
                             "runs": ctx.memory["runs"]}, sort_keys=True))

    return agent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--db", default="", help="SQLite store path (unless --store)")
    p.add_argument("--store", default="", help="store settings as JSON (e.g. postgres)")
    p.add_argument("--namespace", default="durable-probe")
    p.add_argument("--mode", choices=["thread", "process"], default="thread")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--keys", type=int, default=25)
    p.add_argument("--parallelism", type=int, default=1)
    p.add_argument("--interval", type=int, default=300)
    p.add_argument("--delay", type=float, default=0.001)
    p.add_argument("--fail-at", type=int, default=-1)
    p.add_argument("--sink", choices=["file", "writer"], default="file")
    p.add_argument("--stop-after", type=int, default=0,
                   help="stop with a savepoint after this many ledger lines")
    p.add_argument("--from-savepoint", default="")
    p.add_argument("--max-in-flight", type=int, default=0)
    p.add_argument("--call-ms", type=float, default=0.0, help="duration of each durable call")
    p.add_argument("--retention", type=int, default=1,
                   help="the function's retention and Flink's retained checkpoints")
    p.add_argument("--checkpoint-dir", default="", help="retained on cancellation")
    p.add_argument("--cancel-after-lines", type=int, default=0)
    p.add_argument("--cancel-after-checkpoints", type=int, default=0)
    p.add_argument("--offset", type=int, default=0, help="added to every element number")
    p.add_argument("--unaligned", action="store_true", help="unaligned checkpoints")
    args = p.parse_args()
    if not args.db and not args.store:
        p.error("--db or --store is required")
    os.makedirs(args.out, exist_ok=True)

    conf = Configuration()
    conf.set_string("restart-strategy.type", "fixed-delay")
    conf.set_string("restart-strategy.fixed-delay.attempts", "3")
    conf.set_string("restart-strategy.fixed-delay.delay", "200 ms")
    conf.set_string("python.fn-execution.bundle.size", "100")
    conf.set_string("python.fn-execution.bundle.time", "100")
    rest_port = 0
    if args.unaligned:
        conf.set_string("execution.checkpointing.unaligned.enabled", "true")
        rest_port = free_port()  # to read the checkpoints' statistics
        conf.set_string("rest.port", str(rest_port))
    if args.from_savepoint:
        conf.set_string("execution.savepoint.path", args.from_savepoint)
    conf.set_string("state.checkpoints.num-retained", str(args.retention))
    if args.checkpoint_dir:
        conf.set_string("execution.checkpointing.dir", "file://" + args.checkpoint_dir)
        conf.set_string("execution.checkpointing.externalized-checkpoint-retention",
                        "RETAIN_ON_CANCELLATION")
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    configure_environment(env, args.mode)
    env.set_parallelism(args.parallelism)
    env.enable_checkpointing(args.interval)
    keys, delay, offset = args.keys, args.delay, args.offset
    # --cancel-after-checkpoints: the second half of the input comes slower until that many
    # checkpoints completed (at most PACE_MAX_S in all), so that the job is cancelled midway
    # also on a loaded machine, whose checkpoints take longer.
    gate = args.cancel_after_checkpoints if args.checkpoint_dir else 0
    checkpoint_dir, half, paced = args.checkpoint_dir, args.n // 2, [0.0]

    def to_pair(i: int) -> tuple:
        if delay:
            time.sleep(delay)
        if gate and i >= half and paced[0] < PACE_MAX_S \
                and checkpoints_done(checkpoint_dir) < gate:
            time.sleep(PACE_S)
            paced[0] += PACE_S
        return (f"k{i % keys}", i + offset)

    src = env.from_source(NumberSequenceSource(0, args.n - 1),
                          WatermarkStrategy.no_watermarks(), "numbers").uid("numbers")
    pairs = src.map(to_pair, output_type=Types.TUPLE([Types.STRING(), Types.LONG()])).uid("pairs")
    store = json.loads(args.store) if args.store else {"backend": "sqlite", "path": args.db}
    fn = ProbeFunction(build_agent(args.out, args.fail_at), store, args.namespace,
                       on_action_error="fail", max_in_flight=args.max_in_flight,
                       retention=args.retention,
                       out_dir=args.out, call_seconds=args.call_ms / 1000)
    out = process_with_checkpoints(pairs.key_by(lambda t: t[0], key_type=Types.STRING()), fn,
                                   Types.STRING(), name="agent", uid="agent")
    if args.sink == "file":
        out.sink_to(FileSink.for_row_format(os.path.join(args.out, "sink"),
                                            Encoder.simple_string_encoder()).build()).uid("sink")
    else:
        out.map(LineWriter(os.path.join(args.out, "writer")),
                output_type=Types.STRING()).uid("writer")

    if args.cancel_after_lines or args.cancel_after_checkpoints:
        cancel(env.execute_async("durable-probe"), args)
        return
    if rest_port:
        watch_checkpoints(env.execute_async("durable-probe"), rest_port,
                          os.path.join(args.out, "checkpoints.json"))
        return
    if not args.stop_after:
        env.execute("durable-probe")
        return
    client = env.execute_async("durable-probe")
    ledger = os.path.join(args.out, "ledger.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline:
        if os.path.exists(ledger) and sum(1 for _ in open(ledger)) >= args.stop_after:
            break
        time.sleep(0.05)
    path = stop_with_savepoint(client, "file://" + os.path.join(args.out, "savepoints"))
    print(f"SAVEPOINT {path}", flush=True)
    sys.exit(0)


def watch_checkpoints(client: Any, port: int, path: str) -> None:
    """Until the job ends, read its completed checkpoints from the REST API; write
    ``{id: {"type", "persisted_data"}}`` (bytes of channel state) to ``path``."""
    found: dict[int, dict[str, Any]] = {}
    done = threading.Event()
    watcher = threading.Thread(target=watch_completed_checkpoints, daemon=True,
                               args=(port, str(client.get_job_id()), found, done))
    watcher.start()
    try:
        client.get_job_execution_result().result()
    finally:
        done.set()
        watcher.join()
        with open(path, "w") as fh:
            json.dump({cid: {"type": cp.get("checkpoint_type"),
                             "persisted_data": int(cp.get("persisted_data", 0))}
                       for cid, cp in found.items()}, fh)


def checkpoints_done(checkpoint_dir: str) -> int:
    """The id of the latest completed checkpoint in ``checkpoint_dir`` (0: none yet)."""
    done = completed_checkpoints(checkpoint_dir)
    return int(done[-1].rsplit("-", 1)[1]) if done else 0


def completed_checkpoints(checkpoint_dir: str) -> list[str]:
    """The completed checkpoints in ``checkpoint_dir`` (any job), oldest first."""
    found = [os.path.dirname(path) for path in
             glob.glob(os.path.join(checkpoint_dir, "*", "chk-*", "_metadata"))]
    return sorted(found, key=lambda path: int(path.rsplit("-", 1)[1]))


def cancel(client: Any, args: argparse.Namespace) -> None:
    """Cancel the job after ``--cancel-after-lines`` ledger lines or
    ``--cancel-after-checkpoints`` completed checkpoints; print the retained ones."""
    ledger = os.path.join(args.out, "ledger.jsonl")
    deadline = time.time() + 180
    while time.time() < deadline:
        if args.cancel_after_lines and os.path.exists(ledger) \
                and sum(1 for _ in open(ledger)) >= args.cancel_after_lines:
            break
        if args.cancel_after_checkpoints and args.checkpoint_dir:
            if checkpoints_done(args.checkpoint_dir) >= args.cancel_after_checkpoints:
                break
        time.sleep(0.02)
    else:
        raise SystemExit("the job did not reach the cancel point in 180 s")
    client.cancel().result()
    if args.checkpoint_dir:
        for path in completed_checkpoints(args.checkpoint_dir):
            print(f"CHECKPOINT {path}", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
