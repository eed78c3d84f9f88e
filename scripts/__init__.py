"""Python tooling of the repository's scripts, shared by tests, benchmarks and chaos.

* :mod:`scripts.jobrun`: the one way to run a Flink job in a subprocess (hard timeout, own
  process group, optional monitor, detection of the known PyFlink process-mode race);
* :mod:`scripts.jvmfast`: JVM options that start a short job's mini-cluster faster (tests,
  chaos; never benchmarks);
* :mod:`scripts.pgserver`: a throwaway PostgreSQL server of ``scripts/pg-test-server.sh``;
* :mod:`scripts.kafkaserver`: a throwaway Kafka broker of ``scripts/kafka-test-server.sh``;
* :mod:`scripts.cluster`: a standalone cluster of ``scripts/cluster.sh``, from Python;
* :mod:`scripts.cluster_tool`: the Python that ``scripts/cluster.sh`` itself calls (Flink
  configuration, the package zip, REST answers shown as text).
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Mapping

#: The repository root.
ROOT = Path(__file__).resolve().parent.parent
#: The Python of this environment (the venv's), for every job and script started.
PY = sys.executable


class ToolError(Exception):
    """A tool (a script, a server, a cluster) could not do what it was asked; the message
    says what and where its output is."""


def free_port() -> int:
    """A free TCP port on localhost."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_server_script(script: Path, command: str, directory: Path, env: Mapping[str, str],
                      timeout: float) -> str:
    """Run ``bash script command directory`` (a throwaway server's script) with ``env``;
    return its stdout; raise :class:`ToolError` when it fails or does not return in
    ``timeout`` seconds."""
    try:
        proc = subprocess.run(["bash", str(script), command, str(directory)], env=dict(env),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"{script.name} {command} did not return in {timeout}s") from exc
    if proc.returncode != 0:
        raise ToolError(f"{script.name} {command} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout
