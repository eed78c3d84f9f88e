"""Dead letters: the records :class:`~flink_agents_ext.actions.DurableAgentFunction` could
not process, as JSON strings on its side output :data:`DEAD_LETTER_TAG`.

A dead letter is one JSON object (always valid JSON, whatever the input held)::

    {"namespace": "support-v1", "key": "alice", "seq": 3, "action": "respond",
     "reason": "RuntimeError: payment service down", "input": {...}}

* ``key``, ``input``: the record's key and the input, made JSON-safe by :func:`jsonable`:
  non-finite floats become the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``,
  tuples become lists, dict keys that are not strings become their JSON text (``1`` ->
  ``"1"``), and any other value its ``repr`` (at most :data:`MAX_REPR` characters);
* ``seq``: the run's sequence, ``null`` when no run started (a key that cannot be used);
* ``action``: the failing action, ``null`` for a problem of the run or the record;
* ``reason``: why, in one line.
"""

from __future__ import annotations

import json
import math
from typing import Any, Optional

from pyflink.common import Types
from pyflink.datastream import OutputTag

#: Side output of records that could not be processed, as JSON strings with a reason.
DEAD_LETTER_TAG = OutputTag("flink-agents-ext-dead-letters", Types.STRING())

#: Longest ``repr`` written for a value JSON cannot hold.
MAX_REPR = 1000
#: Deeper nesting is written as its ``repr``.
MAX_DEPTH = 64

_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as a value strict JSON can hold (see the module documentation)."""
    kind = type(value)
    if value is None or kind in (str, int, bool):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return _NON_FINITE.get(value, float(value))
    if depth < MAX_DEPTH:
        if isinstance(value, (list, tuple)):
            return [jsonable(v, depth + 1) for v in value]
        if isinstance(value, dict):
            return {_json_key(k, depth): jsonable(v, depth + 1) for k, v in value.items()}
        if isinstance(value, (str, int)):  # subclasses (enums...): their plain value
            return str(value) if isinstance(value, str) else int(value)
    return repr(value)[:MAX_REPR]


def _json_key(key: Any, depth: int) -> str:
    if isinstance(key, str):
        return key
    safe = jsonable(key, depth + 1)
    return safe if isinstance(safe, str) else json.dumps(safe, allow_nan=False)


def dead_letter(namespace: str, key: Any, seq: Optional[int], action: Optional[str],
                reason: str, value: Any) -> str:
    """The dead letter of input ``value`` of ``key`` (see the module documentation)."""
    record = {"namespace": namespace, "key": jsonable(key), "seq": seq, "action": action,
              "reason": reason, "input": jsonable(value)}
    return json.dumps(record, sort_keys=True, allow_nan=False)
