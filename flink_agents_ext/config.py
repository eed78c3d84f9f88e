"""Job configuration from YAML files, checked key by key.

A configuration file has these sections (see ``conf/local.yaml`` and ``conf/cluster.yaml``)::

    job:        name, namespace, parallelism, execution_mode (thread|process),
                on_foreign_lineage (reclaim|refuse: what a fresh start does with the records
                an earlier job left in the namespace, see :mod:`flink_agents_ext.lineage`)
    checkpoints: interval_ms, retention, dir (optional), restart_attempts
    store:      backend and the backend's settings, and commit (each|group) with
                commit_interval_ms and commit_max_records for group commit: exactly what
                :func:`flink_agents_ext.store.open_store` accepts (the backends declare
                their settings in :mod:`flink_agents_ext.store.settings`)
    input:      path (file or directory of JSON lines, optional), generate (count), rate
    output:     dir
    kafka:      (optional) bootstrap_servers, input_topic, results_topic, dead_letters_topic,
                partitions, transaction_timeout_ms: tickets from a topic, results and dead
                letters to topics (``input`` then says what fills the input topic)

Every problem is reported as :class:`ConfigError` naming the file, the key and what was
expected. Secrets are never read from the file: the PostgreSQL password comes from the
environment variable named by ``store.password_env``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, cast

import yaml

from flink_agents_ext.environment import EXECUTION_MODES
from flink_agents_ext.errors import ConfigError
from flink_agents_ext.lineage import ON_FOREIGN_LINEAGE
from flink_agents_ext.pruning import check_retention
from flink_agents_ext.store.base import StoreConfigError
from flink_agents_ext.store.settings import BACKENDS, COMMIT_SETTINGS, validate


class _Section:
    """Reads typed keys of one section and reports errors with their dotted path."""

    def __init__(self, source: str, path: str, data: Any) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: '{path}' must be a mapping, "
                              f"got {type(data).__name__}")
        self.source, self.path, self.data = source, path, data

    def _dotted(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def where(self, key: str) -> str:
        """``file: 'section.key'``, how an error names ``key``."""
        return f"{self.source}: '{self._dotted(key)}'"

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...,
            choices: Optional[tuple[Any, ...]] = None, minimum: Optional[int] = None) -> Any:
        if key not in self.data or self.data[key] is None:
            if default is ...:
                raise ConfigError(f"{self.where(key)} is missing (expected "
                                  f"{_kind_name(kind)})")
            return default
        value: Any = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise ConfigError(f"{self.where(key)} must be {_kind_name(kind)}, "
                              f"got {type(value).__name__} {value!r}")
        if choices is not None and value not in choices:
            raise ConfigError(f"{self.where(key)} must be one of "
                              f"{', '.join(map(str, choices))}; got {value!r}")
        if minimum is not None and cast(float, value) < minimum:
            raise ConfigError(f"{self.where(key)} must be >= {minimum}, got {value!r}")
        return value

    def section(self, key: str, required: bool = True) -> _Section:
        if key not in self.data:
            if required:
                raise ConfigError(f"{self.where(key)} is missing (expected a mapping)")
            return _Section(self.source, self._dotted(key), {})
        return _Section(self.source, self._dotted(key), self.data[key])

    def check_unknown(self, known: set[str]) -> None:
        unknown = sorted(set(self.data) - known)
        if unknown:
            raise ConfigError(f"{self.source}: unknown key(s) in '{self.path or '<top level>'}': "
                              f"{', '.join(unknown)} (known: {', '.join(sorted(known))})")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "an integer", str: "a string", float: "a number", bool: "true or false"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


@dataclass(frozen=True)
class KafkaSettings:
    """The ``kafka`` section: where the job reads tickets and writes its outputs.

    Attributes:
        bootstrap_servers: ``host:port[,host:port...]`` of the brokers.
        input_topic: the tickets (JSON lines as values, the customer as key).
        results_topic: one JSON result per ticket, written exactly once (transactions).
        dead_letters_topic: bad input and failed actions, with the reason.
        partitions: partitions of the topics the job creates.
        transaction_timeout_ms: the sink's ``transaction.timeout.ms``; must stay below the
            broker's ``transaction.max.timeout.ms`` (15 minutes by default).
    """

    bootstrap_servers: str
    input_topic: str
    results_topic: str
    dead_letters_topic: str
    partitions: int = 2
    transaction_timeout_ms: int = 60_000


@dataclass(frozen=True)
class JobConfig:
    """A validated job configuration."""

    name: str
    namespace: str
    parallelism: int
    execution_mode: str
    checkpoint_interval_ms: int
    retention: int
    checkpoint_dir: Optional[str]
    restart_attempts: int
    store: dict[str, Any] = field(repr=False)
    input_path: Optional[str]
    generate: int
    rate: float
    output_dir: str
    source: str = ""
    kafka: Optional[KafkaSettings] = None
    on_foreign_lineage: str = "reclaim"

    def store_settings(self) -> dict[str, Any]:
        """The store settings for :func:`flink_agents_ext.store.open_store`."""
        return dict(self.store)


def load_config(path: str | os.PathLike[str],
                overrides: Optional[Mapping[str, Any]] = None) -> JobConfig:
    """Load and check a YAML job configuration.

    Args:
        path: the YAML file.
        overrides: dotted keys to replace after loading, e.g. ``{"job.parallelism": 2}``.

    Raises:
        ConfigError: the file is missing, not YAML, or a key is missing or wrong.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the configuration: {exc.strerror}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return _parse(source, raw)


