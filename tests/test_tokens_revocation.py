"""The access-token deny-list and the user-epoch check, on memory, SQLite files and real Redis.

Claims are built as dicts decoded from JSON (the JWT codec is another part's); what the
deny-list sees is exactly what a verified token's claims give it.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from redis import Redis as SyncRedis

from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing
from bastion.core.sessions.config import SessionConfig
from bastion.core.sessions.index import decode_epoch
from bastion.core.tokens.reasons import TokenReason, TokenRejected
from bastion.engine.sessions import SessionEngine
from bastion.engine.sessions.registry import epoch_key
from bastion.engine.tokens.revocation import (
    DEFAULT_SLACK,
    Revocations,
    deny_key,
    min_epoch_ttl,
)
from bastion.errors import ConfigurationError, StoreUnavailable
from bastion.stores.base import SupportsGetMany, SupportsGetManySync
from bastion.stores.keyspace import key_slot
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.stores.sqlite import SQLiteStore
from bastion.testing.audit import RecordingAuditSink
from bastion.testing.sync_store import CountingStore

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from bastion.stores.base import Store
    from bastion.testing.redis_server import RedisServer

ISS = "https://auth.example"
DAY = 86_400.0


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


def claims(clock: FrozenClock, *, jti: str = "jti-1", sub: str = "alice", **more: Any) -> Any:
    """A verified token's claims, as the codec's JSON decoding gives them."""
    payload = {"iss": ISS, "sub": sub, "jti": jti, "exp": clock.now() + 600, **more}
    return json.loads(json.dumps(payload))


async def epoch_of(store: Store, user: str) -> int:
    return decode_epoch(await store.get(epoch_key(user))).number


def short_sessions() -> SessionConfig:
    # Sessions of at most a day: the sessions' own epoch TTL is then about two days.
    return SessionConfig(
        idle_timeout=600.0,
        absolute_lifetime=3600.0,
        persistent_idle_timeout=3600.0,
        persistent_absolute_lifetime=DAY,
    )


# -- the deny-list ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_revoked_jti_is_refused_and_others_are_not(
    any_store: Store, clock: FrozenClock
) -> None:
    revocations = Revocations(any_store, clock=clock)
    token = claims(clock)
    assert await revocations.check(ISS, token["jti"], token["sub"], 0) is None
    assert await revocations.revoke_jti(
        ISS, token["jti"], subject=token["sub"], expires_at=token["exp"]
    )
    assert await revocations.check(ISS, token["jti"], token["sub"], 0) is TokenReason.REVOKED
    assert await revocations.check(ISS, token["jti"], token["sub"], None) is TokenReason.REVOKED
    assert await revocations.is_revoked(ISS, token["jti"], subject=token["sub"])
    # Another jti, another issuer, another subject: not revoked.
    assert await revocations.check(ISS, "jti-2", "alice", 0) is None
    assert await revocations.check("https://auth.example.evil", "jti-1", "alice", 0) is None
    assert await revocations.check(ISS + "/", "jti-1", "alice", 0) is None
    assert not await revocations.is_revoked(ISS, "jti-2", subject="alice")


@pytest.mark.asyncio
async def test_a_revoked_token_in_another_encoding_is_still_refused(
    any_store: Store, clock: FrozenClock
) -> None:
    """The attack: the same token re-encoded (members reordered, escapes, whitespace, a
    re-signed copy with the same claims). The entry is keyed on the verified claims."""
    revocations = Revocations(any_store, clock=clock)
    exp = clock.now() + 600
    await revocations.revoke_jti(ISS, "a\u00e9\U0001f510", subject="bob", expires_at=exp)
    encodings = [
        '{"iss":"https://auth.example","sub":"bob","jti":"a\\u00e9\\ud83d\\udd10","exp":1}',
        (
            '{ "jti" : "a\u00e9\U0001f510", "exp": 1.0, "sub": "\\u0062ob",'
            ' "iss": "https:\\/\\/auth.example" }'
        ),
        json.dumps({"exp": 1, "jti": "a\u00e9\U0001f510", "sub": "bob", "iss": ISS}),
    ]
    for text in encodings:
        seen = json.loads(text)
        verdict = await revocations.check(seen["iss"], seen["jti"], seen["sub"], 0)
        assert verdict is TokenReason.REVOKED, text
    # Text that differs as text is another jti (no normalisation beyond JSON's own).
    assert await revocations.check(ISS, "ae\u0301\U0001f510", "bob", 0) is None


@pytest.mark.asyncio
async def test_any_text_is_a_safe_claim(any_store: Store, clock: FrozenClock) -> None:
    revocations = Revocations(any_store, clock=clock)
    odd = ["}{", "{x}", "a:b", "nul\x00", "line\nbreak", "%7B", "x" * 5000, "é", "🔐"]
    exp = clock.now() + 60
    for value in odd:
        await revocations.revoke_jti(value, value, subject=value[:200], expires_at=exp)
    for value in odd:
        assert await revocations.check(value, value, value[:200], 0) is TokenReason.REVOKED
        assert await revocations.check(value, value + "!", value[:200], 0) is None
    # (issuer, jti) pairs never run together: ("a", "bc") is not ("ab", "c").
    await revocations.revoke_jti("a", "bc", subject="s", expires_at=exp)
    assert await revocations.check("ab", "c", "s", 0) is None


@pytest.mark.parametrize(
    ("issuer", "jti", "subject", "epoch"),
    [
        ("", "j", "s", 0),
        (ISS, "", "s", 0),
        (ISS, "j", "", 0),
        (ISS, 1, "s", 0),
        (ISS, "j", None, 0),
        (ISS, "j", "s\ud800", 0),
        (ISS, "j", "s" * 2000, 0),
        (ISS, "j", "s", -1),
        (ISS, "j", "s", True),
        (ISS, "j", "s", 1.0),
        (ISS, "j", "s", "1"),
    ],
)
@pytest.mark.asyncio
async def test_malformed_claims_are_refused_before_any_store_call(
    issuer: Any, jti: Any, subject: Any, epoch: Any, clock: FrozenClock
) -> None:
    store = CountingStore(MemoryStore(clock=clock))
    revocations = Revocations(store, clock=clock)
    with pytest.raises(TokenRejected) as info:
        await revocations.check(issuer, jti, subject, epoch)
    assert info.value.reason is TokenReason.BAD_CLAIM
    assert store.total == 0


@pytest.mark.parametrize("exp", [math.nan, math.inf, -math.inf, "1", True, None])
@pytest.mark.asyncio
async def test_a_bad_expiry_is_refused(exp: Any, clock: FrozenClock) -> None:
    revocations = Revocations(MemoryStore(clock=clock), clock=clock)
    with pytest.raises(TokenRejected) as info:
        await revocations.revoke_jti(ISS, "j", subject="s", expires_at=exp)
    assert info.value.reason is TokenReason.BAD_CLAIM


@pytest.mark.parametrize("slack", [-1, math.nan, math.inf, True, "5", 2 * DAY])
def test_slack_is_bounded(slack: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        Revocations(MemoryStore(), slack=slack)
    assert info.value.setting == "slack"


@pytest.mark.asyncio
async def test_an_entry_lives_until_the_token_expires_plus_the_slack(
    any_store: Store, clock: FrozenClock, request: pytest.FixtureRequest
) -> None:
    revocations = Revocations(any_store, clock=clock)
    exp = clock.now() + 600
    await revocations.revoke_jti(ISS, "j", subject="s", expires_at=exp)
    if isinstance(any_store, RedisStore):  # server time: read the TTL the server holds
        with SyncRedis.from_url(request.getfixturevalue("redis_url")) as admin:
            ttl_ms = admin.pttl(any_store.full_key(deny_key(ISS, "j", "s")))
        assert (600 + DEFAULT_SLACK - 1) * 1000 < ttl_ms <= (600 + DEFAULT_SLACK) * 1000
        return
    clock.advance(600 + DEFAULT_SLACK - 1)
    assert await revocations.check(ISS, "j", "s", 0) is TokenReason.REVOKED
    clock.advance(1)
    assert await revocations.check(ISS, "j", "s", 0) is None


@pytest.mark.asyncio
async def test_re_revoking_is_idempotent_and_never_shortens(
    any_store: Store, clock: FrozenClock
) -> None:
    sink = RecordingAuditSink()
    auditor = Auditor(IdentifierHasher(KeyRing.generate()), clock, sink)
    revocations = Revocations(any_store, clock=clock, auditor=auditor)
    exp = clock.now() + 600
    assert await revocations.revoke_jti(ISS, "j", subject="s", expires_at=exp)
    assert not await revocations.revoke_jti(ISS, "j", subject="s", expires_at=exp)
    assert not await revocations.revoke_jti(ISS, "j", subject="s", expires_at=exp - 500)
    assert sink.names() == ["authn_token_revoked"]
    assert dict(sink.events[0].details) == {"method": "jti", "token_id": "j"}
    if not isinstance(any_store, RedisStore):
        clock.advance(600)  # past the shorter expiry the third call named: still denied
        assert await revocations.check(ISS, "j", "s", 0) is TokenReason.REVOKED


@pytest.mark.asyncio
async def test_revoking_a_token_past_any_leeway_writes_nothing(clock: FrozenClock) -> None:
    store = CountingStore(MemoryStore(clock=clock))
    revocations = Revocations(store, clock=clock)
    past = clock.now() - DEFAULT_SLACK
    assert not await revocations.revoke_jti(ISS, "j", subject="s", expires_at=past)
    assert store.total == 0


# -- the epoch -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_epoch_bump_reaches_older_access_tokens(
    any_store: Store, clock: FrozenClock
) -> None:
    sessions = SessionEngine(any_store, clock=clock)
    revocations = Revocations(any_store, clock=clock)
    before = await epoch_of(any_store, "alice")
    assert await revocations.check(ISS, "j1", "alice", before) is None
    clock.advance(1)
    await sessions.revoke_all("alice")  # "log out everywhere", a password change
    after = await epoch_of(any_store, "alice")
    assert after > before
    assert await revocations.check(ISS, "j1", "alice", before) is TokenReason.REVOKED
    assert await revocations.check(ISS, "j2", "alice", after) is None  # made after the bump
    assert await revocations.check(ISS, "j3", "bob", before) is None  # another user
    # A token without an epoch claim is checked against the deny-list only.
    assert await revocations.check(ISS, "j1", "alice", None) is None


@pytest.mark.asyncio
async def test_new_tokens_take_the_current_epoch(any_store: Store, clock: FrozenClock) -> None:
    sessions = SessionEngine(any_store, clock=clock)
    revocations = Revocations(any_store, clock=clock)
    assert await revocations.current_epoch("alice") == 0
    authenticated = clock.now()
    clock.advance(1)
    await sessions.revoke_all("alice")  # while the password was being checked
    bumped = await epoch_of(any_store, "alice")
    assert await revocations.current_epoch("alice") == bumped
    assert await asyncio.to_thread(revocations.current_epoch_sync, "alice") == bumped
    with pytest.raises(TokenRejected) as info:
        await revocations.current_epoch("alice", authenticated_at=authenticated)
    assert info.value.reason is TokenReason.REVOKED
    assert await revocations.current_epoch("alice", authenticated_at=clock.now()) == bumped
    await any_store.set(epoch_key("alice"), b"garbage")
    with pytest.raises(TokenRejected) as info:
        await revocations.current_epoch("alice")
    assert info.value.reason is TokenReason.REVOKED


@pytest.mark.asyncio
async def test_an_unreadable_epoch_refuses(any_store: Store, clock: FrozenClock) -> None:
    revocations = Revocations(any_store, clock=clock)
    for damaged in (b"garbage", b'{"v":1,"n":-1,"t":0}', b'{"v":99,"n":1,"t":0}', b"\xff"):
        await any_store.set(epoch_key("alice"), damaged)
        assert await revocations.check(ISS, "j", "alice", 10**15) is TokenReason.REVOKED


def test_deny_keys_share_the_epoch_keys_slot() -> None:
    """One MGET reads both keys, so on Redis Cluster they must share a slot."""
    for subject in ["alice", "{alice}", "}{", "a{b}c", "%7B", "é", "user:42", "x" * 300]:
        for jti in ["j", "{j}", "}"]:
            key = deny_key("{iss}", jti, subject)
            assert key_slot(key) == key_slot(epoch_key(subject))
    assert deny_key(ISS, "j", "alice") != deny_key(ISS, "j", "bob")


def test_every_bastion_store_reads_many_keys_at_once(tmp_path: Path) -> None:
    memory = MemoryStore()
    sqlite_store = SQLiteStore(tmp_path / "x.db")
    for store in (memory, sqlite_store):
        assert isinstance(store, SupportsGetMany)
        assert isinstance(store.sync, SupportsGetManySync)
    assert isinstance(RedisStore.from_url("redis://127.0.0.1:1"), SupportsGetMany)


# -- round trips -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_check_is_one_store_call(any_store: Store, clock: FrozenClock) -> None:
    counting = CountingStore(any_store)
    revocations = Revocations(counting, clock=clock)
    assert await revocations.check(ISS, "j", "alice", 0) is None
    assert dict(counting.calls) == {"get_many": 1}
    counting.reset()
    assert await asyncio.to_thread(revocations.check_sync, ISS, "j", "alice", 0) is None
    assert dict(counting.calls) == {"get_many": 1}
    counting.reset()
    assert await revocations.check(ISS, "j", "alice", None) is None
    assert dict(counting.calls) == {"get": 1}


def _command_calls(admin: SyncRedis) -> dict[str, int]:
    stats: dict[str, Any] = admin.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


@pytest.mark.parametrize("transport", ["resp", "redis-py"])
@pytest.mark.asyncio
async def test_check_is_one_round_trip_on_redis(
    start_redis_server: Callable[..., RedisServer], clock: FrozenClock, transport: str
) -> None:
    """Counted by the server itself: one MGET per check, async and sync, either transport."""
    server = start_redis_server()
    store = RedisStore.from_url(server.url, transport=transport)
    revocations = Revocations(store, clock=clock)
    await revocations.revoke_jti(ISS, "j", subject="alice", expires_at=clock.now() + 60)
    try:
        with SyncRedis.from_url(server.url) as admin:
            assert await revocations.check(ISS, "j", "alice", 0) is TokenReason.REVOKED
            await revocations.check(ISS, "k", "alice", 0)  # warm every connection
            revocations.check_sync(ISS, "k", "alice", 0)
            before = _command_calls(admin)
            for _ in range(5):
                assert await revocations.check(ISS, "j", "alice", 0) is TokenReason.REVOKED
                assert await revocations.check(ISS, "k", "alice", 0) is None
                assert revocations.check_sync(ISS, "k", "alice", 0) is None
            after = _command_calls(admin)
        changed = {name: after[name] - before.get(name, 0) for name in after}
        changed = {name: count for name, count in changed.items() if count}
        changed.pop("info", None)  # the admin's own query
        assert changed == {"mget": 15}
    finally:
        await store.aclose()


# -- races -----------------------------------------------------------------------------------


def test_parallel_revocations_add_one_entry(tmp_path: Path, clock: FrozenClock) -> None:
    store = SQLiteStore(tmp_path / "race.db", clock=clock)
    sink = RecordingAuditSink()
    auditor = Auditor(IdentifierHasher(KeyRing.generate()), clock, sink)
    revocations = Revocations(store, clock=clock, auditor=auditor)
    barrier = threading.Barrier(6)
    added: list[bool] = []

    def revoke() -> None:
        barrier.wait(timeout=10)
        added.append(
            revocations.revoke_jti_sync(ISS, "j", subject="s", expires_at=clock.now() + 60)
        )

    threads = [threading.Thread(target=revoke) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert sorted(added) == [False] * 5 + [True]
    assert sink.names() == ["authn_token_revoked"]
    assert revocations.check_sync(ISS, "j", "s", 0) is TokenReason.REVOKED
    asyncio.run(store.aclose())


@pytest.mark.asyncio
async def test_no_check_that_starts_after_a_revocation_lets_the_token_through(
    any_store: Store, clock: FrozenClock
) -> None:
    """Revoke while threads check in a loop: every check begun after the revocation returned
    refuses; none fails."""
    revocations = Revocations(any_store, clock=clock)
    done = threading.Event()
    stop = time.monotonic() + 10
    late: list[TokenReason | None] = []
    errors: list[BaseException] = []

    def check() -> None:
        seen_after = 0
        try:
            while seen_after < 20 and time.monotonic() < stop:  # bounded in count and time
                after = done.is_set()
                verdict = revocations.check_sync(ISS, "j", "s", 0)
                if after:
                    late.append(verdict)
                    seen_after += 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=check) for _ in range(3)]
    for thread in threads:
        thread.start()
    await asyncio.sleep(0.005)
    await revocations.revoke_jti(ISS, "j", subject="s", expires_at=clock.now() + 60)
    done.set()
    for thread in threads:
        await asyncio.to_thread(thread.join, 20)
    assert not errors
    assert late
    assert set(late) == {TokenReason.REVOKED}


# -- the epoch record outlives the tokens ----------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.asyncio
async def test_an_epoch_bump_is_kept_while_a_30_day_refresh_family_could_live(
    kind: str, clock: FrozenClock, tmp_path: Path
) -> None:
    store: Store = (
        MemoryStore(clock=clock)
        if kind == "memory"
        else SQLiteStore(tmp_path / "e.db", clock=clock)
    )
    keep = min_epoch_ttl(30 * DAY, 900.0)
    assert keep == 30 * DAY + DEFAULT_SLACK
    sessions = SessionEngine(store, config=short_sessions(), clock=clock, min_epoch_ttl=keep)
    revocations = Revocations(store, clock=clock)
    before = await epoch_of(store, "alice")
    await sessions.revoke_all("alice")
    clock.advance(30 * DAY)  # a family made just before the bump could still rotate now
    assert await revocations.check(ISS, "j", "alice", before) is TokenReason.REVOKED
    await store.aclose()


@pytest.mark.asyncio
async def test_without_min_epoch_ttl_short_sessions_forget_the_bump(clock: FrozenClock) -> None:
    """Why ``min_epoch_ttl`` exists: the sessions' own TTL (2 days here) is shorter than a
    refresh family's life, and an expired epoch record reads as epoch 0."""
    store = MemoryStore(clock=clock)
    sessions = SessionEngine(store, config=short_sessions(), clock=clock)
    revocations = Revocations(store, clock=clock)
    await sessions.revoke_all("alice")
    clock.advance(3 * DAY)
    assert await revocations.check(ISS, "j", "alice", 0) is None


