"""The PostgreSQL store: security state in the database an application already runs and backs up.

``open_store("postgresql://user:password@host:5432/db?prefix=app:")`` (psycopg 3 and its pool,
the ``postgres`` extra). Layout and guarantees:

* Tables ``bastion_kv (key bytea PRIMARY KEY, value bytea, expires_at bigint)`` and
  ``bastion_ratelimit`` (the counters), a ``bastion_schema`` version row, and the rate-limit
  function (see :mod:`bastion.stores._postgres_sql`). Created on first use, inside a
  transaction holding an advisory lock, so processes starting together take turns; or ahead of
  time with ``bastion store migrate URL``. A database written by a newer bastion is refused.
* Keys are the prefix's namespace (as on Redis: ``"app:"`` gives ``app:<key>``) then the key's
  UTF-8 bytes. Times are microseconds; with the system clock (the default) every statement
  reads the database server's clock, so hosts with skewed clocks agree on expiry and on rate
  limits. A :class:`~bastion.core.clock.FrozenClock` (tests) sends this host's time instead.
* Every operation is one statement in autocommit mode: one round trip, one transaction.
  ``compare_and_set`` is a conditional ``UPDATE`` (or ``INSERT ... ON CONFLICT DO UPDATE ...
  WHERE`` the old row expired), which PostgreSQL re-checks on the newest row version after a
  concurrent writer commits: two swaps from one value never both win. Expired rows are never
  read (every read filters on ``expires_at``) and are deleted in batches every ``purge_every``
  writes of this store and by :meth:`PostgresStore.purge_expired` (``bastion store purge``).
* Rate limits (:class:`~bastion.stores.base.SupportsRateLimit`): one function call decides every
  rate of a rule in one statement, exact across processes and hosts (its rows are locked in key
  order for the statement's transaction).
* No session state: nothing is prepared or ``SET`` outside a statement, so a pooler in
  transaction mode (PgBouncer) works. ``?prepare=false`` turns psycopg's automatic prepared
  statements off for poolers older than PgBouncer 1.21.
* Failures: a server that is down, restarting or unreachable, a pool with no free connection
  within ``timeout``, a statement over ``timeout`` (``statement_timeout``), a read-only standby
  or a full disk raise a :class:`~bastion.errors.StoreUnavailable` (503 with ``Retry-After``),
  never a 500; messages name ``host:port/db``, never the password. Pooled connections are not
  pinged before use (that would double every operation's round trips): after a server restart
  each stale connection fails one call with StoreUnavailable and is replaced, so the store is
  back within a few calls. Nothing is retried: a write whose reply was lost is reported as a
  failure, never repeated behind the caller's back.

Durability is PostgreSQL's: a write is acknowledged after its commit (with the server's default
``synchronous_commit = on``, on disk; with a synchronous standby, on two machines).
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

try:
    import psycopg
    from psycopg_pool import AsyncConnectionPool, ConnectionPool
except ImportError as exc:  # pragma: no cover - the postgres extra
    raise ImportError(
        "the PostgreSQL store needs psycopg and psycopg-pool: pip install 'bastion[postgres]'",
        name=exc.name,
    ) from exc

from bastion.core.clock import system_clock
from bastion.core.ratelimit import micros
from bastion.errors import ConfigurationError, StoreError
from bastion.stores import _postgres_sql as sql
from bastion.stores._redis_scripts import decisions
from bastion.stores.base import check_key, check_keys, check_ttl, check_value
from bastion.stores.faults import postgres_fault
from bastion.stores.keyspace import namespace_prefix, ratelimit_key_suffix
from bastion.stores.redis_url import DEFAULT_PREFIX, LoopClients, check_timeout

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from bastion.core.clock import Clock
    from bastion.core.ratelimit import Decision, Rate, Strategy

__all__ = ["PostgresStore", "PostgresSyncStore"]

_T = TypeVar("_T")

DEFAULT_TIMEOUT: Final = 5.0
_LOCK_ID: Final = 0x6261_7374_696F_6E  # "bastion": the migration's advisory lock
_PURGE_BATCH: Final = 1000


def ttl_micros(ttl: float | None) -> int | None:
    """A TTL in seconds as whole microseconds (rounded up, at least 1), or ``None``."""
    seconds = check_ttl(ttl)
    if seconds is None:
        return None
    return max(1, math.ceil(round(seconds * 1_000_000, 3)))


def _split_url(url: str) -> tuple[str, dict[str, str]]:
    """The libpq URL without bastion's own query options, and those options."""
    parts = urlsplit(url)
    ours = {"prefix", "timeout", "purge_every", "pool_size", "prepare"}
    mine: dict[str, str] = {}
    rest = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in ours:
            if name in mine:
                raise ConfigurationError(f"store URL option {name!r} is given twice", setting=name)
            mine[name] = value
        else:
            rest.append((name, value))
    scheme = "postgresql"
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(rest), "")), mine


