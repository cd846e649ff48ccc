"""Test support for the synchronous side of stores, and a call-counting store proxy.

:class:`SyncSideAsStore` presents a store's :class:`~bastion.stores.base.SyncStore` (``store.sync``)
through the async :class:`~bastion.stores.base.Store` protocol, and its rate-limit ``hit_sync``
as ``hit``, so the whole :class:`~bastion.testing.store_contract.StoreContract` suite runs
against the sync side unchanged::

    @pytest_asyncio.fixture
    async def store(clock):
        real = MemoryStore(clock=clock)
        yield SyncSideAsStore(real)
        await real.aclose()

:class:`CountingStore` wraps a *real* store and counts the operations that reach it, on both
sides, so tests can state exactly how many round trips a request costs.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from bastion.errors import ConfigurationError
from bastion.stores.base import (
    SupportsGetMany,
    SupportsGetManySync,
    SupportsRateLimit,
    SupportsSync,
    require_rate_limit,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from bastion.core.ratelimit import Decision, Rate, Strategy
    from bastion.stores.base import Store, SyncStore

__all__ = ["CountingStore", "CountingSyncStore", "SyncSideAsStore"]


def _sync_of(store: Store) -> SyncStore:
    if not isinstance(store, SupportsSync):
        raise ConfigurationError(f"{store!r} has no synchronous side (store.sync)")
    return store.sync


class SyncSideAsStore:
    """The async protocol over ``store.sync``: every call is a blocking sync call."""

    __slots__ = ("_owner", "_sync")

    def __init__(self, store: Store) -> None:
        self._owner = store
        self._sync = _sync_of(store)

    async def get(self, key: str) -> bytes | None:
        return self._sync.get(key)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self._sync.set(key, value, ttl)

    async def delete(self, key: str) -> bool:
        return self._sync.delete(key)

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        return self._sync.compare_and_set(key, expected, value, ttl)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        sync = self._sync
        if not isinstance(sync, SupportsGetManySync):
            raise TypeError(f"{sync!r} has no get_many")
        return sync.get_many(keys)

    @property
    def nonblocking(self) -> bool:
        return self._sync.nonblocking

    async def hit(
        self, key: str, strategy: Strategy, rates: Sequence[Rate], cost: int = 1
    ) -> tuple[Decision, ...]:
        return require_rate_limit(self._owner).hit_sync(key, strategy, rates, cost)

    def hit_sync(
        self, key: str, strategy: Strategy, rates: Sequence[Rate], cost: int = 1
    ) -> tuple[Decision, ...]:
        return require_rate_limit(self._owner).hit_sync(key, strategy, rates, cost)

    async def aclose(self) -> None:
        self._sync.close()
        await self._owner.aclose()

    def __repr__(self) -> str:
        return f"SyncSideAsStore({self._owner!r})"


class CountingSyncStore:
    """The counting view of a store's sync side; shares its counter with the async side."""

    __slots__ = ("_calls", "_inner")

    def __init__(self, inner: SyncStore, calls: Counter[str]) -> None:
        self._inner = inner
        self._calls = calls

    @property
    def local(self) -> bool:
        return self._inner.local

    @property
    def nonblocking(self) -> bool:
        """False: the engine then takes its awaited path, whose store calls these tests count
        as a network store would make them."""
        return False

    def get(self, key: str) -> bytes | None:
        self._calls["get"] += 1
        return self._inner.get(key)

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self._calls["set"] += 1
        self._inner.set(key, value, ttl)

    def delete(self, key: str) -> bool:
        self._calls["delete"] += 1
        return self._inner.delete(key)

    def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        self._calls["compare_and_set"] += 1
        return self._inner.compare_and_set(key, expected, value, ttl)

    def close(self) -> None:
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        """``get_many``, counted, exactly when the wrapped sync side has it."""
        inner = self._inner
        if name != "get_many" or not isinstance(inner, SupportsGetManySync):
            raise AttributeError(name)
        calls = self._calls

        def get_many(keys: Sequence[str]) -> list[bytes | None]:
            calls["get_many"] += 1
            return inner.get_many(keys)

        return get_many


class CountingStore:
    """A real store that counts the operations reaching it (``calls``, ``total``).

    ``sync`` is offered exactly when the wrapped store has a sync side, with the same counter.
    """

    __slots__ = ("_inner", "_sync", "calls")

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()
        self._sync = (
            CountingSyncStore(inner.sync, self.calls) if isinstance(inner, SupportsSync) else None
        )

    @property
    def inner(self) -> Store:
        return self._inner

    @property
    def sync(self) -> CountingSyncStore:
        if self._sync is None:
            raise AttributeError("sync")
        return self._sync

    @property
    def total(self) -> int:
        """Round trips so far (every operation is one)."""
        return sum(self.calls.values())

    def reset(self) -> None:
        self.calls.clear()

    async def get(self, key: str) -> bytes | None:
        self.calls["get"] += 1
        return await self._inner.get(key)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self.calls["set"] += 1
        await self._inner.set(key, value, ttl)

    async def delete(self, key: str) -> bool:
        self.calls["delete"] += 1
        return await self._inner.delete(key)

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        self.calls["compare_and_set"] += 1
        return await self._inner.compare_and_set(key, expected, value, ttl)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __getattr__(self, name: str) -> Any:
        """The rate-limit capability, counted as ``hit``, and ``get_many``, counted as
        ``get_many``, exactly when the wrapped store has them (so ``isinstance(store,
        SupportsRateLimit)`` answers as for the wrapped store)."""
        inner = self._inner
        if name == "get_many" and isinstance(inner, SupportsGetMany):
            many = inner.get_many
            counter = self.calls

            async def get_many(keys: Sequence[str]) -> list[bytes | None]:
                counter["get_many"] += 1
                return await many(keys)

            return get_many
        if name not in {"hit", "hit_sync", "nonblocking"} or not isinstance(
            self._inner, SupportsRateLimit
        ):
            raise AttributeError(name)
        found = getattr(self._inner, name)
        if name == "nonblocking":
            return found
        calls = self.calls

        def counted(*args: Any, **kwargs: Any) -> Any:
            calls["hit"] += 1
            return found(*args, **kwargs)

        return counted

    def __repr__(self) -> str:
        return f"CountingStore({self._inner!r})"
