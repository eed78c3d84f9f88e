"""What an action sees while it runs: its event, memory, outputs and durable calls."""

from __future__ import annotations

import contextlib
import importlib
import logging
from typing import Any, Awaitable, Callable, Iterator, NamedTuple, Optional, TypeVar

from flink_agents_ext.errors import FlinkAgentsExtError
from flink_agents_ext.keys import KeyEncodingError, digest_call
from flink_agents_ext.serde import SerializationError, Serializer
from flink_agents_ext.store.base import (
    ActionRecord,
    ActionStateStore,
    CallRecord,
    CallStatus,
    RecordId,
)

_log = logging.getLogger(__name__)
T = TypeVar("T")
_MISSING = object()


class ReplayedCallError(FlinkAgentsExtError):
    """Re-raised on replay for a recorded exception whose class cannot be rebuilt.

    Attributes:
        error_type: the qualified name of the original exception class.
    """

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type


def durable_name(name: str) -> Callable[[T], T]:
    """Give a function a stable identity for the durable-call journal.

    By default a function is identified by ``module.qualname``; set a name when that may
    change (a moved function) or is ambiguous (lambdas)::

        @durable_name("payments.charge.v1")
        def charge(order): ...
    """

    def mark(fn: T) -> T:
        fn.__durable_name__ = name  # type: ignore[attr-defined]
        return fn

    return mark


def function_identity(fn: Callable[..., Any]) -> str:
    """The identity a durable call is journaled under."""
    explicit = getattr(fn, "__durable_name__", None)
    if explicit:
        return str(explicit)
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if qualname is None:
        qualname = type(fn).__qualname__
    return f"{module}.{qualname}"


def _exception_type_name(exc: BaseException) -> str:
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


def exception_message(exc: BaseException) -> str:
    """The message an exception was raised with (``KeyError('x')`` gives ``x``, not ``'x'``)."""
    if len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc)


def rebuild_exception(error_type: str, message: str) -> Exception:
    """Rebuild a recorded exception: same class (if importable) and message."""
    module_name, _, qualname = error_type.rpartition(".")
    candidates = [(module_name, qualname)]
    # Nested classes: module a.b, qualname Outer.Inner is recorded as a.b.Outer.Inner.
    parts = error_type.split(".")
    candidates += [(".".join(parts[:i]), ".".join(parts[i:])) for i in range(1, len(parts) - 1)]
    for mod, qual in candidates:
        try:
            obj: Any = importlib.import_module(mod or "builtins")
            for attr in qual.split("."):
                obj = getattr(obj, attr)
        except (ImportError, AttributeError, ValueError):
            continue
        if isinstance(obj, type) and issubclass(obj, Exception):
            try:
                return obj(message)
            except Exception:
                break
    return ReplayedCallError(error_type, message)


class Memory:
    """A key's memory as one action sees it: the memory at the action's start plus the
    action's own updates. Updates are applied to the key's memory when the action
    completes, and recorded with it so a replay re-applies them. Values must be
    serialisable by the configured serializer (JSON by default)."""

    def __init__(self, base: dict[str, Any] | Callable[[], dict[str, Any]]) -> None:
        # The key's memory is read (from Flink state) only when the action first uses it.
        self._load = base if callable(base) else (lambda: base)
        self._set: dict[str, Any] = {}
        self._unset: set[str] = set()

    @property
    def _base(self) -> dict[str, Any]:
        return self._load()

    def get(self, name: str, default: Any = None) -> Any:
        """Return the value of ``name``, or ``default``."""
        if name in self._set:
            return self._set[name]
        if name in self._unset:
            return default
        return self._base.get(name, default)

    def __getitem__(self, name: str) -> Any:
        value = self.get(name, _MISSING)
        if value is _MISSING:
            raise KeyError(name)
        return value

    def __setitem__(self, name: str, value: Any) -> None:
        self.set(name, value)

    def __delitem__(self, name: str) -> None:
        self.delete(name)

    def __contains__(self, name: object) -> bool:
        return self.get(str(name), _MISSING) is not _MISSING

    def __iter__(self) -> Iterator[str]:
        names = (set(self._base) | set(self._set)) - self._unset
        return iter(sorted(names))

    def set(self, name: str, value: Any) -> None:
        """Set ``name`` to ``value``."""
        if not isinstance(name, str):
            raise TypeError(f"memory names are strings, got {type(name).__name__}")
        self._set[name] = value
        self._unset.discard(name)

    def delete(self, name: str) -> None:
        """Remove ``name`` (no error if absent)."""
        self._set.pop(name, None)
        self._unset.add(name)

    def updates(self) -> dict[str, Any]:
        """The updates made through this view: ``{"set": {...}, "unset": [...]}``."""
        return {"set": dict(self._set), "unset": sorted(self._unset)}


