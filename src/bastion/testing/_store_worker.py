"""The child-process side of the contract suite's multi-process test.

Kept apart from :mod:`bastion.testing.store_contract` so that a spawned child imports only
bastion and the store, not pytest: four children start noticeably faster.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bastion.stores import open_store

if TYPE_CHECKING:
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Barrier

__all__ = ["cas_increment_worker"]


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
