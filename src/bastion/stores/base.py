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
lets callers decide whether a blocking call on an event loop thread is acceptable. A sync side
may also offer ``nonblocking = True`` (optional, read with ``getattr``): every call, writes
included, completes in this process's memory without waiting on I/O or on a lock held across
I/O, so callers may run it inline on an event loop thread instead of awaiting the async side
(the memory store does; SQLite writes can wait on a file lock, so it does not).

Keys are any non-empty text up to :data:`MAX_KEY_BYTES` bytes of UTF-8 (colons, spaces, braces,
newlines and non-ASCII included). Values are bytes up to :data:`MAX_VALUE_BYTES`. A store that
cannot be reached raises :class:`~bastion.errors.StoreUnavailable` within its timeout; a bad
key, TTL or value raises :class:`~bastion.errors.StoreError` before any I/O.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

from bastion.errors import StoreError

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "Store",
    "SupportsSync",
    "SyncStore",
    "check_key",
    "check_ttl",
    "check_value",
]

MAX_KEY_BYTES = 1024
"""Longest key, in bytes of UTF-8. Keys are identifiers, not payloads."""

MAX_VALUE_BYTES = 8 * 1024 * 1024
"""Largest value. Sessions and counters are far smaller; the cap stops runaway writes."""


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
