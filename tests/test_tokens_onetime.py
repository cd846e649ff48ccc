"""One-time tokens (reset, e-mail verification, magic links) on memory, SQLite files and Redis."""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import sqlite3
import threading
from typing import TYPE_CHECKING, Any

import pytest

from bastion.core.audit import Auditor, IdentifierHasher, LoggingAuditSink
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing, SecretKey
from bastion.core.tokens.onetime import decode_record, new_token, parse_token
from bastion.core.tokens.reasons import TokenReason, TokenRejected
from bastion.engine.tokens.onetime import RETENTION, OneTimeTokens, record_key
from bastion.errors import ConfigurationError, StoreUnavailable
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.stores.sqlite import SQLiteStore
from bastion.testing.audit import RecordingAuditSink
from bastion.testing.sync_store import CountingStore

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from bastion.core.audit import AuditEvent
    from bastion.stores.base import Store
    from bastion.testing.redis_server import RedisServer

RESET = "password-reset"
VERIFY = "email-verify"
OLD_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$old-hash"
NEW_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$new-hash"
SECRET = b"k" * 32


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing(SecretKey(SECRET))


async def refused(call: Any) -> TokenReason:
    with pytest.raises(TokenRejected) as info:
        await call
    return info.value.reason


# -- the happy path and each refusal ---------------------------------------------------------


@pytest.mark.asyncio
async def test_a_reset_token_consumes_once(
    any_store: Store, ring: KeyRing, clock: FrozenClock
) -> None:
    tokens = OneTimeTokens(any_store, ring, clock=clock)
    token = await tokens.issue(RESET, "alice", state=OLD_HASH, ttl=1800)
    assert token.startswith("bot_")
    assert len(token) == 70
    assert await tokens.owner(token, purpose=RESET) == "alice"
    assert await tokens.peek(token, purpose=RESET, state=OLD_HASH) == "alice"
    assert await tokens.peek(token, purpose=RESET, state=OLD_HASH, user_id="alice") == "alice"
    assert await tokens.consume(token, purpose=RESET, state=OLD_HASH, user_id="alice") == "alice"
    # Used twice (the attack): unknown, for consume, peek and owner alike.
    assert await refused(tokens.consume(token, purpose=RESET, state=OLD_HASH)) is (
        TokenReason.UNKNOWN
    )
    assert await refused(tokens.peek(token, purpose=RESET, state=OLD_HASH)) is TokenReason.UNKNOWN
    assert await refused(tokens.owner(token, purpose=RESET)) is TokenReason.UNKNOWN


@pytest.mark.asyncio
async def test_after_a_password_change_the_reset_token_is_dead(
    any_store: Store, ring: KeyRing, clock: FrozenClock
) -> None:
    tokens = OneTimeTokens(any_store, ring, clock=clock)
    token = await tokens.issue(RESET, "alice", state=OLD_HASH, ttl=1800)
    assert await refused(tokens.peek(token, purpose=RESET, state=NEW_HASH)) is (
        TokenReason.STATE_CHANGED
    )
    assert await tokens.peek(token, purpose=RESET, state=OLD_HASH) == "alice"  # peek burns nothing
    assert await refused(tokens.consume(token, purpose=RESET, state=NEW_HASH)) is (
        TokenReason.STATE_CHANGED
    )
    # Burnt: not even the old state (a password changed back) revives it.
    assert await refused(tokens.consume(token, purpose=RESET, state=OLD_HASH)) is (
        TokenReason.UNKNOWN
    )


@pytest.mark.asyncio
async def test_a_token_for_another_user_or_purpose_is_refused_and_kept(
    any_store: Store, ring: KeyRing, clock: FrozenClock
) -> None:
    tokens = OneTimeTokens(any_store, ring, clock=clock)
    token = await tokens.issue(RESET, "alice", state=OLD_HASH, ttl=1800)
    for call in (
        tokens.consume(token, purpose=RESET, state=OLD_HASH, user_id="bob"),
        tokens.consume(token, purpose=VERIFY, state=OLD_HASH),
        tokens.peek(token, purpose=VERIFY, state=OLD_HASH),
        tokens.owner(token, purpose=VERIFY),
    ):
        assert await refused(call) is TokenReason.WRONG_PURPOSE
    # Bob's state with Alice's token: the state is bound to her, so it does not match.
    bob = await tokens.issue(RESET, "bob", state=NEW_HASH, ttl=1800)
    assert await refused(tokens.peek(token, purpose=RESET, state=NEW_HASH)) is (
        TokenReason.STATE_CHANGED
    )
    # None of that consumed it.
    assert await tokens.consume(token, purpose=RESET, state=OLD_HASH) == "alice"
    assert await tokens.consume(bob, purpose=RESET, state=NEW_HASH) == "bob"


