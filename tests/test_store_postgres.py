"""The PostgreSQL store against a real PostgreSQL (``initdb`` in a temporary directory): the
store contract, exact rate limits from 8 processes, the schema, pooler-safe statements, and
faults (a stopped or restarted server: StoreUnavailable, never a 500; afterwards it works and
every acknowledged write is there)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import psycopg
import pytest
import pytest_asyncio

from bastion.core.clock import FrozenClock
from bastion.core.ratelimit import Rate, Strategy
from bastion.errors import ConfigurationError, StoreError, StoreUnavailable
from bastion.stores import open_store
from bastion.stores.postgres import PostgresStore
from bastion.stores.url import redact_url
from bastion.testing.postgres_server import PostgresServer
from bastion.testing.store_contract import SharedStoreContract
from conftest import require_postgres
from test_ratelimit_stores import NOW, count_in_processes

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from bastion.stores.base import Store
    from bastion.testing.store_contract import AdvanceTime


RECONNECT_BOUND = 15.0
"""Seconds within which the store's pools must be back after the server restarted."""


def _with_prefix(url: str, prefix: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix}"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


class TestPostgresStoreContract(SharedStoreContract):
    @pytest_asyncio.fixture
    async def store(
        self, postgres_url: str, redis_prefix: str, clock: FrozenClock
    ) -> AsyncIterator[PostgresStore]:
        store = PostgresStore.from_url(postgres_url, prefix=redis_prefix, clock=clock)
        yield store
        await store.aclose()

    @pytest.fixture
    def advance_time(self, clock: FrozenClock) -> AdvanceTime:
        async def advance(seconds: float) -> None:
            clock.advance(seconds)

        return advance

    @pytest.fixture
    def store_url(self, postgres_url: str, redis_prefix: str) -> str:
        return _with_prefix(postgres_url, redis_prefix)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(Strategy))
def test_rate_limit_exact_from_8_processes(
    strategy: Strategy, postgres_url: str, redis_prefix: str
) -> None:
    def make() -> Store:
        return PostgresStore.from_url(postgres_url, prefix=redis_prefix, clock=FrozenClock(NOW))

    assert count_in_processes(make, strategy, "k") == 100


@pytest.mark.asyncio
async def test_server_clock_expires_entries(postgres_url: str, redis_prefix: str) -> None:
    """With the system clock, expiry is the database server's: a 50 ms TTL is gone soon."""
    store = PostgresStore.from_url(postgres_url, prefix=redis_prefix)
    try:
        await store.set("short", b"v", ttl=0.05)
        await store.set("long", b"v", ttl=60)
        assert await store.get("short") == b"v"
        await asyncio.sleep(0.1)
        assert await store.get("short") is None
        assert await store.get("long") == b"v"
        decision = await store.hit("client", Strategy.TOKEN_BUCKET, [Rate(1, 60_000_000)])
        assert decision[0].allowed
        again = await store.hit("client", Strategy.TOKEN_BUCKET, [Rate(1, 60_000_000)])
        assert not again[0].allowed
        assert 0 < again[0].retry_after <= 60
    finally:
        await store.aclose()


@pytest.mark.asyncio
async def test_schema_is_versioned_and_a_newer_one_refused(postgres_url: str) -> None:
    store = PostgresStore.from_url(postgres_url)
    try:
        assert store.migrate() == 1
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            assert conn.execute("SELECT version FROM bastion_schema").fetchall() == [(1,)]
            conn.execute("UPDATE bastion_schema SET version = 99")
        try:
            fresh = PostgresStore.from_url(postgres_url)
            with pytest.raises(StoreError, match="newer than this bastion"):
                await fresh.get("k")
            await fresh.aclose()
        finally:
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                conn.execute("UPDATE bastion_schema SET version = 1")
    finally:
        await store.aclose()


def test_urls_are_parsed_checked_and_redacted(postgres_url: str) -> None:
    store = open_store(_with_prefix(postgres_url, "app:") + "&timeout=3&sslmode=disable")
    assert isinstance(store, PostgresStore)
    assert store.prefix == "app:"
    assert redact_url("postgresql://u:secret@db:5432/app") == "postgresql://***@db:5432/app"
    assert "secret" not in repr(PostgresStore("postgresql://u:secret@db:5432/app"))
    with pytest.raises(ConfigurationError, match="no option 'colour'"):
        open_store(postgres_url, colour="blue")
    with pytest.raises(ConfigurationError, match="not a valid value"):
        open_store(postgres_url + "?timeout=soon")
    with pytest.raises(ConfigurationError, match="given twice"):
        open_store(postgres_url + "?prefix=a&prefix=b")
    with pytest.raises(ConfigurationError, match="pool_size"):
        PostgresStore(postgres_url, pool_size=0)


