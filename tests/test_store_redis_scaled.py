"""The Redis store on a real Redis Cluster (3 primaries, 1 replica each) and a real Sentinel
set-up (primary, replica, 3 Sentinels): the store contract, exact rate limits from 8 processes,
routing (MOVED, ASK, NOSCRIPT on a promoted replica, CROSSSLOT refused before sending), and
failovers (a killed primary: StoreUnavailable in the window, never a wrong answer; afterwards
everything works and what was acknowledged and replicated is there)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from redis import Redis

from bastion.core.clock import FrozenClock
from bastion.core.ratelimit import Rate, Strategy
from bastion.errors import ConfigurationError, StoreUnavailable
from bastion.stores import open_store
from bastion.stores.keyspace import key_slot
from bastion.stores.redis import RedisStore
from bastion.stores.url import redact_url
from bastion.testing.redis_cluster import command
from bastion.testing.store_contract import AdvanceTime, SharedStoreContract
from scaled_redis import fresh_cluster, fresh_sentinel, shorten_ttls_on
from test_ratelimit_stores import ATTEMPTS, NOW, count_in_processes

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from bastion.stores.base import Store
    from bastion.testing.redis_cluster import RedisClusterServers, RedisSentinelServers
    from bastion.testing.redis_server import RedisServer

__all__ = ["fresh_cluster", "fresh_sentinel"]  # fixtures, imported for this module's tests

pytestmark = pytest.mark.redis


def _with_prefix(url: str, prefix: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix}"


# -- the contract -------------------------------------------------------------------------------


class TestRedisClusterContract(SharedStoreContract):
    @pytest_asyncio.fixture
    async def store(
        self, redis_cluster: RedisClusterServers, redis_prefix: str
    ) -> AsyncIterator[RedisStore]:
        store = RedisStore.from_url(redis_cluster.url, prefix=redis_prefix)
        yield store
        await store.aclose()

    @pytest.fixture
    def advance_time(self, redis_cluster: RedisClusterServers, redis_prefix: str) -> AdvanceTime:
        async def advance(seconds: float) -> None:
            await asyncio.to_thread(shorten_ttls_on, redis_cluster.nodes, redis_prefix, seconds)

        return advance

    @pytest.fixture
    def store_url(self, redis_cluster: RedisClusterServers, redis_prefix: str) -> str:
        return _with_prefix(redis_cluster.url, redis_prefix)


class TestRedisSentinelContract(SharedStoreContract):
    @pytest_asyncio.fixture
    async def store(
        self, redis_sentinel: RedisSentinelServers, redis_prefix: str
    ) -> AsyncIterator[RedisStore]:
        store = RedisStore.from_url(redis_sentinel.url, prefix=redis_prefix)
        yield store
        await store.aclose()

    @pytest.fixture
    def advance_time(self, redis_sentinel: RedisSentinelServers, redis_prefix: str) -> AdvanceTime:
        async def advance(seconds: float) -> None:
            primary = redis_sentinel.primary()
            await asyncio.to_thread(shorten_ttls_on, [primary], redis_prefix, seconds)

        return advance

    @pytest.fixture
    def store_url(self, redis_sentinel: RedisSentinelServers, redis_prefix: str) -> str:
        return _with_prefix(redis_sentinel.url, redis_prefix)


# -- exact rate limits from 8 processes -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(Strategy))
def test_cluster_rate_limit_exact_from_8_processes(
    strategy: Strategy, redis_cluster: RedisClusterServers, redis_prefix: str
) -> None:
    url = redis_cluster.url

    def make() -> Store:
        return RedisStore.from_url(url, prefix=redis_prefix, clock=FrozenClock(NOW))

    assert ATTEMPTS == 2000
    assert count_in_processes(make, strategy, "k") == 100


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(Strategy))
def test_sentinel_rate_limit_exact_from_8_processes(
    strategy: Strategy, redis_sentinel: RedisSentinelServers, redis_prefix: str
) -> None:
    url = redis_sentinel.url

    def make() -> Store:
        return RedisStore.from_url(url, prefix=redis_prefix, clock=FrozenClock(NOW))

    assert count_in_processes(make, strategy, "k") == 100


# -- URLs -------------------------------------------------------------------------------------


def test_scaled_urls_are_parsed_and_redacted() -> None:
    store = open_store("redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001?prefix=app:")
    assert isinstance(store, RedisStore)
    assert store.topology is not None
    assert store.topology.kind == "cluster"
    assert store.topology.nodes == (("127.0.0.1", 7000), ("127.0.0.1", 7001))
    assert "pw" not in repr(store)
    assert store.prefix == "app:"
    sentinel = open_store("redis+sentinel://127.0.0.1:26379,127.0.0.2/main?db=2")
    assert isinstance(sentinel, RedisStore)
    assert sentinel.topology is not None
    assert sentinel.topology.nodes == (("127.0.0.1", 26379), ("127.0.0.2", 26379))
    assert sentinel.topology.service == "main"
    assert redact_url("redis+cluster://u:secret@h1:1,h2:2") == "redis+cluster://***@h1:1,h2:2"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://127.0.0.1:7000/3", "only database 0"),
        ("redis+sentinel://127.0.0.1:26379", "names the service"),
        ("redis+sentinel://127.0.0.1:26379/a/b", "names the service"),
        ("redis+cluster://127.0.0.1:x", "not a number"),
        ("redis+cluster://127.0.0.1:1,,127.0.0.1:2", "empty host"),
    ],
)
def test_bad_scaled_urls_are_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        open_store(url)


def test_scaled_urls_refuse_the_redis_py_transport() -> None:
    with pytest.raises(ConfigurationError, match="RESP transport") as caught:
        RedisStore.from_url("redis+cluster://127.0.0.1:7000", transport="redis-py")
    assert caught.value.setting == "transport"


# -- cluster routing --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_cluster_spreads_keys_over_every_primary(
    redis_cluster: RedisClusterServers, redis_prefix: str
) -> None:
    store = RedisStore.from_url(redis_cluster.url, prefix=redis_prefix)
    try:
        keys = [f"user-{n}" for n in range(60)]
        for key in keys:
            await store.set(key, key.encode())
        assert [await store.get(key) for key in keys] == [key.encode() for key in keys]
        owners = {redis_cluster.primary_of(store.full_key(key)).port for key in keys}
        assert len(owners) == 3  # the keys really live on three different primaries
    finally:
        await store.aclose()


@pytest.mark.asyncio
async def test_cluster_get_many_across_slots_reads_each_slot(
    redis_cluster: RedisClusterServers, redis_prefix: str
) -> None:
    """Keys of several slots: one MGET per slot, never one CROSSSLOT command."""
    store = RedisStore.from_url(redis_cluster.url, prefix=redis_prefix)
    try:
        keys = ["alpha", "beta", "gamma", "{u}:a", "{u}:b"]
        assert len({key_slot(store.full_key(key)) for key in keys}) >= 3
        for key in keys[::2]:
            await store.set(key, key.encode())
        expected = [b"alpha", None, b"gamma", None, b"{u}:b"]
        assert await store.get_many(keys) == expected
        assert await asyncio.to_thread(store.sync.get_many, keys) == expected
    finally:
        await store.aclose()


@pytest.mark.asyncio
async def test_cluster_compare_and_set_read_across_slots_falls_back(
    redis_cluster: RedisClusterServers, redis_prefix: str
) -> None:
    store = RedisStore.from_url(redis_cluster.url, prefix=redis_prefix)
    try:
        await store.set("other", b"o")
        won, current, read = await store.compare_and_set_read("mine", None, b"v", None, "other")
        assert (won, current, read) == (True, b"v", b"o")
        lost = await asyncio.to_thread(
            store.sync.compare_and_set_read, "mine", None, b"w", None, "other"
        )
        assert lost == (False, b"v", b"o")
    finally:
        await store.aclose()


@pytest.mark.asyncio
async def test_cluster_follows_moved_after_a_slot_migration(
    fresh_cluster: RedisClusterServers, redis_prefix: str
) -> None:
    """A slot moved to another primary behind the store's back: the stale table sends to the
    old owner, which answers MOVED; the store follows it and updates the table."""
    store = RedisStore.from_url(fresh_cluster.url, prefix=redis_prefix)
    try:
        key = "migrating"
        full = store.full_key(key)
        await store.set(key, b"before")
        source = fresh_cluster.primary_of(full)
        target = next(
            node
            for node in fresh_cluster.nodes
            if node is not source and command(node.host, node.port, "ROLE")[0] == "master"
        )
        slot = key_slot(full)
        _migrate_slot(fresh_cluster, slot, source, target, [full])
        assert fresh_cluster.primary_of(full) is target
        assert await store.get(key) == b"before"  # MOVED followed
        await store.set(key, b"after")
        assert await asyncio.to_thread(store.sync.get, key) == b"after"
        decisions = await store.hit(key, Strategy.FIXED_WINDOW, [Rate(1, 60_000_000)])
        assert decisions[0].allowed
    finally:
        await store.aclose()


def _migrate_slot(
    cluster: RedisClusterServers,
    slot: int,
    src: RedisServer,
    dst: RedisServer,
    keys: list[bytes],
) -> None:
    src_id = command(src.host, src.port, "CLUSTER", "MYID")
    dst_id = command(dst.host, dst.port, "CLUSTER", "MYID")
    command(dst.host, dst.port, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", src_id)
    command(src.host, src.port, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", dst_id)
    for key in keys:
        command(src.host, src.port, "MIGRATE", dst.host, str(dst.port), key, "0", "5000")
    for node in cluster.nodes:
        if command(node.host, node.port, "ROLE")[0] == "master":
            command(node.host, node.port, "CLUSTER", "SETSLOT", str(slot), "NODE", dst_id)
    cluster.wait_until_healthy()


@pytest.mark.asyncio
async def test_cluster_follows_ask_during_a_migration(
    fresh_cluster: RedisClusterServers, redis_prefix: str
) -> None:
    """Mid-migration: the key already moved, the slot not yet. The old owner answers ASK; the
    store sends ASKING and the command to the new node, on one connection."""
    store = RedisStore.from_url(fresh_cluster.url, prefix=redis_prefix)
    try:
        key = "asked"
        full = store.full_key(key)
        await store.set(key, b"v1")
        source = fresh_cluster.primary_of(full)
        target = next(
            node
            for node in fresh_cluster.nodes
            if node is not source and command(node.host, node.port, "ROLE")[0] == "master"
        )
        slot = str(key_slot(full))
        src_id = command(source.host, source.port, "CLUSTER", "MYID")
        dst_id = command(target.host, target.port, "CLUSTER", "MYID")
        command(target.host, target.port, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        command(source.host, source.port, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        command(
            source.host, source.port, "MIGRATE", target.host, str(target.port), full, "0", "5000"
        )
        assert await store.get(key) == b"v1"  # ASK followed
        assert await asyncio.to_thread(store.sync.get, key) == b"v1"
        assert await store.compare_and_set(key, b"v1", b"v2")
        assert command(target.host, target.port, "ASKING") == "OK"
        with Redis(host=target.host, port=target.port) as direct:
            direct.execute_command("ASKING")
            assert direct.get(full) == b"v2"  # written on the importing node
    finally:
        await store.aclose()


# -- failovers ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.asyncio
async def test_cluster_primary_killed_mid_run(
    fresh_cluster: RedisClusterServers, redis_prefix: str
) -> None:
    store = RedisStore.from_url(fresh_cluster.url, prefix=redis_prefix, socket_timeout=1.0)
    try:
        key = "session:{alice}"
        full = store.full_key(key)
        await store.set(key, b"acknowledged")
        primary = fresh_cluster.primary_of(full)
        # Wait until the replica has the write (replication is asynchronous; see the docs'
        # WAIT option): then a failover must not lose it.
        assert command(primary.host, primary.port, "WAIT", "1", "2000") == 1
        primary.kill()
        outcomes: list[str] = []
        while True:
            try:
                value = await store.get(key)
            except StoreUnavailable:
                outcomes.append("unavailable")
                await asyncio.sleep(0.1)
                continue
            break
        assert value == b"acknowledged"
        assert outcomes, "a killed primary answered nothing but the store never said so"
        assert set(outcomes) == {"unavailable"}  # never a wrong answer, never another error
        fresh_cluster.wait_until_healthy()
        assert await store.compare_and_set(key, b"acknowledged", b"after")
        decisions = await store.hit("alice", Strategy.TOKEN_BUCKET, [Rate(2, 60_000_000)])
        assert decisions[0].allowed  # NOSCRIPT on the promoted replica was handled
    finally:
        await store.aclose()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_sentinel_failover_re_resolves_the_primary(
    fresh_sentinel: RedisSentinelServers, redis_prefix: str
) -> None:
    store = RedisStore.from_url(fresh_sentinel.url, prefix=redis_prefix, socket_timeout=1.0)
    try:
        await store.set("kept", b"acknowledged")
        old = fresh_sentinel.primary()
        assert command(old.host, old.port, "WAIT", "1", "2000") == 1
        new = await asyncio.to_thread(fresh_sentinel.fail_over)
        assert new is not old
        assert await store.get("kept") == b"acknowledged"
        assert await store.compare_and_set("kept", b"acknowledged", b"after")
        assert await asyncio.to_thread(store.sync.get, "kept") == b"after"
        decisions = await store.hit("bob", Strategy.SLIDING_WINDOW, [Rate(1, 60_000_000)])
        assert decisions[0].allowed
    finally:
        await store.aclose()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_sentinel_with_every_server_down_is_unavailable(
    fresh_sentinel: RedisSentinelServers, redis_prefix: str
) -> None:
    store = RedisStore.from_url(fresh_sentinel.url, prefix=redis_prefix, socket_timeout=1.0)
    try:
        await store.set("k", b"v")
        for server in fresh_sentinel.servers:
            server.kill()
        with pytest.raises(StoreUnavailable):
            await store.get("k")
        with pytest.raises(StoreUnavailable):
            await asyncio.to_thread(store.sync.get, "k")
    finally:
        await store.aclose()


# -- WAIT: writes acknowledged only once replicas have them --------------------------------------


@pytest.mark.asyncio
async def test_wait_replicas_acknowledges_only_replicated_writes(
    redis_sentinel: RedisSentinelServers, redis_prefix: str
) -> None:
    url = _with_prefix(redis_sentinel.url, redis_prefix)
    store = RedisStore.from_url(url + "&wait_replicas=1&wait_timeout=2")
    try:
        await store.set("w", b"1")
        assert await store.compare_and_set("w", b"1", b"2")
        assert await asyncio.to_thread(store.sync.compare_and_set, "w", b"2", b"3")
        replica = next(s for s in redis_sentinel.servers if s is not redis_sentinel.primary())
        with Redis(host=replica.host, port=replica.port) as direct:
            assert direct.get(store.full_key("w")) == b"3"  # on the replica when acknowledged
        assert await store.delete("w")
    finally:
        await store.aclose()


@pytest.mark.asyncio
async def test_wait_for_more_replicas_than_exist_is_not_acknowledged(
    redis_sentinel: RedisSentinelServers, redis_prefix: str
) -> None:
    store = RedisStore.from_url(
        redis_sentinel.url, prefix=redis_prefix, wait_replicas=2, wait_timeout=0.2
    )
    try:
        with pytest.raises(StoreUnavailable, match="not acknowledged"):
            await store.set("w", b"1")
        with pytest.raises(StoreUnavailable, match="not acknowledged"):
            await asyncio.to_thread(store.sync.set, "w", b"1")
        assert await store.get("w") == b"1"  # written on the primary, never acknowledged
    finally:
        await store.aclose()


@pytest.mark.asyncio
async def test_wait_replicas_on_the_cluster(
    redis_cluster: RedisClusterServers, redis_prefix: str
) -> None:
    store = RedisStore.from_url(redis_cluster.url, prefix=redis_prefix, wait_replicas=1)
    try:
        for n in range(12):
            await store.set(f"k{n}", b"v")
        assert await store.compare_and_set("k1", b"v", b"w")
    finally:
        await store.aclose()


def test_wait_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="whole number") as caught:
        RedisStore.from_url("redis://127.0.0.1:6390/0", wait_replicas=-1)
    assert caught.value.setting == "wait_replicas"
    with pytest.raises(ConfigurationError, match="RESP transport"):
        RedisStore.from_url("redis://127.0.0.1:6390/0?wait_replicas=1", transport="redis-py")
    with pytest.raises(ConfigurationError, match="not a number"):
        RedisStore.from_url("redis://127.0.0.1:6390/0?wait_replicas=x")
    with pytest.raises(ConfigurationError, match="wait_timeout"):
        RedisStore.from_url("redis://127.0.0.1:6390/0", wait_replicas=1, wait_timeout=0)