def _describe(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"{host}:{parts.port or 5432}{parts.path or '/'}"


class PostgresStore:
    """A :class:`~bastion.stores.base.Store` on PostgreSQL. See the module docstring.

    ``url`` is a libpq URL (``postgresql://`` or ``postgres://``); ``timeout`` (seconds) bounds
    the wait for a pooled connection, connecting, and each statement; ``pool_size`` caps the
    connections per event loop and for the sync side; ``purge_every`` is the number of this
    store's writes between two batched purges of expired rows (0: never).
    """

    nonblocking: Final = False
    """Every call is a network round trip."""

    __slots__ = (
        "_clock",
        "_closed",
        "_conninfo",
        "_kwargs",
        "_lock",
        "_loop_pools",
        "_migrated",
        "_pool_size",
        "_prefix",
        "_purge_every",
        "_raw_prefix",
        "_sync_pool",
        "_sync_view",
        "_timeout",
        "_where",
        "_writes",
    )

    def __init__(
        self,
        url: str,
        *,
        clock: Clock | None = None,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        pool_size: int = 10,
        purge_every: int = 1000,
        prepare: bool = True,
    ) -> None:
        if not isinstance(url, str) or urlsplit(url).scheme not in {"postgresql", "postgres"}:
            raise ConfigurationError(
                "PostgreSQL store URL must start with postgresql://", setting="url"
            )
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ConfigurationError(
                f"pool_size must be a whole number >= 1, got {pool_size!r}", setting="pool_size"
            )
        if isinstance(purge_every, bool) or not isinstance(purge_every, int) or purge_every < 0:
            raise ConfigurationError(
                f"purge_every must be a whole number >= 0, got {purge_every!r}",
                setting="purge_every",
            )
        self._timeout = check_timeout("timeout", timeout)
        self._conninfo = url
        self._where = f"PostgreSQL at {_describe(url)}"
        self._prefix = prefix
        self._raw_prefix = namespace_prefix(prefix)
        self._clock = None if clock is None or clock is system_clock else clock
        self._pool_size = pool_size
        self._purge_every = purge_every
        statement_ms = max(1, math.ceil(self._timeout * 1000))
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(1, math.ceil(self._timeout)),
            "options": f"-c statement_timeout={statement_ms}",
            "prepare_threshold": 5 if prepare else None,
        }
        self._lock = threading.Lock()
        self._closed = False
        self._migrated = False
        self._writes = 0
        self._sync_pool: ConnectionPool[Any] | None = None
        self._loop_pools: LoopClients[AsyncConnectionPool[Any]] = LoopClients(
            self._new_async_pool, _close_async_pool
        )
        self._sync_view = PostgresSyncStore(self)

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None, **options: Any) -> PostgresStore:
        """Open a store from ``postgresql://user:password@host:port/db?prefix=app:&timeout=5``
        (bastion's options: ``prefix``, ``timeout``, ``pool_size``, ``purge_every``,
        ``prepare``; every other query parameter goes to libpq, e.g. ``sslmode``)."""
        clean, mine = _split_url(url)
        settings: dict[str, Any] = {}
        converters: dict[str, Callable[[str], Any]] = {
            "prefix": str,
            "timeout": float,
            "pool_size": int,
            "purge_every": int,
            "prepare": _flag,
        }
        for name, text in mine.items():
            if name in options:
                raise ConfigurationError(
                    f"{name} is given both in the URL and as a keyword; give it once",
                    setting=name,
                )
            try:
                settings[name] = converters[name](text)
            except ValueError:
                raise ConfigurationError(
                    f"store URL option {name}={text!r} is not a valid value", setting=name
                ) from None
        unknown = set(options) - set(converters)
        if unknown:
            raise ConfigurationError(
                f"PostgreSQL stores have no option {sorted(unknown)[0]!r}; accepted options: "
                + ", ".join(sorted(converters)),
                setting=sorted(unknown)[0],
            )
        return cls(clean, clock=clock, **settings, **options)

    def __repr__(self) -> str:
        server = self._where.removeprefix("PostgreSQL at ")
        return f"PostgresStore(server={server!r}, prefix={self._prefix!r})"

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def sync(self) -> PostgresSyncStore:
        """The synchronous side: a blocking connection pool on the same database."""
        return self._sync_view

    def full_key(self, key: str) -> bytes:
        return self._raw_prefix + check_key(key)

    def _key(self, operation: str, key: str) -> bytes:
        if self._closed:
            raise StoreError(f"PostgresStore.{operation}() called after aclose(); open a new store")
        return self.full_key(key)

    def _now(self) -> int | None:
        clock = self._clock
        return None if clock is None else micros(clock.now())

    # -- pools ---------------------------------------------------------------------------------

    def _new_async_pool(self) -> AsyncConnectionPool[Any]:
        return AsyncConnectionPool(
            self._conninfo,
            kwargs=self._kwargs,
            min_size=1,
            max_size=self._pool_size,
            open=False,
            timeout=self._timeout,
            check=None,
            name="bastion-async",
        )

    async def _apool(self) -> AsyncConnectionPool[Any]:
        if self._closed:
            raise StoreError("PostgresStore used after aclose(); open a new store")
        pool = self._loop_pools.get()
        if pool.closed:
            await pool.open()
        return pool

    def sync_pool(self) -> ConnectionPool[Any]:
        """The blocking pool (made and opened on first use)."""
        if self._closed:
            raise StoreError("PostgresStore used after aclose(); open a new store")
        pool = self._sync_pool
        if pool is None:
            with self._lock:
                pool = self._sync_pool
                if pool is None:
                    pool = ConnectionPool(
                        self._conninfo,
                        kwargs=self._kwargs,
                        min_size=1,
                        max_size=self._pool_size,
                        open=True,
                        timeout=self._timeout,
                        check=None,
                        name="bastion-sync",
                    )
                    self._sync_pool = pool
        return pool

    # -- running statements ----------------------------------------------------------------

    async def _run(self, operation: str, statement: str, params: dict[str, Any]) -> Any:
        """Run one statement; its rows (a list), or the row count for a statement without."""
        try:
            pool = await self._apool()
            if not self._migrated:
                async with pool.connection() as conn:
                    await _amigrate(conn, self)
            async with pool.connection() as conn:
                cursor = await conn.execute(statement, params)
                if cursor.description is None:
                    return cursor.rowcount
                return await cursor.fetchall()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise postgres_fault(exc, self._where, operation) from exc

    def run_sync(self, operation: str, statement: str, params: dict[str, Any]) -> Any:
        """:meth:`_run` on the blocking pool."""
        try:
            pool = self.sync_pool()
            if not self._migrated:
                with pool.connection() as conn:
                    _migrate(conn, self)
            with pool.connection() as conn:
                cursor = conn.execute(statement, params)
                if cursor.description is None:
                    return cursor.rowcount
                return cursor.fetchall()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise postgres_fault(exc, self._where, operation) from exc

    def mark_migrated(self) -> None:
        self._migrated = True

    def wrote(self) -> bool:
        """Count one write; whether this one should also purge a batch of expired rows."""
        self._writes += 1
        every = self._purge_every
        return bool(every) and self._writes % every == 0

    # -- the Store protocol ----------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        rows = await self._run("get", sql.GET, {"key": self._key("get", key), "now": self._now()})
        return bytes(rows[0][0]) if rows else None

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The live value of each of ``keys``: one statement, one round trip."""
        if self._closed:
            raise StoreError("PostgresStore.get_many() called after aclose(); open a new store")
        fulls = [self._raw_prefix + raw for raw in check_keys(keys)]
        rows = await self._run("get_many", sql.GET_MANY, {"keys": fulls, "now": self._now()})
        found = {bytes(row[0]): bytes(row[1]) for row in rows}
        return [found.get(full) for full in fulls]

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        params = self.write_params("set", key, value, ttl)
        await self._run("set", sql.SET, params)
        if self.wrote():
            await self.purge_expired()

    async def delete(self, key: str) -> bool:
        rows = await self._run(
            "delete", sql.DELETE, {"key": self._key("delete", key), "now": self._now()}
        )
        return bool(rows[0][0])

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        params = self.write_params("compare_and_set", key, value, ttl)
        if expected is None:
            rows = await self._run("compare_and_set", sql.CAS_INSERT, params)
        else:
            params["expected"] = check_value(expected)
            rows = await self._run("compare_and_set", sql.CAS_UPDATE, params)
        if rows and self.wrote():
            await self.purge_expired()
        return bool(rows)

    def write_params(
        self, operation: str, key: str, value: bytes, ttl: float | None
    ) -> dict[str, Any]:
        return {
            "key": self._key(operation, key),
            "value": check_value(value),
            "ttl": ttl_micros(ttl),
            "now": self._now(),
        }

    async def purge_expired(self) -> int:
        """Delete every expired entry and counter now (in batches); how many went."""
        total = 0
        for statement in (sql.PURGE, sql.PURGE_RL):
            while True:
                count = await self._run(
                    "purge", statement, {"batch": _PURGE_BATCH, "now": self._now()}
                )
                total += count
                if count < _PURGE_BATCH:
                    break
        return total

    # -- rate limits -------------------------------------------------------------------------

    def rate_params(
        self, key: str, strategy: Strategy, rates: Sequence[Rate], cost: int
    ) -> dict[str, Any]:
        if self._closed:
            raise StoreError("PostgresStore.hit() called after aclose(); open a new store")
        if not key:
            raise StoreError("rate-limit key must not be empty")
        base = self._raw_prefix + b"rl:" + key.encode("utf-8", "surrogatepass")
        return {
            "keys": [base + ratelimit_key_suffix(strategy, rate).encode("ascii") for rate in rates],
            "strategy": str(strategy),
            "now": self._now(),
            "cost": cost,
            "limits": [rate.limit for rate in rates],
            "periods": [rate.period_us for rate in rates],
        }

    async def hit(
        self, key: str, strategy: Strategy, rates: Sequence[Rate], cost: int = 1
    ) -> tuple[Decision, ...]:
        """Decide ``rates`` for ``key`` in one statement: one round trip."""
        params = self.rate_params(key, strategy, rates, cost)
        rows = await self._run("the rate-limit function", sql.RL_HIT, params)
        return decisions(rows[0][0], rates)

    def hit_sync(
        self, key: str, strategy: Strategy, rates: Sequence[Rate], cost: int = 1
    ) -> tuple[Decision, ...]:
        params = self.rate_params(key, strategy, rates, cost)
        rows = self.run_sync("the rate-limit function", sql.RL_HIT, params)
        return decisions(rows[0][0], rates)

    # -- schema and shutdown -------------------------------------------------------------------

    def migrate(self) -> int:
        """Create or upgrade the schema now (``bastion store migrate``); the version reached."""
        try:
            with self.sync_pool().connection() as conn:
                return _migrate(conn, self)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise postgres_fault(exc, self._where, "migrating the schema") from exc

    async def aclose(self) -> None:
        """Close the pools. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        await self._loop_pools.aclose()
        with self._lock:
            pool, self._sync_pool = self._sync_pool, None
        if pool is not None:
            pool.close()


