"""The Redis store: several hosts share sessions, tokens and rate limits through one server.

Layout and guarantees:

* Every key is ``prefix + key``, sent as UTF-8 bytes, so keys with braces, NUL, newlines or
  non-ASCII text work unchanged. Prefixes must not contain ``{`` or ``}``: keys that must
  share a Redis Cluster slot are built with :func:`~bastion.stores.keyspace.hash_tag`, and a
  brace in the prefix would capture every key's tag.
* TTLs are sent as ``PX`` milliseconds, rounded up (minimum 1 ms), and counted by the Redis
  server's clock. A ``clock`` passed to :meth:`RedisStore.from_url` is accepted for symmetry
  with the other stores and not used: hosts with skewed clocks still agree on expiry.
* :meth:`RedisStore.compare_and_set` is one Lua script, sent with ``EVALSHA``: one round trip,
  atomic on the server. The script is not loaded up front; when the server answers ``NOSCRIPT``
  (first use, ``SCRIPT FLUSH``, a restart, a failover to a replica that never saw it) the call
  is repeated once with ``EVAL``, which runs the script and caches it again.
* Connection failures, timeouts, a server still loading its data set and failover states raise
  :class:`~bastion.errors.StoreUnavailable` within the timeouts (2 s by default); other error
  replies raise :class:`~bastion.errors.StoreError`. Messages name ``host:port``, never the
  password. After an outage the same store reconnects by itself: the pool checks an idle
  connection before reusing it.

* The four store operations go through a lean RESP transport by default (see
  :meth:`RedisStore.from_url`, ``transport=``): redis-py's async client spends about 75 us per
  command on its own machinery, the lean transport about 30 us (measured on one host, same
  server, same run; figures in the sessions bench). The same error mapping, timeouts and
  reconnect-after-restart behaviour apply; the contract and outage tests run against it.

Danger: :meth:`RedisStore.from_url` turns redis-py's automatic retries off. A retried
``compare_and_set`` whose first reply was lost would report ``False`` for a write that
happened; the caller should see :class:`~bastion.errors.StoreUnavailable` instead and decide.
Pass ``retry=`` explicitly only if every caller tolerates that. The store takes a
``redis.asyncio.Redis`` client; a ``RedisCluster`` client is not supported yet (the key layout
is ready for it).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import socket
import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

import redis as redis_sync
from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.retry import Retry as SyncRetry

try:
    import hiredis
except ImportError:  # pragma: no cover - hiredis ships with the redis extra's fast path
    hiredis = None  # type: ignore[assignment]  # transport="resp" then refuses to start

from bastion.errors import ConfigurationError, StoreError, StoreUnavailable
from bastion.stores.base import check_key, check_ttl, check_value
from bastion.stores.keyspace import KEY_SLOTS, hash_tag, key_slot
from bastion.stores.redis_url import (
    DEFAULT_PREFIX,
    pop_query,
    without_maintenance_notifications,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from bastion.core.clock import Clock

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_TIMEOUT",
    "KEY_SLOTS",
    "RedisStore",
    "RedisSyncStore",
    "hash_tag",
    "key_slot",
    "ttl_to_milliseconds",
]

_T = TypeVar("_T")

DEFAULT_TIMEOUT: Final = 2.0
"""Seconds to wait for a connection or a reply before raising StoreUnavailable."""

_MAX_PX: Final = 10**15
"""TTLs beyond about 31,700 years are clamped: Redis rejects expiry times that overflow."""

# KEYS[1]: the prefixed key. ARGV[1]: new value. ARGV[2]: TTL in ms, "0" for none.
# ARGV[3]: the expected value; absent means "create only if the key is absent" (SET NX).
# The TTL is passed on as the original string: Lua would print a large number as 1.2e+15.
_CAS_SCRIPT: Final = """\
local key, value, px = KEYS[1], ARGV[1], ARGV[2]
if #ARGV == 2 then
  local created
  if px == '0' then
    created = redis.call('SET', key, value, 'NX')
  else
    created = redis.call('SET', key, value, 'NX', 'PX', px)
  end
  if created then return 1 end
  return 0
