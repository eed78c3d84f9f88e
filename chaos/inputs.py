"""The chaos input: bad lines and bad tickets, and the dead letter each must produce.

Good tickets come from the job's own generated stream (``input.generate``); this file adds
one of each kind of bad input. Each reaches the dead-letter output with its reason while the
job keeps running: the parse step rejects malformed JSON, an unknown event type, a missing
field and an oversized line; with ``--chaos-bad-input`` the agent gets a ticket whose result
cannot be serialised, one whose durable call returns a value that cannot be recorded, and one
whose key cannot be encoded (see :mod:`chaos.inject`).

Every bad ticket that reaches the agent has a customer of its own, so it does not change
what good tickets of other customers produce (e.g. the per-customer ticket count).

    python -m chaos.inputs PATH      # write the file, print what each line must produce
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

#: Size of the oversized line (the job's limit is 16 KiB).
OVERSIZED_BYTES = 20 * 1024


@dataclass(frozen=True)
class BadInput:
    """One bad input line and the dead letter it must produce.

    Attributes:
        kind: what is wrong with it.
        marker: a string that identifies the line in the dead letter's ``input``.
        line: the line as written to the input file.
        reason: a fragment the dead letter's ``reason`` must contain.
        action: the failing action named in the dead letter (agent dead letters), or ``None``.
        stage: ``parse`` (rejected by the job's parse step) or ``agent`` (by the agent).
    """

    kind: str
    marker: str
    line: str
    reason: str
    action: str | None = None
    stage: str = "parse"


def _ticket(ticket_id: str, customer: str, text: str, **extra: Any) -> str:
    return json.dumps({"type": "ticket", "ticket_id": ticket_id, "customer": customer,
                       "text": text, **extra})


def bad_inputs() -> list[BadInput]:
    """The bad inputs, in file order."""
    return [
        BadInput("malformed_json", "X-MALFORMED",
                 '{"type": "ticket", "ticket_id": "X-MALFORMED", "customer": "acme", "text": ',
                 "malformed JSON"),
        BadInput("unknown_event_type", "X-UNKNOWN-TYPE",
                 json.dumps({"type": "refund", "ticket_id": "X-UNKNOWN-TYPE",
                             "customer": "acme", "amount": 12}),
                 "unknown event type: 'refund'"),
        BadInput("missing_field", "X-MISSING-FIELD",
                 json.dumps({"type": "ticket", "ticket_id": "X-MISSING-FIELD",
                             "text": "no customer"}),
                 "missing or non-string field(s): customer"),
        BadInput("oversized_payload", "X-OVERSIZED",
                 _ticket("X-OVERSIZED", "chaos-oversized", "x" * OVERSIZED_BYTES),
                 "oversized ticket"),
        BadInput("unserialisable_result", "X-UNSERIALISABLE-RESULT",
                 _ticket("X-UNSERIALISABLE-RESULT", "chaos-unserialisable-result",
                         "Invoice shows a double charge!", chaos="unserialisable_result"),
                 "cannot record the effects of action respond: the value of ctx.emit()",
                 action="respond", stage="agent"),
        BadInput("unserialisable_call_result", "X-UNSERIALISABLE-CALL",
                 _ticket("X-UNSERIALISABLE-CALL", "chaos-unserialisable-call",
                         "Payment failed twice", chaos="unserialisable_call"),
                 "ran but its result cannot be recorded", action="respond", stage="agent"),
        BadInput("unencodable_key", "X-UNENCODABLE-KEY",
                 _ticket("X-UNENCODABLE-KEY", "chaos-unencodable-key",
                         "Cannot log in since this morning", chaos="unencodable_key"),
                 "key cannot be encoded", stage="agent"),
    ]


def other_ticket(n: int) -> str:
    """The n-th generated ticket with another text (same id, number and customer): what an
    earlier job on the same namespace processed, in the ``fresh-on-used`` trials."""
    from jobs.support_triage import TEXTS, generated_ticket

    ticket = json.loads(generated_ticket(n))
    ticket["text"] = TEXTS[(TEXTS.index(ticket["text"]) + 3) % len(TEXTS)]
    return json.dumps(ticket)


def write_input_file(path: str) -> list[BadInput]:
    """Write the bad inputs to ``path`` (JSON lines); return them."""
    items = bad_inputs()
    with open(path, "w") as fh:
        for item in items:
            fh.write(item.line + "\n")
    return items


def dead_letter_marker(dead_letter: dict[str, Any]) -> str:
    """The text of a dead letter's ``input`` (its JSON for an agent dead letter)."""
    value = dead_letter.get("input")
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def check_dead_letters(dead_letters: list[dict[str, Any]]) -> dict[str, str]:
    """Match dead letters against :func:`bad_inputs`.

    Returns:
        ``{kind: problem}`` for every bad input not dead-lettered exactly once with its
        reason (and action), plus ``{"unexpected": ...}`` for dead letters of anything else;
        empty when all is as expected.
    """
    problems: dict[str, str] = {}
    matched: set[int] = set()
    for item in bad_inputs():
        hits = [i for i, d in enumerate(dead_letters) if item.marker in dead_letter_marker(d)]
        matched.update(hits)
        if len(hits) != 1:
            problems[item.kind] = f"dead-lettered {len(hits)} times, expected once"
            continue
        letter = dead_letters[hits[0]]
        reason = str(letter.get("reason", ""))
        if item.reason not in reason:
            problems[item.kind] = f"reason {reason[:200]!r} lacks {item.reason!r}"
        elif item.action is not None and letter.get("action") != item.action:
            problems[item.kind] = f"action {letter.get('action')!r}, expected {item.action!r}"
    others = [d for i, d in enumerate(dead_letters) if i not in matched]
    if others:
        problems["unexpected"] = (f"{len(others)} other dead letter(s), e.g. "
                                  f"{json.dumps(others[0])[:300]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Write the file named on the command line; print what each line must produce."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m chaos.inputs PATH", file=sys.stderr)
        return 2
    for item in write_input_file(args[0]):
        where = item.stage + (f" ({item.action})" if item.action else "")
        print(f"  {item.kind:<28} {item.marker:<26} {where:<16} {item.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