def _parse(source: str, raw: dict[str, Any]) -> JobConfig:
    root = _Section(source, "", raw)
    root.check_unknown({"job", "checkpoints", "store", "input", "output", "kafka"})
    job = root.section("job")
    job.check_unknown({"name", "namespace", "parallelism", "execution_mode",
                       "on_foreign_lineage"})
    cps = root.section("checkpoints")
    cps.check_unknown({"interval_ms", "retention", "dir", "restart_attempts"})
    store = root.section("store")
    inp = root.section("input", required=False)
    inp.check_unknown({"path", "generate", "rate"})
    out = root.section("output")
    out.check_unknown({"dir"})

    store_settings = _store_settings(store)
    generate = inp.get("generate", int, default=0, minimum=0)
    input_path = inp.get("path", str, default=None)
    if not input_path and not generate:
        raise ConfigError(f"{source}: 'input' needs a 'path' or 'generate' > 0")
    return JobConfig(
        name=job.get("name", str),
        namespace=job.get("namespace", str),
        parallelism=job.get("parallelism", int, default=1, minimum=1),
        execution_mode=job.get("execution_mode", str, default="thread",
                               choices=EXECUTION_MODES),
        checkpoint_interval_ms=cps.get("interval_ms", int, minimum=10),
        retention=_retention(cps),
        checkpoint_dir=cps.get("dir", str, default=None),
        restart_attempts=cps.get("restart_attempts", int, default=3, minimum=0),
        store=store_settings,
        input_path=input_path,
        generate=generate,
        rate=float(inp.get("rate", (int, float), default=0, minimum=0)),
        output_dir=out.get("dir", str),
        source=source,
        kafka=_parse_kafka(root.section("kafka")) if "kafka" in raw else None,
        on_foreign_lineage=job.get("on_foreign_lineage", str, default="reclaim",
                                   choices=ON_FOREIGN_LINEAGE),
    )


def _store_settings(store: _Section) -> dict[str, Any]:
    """The ``store`` section: a backend and exactly the settings it declares
    (:mod:`flink_agents_ext.store.settings`), checked as :func:`open_store` checks them."""
    backend = store.get("backend", str, choices=tuple(BACKENDS))
    declared = (*BACKENDS[backend].settings, *COMMIT_SETTINGS)
    store.check_unknown({"backend", *(setting.name for setting in declared)})
    try:
        validate(store.data)
    except StoreConfigError as exc:
        where = store.where(exc.setting) if exc.setting else f"{store.source}: 'store'"
        raise ConfigError(f"{where} {exc.problem}") from exc
    return {key: value for key, value in store.data.items() if value is not None}


def _retention(checkpoints: _Section) -> int:
    where = checkpoints.where("retention")
    try:
        return check_retention(checkpoints.get("retention", int, default=1), where)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _parse_kafka(section: _Section) -> KafkaSettings:
    fields = ("bootstrap_servers", "input_topic", "results_topic", "dead_letters_topic")
    section.check_unknown({*fields, "partitions", "transaction_timeout_ms"})
    topics = {name: section.get(name, str) for name in fields}
    if not all(topics.values()):
        empty = next(name for name, value in topics.items() if not value)
        raise ConfigError(f"{section.where(empty)} must be a non-empty string")
    return KafkaSettings(
        **topics,
        partitions=section.get("partitions", int, default=2, minimum=1),
        transaction_timeout_ms=section.get("transaction_timeout_ms", int, default=60_000,
                                           minimum=1000),
    )
