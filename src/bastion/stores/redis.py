"""The Redis store: several hosts share sessions, tokens and rate limits through one server.

Layout and guarantees:

* Every key is sent as the prefix's namespace, ``:``, then the key's UTF-8 bytes (see
  :func:`~bastion.stores.keyspace.namespace_prefix`: ``"app:"`` gives ``app:<key>``, and no
  two prefixes share a key), so keys with braces, NUL, newlines or non-ASCII text work
  unchanged. Prefixes must not contain ``{`` or ``}``: keys that must
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
import contextlib
import hashlib
import math
import os
import select
import socket
import threading
import time
import weakref
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

from bastion.errors import ConfigurationError, StoreCorrupt, StoreError
from bastion.stores.base import check_key, check_ttl, check_value
from bastion.stores.faults import redis_py_fault, redis_reply_fault, socket_fault
from bastion.stores.keyspace import KEY_SLOTS, hash_tag, key_slot, namespace_prefix
from bastion.stores.redis_url import (
    DEFAULT_PREFIX,
    LoopClients,
    pop_query,
    without_maintenance_notifications,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from bastion.core.clock import Clock

__all__ = [
    "DEFAULT_MAX_REPLY_BYTES",
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

DEFAULT_MAX_REPLY_BYTES: Final = 64 * 1024 * 1024
"""Largest reply the RESP transport reads (64 MiB): a broken or hostile server cannot make the
process buffer more. Store values are at most 8 MiB, so a legitimate reply stays far below."""


def ttl_to_milliseconds(ttl: float | None) -> int:
    """Validate ``ttl`` (seconds) and convert it to whole milliseconds for ``PX``; 0 = none.

    Rounds up, so a key never expires before its TTL, and never below 1 ms (``PX 0`` is an
    error in Redis). Rounding to the microsecond first keeps ``1.1`` at 1100, not 1101.
    """
    checked = check_ttl(ttl)
    if checked is None:
        return 0
    return min(_MAX_PX, max(1, math.ceil(round(checked * 1000.0, 3))))


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


def resp_endpoint(pool: Any, transport: str, max_reply_bytes: int) -> _Endpoint | None:
    """The RESP transport's endpoint for a redis-py (sync or async) connection pool's
    settings, or ``None`` for ``transport="redis-py"`` (and, with ``"auto"``, for TLS or
    without hiredis). Shared by both Redis back ends."""
    if transport == "redis-py":
        return None
    if transport not in {"resp", "auto"}:
        raise ConfigurationError(
            f"Redis store transport must be 'auto', 'resp' or 'redis-py', got {transport!r}",
            setting="transport",
        )
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
        max_connections=int(getattr(pool, "max_connections", 50) or 50),
        max_reply_bytes=max_reply_bytes,
    )


async def _close_client(client: Redis) -> None:
    await client.aclose(close_connection_pool=True)


def _translate_resp(store: RedisStore, operation: str, exc: Exception) -> StoreError:
    return resp_fault(exc, f"Redis at {store._where}", operation, store._detail(exc))


def resp_fault(exc: BaseException, where: str, operation: str, detail: str) -> StoreError:
    """The typed error for what the RESP transport raised (see :mod:`bastion.stores.faults`)."""
    if isinstance(exc, _ReplyFailure):
        return redis_reply_fault(exc.code, where, operation, detail)
    if isinstance(exc, _ReplyTooLarge | hiredis.ProtocolError):
        return StoreCorrupt(
            f"{where} sent a reply bastion cannot accept ({operation}): {detail}; raise "
            "max_reply_bytes if the value is legitimately that large"
        )
    return socket_fault(exc, where, operation, detail) or StoreError(
        f"{where} failed {operation}: {detail}"
    )


class RedisStore:
    """A :class:`~bastion.stores.base.Store` on a ``redis.asyncio.Redis`` client.

    The store owns the client: :meth:`aclose` closes it and its connection pool. The client
    must return bytes (``decode_responses=False``, the default). Use :meth:`from_url` for the
    recommended timeouts and retry policy.
    """

    __slots__ = (
        "_client",
        "_clients",
        "_closed",
        "_handed_out",
        "_prefix",
        "_raw_prefix",
        "_resp",
        "_sync_view",
        "_where",
    )

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        sync_client: Callable[[], redis_sync.Redis] | None = None,
        transport: str = "redis-py",
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
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
        self._raw_prefix = namespace_prefix(prefix)
        self._prefix = prefix
        self._client = client  # the template: the first event loop's client
        self._handed_out = False
        self._clients: LoopClients[Redis] = LoopClients(self._loop_client, _close_client)
        self._where = _describe_client(client)
        self._closed = False
        if (
            isinstance(max_reply_bytes, bool)
            or not isinstance(max_reply_bytes, int)
            or max_reply_bytes < 1024
        ):
            raise ConfigurationError(
                f"max_reply_bytes must be a whole number of bytes >= 1024, got "
                f"{max_reply_bytes!r}; the default is {DEFAULT_MAX_REPLY_BYTES} (64 MiB)",
                setting="max_reply_bytes",
            )
        endpoint = resp_endpoint(client.connection_pool, transport, max_reply_bytes)
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
        so an outage raises :class:`StoreUnavailable` instead of hanging; on the RESP
        transport ``socket_timeout`` is a deadline for the whole command (the wait for a free
        connection, the send and the whole reply), however slowly the server trickles it.
        Connections come from a bounded pool (``max_connections``, 50 by default, per event
        loop on the async side, shared by all threads on the sync side); a caller waits at most
        ``socket_timeout`` for a free one. ``max_reply_bytes`` (also ``?max_reply_bytes=``;
        default :data:`DEFAULT_MAX_REPLY_BYTES`, 64 MiB) caps a reply the RESP transport will
        read: a larger one raises :class:`~bastion.errors.StoreCorrupt` and the connection is
        closed. Other ``options`` go to the connection pool
        (``redis.asyncio.BlockingConnectionPool.from_url``: ``max_connections``,
        ``client_name``, ``ssl_ca_certs``, ...); an unknown option raises
        :class:`ConfigurationError` here. Automatic retries are off unless ``retry`` is given
        (see the module docstring).

        ``clock`` is accepted so every store opens the same way; it is not used, because
        TTLs are counted by the Redis server's clock.

        ``transport`` (keyword or ``?transport=`` in the URL) picks how the four store
        operations reach the server: ``"resp"``, bastion's lean RESP2 client (hiredis parser,
        bounded pools as above);
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
        clean_url, url_max_reply = pop_query(clean_url, "max_reply_bytes")
        max_reply_bytes = options.pop("max_reply_bytes", DEFAULT_MAX_REPLY_BYTES)
        if url_max_reply is not None:
            if "max_reply_bytes" in options or max_reply_bytes != DEFAULT_MAX_REPLY_BYTES:
                raise ConfigurationError(
                    "max_reply_bytes is given both in the URL and as a keyword; give it once",
                    setting="max_reply_bytes",
                )
            try:
                max_reply_bytes = int(url_max_reply, 10)
            except ValueError:
                raise ConfigurationError(
                    f"max_reply_bytes={url_max_reply!r} in the Redis URL is not a whole number",
                    setting="max_reply_bytes",
                ) from None
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
            max_reply_bytes=max_reply_bytes,
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
        """The key as sent to Redis: the prefix's namespace (:func:`namespace_prefix`) and the
        key, UTF-8. Raises StoreError on a bad key."""
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
            value = await self._run("get", self._clients.get().get(full))
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
        await self._run("set", self._clients.get().set(full, data, px=px or None))

    async def delete(self, key: str) -> bool:
        full = self._open_key("delete", key)
        if self._resp is not None:
            return bool(await self._fast("delete", _pack(b"DEL", full)))
        removed = await self._run("delete", self._clients.get().delete(full))
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
        client = self._clients.get()
        try:
            return await client.evalsha(_CAS_SHA, 1, full, *args)
        except redis_errors.NoScriptError:
            # The server lost its script cache. EVAL runs the script and caches it again.
            return await client.eval(_CAS_SCRIPT, 1, full, *args)

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
        except (redis_errors.RedisError, OSError) as exc:
            raise redis_py_fault(
                exc, f"Redis at {self._where}", operation, self._detail(exc)
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
        await self._clients.aclose()
        if not self._handed_out:
            await self._client.aclose(close_connection_pool=True)

    def _loop_client(self) -> Redis:
        """The given client for the first event loop; a client on a copy of its pool (same
        settings, connections of its own) for every other loop (see ``LoopClients``)."""
        if not self._handed_out:
            self._handed_out = True
            return self._client
        pool = self._client.connection_pool
        settings: dict[str, Any] = {
            "connection_class": pool.connection_class,
            "max_connections": pool.max_connections,
            **pool.connection_kwargs,
        }
        if isinstance(pool, BlockingConnectionPool):
            settings["timeout"] = pool.timeout
        return Redis.from_pool(type(pool)(**settings))


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
        except (redis_errors.RedisError, OSError) as exc:
            raise redis_py_fault(
                exc, f"Redis at {store._where}", operation, store._detail(exc)
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
    max_connections: int
    max_reply_bytes: int

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


class _ReplyTooLarge(Exception):
    """A reply grew past ``max_reply_bytes`` before it was complete."""


def _checked(reply: Any) -> Any:
    """``reply``, or :class:`_ReplyFailure` when it is an error reply."""
    if isinstance(reply, hiredis.ReplyError):
        raise _ReplyFailure(str(reply))
    return reply


class _Conn:
    """One connection: a socket and its reply parser. Used by one caller at a time.

    A connection is in step while every reply to what was sent on it has been read whole.
    Any failure in the middle of a command (timeout, cancellation, a reset, an oversized
    reply) leaves it out of step, and the pool closes it instead of reusing it.
    """

    __slots__ = ("limit", "pid", "reader", "sock")

    def __init__(self, sock: socket.socket, limit: int) -> None:
        self.sock = sock
        self.reader = hiredis.Reader()
        self.pid = os.getpid()
        self.limit = limit

    def fresh(self) -> bool:
        """Whether the idle connection is still usable: the server has not closed it and sent
        nothing unasked (an idle connection with anything to read is one or the other). One
        ``poll`` with no wait, so a server restart costs no failed call."""
        if self.pid != os.getpid():
            return False
        try:
            poller = select.poll()
            poller.register(self.sock.fileno(), select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):  # closed
            return False

    def feed(self, data: bytes, received: int) -> int:
        if not data:
            raise ConnectionResetError("connection closed by the server")
        received += len(data)
        if received > self.limit:
            raise _ReplyTooLarge(
                f"reply exceeds max_reply_bytes={self.limit} bytes; the connection was closed"
            )
        self.reader.feed(data)
        return received

    def call(self, payload: bytes, deadline: float, timeout: float) -> Any:
        """Send ``payload`` and read its whole reply by ``deadline`` (``time.monotonic()``);
        ``timeout`` is the configured bound, for the message."""
        sock = self.sock
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no whole reply within {timeout:g} s")
        # The socket keeps ``timeout`` between calls; it is lowered only when less is left,
        # so the common call (a whole reply in one read) changes no socket setting.
        shortened = remaining < timeout
        if shortened:
            sock.settimeout(remaining)
        sock.sendall(payload)  # one total timeout for the whole send (Python >= 3.5)
        reader = self.reader
        received = self.feed(sock.recv(65536), 0)
        reply = reader.gets()
        while reply is False:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no whole reply within {timeout:g} s")
            sock.settimeout(remaining)
            shortened = True
            received = self.feed(sock.recv(65536), received)
            reply = reader.gets()
        if shortened:
            sock.settimeout(timeout)
        return reply

    async def acall(self, loop: asyncio.AbstractEventLoop, payload: bytes) -> Any:
        """The same on a non-blocking socket; the caller bounds it with ``asyncio.timeout``."""
        sock = self.sock
        await loop.sock_sendall(sock, payload)
        reader = self.reader
        received = 0
        reply = reader.gets()
        while reply is False:
            received = self.feed(await loop.sock_recv(sock, 65536), received)
            reply = reader.gets()
        return reply

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _connect_sync(endpoint: _Endpoint) -> _Conn:
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
    conn = _Conn(sock, endpoint.max_reply_bytes)
    try:
        for command in endpoint.handshake():
            deadline = time.monotonic() + endpoint.connect_timeout
            _checked(conn.call(command, deadline, endpoint.connect_timeout))
        sock.settimeout(endpoint.timeout)  # kept between calls (see _Conn.call)
    except BaseException:
        conn.close()
        raise
    return conn


async def _connect_async(loop: asyncio.AbstractEventLoop, endpoint: _Endpoint) -> _Conn:
    if endpoint.path is not None:
        targets: list[tuple[int, Any]] = [(socket.AF_UNIX, endpoint.path)]
    else:
        try:  # an IP address needs no resolver (and no executor thread)
            infos = socket.getaddrinfo(
                endpoint.host, endpoint.port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
            )
        except socket.gaierror:
            infos = await loop.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
        targets = [(family, address) for family, _, _, _, address in infos]
    error: OSError = ConnectionRefusedError(f"no address for {endpoint.host}")
    for family, address in targets:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)  # noqa: FBT003 (the socket API)
            if family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        conn = _Conn(sock, endpoint.max_reply_bytes)
        try:
            for command in endpoint.handshake():
                _checked(await conn.acall(loop, command))
        except BaseException:
            conn.close()
            raise
        return conn
    raise error


class _SyncResp:
    """The blocking side of the RESP transport: one bounded pool shared by every thread.

    A command checks a connection out, runs, and returns it, so threads that come and go (a
    threaded WSGI server, anyio's worker threads) reuse the same few sockets instead of
    leaving one behind each. At most ``max_connections`` exist; a caller that finds all in
    use waits, within the command's timeout, then gets :class:`StoreTimeout`. A connection
    that failed mid-command, or that the server closed while idle, is closed and replaced. In
    a forked child the parent's connections are closed (the child's copies only) and new ones
    are made.
    """

    def __init__(self, endpoint: _Endpoint) -> None:
        self._endpoint = endpoint
        self._cond = threading.Condition(threading.Lock())
        self._idle: list[_Conn] = []
        self._count = 0
        self._pid = os.getpid()
        self._generation = 0

    def call(self, payload: bytes) -> Any:
        endpoint = self._endpoint
        began = time.monotonic()
        conn, generation, connecting = self._checkout(began + endpoint.timeout)
        # One deadline for the wait and the command; opening a connection (bounded by
        # connect_timeout) does not eat into it.
        try:
            reply = conn.call(payload, began + connecting + endpoint.timeout, endpoint.timeout)
        except BaseException:
            self._checkin(conn, generation, broken=True)
            raise
        self._checkin(conn, generation, broken=False)
        return _checked(reply)

    def _checkout(self, deadline: float) -> tuple[_Conn, int, float]:
        """A connection, its pool generation, and the seconds spent opening it (0 if idle)."""
        endpoint = self._endpoint
        with self._cond:
            if self._pid != os.getpid():
                stale, self._idle, self._count = self._idle, [], 0
                self._pid = os.getpid()
                self._generation += 1
                for conn in stale:
                    conn.close()  # the child's copy of the descriptor; the parent keeps its own
            while True:
                while self._idle:
                    conn = self._idle.pop()
                    if conn.fresh():
                        return conn, self._generation, 0.0
                    conn.close()
                    self._count -= 1
                if self._count < endpoint.max_connections:
                    self._count += 1
                    generation = self._generation
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"all {endpoint.max_connections} connections stayed in use for "
                        f"{endpoint.timeout:g} s (raise max_connections?)"
                    )
                self._cond.wait(remaining)
        began = time.monotonic()
        try:
            return _connect_sync(endpoint), generation, time.monotonic() - began
        except BaseException:
            with self._cond:
                if generation == self._generation:
                    self._count -= 1
                self._cond.notify()
            raise

    def _checkin(self, conn: _Conn, generation: int, *, broken: bool) -> None:
        with self._cond:
            current = generation == self._generation and conn.pid == os.getpid()
            if current and not broken:
                self._idle.append(conn)
            else:
                if current:
                    self._count -= 1
                conn.close()
            self._cond.notify()

    @property
    def open_connections(self) -> int:
        """Connections this process holds (idle and in use), for tests and diagnostics."""
        with self._cond:
            return self._count

    def close(self) -> None:
        """Close the idle connections; those in use close when returned. Usable again after."""
        with self._cond:
            idle, self._idle = self._idle, []
            self._count = 0
            self._generation += 1
            self._cond.notify_all()
        for conn in idle:
            conn.close()


class _LoopPool:
    """The connections of one event loop. Touched only by tasks of that loop."""

    __slots__ = ("closed", "count", "idle", "waiters")

    def __init__(self) -> None:
        self.idle: list[_Conn] = []
        self.count = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.closed = False

    def wake(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        """Close every idle connection; in-use ones close when returned. Any thread may call
        it once the loop has closed; the owning loop may call it at any time."""
        self.closed = True
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


class _AsyncResp:
    """The async side of the RESP transport: a bounded pool of connections per event loop.

    A socket registered with one event loop must not be used by another, so each running loop
    gets its own pool, found through a :class:`weakref.WeakKeyDictionary` keyed by the loop.
    ``asyncio.run()`` per request (Flask async views, asgiref, pytest-asyncio) therefore gets
    working connections every time, and two loops in two threads never share a socket. A
    pool's connections are closed when its loop is collected (a :func:`weakref.finalize`
    callback), and sooner, when another loop opens a pool and finds the old loop closed.
    Each caller opens its own connection when none is idle, so cancelling one caller never
    fails another. The store's timeout bounds each command as a whole (the wait for a free
    connection, the send and the whole reply); ``connect_timeout`` bounds opening one.
    """

    def __init__(self, endpoint: _Endpoint) -> None:
        self._endpoint = endpoint
        self._lock = threading.Lock()
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPool] = (
            weakref.WeakKeyDictionary()
        )

    def _pool(self, loop: asyncio.AbstractEventLoop) -> _LoopPool:
        pool = self._pools.get(loop)
        if pool is not None:
            return pool
        with self._lock:
            for old_loop, old_pool in list(self._pools.items()):
                if old_loop.is_closed():
                    old_pool.close()
                    del self._pools[old_loop]
            pool = self._pools.get(loop)
            if pool is None:
                pool = self._pools[loop] = _LoopPool()
                weakref.finalize(loop, pool.close)
        return pool

    async def call(self, payload: bytes) -> Any:
        loop = asyncio.get_running_loop()
        pool = self._pool(loop)
        endpoint = self._endpoint
        # One deadline for the wait and the command; opening a connection (bounded by
        # connect_timeout) does not eat into it.
        deadline = loop.time() + endpoint.timeout
        async with asyncio.timeout_at(deadline):
            conn = await self._checkout(pool)
        if conn is None:  # a slot is reserved for a new connection
            began = loop.time()
            try:
                async with asyncio.timeout(endpoint.connect_timeout):
                    conn = await _connect_async(loop, endpoint)
            except BaseException:
                pool.count -= 1
                pool.wake()
                raise
            deadline += loop.time() - began
        try:
            async with asyncio.timeout_at(deadline):
                reply = await conn.acall(loop, payload)
        except BaseException:
            self._checkin(pool, conn, broken=True)
            raise
        self._checkin(pool, conn, broken=False)
        return _checked(reply)

    async def _checkout(self, pool: _LoopPool) -> _Conn | None:
        while True:
            if pool.closed:
                raise ConnectionResetError("the store's connections were closed")
            while pool.idle:
                conn = pool.idle.pop()
                if conn.fresh():
                    return conn
                conn.close()
                pool.count -= 1
            if pool.count < self._endpoint.max_connections:
                pool.count += 1
                return None
            waiter = asyncio.get_running_loop().create_future()
            pool.waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    pool.wake()  # pass the wake-up on: this caller no longer needs it
                raise

    def _checkin(self, pool: _LoopPool, conn: _Conn, *, broken: bool) -> None:
        if broken or pool.closed or conn.pid != os.getpid():
            conn.close()
            pool.count -= 1
        else:
            pool.idle.append(conn)
        pool.wake()

    def close(self) -> None:
        """Close every loop's idle connections; connections in use close when returned."""
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            pool.close()
