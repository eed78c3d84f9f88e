"""Failure and bad-input hooks for the main job (``jobs/support_triage.py``), installed by
``chaos/job.py`` (``--spec SPEC``, ``--bad-input``) through the job's ``Variant``; the job
and the library (``flink_agents_ext``) have no chaos code. The hooks wrap what the job hands
to the library, using public API only:

* each action of the agent (:class:`ChaosAction`) and the :class:`ActionContext` it gets
  (:class:`ChaosContext`): failures before and after a durable call, bad-input tickets;
* the store, through a store factory (:class:`UnrecordedCallStoreFactory`): a durable call
  that ran but whose journal entry is never written;
* the function class (:class:`ChaosFunctionMixin`): failures in a snapshot and in a
  checkpoint-completion notification.

``SPEC`` is ``none`` or ``POINT:TARGET:TRIGGER``:

==========================  ==================================================================
``before-call:ACTION:N``    ACTION (classify, enrich, respond) of generated ticket N fails
                            when it starts, before its durable call
``after-call:ACTION:N``     ... fails right after its first durable call returned (recorded)
``unrecorded:CALL:N``       the durable call CALL (model_classify, crm_lookup,
                            model_draft_reply, page_oncall) of ticket N runs, then the task
                            fails before its journal entry is written. ``page_oncall`` is
                            reconcilable: its replay runs the reconciler, not the call
``snapshot:before|after:K`` the K-th snapshot (of a subtask, counting snapshots with elements
                            processed since the previous one) fails, before / after the
                            function's ``snapshot_state`` captured its payload
``notify:before|after:K``   the K-th completion notification with a non-empty payload fails,
                            before pruning (the notification is lost: the restore must prune)
                            / after pruning (the restore prunes again, idempotently)
==========================  ==================================================================

Every failure raises :class:`ChaosFailure` (a ``RetryableActionError``: the task fails,
Flink restarts the job from the last completed checkpoint) and fires once per output
directory: the first to fire creates ``<out>/chaos-fired.json`` (with ``O_EXCL``) describing
it; replays and other subtasks then pass.

In chaos mode the pager call is made through ``durable_execute_reconcilable``; its reconciler
looks the page up in the side-effect ledger (``<out>/side_effects.jsonl``), logs itself to
``<out>/reconciled.jsonl`` and pages only when the page is not there.

With ``--bad-input`` tickets carrying a ``"chaos"`` field (see :mod:`chaos.inputs`)
turn bad inside the job: ``unserialisable_result`` (``respond`` emits a value JSON cannot
hold), ``unserialisable_call`` (a durable call returns one) and ``unencodable_key`` (the key
selector returns NaN, which has no stable key encoding).
"""

from __future__ import annotations

import datetime
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from flink_agents_ext.actions import ActionContext, Agent, RetryableActionError, durable_name
from flink_agents_ext.checkpoint import CheckpointPayload, SnapshotContext
from flink_agents_ext.store import (
    ActionRecord,
    ActionStateStore,
    CallRecord,
    CallStatus,
    open_store,
)

#: Created by the failure that fires (once per output directory).
MARKER = "chaos-fired.json"
#: One line per reconciler execution of the pager call.
RECONCILED = "reconciled.jsonl"
#: The job's side-effect ledger (one line per real execution of a durable call).
LEDGER = "side_effects.jsonl"
#: One line per ``restore_state`` of the function: checkpoint, payloads, records pruned.
RESTORES = "chaos-restores.jsonl"
#: One line per durable call returned to its action (with ``commit: each`` its record is
#: committed by then): what a killed process had recorded.
RECORDED = "chaos-recorded.jsonl"
#: What the hooks write to the output directory (removed at a fresh start).
OUTPUT_FILES = (MARKER, RECONCILED, RESTORES, RECORDED)

ACTIONS = ("classify", "enrich", "respond")
#: Durable calls of the job (by function name, as in the ledger) -> the action making them.
CALLS = {"model_classify": "classify", "crm_lookup": "enrich",
         "model_draft_reply": "respond", "page_oncall": "respond"}
