"""DPoP's stateful defences: proof replay on the real stores (memory, a SQLite file, a Redis
server, through ``any_store``; concurrent presentations of one proof: exactly one accepted),
and server nonces. Each asserts the exact refusal, ``reason`` and ``check``.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest
from tests.test_tokens_dpop import (
    NOW,
    URL,
    client_key,
    make_proof,
    refused,
)

from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing, SecretKey
from bastion.core.tokens.dpop import (
    DPoPCheck,
    DPoPProof,
    DPoPRejected,
    DPoPVerifier,
)
from bastion.core.tokens.dpop_nonce import DPoPNonces
from bastion.core.tokens.reasons import TokenReason
from bastion.engine.tokens.dpop import DPoPReplayCache
from bastion.errors import ConfigurationError, StoreFull, StoreUnavailable
from bastion.stores.base import SupportsSync
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.testing.audit import RecordingAuditSink

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.stores.base import Store
    from bastion.testing.redis_server import RedisServer

INVALID, MISMATCH, REPLAYED = (
    TokenReason.DPOP_INVALID,
    TokenReason.DPOP_MISMATCH,
    TokenReason.DPOP_REPLAYED,
)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def verifier(clock: FrozenClock) -> DPoPVerifier:
    return DPoPVerifier(clock=clock)


def outcome(error: DPoPRejected) -> tuple[TokenReason, DPoPCheck]:
    return error.reason, error.check


# -- replay ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_same_proof_twice_is_a_replay(any_store: Store, verifier: DPoPVerifier) -> None:
    cache = DPoPReplayCache.for_verifier(any_store, verifier)
    proof = make_proof()
    await cache.check_and_remember(verifier.verify(proof, method="GET", url=URL))

    accepted_again = verifier.verify(proof, method="GET", url=URL)  # stateless checks pass
    with pytest.raises(DPoPRejected) as info:
        await cache.check_and_remember(accepted_again)
    assert outcome(info.value) == (REPLAYED, DPoPCheck.REPLAYED)
    assert info.value.reason.error_code == "invalid_dpop_proof"


@pytest.mark.asyncio
async def test_replay_is_keyed_by_key_and_jti(any_store: Store, verifier: DPoPVerifier) -> None:
    cache = DPoPReplayCache.for_verifier(any_store, verifier)
    first = verifier.verify(make_proof(jti="shared"), method="GET", url=URL)
    await cache.check_and_remember(first)
    # another jti of the same key, and the same jti from another client's key: both fresh
    await cache.check_and_remember(verifier.verify(make_proof(jti="other"), method="GET", url=URL))
    await cache.check_and_remember(
        verifier.verify(make_proof("EdDSA", jti="shared"), method="GET", url=URL)
    )
    # a re-signed copy (ECDSA signatures differ each time) of a seen jti is still a replay
    with pytest.raises(DPoPRejected) as info:
        await cache.check_and_remember(
            verifier.verify(make_proof(jti="shared"), method="GET", url=URL)
        )
    assert outcome(info.value) == (REPLAYED, DPoPCheck.REPLAYED)


@pytest.mark.asyncio
async def test_parallel_replays_accept_exactly_one(
    any_store: Store, verifier: DPoPVerifier
) -> None:
    cache = DPoPReplayCache.for_verifier(any_store, verifier)
    proof = verifier.verify(make_proof(jti="raced"), method="GET", url=URL)

    results = await asyncio.gather(
        *(cache.check_and_remember(proof) for _ in range(24)), return_exceptions=True
    )

    assert results.count(None) == 1
    refusals = [r for r in results if r is not None]
    assert len(refusals) == 23
    assert all(isinstance(r, DPoPRejected) and r.check is DPoPCheck.REPLAYED for r in refusals)


@pytest.mark.asyncio
async def test_parallel_replays_from_threads_accept_exactly_one(
    any_store: Store, verifier: DPoPVerifier
) -> None:
    assert isinstance(any_store, SupportsSync)
    cache = DPoPReplayCache.for_verifier(any_store, verifier)
    proof = verifier.verify(make_proof(jti="threads"), method="GET", url=URL)

    def present() -> str:
        try:
            cache.check_and_remember_sync(proof)
        except DPoPRejected as error:
            return error.check.value
        return "accepted"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = await asyncio.to_thread(lambda: list(pool.map(lambda _: present(), range(16))))

    assert sorted(outcomes) == ["accepted"] + ["replayed"] * 15


def test_the_jti_is_remembered_as_long_as_a_proof_is_acceptable(clock: FrozenClock) -> None:
    verifier = DPoPVerifier(max_age=60, leeway=5, clock=clock)
    store = MemoryStore(clock=clock)
    cache = DPoPReplayCache.for_verifier(store, verifier)
    assert cache.ttl == 66.0  # max_age + leeway, and a second more for the edge
    # the latest-dated proof the verifier takes (leeway ahead) stays acceptable 65 s from now
    proof = make_proof(jti="edge", iat=NOW + 5)
    cache.check_and_remember_sync(verifier.verify(proof, method="GET", url=URL))
    clock.advance(65)
    still = verifier.verify(proof, method="GET", url=URL)  # iat is exactly max_age old
    with pytest.raises(DPoPRejected) as info:
        cache.check_and_remember_sync(still)
    assert info.value.check is DPoPCheck.REPLAYED
    clock.advance(0.001)
    assert outcome(refused(verifier, proof)) == (MISMATCH, DPoPCheck.EXPIRED)


def test_a_replay_is_audited_without_the_proof(clock: FrozenClock) -> None:
    sink = RecordingAuditSink()
    auditor = Auditor(IdentifierHasher(SecretKey.generate()), clock, sink)
    verifier = DPoPVerifier(clock=clock)
    cache = DPoPReplayCache.for_verifier(MemoryStore(clock=clock), verifier, auditor=auditor)
    raw = make_proof(jti="audited-jti")
    proof = verifier.verify(raw, method="GET", url=URL)
    cache.check_and_remember_sync(proof, client_ip="203.0.113.7")
    assert sink.events == []
    with pytest.raises(DPoPRejected):
        cache.check_and_remember_sync(proof, client_ip="203.0.113.7")
    [event] = sink.events
    assert (event.name, event.outcome, event.level) == ("authn_dpop_replay", "failure", "warn")
    assert event.details["jkt"] == proof.jkt
    assert event.client_ip is not None
    text = json.dumps(event.to_dict())
    for secret_part in (raw, *raw.split("."), "audited-jti", "203.0.113.7"):
        assert secret_part not in text


def test_replay_keys_are_hash_tagged_by_thumbprint_and_hide_the_jti() -> None:
    cache = DPoPReplayCache(MemoryStore())
    proof = DPoPProof(jkt="abc", jti="x}{y", htm="GET", htu=URL, iat=NOW, ath=None, nonce=None)
    key = cache.key(proof)
    assert key.startswith("dpop-jti:{abc}:")
    assert "x}{y" not in key


@pytest.mark.asyncio
async def test_a_store_outage_refuses_rather_than_accepts(
    start_redis_server: Callable[..., RedisServer], verifier: DPoPVerifier
) -> None:
    server = start_redis_server()
    store = RedisStore.from_url(server.url, socket_timeout=0.5, connect_timeout=0.5)
    cache = DPoPReplayCache.for_verifier(store, verifier)
    try:
        server.stop()
        with pytest.raises(StoreUnavailable):
            await cache.check_and_remember(verifier.verify(make_proof(), method="GET", url=URL))
    finally:
        await store.aclose()


def test_the_cache_refuses_what_is_not_a_verified_proof() -> None:
    cache = DPoPReplayCache(MemoryStore())
    with pytest.raises(ConfigurationError):
        cache.check_and_remember_sync(make_proof())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        DPoPReplayCache(MemoryStore(), max_age=-1)
    with pytest.raises(ConfigurationError):
        DPoPReplayCache(MemoryStore(), namespace="a{b}")


# -- server nonces (RFC 9449 sections 8 and 9) -------------------------------------------------


@pytest.fixture
def nonces(clock: FrozenClock) -> DPoPNonces:
    return DPoPNonces(KeyRing(SecretKey.generate()), lifetime=300, clock=clock)


def test_a_proof_with_the_current_nonce_is_accepted(nonces: DPoPNonces, clock: FrozenClock) -> None:
    verifier = DPoPVerifier(nonces=nonces, clock=clock)
    nonce = nonces.current()
    assert verifier.verify(make_proof(nonce=nonce), method="GET", url=URL).nonce == nonce
    clock.advance(300)  # the next window: the previous nonce still counts
    assert nonces.current() != nonce
    assert verifier.verify(make_proof(nonce=nonce, iat=clock.now()), method="GET", url=URL)


def test_a_missing_nonce_asks_for_one(nonces: DPoPNonces, clock: FrozenClock) -> None:
    error = refused(DPoPVerifier(nonces=nonces, clock=clock), make_proof())
    assert outcome(error) == (TokenReason.DPOP_NONCE, DPoPCheck.NONCE_MISSING)
    assert error.reason.error_code == "use_dpop_nonce"
    assert error.reason.status == 401


def test_stale_and_forged_nonces(nonces: DPoPNonces, clock: FrozenClock) -> None:
    verifier = DPoPVerifier(nonces=nonces, clock=clock)
    old = nonces.current()
    window, _, mac = old.partition(".")
    other_app = DPoPNonces(SecretKey.generate(), clock=clock).current()
    forged = [
        f"{int(window) + 1}.{mac}",  # a future window with this window's MAC
        f"{window}.{mac[:-1]}A" if mac[-1] != "A" else f"{window}.{mac[:-1]}B",
        f"{window}.",
        other_app,
        "",
        "garbage",
        f"{window}.{mac}" + "x" * 64,
        f"-{window}.{mac}",
        "\u0661\u0662.abc",  # non-ASCII digits
    ]
    for nonce in forged:
        error = refused(verifier, make_proof(nonce=nonce))
        assert outcome(error) == (TokenReason.DPOP_NONCE, DPoPCheck.NONCE_STALE), nonce
    clock.advance(600)  # two windows on: the old nonce is stale
    error = refused(verifier, make_proof(nonce=old, iat=clock.now()))
    assert outcome(error) == (TokenReason.DPOP_NONCE, DPoPCheck.NONCE_STALE)


def test_nonces_survive_a_key_rotation(clock: FrozenClock) -> None:
    old_key, new_key = SecretKey.generate(), SecretKey.generate()
    before = DPoPNonces(KeyRing(old_key), clock=clock).current()
    after = DPoPNonces(KeyRing(new_key, previous=[old_key]), clock=clock)
    DPoPVerifier(nonces=after, clock=clock).verify(make_proof(nonce=before), method="GET", url=URL)
    assert after.current() != before  # the new key makes the new nonces


def test_the_nonce_is_checked_after_the_proof_itself(
    nonces: DPoPNonces, clock: FrozenClock
) -> None:
    verifier = DPoPVerifier(nonces=nonces, clock=clock)
    assert refused(verifier, make_proof(htm="POST")).check is DPoPCheck.METHOD
    bound = client_key("ES256", 1).thumbprint()
    assert refused(verifier, make_proof(), expected_jkt=bound).check is DPoPCheck.KEY_MISMATCH


def test_nonce_configuration(clock: FrozenClock) -> None:
    for lifetime in (0, 5, 7200, float("inf"), True):
        with pytest.raises(ConfigurationError):
            DPoPNonces(SecretKey.generate(), lifetime=lifetime)
    with pytest.raises(ConfigurationError):
        DPoPVerifier(nonces=object())  # type: ignore[arg-type]
    assert "lifetime=300.0" in repr(DPoPNonces(SecretKey.generate(), clock=clock))


@pytest.mark.asyncio
async def test_a_full_memory_store_refuses_rather_than_forgets(verifier: DPoPVerifier) -> None:
    store = MemoryStore(max_entries=2)
    cache = DPoPReplayCache.for_verifier(store, verifier)
    first = verifier.verify(make_proof(jti="one"), method="GET", url=URL)
    await cache.check_and_remember(first)
    await cache.check_and_remember(verifier.verify(make_proof(jti="two"), method="GET", url=URL))
    with pytest.raises(StoreFull):
        await cache.check_and_remember(
            verifier.verify(make_proof(jti="three"), method="GET", url=URL)
        )
    with pytest.raises(DPoPRejected) as info:  # the first jti was not evicted to make room
        await cache.check_and_remember(first)
    assert info.value.check is DPoPCheck.REPLAYED
