"""A standalone Flink cluster of ``scripts/cluster.sh``, from Python: in its own cluster
directory, on free ports (so that it neither disturbs nor is disturbed by a cluster started
with ``make cluster-start``). Used by the standalone-cluster test and the chaos runs.

Every call is bounded; a failure raises :class:`scripts.ToolError` with the script's output
and the end of the cluster's logs.
"""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from scripts import PY, ROOT, ToolError, free_port
from scripts.pgserver import PASSWORD, PASSWORD_ENV

CLUSTER_SH = ROOT / "scripts" / "cluster.sh"
#: States of a job that has not ended yet.
LIVE_STATES = ("CREATED", "INITIALIZING", "RUNNING", "RESTARTING")


class Cluster:
    """The cluster of ``directory`` (``FAE_CLUSTER_DIR``); ``env``: the environment its
    daemons and clients inherit (default: this process's)."""

    def __init__(self, directory: Path, env: Optional[Mapping[str, str]] = None) -> None:
        self.directory = directory
        self.rest_port = free_port()
        self.env = {**(env or os.environ), "FAE_CLUSTER_DIR": str(directory), "FAE_PYTHON": PY,
                    "FAE_REST_PORT": str(self.rest_port), "FAE_JM_RPC_PORT": str(free_port()),
                    PASSWORD_ENV: PASSWORD}
        self.flink = directory / "flink"

    # -- the script ---------------------------------------------------------------------------
    def sh(self, *args: str, timeout: float = 240,
           env: Optional[Mapping[str, str]] = None) -> str:
        """``scripts/cluster.sh ARGS`` (checked, bounded); its stdout."""
        what = f"cluster.sh {' '.join(args)}"
        try:
            proc = subprocess.run(["bash", str(CLUSTER_SH), *args], cwd=ROOT,
                                  env=dict(env or self.env), capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise ToolError(f"{what} did not return in {timeout}s:\n{exc.stdout or ''}\n"
                            f"{exc.stderr or ''}\n{self.logs()}") from exc
        if proc.returncode != 0:
            raise ToolError(f"{what} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                            f"{proc.stderr[-3000:]}\n{self.logs()}")
        return proc.stdout

    def start(self) -> str:
        """Start it; a cluster an interrupted run left in the directory is stopped first."""
        if (self.flink / "ports").exists():
            env = {k: v for k, v in self.env.items()
                   if k not in ("FAE_REST_PORT", "FAE_JM_RPC_PORT")}
            self.sh("stop", timeout=120, env=env)
        return self.sh("start", timeout=240)

    def stop(self) -> str:
        """Stop it (``cluster.sh stop``: nothing of this cluster is left running)."""
        return self.sh("stop", timeout=120)

    def submit(self, config: Path, *job_args: str, job: Optional[Path] = None) -> str:
        """Submit the main job (or the job script ``job``) with ``cluster.sh submit``; return
        its id."""
        extra = ["--job", str(job)] if job is not None else []
        return self._job_id(self.sh("submit", *extra, "--config", str(config), *job_args))

    def resume(self) -> str:
        """Submit the job again from the savepoint ``savepoint()`` took; return its id."""
        return self._job_id(self.sh("resume"))

    def savepoint(self) -> str:
        """Stop the job with a savepoint (``cluster.sh savepoint``); return its path."""
        stdout = self.sh("savepoint", timeout=200)
        found = re.search(r"^SAVEPOINT (\S+)$", stdout, re.M)
        if not found:
            raise ToolError(f"cluster.sh savepoint printed no SAVEPOINT line:\n{stdout}")
        return found.group(1)

    def wait(self, timeout: int) -> str:
        """Until the job is FINISHED (``cluster.sh wait``); fails when it failed."""
        return self.sh("wait", str(timeout), timeout=timeout + 30)

    @staticmethod
    def _job_id(stdout: str) -> str:
        found = re.search(r"^JOB_ID ([0-9a-f]{32})$", stdout, re.M)
        if not found:
            raise ToolError(f"cluster.sh printed no JOB_ID line:\n{stdout}")
        return found.group(1)

    # -- REST -----------------------------------------------------------------------------------
    def rest(self, path: str) -> Any:
        """GET a REST path (JSON)."""
        url = f"http://localhost:{self.rest_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.load(resp)

    def state(self, job_id: str) -> str:
        """The job's state (``UNREACHABLE`` when the REST API does not answer)."""
        try:
            return str(self.rest(f"/jobs/{job_id}")["state"])
        except OSError:
            return "UNREACHABLE"

    def wait_for_state(self, job_id: str, states: Iterable[str], timeout: float = 60) -> str:
        """Poll until the job is in one of ``states``; return it. The REST API can report a
        job stopped by ``flink stop`` as RUNNING for a moment after the CLI returned."""
        wanted = set(states)
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(job_id)
            if state in wanted:
                return state
            if time.monotonic() > deadline:
                raise ToolError(f"job {job_id} is {state} after {timeout}s, expected one of "
                                f"{sorted(wanted)}")
            time.sleep(0.2)

    def exceptions(self, job_id: str) -> list[str]:
        """The job's failure history (newest first), one line each."""
        try:
            data = self.rest(f"/jobs/{job_id}/exceptions")
        except OSError:
            return []
        entries = (data.get("exceptionHistory") or {}).get("entries") or []
        return [(e.get("stacktrace") or e.get("exceptionName") or "").splitlines()[0][:200]
                for e in entries]

    # -- processes ------------------------------------------------------------------------------
    def processes(self) -> list[str]:
        """Processes still running with this cluster's configuration directory."""
        pattern = re.escape(f"file:{self.flink}/conf/log4j")
        proc = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
        return proc.stdout.split()

    def taskmanager_pids(self) -> list[int]:
        """Live TaskManager JVMs of this cluster (from its pid files)."""
        pids = []
        for path in glob.glob(str(self.flink / "pid" / "flink-*-taskexecutor.pid")):
            for word in Path(path).read_text().split():
                try:
                    cmdline = Path(f"/proc/{int(word)}/cmdline").read_bytes()
                except (OSError, ValueError):
                    continue
                if str(self.flink / "conf").encode() in cmdline:
                    pids.append(int(word))
        return pids

    def kill_taskmanager(self) -> int:
        """``kill -9`` the TaskManager JVM; return its pid once it is gone."""
        pids = self.taskmanager_pids()
        if len(pids) != 1:
            raise ToolError(f"expected one TaskManager process, found {pids}")
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 15
        while Path(f"/proc/{pids[0]}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        return pids[0]

    def start_taskmanager(self) -> None:
        """Start a new TaskManager (``bin/taskmanager.sh start``, as ``cluster.sh`` starts
        the daemons: our configuration, lib and log directories, the repository as cwd)."""
        import pyflink

        home = Path(pyflink.__file__).resolve().parent
        env = {**self.env, "FLINK_CONF_DIR": str(self.flink / "conf"),
               "FLINK_LOG_DIR": str(self.flink / "log"),
               "FLINK_PID_DIR": str(self.flink / "pid"),
               "FLINK_LIB_DIR": str(self.flink / "lib")}
        try:
            proc = subprocess.run(["bash", str(home / "bin" / "taskmanager.sh"), "start"],
                                  cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=60)
        except subprocess.TimeoutExpired as exc:
            raise ToolError("taskmanager.sh start did not return in 60s") from exc
        if proc.returncode != 0:
            raise ToolError(f"taskmanager.sh start failed:\n{proc.stdout}\n{proc.stderr}")

    def logs(self, lines: int = 40) -> str:
        """The end of every log of the cluster."""
        out = []
        for path in sorted(glob.glob(str(self.flink / "log" / "*"))):
            text = Path(path).read_text(errors="replace").splitlines()[-lines:]
            out.append(f"---- {path}\n" + "\n".join(text))
        return "\n".join(out)
