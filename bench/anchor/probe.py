"""The measuring instrument both sides share (standard library only: it runs in the anchor's
virtual environment too).

Each job writes JSON lines to one probe file (``--probe``); appends of short lines from the
processes and threads of one job do not interleave. Lines:

* ``{"input": t}``: the first input an action saw (per process that runs actions);
* ``{"fail": t}``: the injected failure (the action raising on input ``--fail-at``);
* ``{"first_any": t, "i": i}``: the first output a probe instance saw after it opened (one
  per task attempt);
* ``{"first_new": t, "i": i}``: the first output of an input ``>= --fail-at`` (an input that
  had not completed before the failure);
* ``{"outputs": n, "first": t, "last": t, "max_i": i}``: written when the probe closes.

Times are ``time.time()`` (wall clock, comparable across processes).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Optional

__all__ = ["FailOnce", "OutputProbe", "mark_input", "output_index", "read", "summarise"]

_MARKED: set[str] = set()


def _append(path: str, row: dict[str, Any]) -> None:
    line = (json.dumps(row) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def mark_input(path: str) -> None:
    """Record the time of the first input this process's actions see (once per process)."""
    if path not in _MARKED:
        _MARKED.add(path)
        _append(path, {"input": time.time()})


class FailOnce:
    """Raise once, on input ``at``: the first time any attempt reaches it (a marker file next
    to the probe file remembers that it happened)."""

    def __init__(self, probe: str, at: int) -> None:
        self.probe = probe
        self.at = at
        self.marker = probe + ".failed"

    def check(self, i: int) -> None:
        """Raise ``RuntimeError`` if ``i`` is the failure input and no failure happened yet."""
        if self.at > 0 and i == self.at and not os.path.exists(self.marker):
            with open(self.marker, "w") as fh:
                fh.write(str(time.time()))
            _append(self.probe, {"fail": time.time()})
            raise RuntimeError(f"bench: injected failure at input {i}")


def output_index(value: Any) -> int:
    """The input index an output carries (an int, or the first item of a tuple/list/dict)."""
    if isinstance(value, dict):
        return int(value["i"])
    if isinstance(value, (tuple, list)):
        return int(value[0])
    return int(value)


class OutputProbe:
    """Counts outputs; records the first after each open, the first new one after the
    failure, and a summary at close. Used as the function of a PyFlink ``map``."""

    def __init__(self, probe: str, fail_at: int) -> None:
        self.probe = probe
        self.fail_at = fail_at

    def open(self, runtime_context: Any = None) -> None:
        self.n = 0
        self.first = self.last = 0.0
        self.max_i = -1
        self.new_seen = False

    def map(self, value: Any) -> int:
        now = time.time()
        i = output_index(value)
        if not self.n:
            self.first = now
            _append(self.probe, {"first_any": now, "i": i})
        if self.fail_at > 0 and not self.new_seen and i >= self.fail_at:
            self.new_seen = True
            _append(self.probe, {"first_new": now, "i": i})
        self.n += 1
        self.last = now
        self.max_i = max(self.max_i, i)
        return i

    def close(self) -> None:
        if self.n:
            _append(self.probe, {"outputs": self.n, "first": self.first, "last": self.last,
                                 "max_i": self.max_i})


def read(path: str) -> list[dict[str, Any]]:
    """The probe file's rows (none if it does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def summarise(rows: list[dict[str, Any]], expected: int) -> dict[str, Optional[float]]:
    """From a probe file: ``rate`` (expected outputs / (last output - first input)),
    ``outputs`` (as counted by the last probe instance), ``recovery_s`` (failure to the
    first new output) and ``first_output_after_failure_s``."""
    inputs = [r["input"] for r in rows if "input" in r]
    closes = [r for r in rows if "outputs" in r]
    fail = next((r["fail"] for r in rows if "fail" in r), None)
    out: dict[str, Optional[float]] = {"rate": None, "outputs": None, "recovery_s": None,
                                       "first_output_after_failure_s": None}
    if closes:
        out["outputs"] = float(sum(c["outputs"] for c in closes))
        last = max(c["last"] for c in closes)
        if inputs and last > min(inputs):
            out["rate"] = expected / (last - min(inputs))
    if fail is not None:
        new = [r["first_new"] for r in rows if "first_new" in r and r["first_new"] > fail]
        anyo = [r["first_any"] for r in rows if "first_any" in r and r["first_any"] > fail]
        out["recovery_s"] = min(new) - fail if new else None
        out["first_output_after_failure_s"] = min(anyo) - fail if anyo else None
    return out
