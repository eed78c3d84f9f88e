"""Running one measurement on one side: the job in a subprocess (``scripts/jobrun.py``), its
probe file turned into figures (:func:`bench.anchor.probe.summarise`), and the store it
left inspected (:mod:`bench.anchor.stores`).

A side is ``"anchor"`` (Apache Flink Agents 0.3.1, its Kafka action-state store) or one of
our stores: ``"sqlite"``, ``"postgres"``, ``"kafka"``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from bench.anchor import probe, stores
from scripts.jobrun import JobResult, run_job

OURS = ("sqlite", "postgres", "kafka")
#: Partitions of both sides' Kafka topics (the anchor's default would be 64).
PARTITIONS = 4


@dataclass
class Services:
    """Where the stores live for one benchmark run."""

    bootstrap: str
    kafka_dir: Optional[Path]
    pg: dict[str, Any]
    work: Path
    anchor_python: Optional[str]
    #: Called with the job's process while it runs (profiling), or ``None``.
    monitor: Optional[Callable[[Any], None]] = None


@dataclass
class Outcome:
    """What one run measured."""

    side: str
    case: str
    ok: bool
    figures: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0


def store_config(side: str, services: Services, tag: str) -> tuple[dict[str, Any], str]:
    """Our store configuration for one run (a fresh file, schema or topic), and the
    namespace."""
    if side == "sqlite":
        return {"backend": "sqlite", "path": str(services.work / f"{tag}.db")}, "bench"
    if side == "postgres":
        return {**services.pg, "schema": tag.replace("-", "_")}, "bench"
    if side == "kafka":
        return {"backend": "kafka", "bootstrap_servers": services.bootstrap,
                "topic": f"fae-{tag}", "partitions": PARTITIONS}, "bench"
    raise ValueError(f"unknown side {side!r}")


def _job_error(job: JobResult, timeout: float) -> str:
    text = job.describe(timeout)
    lines = [line for line in text.splitlines() if line.strip()]
    causes = [line for line in lines if "Error" in line or "Exception" in line]
    return "\n".join(causes[-6:] if causes else lines[-12:])


def run(side: str, case: str, services: Services, *, n: int, keys: int,
        in_flight: int = 0, call_s: float = 1.0, fail_at: int = 0, timeout: float = 600,
        inspect: bool = False) -> Outcome:
    """Run ``case`` (``trivial`` or ``slow``) on ``side``; with ``fail_at`` a failure is
    injected there (recovery); with ``inspect`` the store is measured after the run."""
    tag = f"{case}-{side}-{uuid.uuid4().hex[:8]}"
    probe_path = str(services.work / f"{tag}.probe")
    common = ["--case", case, "--n", n, "--keys", keys, "--call-s", call_s,
              "--fail-at", fail_at, "--probe", probe_path]
    env = dict(os.environ)
    if side == "anchor":
        if services.anchor_python is None:
            return Outcome(side, case, False, error="the anchor is not installed")
        topic = f"fae-anchor-{tag}"
        argv = [*common, "--bootstrap", services.bootstrap, "--topic", topic,
                "--partitions", PARTITIONS, "--threads", max(in_flight, 1)]
        started = time.time()
        job = run_job("bench.anchor.anchor_job", argv, timeout=timeout, env=env,
                      python=services.anchor_python, monitor=services.monitor)
        restarts = anchor_topic_check_failures(services.anchor_python, started)
    else:
        config, namespace = store_config(side, services, tag)
        stats_path = str(services.work / f"{tag}.stats")
        argv = [*common, "--store", json.dumps(config), "--namespace", namespace,
                "--max-in-flight", in_flight, "--stats", stats_path]
        job = run_job("bench.anchor.ours_job", argv, timeout=timeout, env=env,
                      monitor=services.monitor)
    rows = probe.read(probe_path)
    summary = probe.summarise(rows, n)
    out = Outcome(side, case, job.ok, dict(summary), seconds=job.seconds)
    if side == "anchor":
        out.figures["topic_check_failures"] = restarts
    if not job.ok:
        out.error = _job_error(job, timeout)
        return out
    if summary["rate"] is None:
        out.ok, out.error = False, f"the probe saw no complete run: {rows[-5:]}"
        return out
    if inspect:
        out.figures["store"] = {"run": tag, **inspect_store(side, services, tag)}
        out.figures["runs"] = n
        if side != "anchor":
            with open(stats_path) as fh:
                out.figures["stats"] = [json.loads(line) for line in fh if line.strip()][-1]
    return out


def anchor_topic_check_failures(python: str, since: float) -> Optional[int]:
    """How often the anchor's store failed to open in a run: its topic check waits 100 ms
    for the broker's topic list (``KafkaActionStateStore.maybeCreateTopic``), and each miss
    fails the task (a restart). Counted in the local Flink logs written since ``since``."""
    logs = list((Path(python).parent.parent / "lib").glob(
        "python3*/site-packages/pyflink/log/flink-*.log"))
    count = 0
    for log in logs:
        if log.stat().st_mtime >= since:
            count += log.read_text(errors="replace").count(
                "ERROR org.apache.flink.agents.runtime.actionstate.KafkaActionStateStore [] - "
                "Failed to create or verify Kafka topic")
    return count if logs else None


def inspect_store(side: str, services: Services, tag: str) -> dict[str, Any]:
    """(d) for the store of run ``tag``."""
    try:
        if side == "anchor":
            return stores.kafka_topic(services.bootstrap, f"fae-anchor-{tag}",
                                      services.kafka_dir)
        config, namespace = store_config(side, services, tag)
        if side == "kafka":
            result = stores.kafka_topic(services.bootstrap, config["topic"],
                                        services.kafka_dir)
            result["records"] = stores.sql_store(config, namespace)["records"]
            return result
        return stores.sql_store(config, namespace)
    except Exception as exc:  # a failed inspection is reported, not fatal
        return {"error": f"{type(exc).__name__}: {exc}"}


def work_dir() -> Path:
    """A fresh directory for one benchmark run's files (SQLite stores, probe files)."""
    return Path(tempfile.mkdtemp(prefix="fae-anchor-bench-"))
