"""Apply a :class:`CheckpointedKeyedProcessFunction` to a ``KeyedStream``."""

from __future__ import annotations

import logging
from typing import Optional

from pyflink.common.typeinfo import TypeInformation, Types
from pyflink.datastream import DataStream, KeyedStream, StreamExecutionEnvironment
from pyflink.java_gateway import get_gateway

from flink_agents_ext.checkpoint.function import CheckpointedKeyedProcessFunction
from flink_agents_ext.environment import (
    DEFAULT_EXECUTION_MODE,
    configure_environment,
    execution_mode,
    execution_mode_is_set,
)

_log = logging.getLogger(__name__)

_JAVA_PACKAGE = "org.flinkagentsext"
#: Java operator class per ``python.execution-mode``.
OPERATOR_CLASSES = {
    "thread": "CheckpointingEmbeddedKeyedProcessOperator",
    "process": "CheckpointingExternalKeyedProcessOperator",
}


def process_with_checkpoints(
    keyed_stream: KeyedStream,
    func: CheckpointedKeyedProcessFunction,
    output_type: Optional[TypeInformation] = None,
    name: str = "KEYED PROCESS (checkpointed)",
    uid: Optional[str] = None,
) -> DataStream:
    """Apply ``func`` to ``keyed_stream``: the checkpoint-aware ``KeyedStream.process``.

    Works like ``keyed_stream.process(func, output_type).name(name).uid(uid)`` and, in
    addition, drives ``func``'s checkpoint callbacks from the job's real checkpoints, in the
    environment's ``python.execution-mode`` (thread or process). When the environment has
    no mode set, it sets thread (:data:`~flink_agents_ext.environment.DEFAULT_EXECUTION_MODE`,
    not PyFlink's process) through :func:`configure_environment`; Python operators created
    before this call keep the mode they were created with (call ``configure_environment(env)``
    first to run them all in thread mode).

    Args:
        keyed_stream: the stream to process.
        func: the function; must subclass :class:`CheckpointedKeyedProcessFunction`.
        output_type: type of the records ``func`` emits (pickled bytes when ``None``, as in
            PyFlink).
        name: operator name shown in the web UI and logs.
        uid: operator uid; set it for any job restored from a savepoint.

    Returns:
        The output stream.

    Raises:
        TypeError: ``keyed_stream`` is not a ``KeyedStream`` or ``func`` is not a
            ``CheckpointedKeyedProcessFunction``.
    """
    if not isinstance(keyed_stream, KeyedStream):
        raise TypeError(
            f"process_with_checkpoints needs a KeyedStream (use key_by first), got "
            f"{type(keyed_stream).__name__}"
        )
    if not isinstance(func, CheckpointedKeyedProcessFunction):
        raise TypeError(
            f"func must subclass CheckpointedKeyedProcessFunction, got {type(func).__name__}"
        )
    from pyflink.datastream.data_stream import _create_j_data_stream_python_function_info
    from pyflink.fn_execution import flink_fn_execution_pb2

    env = StreamExecutionEnvironment(keyed_stream._j_data_stream.getExecutionEnvironment())
    if not execution_mode_is_set(env):
        _log.warning(
            "python.execution-mode is not set: %s runs in %s mode (flink-agents-ext's "
            "default); Python operators created before it keep PyFlink's default, process. "
            "Call configure_environment(env) before building the pipeline to run them all in "
            "one mode.", name, DEFAULT_EXECUTION_MODE)
    configure_environment(env)
    mode = execution_mode(env)

    output_type_info = output_type if output_type is not None else Types.PICKLED_BYTE_ARRAY()
    j_output_type_info = output_type_info.get_java_type_info()
    j_input_type = keyed_stream._j_data_stream.getTransformation().getOutputType()
    j_function_info = _create_j_data_stream_python_function_info(
        func, flink_fn_execution_pb2.UserDefinedDataStreamFunction.KEYED_PROCESS
    )
    from pyflink.util.java_utils import get_j_env_configuration

    j_conf = get_j_env_configuration(keyed_stream._j_data_stream.getExecutionEnvironment())
    j_class = _operator_class(OPERATOR_CLASSES.get(mode, OPERATOR_CLASSES["process"]))
    j_operator = j_class(j_conf, j_function_info, j_input_type, j_output_type_info)
    interval_ms = func.completion_interval_ms()
    if interval_ms:
        j_operator.setCompletionIntervalMs(int(interval_ms))
    stream = DataStream(
        keyed_stream._j_data_stream.transform(name, j_output_type_info, j_operator)
    )
    if uid is not None:
        stream = stream.uid(uid)
    return stream


def _operator_class(simple_name: str):  # type: ignore[no-untyped-def]
    """Our Java operator class; ``env.add_jars`` made it visible to py4j."""
    return getattr(getattr(get_gateway().jvm, _JAVA_PACKAGE), simple_name)
