"""Shared fixtures: run probe jobs in a subprocess with a hard timeout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Hard limit for one Flink job started by a test (the pytest-timeout of the test is above).
JOB_TIMEOUT_S = int(os.environ.get("FAE_JOB_TIMEOUT_S", "240"))


def run_module(module: str, args: list[str], timeout: int = JOB_TIMEOUT_S) -> str:
    """Run ``python -m module args`` from the repo root; fail the test on error or timeout."""
    cmd = [sys.executable, "-m", module, *args]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"job {module} {' '.join(args)} did not finish in {timeout}s:\n"
                    f"{(exc.stdout or '')[-3000:]}\n{(exc.stderr or '')[-3000:]}")
    if proc.returncode != 0:
        pytest.fail(f"job {module} {' '.join(args)} failed ({proc.returncode}):\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc.stdout


@pytest.fixture
def run_probe(tmp_path: Path) -> Callable[..., Path]:
    """Run the bridge probe job with the given options; returns its output directory."""

    def run(**options: object) -> Path:
        out = tmp_path / "probe"
        args = ["--out", str(out)]
        for name, value in options.items():
            flag = "--" + name.replace("_", "-")
            if value is True:
                args.append(flag)
            else:
                args += [flag, str(value)]
        run_module("tests.jobs.bridge_probe", args)
        return out

    return run