@pytest.mark.asyncio
async def test_the_epoch_ttl_on_redis_covers_the_refresh_lifetime(
    redis_url: str, redis_prefix: str, clock: FrozenClock
) -> None:
    store = RedisStore.from_url(redis_url, prefix=redis_prefix)
    try:
        sessions = SessionEngine(
            store, config=short_sessions(), clock=clock, min_epoch_ttl=min_epoch_ttl(30 * DAY)
        )
        await sessions.revoke_all("alice")
        with SyncRedis.from_url(redis_url) as admin:
            ttl_ms = admin.pttl(store.full_key(epoch_key("alice")))
        assert ttl_ms > 30 * DAY * 1000
    finally:
        await store.aclose()


def test_min_epoch_ttl_defaults_to_the_sessions_own(clock: FrozenClock) -> None:
    config = short_sessions()
    engine = SessionEngine(MemoryStore(clock=clock), config=config, clock=clock)
    assert engine.registry.epoch_ttl() == 2 * DAY + 300.0
    longer = SessionEngine(MemoryStore(), config=config, min_epoch_ttl=40 * DAY)
    assert longer.registry.epoch_ttl() == 40 * DAY
    shorter = SessionEngine(MemoryStore(), config=config, min_epoch_ttl=60.0)
    assert shorter.registry.epoch_ttl() == 2 * DAY + 300.0  # never below the sessions' own


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf, True, "1", 10**400])
def test_min_epoch_ttl_is_validated(bad: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        SessionEngine(MemoryStore(), min_epoch_ttl=bad)
    assert info.value.setting == "min_epoch_ttl"
    with pytest.raises(ConfigurationError):
        min_epoch_ttl(bad)
    with pytest.raises(ConfigurationError):
        min_epoch_ttl(60.0, slack=bad)


# -- outages ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_redis_outage_is_store_unavailable(
    start_redis_server: Callable[..., RedisServer], clock: FrozenClock
) -> None:
    server = start_redis_server()
    store = RedisStore.from_url(server.url, socket_timeout=1.0, connect_timeout=1.0)
    revocations = Revocations(store, clock=clock)
    try:
        assert await revocations.check(ISS, "j", "s", 0) is None
        server.stop()
        with pytest.raises(StoreUnavailable):
            await revocations.check(ISS, "j", "s", 0)
        with pytest.raises(StoreUnavailable):
            revocations.check_sync(ISS, "j", "s", 0)
        with pytest.raises(StoreUnavailable):
            await revocations.revoke_jti(ISS, "j", subject="s", expires_at=clock.now() + 60)
        server.start()
        assert await revocations.revoke_jti(ISS, "j", subject="s", expires_at=clock.now() + 60)
        assert await revocations.check(ISS, "j", "s", 0) is TokenReason.REVOKED
    finally:
        await store.aclose()


