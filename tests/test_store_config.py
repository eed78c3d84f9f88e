"""The store configuration is checked when the function is built, before any job starts:
:func:`check_store_config` on real paths, and :class:`DurableAgentFunction` calling it."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from flink_agents_ext.actions import INPUT, Agent, DurableAgentFunction
from flink_agents_ext.store import SQLiteStore, StoreConfigError, StoreError, check_store_config


def agent() -> Agent:
    a = Agent("cfg")

    @a.action(on=INPUT)
    def echo(event: Any, ctx: Any) -> None:
        ctx.emit(event)

    return a


def build(store: Any) -> DurableAgentFunction:
    return DurableAgentFunction(agent(), store, namespace="ns")


@pytest.mark.parametrize(("store", "setting", "message"), [
    ({"backend": "sqlit", "path": "x.db"}, "backend",
     r"'backend' must be one of \['sqlite', 'postgres', 'kafka'\], got 'sqlit'"),
    ({"backend": "sqlite"}, "path", r"'path' is missing"),
    ({"backend": "sqlite", "path": "x.db", "synchronous": "fast"}, "synchronous",
     r"'synchronous' must be one of OFF, NORMAL, FULL, EXTRA, got str 'fast'"),
    ({"backend": "sqlite", "path": "x.db", "busy_timeout_ms": "5"}, "busy_timeout_ms",
     r"'busy_timeout_ms' must be an integer >= 0, got str '5'"),
    ({"backend": "postgres", "host": "db", "port": 0, "dbname": "d", "user": "u"}, "port",
     r"'port' must be an integer in 1..65535, got int 0"),
    ({"backend": "postgres", "port": 5432, "dbname": "d", "user": "u"}, "host",
     r"'host' is missing"),
    ({"backend": "sqlite", "path": "x.db", "commit": "group", "commit_interval_ms": 0},
     "commit_interval_ms", r"'commit_interval_ms' must be an integer >= 1"),
])
def test_bad_store_config_fails_when_the_function_is_built(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: dict[str, Any], setting: str,
        message: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreConfigError, match=message) as info:
        build(store)
    assert info.value.setting == setting
    assert list(tmp_path.iterdir()) == []  # nothing was opened or created


def test_unknown_setting_is_named(tmp_path: Path) -> None:
    with pytest.raises(StoreConfigError, match=r"unknown store setting\(s\) 'pth'"):
        build({"backend": "sqlite", "path": str(tmp_path / "a.db"), "pth": "b.db"})


def test_directory_as_sqlite_path(tmp_path: Path) -> None:
    with pytest.raises(StoreConfigError, match=f"'path' is a directory: {tmp_path}"):
        build({"backend": "sqlite", "path": str(tmp_path)})


def test_sqlite_path_below_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    path = blocker / "sub" / "a.db"
    with pytest.raises(StoreConfigError,
                       match=f"'path' cannot be created: {blocker} is not a directory"):
        build({"backend": "sqlite", "path": str(path)})
    check_store_config({"backend": "sqlite", "path": str(path)}, environment=False)
    with pytest.raises(StoreError, match="cannot create directory"):  # found by the task
        SQLiteStore(str(path))


def _check_as(uid: int | None, path: str) -> str:
    """The message of the StoreConfigError building a function on ``path`` raises, checked in a
    forked child running as ``uid`` (None: this process's user)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges, build, report, exit without pytest's teardown
        os.close(read)
        try:
            if uid is not None:
                os.setgid(uid)
                os.setuid(uid)
            try:
                build({"backend": "sqlite", "path": path})
                out = "accepted"
            except StoreConfigError as exc:
                out = f"{exc.setting}|{exc}"
        except BaseException as exc:  # reported to the parent
            out = f"error|{exc!r}"
        os.write(write, out.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        out = pipe.read()
    os.waitpid(pid, 0)
    return out


def test_unwritable_sqlite_directory() -> None:
    """A directory the job's user cannot write into is refused when the function is built. Root
    may write anywhere, so the check runs in a forked child as an unprivileged user (nobody)."""
    top = Path(tempfile.mkdtemp(prefix="fae-unwritable-"))
    top.chmod(0o755)
    locked = top / "locked"
    locked.mkdir(mode=0o555)
    try:
        out = _check_as(65534 if os.geteuid() == 0 else None, str(locked / "deeper" / "a.db"))
        setting, _, message = out.partition("|")
        assert setting == "path", out
        assert re.search(r"'path' cannot be created: directory .*locked is not writable",
                         message), message
    finally:
        locked.chmod(0o700)
        shutil.rmtree(top)


def test_good_configs_pass_without_touching_anything(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dirs" / "a.db"
    fn = build({"backend": "sqlite", "path": str(path), "synchronous": "full",
                "commit": "group", "commit_max_records": 10})
    assert fn.store_spec["path"] == str(path)
    assert not (tmp_path / "new").exists()
    check_store_config({"backend": "sqlite", "path": ":memory:"})
    # PostgreSQL: the settings only; the server and the password variable are the task's.
    check_store_config({"backend": "postgres", "host": "nowhere.invalid", "port": 5432,
                        "dbname": "d", "user": "u", "password_env": "FAE_NO_SUCH_VARIABLE"})
    # Kafka: the settings only; the brokers are the task's.
    check_store_config({"backend": "kafka", "bootstrap_servers": "nowhere.invalid:9092",
                        "recovery": "full_scan", "commit": "group"})
    build(lambda: SQLiteStore(":memory:"))  # a factory is the caller's business


def test_not_a_mapping() -> None:
    with pytest.raises(StoreConfigError, match="mapping or a factory"):
        build("sqlite:///x.db")
    with pytest.raises(StoreConfigError, match="must be a mapping"):
        check_store_config("sqlite:///x.db")  # type: ignore[arg-type]
