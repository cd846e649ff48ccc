"""A revoked refresh family takes its access tokens with it, at the HTTP level.

The attack: a thief rotates a stolen refresh token (A1 -> A2); the victim's client presents the
old one, reuse detection revokes the family. Before the fix the thief's access token kept
working until it expired. Now every access token minted from a family names it (claim ``fid``),
revoking the family writes a marker under the user's hash tag, and the bearer check reads it in
its one ``MGET``. Real Starlette and Flask apps behind ``protect()``, a real SQLite file, the
session's real Redis (and Redis Cluster), audit events recorded.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import flask
import httpx
import pytest
import pytest_asyncio
import redis
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

import bastion.asgi
import bastion.flask
import bastion.starlette
from bastion import Bastion, JWTKey, JWTKeySet, KeyRing, TokenPolicy
from bastion.core.audit import Auditor, EventName, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.tokens.reasons import TokenReason, TokenRejected
from bastion.engine.sessions.registry import epoch_key
from bastion.engine.tokens.refresh import RefreshTokens
from bastion.engine.tokens.revocation import (
    DEFAULT_SLACK,
    FAMILY_MARKER,
    Revocations,
    check_family_id,
    deny_key,
    family_marker_key,
)
from bastion.errors import ConfigurationError, StoreBusy, StoreUnavailable
from bastion.stores.keyspace import key_slot
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.stores.sqlite import SQLiteStore
from bastion.testing.audit import RecordingAuditSink
from bastion.testing.sync_store import CountingStore
from bastion.tokens.service import FAMILY_CLAIM

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from starlette.requests import Request

    from bastion.runtime import Runtime
    from bastion.stores.base import Store
    from bastion.testing.redis_cluster import RedisClusterServers

ISSUER = "https://api.example"
NOW = 1_700_000_000.0
RING = KeyRing.from_secrets(["f" * 43])
HASHER = IdentifierHasher(RING)
LIFETIME = 300.0
REVOKED_CHALLENGE = (
    'Bearer realm="api", error="invalid_token", error_description="The access token was revoked"'
)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def sink() -> RecordingAuditSink:
    return RecordingAuditSink()


@pytest_asyncio.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def store(
    request: pytest.FixtureRequest, clock: FrozenClock, tmp_path: Path
) -> AsyncIterator[Store]:
    """A SQLite file or the session's Redis under a fresh prefix."""
    opened: Store
    if request.param == "sqlite":
        opened = SQLiteStore(tmp_path / "tokens.db", clock=clock)
    else:
        opened = RedisStore.from_url(
            request.getfixturevalue("redis_url"),
            prefix=request.getfixturevalue("redis_prefix"),
            clock=clock,
        )
    yield opened
    await opened.aclose()


def _config(store: Store | str, clock: FrozenClock, sink: RecordingAuditSink) -> Bastion:
    return Bastion(
        store=store,
        keyring=RING,
        clock=clock,
        csrf=None,
        headers="api",
        environment="development",
        auditor=Auditor(HASHER, clock, sink, aggregation=None),
        tokens=TokenPolicy(
            issuer=ISSUER,
            keys=JWTKeySet(JWTKey.generate("EdDSA", kid="k1")),
            protect=("/api/*",),
            access_lifetime=LIFETIME,
        ),
    )


def _starlette(runtime: Runtime) -> httpx.AsyncClient:
    tokens = runtime.tokens

    async def me(request: Request) -> JSONResponse:
        return JSONResponse({"sub": bastion.starlette.principal(request).subject})

    async def refresh(request: Request) -> JSONResponse:
        body = await request.json()
        try:
            pair = await tokens.refresh(body["refresh_token"])
        except TokenRejected as error:
            return JSONResponse(
                {"error": "invalid_grant", "reason": error.reason.value}, status_code=401
            )
        return JSONResponse(pair.to_dict())

    async def revoke(request: Request) -> JSONResponse:
        return JSONResponse({"revoked": await tokens.revoke((await request.json())["token"])})

    app = Starlette(
        routes=[
            Route("/api/me", me),
            Route("/oauth/refresh", refresh, methods=["POST"]),
            Route("/oauth/revoke", revoke, methods=["POST"]),
        ]
    )
    transport = httpx.ASGITransport(app=bastion.asgi.protect(app, runtime))
    return httpx.AsyncClient(transport=transport, base_url=ISSUER)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _refused(sink: RecordingAuditSink) -> list[tuple[dict[str, Any], str | None]]:
    return [
        (dict(event.details), event.user)
        for event in sink.events
        if event.name == EventName.INPUT_VALIDATION_FAIL
    ]


