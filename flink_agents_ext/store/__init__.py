"""The action state store: interface, backends and a configuration-driven factory.

Public names: the interface (:class:`ActionStateStore`, :class:`ActionRecord`,
:class:`CallRecord`, :class:`CallStatus`, :class:`RecordId`), the errors
(:class:`StoreError`, :class:`StoreConfigError`), the backends (:class:`SQLiteStore`;
``PostgresStore`` in :mod:`flink_agents_ext.store.postgres`, which needs psycopg 3) and
:func:`open_store`, which opens a backend from a configuration mapping such as
``{"backend": "sqlite", "path": "/var/lib/job/actions.db"}`` or ``{"backend": "postgres",
"host": "db", "port": 5432, "dbname": "flink", "user": "flink", "password_env": "PGPASS"}``.
Every backend also takes the settings of :data:`COMMIT_SETTINGS` (``"commit": "group"``
wraps it in a :class:`GroupCommitStore`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Mapping

from flink_agents_ext.store.base import (
    ActionRecord,
    ActionStateStore,
    CallRecord,
    CallStatus,
    RecordId,
    StoreConfigError,
    StoreError,
)
from flink_agents_ext.store.group_commit import COMMIT_MODES, GroupCommitStore
from flink_agents_ext.store.sqlite import SQLiteStore

__all__ = [
    "BACKENDS",
    "COMMIT_MODES",
    "COMMIT_SETTINGS",
    "ActionRecord",
    "ActionStateStore",
    "CallRecord",
    "CallStatus",
    "GroupCommitStore",
    "RecordId",
    "SQLiteStore",
    "StoreConfigError",
    "StoreError",
    "open_store",
]


@dataclass(frozen=True)
class Setting:
    """One setting of a backend: its configuration key, type and whether it is required.

    The value is passed to the backend's constructor as the keyword argument ``name``.
    """

    name: str
    type: type
    required: bool = False
    #: For strings: whether ``""`` is accepted (meaning "not set").
    empty_ok: bool = False

    def describe(self) -> str:
        """The expected value, for error messages (e.g. ``"a string"``)."""
        return {str: "a string", int: "an integer", float: "a number",
                bool: "true or false"}.get(self.type, self.type.__name__)


@dataclass(frozen=True)
class Backend:
    """A store backend: the class ``module:class_name`` (imported when first used) and its
    settings."""

    module: str
    class_name: str
    settings: tuple[Setting, ...]


#: Backends by the name used as ``config["backend"]``.
BACKENDS: dict[str, Backend] = {
    "sqlite": Backend("flink_agents_ext.store.sqlite", "SQLiteStore", (
        Setting("path", str, required=True),
        Setting("synchronous", str),
        Setting("busy_timeout_ms", int),
    )),
    # The password is never a setting: ``password_env`` names the environment variable
    # holding it.
    "postgres": Backend("flink_agents_ext.store.postgres", "PostgresStore", (
        Setting("host", str, required=True),
        Setting("port", int, required=True),
        Setting("dbname", str, required=True),
        Setting("user", str, required=True),
        Setting("password_env", str, empty_ok=True),
        Setting("connect_timeout_s", float),
        Setting("retries", int),
        Setting("backoff_s", float),
        Setting("schema", str),
    )),
}


#: Settings every backend takes: ``commit`` (``"each"``, the default: every put is
#: committed before it returns; ``"group"``: puts are committed in batches, see
#: :mod:`flink_agents_ext.store.group_commit`), and for group commit ``commit_interval_ms``
#: (default 50) and ``commit_max_records`` (default 10,000).
COMMIT_SETTINGS: tuple[Setting, ...] = (
    Setting("commit", str),
    Setting("commit_interval_ms", int),
    Setting("commit_max_records", int),
)


def _check_value(backend: str, setting: Setting, value: Any) -> None:
    if setting.type is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif setting.type is int:
        ok = isinstance(value, int) and not isinstance(value, bool)  # True is no count
    else:
        ok = isinstance(value, setting.type)
    if not ok:
        raise StoreConfigError(
            f"store setting {setting.name!r} (backend {backend!r}) must be "
            f"{setting.describe()}, got {type(value).__name__} {value!r}")
    if setting.type is str and not value and not setting.empty_ok:
        raise StoreConfigError(
            f"store setting {setting.name!r} (backend {backend!r}) must be a non-empty string")


def open_store(config: Mapping[str, Any]) -> ActionStateStore:
    """Open the store that ``config`` describes.

    ``config["backend"]`` names the backend (see :data:`BACKENDS`); the other keys are that
    backend's settings, e.g. ``{"backend": "sqlite", "path": "actions.db",
    "synchronous": "FULL"}``. A setting set to ``None`` takes its default.

    Raises:
        StoreConfigError: ``config`` is not a mapping, the backend is missing or unknown, a
            required setting is missing, a setting is unknown or has the wrong type; the
            message names the key.
        StoreError: the backend could not open the store.
    """
    if not isinstance(config, Mapping):
        raise StoreConfigError(
            f"store configuration must be a mapping, got {type(config).__name__}")
    name = config.get("backend")
    if name is None:
        raise StoreConfigError(
            f"store setting 'backend' is missing; expected one of {list(BACKENDS)}")
    if not isinstance(name, str) or name not in BACKENDS:
        raise StoreConfigError(
            f"store setting 'backend' must be one of {list(BACKENDS)}, got {name!r}")
    backend = BACKENDS[name]
    known = {s.name: s for s in (*backend.settings, *COMMIT_SETTINGS)}
    unknown = sorted(str(k) for k in config if k != "backend" and k not in known)
    if unknown:
        raise StoreConfigError(
            f"unknown store setting(s) {', '.join(map(repr, unknown))} for backend {name!r}; "
            f"expected {', '.join(repr(s) for s in known)}")
    kwargs: dict[str, Any] = {}
    for setting in backend.settings:
        value = config.get(setting.name)
        if value is None:
            if setting.required:
                raise StoreConfigError(
                    f"store setting {setting.name!r} is missing (backend {name!r} needs "
                    f"{setting.describe()})")
            continue
        _check_value(name, setting, value)
        kwargs[setting.name] = value
    try:
        module = importlib.import_module(backend.module)
    except ImportError as exc:
        raise StoreConfigError(
            f"store backend {name!r} is not available ({backend.module}: {exc}); "
            f"is its optional dependency installed?") from exc
    commit = _commit_settings(name, config)
    store: ActionStateStore = getattr(module, backend.class_name)(**kwargs)
    if commit is None:
        return store
    try:
        return GroupCommitStore(store, **commit)
    except BaseException:
        store.close()
        raise


def _commit_settings(backend: str, config: Mapping[str, Any]) -> dict[str, int] | None:
    """The group-commit arguments, or ``None`` for ``commit: each``."""
    for setting in COMMIT_SETTINGS:
        if config.get(setting.name) is not None:
            _check_value(backend, setting, config[setting.name])
    mode = config.get("commit") or "each"
    if mode not in COMMIT_MODES:
        raise StoreConfigError(
            f"store setting 'commit' must be one of {list(COMMIT_MODES)}, got {mode!r}")
    names = {"commit_interval_ms": "interval_ms", "commit_max_records": "max_records"}
    given = [key for key in names if config.get(key) is not None]
    if mode == "each":
        if given:
            raise StoreConfigError(
                f"store setting(s) {', '.join(map(repr, given))} need commit: group")
        return None
    return {names[key]: config[key] for key in given}
