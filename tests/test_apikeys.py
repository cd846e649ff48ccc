"""API keys: format and checksum, scopes, HMAC storage, expiry, revoke, rotate, audit.

State tests run against the real memory, SQLite (file in tmp_path) and Redis stores.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.apikeys import (
    APIKeyRecord,
    APIKeyStatus,
    RateLimitSetting,
    api_key_from_headers,
    generate_api_key,
    is_well_formed,
    scope_allows,
)
from bastion.core.apikeys import API_KEY_LENGTH, api_key_checksum, validate_scopes
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing, SecretKey
from bastion.engine.apikeys import APIKeyManager
from bastion.engine.ratelimit import RateLimiter, Rule
from bastion.errors import BadToken, ConfigurationError, StoreBusy, StoreUnavailable
from bastion.stores.memory import MemoryStore
from bastion.testing.audit import RecordingAuditSink
from bastion.testing.sync_store import CountingStore

if TYPE_CHECKING:
    from bastion.stores.base import Store


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(1_800_000_000.0)


@pytest.fixture
def store(any_store: Store) -> Store:
    return any_store


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.generate()


@pytest.fixture
def sink() -> RecordingAuditSink:
    return RecordingAuditSink()


@pytest.fixture
def counting(store: Store) -> CountingStore:
    return CountingStore(store)


@pytest.fixture
def manager(
    counting: CountingStore, ring: KeyRing, clock: FrozenClock, sink: RecordingAuditSink
) -> APIKeyManager:
    auditor = Auditor(IdentifierHasher(ring), clock, sink)
    return APIKeyManager(counting, ring, clock=clock, auditor=auditor)


# --- format -----------------------------------------------------------------------------------


def test_generated_keys_are_prefixed_checksummed_and_unique() -> None:
    keys = {generate_api_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith("bst_")
        assert len(key) == API_KEY_LENGTH == 40
        assert is_well_formed(key)


@given(st.integers(min_value=4, max_value=39), st.sampled_from("0123456789abcXYZ"))
def test_any_single_character_change_breaks_the_checksum(position: int, char: str) -> None:
    key = generate_api_key()
    changed = key[:position] + char + key[position + 1 :]
    if changed != key:
        assert not is_well_formed(changed)


@given(st.text(max_size=60))
def test_is_well_formed_is_total(text: str) -> None:
    assert is_well_formed(text) in (True, False)


def test_checksum_is_crc32_in_base62() -> None:
    body = "bst_" + "a" * 30
    assert len(api_key_checksum(body)) == 6
    assert not is_well_formed(body + "000000")
    assert is_well_formed(body + api_key_checksum(body))
    assert not is_well_formed(None)
    assert not is_well_formed("bst_" + "é" * 36)


def test_key_from_headers() -> None:
    key = generate_api_key()
    assert api_key_from_headers(x_api_key=key, authorization=None) == key
    assert api_key_from_headers(x_api_key=None, authorization=f"Bearer {key}") == key
    assert api_key_from_headers(x_api_key=None, authorization=f"bearer  {key} ") == key
    assert api_key_from_headers(x_api_key=None, authorization="Bearer eyJhbGciOi.x.y") is None
    assert api_key_from_headers(x_api_key=None, authorization=f"Basic {key}") is None
    assert api_key_from_headers(x_api_key=None, authorization=None) is None


# --- scopes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("granted", "required", "allowed"),
    [
        (["posts:read"], "posts:read", True),
        (["posts:read"], "posts:write", False),
        (["posts:*"], "posts:write", True),
        (["posts:*"], "posts:comments:write", True),
        (["posts:*"], "postsecret:read", False),
        (["*"], "admin:delete", True),
        ([], "posts:read", False),
    ],
)
def test_scope_matching(granted: list[str], required: str, allowed: bool) -> None:
    assert scope_allows(granted, required) is allowed


def test_scopes_are_validated() -> None:
    assert validate_scopes(["posts:read", "posts:read", "admin:*"]) == ("admin:*", "posts:read")
    for bad in (["Posts:read"], ["posts:re*d"], [""], ["posts read"]):
        with pytest.raises(ConfigurationError) as caught:
            validate_scopes(bad)
        assert caught.value.setting == "scopes"
    with pytest.raises(ConfigurationError):
        validate_scopes("posts:read")
    with pytest.raises(ConfigurationError, match="required scope"):
        scope_allows(["*"], "posts:*")


# --- the manager against real stores ----------------------------------------------------------


@pytest.mark.asyncio
async def test_create_then_verify(
    manager: APIKeyManager, counting: CountingStore, ring: KeyRing, sink: RecordingAuditSink
) -> None:
    created = await manager.create(
        "user-1", name="ci", scopes=["posts:*"], rate_limit=RateLimitSetting(limit=10, period=60)
    )
    assert created.token not in repr(created)
    result = await manager.verify(created.token, required_scope="posts:write")
    assert result.ok
    assert result.http_status == 200
    assert result.record is not None
    assert result.record.key_id == created.record.key_id
    assert result.rate_limit == RateLimitSetting(limit=10, period=60.0)
    assert sink.names() == ["authn_token_created"]
    assert sink.events[0].details["key_id"] == created.record.key_id
    # Stored as HMAC-SHA256 under the derived server key; the key itself is nowhere.
    digest = hmac.digest(
        ring.derive("apikey:lookup").current.reveal(), created.token.encode(), hashlib.sha256
    ).hex()
    raw = await counting.inner.get(f"apikeys:key:{digest}")
    assert raw is not None
    assert created.token.encode() not in raw
    assert APIKeyRecord.from_bytes(raw).owner == "user-1"


@pytest.mark.asyncio
async def test_bad_checksum_is_refused_before_any_store_call(
    manager: APIKeyManager, counting: CountingStore, sink: RecordingAuditSink
) -> None:
    created = await manager.create("user-1", scopes=["posts:read"])
    tampered = created.token[:-1] + ("A" if created.token[-1] != "A" else "B")
    calls = counting.total
    result = await manager.verify(tampered, client_ip="203.0.113.9")
    assert result.status is APIKeyStatus.MALFORMED
    assert result.http_status == 401
    assert counting.total == calls  # no lookup at all
    assert manager.counts[APIKeyStatus.MALFORMED] == 1
    event = sink.events[-1]
    assert str(event.name) == "authn_login_fail"
    assert event.details == {"method": "api_key", "reason": "malformed"}
    assert event.client_ip is not None
    assert "203.0.113.9" not in event.to_json()
    assert tampered not in event.to_json()


@pytest.mark.asyncio
async def test_unknown_but_well_formed_key_is_401(
    manager: APIKeyManager, sink: RecordingAuditSink
) -> None:
    result = await manager.verify(generate_api_key())
    assert result.status is APIKeyStatus.UNKNOWN
    assert result.http_status == 401
    assert sink.events[-1].details["reason"] == "unknown"
    missing = await manager.verify(None)
    assert missing.status is APIKeyStatus.MISSING
    assert missing.http_status == 401


@pytest.mark.asyncio
async def test_expired_key_is_401(manager: APIKeyManager, clock: FrozenClock) -> None:
    created = await manager.create("user-1", scopes=["posts:read"], expires_in=3600)
    assert (await manager.verify(created.token)).ok
    clock.advance(3600)
    result = await manager.verify(created.token)
    assert result.status is APIKeyStatus.EXPIRED
    assert result.http_status == 401


@pytest.mark.asyncio
async def test_revoked_key_is_401(manager: APIKeyManager, sink: RecordingAuditSink) -> None:
    created = await manager.create("user-1", scopes=["posts:read"])
    assert await manager.revoke(created.record.key_id)
    assert not await manager.revoke(created.record.key_id)  # already revoked
    assert not await manager.revoke("no-such-key")
    result = await manager.verify(created.token)
    assert result.status is APIKeyStatus.REVOKED
    assert result.http_status == 401
    assert sink.names() == ["authn_token_created", "authn_token_revoked", "authn_login_fail"]


@pytest.mark.asyncio
async def test_read_scope_on_a_write_route_is_403(
    manager: APIKeyManager, sink: RecordingAuditSink
) -> None:
    created = await manager.create("user-1", scopes=["posts:read"])
    result = await manager.verify(created.token, required_scope="posts:write")
    assert result.status is APIKeyStatus.INSUFFICIENT_SCOPE
    assert result.http_status == 403
    assert str(sink.events[-1].name) == "authz_fail"
    assert (await manager.verify(created.token, required_scope="posts:read")).ok


@pytest.mark.asyncio
async def test_last_used_is_written_at_most_once_a_minute(
    manager: APIKeyManager, counting: CountingStore, clock: FrozenClock
) -> None:
    created = await manager.create("user-1")
    first = await manager.verify(created.token)
    assert first.record is not None
    assert first.record.last_used_at == clock.now()
    calls = counting.total
    for _ in range(5):
        clock.advance(10)
        assert (await manager.verify(created.token)).ok
    assert counting.total == calls + 5  # gets only, no writes within the minute
    clock.advance(15)
    await manager.verify(created.token)
    assert counting.total == calls + 7  # one get and one compare_and_set
    stored = await manager.get(created.record.key_id)
    assert stored is not None
    assert stored.last_used_at == clock.now()


@pytest.mark.asyncio
async def test_rotation_keeps_the_old_key_for_the_overlap(
    manager: APIKeyManager, clock: FrozenClock
) -> None:
    old = await manager.create("user-1", name="deploy", scopes=["posts:*"], expires_in=86400 * 90)
    new = await manager.rotate(old.record.key_id, overlap=3600)
    assert new.record.scopes == ("posts:*",)
    assert new.record.name == "deploy"
    assert (await manager.verify(old.token)).ok
    assert (await manager.verify(new.token)).ok
    stored_old = await manager.get(old.record.key_id)
    assert stored_old is not None
    assert stored_old.replaced_by == new.record.key_id
    clock.advance(3600)
    assert (await manager.verify(old.token)).status is APIKeyStatus.EXPIRED
    assert (await manager.verify(new.token)).ok
    with pytest.raises(BadToken):
        await manager.rotate(old.record.key_id)


@pytest.mark.asyncio
async def test_server_key_rotation_keeps_keys_valid(
    store: Store, ring: KeyRing, clock: FrozenClock
) -> None:
    before = APIKeyManager(store, ring, clock=clock)
    created = await before.create("user-1")
    rotated = KeyRing(SecretKey.generate(), previous=[ring.current])
    after = APIKeyManager(store, rotated, clock=clock)
    assert (await after.verify(created.token)).ok
    assert not (
        await APIKeyManager(store, KeyRing.generate(), clock=clock).verify(created.token)
    ).ok


@pytest.mark.asyncio
async def test_create_validates_its_settings(manager: APIKeyManager) -> None:
    with pytest.raises(ConfigurationError) as caught:
        await manager.create("")
    assert caught.value.setting == "owner"
    with pytest.raises(ConfigurationError) as caught:
        await manager.create("user-1", expires_in=0)
    assert caught.value.setting == "expires_in"
    with pytest.raises(ConfigurationError) as caught:
        RateLimitSetting(limit=0, period=60)
    assert caught.value.setting == "rate_limit.limit"


def test_record_round_trip_and_damage() -> None:
    record = APIKeyRecord(
        key_id="k1",
        owner="u",
        name="n",
        scopes=("a:b",),
        digest="00" * 32,
        created_at=1.0,
        rate_limit=RateLimitSetting(limit=5, period=1),
    )
    assert APIKeyRecord.from_bytes(record.to_bytes()) == record
    assert "00" * 32 not in repr(record)
    for damaged in (b"", b"{}", b'{"v": 9}', b"\xff"):
        with pytest.raises(BadToken):
            APIKeyRecord.from_bytes(damaged)


_SEGMENT = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.-", min_size=1, max_size=8
).filter(lambda s: s[0].isalnum())


@given(st.lists(_SEGMENT, min_size=1, max_size=4), _SEGMENT)
def test_wildcards_cover_exactly_their_subtree(parts: list[str], other: str) -> None:
    required = ":".join(parts)
    assert scope_allows([required], required)
    assert scope_allows(["*"], required)
    assert scope_allows([parts[0] + ":*"], required) is (len(parts) > 1)
    if other != parts[0]:
        assert not scope_allows([other + ":*"], required)


@pytest.mark.asyncio
async def test_a_keys_own_rate_limit_is_enforced_by_the_limiter(manager: APIKeyManager) -> None:
    """The per-key limit travels with the verified record and drives bastion's limiter."""
    created = await manager.create(
        "user-1", name="bot", scopes=["posts:read"], rate_limit=RateLimitSetting(limit=2, period=60)
    )
    limiter = RateLimiter(MemoryStore())
    allowed = []
    for _ in range(3):
        result = await manager.verify(created.token, required_scope="posts:read")
        assert result.ok
        assert result.rate_limit is not None
        assert result.record is not None
        rule = Rule("api-key", result.rate_limit.rate())
        decision = await limiter.hit(rule, result.record.key_id)
        allowed.append(decision.allowed)
    assert allowed == [True, True, False]