@pytest.mark.asyncio
async def test_an_expired_token_is_refused(
    any_store: Store, ring: KeyRing, clock: FrozenClock
) -> None:
    tokens = OneTimeTokens(any_store, ring, clock=clock)
    token = await tokens.issue(RESET, "alice", state=OLD_HASH, ttl=600)
    clock.advance(599.5)
    assert await tokens.peek(token, purpose=RESET, state=OLD_HASH) == "alice"
    clock.advance(0.5)
    assert await refused(tokens.consume(token, purpose=RESET, state=OLD_HASH)) is (
        TokenReason.EXPIRED
    )
    assert await refused(tokens.owner(token, purpose=RESET)) is TokenReason.EXPIRED
    if not isinstance(any_store, RedisStore):  # the store's own clock drops it after that
        clock.advance(RETENTION)
        assert await refused(tokens.consume(token, purpose=RESET, state=OLD_HASH)) is (
            TokenReason.UNKNOWN
        )


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "bot_",
        "bst_" + "A" * 22 + "." + "A" * 43,
        "bot_" + "A" * 22 + "." + "A" * 42,
        "bot_" + "A" * 22 + "." + "A" * 44,
        "bot_" + "A" * 22 + "." + "A" * 42 + "B",  # non-canonical: spare bits set
        "bot_" + "A" * 21 + "B" + "." + "A" * 43,  # non-canonical id
        "bot_" + "A" * 22 + "." + "A" * 42 + "=",
        "bot_" + "A" * 22 + "." + "A" * 42 + "+",
        " bot_" + "A" * 22 + "." + "A" * 43,
        "bot_" + "A" * 22 + "." + "A" * 43 + "\n",
        "bot_" + "\uff21" * 22 + "." + "A" * 43,
        None,
        b"bot_",
        42,
    ],
)
@pytest.mark.asyncio
async def test_malformed_tokens_are_refused_without_a_store_call(
    bad: Any, ring: KeyRing, clock: FrozenClock
) -> None:
    store = CountingStore(MemoryStore(clock=clock))
    tokens = OneTimeTokens(store, ring, clock=clock)
    assert await refused(tokens.consume(bad, purpose=RESET, state=OLD_HASH)) is (
        TokenReason.MALFORMED
    )
    assert store.total == 0


@pytest.mark.asyncio
async def test_a_guessed_secret_for_a_real_id_is_unknown_and_burns_nothing(
    any_store: Store, ring: KeyRing, clock: FrozenClock
) -> None:
    tokens = OneTimeTokens(any_store, ring, clock=clock)
    token = await tokens.issue(RESET, "alice", state=OLD_HASH, ttl=600)
    token_id, secret = parse_token(token)
    guess = f"bot_{token_id}.{'A' * 42}{'Q' if secret[-1] != 'Q' else 'g'}"
    assert await refused(tokens.consume(guess, purpose=RESET, state=OLD_HASH)) is (
        TokenReason.UNKNOWN
    )
    assert await tokens.consume(token, purpose=RESET, state=OLD_HASH) == "alice"


@pytest.mark.asyncio
async def test_a_record_moved_to_another_user_in_the_store_does_not_verify(
    any_store: Store, ring: KeyRing, clock: FrozenClock
) -> None:
    """Someone who can write the store but holds no key cannot re-point a token."""
    tokens = OneTimeTokens(any_store, ring, clock=clock)
    token = await tokens.issue(RESET, "mallory", state=OLD_HASH, ttl=600)
    key = record_key(parse_token(token)[0])
    raw = await any_store.get(key)
    assert raw is not None
    await any_store.set(key, raw.replace(b'"mallory"', b'"alice"'))
    assert await refused(tokens.consume(token, purpose=RESET, state=OLD_HASH)) is (
        TokenReason.UNKNOWN
    )
    await any_store.set(key, b"not json")
    assert await refused(tokens.consume(token, purpose=RESET, state=OLD_HASH)) is (
        TokenReason.UNKNOWN
    )


