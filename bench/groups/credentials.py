"""Group ``credentials``: password hashing at the chosen parameters, and API-key verification.

Hashing: bastion's :class:`~bastion.passwords.PasswordHasher` at :data:`OWASP_PROFILE`
(Argon2id, m=19 MiB, t=2, p=1) against argon2-cffi and pwdlib with the same parameters. The
µs/op figure converts to hashes per second (1e6 / µs); bastion adds NFKC normalisation and
the length cap. ``verify`` is a successful verification of a current hash.

API keys: :meth:`~bastion.engine.apikeys.APIKeyManager.verify` of a valid key with a required
scope on the memory store (format and checksum test, HMAC-SHA256, one store ``get``, JSON
decode, scope match) against the bare minimum of a lookup design: one HMAC and one dict
lookup. The target is at least 20 000 verifications per second (50 µs/op). The same
verification through the synchronous side
(:meth:`~bastion.engine.apikeys.APIKeyManager.verify_sync`: the same flow driven on
``store.sync``, as a Flask view runs it) and a malformed key's refusal (checksum only, no store
call) are timed too.
"""

from __future__ import annotations

import hashlib
import hmac
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final

import argon2
from pwdlib.hashers.argon2 import Argon2Hasher

from bastion.apikeys import APIKeyStatus
from bastion.core.keys import KeyRing
from bastion.engine.apikeys import APIKeyManager
from bastion.passwords import OWASP_PROFILE, PasswordHasher
from bastion.stores.memory import MemoryStore
from bench.group import Group
from bench.measure import async_case, sync_case

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from bench.group import Options
    from bench.measure import Case

__all__ = ["GROUP", "credential_cases"]

PASSWORD: Final = "tangerine-ocelot-violin-harbour"
KEY_WEIGHT: Final = 400  # API-key checks take microseconds, hashes tens of milliseconds


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(f"bench self-check failed: {what}")


@asynccontextmanager
async def credential_cases(_options: Options) -> AsyncIterator[list[Case]]:
    """Hashing and API-key cases; the memory store is closed on exit."""
    profile = OWASP_PROFILE
    raw = argon2.PasswordHasher(
        time_cost=profile.time_cost,
        memory_cost=profile.memory_cost,
        parallelism=profile.parallelism,
        hash_len=profile.hash_len,
        salt_len=profile.salt_len,
    )
    ours = PasswordHasher(profile)
    peer = Argon2Hasher(
        time_cost=profile.time_cost,
        memory_cost=profile.memory_cost,
        parallelism=profile.parallelism,
        hash_len=profile.hash_len,
        salt_len=profile.salt_len,
    )
    stored = ours.hash(PASSWORD)
    _expect(raw.verify(stored, PASSWORD), "argon2-cffi verifies bastion's hash")
    _expect(ours.verify_and_update(stored, PASSWORD).new_hash is None, "no rehash needed")
    _expect(peer.verify(PASSWORD, stored), "pwdlib verifies bastion's hash")

    store = MemoryStore()
    ring = KeyRing.generate()
    manager = APIKeyManager(store, ring)
    created = await manager.create("bench-user", scopes=["posts:*"])
    token = created.token
    bad = token[:-1] + ("A" if token[-1] != "A" else "B")
    result = await manager.verify(token, required_scope="posts:read")
    _expect(result.ok, "a valid key verifies")
    _expect((await manager.verify(bad)).status is APIKeyStatus.MALFORMED, "bad checksum")
    _expect(manager.verify_sync(token, required_scope="posts:read").ok, "sync side verifies")
    lookup_key = ring.derive("apikey:lookup").current.reveal()
    table = {hmac.digest(lookup_key, token.encode(), hashlib.sha256).hex(): b"record"}

    def raw_lookup() -> object:
        return table.get(hmac.digest(lookup_key, token.encode("ascii"), hashlib.sha256).hex())

    async def verify_key() -> object:
        return await manager.verify(token, required_scope="posts:read")

    async def refuse_bad_key() -> object:
        return await manager.verify(bad)

    def verify_key_sync() -> object:
        return manager.verify_sync(token, required_scope="posts:read")

    try:
        yield [
            sync_case("hash: argon2-cffi", lambda: raw.hash(PASSWORD)),
            sync_case("hash: pwdlib", lambda: peer.hash(PASSWORD), baseline="hash: argon2-cffi"),
            sync_case("hash: bastion", lambda: ours.hash(PASSWORD), baseline="hash: argon2-cffi"),
            sync_case("verify: argon2-cffi", lambda: raw.verify(stored, PASSWORD)),
            sync_case(
                "verify: bastion verify_and_update",
                lambda: ours.verify_and_update(stored, PASSWORD),
                baseline="verify: argon2-cffi",
            ),
            sync_case("api key: hmac + dict lookup", raw_lookup, weight=KEY_WEIGHT),
            async_case(
                "api key: bastion verify (memory)",
                verify_key,
                baseline="api key: hmac + dict lookup",
                weight=KEY_WEIGHT,
            ),
            sync_case(
                "api key: bastion verify_sync (memory)",
                verify_key_sync,
                baseline="api key: hmac + dict lookup",
                weight=KEY_WEIGHT,
            ),
            async_case(
                "api key: bastion refuse bad checksum",
                refuse_bad_key,
                baseline="api key: hmac + dict lookup",
                weight=KEY_WEIGHT,
            ),
        ]
    finally:
        await store.aclose()


GROUP = Group(
    name="credentials",
    title=(
        "Argon2id at OWASP's parameters (m=19 MiB, t=2, p=1; hashes/s = 1e6 / µs) beside "
        "argon2-cffi and pwdlib with the same parameters; API-key verification on the memory "
        "store (async and sync side) beside one HMAC and a dict lookup (target >= 20 000/s = "
        f"50 µs). API-key rows run {KEY_WEIGHT}x the batch size."
    ),
    iterations=5,
    cases=credential_cases,
)