end
if redis.call('GET', key) ~= ARGV[3] then return 0 end
if px == '0' then
  redis.call('SET', key, value)
else
  redis.call('SET', key, value, 'PX', px)
end
return 1
"""

# The script's SHA1 is its cache name on the server (not a security use of SHA1).
_CAS_SHA: Final = hashlib.sha1(_CAS_SCRIPT.encode("utf-8"), usedforsecurity=False).hexdigest()
_CAS_SHA_BYTES: Final = _CAS_SHA.encode("ascii")
_CAS_SCRIPT_BYTES: Final = _CAS_SCRIPT.encode("utf-8")

_UNAVAILABLE: Final = (
    redis_errors.ConnectionError,  # includes BusyLoadingError, AuthenticationError
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,  # talking to a replica during a failover
    redis_errors.ClusterDownError,  # includes MasterDownError
    redis_errors.TryAgainError,
    OSError,  # includes the builtin TimeoutError raised by asyncio timeouts
)


def ttl_to_milliseconds(ttl: float | None) -> int:
    """Validate ``ttl`` (seconds) and convert it to whole milliseconds for ``PX``; 0 = none.

    Rounds up, so a key never expires before its TTL, and never below 1 ms (``PX 0`` is an
    error in Redis). Rounding to the microsecond first keeps ``1.1`` at 1100, not 1101.
    """
    checked = check_ttl(ttl)
    if checked is None:
        return 0
    return min(_MAX_PX, max(1, math.ceil(round(checked * 1000.0, 3))))


def _check_prefix(prefix: str) -> bytes:
    if not isinstance(prefix, str):
        raise ConfigurationError(
            f"Redis store prefix must be str, got {type(prefix).__name__}", setting="prefix"
        )
    if "{" in prefix or "}" in prefix:
        raise ConfigurationError(
            f"Redis store prefix {prefix!r} contains a brace; it would capture the Redis "
            "Cluster hash tag of every key. Use a prefix without '{' and '}' (e.g. 'app:')",
            setting="prefix",
        )
    try:
        return prefix.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigurationError(
            "Redis store prefix is not valid text (it contains a lone surrogate)",
            setting="prefix",
        ) from None


def _check_timeout(name: str, value: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(
            f"{name} must be a finite number of seconds greater than 0, got {value!r}; "
            f"the default is {DEFAULT_TIMEOUT}",
            setting=name,
        )
    return float(value)


def _describe_client(client: Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return f"unix:{kwargs['path']} db {kwargs.get('db', 0)}"
    host = str(kwargs.get("host", "localhost"))
    if ":" in host:
        host = f"[{host}]"  # IPv6
    return f"{host}:{kwargs.get('port', 6379)} db {kwargs.get('db', 0)}"


def _endpoint_of(client: Redis, transport: str) -> _Endpoint | None:
    """The RESP transport's endpoint, or ``None`` for ``transport="redis-py"``."""
    if transport == "redis-py":
        return None
    if transport not in {"resp", "auto"}:
        raise ConfigurationError(
            f"Redis store transport must be 'auto', 'resp' or 'redis-py', got {transport!r}",
            setting="transport",
        )
    pool = client.connection_pool
    if transport == "auto" and (
        hiredis is None
        or pool.connection_class.__name__ not in {"Connection", "UnixDomainSocketConnection"}
        or pool.connection_kwargs.get("protocol") not in {None, 2, "2"}
    ):
        return None
    if hiredis is None:
        raise ConfigurationError(
            "transport='resp' needs the hiredis package: pip install hiredis", setting="transport"
        )
    kwargs = pool.connection_kwargs
    if pool.connection_class.__name__ not in {"Connection", "UnixDomainSocketConnection"}:
        raise ConfigurationError(
            "transport='resp' supports redis:// and unix:// servers; use the default "
            "transport='redis-py' for TLS (rediss://)",
            setting="transport",
        )
    if kwargs.get("protocol") not in {None, 2, "2"}:
        raise ConfigurationError(
            "transport='resp' speaks RESP2; leave the protocol option unset", setting="transport"
        )
    return _Endpoint(
        host=str(kwargs.get("host", "localhost")),
        port=int(kwargs.get("port", 6379)),
        path=kwargs.get("path"),
        db=int(kwargs.get("db", 0) or 0),
        username=kwargs.get("username"),
        password=kwargs.get("password"),
        client_name=kwargs.get("client_name"),
        connect_timeout=float(kwargs.get("socket_connect_timeout") or DEFAULT_TIMEOUT),
        timeout=float(kwargs.get("socket_timeout") or DEFAULT_TIMEOUT),
    )