@pytest.mark.asyncio
async def test_it_is_stored_hashed(any_store: Store, ring: KeyRing, clock: FrozenClock) -> None:
    tokens = OneTimeTokens(any_store, ring, clock=clock)
    token = await tokens.issue(RESET, "alice", state=OLD_HASH, ttl=600)
    token_id, secret = parse_token(token)
    raw = await any_store.get(record_key(token_id))
    assert raw is not None
    assert secret.encode() not in raw
    assert OLD_HASH.encode() not in raw
    record = decode_record(raw)
    assert "alice" in repr(record)
    assert secret not in repr(record)


@pytest.mark.parametrize("ttl", [0, -1, 0.0, math.nan, math.inf, True, "60", 86_401, 10**400])
@pytest.mark.asyncio
async def test_the_ttl_is_short_and_positive(ttl: Any, ring: KeyRing) -> None:
    tokens = OneTimeTokens(MemoryStore(), ring)
    with pytest.raises(ConfigurationError) as info:
        await tokens.issue(RESET, "alice", state=OLD_HASH, ttl=ttl)
    assert info.value.setting == "ttl"
    longer = OneTimeTokens(MemoryStore(), ring, max_ttl=7 * 86_400)
    assert await longer.issue(VERIFY, "alice", state="a@example.org", ttl=3 * 86_400)


@pytest.mark.parametrize("max_ttl", [0, -1, math.nan, math.inf, True, 31 * 86_400])
def test_max_ttl_is_bounded(max_ttl: Any, ring: KeyRing) -> None:
    with pytest.raises(ConfigurationError) as info:
        OneTimeTokens(MemoryStore(), ring, max_ttl=max_ttl)
    assert info.value.setting == "max_ttl"


@pytest.mark.parametrize(
    ("purpose", "user_id", "state", "setting"),
    [
        ("", "alice", "s", "purpose"),
        ("bad purpose", "alice", "s", "purpose"),
        (RESET, "", "s", "user_id"),
        (RESET, 7, "s", "user_id"),
        (RESET, "x" * 257, "s", "user_id"),
        (RESET, "alice", None, "state"),
        (RESET, "alice", 5, "state"),
    ],
)
@pytest.mark.asyncio
async def test_issue_settings_are_checked(
    purpose: Any, user_id: Any, state: Any, setting: str, ring: KeyRing
) -> None:
    tokens = OneTimeTokens(MemoryStore(), ring)
    with pytest.raises(ConfigurationError) as info:
        await tokens.issue(purpose, user_id, state=state, ttl=60)
    assert info.value.setting == setting


# -- key rotation ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_token_issued_before_a_key_rotation_still_consumes(
    any_store: Store, clock: FrozenClock
) -> None:
    old, new = SecretKey(b"o" * 32), SecretKey(b"n" * 32)
    before = OneTimeTokens(any_store, KeyRing(old), clock=clock)
    token = await before.issue(RESET, "alice", state=OLD_HASH, ttl=600)
    dropped = await before.issue(RESET, "bob", state=OLD_HASH, ttl=600)
    after = OneTimeTokens(any_store, KeyRing(new, previous=[old]), clock=clock)
    assert await after.peek(token, purpose=RESET, state=OLD_HASH) == "alice"
    assert await refused(after.peek(token, purpose=RESET, state=NEW_HASH)) is (
        TokenReason.STATE_CHANGED
    )
    assert await after.consume(token, purpose=RESET, state=OLD_HASH) == "alice"
    fresh = await after.issue(RESET, "carol", state=OLD_HASH, ttl=600)
    assert await OneTimeTokens(any_store, KeyRing(new), clock=clock).consume(
        fresh, purpose=RESET, state=OLD_HASH
    )
    # Once the old key is retired, what it made no longer verifies.
    retired = OneTimeTokens(any_store, KeyRing(new), clock=clock)
    assert await refused(retired.consume(dropped, purpose=RESET, state=OLD_HASH)) is (
        TokenReason.UNKNOWN
    )


# -- atomic single use -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_parallel_consumes_across_tasks_have_one_winner(
    any_store: Store, ring: KeyRing, clock: FrozenClock
) -> None:
    tokens = OneTimeTokens(any_store, ring, clock=clock)
    token = await tokens.issue(RESET, "alice", state=OLD_HASH, ttl=600)
    results = await asyncio.wait_for(
        asyncio.gather(
            *(tokens.consume(token, purpose=RESET, state=OLD_HASH) for _ in range(12)),
            return_exceptions=True,
        ),
        timeout=20,
    )
    assert results.count("alice") == 1
    losers = [r for r in results if r != "alice"]
    assert all(isinstance(r, TokenRejected) and r.reason is TokenReason.UNKNOWN for r in losers)


