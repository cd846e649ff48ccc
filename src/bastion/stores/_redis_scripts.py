"""The Redis store's Lua scripts: compare-and-set, and one rate-limit script per algorithm.

Each script runs atomically on the server in one round trip, sent as ``EVALSHA`` and, after a
``NOSCRIPT`` reply (first use, ``SCRIPT FLUSH``, a restart, a failover to a replica that never
saw it), once more as ``EVAL``, which runs it and caches it again.

The rate-limit scripts mirror the Python step functions of :mod:`bastion.core.ratelimit` line
for line (those are their specification); Lua numbers are doubles, exact for the integers
:class:`~bastion.core.ratelimit.Rate` allows. One call decides every rate of a rule, with the
Redis server's clock (``TIME``) unless the caller sends its own time, so hosts with skewed
clocks agree.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Any, Final

from bastion.core.ratelimit import MICROS, Decision, Strategy
from bastion.errors import StoreError
from bastion.stores._resp import pack
from bastion.stores.base import check_ttl

if TYPE_CHECKING:
    from collections.abc import Sequence

    from bastion.core.ratelimit import Rate

__all__ = [
    "CAS_READ_SCRIPT",
    "CAS_SCRIPT",
    "CAS_SCRIPT_BYTES",
    "CAS_SHA",
    "CAS_SHA_BYTES",
    "LUA_SCRIPTS",
    "LUA_SHAS",
    "cas_read_reply",
    "decisions",
    "script_command",
    "ttl_to_milliseconds",
]

_MAX_PX: Final = 10**15
"""TTLs beyond about 31,700 years are clamped: Redis rejects expiry times that overflow."""


def ttl_to_milliseconds(ttl: float | None) -> int:
    """Validate ``ttl`` (seconds) and convert it to whole milliseconds for ``PX``; 0 = none.

    Rounds up, so a key never expires before its TTL, and never below 1 ms (``PX 0`` is an
    error in Redis). Rounding to the microsecond first keeps ``1.1`` at 1100, not 1101.
    """
    checked = check_ttl(ttl)
    if checked is None:
        return 0
    return min(_MAX_PX, max(1, math.ceil(round(checked * 1000.0, 3))))


# KEYS[1]: the prefixed key. ARGV[1]: new value. ARGV[2]: TTL in ms, "0" for none.
# ARGV[3]: the expected value; absent means "create only if the key is absent" (SET NX).
# The TTL is passed on as the original string: Lua would print a large number as 1.2e+15.
CAS_SCRIPT: Final = """\
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
CAS_SHA: Final = hashlib.sha1(CAS_SCRIPT.encode("utf-8"), usedforsecurity=False).hexdigest()
CAS_SHA_BYTES: Final = CAS_SHA.encode("ascii")
CAS_SCRIPT_BYTES: Final = CAS_SCRIPT.encode("utf-8")

# The compare-and-set above, then a read of KEYS[2], in one atomic step (one round trip).
# Replies {won, the live value of KEYS[1] afterwards, the value of KEYS[2]} (false -> nil).
# Sent with EVAL every time: one round trip, no NOSCRIPT retry (the server caches it anyway).
CAS_READ_SCRIPT: Final = """\
local key, value, px = KEYS[1], ARGV[1], ARGV[2]
local cur = redis.call('GET', key)
local won = 0
if (#ARGV == 2 and not cur) or (#ARGV == 3 and cur == ARGV[3]) then
  if px == '0' then
    redis.call('SET', key, value)
  else
    redis.call('SET', key, value, 'PX', px)
  end
  won = 1
  cur = value
end
return {won, cur, redis.call('GET', KEYS[2])}
"""


def cas_read_reply(reply: object) -> tuple[bool, bytes | None, bytes | None]:
    """Check and unpack the reply of :data:`CAS_READ_SCRIPT`."""
    if (
        not isinstance(reply, list)
        or len(reply) != 3
        or reply[0] not in (0, 1)
        or not all(v is None or isinstance(v, bytes) for v in reply[1:])
    ):
        raise StoreError(f"Redis compare-and-set-read script returned {reply!r:.80}")
    return reply[0] == 1, reply[1], reply[2]


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
LUA_SHAS: Final = {
    strategy: hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
    for strategy, script in LUA_SCRIPTS.items()
}
_LUA_SCRIPT_BYTES: Final = {strategy: script.encode() for strategy, script in LUA_SCRIPTS.items()}
_LUA_SHA_BYTES: Final = {strategy: sha.encode("ascii") for strategy, sha in LUA_SHAS.items()}


def script_command(
    strategy: Strategy, keys: list[bytes], args: list[bytes], *, load: bool
) -> bytes:
    """The RESP command running ``strategy``'s script: ``EVALSHA``, or ``EVAL`` when ``load``
    (after ``NOSCRIPT``: it runs the script and caches it again)."""
    if load:
        return pack(b"EVAL", _LUA_SCRIPT_BYTES[strategy], b"%d" % len(keys), *keys, *args)
    return pack(b"EVALSHA", _LUA_SHA_BYTES[strategy], b"%d" % len(keys), *keys, *args)


def decisions(reply: Any, rates: Sequence[Rate]) -> tuple[Decision, ...]:
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
