"""The child-process side of the contract suite's multi-process tests.

Kept apart from :mod:`bastion.testing.store_contract` so that a spawned child imports only
bastion and the store, not pytest: four children start noticeably faster.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bastion.core.ratelimit import Rate, Strategy
from bastion.stores import open_store
from bastion.stores.base import require_rate_limit

if TYPE_CHECKING:
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Barrier

__all__ = ["cas_increment_worker", "rate_limit_worker"]


def cas_increment_worker(
    store_url: str,
    *,
    key: str,
    increments: int,
    max_attempts: int,
    barrier: Barrier,
    results: Queue[tuple[str, int, int]],
) -> None:
    """Open ``store_url``, wait for every sibling, then race to increment ``key``.

    Reports ``("ok", successful increments, lost compare-and-sets)`` or ``("error", 0, 0)``
    followed by nothing else; the parent checks that the counter equals the sum of successes.
    """
    try:
        won, lost = asyncio.run(_increment(store_url, key, increments, max_attempts, barrier))
    except BaseException as exc:
        results.put((f"error: {type(exc).__name__}: {exc}", 0, 0))
        raise
    results.put(("ok", won, lost))


async def _increment(
    store_url: str, key: str, increments: int, max_attempts: int, barrier: Barrier
) -> tuple[int, int]:
    store = open_store(store_url)
    try:
        await store.get(key)  # open the connection before the race starts
        await asyncio.to_thread(barrier.wait, 30)
        won = lost = 0
        for _ in range(max_attempts):
            if won == increments:
                break
            current = await store.get(key)
            if current is None:
                raise RuntimeError(f"counter {key!r} vanished during the race")
            if await store.compare_and_set(key, current, str(int(current) + 1).encode()):
                won += 1
            else:
                lost += 1
        return won, lost
    finally:
        await store.aclose()


def rate_limit_worker(
    store_url: str,
    *,
    key: str,
    limit: int,
    attempts: int,
    barrier: Barrier,
    results: Queue[tuple[str, int, int]],
) -> None:
    """Open ``store_url``, wait for every sibling, then make ``attempts`` decisions on ``key``
    (``limit`` per day, fixed window). Reports ``("ok", admitted, refused)``, or an error."""
    try:
        admitted = asyncio.run(_decide(store_url, key, limit, attempts, barrier))
    except BaseException as exc:
        results.put((f"error: {type(exc).__name__}: {exc}", 0, 0))
        raise
    results.put(("ok", admitted, attempts - admitted))


async def _decide(store_url: str, key: str, limit: int, attempts: int, barrier: Barrier) -> int:
    store = open_store(store_url)
    try:
        limits = require_rate_limit(store)
        rate = Rate.per(limit, 86_400)
        await limits.hit("warm-up", Strategy.FIXED_WINDOW, [rate])  # connect before the race
        await asyncio.to_thread(barrier.wait, 30)
        admitted = 0
        for _ in range(attempts):
            admitted += (await limits.hit(key, Strategy.FIXED_WINDOW, [rate]))[0].allowed
        return admitted
    finally:
        await store.aclose()
