"""Refresh-token families on real stores (memory, a SQLite file, Redis): rotation, grace-window
retries, reuse detection, the absolute lifetime, the user's epoch, DPoP binding, key rotation,
store outages and the round trips of one rotation."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest
import redis

from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing, SecretKey
from bastion.core.sessions.index import Epoch, encode_epoch
from bastion.core.tokens.reasons import TokenReason, TokenRejected
from bastion.engine.sessions.registry import epoch_key
from bastion.engine.tokens.refresh import (
    RefreshPolicy,
    RefreshTokens,
    Rotation,
    family_key,
)
from bastion.errors import StoreUnavailable
from bastion.stores.redis import RedisStore
from bastion.stores.sqlite import SQLiteStore
from bastion.testing.audit import RecordingAuditSink

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from bastion.stores.base import Store
    from bastion.testing.redis_server import RedisServer

OLD = SecretKey(b"o" * 32)

pytestmark = pytest.mark.asyncio


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(1_700_000_000.0)


@pytest.fixture
def sink() -> RecordingAuditSink:
    return RecordingAuditSink()


def _tokens(
    store: Store,
    clock: FrozenClock,
    sink: RecordingAuditSink | None = None,
    ring: KeyRing | None = None,
    **policy: Any,
) -> RefreshTokens:
    auditor = None
    if sink is not None:
        auditor = Auditor(IdentifierHasher(SecretKey(b"a" * 32)), clock, sink, aggregation=None)
    return RefreshTokens(
        store,
        ring or KeyRing(OLD),
        policy=RefreshPolicy(**policy),
        clock=clock,
        auditor=auditor,
    )


async def _reason(call: Any) -> TokenReason:
    with pytest.raises(TokenRejected) as caught:
        await call
    return caught.value.reason


async def test_rotation_chain(any_store: Store, clock: FrozenClock) -> None:
    tokens = _tokens(any_store, clock)
    first, info = await tokens.issue("alice", client_id="app", scopes=("read",), epoch=0)
    assert first.startswith("brt_")
    assert info.generation == 0
    clock.advance(60)
    second = await tokens.rotate(first)
    assert not second.replayed
    assert second.token != first
    assert second.family.generation == 1
    assert second.family.expires_at == info.expires_at
    assert (second.family.user_id, second.family.scopes) == ("alice", ("read",))
    assert await tokens.inspect(second.token) == second.family
    assert await _reason(tokens.inspect(first)) is TokenReason.UNKNOWN
    clock.advance(60)
    third = await tokens.rotate(second.token)
    assert third.family.generation == 2
    # nothing of a secret is stored
    raw = await any_store.get(family_key(info.family_id))
    assert raw is not None
    for text in (first, second.token, third.token):
        assert text.split(".")[1].encode() not in raw


async def test_grace_retry_gets_the_same_successor(any_store: Store, clock: FrozenClock) -> None:
    tokens = _tokens(any_store, clock, grace=10)
    first, _ = await tokens.issue("alice", epoch=0)
    rotated = await tokens.rotate(first)
    clock.advance(10)
    again = await tokens.rotate(first)
    assert again.replayed
    assert again.token == rotated.token
    assert again.family.generation == 1


async def test_retry_after_grace_is_reuse(
    any_store: Store, clock: FrozenClock, sink: RecordingAuditSink
) -> None:
    tokens = _tokens(any_store, clock, sink, grace=10)
    first, _info = await tokens.issue("alice", epoch=0)
    rotated = await tokens.rotate(first)
    clock.advance(10.5)
    assert await _reason(tokens.rotate(first)) is TokenReason.REUSED
    assert await _reason(tokens.rotate(rotated.token)) is TokenReason.REVOKED
    assert sink.names() == ["authn_token_reuse"]


async def test_replay_after_rotation_revokes_the_family(
    any_store: Store, clock: FrozenClock, sink: RecordingAuditSink
) -> None:
    tokens = _tokens(any_store, clock, sink, grace=0)
    first, info = await tokens.issue("alice", client_id="app", epoch=0)
    second = await tokens.rotate(first)
    clock.advance(1)
    third = await tokens.rotate(second.token)
    clock.advance(1)
    # the thief replays the oldest token: the whole family dies
    assert await _reason(tokens.rotate(first)) is TokenReason.REUSED
    assert await _reason(tokens.rotate(third.token)) is TokenReason.REVOKED
    assert await _reason(tokens.rotate(second.token)) is TokenReason.REVOKED
    assert await _reason(tokens.inspect(third.token)) is TokenReason.REVOKED
    [event] = sink.events
    text = json.dumps(event.to_dict())
    assert info.family_id in text
    for token in (first, second.token, third.token):
        assert token not in text
        assert token.split(".")[1] not in text
    assert event.details["kind"] == "refresh"


async def test_absolute_lifetime_is_not_extended(any_store: Store, clock: FrozenClock) -> None:
    tokens = _tokens(any_store, clock, lifetime=100, grace=0)
    token, info = await tokens.issue("alice", epoch=0)
    for _ in range(9):
        clock.advance(11)
        rotation = await tokens.rotate(token)
        assert rotation.family.expires_at == info.expires_at
        token = rotation.token
    clock.advance(info.expires_at - clock.now())
    assert await _reason(tokens.rotate(token)) is TokenReason.EXPIRED


async def test_idle_timeout(any_store: Store, clock: FrozenClock) -> None:
    tokens = _tokens(any_store, clock, lifetime=1000, idle=100)
    token, _ = await tokens.issue("alice", epoch=0)
    clock.advance(99)
    token = (await tokens.rotate(token)).token
    clock.advance(101)
    assert await _reason(tokens.rotate(token)) is TokenReason.EXPIRED


async def test_refresh_after_the_epoch_rose_is_revoked(
    any_store: Store, clock: FrozenClock
) -> None:
    tokens = _tokens(any_store, clock)
    await any_store.set(epoch_key("alice"), encode_epoch(Epoch(5, clock.now())))
    token, _ = await tokens.issue("alice", epoch=5)
    token = (await tokens.rotate(token)).token
    # "log out everywhere" raises the epoch (what sessions' revoke_all writes)
    await any_store.set(epoch_key("alice"), encode_epoch(Epoch(6, clock.now())))
    assert await _reason(tokens.rotate(token)) is TokenReason.REVOKED
    assert await _reason(tokens.inspect(token)) is TokenReason.REVOKED
    # the refusal left a tombstone: an epoch record that later expires revives nothing
    await any_store.delete(epoch_key("alice"))
    assert await _reason(tokens.rotate(token)) is TokenReason.REVOKED


async def test_epoch_record_lost_refuses_a_later_epoch_family(
    any_store: Store, clock: FrozenClock
) -> None:
    tokens = _tokens(any_store, clock)
    token, _ = await tokens.issue("alice", epoch=5)  # no epoch record stored
    assert await _reason(tokens.rotate(token)) is TokenReason.REVOKED
    zero, _ = await tokens.issue("bob", epoch=0)
    assert isinstance(await tokens.rotate(zero), Rotation)
    floor, _ = await tokens.issue("carol", epoch=0)
    assert await _reason(tokens.rotate(floor, current_epoch=1)) is TokenReason.REVOKED


async def test_grace_retry_after_the_epoch_rose_is_revoked(
    any_store: Store, clock: FrozenClock
) -> None:
    tokens = _tokens(any_store, clock)
    token, _ = await tokens.issue("alice", epoch=0)
    await tokens.rotate(token)
    await any_store.set(epoch_key("alice"), encode_epoch(Epoch(1, clock.now())))
    assert await _reason(tokens.rotate(token)) is TokenReason.REVOKED


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("brt_" + "A" * 22 + "." + "A" * 43, TokenReason.UNKNOWN),
        ("brt_" + "A" * 22 + "." + "A" * 42 + "B", TokenReason.MALFORMED),
        ("Bearer brt_x.y", TokenReason.MALFORMED),
        ("brt_" + "A" * 300, TokenReason.TOO_LARGE),
        ("", TokenReason.MALFORMED),
    ],
)
async def test_bad_tokens(
    any_store: Store, clock: FrozenClock, text: str, reason: TokenReason
) -> None:
    tokens = _tokens(any_store, clock)
    assert await _reason(tokens.rotate(text)) is reason
    assert await _reason(tokens.inspect(text)) is reason


async def test_forged_secret_of_a_real_family_changes_nothing(
    any_store: Store, clock: FrozenClock
) -> None:
    tokens = _tokens(any_store, clock)
    token, info = await tokens.issue("alice", epoch=0)
    forged = f"brt_{info.family_id}." + "A" * 43
    assert await _reason(tokens.rotate(forged)) is TokenReason.UNKNOWN
    assert isinstance(await tokens.rotate(token), Rotation)  # the family lives on


async def test_corrupt_family_record_is_refused(any_store: Store, clock: FrozenClock) -> None:
    tokens = _tokens(any_store, clock)
    token, info = await tokens.issue("alice", epoch=0)
    await any_store.set(family_key(info.family_id), b'{"v":1,"u":')
    assert await _reason(tokens.rotate(token)) is TokenReason.REVOKED
    assert await _reason(tokens.inspect(token)) is TokenReason.REVOKED


async def test_dpop_bound_family(any_store: Store, clock: FrozenClock) -> None:
    tokens = _tokens(any_store, clock)
    token, info = await tokens.issue("alice", epoch=0, cnf_jkt="thumb-1")
    assert info.cnf_jkt == "thumb-1"
    assert await _reason(tokens.rotate(token)) is TokenReason.DPOP_MISMATCH
    assert await _reason(tokens.rotate(token, cnf_jkt="thumb-2")) is TokenReason.DPOP_MISMATCH
    rotation = await tokens.rotate(token, cnf_jkt="thumb-1")
    assert rotation.family.cnf_jkt == "thumb-1"


async def test_revoke_family(any_store: Store, clock: FrozenClock) -> None:
    tokens = _tokens(any_store, clock)
    token, info = await tokens.issue("alice", epoch=0)
    assert await tokens.revoke(info.family_id)
    assert not await tokens.revoke(token)
    assert await _reason(tokens.rotate(token)) is TokenReason.REVOKED


async def test_key_rotation(any_store: Store, clock: FrozenClock) -> None:
    token, _ = await _tokens(any_store, clock).issue("alice", epoch=0)
    new_ring = KeyRing(SecretKey(b"n" * 32), previous=[OLD])
    rotated = await _tokens(any_store, clock, ring=new_ring).rotate(token)
    after = await _tokens(any_store, clock, ring=new_ring).rotate(rotated.token)
    assert after.family.generation == 2
    # a ring without the old key no longer knows the family's secrets
    assert (
        await _reason(
            _tokens(any_store, clock, ring=KeyRing(SecretKey(b"z" * 32))).rotate(after.token)
        )
        is TokenReason.UNKNOWN
    )


async def test_sync_twins(any_store: Store, clock: FrozenClock) -> None:
    tokens = _tokens(any_store, clock)
    token, info = await asyncio.to_thread(tokens.issue_sync, "alice", epoch=0)
    rotated = await asyncio.to_thread(tokens.rotate_sync, token)
    assert await asyncio.to_thread(tokens.inspect_sync, rotated.token) == rotated.family
    again = await asyncio.to_thread(tokens.rotate_sync, token)
    assert again.replayed
    assert again.token == rotated.token
    assert await asyncio.to_thread(tokens.revoke_sync, info.family_id)
    with pytest.raises(TokenRejected) as caught:
        await asyncio.to_thread(tokens.rotate_sync, rotated.token)
    assert caught.value.reason is TokenReason.REVOKED


# -- concurrency --------------------------------------------------------------------------------


async def test_parallel_rotations_get_one_successor(any_store: Store, clock: FrozenClock) -> None:
    tokens = _tokens(any_store, clock)
    token, _ = await tokens.issue("alice", epoch=0)
    results = await asyncio.wait_for(
        asyncio.gather(*(tokens.rotate(token) for _ in range(12))), timeout=30
    )
    assert len({r.token for r in results}) == 1
    assert sorted(r.replayed for r in results) == [False] + [True] * 11


async def test_parallel_rotations_in_threads(any_store: Store, clock: FrozenClock) -> None:
    tokens = _tokens(any_store, clock)
    token, _ = await tokens.issue("alice", epoch=0)
    results = await asyncio.wait_for(
        asyncio.gather(*(asyncio.to_thread(tokens.rotate_sync, token) for _ in range(8))),
        timeout=30,
    )
    assert len({r.token for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1


_CHILD = """
import json, sys, time
from bastion.core.keys import KeyRing, SecretKey
from bastion.core.tokens.reasons import TokenRejected
from bastion.engine.tokens.refresh import RefreshTokens
from bastion.stores.sqlite import SQLiteStore
path, token, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
store = SQLiteStore(path)
tokens = RefreshTokens(store, KeyRing(SecretKey(b"o" * 32)))
store.sync.get("warm-up")  # open the connection before the race
time.sleep(max(0.0, start - time.time()))
try:
    r = tokens.rotate_sync(token)
    print(json.dumps([r.token, r.replayed]))
