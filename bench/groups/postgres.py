"""Group ``postgres``: the PostgreSQL store's get, set, compare_and_set and rate-limit decision.

The server is a throwaway cluster started here (:class:`~bastion.testing.postgres_server.
PostgresServer`: ``initdb`` in a temporary directory, 127.0.0.1, ``fsync=off`` so the disk does
not dominate). Baselines, in the same run and event loop: the same statement with the same
parameters sent through raw psycopg 3 (``psycopg_pool.AsyncConnectionPool``, autocommit, one
pooled connection per call, as the store does). The store's rows add its key checks, TTL
conversion and error mapping.

``limits`` has no PostgreSQL storage, so the rate-limit decision has no peer on this engine;
its row is divided by the same function call through raw psycopg. The set-up proves that each
bastion call sends one statement (autocommit: one round trip, one transaction).
"""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import psycopg
from psycopg_pool import AsyncConnectionPool

from bastion.core.ratelimit import Rate, Strategy
from bastion.stores import _postgres_sql as sql
from bastion.stores.postgres import PostgresStore, ttl_micros
from bastion.testing.postgres_server import PostgresServer
from bench.group import Group
from bench.measure import async_case

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from bench.group import Options
    from bench.measure import Case

__all__ = ["GROUP"]

VALUE: Final = bytes(range(100))
TTL: Final = 3600.0
PREFIX: Final = "bastion-bench:"
RATES: Final = [Rate(10**6, 60_000_000)]
CHECKS: Final = 20


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(f"postgres bench set-up check failed: {what}")


async def _one_statement_each(label: str, operation: Callable[[], Awaitable[object]]) -> None:
    """Each call sends exactly one statement (counted on psycopg's connection class while
    the check runs): in autocommit mode, one round trip and one transaction."""
    original = psycopg.AsyncConnection.execute
    sent = 0

    async def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal sent
        sent += 1
        return await original(self, *args, **kwargs)

    psycopg.AsyncConnection.execute = counting  # type: ignore[method-assign]
    try:
        for _ in range(CHECKS):
            await operation()
    finally:
        psycopg.AsyncConnection.execute = original  # type: ignore[method-assign]
    _expect(sent == CHECKS, f"{label}: {sent} statements for {CHECKS} calls")


@asynccontextmanager
async def _cases(options: Options) -> AsyncIterator[list[Case]]:
    del options
    async with AsyncExitStack() as stack:
        server = stack.enter_context(PostgresServer())
        dsn = server.dsn
        store = PostgresStore.from_url(dsn, prefix=PREFIX)
        stack.push_async_callback(store.aclose)
        store.migrate()
        await store.set("get", VALUE, TTL)
        await store.set("cas", VALUE, TTL)
        _expect(await store.get("get") == VALUE, "bastion get")
        _expect(await store.compare_and_set("cas", VALUE, VALUE, TTL), "bastion cas")

        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            dsn, kwargs={"autocommit": True}, min_size=1, max_size=4, open=False
        )
        await pool.open()
        stack.push_async_callback(pool.close)

        async def raw(statement: str, params: dict[str, Any]) -> Any:
            async with pool.connection() as conn:
                cursor = await conn.execute(statement, params)
                return await cursor.fetchall() if cursor.description else cursor.rowcount

        ttl = ttl_micros(TTL)
        raw_params: dict[str, dict[str, Any]] = {
            "get": {"key": store.full_key("get"), "now": None},
            "set": {"key": store.full_key("set"), "value": VALUE, "ttl": ttl, "now": None},
            "cas": {
                "key": store.full_key("cas"),
                "value": VALUE,
                "expected": VALUE,
                "ttl": ttl,
                "now": None,
            },
        }
        statements = {"get": sql.GET, "set": sql.SET, "cas": sql.CAS_UPDATE}
        _expect(bytes((await raw(sql.GET, raw_params["get"]))[0][0]) == VALUE, "raw get")
        _expect(bool(await raw(sql.CAS_UPDATE, raw_params["cas"])), "raw cas")
        hit_params = store.rate_params("bench-client", Strategy.SLIDING_WINDOW, RATES, 1)

        ours: dict[str, Callable[[], Awaitable[object]]] = {
            "get": partial(store.get, "get"),
            "set": partial(store.set, "set", VALUE, TTL),
            "cas": partial(store.compare_and_set, "cas", VALUE, VALUE, TTL),
            "rate-limit decision": partial(
                store.hit, "bench-client", Strategy.SLIDING_WINDOW, RATES
            ),
        }
        raws: dict[str, Callable[[], Awaitable[object]]] = {
            op: partial(raw, statements[op], raw_params[op]) for op in statements
        }
        raws["rate-limit decision"] = partial(raw, sql.RL_HIT, hit_params)
        for op, call in ours.items():
            await _one_statement_each(f"bastion {op}", call)
        cases: list[Case] = []
        for op, call in ours.items():
            base = f"postgres {op}: raw psycopg"
            cases += [
                async_case(base, raws[op]),
                async_case(f"postgres {op}: bastion", call, baseline=base),
            ]
        yield cases


GROUP = Group(
    name="postgres",
    title=(
        "The PostgreSQL store (cas = compare_and_set, always winning; 100-byte values, 1 h "
        "TTL; the decision a sliding window never refused) against the same statement "
        "through raw psycopg 3 on the same pool settings. Each row is one round trip and one "
        "transaction (proved before timing)."
    ),
    iterations=500,
    cases=_cases,
)
