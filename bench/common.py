"""Helpers shared by the benchmarks: running a job module and reading its result file."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time

from scripts import ROOT
from scripts.jobrun import run_job as _run

__all__ = ["ROOT", "Clock", "machine", "rate", "run_job"]


def run_job(module: str, args: list[str], timeout: int = 600) -> list[dict]:
    """Run ``python -m module args --result FILE`` (:func:`scripts.jobrun.run_job`); return
    the JSON lines of FILE; raise ``RuntimeError`` when the job fails."""
    with tempfile.TemporaryDirectory(prefix="fae-bench-") as tmp:
        result = os.path.join(tmp, "result.jsonl")
        job = _run(module, [*args, "--result", result], timeout=timeout)
        if not job.ok:
            raise RuntimeError(job.describe(timeout))
        with open(result) as fh:
            return [json.loads(line) for line in fh if line.strip()]


def rate(rows: list[dict]) -> float:
    """Records per second over the rows of one run (subtasks summed)."""
    records = sum(r["records"] for r in rows)
    seconds = max(r["seconds"] for r in rows)
    return records / seconds if seconds > 0 else float("nan")


class Clock:
    """Counts the elements a function sees and the time from the first to the last; used
    inside the benchmark jobs' functions."""

    def __init__(self) -> None:
        self.seen = 0
        self.first = self.last = 0.0

    def tick(self) -> None:
        now = time.perf_counter()
        if not self.seen:
            self.first = now
        self.last = now
        self.seen += 1

    def write(self, path: str) -> None:
        """Append ``{"records", "seconds"}`` to ``path`` (one line per subtask)."""
        with open(path, "a") as fh:
            fh.write(json.dumps({"records": self.seen, "seconds": self.last - self.first})
                     + "\n")


def machine() -> dict[str, object]:
    """The machine a benchmark ran on: CPU model, cores, Python, system."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "system": platform.platform()}