@pytest.mark.asyncio
async def test_a_damaged_id_pointer_reads_as_unknown(manager: APIKeyManager, store: Store) -> None:
    created = await manager.create("alice")
    await store.set(f"apikeys:id:{created.record.key_id}", b"\xff\xfe not ascii")
    assert await manager.get(created.record.key_id) is None
    assert await manager.revoke(created.record.key_id) is False
    assert (await manager.verify(created.token)).ok  # the record itself is untouched


class _AlwaysOutbid(MemoryStore):
    """A real memory store where a competing writer changes the API-key owner index between
    every read and every compare-and-set of it (the CAS then rightly fails)."""

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        if "owner" in key:  # the owner index (hash_tag("apikey:owner", owner))
            await super().set(key, b'{"competitor":"x"}' + secrets.token_hex(4).encode())
        return await super().compare_and_set(key, expected, value, ttl)


@pytest.mark.asyncio
async def test_an_owner_index_that_keeps_changing_is_store_busy_not_a_bare_store_error() -> None:
    store = _AlwaysOutbid()
    manager = APIKeyManager(store, KeyRing.generate())
    with pytest.raises(StoreBusy) as caught:  # a StoreUnavailable: the adapters answer 503
        await manager.create("alice")
    assert isinstance(caught.value, StoreUnavailable)
    assert "changed" in str(caught.value)
