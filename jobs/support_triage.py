"""Support-ticket triage: the main job of flink-agents-ext.

Tickets (JSON lines from a file or directory, plus a generated stream for load) are keyed by
customer. For each ticket an agent runs three actions: ``classify`` (a "model" call),
``enrich`` (a CRM "tool" call; counts the customer's tickets in per-key memory) and
``respond`` (a "model" call drafting a reply, plus a "pager" tool call for urgent tickets of
gold customers). Every model/tool call is a durable call; each real execution is appended to
``<output>/side_effects.jsonl`` so the summary can prove none ran twice. Results go to an
exactly-once FileSink (``<output>/results``); bad input and failed actions go, with the
reason, to ``<output>/dead_letters``.

    python jobs/support_triage.py --config conf/local.yaml [--fail-after 800]

``--fail-after N`` makes the ``respond`` action fail once, after its durable call, for the
N-th generated ticket: Flink restarts from the last checkpoint, replays, and the summary shows
that no durable call ran twice while the records were pruned as checkpoints completed.

Submitted with ``flink run -d`` (``scripts/cluster.sh submit``) it prints ``JOB_ID <id>`` and
returns at once; ``python -m jobs.triage_summary`` prints the summary of such a run later.
:class:`Variant` is the extension point of variants of this job: ``chaos/job.py`` (the fault
injection of ``make chaos``) instruments the pipeline through it.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import logging
import os
import shutil
import sys
import time
import uuid
from typing import Any, Callable, Iterator, Optional, Sequence

from pyflink.common import Configuration, Encoder, Types, WatermarkStrategy
from pyflink.datastream import (
    DataStream,
    KeyedStream,
    ProcessFunction,
    StreamExecutionEnvironment,
)
from pyflink.datastream.connectors.file_system import FileSink, FileSource, StreamFormat
from pyflink.datastream.connectors.number_seq import NumberSequenceSource

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flink_agents_ext import configure_environment, process_with_checkpoints
from flink_agents_ext.actions import (
    DEAD_LETTER_TAG,
    INPUT,
    ActionContext,
    Agent,
    DurableAgentFunction,
    RetryableActionError,
    durable_name,
)
from flink_agents_ext.checkpoint import CheckpointPayload
from flink_agents_ext.config import JobConfig, load_config
from flink_agents_ext.store import open_store
from jobs.triage_summary import LEDGER, report, summary

MAX_TICKET_BYTES = 16 * 1024
CUSTOMERS = ["acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka",
             "cyberdyne", "tyrell", "soylent", "oscorp"]
TEXTS = ["Cannot log in since this morning", "Invoice shows a double charge!",
         "How do I export my data?", "The API returns 500 errors!!", "Please cancel my plan",
         "Feature request: dark mode", "Payment failed twice", "Outage in EU region!",
         "Password reset email never arrives", "Upgrade to enterprise tier"]


# -- the "model" and "tools": deterministic, local, and logged on every real execution ----
def _side_effect(out_dir: str, call: str, ticket_id: str) -> None:
    with open(os.path.join(out_dir, LEDGER), "a") as fh:
        fh.write(json.dumps({"call": call, "ticket": ticket_id}) + "\n")


def _score(*parts: str) -> int:
    return int(hashlib.sha256("|".join(parts).encode()).hexdigest()[:8], 16)


@durable_name("triage.model.classify.v1")
def model_classify(out_dir: str, ticket_id: str, text: str) -> dict:
    _side_effect(out_dir, "model_classify", ticket_id)
    lowered = text.lower()
    category = ("billing" if any(w in lowered for w in ("invoice", "payment", "charge"))
                else "outage" if any(w in lowered for w in ("outage", "500", "error"))
                else "account" if any(w in lowered for w in ("log in", "password", "cancel"))
                else "general")
    return {"category": category, "urgency": "high" if "!" in text else "normal"}


@durable_name("triage.tool.crm_lookup.v1")
def crm_lookup(out_dir: str, ticket_id: str, customer: str) -> dict:
    _side_effect(out_dir, "crm_lookup", ticket_id)
    return {"tier": ("gold", "silver", "bronze")[_score(customer) % 3]}


@durable_name("triage.model.draft_reply.v1")
def model_draft_reply(out_dir: str, ticket_id: str, category: str, tier: str) -> str:
    _side_effect(out_dir, "model_draft_reply", ticket_id)
    return f"[{tier}] Thanks for reaching out about your {category} issue; we are on it."


def page_id(ticket_id: str, category: str) -> str:
    """The id of the page sent for a ticket (what a lookup in the pager would return)."""
    return f"PAGE-{_score(ticket_id, category) % 10000:04d}"


@durable_name("triage.tool.page_oncall.v1")
def page_oncall(out_dir: str, ticket_id: str, category: str) -> str:
    _side_effect(out_dir, "page_oncall", ticket_id)
    return page_id(ticket_id, category)


def build_agent(out_dir: str, fail_after: int) -> Agent:
    """The triage agent: classify -> enrich -> respond."""
    agent = Agent("support-triage")

    @agent.action(on=INPUT)
    def classify(ticket: dict, ctx: ActionContext) -> None:
        verdict = ctx.durable_execute(model_classify, out_dir, ticket["ticket_id"],
                                      ticket["text"])
        ctx.send("classified", {**ticket, **verdict})

    @agent.action(on="classified")
    def enrich(ticket: dict, ctx: ActionContext) -> None:
        profile = ctx.durable_execute(crm_lookup, out_dir, ticket["ticket_id"],
                                      ticket["customer"])
        ctx.memory["tickets"] = ctx.memory.get("tickets", 0) + 1
        ctx.memory["last_category"] = ticket["category"]
        ctx.send("enriched", {**ticket, **profile, "customer_tickets": ctx.memory["tickets"]})

    @agent.action(on="enriched")
    def respond(ticket: dict, ctx: ActionContext) -> None:
        reply = ctx.durable_execute(model_draft_reply, out_dir, ticket["ticket_id"],
                                    ticket["category"], ticket["tier"])
        if fail_after and ticket.get("n") == fail_after:
            marker = os.path.join(out_dir, "failed-once")
            if not os.path.exists(marker):
                open(marker, "w").close()
                raise RetryableActionError(
                    f"injected failure after the reply to {ticket['ticket_id']} was drafted")
        page = None
        if ticket["urgency"] == "high" and ticket["tier"] == "gold":
            page = ctx.durable_execute(page_oncall, out_dir, ticket["ticket_id"],
                                       ticket["category"])
        ctx.emit(json.dumps({
            "ticket_id": ticket["ticket_id"], "customer": ticket["customer"],
            "category": ticket["category"], "urgency": ticket["urgency"],
            "tier": ticket["tier"], "customer_tickets": ticket["customer_tickets"],
            "reply": reply, "page": page}, sort_keys=True))

    return agent


class TriageFunction(DurableAgentFunction):
    """The durable agent function, plus a stats file per instance for the job summary."""

    def __init__(self, *args: Any, stats_dir: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stats_dir = stats_dir

    def open(self, runtime_context: Any) -> None:
        super().open(runtime_context)
        os.makedirs(self.stats_dir, exist_ok=True)
        self._stats_file = os.path.join(self.stats_dir, f"{uuid.uuid4().hex}.json")

    def _write_stats(self) -> None:
        tmp = self._stats_file + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(self.stats(), fh)
        os.replace(tmp, self._stats_file)

    def notify_checkpoint_complete(self, checkpoint_id: int,
                                   payloads: Sequence[CheckpointPayload]) -> None:
        super().notify_checkpoint_complete(checkpoint_id, payloads)
        self._write_stats()

    def close(self) -> None:
        if hasattr(self, "_stats_file"):
            self._write_stats()
        super().close()


class ParseTicket(ProcessFunction):
    """JSON line -> ticket dict; anything else goes to the dead letters with the reason."""

    def process_element(self, line: str, ctx: Any) -> Iterator[Any]:
        reason = None
        ticket: Any = None
        if len(line.encode("utf-8")) > MAX_TICKET_BYTES:
            reason = f"oversized ticket: {len(line.encode('utf-8'))} bytes > {MAX_TICKET_BYTES}"
        else:
            try:
                ticket = json.loads(line)
            except json.JSONDecodeError as exc:
                reason = f"malformed JSON: {exc}"
        if reason is None:
            if not isinstance(ticket, dict) or ticket.get("type") != "ticket":
                kind = ticket.get("type") if isinstance(ticket, dict) else type(ticket).__name__
                reason = f"unknown event type: {kind!r}"
            else:
                missing = [f for f in ("ticket_id", "customer", "text")
                           if not isinstance(ticket.get(f), str)]
                if missing:
                    reason = f"missing or non-string field(s): {', '.join(missing)}"
        if reason is not None:
            yield DEAD_LETTER_TAG, json.dumps({"reason": reason, "input": line[:2000]})
        else:
            yield ticket


def generated_ticket(n: int) -> str:
    """The n-th generated ticket (deterministic)."""
    return json.dumps({"type": "ticket", "ticket_id": f"G-{n:06d}", "n": n,
                       "customer": CUSTOMERS[_score(str(n), "c") % len(CUSTOMERS)],
                       "text": TEXTS[_score(str(n), "t") % len(TEXTS)]})


def input_tickets(cfg: JobConfig) -> Iterator[str]:
    """The input lines: the input file's (or directory's) lines, then the generated ones."""
    paths = (sorted(glob.glob(os.path.join(cfg.input_path, "*"))) if cfg.input_path and
             os.path.isdir(cfg.input_path) else [cfg.input_path] if cfg.input_path else [])
    for path in paths:
        with open(path) as fh:
            yield from (line.rstrip("\n") for line in fh)
    yield from (generated_ticket(n) for n in range(1, cfg.generate + 1))


class Variant:
    """Extension points of the pipeline for a variant of this job (the fault injection of
    ``chaos/job.py`` uses them); the defaults are the main job."""

    #: Parallelism of everything before the agent (``None``: the job's).
    upstream_parallelism: Optional[int] = None

    def key_by(self, parsed: DataStream) -> KeyedStream:
        """Key the parsed tickets: by customer."""
        return parsed.key_by(lambda t: t["customer"], key_type=Types.STRING())

    def instrument(self, agent: Agent, function_cls: type, store: Any) -> tuple[Agent, type, Any]:
        """The agent, function class and store spec to build the durable function from."""
        return agent, function_cls, store

    def function_options(self) -> dict[str, Any]:
        """More keyword arguments of the durable function (e.g. ``max_in_flight``)."""
        return {}

    def ticket_generator(self) -> Callable[[int], str]:
        """The n-th generated ticket (``input.generate``): :func:`generated_ticket`."""
        return generated_ticket

    def configure(self, env: StreamExecutionEnvironment) -> None:
        """More settings of the environment, before the pipeline is built (none)."""


def build(env: StreamExecutionEnvironment, cfg: JobConfig, out_dir: str,
          fail_after: int, variant: Optional[Variant] = None) -> None:
    """Build the pipeline on ``env`` (``variant``: see :class:`Variant`)."""
    variant = variant or Variant()
    variant.configure(env)
    if variant.upstream_parallelism is not None:
        env.set_parallelism(variant.upstream_parallelism)
    lines = None
    run_id = uuid.uuid4().hex[:8]  # transactional ids of the Kafka sinks are unique per run
    if cfg.kafka:
        from jobs import triage_kafka

        lines = triage_kafka.ticket_lines(env, cfg.kafka, run_id)
    elif cfg.input_path:
        source = FileSource.for_record_stream_format(StreamFormat.text_line_format(),
                                                     os.path.abspath(cfg.input_path)).build()
        lines = env.from_source(source, WatermarkStrategy.no_watermarks(),
                                "ticket-files").uid("ticket-files")
    if cfg.generate and not cfg.kafka:
        pause = 1.0 / cfg.rate if cfg.rate else 0.0
        ticket = variant.ticket_generator()

        def make(n: int) -> str:
            if pause:
                time.sleep(pause)
            return ticket(int(n))

        gen = env.from_source(NumberSequenceSource(1, cfg.generate),
                              WatermarkStrategy.no_watermarks(), "generated-tickets") \
            .uid("generated-tickets").map(make, output_type=Types.STRING()).uid("generate")
        lines = gen if lines is None else lines.union(gen)
    assert lines is not None
    parsed = lines.process(ParseTicket()).uid("parse").name("parse")
    keyed = variant.key_by(parsed)
    env.set_parallelism(cfg.parallelism)
    triage_agent, function_cls, store = variant.instrument(
        build_agent(out_dir, fail_after), TriageFunction, cfg.store_settings())
    agent = function_cls(
        triage_agent, store, cfg.namespace, retention=cfg.retention,
        on_foreign_lineage=cfg.on_foreign_lineage,
        stats_dir=os.path.join(out_dir, "stats"), **variant.function_options())
    results = process_with_checkpoints(
        keyed, agent, Types.STRING(), name="triage-agent", uid="triage-agent")
    dead = parsed.get_side_output(DEAD_LETTER_TAG).union(
        results.get_side_output(DEAD_LETTER_TAG))
    if cfg.kafka:
        triage_kafka.write_outputs(results, dead, cfg.kafka, run_id)
        return
    encoder = Encoder.simple_string_encoder()
    results.sink_to(FileSink.for_row_format(os.path.join(out_dir, "results"), encoder)
                    .build()).uid("results-sink").name("results")
    dead.sink_to(FileSink.for_row_format(os.path.join(out_dir, "dead_letters"), encoder)
                 .build()).uid("dead-letter-sink").name("dead-letters")


def make_env(cfg: JobConfig, savepoint: str | None = None) -> StreamExecutionEnvironment:
    """An environment configured from ``cfg``."""
    conf = Configuration()
    conf.set_string("restart-strategy.type", "fixed-delay")
    conf.set_string("restart-strategy.fixed-delay.attempts", str(cfg.restart_attempts))
    conf.set_string("restart-strategy.fixed-delay.delay", "500 ms")
    conf.set_string("state.checkpoints.num-retained", str(cfg.retention))
    conf.set_string("python.fn-execution.bundle.size", "1000")
    if cfg.checkpoint_dir:
        conf.set_string("execution.checkpointing.dir", cfg.checkpoint_dir)
    if savepoint:
        conf.set_string("execution.savepoint.path", savepoint)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    configure_environment(env, cfg.execution_mode, connectors=["kafka"] if cfg.kafka else [])
    env.set_parallelism(cfg.parallelism)
    env.enable_checkpointing(cfg.checkpoint_interval_ms)
    return env


def prepare_outputs(cfg: JobConfig, out_dir: str, files: Sequence[str] = (),
                    clear_namespace: bool = True) -> None:
    """Start a fresh run: empty outputs, no ledger, stats or markers (and ``files``), and an
    empty store namespace (unless ``clear_namespace`` is false)."""
    for sub in ("results", "dead_letters", "stats"):
        shutil.rmtree(os.path.join(out_dir, sub), ignore_errors=True)
    for name in (LEDGER, "failed-once", *files):
        if os.path.exists(os.path.join(out_dir, name)):
            os.remove(os.path.join(out_dir, name))
    if clear_namespace:
        with open_store(cfg.store_settings()) as store:
            store.clear_namespace(cfg.namespace)


def detached(env: StreamExecutionEnvironment) -> bool:
    """Whether the job is submitted detached (``flink run -d``): nothing to wait for."""
    from pyflink.util.java_utils import get_j_env_configuration

    conf = get_j_env_configuration(env._j_stream_execution_environment)
    return str(conf.getString("execution.attached", "true")).lower() == "false"


def run(cfg: JobConfig, out_dir: str, fail_after: int = 0, savepoint: str = "",
        variant: Optional[Variant] = None, summary_json: str = "", note: str = "") -> int:
    """Build and run the job; print its progress and summary (see the module)."""
    os.makedirs(out_dir, exist_ok=True)
    if cfg.kafka:
        from jobs.triage_kafka import prepare_topics

        prepare_topics(cfg.kafka, input_tickets(cfg), fresh=not savepoint)
    env = make_env(cfg, savepoint or None)
    build(env, cfg, out_dir, fail_after, variant)
    total = cfg.generate + (sum(1 for _ in open(cfg.input_path)) if cfg.input_path and
                            os.path.isfile(cfg.input_path) else 0)
    where = (f"topics {cfg.kafka.input_topic} -> {cfg.kafka.results_topic}, "
             f"{cfg.kafka.dead_letters_topic} at {cfg.kafka.bootstrap_servers}"
             if cfg.kafka else f"output {out_dir}")
    print(f"support-triage: {total} tickets, {cfg.execution_mode} mode, parallelism "
          f"{cfg.parallelism}, checkpoint every {cfg.checkpoint_interval_ms} ms, store "
          f"{cfg.store['backend']}, {where}"
          + (f", failure injected at ticket G-{fail_after:06d}" if fail_after else "")
          + note, flush=True)
    started = time.time()
    client = env.execute_async(cfg.name)
    if detached(env):
        # 'flink run -d': the job runs on the cluster; the client only reports its id.
        print(f"JOB_ID {client.get_job_id()}", flush=True)
        return 0
    # Taken now: a local mini-cluster shuts down with its job, and cannot be asked later.
    outcome = client.get_job_execution_result()
    ledger = os.path.join(out_dir, LEDGER)
    while not outcome.done():
        time.sleep(2)
        if outcome.done():
            break
        calls = sum(1 for _ in open(ledger)) if os.path.exists(ledger) else 0
        failed = " (failure injected, Flink restarted the job)" if os.path.exists(
            os.path.join(out_dir, "failed-once")) else ""
        print(f"  {time.time() - started:5.1f}s  durable calls run: {calls}{failed}",
              flush=True)
    outcome.result()  # raises if the job failed
    data = summary(cfg, out_dir)
    print(f"finished in {time.time() - started:.1f}s", flush=True)
    return report(data, summary_json)


def load(args: argparse.Namespace) -> JobConfig:
    """The configuration of ``--config`` with the ``--parallelism`` and ``--mode``
    overrides of :func:`arguments`."""
    overrides: dict[str, Any] = {}
    if args.parallelism:
        overrides["job.parallelism"] = args.parallelism
    if args.mode:
        overrides["job.execution_mode"] = args.mode
    return load_config(args.config, overrides)


def arguments(description: str) -> argparse.ArgumentParser:
    """The job's command-line options (variants add theirs)."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="conf/local.yaml")
    p.add_argument("--parallelism", type=int, default=0, help="override job.parallelism")
    p.add_argument("--mode", choices=["thread", "process"], help="override execution mode")
    p.add_argument("--from-savepoint", default="", help="resume from this savepoint")
    p.add_argument("--summary-json", default="", help="also write the summary here")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the job; print progress and a summary."""
    p = arguments(__doc__ or "")
    p.add_argument("--fail-after", type=int, default=0,
                   help="fail once in 'respond' for the N-th generated ticket (0: never)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = load(args)
    out_dir = os.path.abspath(cfg.output_dir)
    if not args.from_savepoint:
        prepare_outputs(cfg, out_dir)
    return run(cfg, out_dir, args.fail_after, args.from_savepoint,
               summary_json=args.summary_json)


if __name__ == "__main__":
    sys.exit(main())
