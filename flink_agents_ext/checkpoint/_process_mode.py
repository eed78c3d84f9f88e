"""Process mode (PyFlink's default): the bridge inside the Beam fn harness, a separate process.

``CheckpointingExternalKeyedProcessOperator`` (Java) wraps the pickled user function in a
pickle that calls :func:`load_function` in the worker. :func:`load_function` unpickles the
function while PyFlink's ``StatefulOperation`` that will own it is being built, and attaches a
:class:`ProcessModeBridge` to that operation, which from then on:

* records the key of every element and timer the operation processes (the changed keys);
* intercepts timer records whose timer-type code is reserved for a signal (the Java operator
  sends them over the timer channel, after flushing the bundle):

  ============  ===============  =====================================================
  code          timestamp field  action
  ============  ===============  =====================================================
  ``64``        checkpoint id    snapshot; the ledger is returned (see below)
  ``65``        checkpoint id    checkpoint complete
  ``66``        checkpoint id    checkpoint aborted
  ``67``        checkpoint id    restore; the namespace field holds the stored ledgers
  ``68``        (unused)         job timeline; the namespace field holds its wire form
  ``69``        (unused)         drain completions: fire a processing-time timer per
                                 finished key (see :mod:`.completions`)
  ============  ===============  =====================================================

* returns the ledger of each snapshot to Java through PyFlink's operator-state channel: it puts
  ``<checkpoint id: int64 big endian><ledger>`` into the broadcast state
  ``flink-agents-ext.ledger-return`` and commits it, so the value is in the Java operator's
  state before the bundle completes. The Java operator reads and clears it after the flush.

Everything here runs on the harness thread that runs the operation, between records.
"""

from __future__ import annotations

import functools
import logging
import struct
import sys
import time
from types import FrameType
from typing import Any, Callable, Iterable, Iterator, Optional

from flink_agents_ext.checkpoint.bridge import CheckpointBridge
from flink_agents_ext.checkpoint.completions import RESUME_TIMER
from flink_agents_ext.checkpoint.function import CheckpointedKeyedProcessFunction
from flink_agents_ext.errors import BridgeAttachError, CheckpointLedgerError

_log = logging.getLogger(__name__)

#: Timer-type codes reserved for signals (PyFlink uses 0 and 1 for event and processing time).
SIGNAL_SNAPSHOT = 64
SIGNAL_COMPLETE = 65
SIGNAL_ABORT = 66
SIGNAL_RESTORE = 67
SIGNAL_TIMELINE = 68
SIGNAL_DRAIN = 69

#: Broadcast state that carries a snapshot's ledger to Java (Java adds PyFlink's prefix).
RETURN_STATE_NAME = "flink-agents-ext.ledger-return"
_RETURN_KEY = "ledger"

# Positions in PyFlink's records: an element is [timestamp, watermark, [key, value]], a timer
# is [timer type, watermark, timestamp, [key], namespace bytes].
_ELEMENT_DATA, _DATA_KEY = 2, 0
_TIMER_TYPE, _TIMER_TIMESTAMP, _TIMER_KEY, _TIMER_NAMESPACE = 0, 2, 3, 4
_EVENT_TIME, _PROCESSING_TIME = 0, 1  # PyFlink's TimerType.EVENT_TIME / PROCESSING_TIME


def load_function(payload: bytes) -> CheckpointedKeyedProcessFunction:
    """Unpickle the user function and attach the bridge to the operation that will run it.

    Called by the wrapper pickle the Java operator builds, from inside PyFlink's
    ``StatefulOperation.__init__`` (``extract_stateful_function`` unpickles the function).

    Raises:
        BridgeAttachError: the function is not a ``CheckpointedKeyedProcessFunction`` or it is
            not being loaded by a PyFlink 2.3 ``StatefulOperation``.
    """
    from pyflink.fn_execution import pickle as pyflink_pickle

    function = pyflink_pickle.loads(payload)
    if not isinstance(function, CheckpointedKeyedProcessFunction):
        raise BridgeAttachError(
            f"the operator's function is not a CheckpointedKeyedProcessFunction: "
            f"{type(function).__name__}"
        )
    ProcessModeBridge(function, _operation_under_construction())
    _log.debug("checkpoint bridge attached to %s", type(function).__name__)
    return function


def _operation_under_construction() -> Any:
    """Return the PyFlink ``StatefulOperation`` whose ``__init__`` is on the call stack."""
    from pyflink.fn_execution.datastream.process.operations import StatefulOperation

    frame: Optional[FrameType] = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, StatefulOperation):
            return candidate
        frame = frame.f_back
    raise BridgeAttachError(
        "the process-mode bridge found no PyFlink StatefulOperation loading the function "
        "(this PyFlink release builds operations differently than 2.3.0)"
    )


def decode_blobs(data: bytes) -> list[bytes]:
    """Decode the ledgers of a restore signal: int32 count, then (int32 length, bytes)...

    Raises:
        CheckpointLedgerError: the framing is corrupt.
    """
    try:
        (count,) = struct.unpack_from(">i", data, 0)
        offset, blobs = 4, []
        for _ in range(count):
            (length,) = struct.unpack_from(">i", data, offset)
            offset += 4
            if length < 0 or offset + length > len(data):
                raise CheckpointLedgerError("truncated ledger in restore signal")
            blobs.append(bytes(data[offset:offset + length]))
            offset += length
    except struct.error as exc:
        raise CheckpointLedgerError(f"corrupt restore signal: {exc}") from exc
    return blobs


