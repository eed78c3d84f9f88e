"""A throwaway PostgreSQL server of ``scripts/pg-test-server.sh``, on a free port in its own
directory, for the standalone-cluster test and the chaos runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from scripts import ROOT, free_port, run_server_script

PG_SH = ROOT / "scripts" / "pg-test-server.sh"
#: The password of the server's role (the environment variable the stores read it from is
#: :data:`PASSWORD_ENV`).
PASSWORD = os.environ.get("FAE_PG_PASSWORD", "flink_agents")
PASSWORD_ENV = "FAE_PG_PASSWORD"


class PgServer:
    """A server in ``directory`` (data, log), on ``port`` (default: a free one), without fsync.

    Its stores read the password from :data:`PASSWORD_ENV`: give jobs ``env()``'s value.
    """

    def __init__(self, directory: Path, port: Optional[int] = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.log = directory / "postgres.log"

    def env(self) -> dict[str, str]:
        """The environment of the script (and of jobs on this server: the password)."""
        return {**os.environ, "FAE_PG_PORT": str(self.port), PASSWORD_ENV: PASSWORD,
                "FAE_PG_FSYNC": "off"}

    def _script(self, command: str, timeout: float = 180) -> str:
        return run_server_script(PG_SH, command, self.directory, self.env(), timeout)

    def start(self) -> None:
        """Start a fresh server (stopping one a previous run may have left in the directory)."""
        self._script("stop")
        self._script("start", timeout=300)

    def restart(self) -> None:
        """Restart it (fast shutdown: every session is cut)."""
        self._script("restart")

    def stop(self) -> None:
        """Stop it (a server that is not running is fine)."""
        self._script("stop")

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """Store settings of a job on this server."""
        return {"backend": "postgres", "host": "127.0.0.1", "port": self.port,
                "dbname": "flink_agents", "user": "flink_agents",
                "password_env": PASSWORD_ENV, "retries": 8, **overrides}