def apply_memory_updates(memory: dict[str, Any], updates: dict[str, Any]) -> bool:
    """Apply recorded ``updates`` to ``memory`` in place; return whether anything changed."""
    changed = False
    for name in updates.get("unset", ()):
        if name in memory:
            del memory[name]
            changed = True
    for name, value in updates.get("set", {}).items():
        if memory.get(name, _MISSING) != value:
            memory[name] = value
            changed = True
    return changed


class CallStats:
    """Counts of durable calls, shared by the actions of a run."""

    def __init__(self) -> None:
        self.executed = 0
        self.replayed = 0


class ActionContext:
    """Passed to every action: ``fn(event_payload, ctx)``.

    Attributes:
        key: the Flink key of the run.
        seq: the run's sequence number for that key (0 for the key's first input).
        event_type: the type of the event that triggered the action.
        action: the action's name.
        memory: the key's :class:`Memory`.
    """

    def __init__(self, key: Any, record_id: RecordId, event_type: str, memory: Memory,
                 store: ActionStateStore, serializer: Serializer,
                 journal: list[CallRecord], stats: CallStats,
                 started: Optional[ActionRecord] = None) -> None:
        self.key = key
        self.seq = record_id.seq
        self.event_type = event_type
        self.action = record_id.action
        self.memory = memory
        self._id = record_id
        self._store = store
        self._journal = journal
        self._position = 0
        self._stats = stats
        self._io = _CallIO(record_id, store, serializer, journal, stats, self._describe,
                           [started])
        self.outputs: list[Any] = []
        self.events: list[tuple[str, Any]] = []

    def emit(self, record: Any) -> None:
        """Emit ``record`` downstream (recorded; re-emitted as is on replay)."""
        self.outputs.append(record)

    def send(self, event_type: str, payload: Any = None) -> None:
        """Send an event to the actions that react to ``event_type``, later in this run."""
        if not isinstance(event_type, str) or not event_type:
            raise ValueError("event_type must be a non-empty string")
        self.events.append((event_type, payload))

    def durable_execute(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn(*args, **kwargs)`` at most once per (key, run, action, position).

        The result (or the exception, re-raised with the same type and message) is
        journaled; a replay of this action returns it without calling ``fn``. The journal is
        matched by position, function identity (:func:`function_identity`) and a digest of
        the arguments; a mismatch means the action is not deterministic: the journal is cut
        from that position and the call runs. Arguments must be encodable values (see
        :mod:`flink_agents_ext.keys`), the result serialisable.
        """
        return self._call(fn, None, args, kwargs)

    def durable_execute_reconcilable(self, fn: Callable[..., T],
                                     reconciler: Callable[..., T],
                                     *args: Any, **kwargs: Any) -> T:
        """Like :meth:`durable_execute`, for calls whose outcome can be looked up.

        A PENDING entry is journaled before ``fn`` runs. If the task dies between the call
        and its record, the replay finds the PENDING entry and calls
        ``reconciler(*args, **kwargs)`` instead of ``fn``: it must return what ``fn``
        returned (e.g. look the payment up by an idempotency key) or raise.
        """
        return self._call(fn, reconciler, args, kwargs)

    async def durable_execute_async(self, fn: Callable[..., Awaitable[T]], *args: Any,
                                    **kwargs: Any) -> T:
        """:meth:`durable_execute` for a coroutine function, inside an ``async def``
        action: ``result = await ctx.durable_execute_async(client.complete, prompt)``."""
        return await self._call_async(fn, None, args, kwargs)

    async def durable_execute_reconcilable_async(
            self, fn: Callable[..., Awaitable[T]], reconciler: Callable[..., Awaitable[T]],
            *args: Any, **kwargs: Any) -> T:
        """:meth:`durable_execute_reconcilable` for coroutine functions."""
        return await self._call_async(fn, reconciler, args, kwargs)

    def _call(self, fn: Callable[..., T], reconciler: Optional[Callable[..., T]],
              args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        step = self._begin(fn, reconciler, args, kwargs)
        if step.hit:
            return step.replayed()
        with step.calling():
            result = step.fn(*args, **kwargs)
        return step.returned(result)

    async def _call_async(self, fn: Callable[..., Awaitable[T]],
                          reconciler: Optional[Callable[..., Awaitable[T]]],
                          args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        step = self._begin(fn, reconciler, args, kwargs)
        if step.hit:
            return step.replayed()
        with step.calling():
            result = await step.fn(*args, **kwargs)
        return step.returned(result)

    def _begin(self, fn: Callable[..., Any], reconciler: Optional[Callable[..., Any]],
               args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Step:
        """Match the next journal position: a hit to replay, or a call to (re)run."""
        name = function_identity(fn)
        try:
            arg_digest = digest_call(args, kwargs)
        except KeyEncodingError as exc:
            raise SerializationError(
                f"arguments of durable call {name} cannot be digested: {exc}") from exc
        position = self._position
        self._position += 1
        step = _Step(self._io, name, arg_digest, position, fn, pending=reconciler is not None)
        if position < len(self._journal):
            entry = self._journal[position]
            if entry.function == name and entry.digest == arg_digest:
                if entry.status is not CallStatus.PENDING:
                    self._stats.replayed += 1
                    step.hit, step.entry = True, entry
                    return step
                if reconciler is not None:
                    _log.info("reconciling pending durable call %s at position %d of %s",
                              name, position, self._describe())
                    step.fn, step.pending = reconciler, False
                    return step
            _log.warning(
                "non-deterministic action %s: durable call %d is %s(%s) but the journal "
                "has %s(%s); cutting the journal there and running the call",
                self._describe(), position, name, arg_digest[:8], entry.function,
                entry.digest[:8])
            self._store.truncate_calls(self._id, position)
            del self._journal[position:]
        return step

    def _describe(self) -> str:
        return f"{self._id.action}#{self._id.occurrence} (key {self._id.key}, run {self._id.seq})"


class _CallIO(NamedTuple):
    """What the durable calls of one action execution read and write."""

    record_id: RecordId
    store: ActionStateStore
    serializer: Serializer
    journal: list[CallRecord]
    stats: CallStats
    describe: Callable[[], str]
    #: The action's *started* record (not completed; its triggering event), written with
    #: the first journal entry so that a replay can check the event of a journal; ``None``
    #: once written or when the action has a record already.
    started: list[Optional[ActionRecord]]

    def put(self, call: CallRecord) -> None:
        """Journal ``call`` (with the started record, the first time)."""
        started = self.started[0]
        if started is None:
            self.store.put_call(call)
        else:
            self.store.put_many((started,), (call,))
            self.started[0] = None


class _Step:
    """One durable call: a journal hit to replay, or a call to run and record."""

    def __init__(self, io: _CallIO, name: str, arg_digest: str, position: int,
                 fn: Callable[..., Any], pending: bool) -> None:
        self.io, self.name, self.digest, self.position = io, name, arg_digest, position
        self.fn, self.pending = fn, pending
        self.hit = False
        self.entry: Optional[CallRecord] = None

    def replayed(self) -> Any:
        """The recorded result, or the recorded exception raised again."""
        entry = self.entry
        assert entry is not None
        if entry.status is CallStatus.ERROR:
            raise rebuild_exception(entry.error_type or "Exception", entry.error_message or "")
        return self.io.serializer.loads(entry.result or b"null")

    @contextlib.contextmanager
    def calling(self) -> Iterator[None]:
        """Around the call: journal PENDING first for a reconcilable call and count the
        execution; journal the exception the call raises."""
        if self.pending:
            self.io.put(CallRecord(self.io.record_id, self.position, self.name, self.digest,
                                   CallStatus.PENDING))
        self.io.stats.executed += 1
        try:
            yield
        except Exception as exc:
            self._record(CallRecord(self.io.record_id, self.position, self.name, self.digest,
                                    CallStatus.ERROR, error_type=_exception_type_name(exc),
                                    error_message=exception_message(exc)))
            raise

    def returned(self, result: T) -> T:
        """Journal the call's result; return it."""
        try:
            data = self.io.serializer.dumps(result)
        except SerializationError as exc:
            raise SerializationError(
                f"durable call {self.name} in {self.io.describe()} ran but its result "
                f"cannot be recorded: {exc}") from exc
        self._record(CallRecord(self.io.record_id, self.position, self.name, self.digest,
                                CallStatus.OK, result=data))
        return result

    def _record(self, record: CallRecord) -> None:
        self.io.put(record)
        self.io.journal[self.position:] = [record]
