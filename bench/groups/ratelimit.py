"""Group ``ratelimit``: bastion's stores' rate-limit capability and middleware beside ``limits``.

Every case admits its request (the limits are far above what a run can spend), so each
iteration takes the full path of an admitted decision:

* memory: ``limits`` ``FixedWindowRateLimiter(MemoryStorage()).hit`` is the baseline; bastion's
  ``MemoryStore.hit_sync`` (a full Decision: remaining, reset, retry) per algorithm.
* redis: ``limits.aio`` on redis-py doing ``hit`` plus ``get_window_stats`` (what headers need)
  is the baseline; bastion's ``RedisStore.hit``, one ``EVALSHA`` returning the decision
  and the header data, with the server's clock.
* asgi: a raw ASGI app behind a pass-through layer (the baseline) and behind
  ``RateLimitMiddleware`` with a memory store, rendering ``RateLimit-Policy``/``RateLimit``.
  The middleware's overhead is the difference of the two medians.
"""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Final

import limits
from limits.aio import storage as aio_storage
from limits.aio import strategies as aio_strategies
from redis.asyncio import Redis

from bastion.asgi.ratelimit import RateLimitMiddleware
from bastion.core.ratelimit import MICROS, Rate, Strategy
from bastion.engine.ratelimit import RateLimiter, Rule
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.testing.redis_server import RedisServer
from bench.driver import call_asgi, http_scope, make_floor_app
from bench.group import Group
from bench.measure import async_case, sync_case

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from bench.driver import ASGIApp, Receive, Scope, Send
    from bench.group import Options
    from bench.measure import Case

__all__ = ["GROUP"]

BIG: Final = 10**9
"""Requests per second allowed in every case: never reached, so every decision admits."""
RATE: Final = Rate(BIG, MICROS)
ITEM: Final = limits.RateLimitItemPerSecond(BIG)
PREFIX: Final = "bastion-bench-rl:"
MEMORY_WEIGHT: Final = 20


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(f"ratelimit bench set-up check failed: {what}")


def _memory_cases() -> list[Case]:
    storage = limits.storage.MemoryStorage()
    theirs = limits.strategies.FixedWindowRateLimiter(storage)
    _expect(theirs.hit(ITEM, "k"), "limits memory hit refused")
    base = "memory: limits hit (fixed window)"

    def hit_and_stats() -> object:
        theirs.hit(ITEM, "k")
        return theirs.get_window_stats(ITEM, "k")

    cases = [
        sync_case(base, partial(theirs.hit, ITEM, "k"), weight=MEMORY_WEIGHT),
        sync_case(
            "memory: limits hit + get_window_stats (fixed window; what headers need)",
            hit_and_stats,
            baseline=base,
            weight=MEMORY_WEIGHT,
        ),
    ]
    store = MemoryStore()
    for strategy in (
        Strategy.FIXED_WINDOW,
        Strategy.SLIDING_WINDOW,
        Strategy.SLIDING_LOG,
        Strategy.TOKEN_BUCKET,
    ):
        _expect(store.hit_sync("k", strategy, [RATE])[0].allowed, f"memory {strategy} refused")
        cases.append(
            sync_case(
                f"memory: bastion {strategy.value}",
                partial(store.hit_sync, "k", strategy, [RATE]),
                baseline=base,
                weight=MEMORY_WEIGHT,
            )
        )
    return cases


async def _redis_cases(stack: AsyncExitStack, redis_url: str | None) -> list[Case]:
    if redis_url is None:
        server = stack.enter_context(RedisServer())
        url = server.url
        admin = Redis.from_url(url)
        await admin.config_set("appendfsync", "everysec")
        await admin.aclose()
    else:
        url = redis_url
    theirs_storage = aio_storage.RedisStorage(
        url.replace("redis://", "async+redis://", 1), implementation="redispy"
    )
    fixed = aio_strategies.FixedWindowRateLimiter(theirs_storage)
    sliding = aio_strategies.SlidingWindowCounterRateLimiter(theirs_storage)

    async def limits_fixed() -> object:
        await fixed.hit(ITEM, "k")
        return await fixed.get_window_stats(ITEM, "k")

    async def limits_sliding() -> object:
        await sliding.hit(ITEM, "k")
        return await sliding.get_window_stats(ITEM, "k")

    ours = RedisStore.from_url(url, prefix=PREFIX)
    stack.push_async_callback(ours.aclose)
    for op in (limits_fixed, limits_sliding):
        stats = await op()
        _expect(getattr(stats, "remaining", 0) > 0, "limits redis refused")
    base_fixed = "redis: limits hit + get_window_stats (fixed window)"
    base_sliding = "redis: limits hit + get_window_stats (sliding window counter)"
    cases = [async_case(base_fixed, limits_fixed), async_case(base_sliding, limits_sliding)]
    for strategy, base in (
        (Strategy.FIXED_WINDOW, base_fixed),
        (Strategy.SLIDING_WINDOW, base_sliding),
        (Strategy.TOKEN_BUCKET, base_fixed),
    ):
        _expect((await ours.hit("k", strategy, [RATE]))[0].allowed, f"redis {strategy} refused")
        cases.append(
            async_case(
                f"redis: bastion {strategy.value} (decision + headers, 1 trip)",
                partial(ours.hit, "k", strategy, [RATE]),
                baseline=base,
            )
        )
    return cases


def _pass_through(app: ASGIApp) -> ASGIApp:
    async def layer(scope: Scope, receive: Receive, send: Send) -> None:
        await app(scope, receive, send)

    return layer


async def _asgi_cases() -> list[Case]:
    template = http_scope("GET", "/")
    floor = make_floor_app()
    limiter = RateLimiter(MemoryStore())
    apps: list[tuple[str, ASGIApp, str | None]] = [
        ("asgi: floor + pass-through layer", _pass_through(floor), None),
        (
            "asgi: floor + RateLimitMiddleware (memory, token bucket)",
            RateLimitMiddleware(floor, limiter, Rule("bench", RATE)),
            "asgi: floor + pass-through layer",
        ),
    ]
    cases = []
    for name, app, base in apps:
        status, headers, body = await call_asgi(app, template)
        _expect((status, body) == (200, b"ok"), f"{name} answered {status}")
        if base is not None:
            _expect(any(k == b"ratelimit" for k, _ in headers), f"{name} sent no RateLimit")
        cases.append(async_case(name, partial(call_asgi, app, template), baseline=base))
    return cases


@asynccontextmanager
async def ratelimit_cases(options: Options) -> AsyncIterator[list[Case]]:
    async with AsyncExitStack() as stack:
        cases = _memory_cases()
        cases += await _redis_cases(stack, options.redis_url)
        cases += await _asgi_cases()
        yield cases


GROUP = Group(
    name="ratelimit",
    title=(
        "Admitted rate-limit decisions. memory rows: per hit, vs limits' MemoryStorage "
        f"({MEMORY_WEIGHT}x batch). redis rows: a decision with everything the headers need, "
        "vs limits doing hit + get_window_stats on redis-py. asgi rows: GET / through "
        "RateLimitMiddleware vs a pass-through layer; overhead = difference of medians."
    ),
    iterations=2000,
    cases=ratelimit_cases,
)