@pytest.mark.asyncio
async def test_prepare_false_works_for_transaction_poolers(
    postgres_url: str, redis_prefix: str
) -> None:
    store = PostgresStore.from_url(postgres_url + "?prepare=false", prefix=redis_prefix)
    try:
        for n in range(8):  # past psycopg's automatic prepare threshold (5)
            await store.set("k", b"%d" % n)
            assert await store.get("k") == b"%d" % n
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            rows = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
        assert rows == (0,)  # (this connection's own; the store's never prepare either)
    finally:
        await store.aclose()


# -- faults on a private server ------------------------------------------------------------------


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    require_postgres()
    with PostgresServer() as server:
        yield server


@pytest.mark.slow
@pytest.mark.asyncio
async def test_restart_is_unavailable_then_everything_is_back(
    private_postgres: PostgresServer,
) -> None:
    store = PostgresStore.from_url(private_postgres.dsn, timeout=1.0)
    try:
        await store.set("kept", b"acknowledged")
        assert await asyncio.to_thread(store.sync.compare_and_set, "kept2", None, b"sync")
        private_postgres.stop()
        with pytest.raises(StoreUnavailable):
            await store.get("kept")
        with pytest.raises(StoreUnavailable):
            await store.hit("c", Strategy.FIXED_WINDOW, [Rate(5, 60_000_000)])
        with pytest.raises(StoreUnavailable):
            await asyncio.to_thread(store.sync.get, "kept")
        private_postgres.start()
        # The pools reconnect by themselves (psycopg_pool, with its backoff): within a few
        # seconds, and every call in that window is a StoreUnavailable, never a wrong answer.
        waited = 0.0
        while True:
            try:
                value = await store.get("kept")
                break
            except StoreUnavailable:
                waited += 0.2
                assert waited < RECONNECT_BOUND, "the store did not reconnect after the restart"
                await asyncio.sleep(0.2)
        assert value == b"acknowledged"
        for _ in range(int(RECONNECT_BOUND / 0.2)):
            try:
                synced = await asyncio.to_thread(store.sync.get, "kept2")
                break
            except StoreUnavailable:
                await asyncio.sleep(0.2)
        assert synced == b"sync"
        assert await store.compare_and_set("kept", b"acknowledged", b"after")
        decision = await store.hit("c", Strategy.FIXED_WINDOW, [Rate(5, 60_000_000)])
        assert decision[0].allowed
    finally:
        await store.aclose()


@pytest.mark.asyncio
async def test_read_only_database_is_store_read_only(
    private_postgres: PostgresServer, redis_prefix: str
) -> None:
    store = PostgresStore.from_url(private_postgres.dsn, prefix=redis_prefix)
    try:
        await store.set("k", b"v")
        with psycopg.connect(private_postgres.dsn, autocommit=True) as conn:
            conn.execute("ALTER DATABASE postgres SET default_transaction_read_only = on")
        await store.aclose()
        store = PostgresStore.from_url(private_postgres.dsn, prefix=redis_prefix)
        assert await store.get("k") == b"v"  # reads still work
        with pytest.raises(StoreUnavailable, match="read-only"):
            await store.set("k", b"w")
    finally:
        with psycopg.connect(private_postgres.dsn, autocommit=True) as conn:
            conn.execute("SET default_transaction_read_only = off")
            conn.execute("ALTER DATABASE postgres SET default_transaction_read_only = off")
        await store.aclose()


def test_cli_store_migrate_ping_and_gc(private_postgres: PostgresServer) -> None:
    from test_cli import bastion  # noqa: PLC0415 (the CLI test module's runner)

    done = bastion("store", "migrate", private_postgres.dsn)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"schema version 1 at {redact_url(private_postgres.dsn)}"
    with psycopg.connect(private_postgres.dsn, autocommit=True) as conn:
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables")}
    assert {"bastion_kv", "bastion_ratelimit", "bastion_schema"} <= tables
    assert bastion("store", "ping", private_postgres.dsn).stdout.startswith("ok ")
    purged = bastion("store", "gc", private_postgres.dsn)
    assert purged.stdout.startswith("purged 0 expired entries"), purged.stdout
    other = bastion("store", "migrate", "memory://")
    assert other.stdout.startswith("nothing to do: only PostgreSQL stores")
    private_postgres.stop()
    down = bastion("store", "migrate", private_postgres.dsn)
    assert down.returncode == 1
    assert "unavailable" in down.stderr
    assert "Traceback" not in down.stderr
