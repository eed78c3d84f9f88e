"""Stable, type-aware encoding of Flink keys (and call arguments) to text.

``encode_key(1) != encode_key("1") != encode_key((1,))``, and the same value gets the same
encoding in every process and Python version: no ``repr`` of arbitrary objects, no hash
randomisation, no pickle. Supported: ``None``, ``bool``, ``int``, ``float``, ``str``,
``bytes``, ``tuple``, ``list``, ``dict`` (with encodable keys, sorted by their encoding) and
PyFlink's ``Row`` (field names included when it has them). Anything else raises
:class:`KeyEncodingError`.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from pyflink.common import Row

from flink_agents_ext.errors import FlinkAgentsExtError

#: Encodings longer than this are stored as a digest (the action store indexes them).
MAX_INLINE_KEY = 512

_quote = json.JSONEncoder(ensure_ascii=False).encode  # built once; a JSON string literal


class KeyEncodingError(FlinkAgentsExtError, ValueError):
    """A value has a type that has no stable encoding."""


def _enc(value: Any) -> str:
    # Fast path for the common exact types; subclasses take the checks below.
    kind = type(value)
    if kind is int:
        return f"i:{value}"
    if kind is str:
        return "s:" + _quote(value)
    if kind is tuple:
        return "t[" + ",".join([_enc(v) for v in value]) + "]"
    # bool before int: True is an int in Python.
    if value is None:
        return "n"
    if isinstance(value, bool):
        return "b:1" if value else "b:0"
    if isinstance(value, int):
        return f"i:{value}"
    if isinstance(value, float):
        if math.isnan(value):
            raise KeyEncodingError("NaN has no stable identity and cannot be encoded")
        return f"f:{value!r}"
    if isinstance(value, str):
        return "s:" + _quote(value)
    if isinstance(value, (bytes, bytearray)):
        return "x:" + bytes(value).hex()
    if isinstance(value, Row):
        names = value.as_dict().keys() if _row_has_names(value) else None
        fields = ",".join(_enc(v) for v in value._values)
        head = "r" if names is None else "r" + json.dumps(list(names))
        return f"{head}[{fields}]"
    if isinstance(value, tuple):
        return "t[" + ",".join(_enc(v) for v in value) + "]"
    if isinstance(value, list):
        return "l[" + ",".join(_enc(v) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted((_enc(k), _enc(v)) for k, v in value.items())
        return "d{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    raise KeyEncodingError(
        f"values of type {type(value).__module__}.{type(value).__qualname__} have no stable "
        f"encoding; use None, bool, int, float, str, bytes, tuple, list, dict or Row"
    )


def _row_has_names(row: Row) -> bool:
    try:
        row.as_dict()
    except Exception:
        return False
    return True


def encode_key(key: Any) -> str:
    """Encode a Flink key for the action store.

    Raises:
        KeyEncodingError: the key (or something inside it) has no stable encoding.
    """
    text = _enc(key)
    if len(text) > MAX_INLINE_KEY:
        return "h:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    return text


def digest_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """A stable digest of a durable call's arguments (positional and keyword)."""
    text = _enc(args) if not kwargs else _enc(args) + ";" + _enc(kwargs)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