async def _assert_revoked(http: httpx.AsyncClient, token: str) -> None:
    answer = await http.get("/api/me", headers=_bearer(token))
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == REVOKED_CHALLENGE


@pytest.mark.asyncio
async def test_reuse_refuses_every_access_token_of_the_family(
    store: Store, clock: FrozenClock, sink: RecordingAuditSink
) -> None:
    runtime = _config(store, clock, sink).build()
    tokens = runtime.tokens
    first = await tokens.issue("alice", scopes=("read",))
    other = await tokens.issue("alice")  # another device: another family
    bare = await tokens.guide.create_access_token("alice")  # minted without a family
    assert FAMILY_CLAIM not in tokens.decode_access(bare)[0].raw
    async with _starlette(runtime) as http:
        stolen = await http.post("/oauth/refresh", json={"refresh_token": first.refresh_token})
        assert stolen.status_code == 200  # the thief rotates: A1 -> A2
        a2 = stolen.json()["access_token"]
        assert (await http.get("/api/me", headers=_bearer(a2))).json() == {"sub": "alice"}
        claims_1, claims_2 = (tokens.decode_access(t)[0].raw for t in (first.access_token, a2))
        assert claims_1[FAMILY_CLAIM] == claims_2[FAMILY_CLAIM]
        clock.advance(30)  # past the grace window, well within the access lifetime
        replay = await http.post("/oauth/refresh", json={"refresh_token": first.refresh_token})
        assert (replay.status_code, replay.json()) == (
            401,
            {"error": "invalid_grant", "reason": "reused"},
        )
        [reuse] = [e for e in sink.events if e.name == EventName.AUTHN_TOKEN_REUSE]
        assert reuse.details["family_id"] == claims_1[FAMILY_CLAIM]
        sink.events.clear()
        await _assert_revoked(http, first.access_token)
        await _assert_revoked(http, a2)
        assert (
            _refused(sink)
            == [({"kind": "access_token", "reason": "revoked"}, HASHER.hash("alice"))] * 2
        )
        # The user's other family, and a token without a family, are untouched.
        assert (await http.get("/api/me", headers=_bearer(other.access_token))).status_code == 200
        assert (await http.get("/api/me", headers=_bearer(bare))).status_code == 200
        again = await http.post("/oauth/refresh", json={"refresh_token": other.refresh_token})
        assert again.status_code == 200
        fresh = again.json()["access_token"]
        assert (await http.get("/api/me", headers=_bearer(fresh))).status_code == 200
    await runtime.aclose()


@pytest.mark.asyncio
async def test_an_explicit_revoke_of_the_refresh_token_refuses_its_access_tokens(
    store: Store, clock: FrozenClock, sink: RecordingAuditSink
) -> None:
    runtime = _config(store, clock, sink).build()
    tokens = runtime.tokens
    first = await tokens.issue("alice")
    other = await tokens.issue("alice")
    async with _starlette(runtime) as http:
        second = (
            await http.post("/oauth/refresh", json={"refresh_token": first.refresh_token})
        ).json()
        answer = await http.post("/oauth/revoke", json={"token": second["refresh_token"]})
        assert answer.json() == {"revoked": True}
        assert [
            e.details["kind"] for e in sink.events if e.name == EventName.AUTHN_TOKEN_REVOKED
        ] == ["refresh_family"]
        sink.events.clear()
        await _assert_revoked(http, first.access_token)
        await _assert_revoked(http, second["access_token"])
        assert [d["reason"] for d, _user in _refused(sink)] == ["revoked", "revoked"]
        assert (await http.get("/api/me", headers=_bearer(other.access_token))).status_code == 200
        refused = await http.post("/oauth/refresh", json={"refresh_token": second["refresh_token"]})
        assert refused.json() == {"error": "invalid_grant", "reason": "revoked"}
    await runtime.aclose()