@pytest.mark.asyncio
async def test_a_locked_sqlite_file_is_store_unavailable(
    tmp_path: Path, clock: FrozenClock
) -> None:
    path = tmp_path / "locked.db"
    store = SQLiteStore(path, clock=clock, timeout=0.2)
    revocations = Revocations(store, clock=clock)
    assert await revocations.check(ISS, "j", "s", 0) is None  # creates the file
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable):
            await revocations.revoke_jti(ISS, "j", subject="s", expires_at=clock.now() + 60)
        assert await revocations.check(ISS, "j", "s", 0) is None  # WAL: reads go on
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert await revocations.revoke_jti(ISS, "j", subject="s", expires_at=clock.now() + 60)
    await store.aclose()


class FourOperationStore:
    """A third-party store with the protocol's four operations and no get_many (over a real
    memory store): the flow driver falls back to one get per key."""

    def __init__(self, inner: MemoryStore) -> None:
        self._inner = inner

    async def get(self, key: str) -> bytes | None:
        return await self._inner.get(key)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self._inner.set(key, value, ttl)

    async def delete(self, key: str) -> bool:
        return await self._inner.delete(key)

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        return await self._inner.compare_and_set(key, expected, value, ttl)

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.mark.asyncio
async def test_a_store_without_get_many_still_works_at_one_get_per_key(
    clock: FrozenClock,
) -> None:
    plain = FourOperationStore(MemoryStore(clock=clock))
    assert not isinstance(plain, SupportsGetMany)
    counting = CountingStore(plain)
    revocations = Revocations(counting, clock=clock)
    assert await revocations.check(ISS, "j", "alice", 0) is None
    assert dict(counting.calls) == {"get": 2}
    await revocations.revoke_jti(ISS, "j", subject="alice", expires_at=clock.now() + 60)
    assert await revocations.check(ISS, "j", "alice", 0) is TokenReason.REVOKED
    await plain.set(epoch_key("bob"), b"garbage")
    assert await revocations.check(ISS, "k", "bob", 0) is TokenReason.REVOKED


@pytest.mark.asyncio
async def test_the_sync_twins_share_the_deny_list(any_store: Store, clock: FrozenClock) -> None:
    revocations = Revocations(any_store, clock=clock)

    def wsgi_side() -> None:
        assert not revocations.is_revoked_sync(ISS, "j", subject="s")
        assert revocations.revoke_jti_sync(ISS, "j", subject="s", expires_at=clock.now() + 60)
        assert revocations.is_revoked_sync(ISS, "j", subject="s")

    await asyncio.to_thread(wsgi_side)
    assert await revocations.check(ISS, "j", "s", 0) is TokenReason.REVOKED
    assert await revocations.is_revoked(ISS, "j", subject="s")
