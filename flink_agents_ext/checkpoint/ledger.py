"""Payload bookkeeping of the checkpoint bridge: pure logic, no Flink.

Every snapshot may leave a small payload. The ledger keeps the payloads of snapshots whose
checkpoint has not been confirmed yet and decides what each checkpoint event hands over:

* ``complete(n)`` hands over every pending entry with an id ``<= n``, oldest first, and
  forgets them, so each entry is handed over exactly once even when Flink skipped the
  notifications of earlier checkpoints (a notification for ``n`` subsumes all earlier ones).
* ``abort(n)`` releases entry ``n`` only (and returns it, so that what it described can be
  carried into the next snapshot).
* The pending entries travel with every checkpoint (:meth:`PayloadLedger.to_bytes`), so after
  a restore from checkpoint ``n`` the entries that were unconfirmed when ``n`` was taken come
  back (:meth:`PayloadLedger.from_bytes`).

The wire format is JSON (bytes payloads in base64): no pickle, readable in any process.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from typing import Any, Iterable

from flink_agents_ext.errors import CheckpointLedgerError, PayloadSerializationError

_log = logging.getLogger(__name__)

_FORMAT = 1
#: Pending entries above this count get a warning: notifications are not arriving.
PENDING_WARN_THRESHOLD = 64


@dataclass(frozen=True)
class CheckpointPayload:
    """The payload one snapshot left, handed back when its checkpoint is confirmed.

    Attributes:
        checkpoint_id: the id of the checkpoint whose snapshot produced ``payload``.
        payload: what :meth:`snapshot_state` returned: ``bytes``, a JSON value, or ``None``.
    """

    checkpoint_id: int
    payload: Any


def _encode_payload(payload: Any) -> dict[str, Any]:
    if payload is None:
        return {"kind": "none"}
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return {"kind": "bytes", "data": base64.b64encode(bytes(payload)).decode("ascii")}
    try:
        text = json.dumps(payload, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PayloadSerializationError(
            f"a snapshot payload must be bytes or a JSON-serialisable value, got "
            f"{type(payload).__name__}: {exc}"
        ) from exc
    return {"kind": "json", "data": text}


def _decode_payload(entry: dict[str, Any]) -> Any:
    kind = entry.get("kind")
    if kind == "none":
        return None
    if kind == "bytes":
        return base64.b64decode(entry["data"])
    if kind == "json":
        return json.loads(entry["data"])
    raise CheckpointLedgerError(f"unknown payload kind in checkpoint ledger: {kind!r}")


class PayloadLedger:
    """Payloads of snapshots not yet confirmed by a checkpoint-complete notification.

    Entries are kept in snapshot order. One checkpoint id normally has one entry; after a
    rescale, a subtask may restore the entries of several former subtasks, so an id can
    have several, and all of them are handed over.
    """

    def __init__(self) -> None:
        # (checkpoint id, encoded payload), oldest first. Kept encoded so that serialising
        # is cheap and a payload that cannot be encoded fails in the snapshot, not later.
        self._pending: list[tuple[int, dict[str, Any]]] = []

    def __len__(self) -> int:
        return len(self._pending)

    def pending_ids(self) -> list[int]:
        """Ids of the unconfirmed snapshots, oldest first (an id may repeat after a rescale)."""
        return [cid for cid, _ in self._pending]

    def add(self, checkpoint_id: int, payload: Any) -> None:
        """Record the payload of the snapshot for ``checkpoint_id``.

        Raises:
            PayloadSerializationError: the payload is neither bytes nor JSON-serialisable.
            CheckpointLedgerError: ids must grow: ``checkpoint_id`` is not newer than all
                pending ones.
        """
        if self._pending and checkpoint_id <= self._pending[-1][0]:
            raise CheckpointLedgerError(
                f"snapshot for checkpoint {checkpoint_id} after one for "
                f"{self._pending[-1][0]}: checkpoint ids must grow"
            )
        self._pending.append((checkpoint_id, _encode_payload(payload)))
        if len(self._pending) > PENDING_WARN_THRESHOLD:
            _log.warning(
                "%d snapshots await a checkpoint-complete notification (oldest: %d); "
                "are checkpoints completing?",
                len(self._pending),
                self._pending[0][0],
            )

    def complete(self, checkpoint_id: int) -> list[CheckpointPayload]:
        """Confirm ``checkpoint_id``: pop and return every entry with an id <= it, oldest first."""
        done = [(cid, enc) for cid, enc in self._pending if cid <= checkpoint_id]
        self._pending = [(cid, enc) for cid, enc in self._pending if cid > checkpoint_id]
        return [CheckpointPayload(cid, _decode_payload(enc)) for cid, enc in done]

    def abort(self, checkpoint_id: int) -> list[CheckpointPayload]:
        """Release and return the entries of an aborted checkpoint (usually one or none)."""
        gone = [(cid, enc) for cid, enc in self._pending if cid == checkpoint_id]
        self._pending = [(cid, enc) for cid, enc in self._pending if cid != checkpoint_id]
        return [CheckpointPayload(cid, _decode_payload(enc)) for cid, enc in gone]

    def drain(self) -> list[CheckpointPayload]:
        """Pop and return every pending entry, oldest first."""
        done, self._pending = self._pending, []
        return [CheckpointPayload(cid, _decode_payload(enc)) for cid, enc in done]

    def to_bytes(self) -> bytes:
        """Serialise the pending entries (stored with every checkpoint)."""
        doc = {"format": _FORMAT, "entries": [{"id": cid, **enc} for cid, enc in self._pending]}
        return json.dumps(doc, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, blobs: Iterable[bytes]) -> PayloadLedger:
        """Rebuild a ledger from the blobs of one or more subtasks (after a rescale, several).

        Raises:
            CheckpointLedgerError: a blob is not a ledger of a format this version reads.
        """
        entries: list[tuple[int, dict[str, Any]]] = []
        for blob in blobs:
            try:
                doc = json.loads(bytes(blob).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise CheckpointLedgerError(f"corrupt checkpoint ledger: {exc}") from exc
            if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
                found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
                raise CheckpointLedgerError(f"unsupported checkpoint ledger format: {found}")
            for entry in doc["entries"]:
                cid = int(entry.pop("id"))
                _decode_payload(entry)  # validate now, not at completion time
                entries.append((cid, entry))
        ledger = cls()
        # sorted() is stable: entries of one id keep the order of the blobs they came from.
        ledger._pending = sorted(entries, key=lambda item: item[0])
        return ledger
