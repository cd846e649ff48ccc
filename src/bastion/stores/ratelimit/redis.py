"""The Redis rate-limit backend: one Lua round trip per decision, server clock, one slot.

See :mod:`bastion.stores.ratelimit` for the guarantees. Each algorithm's script mirrors the
Python step function in :mod:`bastion.core.ratelimit` line for line; Lua numbers are doubles,
exact for the integers :class:`~bastion.core.ratelimit.Rate` allows.
"""

from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING, Any, Final

import redis
from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool as AsyncPool
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from bastion.core.ratelimit import MICROS, Decision, Rate, Strategy, micros
from bastion.errors import ConfigurationError, StoreError
from bastion.stores.faults import redis_py_fault
from bastion.stores.keyspace import hash_tag, namespace_prefix
from bastion.stores.ratelimit import key_suffix
from bastion.stores.redis import (
    DEFAULT_MAX_REPLY_BYTES,
    _AsyncResp,
    _pack,
    _ReplyFailure,
    _SyncResp,
    resp_endpoint,
    resp_fault,
)
from bastion.stores.redis_url import (
    DEFAULT_PREFIX,
    LoopClients,
    pop_query,
    without_maintenance_notifications,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from bastion.core.clock import Clock

__all__ = ["LUA_SCRIPTS", "RedisRateLimitStore"]

# -- Redis ------------------------------------------------------------------------------------

_LUA_COMMON: Final = """
local function idiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end
local function cdiv(a, b) return -idiv(-a, b) end
"""

_LUA_FIXED: Final = """
local SHAPE = 2
local function step(st, now, cost, limit, period)
  local index = idiv(now, period)
  local count = 0
  if st and st[1] == index then count = st[2] end
  local e = (index + 1) * period
  local ok = count + cost <= limit
  if ok then count = count + cost end
  local reset = 0
  if count > 0 then reset = e - now end
  return {index, count}, e, ok, limit - count, reset, reset
end
"""

_LUA_SLIDING: Final = """
local SHAPE = 3
local function step(st, now, cost, limit, period)
  local index = idiv(now, period)
  local cur, prev = 0, 0
  if st then
    if st[1] == index then cur, prev = st[2], st[3]
    elseif st[1] == index - 1 then prev = st[2] end
  end
  local elapsed = now - index * period
  local left = period - elapsed
  local used = prev * left + cur * period
  local ok = used + cost * period <= limit * period
  if ok then
    cur = cur + cost
    used = used + cost * period
  end
  local reset = 0
  if cur > 0 then reset = left + period elseif prev > 0 then reset = left end
  local retry = 0
  if not ok then
    local room = limit - cur - cost
    if room >= 0 and prev > 0 then
      retry = math.max(1, period - idiv(room * period, prev) - elapsed)
    else
      local wait = period - elapsed
      local need = math.min(cost, limit)
      if cur + need > limit then wait = wait + period - idiv((limit - need) * period, cur) end
      retry = math.max(1, wait)
    end
  end
  return {index, cur, prev}, (index + 2) * period, ok, idiv(limit * period - used, period),
    reset, retry
end
"""

_LUA_LOG: Final = """
local SHAPE = 0
local function step(st, now, cost, limit, period)
  local cutoff = now - period
  local log, used = {}, 0
  if st then
    for i = 1, #st - 1, 2 do
      if st[i] > cutoff then
        log[#log + 1] = st[i]
        log[#log + 1] = st[i + 1]
        used = used + st[i + 1]
      end
    end
  end
  local ok = used + cost <= limit
  if ok then
    used = used + cost
    if #log > 0 and log[#log - 1] == now then
      log[#log] = log[#log] + cost
    else
      log[#log + 1] = now
      log[#log + 1] = cost
    end
  end
  local retry = 0
  if not ok then
    local need, freed = math.min(cost, limit), 0
    for i = 1, #log, 2 do
      freed = freed + log[i + 1]
      if used - freed + need <= limit then
        retry = log[i] + period - now
        break
      end
    end
  end
  local reset, expires = 0, now
  if #log > 0 then
    reset = log[#log - 1] + period - now
    expires = log[#log - 1] + period
  end
  return log, expires, ok, limit - used, reset, retry
end
"""

_LUA_GCRA: Final = """
local SHAPE = 2
local function step(st, now, cost, limit, period)
  local capacity = limit * period
  local level = 0
  if st then
    local elapsed = now - st[2]
    if elapsed <= 0 then level = st[1] else level = math.max(0, st[1] - elapsed * limit) end
  end
  local ok = level + cost * period <= capacity
  if ok then level = level + cost * period end
  local retry = 0
  if not ok then retry = cdiv(level + math.min(cost, limit) * period - capacity, limit) end
  local reset = cdiv(level, limit)
  return {level, now}, now + reset, ok, idiv(capacity - level, period), reset, retry
end
"""

# KEYS: one per rate. ARGV[1]: now in us, or '' for the server's clock; ARGV[2]: cost; then
# limit and period_us for each key. Reply: {all_admitted, then per key: admitted, remaining,
# reset_us, retry_us}.
_LUA_MAIN: Final = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local cost = tonumber(ARGV[2])
local n = #KEYS
local states, results = {}, {}
local all = true
for i = 1, n do
  local raw = redis.call('GET', KEYS[i])
  local st = nil
  if raw then
    st = {}
    for part in string.gmatch(raw, '[^,]+') do st[#st + 1] = tonumber(part) end
    if (SHAPE == 0 and #st % 2 ~= 0) or (SHAPE > 0 and #st ~= SHAPE) then st = nil end
  end
  states[i] = st
  local new, expires, ok, remaining, reset, retry =
    step(st, now, cost, tonumber(ARGV[2 * i + 1]), tonumber(ARGV[2 * i + 2]))
  results[i] = {new, expires, ok, remaining, reset, retry}
  if not ok then all = false end
end
local reply = {0}
if all then reply[1] = 1 end
for i = 1, n do
  local r = results[i]
  if all then
    local parts = {}
    for j = 1, #r[1] do parts[j] = string.format('%.0f', r[1][j]) end
    local px = math.ceil((r[2] - now) / 1000)
    if px > 0 then
      redis.call('SET', KEYS[i], table.concat(parts, ','), 'PX', string.format('%.0f', px))
    else
      redis.call('DEL', KEYS[i])
    end
  elseif r[3] then
    local _, _, ok, remaining, reset, retry =
      step(states[i], now, 0, tonumber(ARGV[2 * i + 1]), tonumber(ARGV[2 * i + 2]))
    r = {nil, nil, ok, remaining, reset, retry}
  end
  local flag = 0
  if r[3] then flag = 1 end
  reply[#reply + 1] = flag
  reply[#reply + 1] = math.max(0, r[4])
  reply[#reply + 1] = math.max(0, r[5])
  reply[#reply + 1] = math.max(0, r[6])
end
return reply
"""

LUA_SCRIPTS: Final = {
    strategy: _LUA_COMMON + body + _LUA_MAIN
    for strategy, body in (
        (Strategy.FIXED_WINDOW, _LUA_FIXED),
        (Strategy.SLIDING_WINDOW, _LUA_SLIDING),
        (Strategy.SLIDING_LOG, _LUA_LOG),
        (Strategy.TOKEN_BUCKET, _LUA_GCRA),
    )
}
"""The Lua script of each strategy; the Python step functions are their specification."""

# SHA1 names the script in the server's cache (not a security use).
_SHAS: Final = {
    strategy: hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
    for strategy, script in LUA_SCRIPTS.items()
}


_WHERE: Final = "Redis rate-limit store"
_OPERATION: Final = "the rate-limit script"


async def _aclose(client: AsyncRedis) -> None:
    await client.aclose(close_connection_pool=True)


def _decisions(reply: Any, rates: Sequence[Rate]) -> tuple[Decision, ...]:
    if not isinstance(reply, list) or len(reply) != 1 + 4 * len(rates):
        raise StoreError(f"Redis rate-limit script returned {reply!r:.80}; expected a list")
    out = []
    for i, rate in enumerate(rates):
        allowed, remaining, reset, retry = reply[1 + 4 * i : 5 + 4 * i]
        out.append(
            Decision(
                bool(allowed),
                rate.limit,
                int(remaining),
                int(reset) / MICROS,
                0.0 if allowed else int(retry) / MICROS,
                rate.period_us / MICROS,
            )
        )
    return tuple(out)


class RedisRateLimitStore:
    """Redis backend: one round trip per decision (see :mod:`bastion.stores.ratelimit`).

    ``url`` is a ``redis://``, ``rediss://`` or ``unix://`` URL, the same one the key-value
    :class:`~bastion.stores.redis.RedisStore` takes. ``prefix`` is prepended to every key and
    must not contain braces; give it as a keyword or as ``?prefix=`` in the URL, not both
    (default :data:`~bastion.stores.redis_url.DEFAULT_PREFIX`). For ``redis://`` and
    ``unix://`` (with hiredis installed) the scripts go through the key-value store's lean RESP
    transport, with its guarantees: ``socket_timeout`` is a deadline for each whole decision
    (a server trickling its reply cannot hold it longer), connections come from one bounded
    pool shared by threads and one pool per event loop, and a reply over ``?max_reply_bytes=``
    (default 64 MiB) is refused. ``rediss://`` goes through redis-py, whose timeout bounds
    each read. A ``?transport=`` meant for the key-value store is accepted and ignored. A
    decision that cannot complete raises a typed StoreUnavailable. Retries are off: a retried
    script whose first reply was lost would charge a request twice.

    On redis-py (TLS), each event loop gets its own async client on its first :meth:`hit`,
    closed when that loop shuts down (:class:`~bastion.stores.redis_url.LoopClients`), so
    ``asyncio.run()`` per request works; the sync client, made on first :meth:`hit_sync`, is
    shared by all threads (redis-py's bounded pool; it rebuilds its connections after a fork).

    ``clock=None`` (the default) decides with the Redis server's clock, so that every host
    agrees. A ``clock`` sends this host's time instead; that is for tests with a
    :class:`~bastion.core.clock.FrozenClock` and single-host set-ups only.
    """

    __slots__ = (
        "_aclient",
        "_async_resp",
        "_client",
        "_clock",
        "_lock",
        "_options",
        "_prefix",
        "_raw_prefix",
        "_sync_resp",
        "_url",
    )

    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        socket_timeout: float = 2.0,
        connect_timeout: float = 2.0,
        max_connections: int = 50,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(
                "Redis rate-limit URL must start with redis://, rediss:// or unix://",
                setting="url",
            )
        url, url_prefix = pop_query(url, "prefix")
        url, _transport = pop_query(url, "transport")
        url, url_max_reply = pop_query(url, "max_reply_bytes")
        if url_prefix is not None and prefix is not None:
            raise ConfigurationError(
                "Redis rate-limit prefix is given both in the URL and as prefix=; give it once",
                setting="prefix",
            )
        if url_prefix is not None:
            prefix = url_prefix
        elif prefix is None:
            prefix = DEFAULT_PREFIX
        self._raw_prefix = namespace_prefix(prefix)
        for name, value in (
            ("socket_timeout", socket_timeout),
            ("connect_timeout", connect_timeout),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigurationError(
                    f"{name} must be a number of seconds > 0, got {value!r}", setting=name
                )
        self._url = url
        self._clock = clock
        self._prefix = prefix
        self._options: dict[str, Any] = {
            "socket_timeout": float(socket_timeout),
            "socket_connect_timeout": float(connect_timeout),
            "timeout": float(socket_timeout),
            "max_connections": max_connections,
        }
        self._options.update(without_maintenance_notifications({}))
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self._aclient: LoopClients[AsyncRedis] = LoopClients(self._new_async_client, _aclose)
        try:
            max_reply = DEFAULT_MAX_REPLY_BYTES if url_max_reply is None else int(url_max_reply)
        except ValueError:
            max_reply = 0
        if max_reply < 1024:
            raise ConfigurationError(
                f"max_reply_bytes={url_max_reply!r} in the Redis URL must be a whole number of "
                f"bytes >= 1024; the default is {DEFAULT_MAX_REPLY_BYTES} (64 MiB)",
                setting="max_reply_bytes",
            )
        try:
            # Build (not connect) one connection now, so that a misspelt URL option fails here
            # rather than on the first request.
            pool = redis.BlockingConnectionPool.from_url(url, **self._options)
            pool.make_connection()  # type: ignore[no-untyped-call]
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"Redis rate-limit URL or option rejected: {exc}") from exc
        # redis:// and unix:// go through the RESP transport (a deadline per decision, a
        # bounded pool shared by threads, a pool per event loop, a reply size cap); TLS, or no
        # hiredis, through redis-py.
        endpoint = resp_endpoint(pool, "auto", max_reply)
        self._sync_resp = None if endpoint is None else _SyncResp(endpoint)
        self._async_resp = None if endpoint is None else _AsyncResp(endpoint)

    def __repr__(self) -> str:
        return f"RedisRateLimitStore(prefix={self._prefix!r})"

    def keys(self, key: str, strategy: Strategy, rates: Sequence[Rate]) -> list[bytes]:
        """The Redis keys of ``key``'s limits: one hash tag, so one cluster slot."""
        if not key:
            raise StoreError("rate-limit key must not be empty")
        base = self._raw_prefix + hash_tag("rl", key).encode("utf-8", "surrogatepass")
        return [base + key_suffix(strategy, rate).encode("ascii") for rate in rates]

    def _args(self, cost: int, rates: Sequence[Rate]) -> list[int | str]:
        clock = self._clock
        args: list[int | str] = ["" if clock is None else micros(clock.now()), cost]
        for rate in rates:
            args += (rate.limit, rate.period_us)
        return args

    def _where(self, exc: BaseException) -> StoreError:
        detail = f"{type(exc).__name__}: {str(exc)[:200]}"
        if isinstance(exc, redis_errors.RedisError):
            return redis_py_fault(exc, _WHERE, _OPERATION, detail)
        return resp_fault(exc, _WHERE, _OPERATION, detail)

    @staticmethod
    def _packed(
        strategy: Strategy, keys: list[bytes], args: list[int | str], *, load: bool
    ) -> bytes:
        words = [a if isinstance(a, bytes) else str(a).encode("ascii") for a in args]
        if load:  # after NOSCRIPT: EVAL runs the script and caches it again
            head = (b"EVAL", LUA_SCRIPTS[strategy].encode("utf-8"))
        else:
            head = (b"EVALSHA", _SHAS[strategy].encode("ascii"))
        return _pack(*head, b"%d" % len(keys), *keys, *words)

    async def hit(
        self, key: str, strategy: Strategy, rates: Sequence[Rate], cost: int = 1
    ) -> tuple[Decision, ...]:
        keys = self.keys(key, strategy, rates)
        args = self._args(cost, rates)
        resp = self._async_resp
        if resp is not None:
            try:
                try:
                    reply = await resp.call(self._packed(strategy, keys, args, load=False))
                except _ReplyFailure as exc:
                    if exc.code != "NOSCRIPT":
                        raise
                    reply = await resp.call(self._packed(strategy, keys, args, load=True))
            except Exception as exc:  # translated into the typed store errors
                raise self._where(exc) from exc
            return _decisions(reply, rates)
        client = self._aclient.get()
        try:
            try:
                reply = await client.evalsha(_SHAS[strategy], len(keys), *keys, *args)
            except redis_errors.NoScriptError:
                reply = await client.eval(LUA_SCRIPTS[strategy], len(keys), *keys, *args)
        except redis_errors.RedisError as exc:
            raise self._where(exc) from exc
        except OSError as exc:
            raise self._where(exc) from exc
        return _decisions(reply, rates)

    def _sync_client(self) -> redis.Redis:
        with self._lock:
            if self._client is None:
                pool = redis.BlockingConnectionPool.from_url(
                    self._url, retry=Retry(NoBackoff(), 0), **self._options
                )
                self._client = redis.Redis(connection_pool=pool)
            return self._client

    def hit_sync(
        self, key: str, strategy: Strategy, rates: Sequence[Rate], cost: int = 1
    ) -> tuple[Decision, ...]:
        keys = self.keys(key, strategy, rates)
        args = self._args(cost, rates)
        resp = self._sync_resp
        if resp is not None:
            try:
                try:
                    reply = resp.call(self._packed(strategy, keys, args, load=False))
                except _ReplyFailure as exc:
                    if exc.code != "NOSCRIPT":
                        raise
                    reply = resp.call(self._packed(strategy, keys, args, load=True))
            except Exception as exc:  # translated into the typed store errors
                raise self._where(exc) from exc
            return _decisions(reply, rates)
        client = self._client or self._sync_client()
        try:
            try:
                reply = client.evalsha(_SHAS[strategy], len(keys), *keys, *args)
            except redis_errors.NoScriptError:
                reply = client.eval(LUA_SCRIPTS[strategy], len(keys), *keys, *args)
        except (redis_errors.RedisError, OSError) as exc:
            raise self._where(exc) from exc
        return _decisions(reply, rates)

    def close(self) -> None:
        """Close the sync client (the async one is closed by :meth:`aclose`)."""
        if self._sync_resp is not None:
            self._sync_resp.close()
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
            # A client built on a given pool leaves the pool open on close(): close it here.
            client.connection_pool.disconnect()

    def _new_async_client(self) -> AsyncRedis:
        pool = AsyncPool.from_url(self._url, retry=AsyncRetry(NoBackoff(), 0), **self._options)
        return AsyncRedis.from_pool(pool)

    async def aclose(self) -> None:
        """Close both clients (each event loop's async one). Safe to call more than once."""
        if self._async_resp is not None:
            self._async_resp.close()
        await self._aclient.aclose()
        self.close()
