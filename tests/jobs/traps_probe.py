"""A probe job for what a new user hits: dead letters, bad stores, checkpointing off.

Input: a few records per key (dicts; ``key_by`` the ``customer`` field). The agent counts
each key's records in memory (``count``) and emits what it sees, then ``check`` notes the
text in memory (``checked``); for the text ``bad`` it also sets ``poison`` and emits, then
fails; for ``set`` it emits a value JSON cannot hold. Everything the job emits (main output
and dead letters) is collected and written to ``<out>/collected.jsonl`` as ``{"stream",
"value"}``; each ``open`` of the function appends a line to ``<out>/opens.txt``.

``--mode`` unset leaves ``python.execution-mode`` alone (the library's default applies);
``--store`` is the store configuration as JSON; ``--block-store-dir`` makes it unwritable
where the task opens it; ``--no-checkpointing`` runs without checkpoints; ``--restarts N``
allows N restarts (fixed delay ``--restart-delay-ms``).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from pyflink.common import Configuration, Types
from pyflink.datastream import StreamExecutionEnvironment

from flink_agents_ext import configure_environment, process_with_checkpoints
from flink_agents_ext.actions import (
    DEAD_LETTER_TAG,
    INPUT,
    ActionContext,
    Agent,
    DurableAgentFunction,
)

#: (customer, text) per record; ``None``: the record has no customer field.
RECORDS = [("alice", "ok1"), ("bob", "ok1"), ("alice", "bad"), ("bob", "set"),
           ("alice", "ok2"), (None, "orphan"), ("bob", "ok2")]


def build_agent() -> Agent:
    agent = Agent("traps")

    @agent.action(on=INPUT)
    def count(ticket: dict, ctx: ActionContext) -> None:
        ctx.memory["count"] = ctx.memory.get("count", 0) + 1
        exe = os.path.basename(os.readlink("/proc/self/exe"))  # java: thread mode
        ctx.emit(json.dumps({"key": ctx.key, "text": ticket["text"], "exe": exe,
                             "count": ctx.memory["count"], "checked": ctx.memory.get("checked"),
                             "poison": ctx.memory.get("poison")}))
        ctx.send("check", ticket)

    @agent.action(on="check")
    def check(ticket: dict, ctx: ActionContext) -> None:
        ctx.memory["checked"] = ticket["text"]
        if ticket["text"] == "bad":  # its memory changes and emits are discarded
            ctx.memory["poison"] = True
            ctx.emit("never emitted")
            raise RuntimeError("bad ticket")
        if ticket["text"] == "set":
            ctx.emit({"a set", "cannot be JSON"})

    return agent


class Probe(DurableAgentFunction):
    """Appends a line to ``<out_dir>/opens.txt`` at every open; with ``block`` first puts
    a file where the SQLite store's directory should be (a path that is fine on the client,
    where the configuration is checked, and cannot be written where the task runs)."""

    def __init__(self, *args: Any, out_dir: str, block: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.out_dir = out_dir
        self.block = block

    def open(self, runtime_context: Any) -> None:
        with open(os.path.join(self.out_dir, "opens.txt"), "a") as fh:
            fh.write("open\n")
        if self.block:
            blocker = os.path.dirname(self.store_spec["path"])
            if not os.path.exists(blocker):
                with open(blocker, "w") as fh:
                    fh.write("a file where the store wants a directory")
        super().open(runtime_context)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--store", required=True, help="store configuration as JSON")
    p.add_argument("--mode", choices=["thread", "process"], default=None)
    p.add_argument("--no-checkpointing", action="store_true")
    p.add_argument("--allow-no-checkpointing", action="store_true")
    p.add_argument("--block-store-dir", action="store_true",
                   help="make the SQLite store's directory a file when the task opens")
    p.add_argument("--restarts", type=int, default=0)
    p.add_argument("--restart-delay-ms", type=int, default=200)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)

    conf = Configuration()
    conf.set_string("restart-strategy.type", "fixed-delay")
    conf.set_string("restart-strategy.fixed-delay.attempts", str(args.restarts))
    conf.set_string("restart-strategy.fixed-delay.delay", f"{args.restart_delay_ms} ms")
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    if args.mode:
        configure_environment(env, args.mode)
    env.set_parallelism(1)
    if not args.no_checkpointing:
        env.enable_checkpointing(200)

    records = [json.dumps({"text": text} if customer is None else
                          {"customer": customer, "text": text}) for customer, text in RECORDS]
    tickets = env.from_collection(records, type_info=Types.STRING()).map(json.loads)
    fn = Probe(build_agent(), json.loads(args.store), "traps", out_dir=args.out,
               block=args.block_store_dir, allow_no_checkpointing=args.allow_no_checkpointing)
    out = process_with_checkpoints(tickets.key_by(lambda t: t.get("customer")), fn,
                                   Types.STRING(), name="agent", uid="agent")
    tagged = out.map(lambda v: json.dumps({"stream": "out", "value": v}),
                     output_type=Types.STRING()).union(
        out.get_side_output(DEAD_LETTER_TAG).map(
            lambda v: json.dumps({"stream": "dead", "value": v}), output_type=Types.STRING()))
    with tagged.execute_and_collect("traps-probe") as results, \
            open(os.path.join(args.out, "collected.jsonl"), "w") as fh:
        for line in results:
            fh.write(line + "\n")


if __name__ == "__main__":
    main()
