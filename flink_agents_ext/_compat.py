"""The one place that knows which PyFlink release the bridge is built for (and works around
its known bugs)."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from flink_agents_ext.errors import UnsupportedFlinkVersionError

#: The ``apache-flink`` release whose internal operators the Java bridge extends.
SUPPORTED_FLINK_VERSION = "2.3.0"


def installed_flink_version() -> str | None:
    """Return the installed ``apache-flink`` version, or ``None`` when it is not installed."""
    try:
        return metadata.version("apache-flink")
    except metadata.PackageNotFoundError:
        return None


def check_flink_version() -> None:
    """Fail fast, with a clear message, unless the pinned ``apache-flink`` is installed."""
    found = installed_flink_version()
    if found != SUPPORTED_FLINK_VERSION:
        raise UnsupportedFlinkVersionError(
            f"flink-agents-ext needs apache-flink=={SUPPORTED_FLINK_VERSION} "
            f"(found: {found or 'not installed'}). Its checkpoint bridge extends PyFlink's "
            f"internal Java operators, which change between releases. Install it with "
            f"'pip install apache-flink=={SUPPORTED_FLINK_VERSION}'."
        )


def stop_with_savepoint(job_client: Any, savepoint_directory: str,
                        advance_to_end_of_event_time: bool = False) -> str:
    """Stop the job of ``job_client`` (from ``env.execute_async``) with a savepoint in
    ``savepoint_directory`` (e.g. ``"file:///tmp/savepoints"``); wait for it and return the
    savepoint's path.

    PyFlink 2.3.0's own ``JobClient.stop_with_savepoint`` (and ``trigger_savepoint``) call
    the Java method without the savepoint format Flink 2.x requires, and fail with
    ``Py4JException: Method stopWithSavepoint([class java.lang.Boolean, class
    java.lang.String]) does not exist``. This calls it with the canonical format.
    """
    from pyflink.java_gateway import get_gateway

    fmt = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL
    return str(job_client._j_job_client.stopWithSavepoint(
        advance_to_end_of_event_time, savepoint_directory, fmt).get())
