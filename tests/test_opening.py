"""What DurableAgentFunction checks when it opens, driven by the harness: a store that
cannot be opened (not recoverable unless transient), checkpointing off (refused unless
allowed), and stats() of an instance that never opened. The same failures in real jobs:
tests/test_traps_minicluster.py."""

from __future__ import annotations

import logging
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from flink_agents_ext import JobTimeline
from flink_agents_ext.actions import INPUT, ActionContext, Agent, DurableAgentFunction
from flink_agents_ext.actions.metrics import STAT_NAMES
from flink_agents_ext.errors import NOT_RECOVERABLE_MARKER, NotRecoverableError
from flink_agents_ext.keys import encode_key
from flink_agents_ext.store import StoreError
from flink_agents_ext.testing import KeyedFunctionHarness
from tests.pg_server import PASSWORD_ENV, PgServer, pg  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
JAVA = ROOT / "flink_agents_ext" / "java" / "org" / "flinkagentsext" / "NotRecoverable.java"


def agent() -> Agent:
    a = Agent("open")

    @a.action(on=INPUT)
    def echo(value: Any, ctx: ActionContext) -> None:
        ctx.emit(value)

    return a


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_stats_of_an_instance_never_opened_are_zeros(tmp_path):
    fn = DurableAgentFunction(agent(), {"backend": "sqlite", "path": str(tmp_path / "a.db")},
                              "ns")
    assert fn.stats() == {**dict.fromkeys(STAT_NAMES, 0), "store_records": 0}
    h = KeyedFunctionHarness(fn)
    h.process_element("x", key="k")
    assert fn.stats()["runs"] == 1 and fn.stats()["store_records"] == 1


def test_unwritable_store_path_is_not_recoverable(tmp_path):
    blocker = tmp_path / "file"
    fn = DurableAgentFunction(agent(), {"backend": "sqlite", "path": str(blocker / "a.db")},
                              "ns")
    # Fine where the function was built, not where it opens (another machine, say).
    blocker.write_text("not a directory")
    with pytest.raises(NotRecoverableError, match="cannot open the action state store") as err:
        KeyedFunctionHarness(fn)
    assert str(err.value).startswith(NOT_RECOVERABLE_MARKER)
    assert isinstance(err.value.__cause__, StoreError) and not err.value.__cause__.transient


def test_unreachable_postgres_is_transient_so_flink_may_restart(tmp_path):
    store = {"backend": "postgres", "host": "127.0.0.1", "port": closed_port(),
             "dbname": "x", "user": "x", "retries": 0, "connect_timeout_s": 1}
    with pytest.raises(StoreError) as err:
        KeyedFunctionHarness(DurableAgentFunction(agent(), store, "ns"))
    assert err.value.transient and not isinstance(err.value, NotRecoverableError)


def test_refused_postgres_login_is_not_recoverable(pg: PgServer, monkeypatch):  # noqa: F811
    monkeypatch.setenv(PASSWORD_ENV, "wrong-password")
    store = {"backend": "postgres", "host": pg.host, "port": pg.port, "dbname": pg.dbname,
             "user": pg.user, "password_env": PASSWORD_ENV, "retries": 3}
    with pytest.raises(NotRecoverableError, match="password authentication failed"):
        KeyedFunctionHarness(DurableAgentFunction(agent(), store, "ns"))


def test_checkpointing_off_is_refused_unless_allowed(tmp_path, caplog):
    config = {"backend": "sqlite", "path": str(tmp_path / "a.db")}
    off = JobTimeline("job", "job", checkpointing=False)
    with pytest.raises(NotRecoverableError, match="allow_no_checkpointing=True"):
        KeyedFunctionHarness(DurableAgentFunction(agent(), config, "ns"), timeline=off)
    with caplog.at_level(logging.WARNING):
        h = KeyedFunctionHarness(DurableAgentFunction(agent(), config, "ns",
                                                      allow_no_checkpointing=True),
                                 timeline=off)
    assert "NOTHING WILL BE PRUNED" in caplog.text
    assert h.process_element("x", key="k") == ["x"]
    assert h.process_element("y", key="j") == ["y"]
    assert h.function.runs.take_completed() == {}, "no snapshot takes them: not kept"
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        on = KeyedFunctionHarness(DurableAgentFunction(agent(), config, "ns2"))
    assert "PRUNED" not in caplog.text
    on.process_element("x", key="k")
    assert on.function.runs.take_completed() == {encode_key("k"): 0}


def test_marker_is_the_same_in_python_and_java() -> None:
    [java_marker] = re.findall(r'static final String MARKER = "([^"]*)";', JAVA.read_text())
    assert java_marker == NOT_RECOVERABLE_MARKER
    err = NotRecoverableError("bad config")
    assert str(err) == f"{NOT_RECOVERABLE_MARKER} bad config" and err.reason == "bad config"
    assert str(NotRecoverableError(str(err))) == str(err), "the marker is not doubled"
