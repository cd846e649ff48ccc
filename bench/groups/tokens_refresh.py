"""The ``tokens`` group's refresh rows: a refresh-token rotation on SQLite and on Redis.

Each case rotates a family's current token and keeps the successor for the next operation, so
every timed rotation takes the full path (family read, secret check, successor derived,
record written). The baseline of each store is the smallest generic read-modify-write of one
record on the same store: ``get`` then ``compare_and_set`` of a value of the same size.

The round trips are counted at set-up, outside the timed loop, and written into the case name:
on Redis, the requests the store's connections send during a batch of rotations (the round
trips) and ``INFO commandstats`` before and after it (every command the server ran, by name,
including those a Lua script calls); on
SQLite, a statement trace on the store's connections (``BEGIN`` ... ``COMMIT`` is one
transaction, and so is a write statement outside one; reads outside a transaction are listed
apart). Issue 14's targets: at most 2 round trips on Redis, one transaction on SQLite.

Needs ``bastion.engine.tokens.refresh.RefreshTokens`` (helper ``refresh``'s branch); without
it the group has no rotation rows.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import TYPE_CHECKING, Any, Final

from bench.measure import async_case

if TYPE_CHECKING:
    from collections.abc import Iterator
    from contextlib import AsyncExitStack

    from bench.group import Options
    from bench.measure import Case

__all__ = ["COUNT_ROTATIONS", "Rotator", "available", "rotation_cases"]

COUNT_ROTATIONS: Final = 20
"""Rotations in the counting batch; the figure is per rotation."""
USER: Final = "user-1"
_RECORD: Final = bytes(300)  # about a family record's size
_TTL: Final = 3600.0


def available() -> bool:
    """Whether helper ``refresh``'s manager is importable."""
    try:
        return importlib.util.find_spec("bastion.engine.tokens.refresh") is not None
    except ModuleNotFoundError:
        return False


class Rotator:
    """Rotates one family forever: each call presents the token the previous call got."""

    __slots__ = ("_manager", "token")

    def __init__(self, manager: Any, token: str) -> None:
        self._manager = manager
        self.token = token

    async def __call__(self) -> None:
        rotation = await self._manager.rotate(self.token)
        if rotation.replayed or rotation.token == self.token:
            raise RuntimeError("refresh rotation replayed or kept the same token")
        self.token = rotation.token


async def _rotator(store: Any) -> Rotator:
    from bastion.core.keys import KeyRing  # noqa: PLC0415
    from bastion.engine.tokens import refresh  # noqa: PLC0415

    manager = refresh.RefreshTokens(store, KeyRing.generate())
    token, _info = await manager.issue(USER, client_id="bench", scopes=("read",), epoch=0)
    rotator = Rotator(manager, token)
    first = rotator.token
    await rotator()
    try:  # proof: the token just rotated away is refused as reused (after any grace window,
        # a retry inside it is answered with the same successor, which is also fine)
        again = await manager.rotate(first)
    except Exception as exc:  # any refusal proves that the old token no longer rotates
        if type(exc).__name__ != "TokenRejected":
            raise
    else:
        if not again.replayed or again.token != rotator.token:
            raise RuntimeError("a rotated-away refresh token was accepted as new")
    return rotator


def _baseline(store: Any) -> Any:
    async def read_modify_write() -> None:
        current = await store.get("bench-rmw")
        if not await store.compare_and_set("bench-rmw", current, _RECORD, _TTL):
            raise RuntimeError("baseline compare_and_set lost")

    return read_modify_write