class ProcessModeBridge:
    """Hooks a :class:`CheckpointBridge` into one PyFlink ``StatefulOperation``.

    It replaces the operation's ``process_element`` and ``process_timer`` with thin wrappers
    (instance attributes, set before PyFlink's Beam operation caches ``process_element``) that
    record changed keys and handle signals; everything else goes to the stock methods.

    Args:
        function: the user function.
        operation: the PyFlink ``StatefulOperation`` that runs ``function``.
    """

    def __init__(self, function: CheckpointedKeyedProcessFunction, operation: Any) -> None:
        self._operation = operation
        self._keyed_state_backend = operation.keyed_state_backend
        if operation.operator_state_backend is None:
            raise BridgeAttachError("the PyFlink operation has no operator state backend")
        self._process_element: Callable[[Any], Any] = functools.partial(
            type(operation).process_element, operation
        )
        self._process_timer: Callable[[Any], Any] = functools.partial(
            type(operation).process_timer, operation
        )
        self._changed: dict[Any, None] = {}  # insertion-ordered set of hashable user keys
        self._changed_unhashable: list[Any] = []
        # Without checkpointing no snapshot takes the changed keys: set from the timeline.
        self._keep_changed = True
        self.bridge = CheckpointBridge(function, self._take_changed_keys,
                                       self._keyed_state_backend.get_current_key,
                                       discard_changed_keys=self._discard_changed_keys)
        operation.process_element = self.process_element
        operation.process_timer = self.process_timer

    # -- the operation's entry points ------------------------------------------------------

    def process_element(self, value: Any) -> Iterable[Any]:
        """Record the element's key, then process it as PyFlink does."""
        self._record(value[_ELEMENT_DATA][_DATA_KEY])
        return self._process_element(value)

    def process_timer(self, timer_data: Any) -> Iterable[Any]:
        """Handle a signal, or record the timer's key and fire it as PyFlink does."""
        code = timer_data[_TIMER_TYPE]
        if code < SIGNAL_SNAPSHOT:
            self._record(timer_data[_TIMER_KEY][0])
            if (code == _EVENT_TIME and timer_data[_TIMER_TIMESTAMP] == RESUME_TIMER
                    and self.bridge.completions.outstanding):
                return self._finish_then(timer_data)
            return self._process_timer(timer_data)
        if code == SIGNAL_DRAIN:
            return self._fire_finished(self.bridge.take_completions())
        self._handle_signal(code, timer_data[_TIMER_TIMESTAMP], timer_data[_TIMER_NAMESPACE])
        return ()

    def _fire_finished(self, handles: Iterable[Any]) -> Iterator[Any]:
        """Fire a processing-time timer (now) for each key whose work finished, through
        PyFlink's own timer path: the key is current, outputs are emitted as a timer's."""
        now = int(time.time() * 1000)
        watermark = self._operation.internal_timer_service.current_watermark()
        for state_key in handles:
            self._record(state_key[0])
            yield from self._process_timer([_PROCESSING_TIME, watermark, now, state_key, None])

    def _finish_then(self, timer_data: Any) -> Iterator[Any]:
        """The end of input (the first key's :data:`RESUME_TIMER`): apply every key's
        finished work and start its next until none is outstanding, then fire the timer."""
        yield from self.bridge.completions.finish(self._fire_finished)
        yield from self._process_timer(timer_data)

    # -- signals ---------------------------------------------------------------------------

    def _handle_signal(self, code: int, checkpoint_id: int, payload: bytes | None) -> None:
        if code == SIGNAL_SNAPSHOT:
            self._return_ledger(checkpoint_id, self.bridge.snapshot(checkpoint_id))
        elif code == SIGNAL_COMPLETE:
            self.bridge.complete(checkpoint_id)
        elif code == SIGNAL_ABORT:
            self.bridge.abort(checkpoint_id)
        elif code == SIGNAL_RESTORE:
            self.bridge.restore(checkpoint_id, decode_blobs(payload or b""))
        elif code == SIGNAL_TIMELINE:
            self.bridge.open_timeline(bytes(payload or b""))
            self._keep_changed = self.bridge.timeline is None or self.bridge.timeline.checkpointing
        else:
            raise BridgeAttachError(f"unknown checkpoint-bridge signal code {code}")

    def _return_ledger(self, checkpoint_id: int, ledger: bytes) -> None:
        """Store the ledger in the return state and commit it to the Java operator now."""
        from pyflink.common import Types
        from pyflink.datastream.state import MapStateDescriptor

        state = self._operation.operator_state_backend.get_broadcast_state(
            MapStateDescriptor(
                RETURN_STATE_NAME, Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE())
            )
        )
        state.put(_RETURN_KEY, struct.pack(">q", checkpoint_id) + ledger)
        state.commit()

    # -- changed keys ----------------------------------------------------------------------

    def _record(self, key: Any) -> None:
        if not self._keep_changed:
            return
        try:
            self._changed[key] = None
        except TypeError:  # unhashable key type: keep a list without duplicates
            if key not in self._changed_unhashable:
                self._changed_unhashable.append(key)

    def _take_changed_keys(self) -> Iterator[Any]:
        """Hand out the changed keys (and forget them); each is current while yielded."""
        keys = [*self._changed, *self._changed_unhashable]
        self._changed = {}
        self._changed_unhashable = []
        return self._visit(keys)

    def _discard_changed_keys(self) -> None:
        self._changed = {}
        self._changed_unhashable = []

    def _visit(self, keys: list[Any]) -> Iterator[Any]:
        from pyflink.common import Row

        backend = self._keyed_state_backend
        previous = backend.get_current_key()
        try:
            for key in keys:
                backend.set_current_key(Row(key))  # PyFlink's state key is Row(user key)
                yield key
        finally:
            if previous is not None:
                backend.set_current_key(previous)
