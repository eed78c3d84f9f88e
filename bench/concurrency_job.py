"""One run of the concurrency benchmark: an agent whose action makes one simulated 100 ms
call, with ``--max-in-flight`` runs in flight. Writes ``{"records", "seconds"}`` (first run
started to last run applied) to ``--result``."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any, Iterator

from pyflink.common import Configuration, Types

from bench.common import keyed_numbers
from flink_agents_ext import process_with_checkpoints
from flink_agents_ext.actions import INPUT, ActionContext, Agent, DurableAgentFunction


def simulated_model_call(i: int, seconds: float) -> int:
    time.sleep(seconds)
    return i


def agent(call_s: float) -> Agent:
    a = Agent("bench")

    @a.action(on=INPUT)
    def act(event: Any, ctx: ActionContext) -> None:
        ctx.emit(ctx.durable_execute(simulated_model_call, event[1], call_s))

    return a


class Timed(DurableAgentFunction):
    def __init__(self, *args: Any, result: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.result = result

    def open(self, runtime_context: Any) -> None:
        super().open(runtime_context)
        self.first = self.last = 0.0
        self.done = 0

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        if not self.first:
            self.first = time.perf_counter()
        yield from self._timed(super().process_element(value, ctx))

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        yield from self._timed(super().on_timer(timestamp, ctx))

    def _timed(self, outputs: Iterator[Any]) -> Iterator[Any]:
        for out in outputs:
            self.done += 1
            self.last = time.perf_counter()
            yield out

    def close(self) -> None:
        with open(self.result, "a") as fh:
            fh.write(json.dumps({"records": self.done, "seconds": self.last - self.first}) + "\n")
        super().close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--max-in-flight", type=int, required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--call-ms", type=float, default=100)
    p.add_argument("--mode", default="thread")
    p.add_argument("--result", required=True)
    args = p.parse_args()
    env, keyed = keyed_numbers(Configuration(), args.mode, args.n, args.keys, string_keys=True)
    db = os.path.join(tempfile.mkdtemp(prefix="fae-bench-"), "a.db")
    fn = Timed(agent(args.call_ms / 1000), {"backend": "sqlite", "path": db}, "bench",
               max_in_flight=args.max_in_flight, result=args.result)
    process_with_checkpoints(keyed, fn, Types.LONG())
    env.execute("concurrency-bench")


if __name__ == "__main__":
    main()