async def _close_async_pool(pool: AsyncConnectionPool[Any]) -> None:
    await pool.close()


def _flag(text: str) -> bool:
    folded = text.strip().lower()
    if folded in {"true", "1", "yes", "on"}:
        return True
    if folded in {"false", "0", "no", "off"}:
        return False
    raise ValueError(text)


_VERSION_TABLE: Final = "CREATE TABLE IF NOT EXISTS bastion_schema (version integer NOT NULL)"


def _pending(version: int | None) -> list[tuple[int, str]]:
    current = version or 0
    if current > sql.SCHEMA_VERSION:
        raise StoreError(
            f"the database's bastion schema is version {current}, newer than this bastion's "
            f"{sql.SCHEMA_VERSION}; upgrade bastion"
        )
    return [(number, text) for number, text in sql.MIGRATIONS if number > current]


_HAS_TABLE: Final = "SELECT to_regclass('bastion_schema') IS NOT NULL"


def _migrate(conn: psycopg.Connection[Any], store: PostgresStore) -> int:
    # Up to date already: no write at all (a read-only standby or role can still read).
    exists = conn.execute(_HAS_TABLE).fetchone()
    if exists and exists[0]:
        row = conn.execute("SELECT max(version) FROM bastion_schema").fetchone()
        if row and row[0] == sql.SCHEMA_VERSION:
            store.mark_migrated()
            return sql.SCHEMA_VERSION
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        conn.execute(_VERSION_TABLE)
        row = conn.execute("SELECT max(version) FROM bastion_schema").fetchone()
        pending = _pending(row[0] if row else None)
        for number, text in pending:
            conn.execute(text)  # literal SQL of this package
            conn.execute("DELETE FROM bastion_schema")
            conn.execute("INSERT INTO bastion_schema (version) VALUES (%s)", (number,))
    store.mark_migrated()
    return sql.SCHEMA_VERSION