def _translate_resp(store: RedisStore, operation: str, exc: Exception) -> StoreError:
    if isinstance(exc, _ReplyFailure):
        if exc.code in _UNAVAILABLE_CODES or exc.code in _AUTH_CODES:
            return StoreUnavailable(
                f"Redis at {store._where} is unavailable ({operation}): {store._detail(exc)}. "
                "Check that the server is running and reachable from this host"
            )
        return StoreError(f"Redis at {store._where} refused {operation}: {store._detail(exc)}")
    if isinstance(exc, OSError | TimeoutError | EOFError):
        return StoreUnavailable(
            f"Redis at {store._where} is unavailable ({operation}): {store._detail(exc)}. "
            "Check that the server is running and reachable from this host"
        )
    return StoreError(f"Redis at {store._where} failed {operation}: {store._detail(exc)}")


class RedisStore:
    """A :class:`~bastion.stores.base.Store` on a ``redis.asyncio.Redis`` client.

    The store owns the client: :meth:`aclose` closes it and its connection pool. The client
    must return bytes (``decode_responses=False``, the default). Use :meth:`from_url` for the
    recommended timeouts and retry policy.
    """

    __slots__ = ("_client", "_closed", "_prefix", "_raw_prefix", "_resp", "_sync_view", "_where")

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        sync_client: Callable[[], redis_sync.Redis] | None = None,
        transport: str = "redis-py",
    ) -> None:
        if not isinstance(client, Redis):
            raise ConfigurationError(
                f"RedisStore needs a redis.asyncio.Redis client, got {type(client).__name__}",
                setting="client",
            )
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ConfigurationError(
                "RedisStore needs a client with decode_responses=False: store values are bytes",
                setting="decode_responses",
            )
        self._raw_prefix = _check_prefix(prefix)
        self._prefix = prefix
        self._client = client
        self._where = _describe_client(client)
        self._closed = False
        endpoint = _endpoint_of(client, transport)
        self._resp = None if endpoint is None else _AsyncResp(endpoint)
        self._sync_view = RedisSyncStore(
            self, sync_client, None if endpoint is None else _SyncResp(endpoint)
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        clock: Clock | None = None,
        prefix: str | None = None,
        socket_timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_TIMEOUT,
        transport: str | None = None,
        **options: Any,
    ) -> RedisStore:
        """Open a store from ``redis://[user:password@]host:port/db?prefix=app:``.

        ``rediss://`` uses TLS and ``unix:///path/to/socket`` a Unix socket. ``prefix`` may be
        given as a keyword or as a query parameter, not both (default :data:`DEFAULT_PREFIX`).
        ``socket_timeout`` bounds each reply and ``connect_timeout`` each connection attempt,
        so an outage raises :class:`StoreUnavailable` instead of hanging. Connections come from
        a bounded pool (``max_connections``, 50 by default); a caller waits at most
        ``socket_timeout`` for a free one. Other ``options`` go to the connection pool
        (``redis.asyncio.BlockingConnectionPool.from_url``: ``max_connections``,
        ``client_name``, ``ssl_ca_certs``, ...); an unknown option raises
        :class:`ConfigurationError` here. Automatic retries are off unless ``retry`` is given
        (see the module docstring).

        ``clock`` is accepted so every store opens the same way; it is not used, because
        TTLs are counted by the Redis server's clock.

        ``transport`` (keyword or ``?transport=`` in the URL) picks how the four store
        operations reach the server: ``"resp"``, bastion's lean RESP2 client (one pipelined
        connection per event loop, one socket per thread on the sync side, hiredis parser);
        ``"redis-py"``, redis-py's client and pool; ``"auto"`` (the default), ``"resp"`` for
        ``redis://`` and ``unix://`` when hiredis is installed, else ``"redis-py"``. TLS
        (``rediss://``) always uses redis-py. Either way the redis-py client stays available to
        the store's scripts and keeps the same timeouts, errors and reconnection behaviour.
        """
        del clock  # TTLs run on the server's clock; see the docstring.
        if not isinstance(url, str):
            raise ConfigurationError(
                f"Redis store URL must be str, got {type(url).__name__}", setting="url"
            )
        clean_url, url_prefix = pop_query(url, "prefix")
        clean_url, url_transport = pop_query(clean_url, "transport")
        if url_transport is not None and transport is not None:
            raise ConfigurationError(
                "Redis store transport is given both in the URL and as transport=; give it once",
                setting="transport",
            )
        chosen_transport = url_transport or transport or "auto"
        if url_prefix is not None and prefix is not None:
            raise ConfigurationError(
                "Redis store prefix is given both in the URL and as prefix=; give it once",
                setting="prefix",
            )
        chosen_prefix = url_prefix if url_prefix is not None else prefix
        if "socket_connect_timeout" in options:
            raise ConfigurationError(
                "use connect_timeout=, not socket_connect_timeout=, for the Redis store",
                setting="socket_connect_timeout",
            )
        if options.get("decode_responses"):
            raise ConfigurationError(
                "the Redis store needs decode_responses=False: store values are bytes",
                setting="decode_responses",
            )
        options.setdefault("retry", Retry(NoBackoff(), 0))
        options.update(without_maintenance_notifications(options))
        timeout = _check_timeout("socket_timeout", socket_timeout)
        try:
            pool = BlockingConnectionPool.from_url(
                clean_url,
                timeout=timeout,
                socket_timeout=timeout,
                socket_connect_timeout=_check_timeout("connect_timeout", connect_timeout),
                **options,
            )
            # Build (not connect) one connection now, so a misspelt option fails here rather
            # than on the first request.
            pool.make_connection()  # type: ignore[no-untyped-call]
        except (ValueError, TypeError) as exc:
            # redis-py's messages name the query parameter at fault, never the password.
            raise ConfigurationError(f"Redis store URL or option rejected: {exc}") from exc
        client = Redis.from_pool(pool)
        sync_options = dict(options)
        sync_options["retry"] = SyncRetry(NoBackoff(), 0)

        def sync_client() -> redis_sync.Redis:
            sync_pool = redis_sync.BlockingConnectionPool.from_url(
                clean_url,
                timeout=timeout,
                socket_timeout=timeout,
                socket_connect_timeout=connect_timeout,
                **sync_options,
            )
            return redis_sync.Redis.from_pool(sync_pool)

        return cls(
            client,
            prefix=DEFAULT_PREFIX if chosen_prefix is None else chosen_prefix,
            sync_client=sync_client,
            transport=chosen_transport,
        )

    @property
    def sync(self) -> RedisSyncStore:
        """The synchronous side: a blocking ``redis.Redis`` client on the same server."""
        return self._sync_view

    @property
    def prefix(self) -> str:
        """The text prepended to every key."""
        return self._prefix

    def full_key(self, key: str) -> bytes:
        """The key as sent to Redis: prefix and key, UTF-8. Raises StoreError on a bad key."""
        return self._raw_prefix + check_key(key)

    def _open_key(self, operation: str, key: str) -> bytes:
        if self._closed:
            raise StoreError(f"RedisStore.{operation}() called after aclose(); open a new store")
        return self.full_key(key)

    def __repr__(self) -> str:
        return f"RedisStore(server={self._where!r}, prefix={self._prefix!r})"

    async def get(self, key: str) -> bytes | None:
        full = self._open_key("get", key)
        if self._resp is not None:
            value = await self._fast("get", _pack(b"GET", full))
        else:
            value = await self._run("get", self._client.get(full))
        if value is not None and not isinstance(value, bytes):
            raise StoreError(f"Redis returned {type(value).__name__} for GET; expected bytes")
        return value

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        full = self._open_key("set", key)
        data = check_value(value)
        px = ttl_to_milliseconds(ttl)
        if self._resp is not None:
            command = (
                _pack(b"SET", full, data, b"PX", b"%d" % px) if px else _pack(b"SET", full, data)
            )
            await self._fast("set", command)
            return
        await self._run("set", self._client.set(full, data, px=px or None))

    async def delete(self, key: str) -> bool:
        full = self._open_key("delete", key)
        if self._resp is not None:
            return bool(await self._fast("delete", _pack(b"DEL", full)))
        removed = await self._run("delete", self._client.delete(full))
        return bool(removed)

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        full = self._open_key("compare_and_set", key)
        args: list[bytes | int] = [check_value(value), ttl_to_milliseconds(ttl)]
        if expected is not None:
            args.append(check_value(expected))
        if self._resp is not None:
            result = await self._fast_cas(full, args)
        else:
            result = await self._run("compare_and_set", self._eval_cas(full, args))
        if result not in (0, 1):
            raise StoreError(f"Redis compare_and_set script returned {result!r}; expected 0 or 1")
        return bool(result == 1)

    async def _eval_cas(self, full: bytes, args: list[bytes | int]) -> Any:
        try:
            return await self._client.evalsha(_CAS_SHA, 1, full, *args)
        except redis_errors.NoScriptError:
            # The server lost its script cache. EVAL runs the script and caches it again.
            return await self._client.eval(_CAS_SCRIPT, 1, full, *args)

    async def _fast(self, operation: str, payload: bytes) -> Any:
        resp = self._resp
        if resp is None:  # pragma: no cover - callers check
            raise StoreError("the RESP transport is off")
        try:
            return await resp.call(payload)
        except Exception as exc:  # translated into the store's two error kinds
            raise _translate_resp(self, operation, exc) from exc

    async def _fast_cas(self, full: bytes, args: list[bytes | int]) -> Any:
        packed = [a if isinstance(a, bytes) else b"%d" % a for a in args]
        try:
            return await self._fast(
                "compare_and_set", _pack(b"EVALSHA", _CAS_SHA_BYTES, b"1", full, *packed)
            )
        except StoreError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, _ReplyFailure) and cause.code == "NOSCRIPT"):
                raise
        # The server lost its script cache. EVAL runs the script and caches it again.
        return await self._fast(
            "compare_and_set", _pack(b"EVAL", _CAS_SCRIPT_BYTES, b"1", full, *packed)
        )

    async def _run(self, operation: str, command: Awaitable[_T]) -> _T:
        try:
            return await command
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(
                f"Redis at {self._where} is unavailable ({operation}): {self._detail(exc)}. "
                "Check that the server is running and reachable from this host"
            ) from exc
        except redis_errors.RedisError as exc:
            raise StoreError(
                f"Redis at {self._where} refused {operation}: {self._detail(exc)}"
            ) from exc

    def _detail(self, exc: BaseException) -> str:
        text = str(exc).rstrip(". ") or type(exc).__name__
        password = self._client.connection_pool.connection_kwargs.get("password")
        if isinstance(password, str) and password:
            # Belt and braces: redis-py does not echo passwords, but never let one through.
            text = text.replace(password, "***")
        return f"{type(exc).__name__}: {text}"

    async def aclose(self) -> None:
        """Close the client and its connection pool. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._sync_view.close()
        if self._resp is not None:
            self._resp.close()
            await asyncio.sleep(0)  # let the aborted transport run connection_lost and close
        await self._client.aclose(close_connection_pool=True)


class RedisSyncStore:
    """The synchronous side of a :class:`RedisStore` (``store.sync``).

    Its blocking ``redis.Redis`` client is built from the same URL and options on first use
    (only for stores made by :meth:`RedisStore.from_url`, or given ``sync_client=``), shared by
    the threads of a process (its pool is thread-safe), and rebuilt in a forked child, which
    must never reuse the parent's sockets. Same key layout, same CAS script, same error mapping.
    Danger: every call is a network round trip; do not call it from an event loop thread.
    """

    __slots__ = ("_client", "_factory", "_lock", "_pid", "_resp", "_store")

    def __init__(
        self,
        store: RedisStore,
        factory: Callable[[], redis_sync.Redis] | None,
        resp: _SyncResp | None = None,
    ) -> None:
        self._store = store
        self._factory = factory
        self._resp = resp
        self._lock = threading.Lock()
        self._client: redis_sync.Redis | None = None
        self._pid = 0

    @property
    def local(self) -> bool:
        return False

    def _connection(self) -> redis_sync.Redis:
        pid = os.getpid()
        client = self._client
        if client is not None and self._pid == pid:
            return client
        with self._lock:
            if self._factory is None:
                raise StoreError(
                    "this RedisStore has no synchronous side: build it with "
                    "RedisStore.from_url(...) or pass sync_client= to RedisStore(...)"
                )
            if self._client is None or self._pid != pid:
                # After a fork the parent's client is dropped unclosed: closing it would
                # shut sockets the parent still uses.
                self._client = self._factory()
                self._pid = pid
            return self._client

    def _run(self, operation: str, command: Callable[[redis_sync.Redis], _T]) -> _T:
        store = self._store
        try:
            return command(self._connection())
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(
                f"Redis at {store._where} is unavailable ({operation}): "
                f"{store._detail(exc)}. Check that the server is running and reachable "
                "from this host"
            ) from exc
        except redis_errors.RedisError as exc:
            raise StoreError(
                f"Redis at {store._where} refused {operation}: {store._detail(exc)}"
            ) from exc

    def _fast(self, operation: str, payload: bytes) -> Any:
        resp = self._resp
        if resp is None:  # pragma: no cover - callers check
            raise StoreError("the RESP transport is off")
        try:
            return resp.call(payload)
        except Exception as exc:  # translated into the store's two error kinds
            raise _translate_resp(self._store, operation, exc) from exc

    def get(self, key: str) -> bytes | None:
        full = self._store._open_key("get", key)
        if self._resp is not None:
            value = self._fast("get", _pack(b"GET", full))
        else:
            value = self._run("get", lambda client: client.get(full))
        if value is not None and not isinstance(value, bytes):
            raise StoreError(f"Redis returned {type(value).__name__} for GET; expected bytes")
        return value

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        full = self._store._open_key("set", key)
        data = check_value(value)
        px = ttl_to_milliseconds(ttl)
        if self._resp is not None:
            command = (
                _pack(b"SET", full, data, b"PX", b"%d" % px) if px else _pack(b"SET", full, data)
            )
            self._fast("set", command)
            return
        self._run("set", lambda client: client.set(full, data, px=px or None))

    def delete(self, key: str) -> bool:
        full = self._store._open_key("delete", key)
        if self._resp is not None:
            return bool(self._fast("delete", _pack(b"DEL", full)))
        return bool(self._run("delete", lambda client: client.delete(full)))

    def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        full = self._store._open_key("compare_and_set", key)
        args: list[bytes | int] = [check_value(value), ttl_to_milliseconds(ttl)]
        if expected is not None:
            args.append(check_value(expected))

        def cas(client: redis_sync.Redis) -> Any:
            try:
                return client.evalsha(_CAS_SHA, 1, full, *args)
            except redis_errors.NoScriptError:
                return client.eval(_CAS_SCRIPT, 1, full, *args)

        if self._resp is not None:
            packed = [a if isinstance(a, bytes) else b"%d" % a for a in args]
            try:
                result = self._fast(
                    "compare_and_set", _pack(b"EVALSHA", _CAS_SHA_BYTES, b"1", full, *packed)
                )
            except StoreError as exc:
                cause = exc.__cause__
                if not (isinstance(cause, _ReplyFailure) and cause.code == "NOSCRIPT"):
                    raise
                result = self._fast(
                    "compare_and_set", _pack(b"EVAL", _CAS_SCRIPT_BYTES, b"1", full, *packed)
                )
        else:
            result = self._run("compare_and_set", cas)
        if result not in (0, 1):
            raise StoreError(f"Redis compare_and_set script returned {result!r}; expected 0 or 1")
        return bool(result == 1)

    def close(self) -> None:
        """Close this process's blocking client, if one was made. Safe to call again."""
        if self._resp is not None:
            self._resp.close()
        with self._lock:
            client, self._client = self._client, None
            mine = self._pid == os.getpid()
        if client is not None and mine:
            client.close()

    def __repr__(self) -> str:
        return f"RedisSyncStore({self._store!r})"


