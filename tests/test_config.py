"""YAML configuration: the shipped profiles load, and bad files get clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flink_agents_ext.config import ConfigError, load_config
from flink_agents_ext.store import (
    BACKENDS,
    COMMIT_SETTINGS,
    GroupCommitStore,
    StoreConfigError,
    check_store_config,
    open_store,
)

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


def test_on_foreign_lineage_is_read_and_checked(tmp_path: Path) -> None:
    assert load_config(ROOT / "conf" / "local.yaml").on_foreign_lineage == "reclaim"
    data = base()
    data["job"]["on_foreign_lineage"] = "refuse"
    assert load_config(write(tmp_path, data)).on_foreign_lineage == "refuse"
    del data["job"]["on_foreign_lineage"]
    assert load_config(write(tmp_path, data)).on_foreign_lineage == "reclaim"
    data["job"]["on_foreign_lineage"] = "ignore"
    with pytest.raises(ConfigError, match=r"'job\.on_foreign_lineage' must be one of"):
        load_config(write(tmp_path, data))


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
    data["store"]["backend"] = "redis"
    with pytest.raises(ConfigError, match=r"'store\.backend' must be one of sqlite, postgres, "
                                          r"kafka; got 'redis'"):
        load_config(write(tmp_path, data))


def test_kafka_store_section(tmp_path: Path) -> None:
    data = base()
    data["store"] = {"backend": "kafka", "bootstrap_servers": "broker:9092",
                     "topic": "actions", "partitions": 8, "recovery": "full_scan",
                     "timeout_s": 10, "create_topics": False, "replication_factor": 3}
    assert load_config(write(tmp_path, data)).store == data["store"]
    data["store"] = {"backend": "kafka", "bootstrap_servers": "broker:9092"}
    assert load_config(write(tmp_path, data)).store == data["store"]
    for key, value, message in [
            ("bootstrap_servers", None, r"'store\.bootstrap_servers' is missing"),
            ("partitions", 0, r"'store\.partitions' must be an integer >= 1"),
            ("recovery", "lazy", r"'store\.recovery' must be one of marker, full_scan"),
            ("create_topics", "yes", r"'store\.create_topics' must be true or false"),
            ("path", "x.db", r"unknown key\(s\) in 'store': path")]:
        data["store"] = {"backend": "kafka", "bootstrap_servers": "broker:9092", key: value}
        with pytest.raises(ConfigError, match=message):
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
    with pytest.raises(ConfigError,
                       match=r"'checkpoints\.retention' must be an integer >= 1, got 0"):
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
    assert "commit" not in load_config(ROOT / "conf" / "local.yaml").store  # default: each
    data = base()
    data["store"].update(commit="group", commit_interval_ms=20,
                         path=str(tmp_path / "actions.db"))
    settings = load_config(write(tmp_path, data)).store_settings()
    assert (settings["commit"], settings["commit_interval_ms"]) == ("group", 20)
    with open_store(settings) as store:  # the defaults are the store's own
        assert isinstance(store, GroupCommitStore)
        assert (store.interval_s, store.max_records) == (0.02, 10_000)
    data["store"]["commit"] = "never"
    with pytest.raises(ConfigError, match=r"'store\.commit' must be one of each, group"):
        load_config(write(tmp_path, data))
    data = base()
    data["store"]["commit_max_records"] = 5
    with pytest.raises(ConfigError, match=r"'store\.commit_max_records' is set but commit is "
                                          r"each \(.* need commit: group\)"):
        load_config(write(tmp_path, data))
    data = base()
    data["store"].update(commit="group", commit_interval_ms=0)
    with pytest.raises(ConfigError,
                       match=r"'store\.commit_interval_ms' must be an integer >= 1, got int 0"):
        load_config(write(tmp_path, data))


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_store_section_accepts_exactly_the_declared_settings(tmp_path: Path,
                                                            backend: str) -> None:
    # Every setting open_store accepts is accepted in YAML, and nothing else.
    declared = [s.name for s in (*BACKENDS[backend].settings, *COMMIT_SETTINGS)]
    data = base()
    data["store"] = {"backend": backend, **{name: VALUES[name] for name in declared}}
    assert load_config(write(tmp_path, data)).store_settings() == data["store"]
    data["store"]["bogus"] = 1
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in 'store': bogus"):
        load_config(write(tmp_path, data))


#: A valid value of every declared store setting.
VALUES = {"path": "x.db", "synchronous": "FULL", "busy_timeout_ms": 500, "host": "db",
          "port": 5432, "dbname": "d", "user": "u", "password_env": "PW",
          "connect_timeout_s": 2.5, "retries": 1, "backoff_s": 0.5, "schema": "jobs",
          "bootstrap_servers": "broker:9092", "topic": "actions", "partitions": 8,
          "replication_factor": 3, "recovery": "full_scan", "timeout_s": 10,
          "create_topics": False,
          "commit": "group", "commit_interval_ms": 10, "commit_max_records": 100}


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("busy_timeout_ms", -1, r"'store\.busy_timeout_ms' must be an integer >= 0, got int -1"),
    ("synchronous", "SOMETIMES", r"'store\.synchronous' must be one of OFF, NORMAL"),
    ("path", "", r"'store\.path' must be a non-empty string"),
])
def test_store_values_are_checked_as_the_store_checks_them(tmp_path: Path, setting: str,
                                                           value: object, message: str) -> None:
    data = base()
    data["store"][setting] = value
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, data))
    with pytest.raises(StoreConfigError, match=f"'{setting}'"):
        check_store_config({"backend": "sqlite", "path": "x.db", setting: value})
