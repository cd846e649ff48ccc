"""The Redis store against a real redis-server.

Time is never slept through: ``advance_time`` shortens the TTLs of the test's keys on the server
(PEXPIRE to PTTL - ms, or DEL when that would be <= 0). Tests that need the whole server to
themselves (command statistics, SCRIPT FLUSH, restarts, passwords, cluster mode) start a
private server with ``start_redis_server``.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import pytest_asyncio
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from bastion.errors import ConfigurationError, StoreError, StoreUnavailable
from bastion.stores.base import Store
from bastion.stores.keyspace import hash_tag, key_slot
from bastion.stores.redis import DEFAULT_PREFIX, RedisStore, ttl_to_milliseconds
from bastion.testing.redis_server import RedisServer
from bastion.testing.store_contract import AdvanceTime, SharedStoreContract

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
    from pathlib import Path

    StartServer = Callable[..., RedisServer]

OUTAGE_BOUND = 5.0
"""Seconds within which every call during an outage must have raised (timeouts are 1 s)."""


def url_with_prefix(url: str, prefix: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "prefix"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("prefix", prefix)])))


def glob_escape(raw: bytes) -> bytes:
    out = bytearray()
    for byte in raw:
        if byte in b"*?[]\\":
            out += b"\\"
        out.append(byte)
    return bytes(out)


async def prefixed_keys(admin: Redis, prefix: str) -> list[bytes]:
    pattern = glob_escape(prefix.encode()) + b"*"
    return [key async for key in admin.scan_iter(match=pattern, count=1000)]


async def shorten_ttls(admin: Redis, prefix: str, seconds: float) -> None:
    """Move the store's time forward by shortening every TTL under ``prefix``."""
    ms = math.ceil(seconds * 1000)
    for key in await prefixed_keys(admin, prefix):
        remaining = await admin.pttl(key)
        if remaining < 0:  # -1: no expiry, -2: already gone
            continue
        if remaining <= ms:
            await admin.delete(key)
        else:
            await admin.pexpire(key, remaining - ms)


