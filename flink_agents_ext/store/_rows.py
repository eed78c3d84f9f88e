"""Records to SQL parameters and rows back to records: shared by the SQL backends.

Both backends use the same column order (``actions``: the record id, ``event``,
``outputs``, ``events``, ``memory_updates``, ``completed``; ``calls``: the record id,
``position``, ``function``, ``digest``, ``status``, ``result``, ``error_type``,
``error_message``).
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Optional

from flink_agents_ext.store.base import (
    ActionRecord,
    CallRecord,
    CallStatus,
    LineageRecord,
    RecordId,
    StoreError,
)


def blob(value: object, field: str) -> bytes:
    """``value`` as ``bytes``; payload columns are opaque bytes, never text."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{field} must be bytes, got {type(value).__name__}")


def id_params(record_id: RecordId) -> tuple[str, str, int, str, int]:
    """The record id's columns: namespace, key, seq, action, occurrence."""
    return (record_id.namespace, record_id.key, record_id.seq, record_id.action,
            record_id.occurrence)


def action_params(record: ActionRecord) -> tuple[Any, ...]:
    """The parameters of an ``actions`` insert."""
    return (*id_params(record.id), blob(record.event, "event"),
            blob(record.outputs, "outputs"), blob(record.events, "events"),
            blob(record.memory_updates, "memory_updates"), bool(record.completed))


def call_params(call: CallRecord) -> tuple[Any, ...]:
    """The parameters of a ``calls`` insert."""
    result = None if call.result is None else blob(call.result, "result")
    return (*id_params(call.id), call.position, call.function, call.digest,
            CallStatus(call.status).value, result, call.error_type, call.error_message)


def action_from_row(row: tuple[Any, ...]) -> ActionRecord:
    """An ``actions`` row (all columns, in order) as a record."""
    return ActionRecord(RecordId(row[0], row[1], row[2], row[3], row[4]), event=row[5],
                        outputs=row[6], events=row[7], memory_updates=row[8],
                        completed=bool(row[9]))


def calls_from_rows(record_id: RecordId, rows: Iterable[tuple[Any, ...]]) -> list[CallRecord]:
    """``calls`` rows (``position`` to ``error_message``) of one action execution."""
    return [CallRecord(record_id, position=r[0], function=r[1], digest=r[2],
                       status=CallStatus(r[3]), result=r[4], error_type=r[5],
                       error_message=r[6]) for r in rows]


def history_to_json(record: LineageRecord) -> str:
    """The history of a lineage record as JSON: ``[[job id, limit or null], ...]``."""
    return json.dumps([[job, limit] for job, limit in record.history], separators=(",", ":"))


def lineage_from_json(lineage: str, history: Any) -> LineageRecord:
    """A lineage record from its lineage id and JSON history (``str`` or decoded)."""
    try:
        items = json.loads(history) if isinstance(history, (str, bytes)) else history
        steps = tuple((str(job), None if limit is None else int(limit))
                      for job, limit in items)
    except (ValueError, TypeError) as exc:
        raise StoreError(f"corrupt lineage history {history!r}") from exc
    return LineageRecord(str(lineage), steps)


def lineage_params(namespace: str, record: LineageRecord) -> tuple[str, str, str]:
    """The parameters of a ``lineages`` upsert."""
    return (namespace, record.lineage, history_to_json(record))


def lineage_from_row(row: Optional[tuple[Any, ...]]) -> Optional[LineageRecord]:
    """A ``lineages`` row (``lineage``, ``history``) as a record; ``None`` for no row."""
    return None if row is None else lineage_from_json(row[0], row[1])
