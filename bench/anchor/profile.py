"""Profiles of (a) on both sides (``python -m bench.anchor --profile``).

Both runtimes run the agent's Python inside the TaskManager's JVM (the anchor through its own
pemja interpreter, ours in PyFlink's thread mode), which the local mini-cluster puts in the
PyFlink gateway JVM, a child of the job's Python process. Once the job's first input is seen,
for ``SECONDS``:

* ``py-spy record --format raw`` samples the Python stacks of that JVM (py-spy from PyPI, in
  the anchor's venv), giving the functions where Python time goes;
* Java Flight Recorder (``jcmd JFR.start``) samples the Java stacks, giving the Java
  methods on top of the task thread's stacks.

Each summary (top functions by own samples, and by inclusive samples for the runtime's
frames) is written to ``bench-anchor-profiles/<side>.txt``.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

from bench.anchor import install
from bench.anchor.sides import Services, run
from scripts import ROOT

SECONDS = 20
OUT = ROOT / "bench-anchor-profiles"


def _children(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        found += [int(k) for k in kids]
        todo += [int(k) for k in kids]
    return found


def _jvm(pid: int) -> Optional[int]:
    for child in _children(pid):
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"java" in cmd and b"PythonGatewayServer" in cmd:
            return child
    return None


class Profiler:
    """A ``run_job`` monitor: starts py-spy and JFR on the job's JVM when the side's newest
    probe file in ``work`` shows an input, and stops them ``SECONDS`` later."""

    def __init__(self, side: str, work: Path) -> None:
        self.side, self.work = side, work
        self.started = 0.0
        self.jvm: Optional[int] = None
        self.spy: Optional[subprocess.Popen[bytes]] = None
        self.raw = OUT / f"{side}.pyspy.txt"
        self.jfr = OUT / f"{side}.jfr"
        self.done = False

    def _running(self) -> bool:
        probes = sorted(self.work.glob(f"*-{self.side}-*.probe"),
                        key=lambda p: p.stat().st_mtime)
        return bool(probes) and '"input"' in probes[-1].read_text()

    def __call__(self, proc: Any) -> None:
        if self.done:
            return
        if not self.started:
            if not self._running():
                return
            self.jvm = _jvm(proc.pid)
            if self.jvm is None:
                return
            spy = str(install.VENV / "bin" / "py-spy")
            self.spy = subprocess.Popen(
                [spy, "record", "--pid", str(self.jvm), "--duration", str(SECONDS),
                 "--rate", "100", "--format", "raw", "--nonblocking", "--output",
                 str(self.raw)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            subprocess.run(["jcmd", str(self.jvm), "JFR.start", "name=fae", "settings=profile",
                            f"filename={self.jfr}"], capture_output=True, timeout=60)
            self.started = time.monotonic()
        elif time.monotonic() - self.started >= SECONDS:
            subprocess.run(["jcmd", str(self.jvm), "JFR.stop", "name=fae"],
                           capture_output=True, timeout=120)
            if self.spy is not None:
                self.spy.wait(timeout=120)
            self.done = True


def _pyspy_summary(raw: Path, top: int = 20) -> list[str]:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [re.sub(r" \(.*?\)$", "", f) for f in stack.split(";")]
        n = int(count)
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    lines = [f"py-spy: {total} samples of the JVM's Python threads (own samples, top {top})"]
    lines += [f"  {c / total:6.1%}  {f}" for f, c in own.most_common(top)] if total else []
    lines.append(f"py-spy: inclusive (top {top})")
    lines += [f"  {c / total:6.1%}  {f}" for f, c in incl.most_common(top)] if total else []
    return lines


def _jfr_summary(jfr: Path, top: int = 25) -> list[str]:
    jfr_tool = shutil.which("jfr") or "jfr"
    proc = subprocess.run([jfr_tool, "print", "--events", "jdk.ExecutionSample",
                           "--stack-depth", "64", str(jfr)], capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0:
        return [f"jfr print failed: {proc.stderr[-500:]}"]
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for event in proc.stdout.split("jdk.ExecutionSample")[1:]:
        frames = re.findall(r"^\s+([\w$.<>]+)\(", event, flags=re.M)
        if not frames:
            continue
        total += 1
        own[frames[0]] += 1
        for f in set(frames):
            incl[f] += 1
    lines = [f"JFR: {total} Java execution samples (own, top {top})"]
    lines += [f"  {c / total:6.1%}  {f}" for f, c in own.most_common(top)] if total else []
    lines.append(f"JFR: inclusive, frames of the runtimes and Kafka (top {top})")
    keep = [(f, c) for f, c in incl.most_common() if re.match(
        r"org\.apache\.(flink\.agents|kafka)|pemja|org\.apache\.flink\.streaming\.api\.operators"
        r"\.python|flink_agents_ext", f)]
    lines += [f"  {c / total:6.1%}  {f}" for f, c in keep[:top]] if total else []
    return lines


def run_all(services: Services, args: Any) -> dict[str, str]:
    """Profile (a) on the anchor and on our SQLite store; return the summary files."""
    OUT.mkdir(exist_ok=True)
    written: dict[str, str] = {}
    plan = [("anchor", args.anchor_trivial_runs // 2), ("sqlite", args.trivial_runs // 2)]
    for side, n in [(s, n) for s, n in plan if s in args.sides]:
        profiler = Profiler(side, services.work)
        services.monitor = profiler
        try:
            print(f"-- profiling (a) on {side} ...", flush=True)
            out = run(side, "trivial", services, n=n, keys=1000, timeout=900)
        finally:
            services.monitor = None
        lines = [f"(a) on {side}: {n} runs, ok={out.ok}, rate={out.figures.get('rate')}"]
        if not profiler.done:
            lines.append("the profile did not complete (the job ended before "
                         f"{SECONDS} s of processing): raise the runs")
        if profiler.raw.exists():
            lines += _pyspy_summary(profiler.raw)
        if profiler.jfr.exists():
            lines += _jfr_summary(profiler.jfr)
        path = OUT / f"{side}.txt"
        path.write_text("\n".join(lines) + "\n")
        print("\n".join(lines[:30]), flush=True)
        written[side] = str(path.relative_to(ROOT))
    return written
