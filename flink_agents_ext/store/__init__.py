"""The action state store: interface, backends and a configuration-driven factory.

Public names: the interface (:class:`ActionStateStore`, :class:`ActionRecord`,
:class:`CallRecord`, :class:`CallStatus`, :class:`RecordId`), the errors
(:class:`StoreError`, :class:`StoreConfigError`), the backends (:class:`SQLiteStore`;
``PostgresStore`` in :mod:`flink_agents_ext.store.postgres`, which needs psycopg 3) and
:func:`open_store`, which opens a backend from a configuration mapping such as
``{"backend": "sqlite", "path": "/var/lib/job/actions.db"}`` or ``{"backend": "postgres",
"host": "db", "port": 5432, "dbname": "flink", "user": "flink", "password_env": "PGPASS"}``
or ``{"backend": "kafka", "bootstrap_servers": "kafka:9092", "topic": "actions"}``
(:mod:`flink_agents_ext.store.kafka`, which needs confluent-kafka).
Every backend also takes the settings of :data:`COMMIT_SETTINGS` (``"commit": "group"``
wraps it in a :class:`GroupCommitStore`). The backends and their settings are declared in
:mod:`flink_agents_ext.store.settings`; :func:`check_store_config` checks a configuration
without opening the store.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from flink_agents_ext.store.base import (
    ActionRecord,
    ActionStateStore,
    CallRecord,
    CallStatus,
    LineageRecord,
    NamespaceReset,
    RecordId,
    StoreConfigError,
    StoreError,
)
from flink_agents_ext.store.group_commit import GroupCommitStore
from flink_agents_ext.store.settings import (
    BACKENDS,
    COMMIT_MODES,
    COMMIT_SETTINGS,
    Backend,
    Setting,
    check_store_config,
    validate,
)
from flink_agents_ext.store.sqlite import SQLiteStore

__all__ = [
    "BACKENDS",
    "COMMIT_MODES",
    "COMMIT_SETTINGS",
    "ActionRecord",
    "ActionStateStore",
    "Backend",
    "CallRecord",
    "CallStatus",
    "GroupCommitStore",
    "LineageRecord",
    "NamespaceReset",
    "RecordId",
    "SQLiteStore",
    "Setting",
    "StoreConfigError",
    "StoreError",
    "check_store_config",
    "open_store",
]


def open_store(config: Mapping[str, Any]) -> ActionStateStore:
    """Open the store that ``config`` describes.

    ``config["backend"]`` names the backend (see :data:`BACKENDS`); the other keys are that
    backend's settings, e.g. ``{"backend": "sqlite", "path": "actions.db",
    "synchronous": "FULL"}``. A setting set to ``None`` takes its default.

    Raises:
        StoreConfigError: ``config`` is not a mapping, the backend is missing or unknown, a
            required setting is missing, a setting is unknown or has a wrong type or value;
            the message names the key (see :func:`check_store_config`).
        StoreError: the backend could not open the store.
    """
    name, kwargs, commit = validate(config)
    backend = BACKENDS[name]
    try:
        module = importlib.import_module(backend.module)
    except ImportError as exc:
        raise StoreConfigError(
            f"store backend {name!r} is not available ({backend.module}: {exc}); "
            f"is its optional dependency installed?") from exc
    store: ActionStateStore = getattr(module, backend.class_name)(**kwargs)
    if commit is None:
        return store
    try:
        return GroupCommitStore(store, **commit)
    except BaseException:
        store.close()
        raise
