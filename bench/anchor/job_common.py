"""What the two jobs of the anchor benchmark (``anchor_job.py``, ``ours_job.py``) share: the
Flink configuration and the output probe as a PyFlink ``MapFunction``. PyFlink only: it is
imported in both virtual environments."""

from __future__ import annotations

from typing import Any

from pyflink.common import Configuration
from pyflink.datastream import MapFunction

from bench.anchor.probe import OutputProbe

__all__ = ["Probe", "job_configuration"]


def job_configuration() -> Configuration:
    """Bundles of 1,000 records; after a failure, restart at once (up to ten times)."""
    conf = Configuration()
    conf.set_string("python.fn-execution.bundle.size", "1000")
    conf.set_string("restart-strategy.type", "fixed-delay")
    conf.set_string("restart-strategy.fixed-delay.attempts", "10")
    conf.set_string("restart-strategy.fixed-delay.delay", "0 ms")
    return conf


class Probe(MapFunction):
    """:class:`OutputProbe` as a PyFlink ``MapFunction``."""

    def __init__(self, probe: str, fail_at: int) -> None:
        self.inner = OutputProbe(probe, fail_at)

    def open(self, runtime_context: Any) -> None:
        self.inner.open(runtime_context)

    def map(self, value: Any) -> int:
        return self.inner.map(value)

    def close(self) -> None:
        self.inner.close()
