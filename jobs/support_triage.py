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

``--chaos SPEC`` and ``--chaos-bad-input`` install the fault-injection hooks of ``make chaos``
(``chaos/inject.py``); without them the job does not import ``chaos``.
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
from collections import Counter
from typing import Any, Iterator, Optional, Sequence

from pyflink.common import Configuration, Encoder, Types, WatermarkStrategy
from pyflink.datastream import ProcessFunction, StreamExecutionEnvironment
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

MAX_TICKET_BYTES = 16 * 1024
CUSTOMERS = ["acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka",
             "cyberdyne", "tyrell", "soylent", "oscorp"]
TEXTS = ["Cannot log in since this morning", "Invoice shows a double charge!",
         "How do I export my data?", "The API returns 500 errors!!", "Please cancel my plan",
         "Feature request: dark mode", "Payment failed twice", "Outage in EU region!",
         "Password reset email never arrives", "Upgrade to enterprise tier"]


# -- the "model" and "tools": deterministic, local, and logged on every real execution ----
def _side_effect(out_dir: str, call: str, ticket_id: str) -> None:
    with open(os.path.join(out_dir, "side_effects.jsonl"), "a") as fh:
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


def build(env: StreamExecutionEnvironment, cfg: JobConfig, out_dir: str,
          fail_after: int, chaos: Optional[str] = None, chaos_bad_input: bool = False) -> None:
    """Build the pipeline on ``env`` (``chaos``, ``chaos_bad_input``: see ``chaos/inject.py``)."""
    chaos_mode = chaos is not None or chaos_bad_input
    if chaos_mode:
        # -- chaos (make chaos): everything before the agent runs with parallelism 1, so each
        # key's tickets arrive in the same order in every run, whatever the parallelism.
        env.set_parallelism(1)
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

        def make(n: int) -> str:
            if pause:
                time.sleep(pause)
            return generated_ticket(int(n))

        gen = env.from_source(NumberSequenceSource(1, cfg.generate),
                              WatermarkStrategy.no_watermarks(), "generated-tickets") \
            .uid("generated-tickets").map(make, output_type=Types.STRING()).uid("generate")
        lines = gen if lines is None else lines.union(gen)
    assert lines is not None
    parsed = lines.process(ParseTicket()).uid("parse").name("parse")
    triage_agent = build_agent(out_dir, fail_after)
    function_cls: Any = TriageFunction
    store: Any = cfg.store_settings()
    if chaos_mode:
        # -- chaos hooks (chaos/inject.py): failure points, bad-input tickets. Keys are
        # pickled here (no key type), so that an unencodable one reaches the agent.
        from chaos.inject import ChaosHooks

        hooks = ChaosHooks(chaos or "none", chaos_bad_input, out_dir, page_oncall, page_id)
        triage_agent, function_cls, store = hooks.instrument(triage_agent, TriageFunction,
                                                             store)
        keyed = parsed.key_by(hooks.key_selector())
        env.set_parallelism(cfg.parallelism)
    else:
        keyed = parsed.key_by(lambda t: t["customer"], key_type=Types.STRING())
    agent = function_cls(
        triage_agent, store, cfg.namespace,
        retention=cfg.retention, stats_dir=os.path.join(out_dir, "stats"))
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


def _part_lines(directory: str) -> list[str]:
    lines: list[str] = []
    for path in glob.glob(os.path.join(directory, "*", "part-*")):
        with open(path) as fh:
            lines += [line for line in fh.read().splitlines() if line]
    return lines


