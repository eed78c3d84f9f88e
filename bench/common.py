"""Helpers shared by the benchmarks: running a job module and reading its result file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_job(module: str, args: list[str], timeout: int = 600) -> list[dict]:
    """Run ``python -m module args --result FILE``; return the JSON lines of FILE."""
    with tempfile.TemporaryDirectory(prefix="fae-bench-") as tmp:
        result = os.path.join(tmp, "result.jsonl")
        proc = subprocess.run([sys.executable, "-m", module, *args, "--result", result],
                              cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{module} {args} failed:\n{proc.stderr[-4000:]}")
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