async def command_counts(admin: Redis) -> dict[str, int]:
    stats = await admin.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Commands run between two snapshots, leaving out the INFO calls that took them."""
    changed = {name: after[name] - before.get(name, 0) for name in after}
    return {name: n for name, n in changed.items() if n and name != "info"}


@pytest_asyncio.fixture
async def admin(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def redis_store(redis_url: str, redis_prefix: str, admin: Redis) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(redis_url, prefix=redis_prefix)
    yield store
    await store.aclose()
    keys = await prefixed_keys(admin, redis_prefix)
    if keys:
        await admin.delete(*keys)


@pytest.fixture
def private_server(start_redis_server: StartServer) -> RedisServer:
    return start_redis_server()


# -- the contract every store passes --------------------------------------------------------


@pytest.mark.redis
class TestRedisStoreContract(SharedStoreContract):
    @pytest_asyncio.fixture
    async def store(self, redis_store: RedisStore) -> AsyncIterator[RedisStore]:
        yield redis_store

    @pytest.fixture
    def advance_time(self, admin: Redis, redis_prefix: str) -> AdvanceTime:
        async def advance(seconds: float) -> None:
            await shorten_ttls(admin, redis_prefix, seconds)

        return advance

    @pytest.fixture
    def store_url(self, redis_url: str, redis_prefix: str) -> str:
        return url_with_prefix(redis_url, redis_prefix)


# -- protocol, layout and TTLs --------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.asyncio
async def test_is_a_store_and_keys_are_prefix_plus_utf8(
    redis_store: RedisStore, admin: Redis, redis_prefix: str
) -> None:
    assert isinstance(redis_store, Store)
    odd = "sess:{u}\x00\n\r é—🔑 }{"
    await redis_store.set(odd, b"v\x00\xff")
    raw = redis_prefix.encode() + odd.encode("utf-8")
    assert redis_store.full_key(odd) == raw
    assert await admin.get(raw) == b"v\x00\xff"
    assert await redis_store.get(odd) == b"v\x00\xff"
    assert await prefixed_keys(admin, redis_prefix) == [raw]


@pytest.mark.redis
@pytest.mark.asyncio
async def test_prefixes_isolate_stores(redis_url: str, redis_store: RedisStore) -> None:
    other = RedisStore.from_url(redis_url, prefix=redis_store.prefix + "other:")
    try:
        await redis_store.set("k", b"mine")
        assert await other.get("k") is None
        assert await other.compare_and_set("k", None, b"theirs")
        assert await redis_store.get("k") == b"mine"
    finally:
        await other.delete("k")
        await other.aclose()


@pytest.mark.redis
@pytest.mark.asyncio
async def test_ttls_are_milliseconds_on_the_server(redis_store: RedisStore, admin: Redis) -> None:
    key = redis_store.full_key
    await redis_store.set("a", b"1", ttl=10.1)
    assert 9_000 < await admin.pttl(key("a")) <= 10_100
    await redis_store.set("a", b"2")  # a later set replaces the TTL too
    assert await admin.pttl(key("a")) == -1
    assert await redis_store.compare_and_set("b", None, b"1", ttl=30)
    assert 29_000 < await admin.pttl(key("b")) <= 30_000
    assert await redis_store.compare_and_set("b", b"1", b"2", ttl=60)
    assert 59_000 < await admin.pttl(key("b")) <= 60_000
    assert await redis_store.compare_and_set("b", b"2", b"3")
    assert await admin.pttl(key("b")) == -1
    await redis_store.set("huge", b"1", ttl=1e300)  # clamped, not refused by Redis
    assert await admin.pttl(key("huge")) > 10**14
    assert await redis_store.get("huge") == b"1"


@pytest.mark.redis
@pytest.mark.asyncio
async def test_advance_time_expires_without_sleeping(
    redis_store: RedisStore, admin: Redis, redis_prefix: str
) -> None:
    await redis_store.set("short", b"1", ttl=10)
    await redis_store.set("long", b"2", ttl=100)
    await redis_store.set("forever", b"3")
    await shorten_ttls(admin, redis_prefix, 9)
    assert await redis_store.get("short") == b"1"
    await shorten_ttls(admin, redis_prefix, 1.5)
    assert await redis_store.get("short") is None
    assert await redis_store.get("long") == b"2"
    assert 85_000 < await admin.pttl(redis_store.full_key("long")) <= 89_500
    assert await redis_store.get("forever") == b"3"


def test_ttl_to_milliseconds_edges() -> None:
    assert ttl_to_milliseconds(None) == 0
    assert ttl_to_milliseconds(0.0001) == 1  # never PX 0, never shorter than asked
    assert ttl_to_milliseconds(0.0011) == 2
    assert ttl_to_milliseconds(1.1) == 1100
    assert ttl_to_milliseconds(3) == 3000
    assert ttl_to_milliseconds(1e300) == 10**15
    for bad in (0, -1, math.inf, math.nan, True, "5"):
        with pytest.raises(StoreError, match="ttl"):
            ttl_to_milliseconds(bad)  # type: ignore[arg-type]


@given(st.floats(min_value=1e-9, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_ttl_to_milliseconds_rounds_up(ttl: float) -> None:
    ms = ttl_to_milliseconds(ttl)
    assert ms >= 1
    assert ms >= ttl * 1000 - 0.001  # up to float noise below the microsecond
    assert ms < max(ttl * 1000, 1) + 1


@pytest.mark.redis
@pytest.mark.asyncio
async def test_concurrent_create_has_one_winner(redis_url: str, redis_prefix: str) -> None:
    store = RedisStore.from_url(redis_url, prefix=redis_prefix, max_connections=20)
    try:
        results = await asyncio.gather(
            *(store.compare_and_set("race", None, str(i).encode()) for i in range(50))
        )
        assert results.count(True) == 1
        assert await store.get("race") == str(results.index(True)).encode()
        await store.delete("race")
    finally:
        await store.aclose()


# -- one round trip per decision, scripts that survive a flush ------------------------------


@pytest.mark.redis
@pytest.mark.asyncio
async def test_compare_and_set_is_one_round_trip(private_server: RedisServer) -> None:
    store = RedisStore.from_url(private_server.url)
    admin = Redis.from_url(private_server.url)
    try:
        assert await store.compare_and_set("warm", None, b"x")  # connects, caches the script
        before = await command_counts(admin)
        assert await store.compare_and_set("k", None, b"v") is True
        assert await store.compare_and_set("k", None, b"v") is False
        assert await store.compare_and_set("k", b"v", b"w") is True
        assert await store.compare_and_set("k", b"v", b"x") is False
        after = await command_counts(admin)
        # Everything the server ran for four decisions: one EVALSHA each, plus the SET/GET
        # calls made inside the script (2 creates: SET NX; 2 compares: GET, one SET). A
        # client-side GET, a SCRIPT LOAD or a reconnect (HELLO) would show up here.
        assert delta(before, after) == {"evalsha": 4, "set": 3, "get": 2}
        assert await store.get("k") == b"w"
    finally:
        await store.aclose()
        await admin.aclose()


@pytest.mark.redis
@pytest.mark.asyncio
async def test_script_is_loaded_lazily_and_reloaded_after_script_flush(
    private_server: RedisServer,
) -> None:
    store = RedisStore.from_url(private_server.url)
    admin = Redis.from_url(private_server.url)
    try:
        await store.set("k", b"1")  # open the connection first
        before = await command_counts(admin)
        assert await store.compare_and_set("k", b"1", b"2")
        first = delta(before, await command_counts(admin))
        # Not loaded up front: the first call meets NOSCRIPT and falls back to EVAL once.
        assert first == {"evalsha": 1, "eval": 1, "get": 1, "set": 1}

        await admin.script_flush()
        before = await command_counts(admin)
        assert await store.compare_and_set("k", b"2", b"3")
        assert delta(before, await command_counts(admin)) == first
        before = await command_counts(admin)
        assert await store.compare_and_set("k", b"3", b"4")
        assert delta(before, await command_counts(admin)) == {"evalsha": 1, "get": 1, "set": 1}

        await admin.script_flush()
        assert await store.compare_and_set("new", None, b"1")  # the create path recovers too
        assert not await store.compare_and_set("new", None, b"2")
        assert await store.get("k") == b"4"
        assert await store.get("new") == b"1"
    finally:
        await store.aclose()
        await admin.aclose()


# -- Redis Cluster hash slots ---------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.asyncio
async def test_hash_tagged_keys_share_a_slot_on_a_real_cluster_node(
    start_redis_server: StartServer,
) -> None:
    node = start_redis_server(cluster=True)
    admin = Redis.from_url(node.url)
    store = RedisStore(Redis.from_url(node.url), prefix="app:")
    try:
        ids = ["user-42", "a{b}c", "}", "{", "%7D", "é—🔑", "x\x00\ny"]
        for ident in ids:
            group = [store.full_key(hash_tag(ns, ident)) for ns in ("sessions", "index", "")]
            group.append(store.full_key(hash_tag("sessions", ident) + ":tail{z}"))
            slots = {int(await admin.execute_command("CLUSTER", "KEYSLOT", k)) for k in group}
            assert slots == {key_slot(group[0])}, ident
        # The pure-Python slot function agrees with the server on untagged and odd keys too.
        others = ["123456789", "foo", "{}x", "a{}{b}", "{{b}}", "é", "\x00", "k" * 1000]
        for key in others:
            raw = key.encode()
            assert int(await admin.execute_command("CLUSTER", "KEYSLOT", raw)) == key_slot(raw)
        assert key_slot("123456789") == 12739
        # Different identifiers do spread out (the tag is not constant).
        spread = {key_slot(store.full_key(hash_tag("s", f"user-{i}"))) for i in range(50)}
        assert len(spread) > 40
    finally:
        await store.aclose()
        await admin.aclose()


def test_prefix_must_not_capture_the_hash_tag() -> None:
    for prefix in ("app{", "app}", "{tenant}:"):
        with pytest.raises(ConfigurationError, match="brace") as info:
            RedisStore.from_url("redis://127.0.0.1:1/0", prefix=prefix)
        assert info.value.setting == "prefix"
    with pytest.raises(ConfigurationError, match="brace"):
        RedisStore.from_url("redis://127.0.0.1:1/0?prefix=%7Bx%7D")


# -- outages: bounded failure, then everything acknowledged is still there ------------------


async def fails_unavailable(call: Awaitable[Any]) -> tuple[StoreUnavailable, float]:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        # A hang would raise TimeoutError here, which pytest.raises does not accept.
        await asyncio.wait_for(call, timeout=OUTAGE_BOUND)
    return info.value, time.monotonic() - started


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_outage_is_bounded_and_loses_no_acknowledged_write(
    start_redis_server: StartServer, how: str
) -> None:
    server = start_redis_server()
    store = RedisStore.from_url(server.url, socket_timeout=1.0, connect_timeout=1.0)
    admin = Redis.from_url(server.url)
    try:
        acknowledged = {f"k{i}": f"v{i}".encode() for i in range(20)}
        for key, value in acknowledged.items():
            await store.set(key, value)
        await store.set("ttl", b"t", ttl=3600)
        assert await store.compare_and_set("created", None, b"c")
        await store.set("updated", b"old")
        assert await store.compare_and_set("updated", b"old", b"new")
        await store.set("deleted", b"x")
        assert await store.delete("deleted")
        acknowledged |= {"ttl": b"t", "created": b"c", "updated": b"new"}

        getattr(server, how)()  # stop(): SIGTERM; kill(): SIGKILL, a crash
        assert not server.running
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: store.get("k1"),
            lambda: store.set("k1", b"lost?"),
            lambda: store.delete("k2"),
            lambda: store.compare_and_set("created", b"c", b"lost?"),
            lambda: store.compare_and_set("fresh", None, b"lost?"),
        ]
        for _ in range(2):  # still unavailable on a second try: nothing caches the outage
            for call in calls:
                error, elapsed = await fails_unavailable(call())
                assert elapsed < OUTAGE_BOUND
                assert f"127.0.0.1:{server.port}" in str(error)

        port = server.port
        server.restart()
        assert server.running
        assert server.port == port
        for key, value in acknowledged.items():
            assert await store.get(key) == value, key  # the same store object reconnects
        assert await store.get("deleted") is None
        assert await store.get("fresh") is None
        assert await admin.pttl(store.full_key("ttl")) > 3_500_000
        # The restart emptied the script cache: compare_and_set recovers from NOSCRIPT.
        assert await store.compare_and_set("updated", b"new", b"newer")
        assert await store.get("updated") == b"newer"
    finally:
        await store.aclose()
        await admin.aclose()


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.asyncio
async def test_restart_while_idle_is_invisible(private_server: RedisServer) -> None:
    store = RedisStore.from_url(private_server.url)
    try:
        await store.set("k", b"v")
        # In a thread, so the event loop keeps running through the restart as an app's does
        # and sees the pooled connection's EOF.
        await asyncio.to_thread(private_server.restart)
        assert await store.get("k") == b"v"  # dead connection replaced, no error surfaces
        assert await store.compare_and_set("k", b"v", b"w")
    finally:
        await store.aclose()


@pytest.fixture
def silent_peer() -> Iterator[int]:
    """A TCP port that completes the handshake (the kernel backlog) but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@pytest.mark.asyncio