# -- the RESP transport: a lean client for the four hot commands -------------------------------

_UNAVAILABLE_CODES: Final = ("LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")
_AUTH_CODES: Final = ("NOAUTH", "WRONGPASS", "NOPERM")


def _pack(*args: bytes) -> bytes:
    """One RESP command (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n" % len(arg))
        out.append(arg)
        out.append(b"\r\n")
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """Where and how the RESP transport connects (from the redis-py pool's settings)."""

    host: str
    port: int
    path: str | None
    db: int
    username: str | None
    password: str | None
    client_name: str | None
    connect_timeout: float
    timeout: float

    def handshake(self) -> list[bytes]:
        commands = []
        if self.password is not None:
            if self.username:
                commands.append(_pack(b"AUTH", self.username.encode(), self.password.encode()))
            else:
                commands.append(_pack(b"AUTH", self.password.encode()))
        if self.db:
            commands.append(_pack(b"SELECT", str(self.db).encode()))
        if self.client_name:
            commands.append(_pack(b"CLIENT", b"SETNAME", self.client_name.encode()))
        return commands


class _ReplyFailure(Exception):
    """An error reply, as hiredis returns it (``code`` is its first word)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.code = text.split(" ", 1)[0]


def _checked(reply: Any) -> Any:
    """``reply``, or :class:`_ReplyFailure` when it is an error reply."""
    if isinstance(reply, hiredis.ReplyError):
        raise _ReplyFailure(str(reply))
    return reply


def _recv_reply(sock: socket.socket, reader: Any) -> Any:
    """Read from ``sock`` until ``reader`` holds one whole reply (blocking, with the timeout)."""
    reply = reader.gets()
    while reply is False:
        data = sock.recv(65536)
        if not data:
            raise ConnectionResetError("connection closed by the server")
        reader.feed(data)
        reply = reader.gets()
    return _checked(reply)


class _Lane(asyncio.Protocol):
    """One pipelined connection: requests are written in order, replies matched in order."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiters = self._waiters
        while waiters:
            reply = reader.gets()
            if reply is False:
                return
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(reply)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("connection closed by the server")
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionResetError(str(self.lost)))

    @property
    def usable(self) -> bool:
        transport = self._transport
        return self.lost is None and transport is not None and not transport.is_closing()

    def request(self, loop: asyncio.AbstractEventLoop, payload: bytes) -> asyncio.Future[Any]:
        transport = self._transport
        if self.lost is not None or transport is None or transport.is_closing():
            raise ConnectionResetError("connection is closed")
        waiter = loop.create_future()
        self._waiters.append(waiter)
        transport.write(payload)
        return waiter

    def abort(self) -> None:
        transport = self._transport
        if transport is not None:
            try:
                transport.abort()
            except RuntimeError:  # its event loop is closed: close the socket itself
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.close()


