"""Shared fixtures: a Redis server for the session, private servers, unique key prefixes, and
``any_store`` (each bastion store in turn).

``REDIS_URL`` names an existing server to use instead of starting one. When ``redis-server``
is needed and missing, tests skip locally and fail under ``CI=true`` (CI must not go green by
skipping what it was meant to test).
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.stores.sqlite import SQLiteStore
from bastion.testing.postgres_server import INSTALL_HINT as MISSING_POSTGRES
from bastion.testing.postgres_server import PostgresServer, find_initdb
from bastion.testing.redis_cluster import RedisClusterServers, RedisSentinelServers
from bastion.testing.redis_server import RedisServer, find_redis_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from pathlib import Path
    from typing import Any

    from bastion.core.clock import FrozenClock
    from bastion.stores.base import Store

MISSING_REDIS = "redis-server not found; install it with: apt-get install redis-server"


def require_redis_server() -> None:
    """Skip (or, under CI=true, fail) the calling test when redis-server is not installed."""
    if find_redis_server() is not None:
        return
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{MISSING_REDIS} (CI=true: a missing service fails the run)")
    pytest.skip(MISSING_REDIS)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis server shared by the session: ``REDIS_URL`` if set, else one started here."""
    given = os.environ.get("REDIS_URL", "").strip()
    if given:
        yield given
        return
    require_redis_server()
    with RedisServer() as server:
        yield server.url


def require_postgres() -> None:
    """Skip (or, under CI=true, fail) the calling test when PostgreSQL is not installed."""
    if find_initdb() is not None:
        return
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{MISSING_POSTGRES} (CI=true: a missing service fails the run)")
    pytest.skip(MISSING_POSTGRES)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster shared by the session (``initdb`` in a temporary
    directory, 127.0.0.1, a free port); tests keep apart by key prefix (``redis_prefix``)."""
    require_postgres()
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    return postgres_server.dsn


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    require_redis_server()
    with RedisClusterServers() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinelServers]:
    require_redis_server()
    with RedisSentinelServers() as setup:
        yield setup


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test uses, so tests never see each other's keys."""
    return f"bastion-test-{uuid.uuid4().hex}:"


@pytest.fixture
def start_redis_server() -> Iterator[Callable[..., RedisServer]]:
    """Start private ``RedisServer`` instances (for outages, restarts, global stats).

    Each call starts one server with the given keyword arguments; all are closed at teardown.
    """
    require_redis_server()
    servers: list[RedisServer] = []

    def start(**options: Any) -> RedisServer:
        server = RedisServer(**options)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.close()


@pytest_asyncio.fixture(params=["memory", "sqlite", "redis"])
async def any_store(
    request: pytest.FixtureRequest, clock: FrozenClock, tmp_path: Path
) -> AsyncIterator[Store]:
    """The same test on each bastion store: memory, a SQLite file, the session's Redis server
    under a fresh prefix. All on the test module's ``clock`` fixture."""
    if request.param == "memory":
        opened: Store = MemoryStore(clock=clock)
    elif request.param == "sqlite":
        opened = SQLiteStore(tmp_path / "bastion.db", clock=clock)
    else:
        opened = RedisStore.from_url(
            request.getfixturevalue("redis_url"),
            prefix=request.getfixturevalue("redis_prefix"),
            clock=clock,
        )
    yield opened
    await opened.aclose()
