"""The Kafka broker of the tests: fixture ``kafka`` (import it into a test module).

``scripts/kafka-test-server.sh`` starts (or reuses) a throwaway single-node broker once per
session, in ``.kafka/test`` on 127.0.0.1:$FAE_KAFKA_TEST_PORT (default: a free port), not the
broker of the Kafka profile (``.kafka``); each parallel worker has its own
(:mod:`tests.workers`). A broker this session started is stopped at its
end. To use another broker instead, set ``FAE_KAFKA_BOOTSTRAP`` (host:port). When the broker
cannot be started or reached, the tests fail with the reason.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests import workers

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "kafka-test-server.sh"
SERVER_DIR = workers.server_dir(ROOT / ".kafka" / "test")


@dataclass
class KafkaBroker:
    """The broker the tests use."""

    bootstrap: str
    #: Started by scripts/kafka-test-server.sh (the tests may stop and start it).
    managed: bool
    #: This session started it (and stops it at the end).
    started_here: bool = False

    def topic(self, prefix: str = "t") -> str:
        """A topic name no other test uses."""
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    def control(self, command: str) -> str:
        """Run ``kafka-test-server.sh command`` on the managed broker; its stdout."""
        if not self.managed:
            pytest.fail(f"this test must {command} its broker: unset FAE_KAFKA_BOOTSTRAP")
        proc = subprocess.run(["bash", str(SCRIPT), command], capture_output=True, text=True,
                              timeout=180, env=server_env())
        assert proc.returncode == 0, f"kafka-test-server.sh {command} failed:\n{proc.stderr}"
        return proc.stdout


def server_env() -> dict[str, str]:
    env = {**os.environ, "FAE_KAFKA_DIR": str(SERVER_DIR)}
    env.pop("FAE_KAFKA_PORT", None)
    given = workers.port(os.environ.get("FAE_KAFKA_TEST_PORT"))
    if given:
        env["FAE_KAFKA_PORT"] = given
    return env


def start_broker() -> KafkaBroker:
    """Use FAE_KAFKA_BOOTSTRAP, else start (or reuse) the throwaway broker."""
    given = os.environ.get("FAE_KAFKA_BOOTSTRAP")
    if given:
        return KafkaBroker(given, managed=False)
    try:
        proc = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True,
                              timeout=900, env=server_env())
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"scripts/kafka-test-server.sh did not finish in {exc.timeout}s")
    if proc.returncode != 0:
        pytest.fail(f"cannot start the Kafka test broker (scripts/kafka-test-server.sh, exit "
                    f"{proc.returncode}):\n{proc.stderr}")
    values = dict(item.split("=", 1) for item in proc.stdout.split())
    return KafkaBroker(values["FAE_KAFKA_BOOTSTRAP"], managed=True,
                       started_here="kafka-test-server: started" in proc.stderr)


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaBroker]:
    """The broker (started for the session when none runs; stopped at its end if so)."""
    broker = start_broker()
    yield broker
    if broker.started_here:
        broker.control("stop")