async def test_a_server_that_never_answers_times_out(silent_peer: int) -> None:
    store = RedisStore.from_url(
        f"redis://127.0.0.1:{silent_peer}/0", socket_timeout=0.2, connect_timeout=0.2
    )
    try:
        error, elapsed = await fails_unavailable(store.get("k"))
        assert elapsed < 2.0
        assert f"127.0.0.1:{silent_peer}" in str(error)
    finally:
        await store.aclose()


# -- errors, passwords, configuration, closing ----------------------------------------------


@pytest.mark.redis
@pytest.mark.asyncio
async def test_error_replies_are_store_errors_not_outages(
    redis_store: RedisStore, admin: Redis
) -> None:
    await admin.hset(redis_store.full_key("h"), "field", "value")  # type: ignore[misc]
    for call in (redis_store.get("h"), redis_store.compare_and_set("h", b"x", b"y", ttl=5)):
        with pytest.raises(StoreError, match="WRONGTYPE") as info:
            await call
        assert not isinstance(info.value, StoreUnavailable)
    # Create-if-absent sees a key of another type as present (SET NX), so it declines.
    assert await redis_store.compare_and_set("h", None, b"y") is False
    await redis_store.set("h", b"replaced")  # SET replaces a key of any type
    assert await redis_store.get("h") == b"replaced"