#: Calls made through ``durable_execute_reconcilable`` in chaos mode.
RECONCILABLE_CALLS = ("page_oncall",)
#: Ledger name of the call whose result cannot be recorded (``unserialisable_call`` ticket).
UNRECORDABLE_CALL = "chaos_unrecordable_draft"
#: Targets of each failure point.
POINTS: dict[str, tuple[str, ...]] = {
    "none": (),
    "before-call": ACTIONS,
    "after-call": ACTIONS,
    "unrecorded": tuple(CALLS),
    "snapshot": ("before", "after"),
    "notify": ("before", "after"),
}
#: Values of a ticket's ``"chaos"`` field that ``--bad-input`` acts on.
BAD_TICKETS = ("unserialisable_result", "unserialisable_call", "unencodable_key")

# The ticket number and durable call the current thread is working on (set by ChaosAction
# and ChaosContext, read by the store proxy): runs execute on one thread each.
_local = threading.local()


class ChaosFailure(RetryableActionError):
    """An injected failure: the task fails and Flink restarts it from the last checkpoint."""


@dataclass(frozen=True)
class ChaosSpec:
    """Where to inject a failure: ``point``, its ``target`` and the ``trigger`` count."""

    point: str = "none"
    target: str = ""
    trigger: int = 0

    @classmethod
    def parse(cls, text: str) -> ChaosSpec:
        """Parse ``none`` or ``POINT:TARGET:TRIGGER``; raise ``ValueError`` with the grammar."""
        if text.strip() == "none":
            return cls()
        parts = text.strip().split(":")
        grammar = ("expected 'none' or POINT:TARGET:TRIGGER with POINT:TARGET one of "
                   + ", ".join(f"{p}:{'|'.join(t)}" for p, t in POINTS.items() if t))
        if len(parts) != 3 or parts[0] not in POINTS or parts[1] not in POINTS[parts[0]]:
            raise ValueError(f"bad chaos spec {text!r}: {grammar}")
        try:
            trigger = int(parts[2])
        except ValueError:
            raise ValueError(f"bad chaos spec {text!r}: TRIGGER must be an integer") from None
        if trigger < 1:
            raise ValueError(f"bad chaos spec {text!r}: TRIGGER must be >= 1")
        return cls(parts[0], parts[1], trigger)

    def __str__(self) -> str:
        return "none" if self.point == "none" else f"{self.point}:{self.target}:{self.trigger}"


def fire_once(out_dir: str, spec: ChaosSpec, detail: str, **facts: Any) -> bool:
    """Claim the one failure of ``out_dir``; ``False`` when it has fired already.

    The marker file gets the spec, ``detail`` and ``facts`` (e.g. the checkpoint id)."""
    path = os.path.join(out_dir, MARKER)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        json.dump({"spec": str(spec), "detail": detail, "time": time.time(),
                   "pid": os.getpid(), **facts}, fh)
    return True


def _log_line(out_dir: str, name: str, entry: Mapping[str, Any]) -> None:
    with open(os.path.join(out_dir, name), "a") as fh:
        fh.write(json.dumps(entry) + "\n")


def ledger_has(out_dir: str, call: str, ticket_id: str) -> bool:
    """Whether the side-effect ledger records a real execution of ``call`` for a ticket."""
    path = os.path.join(out_dir, LEDGER)
    if not os.path.exists(path):
        return False
    with open(path) as fh:
        for line in fh:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a killed process
                continue
            if entry.get("call") == call and entry.get("ticket") == ticket_id:
                return True
    return False


@durable_name("chaos.unrecordable_draft.v1")
def unrecordable_draft(out_dir: str, ticket_id: str) -> dict[str, Any]:
    """A durable call whose result JSON cannot hold (a datetime): it runs, is logged, and
    then cannot be recorded, so its action fails and the ticket is dead-lettered."""
    _log_line(out_dir, LEDGER, {"call": UNRECORDABLE_CALL, "ticket": ticket_id})
    return {"reply": "drafted", "drafted_at": datetime.datetime.now(datetime.timezone.utc)}


