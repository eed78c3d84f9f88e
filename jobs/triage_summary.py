"""What a run of the main job (``jobs/support_triage.py``) left: its outputs, side-effect
ledger, stats files and store. The job prints it at its end; after a job that ran elsewhere
(a standalone cluster) this prints it without running anything:

    python -m jobs.triage_summary --config F [--summary-json FILE]

Exit status 1 when a durable call ran twice.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections import Counter
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flink_agents_ext.config import JobConfig, load_config
from flink_agents_ext.store import open_store

#: The side-effect ledger: one line per real execution of a durable call.
LEDGER = "side_effects.jsonl"


def part_lines(directory: str) -> list[str]:
    """The lines of the finished part files of a ``FileSink`` directory."""
    lines: list[str] = []
    for path in glob.glob(os.path.join(directory, "*", "part-*")):
        with open(path) as fh:
            lines += [line for line in fh.read().splitlines() if line]
    return lines


def summary(cfg: JobConfig, out_dir: str) -> dict[str, Any]:
    """What the run did, from its outputs, side-effect ledger, stats files and store."""
    stats: Counter[str] = Counter()
    for path in glob.glob(os.path.join(out_dir, "stats", "*.json")):
        with open(path) as fh:
            data = json.load(fh)
        data.pop("store_records", None)
        stats.update(data)
    calls: Counter[tuple[str, str]] = Counter()
    ledger = os.path.join(out_dir, LEDGER)
    if os.path.exists(ledger):
        with open(ledger) as fh:
            calls.update((e["call"], e["ticket"]) for e in map(json.loads, fh))
    with open_store(cfg.store_settings()) as store:
        records_left = store.size(cfg.namespace)
    if cfg.kafka:  # the outputs as a read_committed consumer sees them
        from jobs.triage_kafka import read_committed

        results = read_committed(cfg.kafka.bootstrap_servers, cfg.kafka.results_topic)
        dead = read_committed(cfg.kafka.bootstrap_servers, cfg.kafka.dead_letters_topic)
    else:
        results = part_lines(os.path.join(out_dir, "results"))
        dead = part_lines(os.path.join(out_dir, "dead_letters"))
    return {
        "results": len(results),
        "dead_letters": len(dead),
        "runs": stats["runs"],
        "actions_run": stats["actions_run"],
        "actions_replayed": stats["actions_replayed"],
        "durable_calls_run": sum(calls.values()),
        "durable_calls_replayed": stats["durable_calls_replayed"],
        "durable_calls_run_twice": sum(1 for v in calls.values() if v > 1),
        "records_pruned": stats["records_pruned"],
        "store_records_left": records_left,
    }


def report(data: dict[str, Any], summary_json: str = "") -> int:
    """Print the summary (and write it as JSON when asked); 1 if a durable call ran twice."""
    width = max(map(len, data))
    for name, value in data.items():
        print(f"  {name:<{width}}  {value}")
    if summary_json:
        with open(summary_json, "w") as fh:
            json.dump(data, fh, indent=2)
    return 0 if data["durable_calls_run_twice"] == 0 else 1


def main(argv: list[str] | None = None) -> int:
    """Print the summary of the configured output directory and store."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the job's configuration file")
    p.add_argument("--summary-json", default="", help="also write the summary here")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    return report(summary(cfg, os.path.abspath(cfg.output_dir)), args.summary_json)


if __name__ == "__main__":
    sys.exit(main())
