"""The report of a chaos run: sums per failure point (:func:`table`), the machine, and the
content of ``chaos-results.json``."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from chaos.checks import Verdict
from chaos.plan import KINDS

COLUMNS = [("trials", "trials"), ("injected", "injected"), ("restarts", "restarts"),
           ("duplicates", "dup"), ("reexecuted_unrecorded", "re-exec(unrec)"),
           ("reconciled", "reconciled"), ("lost", "lost"), ("unexpected", "unexp"),
           ("dead_lettered", "dead-lettered"), ("store_records_left", "store-left"),
           ("passed", "passed")]


def aggregate(verdicts: list[Verdict]) -> dict[str, int]:
    """Sums over ``verdicts`` (``passed``: how many passed)."""
    return {
        "trials": len(verdicts),
        "injected": sum(v.injected for v in verdicts),
        "restarts": sum(v.restarts for v in verdicts),
        "duplicates": sum(v.duplicates for v in verdicts),
        "reexecuted_unrecorded": sum(v.reexecuted_unrecorded for v in verdicts),
        "reconciled": sum(v.reconciled for v in verdicts),
        "lost": sum(v.lost for v in verdicts),
        "unexpected": sum(v.unexpected for v in verdicts),
        "dead_lettered": sum(v.dead_lettered for v in verdicts),
        "store_records_left": sum(v.store_records_left or 0 for v in verdicts),
        "passed": sum(v.passed for v in verdicts),
    }


def table(verdicts: list[Verdict]) -> str:
    """The per-kind table, with a total row."""
    rows = []
    for kind, title in KINDS.items():
        group = [v for v in verdicts if v.kind == kind]
        if group:
            rows.append((title, aggregate(group)))
    rows.append(("total", aggregate(verdicts)))
    width = max(len(title) for title, _ in rows)
    head = f"{'failure point':<{width}}  " + " ".join(f"{h:>{max(len(h), 5)}}"
                                                     for _, h in COLUMNS)
    lines = [head, "-" * len(head)]
    for title, agg in rows:
        lines.append(f"{title:<{width}}  " + " ".join(
            f"{agg[key]:>{max(len(h), 5)}}" for key, h in COLUMNS))
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """Where the run happened."""
    import pyflink.version

    java = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": model, "platform": platform.platform(),
            "python": platform.python_version(), "flink": pyflink.version.__version__,
            "java": (java.stderr or java.stdout).splitlines()[0] if java.returncode == 0
            else "?"}