class ChaosHooks:
    """The hooks of one job run: what ``--chaos`` / ``--chaos-bad-input`` asked for.

    Args:
        spec: the failure (``"none"`` for none), see the module documentation.
        bad_input: act on the ``"chaos"`` field of bad-input tickets.
        out_dir: the job's output directory (marker, ledger, reconciler log).
        page_call: the job's pager durable call ``(out_dir, ticket_id, category) -> str``.
        page_id: ``(ticket_id, category) -> str``, the page id the pager returned (what the
            reconciler "looks up").
    """

    def __init__(self, spec: str, bad_input: bool, out_dir: str,
                 page_call: Callable[[str, str, str], str],
                 page_id: Callable[[str, str], str]) -> None:
        self.spec = ChaosSpec.parse(spec)
        self.bad_input = bad_input
        self.out_dir = out_dir
        self.page_call = page_call
        self.page_id = page_id

    def fail(self, detail: str, **facts: Any) -> None:
        """Raise :class:`ChaosFailure` unless this run's failure fired already."""
        if fire_once(self.out_dir, self.spec, detail, **facts):
            raise ChaosFailure(f"chaos: injected failure ({self.spec}) {detail}")

    def instrument(self, agent: Agent, function_cls: type,
                   store: Mapping[str, Any]) -> tuple[Agent, type, Any]:
        """Wrap the job's agent, function class and store settings.

        Returns:
            ``(agent, function class, store spec)`` to build the durable function from.
        """
        wrapped = Agent(agent.name)
        for action in agent.actions:
            wrapped.add_action(ChaosAction(self, action.name, action.fn), on=action.on,
                               name=action.name)
        cls = type(f"Chaos{function_cls.__name__}", (ChaosFunctionMixin, function_cls),
                   {"chaos_hooks": self, "__doc__": "The job's function with chaos hooks."})
        spec: Any = dict(store)
        if self.spec.point == "unrecorded":
            spec = UnrecordedCallStoreFactory(dict(store), self)
        return wrapped, cls, spec

    def key_selector(self) -> TicketKey:
        """The key selector: the customer (NaN for an ``unencodable_key`` ticket)."""
        return TicketKey(self.bad_input)


class TicketKey:
    """Key of a ticket: its customer; with bad input on, NaN for ``unencodable_key``."""

    def __init__(self, bad_input: bool) -> None:
        self.bad_input = bad_input

    def __call__(self, ticket: dict[str, Any]) -> Any:
        if self.bad_input and ticket.get("chaos") == "unencodable_key":
            return float("nan")
        return ticket["customer"]


class ChaosAction:
    """An action wrapped with the failure hooks (``before-call``) and :class:`ChaosContext`."""

    def __init__(self, hooks: ChaosHooks, name: str, fn: Callable[[Any, Any], None]) -> None:
        self.hooks = hooks
        self.name = name
        self.fn = fn
        self.__name__ = name

    def __call__(self, payload: Any, ctx: ActionContext) -> None:
        ticket = payload if isinstance(payload, dict) else {}
        _local.ticket, _local.call = ticket.get("n"), None
        try:
            spec = self.hooks.spec
            if (spec.point == "before-call" and spec.target == self.name
                    and ticket.get("n") == spec.trigger):
                self.hooks.fail(f"in {self.name} of ticket {ticket.get('ticket_id')}, "
                                f"before its durable call")
            self.fn(payload, ChaosContext(self.hooks, self.name, ticket, ctx))
        finally:
            _local.ticket, _local.call = None, None