@pytest.mark.asyncio
async def test_the_marker_shares_the_users_slot_and_lives_as_long_as_an_access_token(
    store: Store, clock: FrozenClock, sink: RecordingAuditSink, request: pytest.FixtureRequest
) -> None:
    runtime = _config(store, clock, sink).build()
    tokens = runtime.tokens
    pair = await tokens.issue("alice")
    family = tokens.decode_access(pair.access_token)[0].raw[FAMILY_CLAIM]
    marker = family_marker_key("alice", family)
    tag = "{alice}"
    assert tag in marker
    assert tag in epoch_key("alice")
    assert tag in deny_key(ISSUER, "j", "alice")
    assert pair.refresh_token is not None
    assert await tokens.revoke(pair.refresh_token)
    assert await store.get(marker) is not None
    if isinstance(store, RedisStore):
        url = request.getfixturevalue("redis_url")
        ttl = await asyncio.to_thread(_pttl, url, store.full_key(marker))
        assert LIFETIME + DEFAULT_SLACK - 5 <= ttl / 1000 <= LIFETIME + DEFAULT_SLACK
    else:
        clock.advance(LIFETIME + DEFAULT_SLACK - 1)
        assert await store.get(marker) is not None
        clock.advance(2)  # every access token of the family has expired by now
        assert await store.get(marker) is None
    await runtime.aclose()


def _pttl(url: str, key: bytes) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.pttl(key))
    finally:
        client.close()


class _MarkerOutage(MemoryStore):
    """A memory store whose writes of family markers fail while ``down`` is set."""

    down = True

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        if self.down and key.startswith("token-fam-off:"):
            raise StoreUnavailable("the marker write failed")
        await super().set(key, value, ttl)


@pytest.mark.asyncio
async def test_a_lost_marker_write_is_an_outage_and_the_next_use_heals_it(
    clock: FrozenClock, sink: RecordingAuditSink
) -> None:
    store = _MarkerOutage(clock=clock)
    runtime = _config(store, clock, sink).build()
    tokens = runtime.tokens
    first = await tokens.issue("alice")
    assert first.refresh_token is not None
    await tokens.refresh(first.refresh_token)
    clock.advance(30)
    with pytest.raises(StoreUnavailable):  # not a plain "reused": the marker is not written
        await tokens.refresh(first.refresh_token)
    store.down = False
    with pytest.raises(TokenRejected) as again:  # the family is revoked; the marker is rewritten
        await tokens.refresh(first.refresh_token)
    assert again.value.reason is TokenReason.REVOKED
    async with _starlette(runtime) as http:
        await _assert_revoked(http, first.access_token)
    await runtime.aclose()


def test_flask_reuse_and_revoke_refuse_the_familys_access_tokens(
    tmp_path: Path, clock: FrozenClock, sink: RecordingAuditSink
) -> None:
    app = flask.Flask(__name__)

    @app.get("/api/me")
    def me() -> dict[str, object]:
        return {"sub": bastion.flask.principal().subject}

    runtime = bastion.flask.protect(
        app, _config(f"sqlite:///{tmp_path / 'tokens.db'}", clock, sink)
    )
    tokens = runtime.tokens
    http = app.test_client()
    stolen, kept, revoked = (tokens.issue_sync("alice") for _ in range(3))
    assert stolen.refresh_token is not None
    assert revoked.refresh_token is not None
    a2 = tokens.refresh_sync(stolen.refresh_token)
    clock.advance(30)
    with pytest.raises(TokenRejected) as reused:
        tokens.refresh_sync(stolen.refresh_token)
    assert reused.value.reason is TokenReason.REUSED
    assert tokens.revoke_sync(revoked.refresh_token)
    for token in (stolen.access_token, a2.access_token, revoked.access_token):
        answer = http.get("/api/me", headers=_bearer(token))
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"] == REVOKED_CHALLENGE
    assert [d["reason"] for d, _user in _refused(sink)] == ["revoked"] * 3
    answer = http.get("/api/me", headers=_bearer(kept.access_token))
    assert (answer.status_code, answer.json) == (200, {"sub": "alice"})
    runtime.close()


