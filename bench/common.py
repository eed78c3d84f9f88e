"""Helpers shared by the benchmarks: running a job module and reading its result file; in
the jobs, the environment and input they share and a clock."""

from __future__ import annotations

import collections
import json
import os
import platform
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any

from scripts import ROOT
from scripts.jobrun import run_job as _run

if TYPE_CHECKING:
    from pyflink.datastream import KeyedStream, StreamExecutionEnvironment

__all__ = ["ROOT", "Clock", "keyed_numbers", "machine", "rate", "run_job", "sample_stacks"]


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


def keyed_numbers(conf: Any, mode: str, n: int, keys: int, interval_ms: int = 1000,
                  string_keys: bool = False) -> tuple[StreamExecutionEnvironment, KeyedStream]:
    """A benchmark job's environment (``conf``, PyFlink functions in ``mode``, parallelism 1,
    a checkpoint every ``interval_ms``) and its input: ``(key, i)`` for ``i`` in ``0..n-1``,
    keyed by ``key``, which is ``i % keys`` (a LONG; the STRING ``f"k{i % keys}"`` when
    ``string_keys``)."""
    from pyflink.common import Types, WatermarkStrategy
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.datastream.connectors.number_seq import NumberSequenceSource

    from flink_agents_ext import configure_environment

    env = StreamExecutionEnvironment.get_execution_environment(conf)
    configure_environment(env, mode)
    env.set_parallelism(1)
    env.enable_checkpointing(interval_ms)
    numbers = env.from_source(NumberSequenceSource(0, n - 1),
                              WatermarkStrategy.no_watermarks(), "numbers")
    if string_keys:
        pairs = numbers.map(lambda i: (f"k{i % keys}", i),
                            output_type=Types.TUPLE([Types.STRING(), Types.LONG()]))
        return env, pairs.key_by(lambda t: t[0], key_type=Types.STRING())
    pairs = numbers.map(lambda i: (i % keys, i),
                        output_type=Types.TUPLE([Types.LONG(), Types.LONG()]))
    return env, pairs.key_by(lambda t: t[0], key_type=Types.LONG())


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


def sample_stacks(path: str, stop: threading.Event, period_s: float = 0.005) -> None:
    """A poor man's sampling profiler for the embedded interpreter (py-spy cannot find it in
    the JVM): every ``period_s``, the innermost frames of every thread, collapsed and
    counted; written to ``path`` as ``count stack`` lines when ``stop`` is set."""
    counts: collections.Counter[str] = collections.Counter()
    me = threading.get_ident()
    while not stop.wait(period_s):
        for ident, frame in sys._current_frames().items():
            if ident == me:
                continue
            names = []
            f: Any = frame
            while f is not None and len(names) < 12:
                names.append(f"{f.f_code.co_name}@{os.path.basename(f.f_code.co_filename)}"
                             f":{f.f_lineno}")
                f = f.f_back
            counts[";".join(reversed(names))] += 1
    with open(path, "w") as fh:
        for stack, n in counts.most_common():
            fh.write(f"{n} {stack}\n")
