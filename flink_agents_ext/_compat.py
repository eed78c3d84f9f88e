"""The one place that knows which PyFlink release the bridge is built for."""

from __future__ import annotations

from importlib import metadata

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
