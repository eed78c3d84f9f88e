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
