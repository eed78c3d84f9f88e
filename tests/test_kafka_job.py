"""The main job on Kafka (profile conf/kafka.yaml): tickets from a topic through KafkaSource,
results and dead letters through exactly-once KafkaSinks, with an injected failure."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.triage_kafka import read_committed
from tests.conftest import ROOT, run_module
from tests.kafka_broker import KafkaBroker, kafka  # noqa: F401 (fixture)

pytestmark = pytest.mark.flink

GENERATED, FILE_TICKETS, BAD_LINES = 600, 43, 3


def kafka_config(tmp_path: Path, broker: KafkaBroker, store: dict[str, Any]) -> Path:
    """conf/kafka.yaml on the test broker, with topics, output and store of this test."""
    data = yaml.safe_load((ROOT / "conf" / "kafka.yaml").read_text())
    data["store"] = store
    data["output"]["dir"] = str(tmp_path / "out")
    data["input"]["generate"] = GENERATED
    data["kafka"].update(bootstrap_servers=broker.bootstrap,
                         input_topic=broker.topic("tickets"),
                         results_topic=broker.topic("results"),
                         dead_letters_topic=broker.topic("dead"))
    path = tmp_path / "kafka.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_and_check(tmp_path: Path, broker: KafkaBroker, store: dict[str, Any]) -> dict[str, Any]:
    """Run the job with a failure injected; check every ticket is answered exactly once in
    the committed output and no durable call ran twice; return the summary."""
    cfg_path = kafka_config(tmp_path, broker, store)
    summary_path = tmp_path / "summary.json"
    stdout = run_module("jobs.support_triage", ["--config", str(cfg_path), "--fail-after",
                                                "300", "--summary-json", str(summary_path)])
    assert "durable_calls_run_twice  0" in stdout
    summary = json.loads(summary_path.read_text())
    assert (tmp_path / "out" / "failed-once").exists(), "the failure was injected"
    cfg = yaml.safe_load(cfg_path.read_text())["kafka"]
    results = [json.loads(v) for v in read_committed(broker.bootstrap, cfg["results_topic"])]
    answered = collections.Counter(r["ticket_id"] for r in results)
    expected = {f"G-{n:06d}" for n in range(1, GENERATED + 1)}
    assert expected <= set(answered), "every generated ticket is answered"
    assert len(answered) == GENERATED + FILE_TICKETS - BAD_LINES
    assert max(answered.values()) == 1, "no ticket is answered twice in the committed output"
    dead = [json.loads(v) for v in read_committed(broker.bootstrap,
                                                  cfg["dead_letters_topic"])]
    assert len(dead) == BAD_LINES and all(d["reason"] for d in dead)
    # The failover replayed runs (their outputs were emitted again, inside transactions that
    # were aborted), and no durable call of the replayed runs was repeated.
    assert summary["runs"] > len(answered)
    assert summary["actions_replayed"] > 0
    assert summary["results"] == len(answered) and summary["dead_letters"] == BAD_LINES
    assert summary["durable_calls_run_twice"] == 0
    assert summary["store_records_left"] == 0
    return summary


@pytest.mark.timeout(600)
def test_kafka_job_exactly_once_with_a_failure(tmp_path: Path,
                                               kafka: KafkaBroker) -> None:  # noqa: F811
    """Only a real job proves it: Flink's Kafka source and transactional sink with the
    Kafka action store, across a failover: each ticket answered once in the committed
    output, no durable call repeated."""
    # The profile's own store: action records in Kafka as well (store/kafka.py).
    run_and_check(tmp_path, kafka, {"backend": "kafka", "bootstrap_servers": kafka.bootstrap,
                                    "topic": kafka.topic("actions")})