@pytest.mark.redis
@pytest.mark.asyncio
async def test_messages_never_contain_the_password(private_server: RedisServer) -> None:
    admin = Redis.from_url(private_server.url)
    secret = "Correct-Horse-9f2c"
    wrong = "Wrong-Battery-71aa"
    await admin.config_set("requirepass", secret)
    await admin.aclose()
    port = private_server.port

    intruder = RedisStore.from_url(f"redis://:{wrong}@127.0.0.1:{port}/0")
    good = RedisStore.from_url(f"redis://:{secret}@127.0.0.1:{port}/0")
    try:
        with pytest.raises(StoreUnavailable) as info:
            await intruder.get("k")
        assert f"127.0.0.1:{port}" in str(info.value)
        assert wrong not in str(info.value)
        assert wrong not in repr(intruder)

        await good.set("k", b"v")
        assert await good.get("k") == b"v"
        assert secret not in repr(good)
        private_server.stop()
        error, _ = await fails_unavailable(good.get("k"))
        assert secret not in str(error)
        assert f"127.0.0.1:{port}" in str(error)
    finally:
        await intruder.aclose()
        await good.aclose()


def test_from_url_configuration() -> None:
    with pytest.raises(ConfigurationError, match="scheme") as info:
        RedisStore.from_url("http://127.0.0.1:6379/0")
    assert info.value.setting == "url"
    with pytest.raises(ConfigurationError, match="once"):
        RedisStore.from_url("redis://127.0.0.1:1/0?prefix=a:&prefix=b:")
    with pytest.raises(ConfigurationError, match="both"):
        RedisStore.from_url("redis://127.0.0.1:1/0?prefix=a:", prefix="b:")
    with pytest.raises(ConfigurationError, match="decode_responses"):
        RedisStore.from_url("redis://127.0.0.1:1/0", decode_responses=True)
    for bad in (0, -1.0, math.inf, True):
        with pytest.raises(ConfigurationError, match="socket_timeout"):
            RedisStore.from_url("redis://127.0.0.1:1/0", socket_timeout=bad)
        with pytest.raises(ConfigurationError, match="connect_timeout"):
            RedisStore.from_url("redis://127.0.0.1:1/0", connect_timeout=bad)
    with pytest.raises(ConfigurationError, match="decode_responses"):
        RedisStore(Redis(decode_responses=True))
    with pytest.raises(ConfigurationError, match="max_conections"):
        RedisStore.from_url("redis://127.0.0.1:1/0", max_conections=5)  # misspelt
    with pytest.raises(ConfigurationError, match=r"redis\.asyncio\.Redis"):
        RedisStore(object())  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_from_url_reads_prefix_and_keeps_other_options() -> None:
    store = RedisStore.from_url(
        "redis://:pw-5d1e@db.example:6390/3?prefix=tenant%3A7%3A&health_check_interval=5",
        clock=None,
    )
    try:
        assert store.prefix == "tenant:7:"
        assert store.full_key("k") == b"tenant%3A7:k"  # inner colons escaped: one namespace
        assert repr(store) == "RedisStore(server='db.example:6390 db 3', prefix='tenant:7:')"
        assert "pw-5d1e" not in repr(store)
    finally:
        await store.aclose()
    ipv6 = RedisStore.from_url("redis://[::1]:6379/0")
    assert "'[::1]:6379 db 0'" in repr(ipv6)
    await ipv6.aclose()
    default = RedisStore.from_url("redis://127.0.0.1:1/0")
    assert default.prefix == DEFAULT_PREFIX
    await default.aclose()


@pytest.mark.redis
@pytest.mark.asyncio
async def test_aclose_closes_the_pool(redis_url: str, admin: Redis, redis_prefix: str) -> None:
    name = redis_prefix.rstrip(":")
    store = RedisStore.from_url(redis_url, prefix=redis_prefix, client_name=name)
    await store.set("k", b"v")
    assert name in {c["name"] for c in await admin.client_list()}
    await store.aclose()
    await store.aclose()  # idempotent
    assert name not in {c["name"] for c in await admin.client_list()}
    with pytest.raises(StoreError, match="aclose"):
        await store.get("k")
    await admin.delete(redis_prefix.encode() + b"k")


def test_redis_server_helper_says_how_to_install_a_missing_binary(tmp_path: Path) -> None:
    server = RedisServer(executable="no-such-redis-server-binary", directory=tmp_path)
    with pytest.raises(FileNotFoundError, match="apt-get install redis-server"):
        server.start()
    assert not server.running
