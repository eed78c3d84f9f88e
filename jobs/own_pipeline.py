"""A pipeline of your own, as a template: tickets -> ``key_by`` -> an agent of two actions
(``process_with_checkpoints``) -> a file sink, dead letters to another.

Locally (the mini-cluster of this process)::

    .venv/bin/python jobs/own_pipeline.py --out out/own

On the standalone cluster of ``scripts/cluster.sh`` (submitted with ``flink run -d``; the
client returns once the job is submitted, ``scripts/cluster.sh wait`` waits for it)::

    scripts/cluster.sh submit-py jobs/own_pipeline.py --out "$PWD/out/own"

Writes ``<out>/results/`` and ``<out>/dead_letters/`` (exactly-once file sinks) and keeps
its action state in ``<out>/actions.db`` (SQLite), namespace ``own-pipeline`` (a fresh start
removes what an earlier run left there; a resume replays it).
"""

from __future__ import annotations

import argparse
import json
import os

from pyflink.common import Encoder, Types
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.connectors.file_system import FileSink

from flink_agents_ext import configure_environment, process_with_checkpoints
from flink_agents_ext.actions import (
    DEAD_LETTER_TAG,
    INPUT,
    ActionContext,
    Agent,
    DurableAgentFunction,
)

NAMESPACE = "own-pipeline"
TICKETS = [{"customer": f"c{i % 7}", "text": "refund!" if i % 5 == 0 else f"question {i}"}
           for i in range(200)] + [{"text": "a ticket without a customer"}]


def call_model(text: str) -> str:
    """Stands for a model call (a durable call: at most once per run)."""
    return "urgent" if text.endswith("!") else "normal"


agent = Agent("support")


@agent.action(on=INPUT)
def classify(ticket: dict, ctx: ActionContext) -> None:
    label = ctx.durable_execute(call_model, ticket["text"])
    ctx.memory["tickets"] = ctx.memory.get("tickets", 0) + 1
    ctx.send("classified", {**ticket, "label": label})


@agent.action(on="classified")
def respond(ticket: dict, ctx: ActionContext) -> None:
    ctx.emit(json.dumps({**ticket, "run": ctx.seq, "tickets": ctx.memory["tickets"]},
                        sort_keys=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory (absolute on a cluster)")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    store = {"backend": "sqlite", "path": os.path.join(out, "actions.db")}
    os.makedirs(out, exist_ok=True)
    # No clearing needed: a fresh start begins a new lineage and removes what an earlier
    # job left in the namespace; a resume (-s) replays it.

    env = StreamExecutionEnvironment.get_execution_environment()
    configure_environment(env)  # before building the pipeline: every operator in thread mode
    env.enable_checkpointing(1000)  # pruning is driven by checkpoints
    tickets = env.from_collection([json.dumps(t) for t in TICKETS], Types.STRING()) \
        .map(json.loads)
    fn = DurableAgentFunction(agent, store, NAMESPACE)
    results = process_with_checkpoints(tickets.key_by(lambda t: t.get("customer")), fn,
                                       Types.STRING(), name="support-agent", uid="support-agent")
    for stream, name in ((results, "results"),
                         (results.get_side_output(DEAD_LETTER_TAG), "dead_letters")):
        stream.sink_to(FileSink.for_row_format(os.path.join(out, name),
                                               Encoder.simple_string_encoder()).build()
                       ).uid(name)
    env.execute("own-pipeline")


if __name__ == "__main__":
    main()