def _expire(waiter: asyncio.Future[Any], lane: _Lane, timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError(f"no reply within {timeout:g} s"))
        lane.abort()  # replies are matched by order: a late one would desynchronise the lane


class _AsyncResp:
    """The async side of the RESP transport: one pipelined connection per event loop."""

    def __init__(self, endpoint: _Endpoint) -> None:
        self._endpoint = endpoint
        self._lane: _Lane | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Future[_Lane] | None = None

    async def call(self, payload: bytes) -> Any:
        loop = asyncio.get_running_loop()
        lane = self._lane
        if lane is None or self._loop is not loop or not lane.usable:
            lane = await self._connect(loop)
        timeout = self._endpoint.timeout
        waiter = lane.request(loop, payload)
        handle = loop.call_later(timeout, _expire, waiter, lane, timeout)
        try:
            reply = await waiter
        finally:
            handle.cancel()
        return _checked(reply)

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Lane:
        pending = self._connecting
        if pending is not None and self._loop is loop and not pending.done():
            return await asyncio.shield(pending)
        old = self._lane
        if old is not None:
            old.abort()
        self._lane = None
        self._loop = loop
        pending = loop.create_future()
        self._connecting = pending
        try:
            lane = await self._open(loop)
        except asyncio.CancelledError:
            pending.cancel()
            raise
        except BaseException as exc:
            pending.set_exception(exc)
            pending.exception()  # retrieved: waiters re-raise it, nobody else must log it
            raise
        finally:
            self._connecting = None
        pending.set_result(lane)
        self._lane = lane
        return lane

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Lane:
        endpoint = self._endpoint
        async with asyncio.timeout(endpoint.connect_timeout):
            if endpoint.path is not None:
                _transport, lane = await loop.create_unix_connection(_Lane, endpoint.path)
            else:
                _transport, lane = await loop.create_connection(_Lane, endpoint.host, endpoint.port)
        try:
            for command in endpoint.handshake():
                async with asyncio.timeout(endpoint.timeout):
                    _checked(await lane.request(loop, command))
        except BaseException:
            lane.abort()
            raise
        return lane

    def close(self) -> None:
        lane, self._lane = self._lane, None
        if lane is not None:
            lane.abort()


