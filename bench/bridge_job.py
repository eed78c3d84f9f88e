"""One throughput run: a trivial keyed counter through the stock operator or ours.

Writes ``{"records", "seconds"}`` (time between the first and the last element seen by the
function, summed over subtasks) to ``--result``. Run by ``bench/bridge_overhead.py``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Iterator

from pyflink.common import Configuration, Types, WatermarkStrategy
from pyflink.datastream import KeyedProcessFunction, StreamExecutionEnvironment
from pyflink.datastream.connectors.number_seq import NumberSequenceSource
from pyflink.datastream.state import ValueStateDescriptor

from bench.common import Clock
from flink_agents_ext import (
    CheckpointedKeyedProcessFunction,
    SnapshotContext,
    configure_environment,
    process_with_checkpoints,
)


class _Timing:
    """The trivial work (a keyed counter) and the timing, shared by both sides."""

    result: str

    def open_timing(self, runtime_context: Any) -> None:
        self.count = runtime_context.get_state(ValueStateDescriptor("c", Types.LONG()))
        self.clock = Clock()

    def tick(self) -> None:
        self.clock.tick()
        self.count.update((self.count.value() or 0) + 1)

    def write(self) -> None:
        self.clock.write(self.result)


class Stock(KeyedProcessFunction, _Timing):
    def __init__(self, result: str) -> None:
        self.result = result

    def open(self, runtime_context: Any) -> None:
        self.open_timing(runtime_context)

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        self.tick()
        return iter(())

    def close(self) -> None:
        self.write()


class Ours(CheckpointedKeyedProcessFunction, _Timing):
    def __init__(self, result: str) -> None:
        self.result = result

    def open(self, runtime_context: Any) -> None:
        self.open_timing(runtime_context)

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        self.tick()
        return iter(())

    def snapshot_state(self, context: SnapshotContext) -> Any:
        return sum(1 for _ in context.changed_keys())

    def close(self) -> None:
        self.write()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--operator", choices=["stock", "ours"], required=True)
    p.add_argument("--mode", choices=["thread", "process"], required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--result", required=True)
    args = p.parse_args()
    conf = Configuration()
    conf.set_string("python.fn-execution.bundle.size", "1000")
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    configure_environment(env, args.mode)
    env.set_parallelism(1)
    env.enable_checkpointing(1000)
    keys = args.keys
    src = env.from_source(NumberSequenceSource(0, args.n - 1),
                          WatermarkStrategy.no_watermarks(), "n")
    keyed = src.map(lambda i: (i % keys, i),
                    output_type=Types.TUPLE([Types.LONG(), Types.LONG()])) \
        .key_by(lambda t: t[0], key_type=Types.LONG())
    if args.operator == "stock":
        keyed.process(Stock(args.result))
    else:
        process_with_checkpoints(keyed, Ours(args.result))
    if os.path.exists(args.result):
        os.remove(args.result)
    env.execute("bridge-bench")


if __name__ == "__main__":
    main()