except TokenRejected as exc:
    print(json.dumps([exc.reason.value, None]))
"""


async def test_parallel_rotations_in_processes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "shared.db")
    try:
        tokens = RefreshTokens(store, KeyRing(OLD))
        token, _ = await tokens.issue("alice", epoch=0)
        start = str(time.time() + 3.0)
        children = [
            subprocess.Popen(  # noqa: ASYNC220 (children run while this test only waits)
                [sys.executable, "-c", _CHILD, str(tmp_path / "shared.db"), token, start],
                stdout=subprocess.PIPE,
            )
            for _ in range(4)
        ]
        outputs = [json.loads(child.communicate(timeout=60)[0]) for child in children]
    finally:
        await store.aclose()
    assert len({t for t, _ in outputs}) == 1, outputs
    assert sorted(r for _, r in outputs) == [False, True, True, True]


# -- outages and round trips ----------------------------------------------------------------------


async def test_store_outage_is_not_a_token_error(
    start_redis_server: Callable[..., RedisServer], clock: FrozenClock
) -> None:
    server = start_redis_server()
    store = RedisStore.from_url(server.url, socket_timeout=0.5, connect_timeout=0.5)
    try:
        tokens = _tokens(store, clock)
        token, _ = await tokens.issue("alice", epoch=0)
        server.close()
        with pytest.raises(StoreUnavailable):
            await tokens.rotate(token)
        with pytest.raises(StoreUnavailable):
            await asyncio.to_thread(tokens.rotate_sync, token)
    finally:
        await store.aclose()


def _calls(url: str) -> dict[str, int]:
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def _delta(url: str, before: dict[str, int]) -> dict[str, int]:
    after = _calls(url)
    ignored = {"info", "hello", "client|setinfo", "client", "select", "ping"}
    return {
        k: n - before.get(k, 0)
        for k, n in after.items()
        if n != before.get(k, 0) and k not in ignored
    }


async def test_redis_rotation_is_two_round_trips(
    start_redis_server: Callable[..., RedisServer], clock: FrozenClock
) -> None:
    """Counted on the server: one rotation is one GET, then one EVAL (whose script does GET,
    SET, GET inside, which Redis counts under those commands too), so 2 round trips."""
    server = start_redis_server()
    store = RedisStore.from_url(server.url)
    try:
        tokens = _tokens(store, clock)
        token, _ = await tokens.issue("alice", epoch=0)
        before = _calls(server.url)
        rotated = await tokens.rotate(token)
        assert _delta(server.url, before) == {"get": 1 + 2, "eval": 1, "set": 1}
        before = _calls(server.url)
        await tokens.rotate(token)  # a grace-window retry: GET family, GET epoch, no write
        assert _delta(server.url, before) == {"get": 2}
        before = _calls(server.url)
        await asyncio.to_thread(tokens.rotate_sync, rotated.token)
        assert _delta(server.url, before) == {"get": 1 + 2, "eval": 1, "set": 1}
    finally:
        await store.aclose()


class _CountingSQLite(SQLiteStore):
    """A real SQLite store that counts its calls and the statements sent to the file."""

    calls: list[str]

    async def get(self, key: str) -> bytes | None:
        self.calls.append("get")
        return await super().get(key)

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        self.calls.append("compare_and_set")
        return await super().compare_and_set(key, expected, value, ttl)

    async def transaction(self, work: Any) -> Any:
        self.calls.append("transaction")
        return await super().transaction(work)

    def transaction_sync(self, work: Any) -> Any:
        self.calls.append("transaction_sync")
        return super().transaction_sync(work)


async def test_sqlite_rotation_is_one_transaction(tmp_path: Path, clock: FrozenClock) -> None:
    store = _CountingSQLite(tmp_path / "count.db", clock=clock)
    store.calls = []
    try:
        tokens = _tokens(store, clock)
        token, _ = await tokens.issue("alice", epoch=0)
        store.calls.clear()
        rotated = await tokens.rotate(token)
        assert store.calls == ["transaction"]
        store.calls.clear()
        tokens.rotate_sync(rotated.token)
        assert store.calls == ["transaction_sync"]
    finally:
        await store.aclose()
