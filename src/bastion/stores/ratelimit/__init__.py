"""Rate-limit backends: apply a :mod:`bastion.core.ratelimit` step atomically, in one place.

A backend answers ``hit(key, strategy, rates, cost)`` with one
:class:`~bastion.core.ratelimit.Decision` per rate. All rates of a call are decided together:
either every one admits the request and all are charged, or none is charged. Each backend has
an async API (:meth:`hit`) for the ASGI engine and a sync API (:meth:`hit_sync`) for WSGI
apps, which therefore never need an event loop.

* :class:`MemoryRateLimitStore`: one process. A lock around the step makes it exact across
  threads and tasks; at most ``max_keys`` states are kept. When full, it drops an expired
  state if one is among the least recently used, else the one of those that had used the
  least of its limit: dropping it forgives the least, so a flood of new keys (say, one per
  IPv6 /64) cannot push out a client that is being refused. Danger: a dropped key starts
  over, so size ``max_keys`` above the number of active keys.
* :class:`SQLiteRateLimitStore`: every process on one host. Its own table
  (``bastion_ratelimit``) and its own connections (one per thread, closed when the thread
  ends) to the file; each decision is one ``BEGIN IMMEDIATE`` transaction (read, compute,
  write), which SQLite serialises across processes, and waits for other writers only until
  its deadline (``timeout`` after the call, time queued on the worker thread included).
  ``synchronous=NORMAL`` by default: a power cut may forget the last few hits, which only
  ever lets a few more requests through.
* :class:`RedisRateLimitStore`: several hosts. One Lua script per algorithm does the whole
  decision for every rate of the call in one round trip (``EVALSHA``; ``EVAL`` once after
  ``NOSCRIPT``), with the Redis server's clock (``TIME``) so hosts with skewed clocks agree.
  The keys of one call share one hash tag, hence one Redis Cluster slot.

Every backend raises :class:`~bastion.errors.StoreUnavailable` (typed as in
:mod:`bastion.stores.faults`, the same classification as the key-value stores) when its
storage cannot serve in time; the engine turns that into the limit's failure policy.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, runtime_checkable

from bastion.core.clock import system_clock
from bastion.core.ratelimit import (
    MICROS,
    STEP_FUNCTIONS,
    Decision,
    Rate,
    State,
    Strategy,
    apply_limits,
    decode_state,
    encode_state,
    micros,
)
from bastion.errors import ConfigurationError, StoreError
from bastion.stores.faults import sqlite_fault
from bastion.stores.sqlite import (
    ThreadConnections,
    bound_lock_wait,
    check_settings,
    open_connection,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from bastion.core.clock import Clock

__all__ = [
    "MemoryRateLimitStore",
    "RateLimitBackend",
    "RedisRateLimitStore",
    "SQLiteRateLimitStore",
    "key_suffix",
    "open_ratelimit_store",
]


@runtime_checkable
class RateLimitBackend(Protocol):
    """What the rate limiter needs from a backend (see the package docstring)."""

    async def hit(
        self, key: str, strategy: Strategy, rates: Sequence[Rate], cost: int = 1
    ) -> tuple[Decision, ...]: ...

    def hit_sync(
        self, key: str, strategy: Strategy, rates: Sequence[Rate], cost: int = 1
    ) -> tuple[Decision, ...]: ...

    async def aclose(self) -> None: ...

    def close(self) -> None: ...


def key_suffix(strategy: Strategy, rate: Rate) -> str:
    # The strategy is part of the key: a changed algorithm never reads another's state.
    return f":{strategy.value}:{rate.limit}/{rate.period_us}"


# -- memory -----------------------------------------------------------------------------------

_EVICTION_SAMPLE: Final = 16
"""How many of the least recently used states a full memory store compares to pick one."""


def _evict(data: OrderedDict[Any, tuple[State, int, int]], now: int) -> None:
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


class MemoryRateLimitStore:
    """In-process backend, exact across threads and tasks (see the package docstring)."""

    __slots__ = ("_clock", "_data", "_lock", "_max_keys", "_now")

    nonblocking: Final = True
    """No I/O and only a short lock: the engine may call :meth:`hit_sync` on the event loop."""

    def __init__(self, *, max_keys: int = 100_000, clock: Clock = system_clock) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ConfigurationError(
                f"max_keys must be a whole number >= 1, got {max_keys!r}", setting="max_keys"
            )
        self._max_keys = max_keys
        self._clock = clock
        # The wall clock read directly: one method call less on every decision.
        self._now: Callable[[], float] = time.time if clock is system_clock else clock.now
        self._lock = threading.Lock()
        # (key, strategy, limit, period_us) -> (state, expires_us, units used at the last
        # charge); plain values hash in C.
        self._data: OrderedDict[tuple[str, Strategy, int, int], tuple[State, int, int]] = (
            OrderedDict()
        )

    def __repr__(self) -> str:
        return f"MemoryRateLimitStore(max_keys={self._max_keys})"

    def __len__(self) -> int:
        return len(self._data)

    def hit_sync(
        self, key: str, strategy: Strategy, rates: Sequence[Rate], cost: int = 1
    ) -> tuple[Decision, ...]:
        now = round(self._now() * MICROS)
        data = self._data
        if len(rates) == 1:  # the common case, kept short: it runs on every request
            rate = rates[0]
            full = (key, strategy, rate.limit, rate.period_us)
            with self._lock:
                entry = data.get(full)
                result = STEP_FUNCTIONS[strategy](
                    entry[0] if entry is not None and entry[1] > now else None, now, cost, rate
                )
                decision = result.decision
                if decision.allowed:
                    data[full] = (result.state, result.expires_us, rate.limit - decision.remaining)
                    data.move_to_end(full)
                    if len(data) > self._max_keys:
                        _evict(data, now)
            return (decision,)
        with self._lock:
            states: list[State | None] = []
            for rate in rates:
                entry = data.get((key, strategy, rate.limit, rate.period_us))
                states.append(entry[0] if entry is not None and entry[1] > now else None)
            steps, decisions = apply_limits(strategy, states, now, cost, rates)
            if steps is not None:
                for rate, result, made in zip(rates, steps, decisions, strict=True):
                    full = (key, strategy, rate.limit, rate.period_us)
                    data[full] = (result.state, result.expires_us, rate.limit - made.remaining)
                    data.move_to_end(full)
                while len(data) > self._max_keys:
                    _evict(data, now)
        return decisions

    async def hit(
        self, key: str, strategy: Strategy, rates: Sequence[Rate], cost: int = 1
    ) -> tuple[Decision, ...]:
        # No await inside: the step runs to completion under the lock, for tasks and threads.
        return self.hit_sync(key, strategy, rates, cost)

    def close(self) -> None:
        with self._lock:
            self._data.clear()

    async def aclose(self) -> None:
        self.close()


# -- SQLite -----------------------------------------------------------------------------------

_SQL_CREATE: Final = """
CREATE TABLE IF NOT EXISTS bastion_ratelimit (
    key BLOB PRIMARY KEY,
    state TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID"""
_SQL_SELECT: Final = "SELECT state FROM bastion_ratelimit WHERE key = ? AND expires_at > ?"
_SQL_UPSERT: Final = """
INSERT INTO bastion_ratelimit (key, state, expires_at) VALUES (?, ?, ?)
ON CONFLICT (key) DO UPDATE SET state = excluded.state, expires_at = excluded.expires_at"""
_SQL_PURGE: Final = """
DELETE FROM bastion_ratelimit WHERE key IN (
    SELECT key FROM bastion_ratelimit WHERE expires_at <= ? LIMIT 1000
)"""


class SQLiteRateLimitStore:
    """SQLite backend, exact across threads and processes on one host (see the module doc).

    ``path`` may be the same file as a :class:`~bastion.stores.sqlite.SQLiteStore`; the table
    is separate. ``timeout`` bounds the wait for another writer (then StoreUnavailable).
    Expired rows are deleted in batches every ``purge_every`` decisions, inside the decision's
    transaction; there is no timer thread.
    """

    __slots__ = (
        "_clock",
        "_closed",
        "_connections",
        "_executor",
        "_hits",
        "_lock",
        "_path",
        "_pid",
        "_purge_every",
        "_synchronous",
        "_timeout",
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock = system_clock,
        timeout: float = 5.0,
        synchronous: Literal["full", "normal"] = "normal",
        purge_every: int = 1000,
    ) -> None:
        if not isinstance(path, str | os.PathLike) or os.fspath(path) in {"", ":memory:"}:
            raise ConfigurationError(
                f"SQLite rate-limit path must be a file path shared by the workers, got {path!r}",
                setting="path",
            )
        check_settings(timeout=timeout, synchronous=synchronous, purge_every=purge_every)
        self._path = Path(path).absolute()
        self._clock = clock
        self._timeout = float(timeout)
        self._synchronous = synchronous
        self._purge_every = purge_every
        self._lock = threading.Lock()
        # One connection per thread, closed when the thread ends: a plain list of every
        # connection made kept one open per finished thread until close().
        self._connections = ThreadConnections(self._open)
        self._executor: ThreadPoolExecutor | None = None
        self._pid = os.getpid()
        self._closed = False
        self._hits = 0

    def __repr__(self) -> str:
        return f"SQLiteRateLimitStore(path={str(self._path)!r})"

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError("SQLiteRateLimitStore used after close(); open a new one")
        if os.getpid() != self._pid:
            # Forked: the parent's worker thread does not exist here.
            with self._lock:
                self._pid = os.getpid()
                self._executor = None
        return self._connections.get()

    def _open(self) -> sqlite3.Connection:
        conn = open_connection(
            self._path,
            deadline=time.monotonic() + self._timeout,
            synchronous=self._synchronous,
        )
        try:
            conn.execute(_SQL_CREATE)
        except BaseException:
            conn.close()
            raise
        return conn

    def hit_sync(
        self, key: str, strategy: Strategy, rates: Sequence[Rate], cost: int = 1
    ) -> tuple[Decision, ...]:
        return self._decide(key, strategy, rates, cost, time.monotonic() + self._timeout)

    def _decide(
        self, key: str, strategy: Strategy, rates: Sequence[Rate], cost: int, deadline: float
    ) -> tuple[Decision, ...]:
        """One decision, waiting for other writers' locks only until ``deadline``."""
        try:
            conn = self._connection()
            bound_lock_wait(conn, deadline)
            full = [
                (key + key_suffix(strategy, rate)).encode("utf-8", "surrogatepass")
                for rate in rates
            ]
            conn.execute("BEGIN IMMEDIATE")
            try:
                now = micros(self._clock.now())
                states = []
                for name in full:
                    row = conn.execute(_SQL_SELECT, (name, now)).fetchone()
                    states.append(None if row is None else decode_state(row[0]))
                steps, decisions = apply_limits(strategy, states, now, cost, rates)
                if steps is not None:
                    conn.executemany(
                        _SQL_UPSERT,
                        [
                            (name, encode_state(result.state), result.expires_us)
                            for name, result in zip(full, steps, strict=True)
                        ],
                    )
                self._hits += 1
                if self._purge_every and self._hits % self._purge_every == 0:
                    conn.execute(_SQL_PURGE, (now,))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            where = f"SQLite rate-limit store {str(self._path)!r}"
            raise sqlite_fault(exc, where, "deciding", self._timeout, self._path) from exc
        return decisions

    async def hit(
        self, key: str, strategy: Strategy, rates: Sequence[Rate], cost: int = 1
    ) -> tuple[Decision, ...]:
        loop = asyncio.get_running_loop()
        # The timeout counts from now: time queued behind other decisions counts too.
        deadline = time.monotonic() + self._timeout
        return await loop.run_in_executor(
            self._worker(), partial(self._decide, key, strategy, rates, cost, deadline)
        )

    def _worker(self) -> ThreadPoolExecutor:
        if os.getpid() != self._pid:
            self._connection()  # resets the per-process state
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="bastion-ratelimit")
            return self._executor

    def close(self) -> None:
        """Close every connection and the worker thread. Safe to call more than once."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        self._connections.close_all()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)


def open_ratelimit_store(
    url: str, *, clock: Clock | None = None, **options: Any
) -> RateLimitBackend:
    """Open the rate-limit backend that ``url`` names.

    Takes the key-value store's URL unchanged, parsed by the same
    :func:`~bastion.stores.url.parse_store_url`, with the same options (query or keyword) and
    the same refusal of unknown ones: ``memory://`` (``max_entries``, also spelt ``max_keys``
    as a keyword), ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` (``timeout``,
    ``synchronous``, ``purge_every``; ``inline_reads`` is accepted and has no effect here), or
    ``redis://``, ``rediss://``, ``unix://`` URLs (``prefix``, also as ``?prefix=``,
    ``socket_timeout``, ``connect_timeout``, ``max_connections``, ``?max_reply_bytes=``;
    ``?transport=`` is the key-value store's and is ignored here; the Redis server's clock is
    used unless ``clock`` is given). A SQLite file may be the one the key-value store
    uses; a Redis URL keeps its ``?prefix=``.
    """
    from bastion.stores.url import parse_store_url  # noqa: PLC0415 (url imports this lazily)

    parsed = parse_store_url(url, options, extra=frozenset({"max_keys"}))
    settings = dict(parsed.settings)
    if parsed.scheme == "redis":
        from bastion.stores.ratelimit.redis import RedisRateLimitStore  # noqa: PLC0415

        try:
            return RedisRateLimitStore(parsed.url, clock=clock, **settings)
        except TypeError as exc:
            raise ConfigurationError(
                f"Redis rate-limit store option rejected: {exc}", setting="options"
            ) from None
    if parsed.scheme == "memory":
        if "max_entries" in settings and "max_keys" in settings:
            raise ConfigurationError(
                "give max_entries or max_keys for a memory:// rate-limit store, not both",
                setting="max_entries",
            )
        if "max_entries" in settings:
            settings["max_keys"] = settings.pop("max_entries")
        return MemoryRateLimitStore(clock=clock or system_clock, **settings)
    settings.pop("inline_reads", None)
    if "max_keys" in settings:
        raise ConfigurationError(
            "sqlite:// rate-limit stores have no option 'max_keys'", setting="max_keys"
        )
    return SQLiteRateLimitStore(parsed.path or "", clock=clock or system_clock, **settings)


def __getattr__(name: str) -> object:
    # The Redis backend needs the ``redis`` extra: import it only when asked for.
    if name == "RedisRateLimitStore":
        from bastion.stores.ratelimit.redis import RedisRateLimitStore  # noqa: PLC0415

        return RedisRateLimitStore
    raise AttributeError(name)
