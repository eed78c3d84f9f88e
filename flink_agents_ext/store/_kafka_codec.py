"""Message keys and values of the Kafka action store (:mod:`flink_agents_ext.store.kafka`).

**Keys** are JSON arrays (ASCII, no spaces) whose first element names the kind of message
and the layout version; the rest identifies the record, so compaction keeps the newest
value per record and a tombstone (``None`` value) deletes it:

=====================================================  =============================
key                                                    value
=====================================================  =============================
``["a1", namespace, key, seq, action, occurrence]``    an action record (binary)
``["c1", namespace, key, seq, action, occurrence, p]``  journal entry at position p
``["m1", namespace, checkpoint, key]``                 prune mark: the sequence
``["b1", namespace]``                                  prune boundary: the checkpoint
``["r1", namespace]``                                  recovery marker (JSON offsets)
``["l1", namespace]``                                  lineage: JSON ``{"lineage",
                                                       "history", "cut"}``
``["t1"]``                                             the records topic's layout
=====================================================  =============================

A new field (e.g. a lineage that scopes records) is a new kind tag (``"a2"``...), so
records of both layouts can be told apart in one topic; a tag this version does not know
fails loudly instead of being skipped.

**Values** are length-prefixed binary, never pickled: action records are
``b"A\\x01"``, the completed flag, and event, outputs, events, memory updates; journal
entries are ``b"C\\x01"``, the status, and function, digest, result, error type and error
message (a length of ``0xFFFFFFFF`` is ``None``).
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any, Optional

from flink_agents_ext.store._rows import blob
from flink_agents_ext.store.base import (
    ActionRecord,
    CallRecord,
    CallStatus,
    RecordId,
    StoreError,
)

ACTION, CALL, MARK, BOUNDARY, MARKER, LAYOUT = "a1", "c1", "m1", "b1", "r1", "t1"
LINEAGE = "l1"
#: Kinds of the records topic and of the metadata topic.
RECORD_KINDS = frozenset({ACTION, CALL})
META_KINDS = frozenset({MARK, BOUNDARY, MARKER, LAYOUT, LINEAGE})

_dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode
_LEN = struct.Struct(">I")
_NONE = 0xFFFFFFFF
_STATUS = {CallStatus.PENDING: 0, CallStatus.OK: 1, CallStatus.ERROR: 2}
_STATUS_BACK = {code: status for status, code in _STATUS.items()}


def encode_key(*parts: Any) -> bytes:
    """The message key of ``parts`` (the kind tag first)."""
    return _dumps(parts).encode("ascii")


def decode_key(data: Optional[bytes], where: str) -> list[Any]:
    """The parts of a message key; ``StoreError`` for anything this version cannot read."""
    try:
        parts = json.loads(data) if data else None
    except ValueError:
        parts = None
    if not isinstance(parts, list) or not parts or not isinstance(parts[0], str):
        raise StoreError(f"Kafka store: {where} holds a message that is not an action-store "
                         f"record (key {data[:80] if data else data!r})")
    if parts[0] not in RECORD_KINDS and parts[0] not in META_KINDS:
        raise StoreError(f"Kafka store: {where} holds a record of kind {parts[0]!r} unknown to "
                         f"this flink-agents-ext (written by a newer version?); upgrade")
    return parts


def action_key(record_id: RecordId) -> bytes:
    """The key of an action record."""
    return encode_key(ACTION, record_id.namespace, record_id.key, record_id.seq,
                      record_id.action, record_id.occurrence)


def call_key(record_id: RecordId, position: int) -> bytes:
    """The key of a journal entry."""
    return encode_key(CALL, record_id.namespace, record_id.key, record_id.seq,
                      record_id.action, record_id.occurrence, position)


def partition_of(namespace: str, key: str, partitions: int) -> int:
    """The partition of every record of (``namespace``, ``key``): stable across processes
    (CRC-32, not Python's randomised ``hash``), so a tombstone follows its record."""
    return zlib.crc32(_dumps([namespace, key]).encode("ascii")) % partitions


def _put_bytes(out: list[bytes], value: Optional[bytes]) -> None:
    if value is None:
        out.append(_LEN.pack(_NONE))
    else:
        out.append(_LEN.pack(len(value)))
        out.append(value)


def _put_text(out: list[bytes], value: Optional[str]) -> None:
    _put_bytes(out, None if value is None else value.encode("utf-8", "surrogatepass"))


class _Reader:
    """Reads the length-prefixed fields of one value."""

    def __init__(self, data: bytes, start: int) -> None:
        self.data, self.pos = data, start

    def bytes_(self) -> Optional[bytes]:
        (length,) = _LEN.unpack_from(self.data, self.pos)
        self.pos += 4
        if length == _NONE:
            return None
        end = self.pos + length
        if end > len(self.data):
            raise ValueError("truncated value")
        value, self.pos = self.data[self.pos:end], end
        return value

    def text(self) -> Optional[str]:
        value = self.bytes_()
        return None if value is None else value.decode("utf-8", "surrogatepass")


def encode_action(record: ActionRecord) -> bytes:
    """The value of an action record."""
    out = [b"A\x01", b"\x01" if record.completed else b"\x00"]
    for name in ("event", "outputs", "events", "memory_updates"):
        _put_bytes(out, blob(getattr(record, name), name))
    return b"".join(out)


def decode_action(record_id: RecordId, data: bytes) -> ActionRecord:
    """The action record ``record_id`` from its value."""
    try:
        if data[:2] != b"A\x01":
            raise ValueError("not an action value")
        r = _Reader(data, 3)
        event, outputs, events, memory = r.bytes_(), r.bytes_(), r.bytes_(), r.bytes_()
        if event is None or outputs is None or events is None or memory is None:
            raise ValueError("missing field")
        return ActionRecord(record_id, event, outputs, events, memory, data[2] == 1)
    except (ValueError, struct.error, IndexError) as exc:
        raise StoreError(f"Kafka store: unreadable action record {record_id}: {exc}") from exc


def encode_call(call: CallRecord) -> bytes:
    """The value of a journal entry."""
    out = [b"C\x01", bytes([_STATUS[CallStatus(call.status)]])]
    _put_text(out, call.function)
    _put_text(out, call.digest)
    _put_bytes(out, None if call.result is None else blob(call.result, "result"))
    _put_text(out, call.error_type)
    _put_text(out, call.error_message)
    return b"".join(out)


def decode_call(record_id: RecordId, position: int, data: bytes) -> CallRecord:
    """The journal entry (``record_id``, ``position``) from its value."""
    try:
        if data[:2] != b"C\x01":
            raise ValueError("not a journal value")
        status = _STATUS_BACK[data[2]]
        r = _Reader(data, 3)
        function, digest = r.text(), r.text()
        if function is None or digest is None:
            raise ValueError("missing field")
        return CallRecord(record_id, position, function, digest, status, result=r.bytes_(),
                          error_type=r.text(), error_message=r.text())
    except (ValueError, KeyError, struct.error, IndexError) as exc:
        raise StoreError(f"Kafka store: unreadable journal entry {record_id} position "
                         f"{position}: {exc}") from exc


def encode_json(value: Any) -> bytes:
    """A metadata value (an integer, the marker's offsets)."""
    return _dumps(value).encode("ascii")


def decode_json(data: bytes, where: str) -> Any:
    """A metadata value; ``StoreError`` if it is not JSON."""
    try:
        return json.loads(data)
    except ValueError as exc:
        raise StoreError(f"Kafka store: unreadable metadata {where}: {exc}") from exc
