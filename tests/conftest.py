"""Shared fixtures: run probe jobs in a subprocess with a hard timeout."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Callable, TypeVar

import pytest

from scripts import ROOT, jvmfast  # noqa: F401 (ROOT: the tests import it from here)
from scripts.jobrun import run_job
from tests.pg_server import ensure_running, fresh_schema, pg  # noqa: F401 (fixtures)
from tests.workers import group_of, start_rank

T = TypeVar("T")
#: Hard limit for one Flink job started by a test (the pytest-timeout of the test is above).
JOB_TIMEOUT_S = int(os.environ.get("FAE_JOB_TIMEOUT_S", "240"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that share a server or the cluster run on one parallel worker
    (:func:`tests.workers.group_of`; ``--dist loadgroup``), and the slow ones start first
    (:func:`tests.workers.start_rank`), so that none of them is left alone at the end."""
    for item in items:
        group = group_of(str(item.path), getattr(item, "fixturenames", ()))
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: start_rank(str(item.path), bool(item.get_closest_marker("flink"))))


def pytest_collection_finish(session: pytest.Session) -> None:
    """When Flink tests are selected, their jobs' JVMs start faster (:mod:`scripts.jvmfast`:
    C1 only and a class-data archive, written once per installation; ``FAE_JVM_FAST=0``
    turns it off): ``JVM_ARGS``, which every job and cluster script started by a test
    inherits."""
    if any(item.get_closest_marker("flink") for item in session.items):
        jvmfast.ensure_archive()
        os.environ["JVM_ARGS"] = jvmfast.jvm_args()


class UpstreamRaceHit(Exception):
    """The job hit the known PyFlink process-mode race (:data:`scripts.jobrun.UPSTREAM_RACE`;
    it was stopped at once instead of hanging)."""


def run_module(module: str, args: list[str], timeout: int = JOB_TIMEOUT_S, *,
               detect_upstream_race: bool = False) -> str:
    """Run ``python -m module args`` (:func:`scripts.jobrun.run_job`); return its stdout;
    fail the test on error or timeout.

    With ``detect_upstream_race`` the job is stopped when the known PyFlink race shows up in
    the local Flink log and :class:`UpstreamRaceHit` is raised, so that the caller can run
    the job again instead of waiting for the timeout.
    """
    result = run_job(module, args, timeout=timeout, detect_upstream_race=detect_upstream_race)
    if result.upstream_race:
        raise UpstreamRaceHit(result.command())
    if not result.ok:
        pytest.fail(result.describe(timeout))
    return result.stdout


def run_with_upstream_race_retries(run: Callable[[], T], reset: Callable[[], None],
                                   attempts: int = 5) -> T:
    """``run()`` (a process-mode failover job); when it hits the known PyFlink race,
    ``reset()`` its outputs and run it again, at most ``attempts`` times in all."""
    for attempt in range(1, attempts + 1):
        try:
            return run()
        except UpstreamRaceHit as exc:
            warnings.warn(f"PyFlink process-mode race hit by {exc} (attempt {attempt} of "
                          f"{attempts}); see README, Known issues", stacklevel=2)
            reset()
    pytest.fail(f"the PyFlink process-mode race was hit in all {attempts} attempts")


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
        if options.get("mode") == "process" and options.get("fail_at", -1) != -1:
            run_with_upstream_race_retries(
                lambda: run_module("tests.jobs.bridge_probe", args,
                                   detect_upstream_race=True),
                lambda: shutil.rmtree(out, ignore_errors=True))
        else:
            run_module("tests.jobs.bridge_probe", args)
        return out

    return run
