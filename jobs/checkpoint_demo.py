"""Demo: a keyed Python function that is told about real Flink checkpoints.

Counts events per customer and prints, as they happen, the snapshot, checkpoint-complete,
checkpoint-aborted and restore callbacks of the job's real checkpoints on the local
mini-cluster. With ``--fail-after N`` it throws once after N events: watch the job restore
from the last completed checkpoint and hand over the unconfirmed payloads.

    python jobs/checkpoint_demo.py [--mode thread|process] [--events 3000] [--fail-after 1500]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any, Iterator, Sequence

from pyflink.common import Configuration, Types, WatermarkStrategy
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.connectors.number_seq import NumberSequenceSource
from pyflink.datastream.state import ValueStateDescriptor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flink_agents_ext import (
    CheckpointedKeyedProcessFunction,
    CheckpointPayload,
    SnapshotContext,
    configure_environment,
    process_with_checkpoints,
)


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


class CountPerCustomer(CheckpointedKeyedProcessFunction):
    """Counts events per customer; its payload is the counts that changed per checkpoint."""

    def __init__(self, fail_after: int, marker: str) -> None:
        self.fail_after = fail_after
        self.marker = marker

    def open(self, runtime_context: Any) -> None:
        self.count = runtime_context.get_state(ValueStateDescriptor("count", Types.LONG()))
        self.seen = 0

    def process_element(self, value: Any, ctx: Any) -> Iterator[str]:
        customer, i = value
        self.seen += 1
        if self.fail_after and i >= self.fail_after and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            say(f"!! injected failure at event {i}: Flink restarts from the last checkpoint")
            raise RuntimeError("injected failure")
        count = (self.count.value() or 0) + 1
        self.count.update(count)
        yield f"{customer}:{count}"

    def snapshot_state(self, context: SnapshotContext) -> Any:
        changed = {key: self.count.value() for key in context.changed_keys()}
        sample = ", ".join(f"{k}={v}" for k, v in list(changed.items())[:3])
        say(f"snapshot  cp={context.checkpoint_id}: {len(changed)} customers changed "
            f"({sample}{', ...' if len(changed) > 3 else ''})")
        return {"changed": len(changed)}

    def notify_checkpoint_complete(self, checkpoint_id: int,
                                   payloads: Sequence[CheckpointPayload]) -> None:
        handed = ", ".join(f"cp{p.checkpoint_id}:{p.payload['changed']}" for p in payloads)
        say(f"complete  cp={checkpoint_id}: payloads [{handed}]")

    def notify_checkpoint_aborted(self, checkpoint_id: int,
                                  payloads: Sequence[CheckpointPayload]) -> None:
        say(f"aborted   cp={checkpoint_id}: {len(payloads)} payload(s) released")

    def restore_state(self, checkpoint_id: int, payloads: Sequence[CheckpointPayload]) -> None:
        say(f"restored  from cp={checkpoint_id}: unconfirmed payloads "
            f"{[p.checkpoint_id for p in payloads]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["thread", "process"], default="thread")
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--customers", type=int, default=50)
    parser.add_argument("--fail-after", type=int, default=1500,
                        help="throw once after this many events (0: never)")
    parser.add_argument("--interval-ms", type=int, default=500)
    args = parser.parse_args()

    conf = Configuration()
    conf.set_string("restart-strategy.type", "fixed-delay")
    conf.set_string("restart-strategy.fixed-delay.attempts", "2")
    conf.set_string("restart-strategy.fixed-delay.delay", "500 ms")
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    configure_environment(env, args.mode)
    env.set_parallelism(1)
    env.enable_checkpointing(args.interval_ms)

    customers = args.customers

    def to_event(i: int) -> tuple:
        time.sleep(0.002)  # pace the source: about 500 events/s
        return (f"customer-{i % customers:03d}", i)

    events = env.from_source(NumberSequenceSource(0, args.events - 1),
                             WatermarkStrategy.no_watermarks(), "events").map(
        to_event, output_type=Types.TUPLE([Types.STRING(), Types.LONG()]))
    marker = os.path.join(tempfile.mkdtemp(prefix="fae-demo-"), "failed-once")
    counts = process_with_checkpoints(
        events.key_by(lambda e: e[0], key_type=Types.STRING()),
        CountPerCustomer(args.fail_after, marker), Types.STRING(),
        name="count-per-customer", uid="count-per-customer")
    counts.filter(lambda s: False).print()  # keep the graph alive without flooding stdout
    say(f"running {args.events} events for {customers} customers in {args.mode} mode, "
        f"checkpoint every {args.interval_ms} ms")
    started = time.time()
    env.execute("flink-agents-ext checkpoint demo")
    say(f"done in {time.time() - started:.1f}s")


if __name__ == "__main__":
    main()
