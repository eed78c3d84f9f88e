"""Exceptions raised by flink-agents-ext.

Every error the package raises on purpose derives from :class:`FlinkAgentsExtError`, so a
caller can tell our clear, actionable errors apart from failures inside Flink or user code.
"""


class FlinkAgentsExtError(Exception):
    """Base class of every error raised on purpose by flink-agents-ext."""


class UnsupportedFlinkVersionError(FlinkAgentsExtError):
    """The installed ``apache-flink`` is not the version this package is built against.

    The checkpoint bridge extends PyFlink's internal Java operators, so it is pinned to one
    release; running against another would fail in obscure ways at job start.
    """


class JavaToolchainError(FlinkAgentsExtError):
    """``java``/``javac``/``jar`` are missing or the bridge jar could not be built."""


class CheckpointLedgerError(FlinkAgentsExtError):
    """The checkpoint payload ledger could not be encoded, decoded or updated."""


class PayloadSerializationError(CheckpointLedgerError):
    """A snapshot payload is neither ``bytes`` nor a JSON-serialisable value."""


class ConfigError(FlinkAgentsExtError, ValueError):
    """A job configuration file (:mod:`flink_agents_ext.config`) is missing, malformed, or
    has a bad key or value; the message names the file and the key."""


class RestoreBoundaryError(FlinkAgentsExtError):
    """A restore from a checkpoint older than what the store has pruned to (see
    :mod:`flink_agents_ext.pruning`); completed actions would run again."""


class BridgeAttachError(FlinkAgentsExtError):
    """The Java operator could not find a :class:`CheckpointedKeyedProcessFunction` to drive."""


#: Marks the message of a :class:`NotRecoverableError`; the Java operators look for it
#: (``NotRecoverable.java``), because a Python exception reaches Java as text.
NOT_RECOVERABLE_MARKER = "[flink-agents-ext: not recoverable]"


class NotRecoverableError(FlinkAgentsExtError):
    """A failure that restarting the job cannot fix: a bad store configuration, a path that
    cannot be written, a refused login, checkpointing off without the opt-in.

    Raised while a :class:`~flink_agents_ext.CheckpointedKeyedProcessFunction` opens (in
    ``open``, ``open_timeline`` or ``restore_state``), it fails the job once: the Java
    operators of both execution modes turn it into Flink's ``SuppressRestartsException``, so
    the restart strategy does not restart the job forever, and the client sees the message.
    Raised anywhere else it fails the task like any other exception.

    Attributes:
        reason: the message without :data:`NOT_RECOVERABLE_MARKER`.
    """

    def __init__(self, reason: str) -> None:
        if reason.startswith(NOT_RECOVERABLE_MARKER):  # unpickled: the marker is there
            reason = reason[len(NOT_RECOVERABLE_MARKER):].lstrip()
        super().__init__(f"{NOT_RECOVERABLE_MARKER} {reason}")
        self.reason = reason
