"""One run of the durable-vs-stock throughput benchmark (thread mode, checkpoints on).

The user work, the same on both sides: a SHA-256 of the input, counted per key and emitted.
``stock``: a plain PyFlink ``KeyedProcessFunction`` does it. ``durable``: an agent action does
it as a durable call, recorded in a SQLite store and pruned as checkpoints complete. Writes
``{"records", "seconds"}`` (first to last element inside the function) to ``--result``.

``writes``: the stock function plus only the SQLite writes the durable function's contract
needs per record, with the store's own file layout and statements and nothing of this
package on the record's path: with ``--commit each`` two committed transactions (the call
with its action's started record, before the action goes on; then the completed action),
with ``--commit group`` the completed action's row in batches of 1,000 (group commit does
not write the journal entry or started record of an action completed in the same batch).
Its ratio to ``stock`` is a ceiling for any durable design that keeps those writes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import tempfile
import threading
import time
from typing import Any, Iterator

from pyflink.common import Configuration, Types
from pyflink.datastream import KeyedProcessFunction
from pyflink.datastream.state import ValueStateDescriptor

from bench.common import Clock, keyed_numbers, sample_stacks
from flink_agents_ext import process_with_checkpoints
from flink_agents_ext.actions import INPUT, ActionContext, Agent, DurableAgentFunction
from flink_agents_ext.actions.gc_tuning import DEFAULT_GC_THRESHOLD
from flink_agents_ext.store.sqlite import SQLiteStore

WORK_S = 0.0


def user_work(i: int) -> str:
    """The user work: a hash, plus WORK_S seconds of waiting (a fast local call)."""
    if WORK_S:
        time.sleep(WORK_S)
    return hashlib.sha256(f"ticket-{i}".encode()).hexdigest()[:16]


class Stock(KeyedProcessFunction):
    def __init__(self, result: str, work_s: float) -> None:
        self.result = result
        self.work_s = work_s

    def open(self, runtime_context: Any) -> None:
        global WORK_S
        WORK_S = self.work_s
        self.count = runtime_context.get_state(ValueStateDescriptor("n", Types.LONG()))
        self.clock = Clock()

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        self.clock.tick()
        self.count.update((self.count.value() or 0) + 1)
        yield user_work(value[1])

    def close(self) -> None:
        self.clock.write(self.result)


class StoreWrites(Stock):
    """The stock function plus the durable contract's SQLite writes per record (see the
    module docs)."""

    BATCH = 1000

    def __init__(self, result: str, work_s: float, commit: str) -> None:
        super().__init__(result, work_s)
        self.commit = commit

    def open(self, runtime_context: Any) -> None:
        super().open(runtime_context)
        db = os.path.join(tempfile.mkdtemp(prefix="fae-bench-"), "a.db")
        store = SQLiteStore(db)  # the file, its pragmas and its tables
        self.put_call, self.put_action = store._sql["put_call"], store._sql["put_action"]
        store.close()
        self.conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.actions: list[tuple[Any, ...]] = []

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        self.clock.tick()
        self.count.update((self.count.value() or 0) + 1)
        out = user_work(value[1])
        ident = ("bench", str(value[0]), value[1], "act", 0)
        event = f"[{value[0]},{value[1]}]".encode()
        call = (*ident, 0, "bench.durable_job.user_work", "0" * 32, "ok",
                f'"{out}"'.encode(), None, None)
        done = (*ident, event, f'["{out}"]'.encode(), b"[]", b'{"set":{},"unset":[]}', True)
        if self.commit == "each":
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(self.put_call, call)
            conn.execute(self.put_action, (*done[:5], event, b"[]", b"[]", done[8], False))
            conn.execute("COMMIT")
            conn.execute(self.put_action, done)  # its own transaction
        else:
            self.actions.append(done)
            if len(self.actions) >= self.BATCH:
                self._write_batch()
        yield out

    def _write_batch(self) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(self.put_action, self.actions)
        conn.execute("COMMIT")
        self.actions.clear()

    def close(self) -> None:
        if self.actions:
            self._write_batch()
        self.conn.close()
        super().close()


def agent() -> Agent:
    a = Agent("throughput")

    @a.action(on=INPUT)
    def act(event: Any, ctx: ActionContext) -> None:
        ctx.emit(ctx.durable_execute(user_work, event[1]))

    return a


class Durable(DurableAgentFunction):
    def __init__(self, *args: Any, result: str, work_s: float, profile: str = "",
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.result = result
        self.work_s = work_s
        self.profile = profile

    def open(self, runtime_context: Any) -> None:
        global WORK_S
        WORK_S = self.work_s
        super().open(runtime_context)
        self.clock = Clock()
        self.stop_profile = threading.Event()
        if self.profile:
            threading.Thread(target=sample_stacks, args=(self.profile, self.stop_profile),
                             daemon=True).start()

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        self.clock.tick()
        yield from super().process_element(value, ctx)

    def close(self) -> None:
        self.stop_profile.set()
        self.clock.write(self.result)
        super().close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--side", choices=["stock", "durable", "writes"], required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--keys", type=int, required=True)
    p.add_argument("--work-ms", type=float, default=0.0)
    p.add_argument("--commit", choices=["each", "group"], default="each",
                   help="the store's commit mode (durable and writes sides)")
    p.add_argument("--result", required=True)
    p.add_argument("--profile", default="", help="durable side: write sampled stacks here")
    p.add_argument("--no-gc-tuning", action="store_true",
                   help="durable side: gc_threshold=None (the collector's defaults)")
    args = p.parse_args()
    work_s = args.work_ms / 1000
    conf = Configuration()
    conf.set_string("python.fn-execution.bundle.size", "1000")
    env, keyed = keyed_numbers(conf, "thread", args.n, args.keys)
    if args.side == "stock":
        keyed.process(Stock(args.result, work_s), Types.STRING())
    elif args.side == "writes":
        keyed.process(StoreWrites(args.result, work_s, args.commit), Types.STRING())
    else:
        db = os.path.join(tempfile.mkdtemp(prefix="fae-bench-"), "a.db")
        process_with_checkpoints(keyed, Durable(agent(), {"backend": "sqlite", "path": db,
                                                "commit": args.commit},
                                                "bench", result=args.result, work_s=work_s,
                                                profile=args.profile,
                                                gc_threshold=None if args.no_gc_tuning
                                                else DEFAULT_GC_THRESHOLD),
                                 Types.STRING())
    env.execute("durable-throughput")


if __name__ == "__main__":
    main()
