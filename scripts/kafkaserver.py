"""A throwaway Kafka broker of ``scripts/kafka-test-server.sh``, in its own directory, on a
free port (or ``FAE_KAFKA_TEST_PORT``), for the chaos runs on the Kafka store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from scripts import ROOT, free_port, run_server_script

KAFKA_SH = ROOT / "scripts" / "kafka-test-server.sh"


class KafkaServer:
    """A broker in ``directory`` (data, log)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = int(os.environ.get("FAE_KAFKA_TEST_PORT") or free_port())
        self.bootstrap = f"127.0.0.1:{self.port}"

    def _script(self, command: str, timeout: float = 300) -> str:
        env = {**os.environ, "FAE_KAFKA_PORT": str(self.port)}
        return run_server_script(KAFKA_SH, command, self.directory, env, timeout)

    def start(self) -> None:
        """Start it (a broker left running in the directory is reused)."""
        values = dict(item.split("=", 1) for item in self._script("start").split())
        self.bootstrap = values.get("FAE_KAFKA_BOOTSTRAP", self.bootstrap)

    def stop(self) -> None:
        """Stop it (a broker that is not running is fine)."""
        self._script("stop", timeout=120)

    def settings(self, topic: str, **overrides: Any) -> dict[str, Any]:
        """Store settings of a job on this broker, its records on ``topic``."""
        return {"backend": "kafka", "bootstrap_servers": self.bootstrap, "topic": topic,
                **overrides}
