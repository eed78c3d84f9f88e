"""The checkpoint ledger's wire format and its errors, exactly (issue 16): the same pending
entries always give the same bytes (compact JSON, payload keys sorted), and a blob this
version cannot read is refused with what was found."""

from __future__ import annotations

import json
import logging

import pytest

from flink_agents_ext.checkpoint.ledger import PENDING_WARN_THRESHOLD, PayloadLedger
from flink_agents_ext.errors import CheckpointLedgerError, PayloadSerializationError


def test_wire_format_is_exact_and_deterministic() -> None:
    ledger = PayloadLedger()
    ledger.add(3, {"b": 1, "a": [2, "x"]})
    ledger.add(5, b"\x01")
    ledger.add(6, None)
    expected = (b'{"format":1,"entries":['
                b'{"id":3,"kind":"json","data":"{\\"a\\": [2, \\"x\\"], \\"b\\": 1}"},'
                b'{"id":5,"kind":"bytes","data":"AQ=="},'
                b'{"id":6,"kind":"none"}]}')
    assert ledger.to_bytes() == expected
    other = PayloadLedger()
    other.add(3, {"a": [2, "x"], "b": 1})  # same payload, keys in another order
    assert other.to_bytes() == expected[:expected.index(b",{\"id\":5")] + b"]}"


@pytest.mark.parametrize("blob, found", [
    (b'{"format": 2, "entries": []}', "2"),
    (b'{"entries": []}', "None"),
    (b"[1, 2]", "list"),
    (b'"text"', "str"),
])
def test_unsupported_format_names_what_was_found(blob: bytes, found: str) -> None:
    with pytest.raises(CheckpointLedgerError,
                       match=rf"^unsupported checkpoint ledger format: {found}$"):
        PayloadLedger.from_bytes([blob])


def test_unknown_payload_kind_is_refused_when_read() -> None:
    blob = json.dumps({"format": 1, "entries": [{"id": 1, "kind": "pickle", "data": ""}]})
    with pytest.raises(CheckpointLedgerError,
                       match=r"^unknown payload kind in checkpoint ledger: 'pickle'$"):
        PayloadLedger.from_bytes([blob.encode()])


def test_many_unconfirmed_snapshots_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    ledger = PayloadLedger()
    with caplog.at_level(logging.WARNING, logger="flink_agents_ext.checkpoint.ledger"):
        for cid in range(1, PENDING_WARN_THRESHOLD + 1):
            ledger.add(cid, None)
        assert caplog.records == []
        ledger.add(PENDING_WARN_THRESHOLD + 1, None)
    [record] = caplog.records
    assert record.getMessage() == (f"{PENDING_WARN_THRESHOLD + 1} snapshots await a "
                                   "checkpoint-complete notification (oldest: 1); are "
                                   "checkpoints completing?")
    assert ledger.pending_ids() == list(range(1, PENDING_WARN_THRESHOLD + 2))


def test_add_errors_name_the_payload_type_and_the_ids() -> None:
    ledger = PayloadLedger()
    with pytest.raises(PayloadSerializationError,
                       match=r"^a snapshot payload must be bytes or a JSON-serialisable value, "
                             r"got set: "):
        ledger.add(1, {1})
    ledger.add(2, None)
    with pytest.raises(CheckpointLedgerError,
                       match=r"^snapshot for checkpoint 2 after one for 2: checkpoint ids "
                             r"must grow$"):
        ledger.add(2, None)
