"""The ``kafka`` section of a job configuration and the connector jar lookup (no broker)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flink_agents_ext.config import ConfigError, KafkaSettings, load_config
from flink_agents_ext.connectors import connector_jar
from tests.conftest import ROOT


def test_the_kafka_profile_loads() -> None:
    cfg = load_config(ROOT / "conf" / "kafka.yaml")
    assert cfg.kafka == KafkaSettings("127.0.0.1:59092", "triage-tickets", "triage-results",
                                      "triage-dead-letters", 2, 60_000)
    assert load_config(ROOT / "conf" / "local.yaml").kafka is None
    # Its action records are in Kafka too, on the same broker.
    assert cfg.store["backend"] == "kafka"
    assert cfg.store["bootstrap_servers"] == cfg.kafka.bootstrap_servers


@pytest.mark.parametrize(("key", "value", "message"), [
    ("partitions", 0, "'kafka.partitions' must be >= 1"),
    ("transaction_timeout_ms", "1m", "'kafka.transaction_timeout_ms' must be an integer"),
    ("results_topic", "", "'kafka.results_topic' must be a non-empty string"),
    ("topic", "x", "unknown key(s) in 'kafka': topic"),
])
def test_bad_kafka_settings_name_the_key(tmp_path: Path, key: str, value: object,
                                         message: str) -> None:
    data = yaml.safe_load((ROOT / "conf" / "kafka.yaml").read_text())
    data["kafka"][key] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_missing_bootstrap_is_reported(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "conf" / "kafka.yaml").read_text())
    del data["kafka"]["bootstrap_servers"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"'kafka\.bootstrap_servers' is missing"):
        load_config(path)


def test_connector_jar_override_and_unknown_names(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    jar = tmp_path / "kafka.jar"
    jar.write_bytes(b"PK")
    monkeypatch.setenv("FAE_KAFKA_CONNECTOR_JAR", str(jar))
    assert connector_jar("kafka") == jar.resolve()
    monkeypatch.setenv("FAE_KAFKA_CONNECTOR_JAR", str(tmp_path / "missing.jar"))
    with pytest.raises(FileNotFoundError, match="FAE_KAFKA_CONNECTOR_JAR"):
        connector_jar("kafka")
    with pytest.raises(ValueError, match="unknown connector 'pulsar'"):
        connector_jar("pulsar")
