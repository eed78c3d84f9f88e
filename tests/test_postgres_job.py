"""A job on the PostgreSQL store survives a restart of the database server mid-run."""

from __future__ import annotations

import collections
import glob
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from flink_agents_ext.store.postgres import PostgresStore
from tests.conftest import JOB_TIMEOUT_S, ROOT
from tests.pg_server import PASSWORD_ENV, PgServer, pg  # noqa: F401 (fixture)

pytestmark = pytest.mark.flink


@pytest.mark.timeout(600)
def test_postgres_restart_while_job_runs(tmp_path: Path, pg: PgServer) -> None:  # noqa: F811
    """Only a real job proves it: a running job's store connections die with the server
    restart and reconnect with backoff, without a failover, losing or repeating nothing."""
    n, out, namespace = 2400, tmp_path / "run", f"pg-job-{uuid.uuid4().hex[:8]}"
    store = {"backend": "postgres", "host": pg.host, "port": pg.port, "dbname": pg.dbname,
             "user": pg.user, "password_env": PASSWORD_ENV, "retries": 8,
             "schema": pg.schema}
    cmd = [sys.executable, "-m", "tests.jobs.durable_probe", "--out", str(out),
           "--store", json.dumps(store), "--namespace", namespace, "--n", str(n),
           "--delay", "0.004", "--interval", "300"]
    job = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, env={**os.environ, PASSWORD_ENV: pg.password})
    try:
        ledger = out / "ledger.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and job.poll() is None:
            if ledger.exists() and sum(1 for _ in ledger.open()) > n // 2:
                break
            time.sleep(0.1)
        assert job.poll() is None, f"the job ended before the restart:\n{job.stdout.read()}"
        pg.control("restart")  # the store's connections die; it reconnects with backoff
        output, _ = job.communicate(timeout=JOB_TIMEOUT_S)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, output[-6000:]
    with open(out / "ledger.jsonl") as fh:
        calls = collections.Counter((e["key"], e["seq"], e["pos"]) for e in map(json.loads, fh))
    assert sum(calls.values()) == 2 * n and max(calls.values()) == 1
    lines = []
    for part in glob.glob(str(out / "sink" / "*" / "part-*")):
        lines += Path(part).read_text().splitlines()
    assert len(lines) == n and len(set(lines)) == n
    with PostgresStore(**{k: v for k, v in store.items() if k != "backend"}) as s:
        assert s.size(namespace) == 0, "every completed, checkpointed record was pruned"
        assert s.get_prune_boundary(namespace) is not None
