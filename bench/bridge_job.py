"""One throughput run: a trivial keyed counter through the stock operator or ours.

Writes ``{"records", "seconds"}`` (time between the first and the last element seen by the
function, summed over subtasks) to ``--result``. Run by ``bench/bridge_overhead.py``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Iterator

from pyflink.common import Configuration, Types
from pyflink.datastream import KeyedProcessFunction
from pyflink.datastream.state import ValueStateDescriptor

from bench.common import Clock, keyed_numbers
from flink_agents_ext import (
    CheckpointedKeyedProcessFunction,
    SnapshotContext,
    process_with_checkpoints,
)


class _Timing:
    """The trivial work (a keyed counter) and the timing, the same on both sides; first in
    each side's bases, so its methods are the function's."""

    def __init__(self, result: str) -> None:
        self.result = result

    def open(self, runtime_context: Any) -> None:
        self.count = runtime_context.get_state(ValueStateDescriptor("c", Types.LONG()))
        self.clock = Clock()

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        self.clock.tick()
        self.count.update((self.count.value() or 0) + 1)
        return iter(())

    def close(self) -> None:
        self.clock.write(self.result)


class Stock(_Timing, KeyedProcessFunction):
    """The stock operator's side."""


class Ours(_Timing, CheckpointedKeyedProcessFunction):
    """Our operator's side: the snapshot visits the changed keys."""

    def snapshot_state(self, context: SnapshotContext) -> Any:
        return sum(1 for _ in context.changed_keys())


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
    env, keyed = keyed_numbers(conf, args.mode, args.n, args.keys)
    if args.operator == "stock":
        keyed.process(Stock(args.result))
    else:
        process_with_checkpoints(keyed, Ours(args.result))
    if os.path.exists(args.result):
        os.remove(args.result)
    env.execute("bridge-bench")


if __name__ == "__main__":
    main()