class ChaosContext:
    """The action's context with hooks on durable calls and emits; the rest is delegated."""

    def __init__(self, hooks: ChaosHooks, action: str, ticket: dict[str, Any],
                 ctx: ActionContext) -> None:
        self._hooks = hooks
        self._action = action
        self._ticket = ticket
        self._ctx = ctx
        self._calls = 0
        self._bad = ticket.get("chaos") if hooks.bad_input else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def durable_execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """The real durable call (reconcilable for the pager), then the ``after-call`` hook."""
        name = getattr(fn, "__name__", "")
        _local.call = name
        if self._bad == "unserialisable_call" and name == "model_draft_reply":
            # Raises SerializationError: the action fails, the ticket is dead-lettered.
            return self._ctx.durable_execute(unrecordable_draft, self._hooks.out_dir,
                                             self._ticket["ticket_id"])
        if name in RECONCILABLE_CALLS:
            result = self._ctx.durable_execute_reconcilable(
                fn, PageReconciler(self._hooks), *args, **kwargs)
        else:
            result = self._ctx.durable_execute(fn, *args, **kwargs)
        _log_line(self._hooks.out_dir, RECORDED,
                  {"call": name, "ticket": self._ticket.get("ticket_id"), "time": time.time()})
        self._calls += 1
        spec = self._hooks.spec
        if (spec.point == "after-call" and spec.target == self._action and self._calls == 1
                and self._ticket.get("n") == spec.trigger):
            self._hooks.fail(f"in {self._action} of ticket {self._ticket.get('ticket_id')}, "
                             f"after its durable call {name} returned")
        return result

    def emit(self, record: Any) -> None:
        """Emit ``record`` (for an ``unserialisable_result`` ticket: with a datetime in it)."""
        if self._bad == "unserialisable_result":
            record = {"result": record,
                      "drafted_at": datetime.datetime.now(datetime.timezone.utc)}
        self._ctx.emit(record)


class PageReconciler:
    """Reconciler of the pager call: look the page up, page only if it never happened."""

    def __init__(self, hooks: ChaosHooks) -> None:
        self.hooks = hooks
        self.__name__ = "reconcile_page"

    def __call__(self, out_dir: str, ticket_id: str, category: str) -> str:
        found = ledger_has(out_dir, "page_oncall", ticket_id)
        _log_line(out_dir, RECONCILED, {"call": "page_oncall", "ticket": ticket_id,
                                        "found": found})
        if found:
            return self.hooks.page_id(ticket_id, category)
        return self.hooks.page_call(out_dir, ticket_id, category)


class UnrecordedCallStoreFactory:
    """Store factory for the ``unrecorded`` point: opens the configured store, wrapped."""

    def __init__(self, settings: dict[str, Any], hooks: ChaosHooks) -> None:
        self.settings = settings
        self.hooks = hooks

    def __call__(self) -> ActionStateStore:
        # Duck-typed proxy (everything but put_call delegated), so that it keeps working when
        # the store interface grows.
        proxy: Any = UnrecordedCallStore(open_store(self.settings), self.hooks)
        return proxy  # type: ignore[no-any-return]


class UnrecordedCallStore:
    """Store proxy: the target call's OK journal entry is not written, the task fails.

    The call has run by then (its side effect is in the ledger): this is a process dying
    between a durable call's return and its record.
    """

    def __init__(self, inner: ActionStateStore, hooks: ChaosHooks) -> None:
        self._inner = inner
        self._hooks = hooks

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _check(self, call: CallRecord) -> None:
        spec = self._hooks.spec
        if (call.status is CallStatus.OK and getattr(_local, "call", None) == spec.target
                and getattr(_local, "ticket", None) == spec.trigger):
            self._hooks.fail(f"after {spec.target} of ticket G-{spec.trigger:06d} ran, "
                             f"before its journal entry was written")

    def put_call(self, call: CallRecord) -> None:
        """Write ``call``, unless it is the target's result: then fail instead."""
        self._check(call)
        self._inner.put_call(call)

    def put_many(self, actions: Sequence[ActionRecord], calls: Sequence[CallRecord]) -> None:
        """Write the records, unless one of ``calls`` is the target's result (an action's
        first journal entry goes with its started record): then fail instead."""
        for call in calls:
            self._check(call)
        self._inner.put_many(actions, calls)

    def __enter__(self) -> UnrecordedCallStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.close()