class _SyncResp:
    """The blocking side of the RESP transport: one socket per thread, rebuilt after fork."""

    def __init__(self, endpoint: _Endpoint) -> None:
        self._endpoint = endpoint
        self._local = threading.local()
        self._all: list[socket.socket] = []
        self._lock = threading.Lock()

    def call(self, payload: bytes) -> Any:
        local = self._local
        sock: socket.socket | None = getattr(local, "sock", None)
        pid = os.getpid()
        if sock is None or local.pid != pid:
            sock = self._open()
            local.sock, local.pid, local.reader = sock, pid, hiredis.Reader()
        reader = local.reader
        try:
            sock.sendall(payload)
            return _recv_reply(sock, reader)
        except _ReplyFailure:
            raise  # a whole reply was read: the connection is still in step
        except BaseException:
            self._drop(local, sock)
            raise

    def _open(self) -> socket.socket:
        endpoint = self._endpoint
        if endpoint.path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(endpoint.connect_timeout)
            try:
                sock.connect(endpoint.path)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection(
                (endpoint.host, endpoint.port), timeout=endpoint.connect_timeout
            )
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(endpoint.timeout)
        try:
            reader = hiredis.Reader()
            for command in endpoint.handshake():
                sock.sendall(command)
                _recv_reply(sock, reader)
        except BaseException:
            sock.close()
            raise
        with self._lock:
            self._all.append(sock)
        return sock

    def _drop(self, local: threading.local, sock: socket.socket) -> None:
        local.sock = None
        if local.pid == os.getpid():
            sock.close()
        with self._lock:
            if sock in self._all:
                self._all.remove(sock)

    def close(self) -> None:
        """Close this process's sockets (every thread's); threads reconnect on next use."""
        with self._lock:
            socks, self._all = self._all, []
        pid = os.getpid()
        if getattr(self._local, "pid", pid) == pid:
            for sock in socks:
                sock.close()
        self._local = threading.local()