async def _amigrate(conn: psycopg.AsyncConnection[Any], store: PostgresStore) -> int:
    exists = await (await conn.execute(_HAS_TABLE)).fetchone()
    if exists and exists[0]:
        row = await (await conn.execute("SELECT max(version) FROM bastion_schema")).fetchone()
        if row and row[0] == sql.SCHEMA_VERSION:
            store.mark_migrated()
            return sql.SCHEMA_VERSION
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        await conn.execute(_VERSION_TABLE)
        cursor = await conn.execute("SELECT max(version) FROM bastion_schema")
        row = await cursor.fetchone()
        pending = _pending(row[0] if row else None)
        for number, text in pending:
            await conn.execute(text)  # literal SQL of this package
            await conn.execute("DELETE FROM bastion_schema")
            await conn.execute("INSERT INTO bastion_schema (version) VALUES (%s)", (number,))
    store.mark_migrated()
    return sql.SCHEMA_VERSION


class PostgresSyncStore:
    """The blocking side of a :class:`PostgresStore` (``store.sync``): the same statements on
    a thread-safe pool of its own. Every call is a round trip: not for an event loop thread."""

    __slots__ = ("_store",)

    nonblocking: Final = False

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    @property
    def local(self) -> bool:
        return False

    def get(self, key: str) -> bytes | None:
        store = self._store
        rows = store.run_sync("get", sql.GET, {"key": store._key("get", key), "now": store._now()})
        return bytes(rows[0][0]) if rows else None

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        store = self._store
        if store._closed:
            raise StoreError("PostgresStore.get_many() called after aclose(); open a new store")
        fulls = [store._raw_prefix + raw for raw in check_keys(keys)]
        rows = store.run_sync("get_many", sql.GET_MANY, {"keys": fulls, "now": store._now()})
        found = {bytes(row[0]): bytes(row[1]) for row in rows}
        return [found.get(full) for full in fulls]

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        store = self._store
        store.run_sync("set", sql.SET, store.write_params("set", key, value, ttl))
        if store.wrote():
            self._purge()

    def delete(self, key: str) -> bool:
        store = self._store
        rows = store.run_sync(
            "delete", sql.DELETE, {"key": store._key("delete", key), "now": store._now()}
        )
        return bool(rows[0][0])

    def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        store = self._store
        params = store.write_params("compare_and_set", key, value, ttl)
        if expected is None:
            rows = store.run_sync("compare_and_set", sql.CAS_INSERT, params)
        else:
            params["expected"] = check_value(expected)
            rows = store.run_sync("compare_and_set", sql.CAS_UPDATE, params)
        if rows and store.wrote():
            self._purge()
        return bool(rows)

    def _purge(self) -> None:
        store = self._store
        for statement in (sql.PURGE, sql.PURGE_RL):
            store.run_sync("purge", statement, {"batch": _PURGE_BATCH, "now": store._now()})

    def close(self) -> None:
        """Nothing of its own to close: :meth:`PostgresStore.aclose` closes the pools."""

    def __repr__(self) -> str:
        return f"PostgresSyncStore({self._store!r})"