class ChaosFunctionMixin:
    """Snapshot and notification failure hooks, mixed into the job's function class by
    :meth:`ChaosHooks.instrument` (which sets ``chaos_hooks`` on the generated class)."""

    chaos_hooks: ChaosHooks

    def open(self, runtime_context: Any) -> None:
        """Open the function; reset the counters of this attempt."""
        super().open(runtime_context)  # type: ignore[misc]
        self._chaos_fresh_elements = 0
        self._chaos_snapshots = 0
        self._chaos_notifications = 0

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        """Count the element, then process it."""
        self._chaos_fresh_elements += 1
        yield from super().process_element(value, ctx)  # type: ignore[misc]

    def snapshot_state(self, context: SnapshotContext) -> Any:
        """The function's snapshot, failing at the ``snapshot`` point."""
        spec = self.chaos_hooks.spec
        hit = False
        if spec.point == "snapshot" and self._chaos_fresh_elements > 0:
            self._chaos_snapshots += 1
            hit = self._chaos_snapshots == spec.trigger
        self._chaos_fresh_elements = 0
        where = f"in the snapshot for checkpoint {context.checkpoint_id}"
        if hit and spec.target == "before":
            self.chaos_hooks.fail(f"{where}, before snapshot_state",
                                  checkpoint=context.checkpoint_id)
        payload = super().snapshot_state(context)  # type: ignore[misc]
        if hit and spec.target == "after":
            size = len(payload) if isinstance(payload, dict) else "?"
            self.chaos_hooks.fail(f"{where}, after snapshot_state captured {size} keys",
                                  checkpoint=context.checkpoint_id)
        return payload

    def notify_checkpoint_complete(self, checkpoint_id: int,
                                   payloads: Sequence[CheckpointPayload]) -> None:
        """The function's completion handling, failing at the ``notify`` point."""
        spec = self.chaos_hooks.spec
        hit = False
        if spec.point == "notify" and any(p.payload for p in payloads):
            self._chaos_notifications += 1
            hit = self._chaos_notifications == spec.trigger
        where = (f"in the completion notification of checkpoint {checkpoint_id} "
                 f"({len(payloads)} payload(s))")
        if hit and spec.target == "before":
            self.chaos_hooks.fail(f"{where}, before pruning: the notification is lost",
                                  checkpoint=checkpoint_id)
        super().notify_checkpoint_complete(checkpoint_id, payloads)  # type: ignore[misc]
        if hit and spec.target == "after":
            self.chaos_hooks.fail(f"{where}, after pruning", checkpoint=checkpoint_id)

    def restore_state(self, checkpoint_id: int, payloads: Sequence[CheckpointPayload]) -> None:
        """The function's restore, logged to ``<out>/chaos-restores.jsonl`` (also when it
        raises, e.g. ``RestoreBoundaryError``)."""
        before = self.stats()["records_pruned"]  # type: ignore[attr-defined]
        entry: dict[str, Any] = {"checkpoint": checkpoint_id,
                                 "payloads": [p.checkpoint_id for p in payloads],
                                 "keys": sum(len(p.payload or {}) for p in payloads),
                                 "pid": os.getpid(), "time": time.time()}
        try:
            super().restore_state(checkpoint_id, payloads)  # type: ignore[misc]
            entry["covered_left"] = self._chaos_covered_left(payloads)
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            entry["pruned"] = self.stats()["records_pruned"] - before  # type: ignore[attr-defined]
            _log_line(self.chaos_hooks.out_dir, RESTORES, entry)


    def _chaos_covered_left(self, payloads: Sequence[CheckpointPayload]) -> int:
        """Runs still recorded that the restored payloads cover (with retention 1 the
        restore must have pruned them all; a payload key whose run was in flight at the
        snapshot covers only what an earlier checkpoint pruned already)."""
        marks: dict[str, int] = {}
        for p in payloads:
            for key, seq in (p.payload or {}).items():
                marks[key] = max(marks.get(key, -1), int(seq))
        runs = self.store.recorded_runs(self.namespace)  # type: ignore[attr-defined]
        return sum(1 for key, seq in runs if key in marks and seq <= marks[key])


def describe(out_dir: str) -> Optional[dict[str, Any]]:
    """What fired in ``out_dir`` (the marker's content), or ``None``."""
    path = os.path.join(out_dir, MARKER)
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        data: dict[str, Any] = json.load(fh)
    return data
