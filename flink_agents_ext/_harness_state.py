"""The harness's keyed state (:mod:`flink_agents_ext.testing`): keys as Flink tells them
apart, and value, list and map state over them."""

from __future__ import annotations

import pickle
from typing import Any, Iterable, Optional

from flink_agents_ext.keys import KeyEncodingError, encode_key


class _FlinkKey:
    """A key as Flink identifies it: equal only to a key of the same value and type (by
    the stable encoding of :mod:`flink_agents_ext.keys`), so ``1``, ``1.0`` and ``True``
    stay distinct in the harness's dicts and sets. ``key`` is the original object."""

    __slots__ = ("identity", "key")

    def __init__(self, key: Any) -> None:
        self.key = key
        try:
            self.identity: Any = encode_key(key)
        except KeyEncodingError:  # still a Flink key (PyFlink pickles it): same bytes
            try:
                self.identity = ("pickle", pickle.dumps(key))
            except Exception:
                self.identity = ("object", id(key))

    def __hash__(self) -> int:
        return hash(self.identity)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _FlinkKey) and self.identity == other.identity

    def __repr__(self) -> str:
        return repr(self.key)


def _flink_key(key: Any) -> _FlinkKey:
    return key if isinstance(key, _FlinkKey) else _FlinkKey(key)


class _KeyedStore:
    """state name -> key -> value, plus the current key; keys are :class:`_FlinkKey`."""

    def __init__(self, data: Optional[dict[str, dict[Any, Any]]] = None) -> None:
        self.data: dict[str, dict[_FlinkKey, Any]] = {
            name: {_flink_key(k): v for k, v in table.items()}
            for name, table in (data or {}).items()}
        self.current: Optional[_FlinkKey] = None

    @property
    def current_key(self) -> Any:
        return None if self.current is None else self.current.key

    def table(self, name: str) -> dict[_FlinkKey, Any]:
        return self.data.setdefault(name, {})


class _ValueState:
    def __init__(self, store: _KeyedStore, name: str) -> None:
        self._store, self._name = store, name

    def value(self) -> Any:
        current = self._store.current
        return None if current is None else self._store.table(self._name).get(current)

    def update(self, value: Any) -> None:
        assert self._store.current is not None, "keyed state used without a current key"
        self._store.table(self._name)[self._store.current] = value

    def clear(self) -> None:
        if self._store.current is not None:
            self._store.table(self._name).pop(self._store.current, None)


class _ListState(_ValueState):
    def get(self) -> list[Any]:
        return list(super().value() or [])

    def add(self, value: Any) -> None:
        self.update([*self.get(), value])

    def add_all(self, values: Iterable[Any]) -> None:
        self.update([*self.get(), *values])


class _MapState(_ValueState):
    def _map(self) -> dict[Any, Any]:
        assert self._store.current is not None, "keyed state used without a current key"
        values: dict[Any, Any] = self._store.table(self._name).setdefault(
            self._store.current, {})
        return values

    def get(self, key: Any) -> Any:
        return self._map().get(key)

    def put(self, key: Any, value: Any) -> None:
        self._map()[key] = value

    def remove(self, key: Any) -> None:
        self._map().pop(key, None)

    def contains(self, key: Any) -> bool:
        return key in self._map()

    def items(self) -> Iterable[tuple[Any, Any]]:
        return list(self._map().items())

    def keys(self) -> Iterable[Any]:
        return list(self._map().keys())

    def is_empty(self) -> bool:
        return not self._map()