@pytest.mark.redis
@pytest.mark.asyncio
async def test_on_redis_cluster_the_check_stays_one_mget(
    redis_cluster: RedisClusterServers, clock: FrozenClock, sink: RecordingAuditSink
) -> None:
    """Deny entry, epoch and marker in one slot: a cross-slot MGET would fail loudly here."""
    runtime = _config(redis_cluster.url, clock, sink).build()
    tokens = runtime.tokens
    pair = await tokens.issue("alice")
    other = await tokens.issue("alice")
    assert pair.refresh_token is not None
    async with _starlette(runtime) as http:
        assert (await http.get("/api/me", headers=_bearer(pair.access_token))).status_code == 200
        assert await tokens.revoke(pair.refresh_token)
        await _assert_revoked(http, pair.access_token)
        assert (await http.get("/api/me", headers=_bearer(other.access_token))).status_code == 200
    await runtime.aclose()


FAMILY = "f" * 22


@pytest.mark.asyncio
async def test_the_check_with_a_family_is_still_one_store_call(
    any_store: Store, clock: FrozenClock
) -> None:
    counting = CountingStore(any_store)
    revocations = Revocations(counting, clock=clock)
    assert await revocations.check(ISSUER, "j", "alice", 0, family_id=FAMILY) is None
    assert dict(counting.calls) == {"get_many": 1}
    await any_store.set(family_marker_key("alice", FAMILY), FAMILY_MARKER, 60)
    counting.reset()
    check = revocations.check_sync
    for epoch in (0, None):  # with and without an epoch claim
        assert (
            await asyncio.to_thread(
                lambda e=epoch: check(ISSUER, "j", "alice", e, family_id=FAMILY)
            )
            is TokenReason.REVOKED
        )
    assert dict(counting.calls) == {"get_many": 2}
    counting.reset()
    verdict = await revocations.check_and_read(ISSUER, "j", "alice", 0, "x", family_id=FAMILY)
    assert verdict == (TokenReason.REVOKED, None)
    assert dict(counting.calls) == {"get_many": 1}
    # Another family of alice, and the same family id under another user, are not revoked.
    assert await revocations.check(ISSUER, "j", "alice", 0, family_id="g" * 22) is None
    assert await revocations.check(ISSUER, "j", "bob", 0, family_id=FAMILY) is None
    marker = family_marker_key("alice", FAMILY)
    assert (
        key_slot(marker) == key_slot(epoch_key("alice")) == key_slot(deny_key(ISSUER, "j", "alice"))
    )


@pytest.mark.parametrize("bad", ["", "a" * 65, "a.b", "a{b}", "é" * 4, 7, None, ["a"]])
def test_a_malformed_family_claim_is_a_bad_claim(bad: object) -> None:
    with pytest.raises(TokenRejected) as refused:
        check_family_id(bad)
    assert refused.value.reason is TokenReason.BAD_CLAIM


@pytest.mark.asyncio
async def test_a_family_named_by_the_caller_must_be_a_family_id(clock: FrozenClock) -> None:
    refresh = RefreshTokens(MemoryStore(clock=clock), RING, clock=clock)
    for bad in ("short", "a{b}" * 5, "x" * 65):
        with pytest.raises(ConfigurationError) as refused:
            await refresh.issue("alice", epoch=0, family_id=bad)
        assert refused.value.setting == "family_id"
    _token, info = await refresh.issue("alice", epoch=0, family_id=FAMILY)
    assert info.family_id == FAMILY
    with pytest.raises(StoreBusy):  # the id is taken: one attempt, no silent other id
        await refresh.issue("alice", epoch=0, family_id=FAMILY)