def summary(cfg: JobConfig, out_dir: str) -> dict[str, Any]:
    """What the run did, from its outputs, side-effect ledger, stats files and store."""
    stats: Counter[str] = Counter()
    for path in glob.glob(os.path.join(out_dir, "stats", "*.json")):
        with open(path) as fh:
            data = json.load(fh)
        data.pop("store_records", None)
        stats.update(data)
    calls: Counter[tuple[str, str]] = Counter()
    ledger = os.path.join(out_dir, "side_effects.jsonl")
    if os.path.exists(ledger):
        with open(ledger) as fh:
            calls.update((e["call"], e["ticket"]) for e in map(json.loads, fh))
    with open_store(cfg.store_settings()) as store:
        records_left = store.size(cfg.namespace)
    if cfg.kafka:  # the outputs as a read_committed consumer sees them
        from jobs.triage_kafka import read_committed

        results = read_committed(cfg.kafka.bootstrap_servers, cfg.kafka.results_topic)
        dead = read_committed(cfg.kafka.bootstrap_servers, cfg.kafka.dead_letters_topic)
    else:
        results = _part_lines(os.path.join(out_dir, "results"))
        dead = _part_lines(os.path.join(out_dir, "dead_letters"))
    return {
        "results": len(results),
        "dead_letters": len(dead),
        "runs": stats["runs"],
        "actions_run": stats["actions_run"],
        "actions_replayed": stats["actions_replayed"],
        "durable_calls_run": sum(calls.values()),
        "durable_calls_replayed": stats["durable_calls_replayed"],
        "durable_calls_run_twice": sum(1 for v in calls.values() if v > 1),
        "records_pruned": stats["records_pruned"],
        "store_records_left": records_left,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the job; print progress and a summary."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="conf/local.yaml")
    p.add_argument("--fail-after", type=int, default=0,
                   help="fail once in 'respond' for the N-th generated ticket (0: never)")
    p.add_argument("--parallelism", type=int, default=0, help="override job.parallelism")
    p.add_argument("--mode", choices=["thread", "process"], help="override execution mode")
    p.add_argument("--from-savepoint", default="", help="resume from this savepoint")
    p.add_argument("--summary-json", default="", help="also write the summary here")
    # -- fault injection (chaos/, make chaos) -------------------------------------------------
    p.add_argument("--chaos", metavar="SPEC",
                   help="inject one failure: none or POINT:TARGET:TRIGGER (chaos/inject.py)")
    p.add_argument("--chaos-bad-input", action="store_true",
                   help="tickets with a 'chaos' field turn bad in the agent (chaos/inputs.py)")
    # -- standalone cluster (scripts/cluster.sh) ---------------------------------------------
    p.add_argument("--detach", action="store_true",
                   help="submit the job, print 'JOB_ID <id>' and return at once (for "
                        "'flink run -d'); no progress, no summary")
    p.add_argument("--summary-only", action="store_true",
                   help="run no job: print the summary of the configured output dir and "
                        "store (e.g. after a cluster job finished)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    overrides: dict[str, Any] = {}
    if args.parallelism:
        overrides["job.parallelism"] = args.parallelism
    if args.mode:
        overrides["job.execution_mode"] = args.mode
    cfg = load_config(args.config, overrides)
    out_dir = os.path.abspath(cfg.output_dir)
    if args.summary_only:
        return _report(summary(cfg, out_dir), args.summary_json)
    if not args.from_savepoint:
        # A fresh run: start from empty outputs and an empty namespace.
        for sub in ("results", "dead_letters", "stats"):
            shutil.rmtree(os.path.join(out_dir, sub), ignore_errors=True)
        for name in ("side_effects.jsonl", "failed-once", "chaos-fired.json",
                     "reconciled.jsonl", "chaos-restores.jsonl"):
            if os.path.exists(os.path.join(out_dir, name)):
                os.remove(os.path.join(out_dir, name))
        with open_store(cfg.store_settings()) as store:
            store.clear_namespace(cfg.namespace)
    os.makedirs(out_dir, exist_ok=True)
    if cfg.kafka:
        from jobs.triage_kafka import prepare_topics

        prepare_topics(cfg.kafka, input_tickets(cfg), fresh=not args.from_savepoint)

    env = make_env(cfg, args.from_savepoint or None)
    build(env, cfg, out_dir, args.fail_after, args.chaos, args.chaos_bad_input)
    total = cfg.generate + (sum(1 for _ in open(cfg.input_path)) if cfg.input_path and
                            os.path.isfile(cfg.input_path) else 0)
    where = (f"topics {cfg.kafka.input_topic} -> {cfg.kafka.results_topic}, "
             f"{cfg.kafka.dead_letters_topic} at {cfg.kafka.bootstrap_servers}"
             if cfg.kafka else f"output {out_dir}")
    print(f"support-triage: {total} tickets, {cfg.execution_mode} mode, parallelism "
          f"{cfg.parallelism}, checkpoint every {cfg.checkpoint_interval_ms} ms, store "
          f"{cfg.store['backend']}, {where}"
          + (f", failure injected at ticket G-{args.fail_after:06d}" if args.fail_after
             else "") + (f", chaos {args.chaos}" if args.chaos else ""), flush=True)
    started = time.time()
    client = env.execute_async(cfg.name)
    if args.detach:
        # 'flink run -d': the job runs on the cluster; the client only reports its id.
        print(f"JOB_ID {client.get_job_id()}", flush=True)
        return 0
    # Taken now: a local mini-cluster shuts down with its job, and cannot be asked later.
    outcome = client.get_job_execution_result()
    ledger = os.path.join(out_dir, "side_effects.jsonl")
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
    report = summary(cfg, out_dir)
    print(f"finished in {time.time() - started:.1f}s", flush=True)
    return _report(report, args.summary_json)


def _report(report: dict[str, Any], summary_json: str) -> int:
    """Print the summary (and write it as JSON when asked); 1 if a durable call ran twice."""
    width = max(map(len, report))
    for name, value in report.items():
        print(f"  {name:<{width}}  {value}")
    if summary_json:
        with open(summary_json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0 if report["durable_calls_run_twice"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
