"""Thread mode (``python.execution-mode: thread``): the Java operator calls in directly.

``CheckpointingEmbeddedKeyedProcessOperator`` (Java) runs, on the task thread and in the
operator's own embedded interpreter::

    _fae_bridge = attach(operation, <the Java operator>)

and then calls ``_fae_bridge.snapshot/complete/abort/restore``. The Java operator records
the keys of processed elements and timers; ``changed_keys`` walks them by calling
``advanceChangedKey()`` on the operator, which makes the next one the current key (a
snapshot that does not walk them forgets them with one ``discardChangedKeys()``). A key
handle for :mod:`~flink_agents_ext.checkpoint.completions` is a number from the operator's
``keyHandle()``: the operator maps it back to the key when it fires the completion, and it
tracks the keys' work itself (``Completions.operator_tracks_work``).
"""

from __future__ import annotations

from typing import Any, Iterator

from flink_agents_ext.checkpoint.bridge import CheckpointBridge
from flink_agents_ext.checkpoint.function import CheckpointedKeyedProcessFunction
from flink_agents_ext.errors import BridgeAttachError


def find_user_function(operation: Any) -> tuple[CheckpointedKeyedProcessFunction, Any]:
    """Find the user's function and its keyed context inside PyFlink's ``operation`` object.

    PyFlink 2.3 wraps them in closures (``extract_process_function``); the first operation
    of a chain is ours, later ones are chained downstream functions.
    """
    from pyflink.fn_execution.datastream.embedded.process_function import (
        InternalKeyedProcessFunctionContext,
    )

    main = getattr(operation, "_main_operation", None)
    func = getattr(main, "_process_element_func", None)
    function = context = None
    for cell in getattr(func, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # empty cell
            continue
        owner = getattr(value, "__self__", None)
        if isinstance(owner, CheckpointedKeyedProcessFunction):
            function = owner
        elif isinstance(value, InternalKeyedProcessFunctionContext):
            context = value
    if function is None or context is None:
        raise BridgeAttachError(
            "the operator's function is not a CheckpointedKeyedProcessFunction (or this "
            "PyFlink release wraps functions differently than 2.3.0)"
        )
    return function, context


def attach(operation: Any, j_operator: Any) -> CheckpointBridge:
    """Build the bridge for one subtask; called by the Java operator after ``open``."""
    function, context = find_user_function(operation)

    def changed_keys() -> Iterator[Any]:
        while j_operator.advanceChangedKey():
            yield context.get_current_key()

    return CheckpointBridge(function, changed_keys, j_operator.keyHandle,
                            operator_tracks_work=True,
                            discard_changed_keys=j_operator.discardChangedKeys)
