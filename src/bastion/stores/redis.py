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

Danger: :meth:`RedisStore.from_url` turns redis-py's automatic retries off. A retried
``compare_and_set`` whose first reply was lost would report ``False`` for a write that
happened; the caller should see :class:`~bastion.errors.StoreUnavailable` instead and decide.
Pass ``retry=`` explicitly only if every caller tolerates that. The store takes a
``redis.asyncio.Redis`` client; a ``RedisCluster`` client is not supported yet (the key layout
is ready for it).
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from bastion.errors import ConfigurationError, StoreError, StoreUnavailable
from bastion.stores.base import check_key, check_ttl, check_value
from bastion.stores.keyspace import KEY_SLOTS, hash_tag, key_slot

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from bastion.core.clock import Clock

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_TIMEOUT",
    "KEY_SLOTS",
    "RedisStore",
    "hash_tag",
    "key_slot",
    "ttl_to_milliseconds",
]

_T = TypeVar("_T")

DEFAULT_PREFIX: Final = "bastion:"
"""Prepended to every key, so bastion's keys never collide with an application's."""

DEFAULT_TIMEOUT: Final = 2.0
"""Seconds to wait for a connection or a reply before raising StoreUnavailable."""

_MAX_PX: Final = 10**15
"""TTLs beyond about 31,700 years are clamped: Redis rejects expiry times that overflow."""

_SCHEMES: Final = frozenset({"redis", "rediss", "unix"})

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


def _split_prefix(url: str) -> tuple[str, str | None]:
    """Remove the ``prefix`` query parameter (redis-py would pass it on to the socket)."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ConfigurationError(
            f"Redis store URL scheme must be redis://, rediss:// or unix://, "
            f"got {parts.scheme + '://' if parts.scheme else 'none'}",
            setting="url",
        )
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    prefixes = [value for name, value in pairs if name == "prefix"]
    if len(prefixes) > 1:
        raise ConfigurationError(
            "Redis store URL gives 'prefix' more than once; give it once", setting="url"
        )
    rest = urlencode([(name, value) for name, value in pairs if name != "prefix"])
    return urlunsplit(parts._replace(query=rest)), (prefixes[0] if prefixes else None)


def _without_maintenance_notifications(options: dict[str, Any]) -> dict[str, Any]:
    """Turn redis-py's maintenance notifications off unless the caller configured them.

    redis-py >= 7 enables them by default over RESP3. While enabled, its pool no longer
    checks an idle connection before reuse (a server restart then fails the next call), and
    during a maintenance event it relaxes timeouts to 10 s, past our bounded failure time.
    They only matter for Redis Enterprise / Redis Cloud endpoints.
    """
    if "maint_notifications_config" in options:
        return {}
    try:
        from redis.maint_notifications import (  # noqa: PLC0415 (absent before redis-py 7)
            MaintNotificationsConfig,
        )
    except ImportError:
        return {}
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}


class RedisStore:
    """A :class:`~bastion.stores.base.Store` on a ``redis.asyncio.Redis`` client.

    The store owns the client: :meth:`aclose` closes it and its connection pool. The client
    must return bytes (``decode_responses=False``, the default). Use :meth:`from_url` for the
    recommended timeouts and retry policy.
    """

    __slots__ = ("_client", "_closed", "_prefix", "_raw_prefix", "_where")

    def __init__(self, client: Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
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

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        clock: Clock | None = None,
        prefix: str | None = None,
        socket_timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_TIMEOUT,
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
        """
        del clock  # TTLs run on the server's clock; see the docstring.
        if not isinstance(url, str):
            raise ConfigurationError(
                f"Redis store URL must be str, got {type(url).__name__}", setting="url"
            )
        clean_url, url_prefix = _split_prefix(url)
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
        options.update(_without_maintenance_notifications(options))
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
        return cls(client, prefix=DEFAULT_PREFIX if chosen_prefix is None else chosen_prefix)

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
        value = await self._run("get", self._client.get(full))
        if value is not None and not isinstance(value, bytes):
            raise StoreError(f"Redis returned {type(value).__name__} for GET; expected bytes")
        return value

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        full = self._open_key("set", key)
        data = check_value(value)
        px = ttl_to_milliseconds(ttl)
        await self._run("set", self._client.set(full, data, px=px or None))

    async def delete(self, key: str) -> bool:
        full = self._open_key("delete", key)
        removed = await self._run("delete", self._client.delete(full))
        return bool(removed)

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        full = self._open_key("compare_and_set", key)
        args: list[bytes | int] = [check_value(value), ttl_to_milliseconds(ttl)]
        if expected is not None:
            args.append(check_value(expected))
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
        await self._client.aclose(close_connection_pool=True)
