"""Fixtures every part of the store contract shares."""

from __future__ import annotations

import uuid
from typing import Callable, Iterator

import pytest

from flink_agents_ext.store.base import ActionStateStore
from tests.store_contract.helpers import StoreFactory


class ContractBase:
    """Fixtures of the contract: ``store_factory`` comes from the backend's test class."""

    @pytest.fixture
    def opened(self, store_factory: StoreFactory) -> Iterator[Callable[[], ActionStateStore]]:
        """Like ``store_factory``, but every store it opens is closed at teardown."""
        stores: list[ActionStateStore] = []

        def open_one() -> ActionStateStore:
            store = store_factory()
            stores.append(store)
            return store

        yield open_one
        for store in stores:
            store.close()

    @pytest.fixture
    def store(self, opened: Callable[[], ActionStateStore]) -> ActionStateStore:
        """A store on the test's database."""
        return opened()

    @pytest.fixture
    def ns(self) -> str:
        """A namespace no other test uses."""
        return f"ns-{uuid.uuid4().hex[:12]}"