@contextmanager
def _counted_round_trips(counter: list[int]) -> Iterator[None]:
    """Every request the Redis store sends meanwhile (bastion's RESP transport, one payload per
    round trip, and redis-py's connections, one packed send per round trip) adds one."""
    from redis.asyncio.connection import AbstractConnection  # noqa: PLC0415

    from bastion.stores import _resp  # noqa: PLC0415

    lean, packed = _resp.Conn.acall, AbstractConnection.send_packed_command

    async def acall(self: Any, *args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return await lean(self, *args, **kwargs)

    async def send_packed(self: Any, *args: Any, **kwargs: Any) -> None:
        counter[0] += 1
        await packed(self, *args, **kwargs)

    _resp.Conn.acall = acall  # type: ignore[method-assign]
    AbstractConnection.send_packed_command = send_packed  # type: ignore[method-assign]
    try:
        yield
    finally:
        _resp.Conn.acall = lean  # type: ignore[method-assign]
        AbstractConnection.send_packed_command = packed  # type: ignore[method-assign]


async def _redis_counts(client: Any, rotator: Rotator, n: int) -> tuple[int, Counter[str]]:
    """Round trips the store made during ``n`` rotations, and the commands the server ran
    (``INFO commandstats``: those a script calls are counted too)."""

    def calls(info: dict[str, Any]) -> Counter[str]:
        return Counter(
            {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in info.items()}
        )

    before = calls(await client.info("commandstats"))
    trips = [0]
    with _counted_round_trips(trips):
        for _ in range(n):
            await rotator()
    after = calls(await client.info("commandstats"))
    diff = after - before
    diff.pop("info", None)
    return trips[0], diff


def _per(round_trips: int, counts: Counter[str], n: int) -> str:
    parts = ", ".join(f"{name} {count / n:g}" for name, count in sorted(counts.items()))
    return f"{round_trips / n:g} round trips/rotation; server ran {parts}"


@contextmanager
def _traced_sqlite(log: list[str]) -> Iterator[None]:
    """Connections the SQLite store opens meanwhile log every statement into ``log``."""
    import bastion.stores.sqlite as sqlite_module  # noqa: PLC0415

    original = sqlite_module.open_connection

    def traced(*args: Any, **kwargs: Any) -> Any:
        conn = original(*args, **kwargs)
        conn.set_trace_callback(log.append)
        return conn

    sqlite_module.open_connection = traced  # type: ignore[assignment]
    try:
        yield
    finally:
        sqlite_module.open_connection = original  # type: ignore[assignment]


def transactions(statements: list[str]) -> tuple[int, int]:
    """``(transactions, autocommit reads)`` in a statement log (PRAGMAs ignored)."""
    txns = reads = 0
    inside = False
    for text in statements:
        word = text.lstrip().split(None, 1)[0].upper() if text.strip() else ""
        if word == "BEGIN":
            txns += 1
            inside = True
        elif word in {"COMMIT", "END", "ROLLBACK"}:
            inside = False
        elif inside or word == "PRAGMA":
            continue
        elif word in {"INSERT", "UPDATE", "DELETE", "REPLACE"}:
            txns += 1
        elif word in {"SELECT", "WITH"}:
            reads += 1
    return txns, reads


async def _sqlite_cases(stack: AsyncExitStack, directory: Path) -> list[Case]:
    from bastion.stores import open_store  # noqa: PLC0415

    url = f"sqlite:///{directory / 'refresh.db'}"
    log: list[str] = []
    with _traced_sqlite(log):
        counting = open_store(url)
        try:
            rotator = await _rotator(counting)
            log.clear()
            for _ in range(COUNT_ROTATIONS):
                await rotator()
            txns, reads = transactions(log)
        finally:
            await counting.aclose()
    store = open_store(url)
    stack.push_async_callback(store.aclose)
    await store.set("bench-rmw", _RECORD, _TTL)
    rotator = await _rotator(store)
    base = "sqlite: store get + compare_and_set"
    figure = (
        f"{txns / COUNT_ROTATIONS:g} transactions/rotation, "
        f"{reads / COUNT_ROTATIONS:g} reads outside one"
    )
    return [
        async_case(base, _baseline(store)),
        async_case(f"sqlite: RefreshTokens.rotate ({figure})", rotator, baseline=base),
    ]


async def _redis_cases(stack: AsyncExitStack, redis_url: str | None) -> list[Case]:
    from redis.asyncio import Redis  # noqa: PLC0415

    from bastion.stores import open_store  # noqa: PLC0415
    from bastion.testing.redis_server import RedisServer  # noqa: PLC0415

    url = redis_url if redis_url is not None else stack.enter_context(RedisServer()).url
    client = Redis.from_url(url)
    stack.push_async_callback(client.aclose)
    if redis_url is None:
        await client.config_set("appendfsync", "everysec")
    store = open_store(url, prefix="bastion-bench-refresh:")
    stack.push_async_callback(store.aclose)
    await store.set("bench-rmw", _RECORD, _TTL)
    rotator = await _rotator(store)
    await rotator()  # scripts cached (EVALSHA from now on)
    trips, counts = await _redis_counts(client, rotator, COUNT_ROTATIONS)
    base = "redis: store get + compare_and_set"
    return [
        async_case(base, _baseline(store)),
        async_case(
            f"redis: RefreshTokens.rotate ({_per(trips, counts, COUNT_ROTATIONS)})",
            rotator,
            baseline=base,
        ),
    ]


async def rotation_cases(stack: AsyncExitStack, options: Options) -> list[Case]:
    """The SQLite and Redis rotation cases, or none before ``RefreshTokens`` exists."""
    if not available():
        return []
    directory = Path(stack.enter_context(TemporaryDirectory(prefix="bastion-bench-refresh-")))
    cases = await _sqlite_cases(stack, directory)
    cases += await _redis_cases(stack, options.redis_url)
    return cases
