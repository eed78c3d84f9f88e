"""The report of a chaos run: sums per failure point (:func:`table`), the machine, and the
content of ``chaos-results.json``."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from chaos.checks import Verdict
from chaos.config import DIMENSIONS
from chaos.plan import KINDS

COLUMNS = [("trials", "trials"), ("injected", "injected"), ("restarts", "restarts"),
           ("duplicates", "dup"), ("repeats", "repeats(allowed)"),
           ("reexecuted_unrecorded", "re-exec(unrec)"),
           ("reconciled", "reconciled"), ("lost", "lost"), ("unexpected", "unexp"),
           ("dead_lettered", "dead-lettered"), ("store_records_left", "store-left"),
           ("passed", "passed")]


def aggregate(verdicts: list[Verdict]) -> dict[str, int]:
    """Sums over ``verdicts`` (``passed``: how many passed). The outcomes (restarts,
    duplicates, lost, ...) sum only the checked trials: a trial whose every attempt hit the
    PyFlink process-mode race (README, Known issues) hung waiting for slots, so its counts
    say nothing about this package; it is counted in ``upstream_race``."""
    checked = [v for v in verdicts if not v.upstream_race]
    return {
        "trials": len(verdicts),
        "checked": len(checked),
        "injected": sum(v.injected for v in verdicts),
        "restarts": sum(v.restarts for v in checked),
        "duplicates": sum(v.duplicates for v in checked),
        "repeats": sum(v.repeats for v in checked),
        "skipped_calls": sum(v.skipped_calls for v in checked),
        "upstream_race": sum(v.upstream_race for v in verdicts),
        "reexecuted_unrecorded": sum(v.reexecuted_unrecorded for v in checked),
        "reconciled": sum(v.reconciled for v in checked),
        "lost": sum(v.lost for v in checked),
        "unexpected": sum(v.unexpected for v in checked),
        "dead_lettered": sum(v.dead_lettered for v in checked),
        "store_records_left": sum(v.store_records_left or 0 for v in checked),
        "store_runs_unmarked": sum(v.store_runs_unmarked or 0 for v in checked),
        "passed": sum(v.passed for v in verdicts),
    }


def by_config(verdicts: list[Verdict]) -> dict[str, dict[str, dict[str, int]]]:
    """Sums per value of each configuration dimension (``by_config`` of chaos-results.json):
    ``{dimension: {value: aggregate}}``, e.g. ``by_config["commit"]["group"]["duplicates"]``."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for dimension, attribute in DIMENSIONS.items():
        values: dict[str, list[Verdict]] = {}
        for v in verdicts:
            values.setdefault(str(v.config.get(attribute, "?")), []).append(v)
        out[dimension] = {value: aggregate(group) for value, group in sorted(values.items())}
    return out


def config_table(verdicts: list[Verdict]) -> str:
    """The per-configuration table (one row per value of each dimension)."""
    rows = [(f"{dimension} {value}", agg)
            for dimension, values in by_config(verdicts).items()
            for value, agg in values.items()]
    return _rows("configuration", rows, verdicts)


def table(verdicts: list[Verdict]) -> str:
    """The per-kind table, with a total row."""
    rows = []
    for kind, title in KINDS.items():
        group = [v for v in verdicts if v.kind == kind]
        if group:
            rows.append((title, aggregate(group)))
    return _rows("failure point", rows, verdicts)


def _rows(title: str, rows: list[tuple[str, dict[str, int]]], verdicts: list[Verdict]) -> str:
    rows = [*rows, ("total", aggregate(verdicts))]
    width = max(len(name) for name, _ in [*rows, (title, {})])
    head = f"{title:<{width}}  " + " ".join(f"{h:>{max(len(h), 5)}}" for _, h in COLUMNS)
    lines = [head, "-" * len(head)]
    for name, agg in rows:
        lines.append(f"{name:<{width}}  " + " ".join(
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




MD_COLUMNS = [("trials", "trials"), ("duplicates", "duplicates"),
              ("repeats", "repeats (allowed)"),
              ("reexecuted_unrecorded", "re-executed (unrecorded)"),
              ("lost", "lost"), ("store_records_left", "store left"),
              ("upstream_race", "PyFlink race"), ("passed", "passed")]


def markdown(results: dict[str, Any]) -> str:
    """The README's table of a chaos-results.json: per configuration value and a total."""
    head = "| configuration | " + " | ".join(h for _, h in MD_COLUMNS) + " |"
    lines = [head, "|---" * (len(MD_COLUMNS) + 1) + "|"]
    for dimension, values in results["by_config"].items():
        for value, agg in values.items():
            lines.append(f"| {dimension} {value} | "
                         + " | ".join(str(agg[k]) for k, _ in MD_COLUMNS) + " |")
    total = {k: sum(agg[k] for agg in results["by_config"]["mode"].values())
             for k, _ in MD_COLUMNS}
    lines.append("| **total** | " + " | ".join(f"**{total[k]}**" for k, _ in MD_COLUMNS)
                 + " |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m chaos.report [chaos-results.json]``: print the README's table."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else "chaos-results.json")
    print(markdown(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
