"""YAML configuration: the shipped profiles load, and bad files get clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flink_agents_ext.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def base() -> dict:
    return yaml.safe_load((ROOT / "conf" / "local.yaml").read_text())


def test_shipped_profiles_load() -> None:
    local = load_config(ROOT / "conf" / "local.yaml")
    assert local.store["backend"] == "sqlite" and local.execution_mode == "thread"
    cluster = load_config(ROOT / "conf" / "cluster.yaml")
    assert cluster.store["backend"] == "postgres"
    assert cluster.store["password_env"] == "FAE_PG_PASSWORD"
    assert "password" not in cluster.store


def test_missing_key_is_named(tmp_path: Path) -> None:
    data = base()
    del data["job"]["namespace"]
    with pytest.raises(ConfigError, match=r"'job\.namespace' is missing \(expected a string\)"):
        load_config(write(tmp_path, data))


def test_wrong_type_is_named(tmp_path: Path) -> None:
    data = base()
    data["checkpoints"]["interval_ms"] = "often"
    with pytest.raises(ConfigError,
                       match=r"'checkpoints\.interval_ms' must be an integer, got str 'often'"):
        load_config(write(tmp_path, data))
    data = base()
    data["job"]["parallelism"] = True
    with pytest.raises(ConfigError, match=r"'job\.parallelism' must be an integer, got bool"):
        load_config(write(tmp_path, data))


def test_unknown_backend_is_named(tmp_path: Path) -> None:
    data = base()
    data["store"]["backend"] = "kafka"
    with pytest.raises(ConfigError,
                       match=r"'store\.backend' must be one of sqlite, postgres; got 'kafka'"):
        load_config(write(tmp_path, data))


def test_other_errors(tmp_path: Path) -> None:
    data = base()
    data["job"]["execution_mode"] = "fiber"
    with pytest.raises(ConfigError, match="execution_mode"):
        load_config(write(tmp_path, data))
    data = base()
    data["store"]["pasword_env"] = "X"
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in 'store': pasword_env"):
        load_config(write(tmp_path, data))
    data = base()
    data["checkpoints"]["retention"] = 0
    with pytest.raises(ConfigError, match=r"'checkpoints\.retention' must be >= 1"):
        load_config(write(tmp_path, data))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "job: [unclosed"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    data = base()
    data["input"] = {"generate": 0}
    with pytest.raises(ConfigError, match="'input' needs a 'path' or 'generate'"):
        load_config(write(tmp_path, data))


def test_overrides_apply_and_are_checked(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "conf" / "local.yaml", {"job.parallelism": 3})
    assert cfg.parallelism == 3
    with pytest.raises(ConfigError, match=r"job\.parallelism"):
        load_config(ROOT / "conf" / "local.yaml", {"job.parallelism": "3"})


def test_store_commit_settings(tmp_path: Path) -> None:
    assert load_config(ROOT / "conf" / "local.yaml").store["commit"] == "each"
    data = base()
    data["store"].update(commit="group", commit_interval_ms=20)
    store = load_config(write(tmp_path, data)).store
    assert (store["commit"], store["commit_interval_ms"], store["commit_max_records"]) == \
        ("group", 20, 10_000)
    data["store"]["commit"] = "never"
    with pytest.raises(ConfigError, match=r"'store\.commit' must be one of each, group"):
        load_config(write(tmp_path, data))
    data = base()
    data["store"]["commit_max_records"] = 5
    with pytest.raises(ConfigError, match=r"need store\.commit: group"):
        load_config(write(tmp_path, data))
    data = base()
    data["store"].update(commit="group", commit_interval_ms=0)
    with pytest.raises(ConfigError, match=r"'store\.commit_interval_ms' must be >= 1"):
        load_config(write(tmp_path, data))
