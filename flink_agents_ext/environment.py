"""Make a ``StreamExecutionEnvironment`` ready for the checkpoint bridge.

:func:`configure_environment` is idempotent and called by
:func:`flink_agents_ext.process_with_checkpoints`; call it yourself to set the execution
mode or other options before building the pipeline.
"""

from __future__ import annotations

import logging
import os
import sys
import sysconfig
from typing import Any, Optional, Sequence

from pyflink.datastream import StreamExecutionEnvironment

from flink_agents_ext import jar as _jar
from flink_agents_ext._compat import check_flink_version
from flink_agents_ext.connectors import connector_jar

_log = logging.getLogger(__name__)

#: The execution modes PyFlink offers.
EXECUTION_MODES = ("thread", "process")
#: The mode :func:`configure_environment` (and so :func:`process_with_checkpoints`) sets
#: when the environment has none: thread is faster and avoids PyFlink 2.3's process-mode
#: failover race (README, "Known issues"). PyFlink's own default is process.
DEFAULT_EXECUTION_MODE = "thread"


def _j_configuration(env: StreamExecutionEnvironment) -> Any:
    # Same object PyFlink's own operator factories read their options from.
    from pyflink.util.java_utils import get_j_env_configuration

    return get_j_env_configuration(env._j_stream_execution_environment)


def _get(j_conf: Any, key: str) -> Optional[str]:
    value = j_conf.getString(key, None)
    return None if value is None else str(value)


def execution_mode(env: StreamExecutionEnvironment) -> str:
    """Return the environment's ``python.execution-mode`` (``process``, PyFlink's default,
    when unset)."""
    return _get(_j_configuration(env), "python.execution-mode") or "process"


def execution_mode_is_set(env: StreamExecutionEnvironment) -> bool:
    """Whether the environment's ``python.execution-mode`` is set."""
    return _get(_j_configuration(env), "python.execution-mode") is not None


def configure_environment(
    env: StreamExecutionEnvironment, execution_mode: Optional[str] = None,
    connectors: Sequence[str] = (),
) -> StreamExecutionEnvironment:
    """Prepare ``env`` for :func:`process_with_checkpoints`.

    * checks that the pinned ``apache-flink`` is installed;
    * builds (once) and adds the bridge jar to ``pipeline.jars``;
    * adds the jar of each connector in ``connectors`` (e.g. ``["kafka"]``, see
      :mod:`flink_agents_ext.connectors`; fetched from Maven Central once) to
      ``pipeline.jars``;
    * sets ``python.execution-mode`` to ``execution_mode`` when given, else, when the
      environment has none, to :data:`DEFAULT_EXECUTION_MODE` (thread; PyFlink's default
      would be process). PyFlink fixes each Python operator's mode when the operator is
      created: call this right after creating the environment so that every Python
      operator of the job runs in the same mode;
    * sets ``python.executable`` and ``python.client.executable`` to this interpreter unless
      already set (workers on another Python fail to import pyflink and restart forever);
    * in thread mode, puts this interpreter's site-packages and the package's own directory
      on ``python.pythonpath`` unless set (the embedded interpreter loads the base Python,
      not the virtual environment).

    Returns:
        ``env``, for chaining.

    Raises:
        ValueError: ``execution_mode`` is not ``thread`` or ``process``.
        UnsupportedFlinkVersionError, JavaToolchainError: see :mod:`flink_agents_ext.errors`.
        flink_agents_ext.maven.MavenFetchError: a connector could not be fetched.
    """
    check_flink_version()
    if execution_mode is not None and execution_mode not in EXECUTION_MODES:
        raise ValueError(
            f"execution_mode must be one of {EXECUTION_MODES}, got {execution_mode!r}"
        )
    j_conf = _j_configuration(env)
    if execution_mode is None and not _get(j_conf, "python.execution-mode"):
        execution_mode = DEFAULT_EXECUTION_MODE
    if execution_mode is not None:
        j_conf.setString("python.execution-mode", execution_mode)

    urls = [_jar.jar_url(), *(connector_jar(name).as_uri() for name in connectors)]
    jars = (_get(j_conf, "pipeline.jars") or "").split(";")
    for url in urls:
        if url not in jars:
            env.add_jars(url)

    for key in ("python.executable", "python.client.executable"):
        if not _get(j_conf, key):
            j_conf.setString(key, sys.executable)

    if _get(j_conf, "python.execution-mode") == "thread" and not _get(
        j_conf, "python.pythonpath"
    ):
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        paths = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], package_root]
        j_conf.setString("python.pythonpath", os.pathsep.join(dict.fromkeys(paths)))
    return env
