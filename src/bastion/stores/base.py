"""The store protocol: bytes with TTLs behind four async operations.

A store is deliberately small so that a third party can implement one and prove it with the
contract suite in :mod:`bastion.testing.store_contract`. Semantics every store guarantees:

* ``get(key)`` returns the live value, or ``None`` when the key is absent or expired.
* ``set(key, value, ttl)`` stores ``value``; ``ttl`` is seconds (``float``, > 0) or ``None``
  for no expiry. A later ``set`` replaces both the value and the TTL.
* ``delete(key)`` removes the key and says whether a live value was there.
* ``compare_and_set(key, expected, value, ttl)`` is atomic: it writes only when the live value
  equals ``expected`` (``None`` means "absent or expired", i.e. create-if-absent) and says
  whether it wrote. Of many concurrent callers with the same ``expected``, exactly one wins,
  across tasks, threads and (for SQLite and Redis) processes.

Synchronous side. WSGI apps (and lazy session loads inside a synchronous ``request.session``
access) reach the same data without an event loop through :class:`SyncStore`: the same four
operations as plain functions, with the same semantics, obtained from a store's ``sync``
attribute (:class:`SupportsSync`). Each store documents how its sync side does I/O (memory:
directly under its lock; SQLite: a connection per calling thread; Redis: a blocking client).
``SyncStore.local`` says whether a call stays on this host without a network round trip, which
lets callers decide whether a blocking call on an event loop thread is acceptable.
``SyncStore.nonblocking`` says more: every call, writes included, completes in this process's
memory without waiting on I/O or on a lock held across I/O, so callers may run it inline on an
event loop thread instead of awaiting the async side (the memory store's does; SQLite writes can
wait on a file lock, so its does not). :func:`sync_side` and :func:`require_sync` are the two
helpers features with ``*_sync`` methods use to reach it.

Rate limits. A store that can apply a :mod:`bastion.core.ratelimit` step atomically offers the
:class:`SupportsRateLimit` capability: ``hit(key, strategy, rates, cost)`` (and ``hit_sync``)
answers with one :class:`~bastion.core.ratelimit.Decision` per rate, all rates of a call decided
together: either every one admits the request and all are charged, or none is charged. The
memory, SQLite and Redis stores offer it on their own connections, so one store (one URL, one
``aclose``) serves sessions and rate limits. Its ``nonblocking`` says whether ``hit_sync``
completes without I/O (memory), so that the rate limiter may call it on the event loop. A store
that cannot be reached raises :class:`~bastion.errors.StoreUnavailable`; the rate limiter turns
that into each limit's failure policy.

Several keys at once. A store that can read several keys in one round trip offers the
:class:`SupportsGetMany` capability: ``get_many(keys)`` (and ``get_many`` on its sync side)
returns the live value of each key, in the order given, read together (memory: under one lock;
SQLite: one ``SELECT``; Redis: one ``MGET``). At most :data:`MAX_GET_MANY` keys per call. Danger
for Redis Cluster: ``MGET`` needs every key of a call in one hash slot, so callers build the
keys of one call with the same :func:`~bastion.stores.keyspace.hash_tag` identifier. The
flow drivers (:mod:`bastion.engine.flows`) fall back to one ``get`` per key on a store without
it, so third-party stores keep working, at one round trip per key.
Atomic steps. Two optional capabilities let a flow do more in one step:
:class:`SupportsCompareAndSetRead` (compare-and-set one key and read another in one call; Redis
runs it as one script) and :class:`SupportsTransaction` (several operations in one transaction;
SQLite runs them in one ``BEGIN IMMEDIATE``). Refresh-token rotation uses them to stay within
two Redis round trips and one SQLite transaction; on a store without them the same flow runs
with plain operations.

Keys are any non-empty text up to :data:`MAX_KEY_BYTES` bytes of UTF-8 (colons, spaces, braces,
newlines and non-ASCII included). Values are bytes up to :data:`MAX_VALUE_BYTES`. A store that
cannot be reached raises :class:`~bastion.errors.StoreUnavailable` within its timeout; a bad
key, TTL or value raises :class:`~bastion.errors.StoreError` before any I/O.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

from bastion.errors import ConfigurationError, StoreError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from bastion.core.ratelimit import Decision, Rate, Strategy

__all__ = [
    "MAX_GET_MANY",
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "Store",
    "SupportsCompareAndSetRead",
    "SupportsGetMany",
    "SupportsGetManySync",
    "SupportsPurge",
    "SupportsRateLimit",
    "SupportsSync",
    "SupportsTransaction",
    "SyncStore",
    "check_key",
    "check_keys",
    "check_ttl",
    "check_value",
    "inline_side",
    "require_rate_limit",
    "require_sync",
    "sync_side",
]

_T = TypeVar("_T")

MAX_KEY_BYTES = 1024
"""Longest key, in bytes of UTF-8. Keys are identifiers, not payloads."""

MAX_VALUE_BYTES = 8 * 1024 * 1024
"""Largest value. Sessions and counters are far smaller; the cap stops runaway writes."""

MAX_GET_MANY = 64
"""Most keys one ``get_many`` call reads. Callers read a few related records (a token's
deny-list entry and its user's epoch); the cap stops a runaway call from becoming one huge
statement or reply."""


@runtime_checkable
class Store(Protocol):
    """What the engine needs from a store. Every method is a coroutine."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None: ...

    async def delete(self, key: str) -> bool: ...

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool: ...

    async def aclose(self) -> None:
        """Release connections and threads. The store is unusable afterwards."""
        ...


@runtime_checkable
class SyncStore(Protocol):
    """The synchronous side of a store: same data, same semantics, blocking calls.

    Danger: calling it from a coroutine blocks the event loop for the duration of the call.
    That is microseconds when ``local`` is true (memory, SQLite reads) and a network round
    trip otherwise.
    """

    @property
    def local(self) -> bool:
        """Whether calls stay on this host (no network round trip)."""
        ...

    @property
    def nonblocking(self) -> bool:
        """Whether every call, writes included, completes in this process's memory, without
        waiting on I/O or on a lock held across I/O: then a caller on an event loop thread may
        call it inline instead of awaiting the async side."""
        ...

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None: ...

    def delete(self, key: str) -> bool: ...

    def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool: ...

    def close(self) -> None:
        """Release the calling thread's or process's synchronous resources."""
        ...


@runtime_checkable
class SupportsSync(Protocol):
    """A store that also offers a :class:`SyncStore` view of the same data."""

    @property
    def sync(self) -> SyncStore: ...


@runtime_checkable
class SupportsRateLimit(Protocol):
    """A store that decides rate limits atomically (see the module docstring).

    ``key`` is the limit's key (non-empty text; the store adds the strategy and each rate to
    it, so a changed algorithm or rate never reads another's state). Danger: a third-party
    implementation must decide all ``rates`` of a call in one atomic step against every other
    caller (tasks, threads and, for a shared store, processes); the rate-limit tests of
    :class:`~bastion.testing.store_contract.StoreContract` check exactly that.
    """

    @property
    def nonblocking(self) -> bool:
        """Whether :meth:`hit_sync` completes without I/O, so that the event loop may call it."""
        ...

    async def hit(
        self, key: str, strategy: Strategy, rates: Sequence[Rate], cost: int = 1
    ) -> tuple[Decision, ...]: ...

    def hit_sync(
        self, key: str, strategy: Strategy, rates: Sequence[Rate], cost: int = 1
    ) -> tuple[Decision, ...]: ...


@runtime_checkable
class SupportsGetMany(Protocol):
    """A store that reads several keys in one round trip (see the module docstring).

    ``get_many(keys)`` returns one item per key, in order: the live value or ``None``. Keys
    are checked as :func:`check_keys` says before any I/O. Danger: on Redis Cluster the keys of
    one call must share a hash slot (:func:`~bastion.stores.keyspace.hash_tag`).
    """

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...


@runtime_checkable
class SupportsGetManySync(Protocol):
    """The sync side of :class:`SupportsGetMany`: the same call, blocking."""

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...


@runtime_checkable
class SupportsPurge(Protocol):
    """A store that can delete its expired entries on demand (memory, SQLite; Redis expires
    keys itself). Used by ``bastion store purge``."""

    async def purge_expired(self) -> int:
        """Delete every expired entry now and say how many went."""
        ...


@runtime_checkable
class SupportsCompareAndSetRead(Protocol):
    """A store that compare-and-sets one key and reads another in one call (Redis: one script,
    one round trip). The reply is ``(won, current, read_value)``: ``current`` is the live value
    of ``key`` afterwards (``value`` when it won), ``read_value`` that of ``read``, both read
    in the same atomic step as the write. The flow command
    :class:`~bastion.engine.flows.CompareAndSetRead` uses it where offered and falls back to a
    compare-and-set then two gets elsewhere. In a Redis Cluster the two keys would have to
    share a slot; the store does not support a cluster client yet."""

    async def compare_and_set_read(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None, read: str
    ) -> tuple[bool, bytes | None, bytes | None]: ...


@runtime_checkable
class SupportsTransaction(Protocol):
    """A store that runs several operations as one transaction (SQLite: ``BEGIN IMMEDIATE`` on
    one connection). ``work`` receives a :class:`SyncStore` bound to the transaction and runs
    on the store's own thread (``transaction``) or the calling thread (``transaction_sync``);
    every call it makes sees and writes one consistent state, and no other writer (thread or
    process) comes between them. Its return commits, an exception rolls back and propagates.

    Danger: ``work`` holds the store's write lock while it runs: it must do no I/O of its own
    and must not sleep; a compare-and-set inside it never loses, so a flow's retry loop does
    not back off there.
    """

    async def transaction(self, work: Callable[[SyncStore], _T]) -> _T: ...

    def transaction_sync(self, work: Callable[[SyncStore], _T]) -> _T: ...


def sync_side(store: Store) -> SyncStore | None:
    """``store.sync`` when the store has a synchronous side, else ``None``.

    Credentials features (login throttle, API keys, TOTP) write their store logic once as flows
    (:mod:`bastion.engine.flows`) and run them on the store, or on ``store.sync`` for WSGI apps.
    """
    return store.sync if isinstance(store, SupportsSync) else None


def inline_side(store: Store) -> SyncStore | None:
    """``store.sync`` when its calls never block (a memory store), else ``None``: an engine
    drives its flows on it inline from async code, with no await and no thread hop. Decided
    once, when the engine is built."""
    sync = sync_side(store)
    return sync if sync is not None and sync.nonblocking is True else None


def require_sync(sync: SyncStore | None, store: Store) -> SyncStore:
    """``sync``, or :class:`~bastion.errors.ConfigurationError` naming ``store`` and the fix.

    A store without a sync side still serves the async methods; the sync ones fail with this
    error rather than starting an event loop behind the caller's back.
    """
    if sync is None:
        raise ConfigurationError(
            f"{store!r} has no synchronous side (store.sync): use the async methods, or a "
            "memory, SQLite or Redis store",
            setting="store",
        )
    return sync


def require_rate_limit(store: object) -> SupportsRateLimit:
    """``store``, or :class:`~bastion.errors.ConfigurationError` naming what it lacks."""
    if isinstance(store, SupportsRateLimit):
        return store
    missing = [name for name in ("hit", "hit_sync", "nonblocking") if not hasattr(store, name)] or [
        "hit",
        "hit_sync",
        "nonblocking",
    ]
    raise ConfigurationError(
        f"{store!r} has no rate-limit capability: it lacks {', '.join(missing)} of "
        "bastion.stores.base.SupportsRateLimit; use a memory, SQLite or Redis store "
        "(bastion.stores.open_store), or implement that protocol",
        setting="store",
    )


def check_key(key: str) -> bytes:
    """Return ``key`` as UTF-8 bytes, or raise :class:`StoreError` naming what is wrong."""
    if not isinstance(key, str):
        raise StoreError(f"store key must be str, got {type(key).__name__}")
    if not key:
        raise StoreError("store key must not be empty")
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError:
        raise StoreError("store key is not valid text (it contains a lone surrogate)") from None
    if len(raw) > MAX_KEY_BYTES:
        raise StoreError(f"store key is {len(raw)} bytes; the limit is {MAX_KEY_BYTES} bytes")
    return raw


def check_keys(keys: Sequence[str]) -> list[bytes]:
    """Return each of ``keys`` as UTF-8 bytes (see :func:`check_key`), or raise
    :class:`StoreError`: ``keys`` must be a list or tuple of 1 to :data:`MAX_GET_MANY` keys."""
    if not isinstance(keys, list | tuple):
        raise StoreError(f"get_many() takes a list or tuple of keys, got {type(keys).__name__}")
    if not 0 < len(keys) <= MAX_GET_MANY:
        raise StoreError(f"get_many() takes 1 to {MAX_GET_MANY} keys, got {len(keys)}")
    return [check_key(key) for key in keys]


def check_value(value: bytes) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise StoreError(f"store value must be bytes, got {type(value).__name__}")
    value = bytes(value)
    if len(value) > MAX_VALUE_BYTES:
        raise StoreError(f"store value is {len(value)} bytes; the limit is {MAX_VALUE_BYTES} bytes")
    return value


def check_ttl(ttl: float | None) -> float | None:
    """Validate a TTL in seconds: ``None`` (no expiry) or a finite number greater than zero.

    Every store calls it before any I/O, so a bad TTL (``NaN``, infinity, zero or less, a bool,
    an integer too large for a float) is a :class:`StoreError`, never an ``OverflowError``.
    """
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise StoreError(f"ttl must be seconds as a number or None, got {type(ttl).__name__}")
    try:
        seconds = float(ttl)
    except OverflowError:  # an int beyond the float range, such as 10**400
        seconds = math.inf
    if not math.isfinite(seconds) or seconds <= 0:
        shown = f"{ttl:.3g}" if isinstance(ttl, float) else f"an integer of {len(str(ttl))} digits"
        if isinstance(ttl, int) and len(str(ttl)) <= 20:
            shown = str(ttl)
        raise StoreError(f"ttl must be a finite number of seconds greater than 0, got {shown}")
    return seconds
