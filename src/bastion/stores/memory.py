"""In-process store: a bounded dictionary with expiry checked on read.

For tests and single-process apps. Nothing survives a restart and nothing is shared between
processes: two gunicorn workers with a ``MemoryStore`` each see different sessions and count
rate limits separately. Use :class:`~bastion.stores.sqlite.SQLiteStore` for that.

How it keeps within bounds, without a timer thread:

* **Expiry on read.** ``get``, ``delete`` and ``compare_and_set`` treat an entry whose expiry
  time has come (``now >= expires_at``) as absent and drop it.
* **Opportunistic purge.** Every write also drops a few entries whose expiry time has passed,
  earliest first (a heap of expiry times, consulted lazily), so expired entries that nobody
  reads again do not linger. :meth:`MemoryStore.purge_expired` drops all of them at once.
* **Least-recently-used eviction, of evictable entries only.** At most ``max_entries`` entries
  are kept. A write that would exceed the bound evicts the *evictable* entry that was read or
  written least recently: keys starting with one of ``evictable_prefixes`` (by default
  ``"session:"``, the session records and tombstones, which anonymous traffic can create).
  Every other entry is security state (accounts, throttle counters, TOTP steps, API keys,
  revocation epochs) and is never evicted to make room: when no evictable entry is left, the
  write raises :class:`~bastion.errors.StoreFull` (the adapters answer 503) and nothing is
  dropped.

Danger: eviction removes *live* sessions (a logout). Size ``max_entries`` well above the number
of live keys, or use a persistent store. The bound counts entries, not bytes: the memory held
is at most ``max_entries`` times the largest value written.

``store.sync`` is the synchronous side (:class:`MemorySyncStore`) over the same entries.
Every method takes one :class:`threading.Lock` for the dictionary operation only, and never
awaits while holding it, so one instance is safe to share between threads and asyncio tasks.

Rate limits (:class:`~bastion.stores.base.SupportsRateLimit`). ``hit``/``hit_sync`` keep the
rate-limit states in a table of their own, beside the entries, under a lock of their own: the
step runs to completion under it, so counts are exact across threads and tasks. At most
``max_entries`` states are kept (apart from the entries). When full, the store drops an expired
state if one is among the least recently used, else the one of those that had used the least of
its limit: dropping it forgives the least, so a flood of new keys (say, one per IPv6 /64)
cannot push out a client that is being refused. Danger: a dropped key starts over, so size
``max_entries`` above the number of active keys. A sliding log is kept as a mutable
:class:`~bastion.core.ratelimit.sliding_log.SlidingLog`, changed in place, so a decision costs
the entries it expires, not the log's length (the other algorithms' states are a few integers).
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final

from bastion.core.clock import system_clock
from bastion.core.ratelimit import (
    MICROS,
    STEP_FUNCTIONS,
    Decision,
    Rate,
    State,
    Step,
    Strategy,
    apply_limits,
)
from bastion.core.ratelimit.sliding_log import SlidingLog, native_sliding_log_step
from bastion.errors import ConfigurationError, StoreError, StoreFull
from bastion.stores.base import (
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    check_key,
    check_keys,
    check_ttl,
    check_value,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from bastion.core.clock import Clock

__all__ = ["DEFAULT_EVICTABLE_PREFIXES", "MemoryStore", "MemorySyncStore"]

_PURGE_PER_WRITE: Final = 64
"""Most expired entries a single write drops, so that one write never stalls on a backlog."""

_HEAP_SLACK: Final = 64
"""Stale heap entries tolerated beyond twice the live entry count before the heap is rebuilt."""

DEFAULT_EVICTABLE_PREFIXES: Final = ("session:",)
"""What may be evicted to make room: session records and tombstones (see the module docstring)."""

_Entry = tuple[bytes, float | None]
"""A value and its absolute expiry time (Unix seconds), or ``None`` for no expiry."""

_EVICTION_SAMPLE: Final = 16
"""How many of the least recently used rate-limit states a full store compares to pick one."""

_RateKey = tuple[str, "Strategy", int, int]
"""(key, strategy, limit, period_us): plain values, hashed in C."""

_STEPS: Final[dict[Strategy, Callable[[Any, int, int, Rate], Step]]] = {
    **STEP_FUNCTIONS,
    Strategy.SLIDING_LOG: native_sliding_log_step,
}
"""The step functions, as a plain dict (one indirection less than the read-only view); the
sliding log's is the in-place one (:mod:`bastion.core.ratelimit.sliding_log`), so a decision
does not copy the whole log."""

_RateEntry = tuple[State | SlidingLog, int, int]
"""A rate-limit state (a sliding log is kept as a :class:`SlidingLog`), its expiry (Unix
microseconds) and the units used at its last charge."""


def _evict(data: OrderedDict[Any, _RateEntry], now: int) -> None:
    """Drop one state: an expired one among the :data:`_EVICTION_SAMPLE` least recently used,
    else the one of those that had used the least of its limit at its last charge (sooner
    expiry breaks a tie): dropping it forgives the least. A client being refused has used its
    whole limit, so one-hit keys go first, however many of them a flood makes."""
    victim: Any = None
    least = (0, 0)
    for index, (key, (_, expires, used)) in enumerate(data.items()):
        if expires <= now:
            victim = key
            break
        if victim is None or (used, expires) < least:
            victim, least = key, (used, expires)
        if index + 1 >= _EVICTION_SAMPLE:
            break
    del data[victim]


class MemoryStore:
    """A :class:`~bastion.stores.base.Store` in this process's memory. See the module docstring.

    ``max_entries`` bounds the number of entries; only keys starting with one of
    ``evictable_prefixes`` are evicted to keep it (least recently used first), every other
    write past it raises :class:`~bastion.errors.StoreFull`; it also bounds the rate-limit
    states. ``clock`` is the time source for expiry and rate limits (a
    :class:`~bastion.core.clock.FrozenClock` in tests).
    """

    __slots__ = (
        "_clock",
        "_closed",
        "_data",
        "_evictable",
        "_expiries",
        "_lock",
        "_lru",
        "_max_entries",
        "_now",
        "_rate_lock",
        "_rates",
    )

    nonblocking: Final = True
    """No I/O and only short locks: :meth:`hit_sync` and the sync side may run on the event loop."""

    def __init__(
        self,
        *,
        max_entries: int = 100_000,
        clock: Clock = system_clock,
        evictable_prefixes: tuple[str, ...] = DEFAULT_EVICTABLE_PREFIXES,
    ) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigurationError(
                f"max_entries must be a whole number of entries >= 1, got {max_entries!r}",
                setting="max_entries",
            )
        if not isinstance(evictable_prefixes, tuple) or not all(
            isinstance(p, str) for p in evictable_prefixes
        ):
            raise ConfigurationError(
                "evictable_prefixes must be a tuple of key prefixes, e.g. ('session:',) "
                "('' makes every key evictable, () none)",
                setting="evictable_prefixes",
            )
        self._max_entries = max_entries
        self._evictable = evictable_prefixes
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        # Every entry. ``_lru`` names the evictable ones in recency order (the first is the
        # least recently used); the others are never evicted.
        self._data: dict[str, _Entry] = {}
        self._lru: OrderedDict[str, None] = OrderedDict()
        # (expires_at, key) for every write with a TTL; entries go stale when the key is
        # rewritten, deleted or evicted, and are skipped (or the heap rebuilt) lazily.
        self._expiries: list[tuple[float, str]] = []
        # The rate-limit states (see the module docstring), under a lock of their own. The wall
        # clock is read directly: one method call less on every decision.
        self._now: Callable[[], float] = time.time if clock is system_clock else clock.now
        self._rate_lock = threading.Lock()
        self._rates: OrderedDict[_RateKey, _RateEntry] = OrderedDict()

    @property
    def max_entries(self) -> int:
        return self._max_entries

    def __repr__(self) -> str:
        return f"MemoryStore(max_entries={self._max_entries})"

    @property
    def sync(self) -> MemorySyncStore:
        """The synchronous side: the same entries, reached directly under the same lock."""
        return MemorySyncStore(self)

    async def get(self, key: str) -> bytes | None:
        return self._get(key)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self._set(key, value, ttl)

    async def delete(self, key: str) -> bool:
        return self._delete(key)

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        return self._compare_and_set(key, expected, value, ttl)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The live value of each of ``keys``, read under one hold of the lock
        (:class:`~bastion.stores.base.SupportsGetMany`)."""
        return self._get_many(keys)

    # -- rate limits (SupportsRateLimit) -----------------------------------------------------

    @property
    def rate_limit_states(self) -> int:
        """How many rate-limit states the store holds (for tests and diagnostics)."""
        return len(self._rates)

    def hit_sync(
        self, key: str, strategy: Strategy, rates: Sequence[Rate], cost: int = 1
    ) -> tuple[Decision, ...]:
        """Decide ``rates`` for ``key`` in one step (see
        :class:`~bastion.stores.base.SupportsRateLimit`)."""
        now = round(self._now() * MICROS)
        data = self._rates
        if len(rates) == 1:  # the common case, kept short: it runs on every request
            rate = rates[0]
            full = (key, strategy, rate.limit, rate.period_us)
            lock = self._rate_lock
            lock.acquire()  # try/finally: what ``with`` does, at half the cost on this path
            try:
                if self._closed:
                    self._check_open()
                entry = data.get(full)
                result = _STEPS[strategy](
                    entry[0] if entry is not None and entry[1] > now else None, now, cost, rate
                )
                decision = result[2]
                if decision[0]:  # allowed
                    data[full] = (result[0], result[1], rate.limit - decision[2])
                    data.move_to_end(full)
                    if len(data) > self._max_entries:
                        _evict(data, now)
            finally:
                lock.release()
            return (decision,)
        with self._rate_lock:
            if self._closed:
                self._check_open()
            states: list[State | None] = []
            for rate in rates:
                entry = data.get((key, strategy, rate.limit, rate.period_us))
                state = entry[0] if entry is not None and entry[1] > now else None
                states.append(state.state() if isinstance(state, SlidingLog) else state)
            steps, decisions = apply_limits(strategy, states, now, cost, rates)
            if steps is not None:
                for rate, result, made in zip(rates, steps, decisions, strict=True):
                    full = (key, strategy, rate.limit, rate.period_us)
                    data[full] = (result.state, result.expires_us, rate.limit - made.remaining)
                    data.move_to_end(full)
                while len(data) > self._max_entries:
                    _evict(data, now)
        return decisions

    async def hit(
        self, key: str, strategy: Strategy, rates: Sequence[Rate], cost: int = 1
    ) -> tuple[Decision, ...]:
        """:meth:`hit_sync`: no await inside, so the step runs whole under the lock."""
        return self.hit_sync(key, strategy, rates, cost)

    # -- the operations, shared by the async and the sync side ----------------------------------

    # Each operation checks its arguments inline for the common case (ASCII key, exact bytes,
    # float TTL) and falls back to the shared check_* functions, which raise the precise error.

    def _get(self, key: str) -> bytes | None:
        if type(key) is not str or not key.isascii() or not 0 < len(key) <= MAX_KEY_BYTES:
            check_key(key)
        now = self._clock.now()
        with self._lock:
            if self._closed:
                self._check_open()
            entry = self._data.get(key)
            if entry is None:
                return None
            expires_at = entry[1]
            if expires_at is not None and expires_at <= now:
                self._drop(key)
                return None
            if key in self._lru:
                self._lru.move_to_end(key)
            return entry[0]

    def _get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        check_keys(keys)
        now = self._clock.now()
        found: list[bytes | None] = []
        with self._lock:
            if self._closed:
                self._check_open()
            for key in keys:
                entry = self._live(key, now)
                if entry is not None and key in self._lru:
                    self._lru.move_to_end(key)
                found.append(None if entry is None else entry[0])
        return found

    def _set(self, key: str, value: bytes, ttl: float | None) -> None:
        check_key(key)
        value = check_value(value)
        ttl = check_ttl(ttl)
        now = self._clock.now()
        with self._lock:
            self._check_open()
            self._write(key, value, ttl, now)

    def _delete(self, key: str) -> bool:
        check_key(key)
        now = self._clock.now()
        with self._lock:
            self._check_open()
            entry = self._data.get(key)
            if entry is not None:
                self._drop(key)
            return entry is not None and _is_live(entry, now)

    def _compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None
    ) -> bool:
        if type(key) is not str or not key.isascii() or not 0 < len(key) <= MAX_KEY_BYTES:
            check_key(key)
        if expected is not None and (
            type(expected) is not bytes or len(expected) > MAX_VALUE_BYTES
        ):
            expected = check_value(expected)
        if type(value) is not bytes or len(value) > MAX_VALUE_BYTES:
            value = check_value(value)
        if ttl is not None and (type(ttl) is not float or not 0.0 < ttl < math.inf):
            ttl = check_ttl(ttl)
        now = self._clock.now()
        with self._lock:
            if self._closed:
                self._check_open()
            entry = self._data.get(key)
            current = None
            if entry is not None:
                expires_at = entry[1]
                if expires_at is not None and expires_at <= now:
                    self._drop(key)
                else:
                    current = entry[0]
            if current != expected:
                return False
            self._write(key, value, ttl, now)
            return True

    async def purge_expired(self) -> int:
        """Drop every expired entry now and say how many went. Linear in the number of entries."""
        now = self._clock.now()
        with self._lock:
            self._check_open()
            expired = [key for key, entry in self._data.items() if not _is_live(entry, now)]
            for key in expired:
                self._drop(key)
            self._rebuild_expiries()
            return len(expired)

    async def aclose(self) -> None:
        """Drop every entry. Later calls raise :class:`~bastion.errors.StoreError`."""
        with self._lock:
            self._closed = True
            self._data.clear()
            self._lru.clear()
            self._expiries.clear()
        with self._rate_lock:
            self._rates.clear()

    # -- helpers; the caller holds self._lock --------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self!r} is closed; create a new store")

    def _drop(self, key: str) -> None:
        del self._data[key]
        self._lru.pop(key, None)

    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if not _is_live(entry, now):
            self._drop(key)
            return None
        return entry

    def _write(self, key: str, value: bytes, ttl: float | None, now: float) -> None:
        data = self._data
        heap = self._expiries
        if heap and heap[0][0] <= now:
            self._purge_some(now)
        if key not in data and len(data) >= self._max_entries:
            if not self._lru:
                raise StoreFull(
                    f"{self!r} is full ({self._max_entries} entries) and none of them may be "
                    "evicted (only keys starting with "
                    f"{', '.join(map(repr, self._evictable)) or 'nothing'} are): raise "
                    "max_entries or use a persistent store"
                )
            oldest, _ = self._lru.popitem(last=False)
            del data[oldest]
        expires_at = None if ttl is None else now + ttl
        data[key] = (value, expires_at)
        if key.startswith(self._evictable):
            self._lru[key] = None
            self._lru.move_to_end(key)
        if expires_at is not None:
            heapq.heappush(heap, (expires_at, key))
        if len(heap) > 2 * len(data) + _HEAP_SLACK:
            self._rebuild_expiries()

    def _purge_some(self, now: float) -> None:
        heap = self._expiries
        for _ in range(_PURGE_PER_WRITE):
            if not heap or heap[0][0] > now:
                return
            expires_at, key = heapq.heappop(heap)
            entry = self._data.get(key)
            # Only the heap item that matches the entry's current expiry may remove it; an
            # item left behind by an earlier write of the same key is stale.
            if entry is not None and entry[1] == expires_at:
                self._drop(key)

    def _rebuild_expiries(self) -> None:
        self._expiries = [
            (entry[1], key) for key, entry in self._data.items() if entry[1] is not None
        ]
        heapq.heapify(self._expiries)


def _is_live(entry: _Entry, now: float) -> bool:
    expires_at = entry[1]
    return expires_at is None or expires_at > now


class MemorySyncStore:
    """The synchronous side of a :class:`MemoryStore` (``store.sync``): same entries, same lock.

    Calls never block for longer than one dictionary operation, so they are safe on an event
    loop thread.
    """

    __slots__ = ("_store",)

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    @property
    def local(self) -> bool:
        return True

    nonblocking: Final = True
    """Every call is one dictionary operation under a lock never held across I/O."""

    def get(self, key: str) -> bytes | None:
        return self._store._get(key)

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self._store._set(key, value, ttl)

    def delete(self, key: str) -> bool:
        return self._store._delete(key)

    def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        return self._store._compare_and_set(key, expected, value, ttl)

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return self._store._get_many(keys)

    def close(self) -> None:
        """Nothing to release: the entries belong to the async store."""

    def __repr__(self) -> str:
        return f"MemorySyncStore({self._store!r})"
