"""The store's settings, declared once: the backends, their settings, and the checks.

:data:`BACKENDS` names each backend's class and declares its settings (name, type, whether
required, the accepted values); :data:`COMMIT_SETTINGS` are the settings every backend
takes. Everything that reads a store configuration derives from these declarations: the
backends' constructors check their arguments with :func:`check_settings`,
:func:`flink_agents_ext.store.open_store` and :func:`check_store_config` check a
configuration mapping, and the ``store`` section of a YAML job configuration
(:mod:`flink_agents_ext.config`) accepts exactly these settings. Defaults are the
constructors' own (a setting that is absent or ``None`` takes it).

This module imports no backend (PostgreSQL needs the optional psycopg), so a configuration
can be checked where the backend is not installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from flink_agents_ext.store.base import StoreConfigError

__all__ = ["BACKENDS", "COMMIT_MODES", "COMMIT_SETTINGS", "RECOVERY_MODES", "SYNCHRONOUS_MODES",
           "Backend", "Setting", "check_settings", "check_store_config"]

#: Accepted values of the SQLite setting ``synchronous`` (case-insensitive).
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
#: Accepted values of the store setting ``commit``: ``"each"`` (every put is committed
#: before it returns; the default) and ``"group"`` (:mod:`~flink_agents_ext.store.group_commit`).
COMMIT_MODES = ("each", "group")

#: Accepted values of the Kafka setting ``recovery``: rebuild a namespace's index from its
#: recovery marker, or from the whole topic (:mod:`~flink_agents_ext.store.kafka`).
RECOVERY_MODES = ("marker", "full_scan")

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


@dataclass(frozen=True)
class Setting:
    """One setting of a backend: its configuration key, type and accepted values.

    The value is passed to the backend's constructor as the keyword argument ``name``.
    """

    name: str
    type: type
    required: bool = False
    #: For strings: whether ``""`` is accepted (meaning "not set").
    empty_ok: bool = False
    #: For strings: the accepted values (compared case-insensitively if ``ignore_case``).
    choices: tuple[str, ...] = ()
    ignore_case: bool = False
    #: For numbers: the accepted range (``minimum`` excluded if ``exclusive_minimum``).
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    exclusive_minimum: bool = False

    def describe(self) -> str:
        """The expected value, for messages (e.g. ``"an integer >= 0"``)."""
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        text = _TYPE_NAMES.get(self.type, self.type.__name__)
        if self.type is str and not self.empty_ok:
            return "a non-empty string"
        if self.minimum is not None and self.maximum is not None:
            return f"{text} in {self.minimum:g}..{self.maximum:g}"
        if self.minimum is not None:
            return f"{text} {'>' if self.exclusive_minimum else '>='} {self.minimum:g}"
        return text

    def problem(self, value: Any) -> Optional[str]:
        """What is wrong with ``value`` (``"must be ..., got ..."``), or ``None``."""
        if self.type is float:  # an integer is a number too, but True is no number
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif self.type is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, self.type)
        if ok and self.type is str:
            ok = bool(value) or self.empty_ok
            if ok and self.choices:
                fold = str.upper if self.ignore_case else str
                ok = fold(value) in {fold(c) for c in self.choices}
        elif ok and self.minimum is not None:
            ok = value > self.minimum if self.exclusive_minimum else value >= self.minimum
            ok = ok and (self.maximum is None or value <= self.maximum)
        if ok:
            return None
        return f"must be {self.describe()}, got {type(value).__name__} {value!r}"


@dataclass(frozen=True)
class Backend:
    """A store backend: the class ``module:class_name`` (imported when first used), its
    settings and an optional cheap check of the environment (``check(settings)`` returns
    ``(setting, problem)`` or ``None``; run by :func:`check_store_config`)."""

    module: str
    class_name: str
    settings: tuple[Setting, ...]
    check: Optional[Callable[[Mapping[str, Any]], Optional[tuple[str, str]]]] = None


def _sqlite_path_problem(settings: Mapping[str, Any]) -> Optional[tuple[str, str]]:
    """Whether the SQLite file can be created or written on this machine."""
    path = settings["path"]
    if path == ":memory:":
        return None
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return "path", f"is a directory: {path}"
    if os.path.exists(path):
        if not os.access(path, os.R_OK | os.W_OK):
            return "path", f"cannot be written: {path}"
        return None
    # The store creates missing parent directories: the nearest existing one must allow it.
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return "path", f"cannot be created: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return "path", f"cannot be created: directory {parent} is not writable"
    return None


#: Backends by the name used as ``config["backend"]``.
BACKENDS: dict[str, Backend] = {
    "sqlite": Backend("flink_agents_ext.store.sqlite", "SQLiteStore", (
        Setting("path", str, required=True),
        Setting("synchronous", str, choices=SYNCHRONOUS_MODES, ignore_case=True),
        Setting("busy_timeout_ms", int, minimum=0),
    ), check=_sqlite_path_problem),
    # The password is never a setting: ``password_env`` names the environment variable
    # holding it (read where the store is opened).
    "postgres": Backend("flink_agents_ext.store.postgres", "PostgresStore", (
        Setting("host", str, required=True),
        Setting("port", int, required=True, minimum=1, maximum=65535),
        Setting("dbname", str, required=True),
        Setting("user", str, required=True),
        Setting("password_env", str, empty_ok=True),
        Setting("connect_timeout_s", float, minimum=0, exclusive_minimum=True),
        Setting("retries", int, minimum=0),
        Setting("backoff_s", float, minimum=0),
        Setting("schema", str),
    )),
    # Compacted topics with tombstones and an in-memory index; replication_factor -1 takes
    # the broker's default.
    "kafka": Backend("flink_agents_ext.store.kafka", "KafkaStore", (
        Setting("bootstrap_servers", str, required=True),
        Setting("topic", str),
        Setting("partitions", int, minimum=1),
        Setting("replication_factor", int, minimum=-1),
        Setting("recovery", str, choices=RECOVERY_MODES),
        Setting("timeout_s", float, minimum=0, exclusive_minimum=True),
        Setting("create_topics", bool),
    )),
}

#: Settings every backend takes: ``commit`` (:data:`COMMIT_MODES`; default ``"each"``) and
#: for group commit ``commit_interval_ms`` (default 50) and ``commit_max_records`` (default
#: 10,000), see :mod:`flink_agents_ext.store.group_commit`.
COMMIT_SETTINGS: tuple[Setting, ...] = (
    Setting("commit", str, choices=COMMIT_MODES),
    Setting("commit_interval_ms", int, minimum=1),
    Setting("commit_max_records", int, minimum=1),
)


def _fail(backend: Optional[str], setting: str, problem: str) -> StoreConfigError:
    where = f" (backend {backend!r})" if backend else ""
    return StoreConfigError(f"store setting {setting!r} {problem}{where}", setting=setting,
                            problem=problem)


def check_settings(backend: Optional[str], **values: Any) -> None:
    """Check argument values against the declarations of ``backend`` (``None``: the commit
    settings only); ``None`` is a wrong value here. Used by the backends' constructors.

    Raises:
        StoreConfigError: naming the first bad setting.
    """
    declared = {s.name: s for s in (*(BACKENDS[backend].settings if backend else ()),
                                    *COMMIT_SETTINGS)}
    for name, value in values.items():
        problem = declared[name].problem(value)
        if problem:
            raise _fail(backend, name, problem)


def validate(config: Mapping[str, Any]
             ) -> tuple[str, dict[str, Any], Optional[dict[str, Any]]]:
    """Check ``config`` (see :func:`check_store_config`, without the environment check);
    return the backend name, the constructor's keyword arguments and the group-commit
    arguments (``None`` for ``commit: each``); settings set to ``None`` are left out."""
    if not isinstance(config, Mapping):
        raise StoreConfigError(
            f"store configuration must be a mapping, got {type(config).__name__}")
    name = config.get("backend")
    if name is None:
        raise StoreConfigError(
            f"store setting 'backend' is missing; expected one of {list(BACKENDS)}",
            setting="backend", problem=f"is missing (expected one of {', '.join(BACKENDS)})")
    if not isinstance(name, str) or name not in BACKENDS:
        raise StoreConfigError(
            f"store setting 'backend' must be one of {list(BACKENDS)}, got {name!r}",
            setting="backend", problem=f"must be one of {', '.join(BACKENDS)}; got {name!r}")
    declared = {s.name: s for s in (*BACKENDS[name].settings, *COMMIT_SETTINGS)}
    unknown = sorted(str(k) for k in config if k != "backend" and k not in declared)
    if unknown:
        raise StoreConfigError(
            f"unknown store setting(s) {', '.join(map(repr, unknown))} for backend {name!r}; "
            f"expected {', '.join(map(repr, declared))}")
    given: dict[str, Any] = {}
    for setting in declared.values():
        value = config.get(setting.name)
        if value is None:
            if setting.required:
                raise _fail(name, setting.name, f"is missing (expected {setting.describe()})")
            continue
        problem = setting.problem(value)
        if problem:
            raise _fail(name, setting.name, problem)
        given[setting.name] = value
    commit = {key: given.pop(key) for key in [s.name for s in COMMIT_SETTINGS] if key in given}
    if commit.pop("commit", "each") == "each":
        if commit:
            raise _fail(name, next(iter(commit)), "is set but commit is each "
                        "(commit_interval_ms and commit_max_records need commit: group)")
        return name, given, None
    return name, given, {key.replace("commit_", ""): value for key, value in commit.items()}


def check_store_config(config: Mapping[str, Any], *, environment: bool = True) -> None:
    """Check a store configuration without opening the store.

    Checks what :func:`~flink_agents_ext.store.open_store` checks (a known backend, no
    unknown setting, the required settings, every value's type and range), and with
    ``environment`` what the backend can check cheaply on this machine: for SQLite, that
    the file (or the directories leading to it) can be created and written here. What
    only the task can find out (the PostgreSQL server, its password variable) is checked
    when the store opens. :class:`~flink_agents_ext.actions.DurableAgentFunction` runs this
    when it is built, so a bad configuration fails on the client, before the job starts.

    Raises:
        StoreConfigError: the message names the bad setting (also in ``exc.setting``).
    """
    name, given, _ = validate(config)
    check = BACKENDS[name].check
    problem = check(given) if environment and check else None
    if problem:
        raise _fail(name, *problem)
