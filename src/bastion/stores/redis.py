"""The Redis store: several hosts share sessions, tokens and rate limits through one server.

Layout and guarantees:

* Every key is sent as the prefix's namespace, ``:``, then the key's UTF-8 bytes (see
  :func:`~bastion.stores.keyspace.namespace_prefix`: ``"app:"`` gives ``app:<key>``, and no
  two prefixes share a key), so keys with braces, NUL, newlines or non-ASCII text work
  unchanged. Prefixes must not contain ``{`` or ``}``: keys that must
  share a Redis Cluster slot are built with :func:`~bastion.stores.keyspace.hash_tag`, and a
  brace in the prefix would capture every key's tag.
* TTLs are sent as ``PX`` milliseconds, rounded up (minimum 1 ms), and counted by the Redis
  server's clock, so hosts with skewed clocks still agree on expiry.
* Rate limits (:class:`~bastion.stores.base.SupportsRateLimit`): one Lua script per algorithm
  decides every rate of a call in one round trip (see :mod:`bastion.stores._redis_scripts`),
  on the store's own connections, with the Redis server's clock (``TIME``). A ``clock`` other
  than the system clock (a :class:`~bastion.core.clock.FrozenClock` in tests) sends this host's
  time instead; that is for tests and single-host set-ups only. The keys of one call are
  ``<prefix namespace>rl:{<key>}:<strategy>:<limit>/<period_us>``: one hash tag, so one Redis
  Cluster slot.
* :meth:`RedisStore.compare_and_set` is one Lua script, sent with ``EVALSHA``: one round trip,
  atomic on the server. The script is not loaded up front; when the server answers ``NOSCRIPT``
  (first use, ``SCRIPT FLUSH``, a restart, a failover to a replica that never saw it) the call
  is repeated once with ``EVAL``, which runs the script and caches it again.
* Connection failures, timeouts, a server still loading its data set and failover states raise
  :class:`~bastion.errors.StoreUnavailable` within the timeouts (2 s by default); other error
  replies raise :class:`~bastion.errors.StoreError`. Messages name ``host:port``, never the
  password. After an outage the same store reconnects by itself: the pool checks an idle
  connection before reusing it.

* The store operations and the rate-limit scripts go through a lean RESP transport by default
  (:mod:`bastion.stores._resp`; see :meth:`RedisStore.from_url`, ``transport=``): redis-py's
  async client spends about 75 us per command on its own machinery, the lean transport about
  30 us (measured on one host, same server, same run; figures in the sessions bench). The same
  error mapping, timeouts and reconnect-after-restart behaviour apply; the contract and outage
  tests run against it.

Danger: :meth:`RedisStore.from_url` turns redis-py's automatic retries off. A retried
``compare_and_set`` whose first reply was lost would report ``False`` for a write that
happened, and a retried rate-limit script would charge a request twice; the caller should see
:class:`~bastion.errors.StoreUnavailable` instead and decide. Pass ``retry=`` explicitly only if
every caller tolerates that. The store takes a ``redis.asyncio.Redis`` client; a
``RedisCluster`` client is not supported yet (the key layout is ready for it).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final, TypeVar

import redis as redis_sync
from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.retry import Retry as SyncRetry

from bastion.core.clock import system_clock
from bastion.core.ratelimit import micros
from bastion.errors import ConfigurationError, StoreError, StoreUnavailable
from bastion.stores._redis_cluster import ClusterRouter, SentinelRouter, same_slot
from bastion.stores._redis_scripts import (
    CAS_READ_SCRIPT,
    CAS_SCRIPT,
    CAS_SCRIPT_BYTES,
    CAS_SHA,
    CAS_SHA_BYTES,
    LUA_SCRIPTS,
    LUA_SHAS,
    cas_read_reply,
    decisions,
    script_command,
    ttl_to_milliseconds,
)
from bastion.stores._redis_sync import RedisSyncStore, mget_reply, translate_resp
from bastion.stores._resp import (
    DEFAULT_MAX_REPLY_BYTES,
    DEFAULT_TIMEOUT,
    AsyncResp,
    ReplyFailure,
    SyncResp,
    checked,
    pack,
    resp_endpoint,
)
from bastion.stores.base import check_key, check_keys, check_value
from bastion.stores.faults import redis_py_fault
from bastion.stores.keyspace import (
    KEY_SLOTS,
    hash_tag,
    key_slot,
    namespace_prefix,
    ratelimit_key_suffix,
)
from bastion.stores.redis_url import (
    DEFAULT_PREFIX,
    LoopClients,
    Topology,
    check_timeout,
    describe_client,
    pop_query,
    split_topology,
    without_maintenance_notifications,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from bastion.core.clock import Clock
    from bastion.core.ratelimit import Decision, Rate, Strategy
    from bastion.stores._resp import AsyncTransport

__all__ = [
    "DEFAULT_MAX_REPLY_BYTES",
    "DEFAULT_PREFIX",
    "DEFAULT_TIMEOUT",
    "KEY_SLOTS",
    "LUA_SCRIPTS",
    "RedisStore",
    "RedisSyncStore",
    "hash_tag",
    "key_slot",
    "ttl_to_milliseconds",
]

_T = TypeVar("_T")


def _wait_settings(replicas: int, timeout: float, transport: str) -> tuple[int, bytes | None]:
    """``(replicas, the WAIT command)`` for ``wait_replicas``/``wait_timeout`` (see
    :meth:`RedisStore.from_url`)."""
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        raise ConfigurationError(
            f"wait_replicas must be a whole number >= 0, got {replicas!r}",
            setting="wait_replicas",
        )
    seconds = check_timeout("wait_timeout", timeout)
    if replicas == 0:
        return 0, None
    if transport == "redis-py":
        raise ConfigurationError(
            "wait_replicas needs the RESP transport (WAIT must follow the write on its "
            "connection); drop transport='redis-py'",
            setting="wait_replicas",
        )
    milliseconds = max(1, math.ceil(seconds * 1000))
    return replicas, pack(b"WAIT", b"%d" % replicas, b"%d" % milliseconds)


def _query_number(
    text: str | None, keyword: Any, name: str, kind: type[int] | type[float], default: float
) -> Any:
    if text is None:
        return default if keyword is None else keyword
    if keyword is not None:
        raise ConfigurationError(
            f"{name} is given both in the URL and as a keyword; give it once", setting=name
        )
    try:
        return kind(text)
    except ValueError:
        raise ConfigurationError(
            f"{name}={text!r} in the Redis URL is not a number", setting=name
        ) from None


async def _close_client(client: Redis) -> None:
    await client.aclose(close_connection_pool=True)


class RedisStore:
    """A :class:`~bastion.stores.base.Store` on a ``redis.asyncio.Redis`` client.

    The store owns the client: :meth:`aclose` closes it and its connection pool. The client
    must return bytes (``decode_responses=False``, the default). Use :meth:`from_url` for the
    recommended timeouts and retry policy. ``clock`` matters to rate limits only (see the
    module docstring): ``None`` or the system clock decide with the server's clock.
    """

    nonblocking: Final = False
    """Every call, :meth:`hit_sync` included, is a network round trip."""

    __slots__ = (
        "_client",
        "_clients",
        "_clock",
        "_closed",
        "_handed_out",
        "_prefix",
        "_raw_prefix",
        "_resp",
        "_sync_view",
        "_topology",
        "_wait",
        "_wait_replicas",
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
        clock: Clock | None = None,
        topology: Topology | None = None,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
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
        self._where = describe_client(client)
        self._closed = False
        # None: rate limits use the server's clock (TIME), so that every host agrees.
        self._clock = None if clock is system_clock else clock
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
        self._topology = topology
        self._wait_replicas, self._wait = _wait_settings(wait_replicas, wait_timeout, transport)
        if topology is not None:
            if transport == "redis-py":
                raise ConfigurationError(
                    f"Redis {topology.kind} URLs use bastion's RESP transport; drop "
                    "transport='redis-py'",
                    setting="transport",
                )
            endpoint = resp_endpoint(client.connection_pool, "resp", max_reply_bytes)
            if endpoint is None:  # pragma: no cover - "resp" never answers None
                raise ConfigurationError("the RESP transport is needed", setting="transport")
            router = (
                ClusterRouter(topology.nodes, endpoint)
                if topology.kind == "cluster"
                else SentinelRouter(topology.nodes, topology.service, endpoint)
            )
            self._where = topology.describe()
            self._resp: AsyncTransport | None = router.async_
            self._sync_view = RedisSyncStore(self, None, router.sync)
            return
        endpoint = resp_endpoint(client.connection_pool, transport, max_reply_bytes)
        self._resp = None if endpoint is None else AsyncResp(endpoint)
        self._sync_view = RedisSyncStore(
            self, sync_client, None if endpoint is None else SyncResp(endpoint)
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

        ``wait_replicas`` (also ``?wait_replicas=N``; default 0, off) makes every key-value
        write (``set``, ``delete``, ``compare_and_set``) wait, on the same connection and in
        the same round trip, until ``N`` replicas have it (``WAIT N wait_timeout``,
        ``?wait_timeout=`` seconds, default 1). Fewer in time raises StoreUnavailable: the
        write is not acknowledged. Redis replication is asynchronous, so without it a primary
        that fails right after a write can lose it in a failover (Sentinel or Cluster); with it,
        only a write no caller was told succeeded can be lost. Rate-limit decisions do not wait
        (losing a few counted hits in a failover only lets a few more requests through). Needs
        the RESP transport.

        ``clock`` is for rate limits only, and only when it is not the system clock (a
        :class:`~bastion.core.clock.FrozenClock` in tests): TTLs, and by default rate limits,
        are counted by the Redis server's clock.

        ``transport`` (keyword or ``?transport=`` in the URL) picks how the four store
        operations reach the server: ``"resp"``, bastion's lean RESP2 client (hiredis parser,
        bounded pools as above);
        ``"redis-py"``, redis-py's client and pool; ``"auto"`` (the default), ``"resp"`` for
        ``redis://`` and ``unix://`` when hiredis is installed, else ``"redis-py"``. TLS
        (``rediss://``) always uses redis-py. Either way the redis-py client stays available to
        the store's scripts and keeps the same timeouts, errors and reconnection behaviour.
        """
        if not isinstance(url, str):
            raise ConfigurationError(
                f"Redis store URL must be str, got {type(url).__name__}", setting="url"
            )
        url, topology = split_topology(url)
        clean_url, url_prefix = pop_query(url, "prefix")
        clean_url, url_transport = pop_query(clean_url, "transport")
        clean_url, url_max_reply = pop_query(clean_url, "max_reply_bytes")
        clean_url, url_wait = pop_query(clean_url, "wait_replicas")
        clean_url, url_wait_timeout = pop_query(clean_url, "wait_timeout")
        wait_replicas = _query_number(
            url_wait, options.pop("wait_replicas", None), "wait_replicas", int, 0
        )
        wait_timeout = _query_number(
            url_wait_timeout, options.pop("wait_timeout", None), "wait_timeout", float, 1.0
        )
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
        timeout = check_timeout("socket_timeout", socket_timeout)
        try:
            pool = BlockingConnectionPool.from_url(
                clean_url,
                timeout=timeout,
                socket_timeout=timeout,
                socket_connect_timeout=check_timeout("connect_timeout", connect_timeout),
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
            clock=clock,
            topology=topology,
            wait_replicas=wait_replicas,
            wait_timeout=wait_timeout,
        )

    @property
    def topology(self) -> Topology | None:
        """The Redis Cluster or Sentinel set-up this store routes to; ``None`` for one
        server."""
        return self._topology

    def slot_groups(self, fulls: Sequence[bytes]) -> list[list[int]]:
        """The positions of ``fulls`` grouped by cluster slot, one ``MGET`` per group: one
        group (one round trip) on one server, or when the keys share a hash tag as the
        engines' keys of one read do. A multi-key command never spans two slots, so
        ``CROSSSLOT`` cannot happen."""
        cluster = self._topology is not None and self._topology.kind == "cluster"
        if not cluster or same_slot(fulls):
            return [list(range(len(fulls)))]
        groups: dict[int, list[int]] = {}
        for index, full in enumerate(fulls):
            groups.setdefault(key_slot(full), []).append(index)
        return list(groups.values())

    def _split_slots(self, first: bytes, second: bytes) -> bool:
        """Whether two keys of one script live in different cluster slots."""
        cluster = self._topology is not None and self._topology.kind == "cluster"
        return cluster and not same_slot((first, second))

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

    def full_keys(self, operation: str, keys: Sequence[str]) -> list[bytes]:
        """:meth:`full_key` of each of ``keys`` (see :func:`~bastion.stores.base.check_keys`)."""
        if self._closed:
            raise StoreError(f"RedisStore.{operation}() called after aclose(); open a new store")
        prefix = self._raw_prefix
        return [prefix + raw for raw in check_keys(keys)]

    def __repr__(self) -> str:
        return f"RedisStore(server={self._where!r}, prefix={self._prefix!r})"

    async def get(self, key: str) -> bytes | None:
        full = self._open_key("get", key)
        if self._resp is not None:
            value = await self._fast("get", pack(b"GET", full), full)
        else:
            value = await self._run("get", self._clients.get().get(full))
        if value is not None and not isinstance(value, bytes):
            raise StoreError(f"Redis returned {type(value).__name__} for GET; expected bytes")
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The live value of each of ``keys``: one ``MGET``, one round trip
        (:class:`~bastion.stores.base.SupportsGetMany`). On Redis Cluster, one ``MGET`` per
        slot the keys fall in (keys built with one ``hash_tag`` identifier: one)."""
        fulls = self.full_keys("get_many", keys)
        if self._resp is not None:
            groups = self.slot_groups(fulls)
            if len(groups) == 1:
                values = await self._fast("get_many", pack(b"MGET", *fulls), fulls[0])
            else:
                values = [None] * len(fulls)
                for group in groups:
                    part = [fulls[i] for i in group]
                    found = mget_reply(
                        await self._fast("get_many", pack(b"MGET", *part), part[0]), len(part)
                    )
                    for index, value in zip(group, found, strict=True):
                        values[index] = value
        else:
            values = await self._run("get_many", self._clients.get().mget(fulls))
        return mget_reply(values, len(fulls))

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        full = self._open_key("set", key)
        data = check_value(value)
        px = ttl_to_milliseconds(ttl)
        if self._resp is not None:
            command = (
                pack(b"SET", full, data, b"PX", b"%d" % px) if px else pack(b"SET", full, data)
            )
            await self._fast("set", command, full, write=True)
            return
        await self._run("set", self._clients.get().set(full, data, px=px or None))

    async def delete(self, key: str) -> bool:
        full = self._open_key("delete", key)
        if self._resp is not None:
            return bool(await self._fast("delete", pack(b"DEL", full), full, write=True))
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

    async def compare_and_set_read(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None, read: str
    ) -> tuple[bool, bytes | None, bytes | None]:
        """:meth:`compare_and_set` ``key``, then read ``read``, in one script: one round trip
        (:class:`~bastion.stores.base.SupportsCompareAndSetRead`)."""
        full = self._open_key("compare_and_set_read", key)
        other = self._open_key("compare_and_set_read", read)
        if self._split_slots(full, other):
            # Two slots cannot share a script in a cluster: the compare-and-set, then reads
            # (what the flow does on stores without this capability).
            won = await self.compare_and_set(key, expected, value, ttl)
            return won, await self.get(key), await self.get(read)
        args: list[bytes] = [check_value(value), b"%d" % ttl_to_milliseconds(ttl)]
        if expected is not None:
            args.append(check_value(expected))
        operation = "compare_and_set_read"
        if self._resp is not None:
            script = CAS_READ_SCRIPT.encode("utf-8")
            reply = await self._fast(
                operation, pack(b"EVAL", script, b"2", full, other, *args), full, write=True
            )
        else:
            client = self._clients.get()
            reply = await self._run(operation, client.eval(CAS_READ_SCRIPT, 2, full, other, *args))
        return cas_read_reply(reply)

    # -- rate limits (SupportsRateLimit; the scripts are in bastion.stores._redis_scripts) ------

    def rate_limit_keys(self, key: str, strategy: Strategy, rates: Sequence[Rate]) -> list[bytes]:
        """The Redis keys of ``key``'s limits: one hash tag, so one cluster slot."""
        if self._closed:
            raise StoreError("RedisStore.hit() called after aclose(); open a new store")
        if not key:
            raise StoreError("rate-limit key must not be empty")
        base = self._raw_prefix + hash_tag("rl", key).encode("utf-8", "surrogatepass")
        return [base + ratelimit_key_suffix(strategy, rate).encode("ascii") for rate in rates]

    def _rate_args(self, cost: int, rates: Sequence[Rate]) -> list[bytes]:
        clock = self._clock
        args = [b"" if clock is None else b"%d" % micros(clock.now()), b"%d" % cost]
        for rate in rates:
            args += (b"%d" % rate.limit, b"%d" % rate.period_us)
        return args

    async def hit(
        self, key: str, strategy: Strategy, rates: Sequence[Rate], cost: int = 1
    ) -> tuple[Decision, ...]:
        """Decide ``rates`` for ``key`` in one script run: one round trip (two after
        ``NOSCRIPT``)."""
        keys = self.rate_limit_keys(key, strategy, rates)
        args = self._rate_args(cost, rates)
        resp = self._resp
        if resp is not None:
            try:
                try:
                    reply = await resp.call(
                        script_command(strategy, keys, args, load=False), keys[0]
                    )
                except ReplyFailure as exc:
                    if exc.code != "NOSCRIPT":
                        raise
                    reply = await resp.call(
                        script_command(strategy, keys, args, load=True), keys[0]
                    )
            except Exception as exc:  # translated into the typed store errors
                raise translate_resp(self, "the rate-limit script", exc) from exc
            return decisions(reply, rates)
        return decisions(
            await self._run("the rate-limit script", self._eval_rate(strategy, keys, args)), rates
        )

    def hit_sync(
        self, key: str, strategy: Strategy, rates: Sequence[Rate], cost: int = 1
    ) -> tuple[Decision, ...]:
        """:meth:`hit` on the sync side's connections (no event loop)."""
        keys = self.rate_limit_keys(key, strategy, rates)
        return decisions(
            self._sync_view.rate_script(strategy, keys, self._rate_args(cost, rates)), rates
        )

    async def _eval_rate(self, strategy: Strategy, keys: list[bytes], args: list[bytes]) -> Any:
        client = self._clients.get()
        try:
            return await client.evalsha(LUA_SHAS[strategy], len(keys), *keys, *args)
        except redis_errors.NoScriptError:
            return await client.eval(LUA_SCRIPTS[strategy], len(keys), *keys, *args)

    async def _eval_cas(self, full: bytes, args: list[bytes | int]) -> Any:
        client = self._clients.get()
        try:
            return await client.evalsha(CAS_SHA, 1, full, *args)
        except redis_errors.NoScriptError:
            # The server lost its script cache. EVAL runs the script and caches it again.
            return await client.eval(CAS_SCRIPT, 1, full, *args)

    async def _fast(
        self, operation: str, payload: bytes, key: bytes, *, write: bool = False
    ) -> Any:
        resp = self._resp
        if resp is None:  # pragma: no cover - callers check
            raise StoreError("the RESP transport is off")
        wait = self._wait if write else None
        try:
            if wait is None:
                return await resp.call(payload, key)
            out = await resp.call(payload + wait, key, 2)
            result, count = checked(out[0]), checked(out[1])
        except Exception as exc:  # translated into the store's two error kinds
            raise translate_resp(self, operation, exc) from exc
        self.check_replicas(operation, count)
        return result

    def check_replicas(self, operation: str, count: Any) -> None:
        """Raise StoreUnavailable when fewer replicas than ``wait_replicas`` confirmed a
        write (``WAIT``'s reply): the write is on the primary, not yet safe from a failover,
        so it is not acknowledged to the caller."""
        if not isinstance(count, int) or count < self._wait_replicas:
            raise StoreUnavailable(
                f"Redis at {self._where}: {operation} was written on the primary but "
                f"{count!r} of the {self._wait_replicas} replicas asked for (wait_replicas) "
                "confirmed it in time; not acknowledged"
            )

    @property
    def wait_command(self) -> bytes | None:
        """The ``WAIT`` sent after each key-value write, or ``None`` (``wait_replicas=0``)."""
        return self._wait

    async def _fast_cas(self, full: bytes, args: list[bytes | int]) -> Any:
        packed = [a if isinstance(a, bytes) else b"%d" % a for a in args]
        try:
            return await self._fast(
                "compare_and_set",
                pack(b"EVALSHA", CAS_SHA_BYTES, b"1", full, *packed),
                full,
                write=True,
            )
        except StoreError as exc:
            cause = exc.__cause__
            if not (isinstance(cause, ReplyFailure) and cause.code == "NOSCRIPT"):
                raise
        # The server lost its script cache. EVAL runs the script and caches it again.
        return await self._fast(
            "compare_and_set",
            pack(b"EVAL", CAS_SCRIPT_BYTES, b"1", full, *packed),
            full,
            write=True,
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
