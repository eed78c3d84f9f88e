"""Serialisers for what the action store records (events, outputs, memory, call results).

The default, :class:`JsonSerializer`, writes UTF-8 JSON and refuses what JSON cannot hold
with :class:`SerializationError`. Plug another one in by implementing :class:`Serializer`.
Nothing here unpickles: a store written by one process is safe to read in another.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

from flink_agents_ext.errors import FlinkAgentsExtError


class SerializationError(FlinkAgentsExtError, ValueError):
    """A value could not be serialised (or deserialised) by the configured serializer."""


@runtime_checkable
class Serializer(Protocol):
    """Turns recorded values into bytes and back. Must round-trip what it accepts."""

    def dumps(self, value: Any) -> bytes:
        """Serialise ``value``; raise :class:`SerializationError` if it cannot."""
        ...

    def loads(self, data: bytes) -> Any:
        """Deserialise what :meth:`dumps` wrote."""
        ...


# Built once: ``json.dumps`` with non-default options builds a new encoder on every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_DECODER = json.JSONDecoder()


class JsonSerializer:
    """JSON: ``None``, bools, numbers, strings, lists and string-keyed dicts.

    Tuples come back as lists (JSON has no tuple). NaN and infinities are refused.
    """

    def dumps(self, value: Any) -> bytes:
        try:
            return _ENCODER.encode(value).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                f"cannot record a value of type {type(value).__name__} as JSON: {exc}. "
                f"Return JSON-compatible values or configure another serializer."
            ) from exc

    def loads(self, data: bytes) -> Any:
        try:
            return _DECODER.decode((data if isinstance(data, bytes) else bytes(data))
                                   .decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SerializationError(f"corrupt JSON record: {exc}") from exc