@pytest.mark.asyncio
async def test_parallel_consumes_across_threads_have_one_winner(
    any_store: Store, ring: KeyRing, clock: FrozenClock
) -> None:
    tokens = OneTimeTokens(any_store, ring, clock=clock)
    for _ in range(3):  # a few rounds, each bounded in threads and time
        token = await tokens.issue(RESET, "alice", state=OLD_HASH, ttl=600)
        barrier = threading.Barrier(8)
        outcomes: list[object] = []

        def consume(
            token: str = token,
            barrier: threading.Barrier = barrier,
            outcomes: list[object] = outcomes,
        ) -> None:
            barrier.wait(timeout=10)
            try:
                outcomes.append(tokens.consume_sync(token, purpose=RESET, state=OLD_HASH))
            except TokenRejected as exc:
                outcomes.append(exc.reason)

        threads = [threading.Thread(target=consume) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            await asyncio.to_thread(thread.join, 20)
        assert sorted(map(str, outcomes)) == ["alice"] + ["unknown"] * 7


def _consume_in_child(
    path: str,
    token: str,
    barrier: Any,
    results: multiprocessing.Queue[str],
) -> None:
    store = SQLiteStore(path)
    tokens = OneTimeTokens(store, KeyRing(SecretKey(SECRET)))
    barrier.wait(timeout=20)
    try:
        results.put(tokens.consume_sync(token, purpose=RESET, state=OLD_HASH))
    except TokenRejected as exc:
        results.put(exc.reason.value)
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(f"error: {type(exc).__name__}")


@pytest.mark.slow
def test_parallel_consumes_across_processes_have_one_winner_on_sqlite(
    tmp_path: Path, ring: KeyRing
) -> None:
    path = tmp_path / "once.db"
    store = SQLiteStore(path)
    tokens = OneTimeTokens(store, ring)
    token = tokens.issue_sync(RESET, "alice", state=OLD_HASH, ttl=600)
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    results: multiprocessing.Queue[str] = context.Queue()
    children = [
        context.Process(target=_consume_in_child, args=(str(path), token, barrier, results))
        for _ in range(4)
    ]
    for child in children:
        child.start()
    try:
        outcomes = sorted(results.get(timeout=60) for _ in children)
    finally:
        for child in children:
            child.join(timeout=10)
            if child.is_alive():
                child.terminate()
        results.close()
        results.join_thread()
    assert outcomes == ["alice"] + ["unknown"] * 3
    asyncio.run(store.aclose())


@pytest.mark.asyncio
async def test_consume_costs_two_round_trips(
    any_store: Store, ring: KeyRing, clock: FrozenClock
) -> None:
    counting = CountingStore(any_store)
    tokens = OneTimeTokens(counting, ring, clock=clock)
    token = await tokens.issue(RESET, "alice", state=OLD_HASH, ttl=600)
    assert dict(counting.calls) == {"compare_and_set": 1}
    counting.reset()
    await tokens.peek(token, purpose=RESET, state=OLD_HASH)
    assert dict(counting.calls) == {"get": 1}
    counting.reset()
    await tokens.consume(token, purpose=RESET, state=OLD_HASH)
    assert dict(counting.calls) == {"get": 1, "compare_and_set": 1}


# -- never in repr, logs or audit events -----------------------------------------------------


class _Both:
    """A real sink that hands each event to two real sinks (records and logs)."""

    def __init__(self, *sinks: Any) -> None:
        self._sinks = sinks

    def emit(self, event: AuditEvent) -> None:
        for sink in self._sinks:
            sink.emit(event)


@pytest.mark.asyncio
async def test_tokens_never_reach_logs_audit_events_or_reprs(
    any_store: Store, ring: KeyRing, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    recording = RecordingAuditSink()
    auditor = Auditor(
        IdentifierHasher(ring), clock, _Both(recording, LoggingAuditSink()), aggregation=None
    )
    tokens = OneTimeTokens(any_store, ring, clock=clock, auditor=auditor)
    caplog.set_level(logging.DEBUG)
    token = await tokens.issue(RESET, "alice", state=OLD_HASH, ttl=600, client_ip="203.0.113.9")
    token_id, secret = parse_token(token)
    other_secret = new_token()[2]
    errors: list[TokenRejected] = []
    for call in (
        tokens.consume(token, purpose=VERIFY, state=OLD_HASH),
        tokens.consume(f"bot_{token_id}.{other_secret}", purpose=RESET, state=OLD_HASH),
        tokens.consume(token + "x", purpose=RESET, state=OLD_HASH),
        tokens.peek(token, purpose=RESET, state=NEW_HASH),
    ):
        with pytest.raises(TokenRejected) as info:
            await call
        errors.append(info.value)
    assert await tokens.consume(token, purpose=RESET, state=OLD_HASH) == "alice"
    with pytest.raises(TokenRejected) as info:
        await tokens.consume(token, purpose=RESET, state=OLD_HASH)
    errors.append(info.value)
    assert recording.names() == [
        "authn_token_created",
        "authn_login_fail",  # wrong purpose
        "authn_login_fail",  # another secret for the id: unknown
        "authn_login_fail",  # malformed
        "authn_login_fail",  # state changed
        "onetime_token_consumed",
        "authn_token_reuse",
    ]
    reasons = [event.details.get("reason") for event in recording.events]
    assert reasons == [
        None,
        "wrong_purpose",
        "unknown",
        "malformed",
        "state_changed",
        None,
        "unknown",
    ]
    seen = [caplog.text, repr(tokens), *map(repr, recording.events), *map(str, errors)]
    seen += [repr(error) for error in errors]
    for text in seen:
        assert token not in text
        assert secret not in text
        assert secret[:16] not in text
        assert OLD_HASH not in text
        assert NEW_HASH not in text
    assert "onetime_token_consumed" in caplog.text  # the logging sink did write
    assert recording.events[-1].level == "warn"  # a used link opened again: not critical


# -- outages ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_redis_outage_is_store_unavailable(
    start_redis_server: Callable[..., RedisServer], ring: KeyRing, clock: FrozenClock
) -> None:
    server = start_redis_server()
    store = RedisStore.from_url(server.url, socket_timeout=1.0, connect_timeout=1.0)
    tokens = OneTimeTokens(store, ring, clock=clock)
    try:
        token = await tokens.issue(RESET, "alice", state=OLD_HASH, ttl=600)
        server.stop()
        with pytest.raises(StoreUnavailable):
            await tokens.consume(token, purpose=RESET, state=OLD_HASH)
        with pytest.raises(StoreUnavailable):
            tokens.consume_sync(token, purpose=RESET, state=OLD_HASH)
        with pytest.raises(StoreUnavailable):
            await tokens.issue(RESET, "alice", state=OLD_HASH, ttl=600)
        server.start()  # nothing was lost: the token still consumes, once
        assert await tokens.consume(token, purpose=RESET, state=OLD_HASH) == "alice"
    finally:
        await store.aclose()


@pytest.mark.asyncio
async def test_a_locked_sqlite_file_is_store_unavailable_and_the_token_survives(
    tmp_path: Path, ring: KeyRing, clock: FrozenClock
) -> None:
    path = tmp_path / "locked.db"
    store = SQLiteStore(path, clock=clock, timeout=0.2)
    tokens = OneTimeTokens(store, ring, clock=clock)
    token = await tokens.issue(RESET, "alice", state=OLD_HASH, ttl=600)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable):
            await tokens.consume(token, purpose=RESET, state=OLD_HASH)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert await tokens.consume(token, purpose=RESET, state=OLD_HASH) == "alice"
    await store.aclose()


@pytest.mark.asyncio
async def test_the_sync_twins_share_the_records(
    any_store: Store, ring: KeyRing, clock: FrozenClock
) -> None:
    tokens = OneTimeTokens(any_store, ring, clock=clock)

    def wsgi_side() -> str:
        token = tokens.issue_sync(VERIFY, "alice", state="a@example.org", ttl=600)
        assert tokens.owner_sync(token, purpose=VERIFY) == "alice"
        assert tokens.peek_sync(token, purpose=VERIFY, state="a@example.org") == "alice"
        with pytest.raises(TokenRejected) as info:
            tokens.peek_sync(token, purpose=VERIFY, state="b@example.org")
        assert info.value.reason is TokenReason.STATE_CHANGED
        return token

    token = await asyncio.to_thread(wsgi_side)
    assert await tokens.consume(token, purpose=VERIFY, state="a@example.org") == "alice"
    with pytest.raises(TokenRejected) as info:
        await asyncio.to_thread(
            lambda: tokens.consume_sync(token, purpose=VERIFY, state="a@example.org")
        )
    assert info.value.reason is TokenReason.UNKNOWN
