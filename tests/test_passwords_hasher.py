"""PasswordHasher: Argon2id, rehash on login, legacy bcrypt, equal cost for unknown users.

A counting subclass of the real argon2-cffi hasher shows which paths hash and which do not.
"""

from __future__ import annotations

import asyncio
import threading
import unicodedata
from typing import Any

import argon2
import bcrypt
import pytest

from bastion.errors import ConfigurationError, PasswordRejected
from bastion.passwords import (
    OWASP_PROFILE,
    TEST_ONLY_PROFILE,
    Argon2Profile,
    PasswordHasher,
    VerifyResult,
)

PASSWORD = "tangerine-ocelot-violin-harbour"


class CountingArgon2(argon2.PasswordHasher):
    """The real argon2-cffi hasher, counting its hash and verify calls."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.hashes = 0
        self.verifies = 0
        self.threads: set[int] = set()

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        self.hashes += 1
        self.threads.add(threading.get_ident())
        return super().hash(password, salt=salt)

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002
        self.verifies += 1
        self.threads.add(threading.get_ident())
        return super().verify(hash, password)


def cheap_counting(**overrides: Any) -> CountingArgon2:
    params: dict[str, Any] = {
        "time_cost": 1,
        "memory_cost": 8,
        "parallelism": 1,
        "hash_len": 16,
        "salt_len": 16,
    }
    params.update(overrides)
    return CountingArgon2(**params)


@pytest.fixture
def counting() -> CountingArgon2:
    return cheap_counting()


@pytest.fixture
def hasher(counting: CountingArgon2) -> PasswordHasher:
    return PasswordHasher.from_argon2(counting)


def test_hash_is_argon2id_and_verifies(hasher: PasswordHasher) -> None:
    stored = hasher.hash(PASSWORD)
    assert stored.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert hasher.verify(stored, PASSWORD)
    assert not hasher.verify(stored, PASSWORD + "!")
    assert hasher.hash(PASSWORD) != stored  # salted


def test_default_profile_is_owasps() -> None:
    assert (OWASP_PROFILE.memory_cost, OWASP_PROFILE.time_cost, OWASP_PROFILE.parallelism) == (
        19456,
        2,
        1,
    )
    assert "m=19456 t=2 p=1" in repr(PasswordHasher())


def test_one_megabyte_password_never_reaches_the_hasher(
    hasher: PasswordHasher, counting: CountingArgon2
) -> None:
    stored = hasher.hash(PASSWORD)
    counting.hashes = counting.verifies = 0
    huge = "p" * 1_000_000
    with pytest.raises(PasswordRejected) as caught:
        hasher.hash(huge)
    assert caught.value.reasons == ("too_long",)
    with pytest.raises(PasswordRejected):
        hasher.verify_and_update(stored, huge)
    with pytest.raises(PasswordRejected):
        hasher.verify_and_update(None, huge)
    assert (counting.hashes, counting.verifies) == (0, 0)


@pytest.mark.asyncio
async def test_async_refuses_a_huge_password_without_hashing(
    hasher: PasswordHasher, counting: CountingArgon2
) -> None:
    with pytest.raises(PasswordRejected):
        await hasher.ahash("p" * 1_000_000)
    with pytest.raises(PasswordRejected):
        await hasher.averify_and_update(None, "p" * 1_000_000)
    assert (counting.hashes, counting.verifies) == (0, 0)


def test_the_same_password_in_two_unicode_forms_verifies(hasher: PasswordHasher) -> None:
    nfc = "Ma\u00f1ana-\u00e9t\u00e9-cr\u00e8me-br\u00fbl\u00e9e"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    assert hasher.verify(hasher.hash(nfc), nfd)
    assert hasher.verify(hasher.hash(nfd), nfc)


def test_unknown_and_known_user_both_verify_exactly_once(
    hasher: PasswordHasher, counting: CountingArgon2
) -> None:
    stored = hasher.hash(PASSWORD)
    counting.hashes = counting.verifies = 0
    assert hasher.verify_and_update(stored, "wrong password entirely") == VerifyResult(False)
    assert (counting.hashes, counting.verifies) == (0, 1)
    assert hasher.verify_and_update(None, "wrong password entirely") == VerifyResult(False)
    assert (counting.hashes, counting.verifies) == (0, 2)
    # Even the right password for "no such user" is refused, at the same cost.
    assert not hasher.verify(None, PASSWORD)
    assert not hasher.verify_unknown_user(PASSWORD)
    assert (counting.hashes, counting.verifies) == (0, 4)


def test_verify_and_update_rehashes_old_parameters() -> None:
    old = PasswordHasher.from_argon2(cheap_counting(time_cost=1))
    new = PasswordHasher.from_argon2(cheap_counting(time_cost=2))
    stored = old.hash(PASSWORD)
    result = new.verify_and_update(stored, PASSWORD)
    assert result.valid
    assert result.new_hash is not None
    assert ",t=2," in result.new_hash
    assert new.verify_and_update(result.new_hash, PASSWORD) == VerifyResult(True, None)
    assert new.verify_and_update(stored, "wrong") == VerifyResult(False, None)
    assert "<new hash>" in repr(result)
    assert result.new_hash not in repr(result)


def test_legacy_bcrypt_hash_verifies_and_is_upgraded(hasher: PasswordHasher) -> None:
    legacy = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    result = hasher.verify_and_update(legacy, PASSWORD)
    assert result.valid
    assert result.new_hash is not None
    assert result.new_hash.startswith("$argon2id$")
    assert hasher.verify(result.new_hash, PASSWORD)
    assert not hasher.verify(legacy, "not the password")
    assert hasher.needs_rehash(legacy)


def test_legacy_bcrypt_over_72_bytes_matches_what_bcrypt_stored(hasher: PasswordHasher) -> None:
    long_password = "x" * 100
    legacy = bcrypt.hashpw(long_password.encode()[:72], bcrypt.gensalt(rounds=4)).decode()
    assert hasher.verify(legacy, long_password)


def test_legacy_bcrypt_made_from_an_unnormalised_password(hasher: PasswordHasher) -> None:
    typed = "\uff21bc-full-width-start-here"  # NFKC turns the full-width A into A
    legacy = bcrypt.hashpw(typed.encode(), bcrypt.gensalt(rounds=4)).decode()
    assert hasher.verify(legacy, typed)


def test_malformed_stored_hashes_fail_with_a_log(
    hasher: PasswordHasher, counting: CountingArgon2, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="bastion.security.passwords"):
        assert not hasher.verify("plaintext-from-2003", PASSWORD)
        assert not hasher.verify("$argon2id$v=19$garbage", PASSWORD)
        assert not hasher.verify("$2b$04$tooshort", PASSWORD)
    assert counting.verifies == 2  # unknown formats still cost one verification
    assert "unknown format" in caplog.text
    assert PASSWORD not in caplog.text
    with pytest.raises(ConfigurationError, match="stored_hash"):
        hasher.verify(b"$argon2id$", PASSWORD)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_async_variants_hash_off_the_event_loop(
    hasher: PasswordHasher, counting: CountingArgon2
) -> None:
    loop_thread = threading.get_ident()
    stored = await hasher.ahash(PASSWORD)
    assert await hasher.averify(stored, PASSWORD)
    assert not (await hasher.averify_and_update(None, PASSWORD)).valid
    assert counting.threads
    assert loop_thread not in counting.threads
    results = await asyncio.gather(*(hasher.averify(stored, PASSWORD) for _ in range(8)))
    assert all(results)


def test_profile_and_hasher_settings_are_validated() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Argon2Profile(time_cost=0, memory_cost=1024, parallelism=1)
    assert caught.value.setting == "time_cost"
    with pytest.raises(ConfigurationError) as caught:
        Argon2Profile(time_cost=1, memory_cost=8, parallelism=2)
    assert caught.value.setting == "memory_cost"
    with pytest.raises(ConfigurationError, match="Argon2id"):
        PasswordHasher.from_argon2(argon2.PasswordHasher(type=argon2.Type.I))
    with pytest.raises(ConfigurationError, match="max_length"):
        PasswordHasher(TEST_ONLY_PROFILE, max_length=4)
    with pytest.raises(ConfigurationError, match="profile"):
        PasswordHasher("owasp")  # type: ignore[arg-type]


def test_test_only_profile_round_trips() -> None:
    hasher = PasswordHasher(TEST_ONLY_PROFILE, max_length=64)
    assert hasher.max_length == 64
    assert hasher.verify(hasher.hash(PASSWORD), PASSWORD)
    with pytest.raises(PasswordRejected):
        hasher.hash("y" * 65)


@pytest.mark.parametrize(
    ("settings", "setting"),
    [
        ({"salt_len": 7}, "salt_len"),
        ({"hash_len": 3}, "hash_len"),
        ({"time_cost": 2**32}, "time_cost"),
        ({"memory_cost": 2**32}, "memory_cost"),
        ({"parallelism": 2**24, "memory_cost": 8 * 2**24}, "parallelism"),
        ({"hash_len": 2**32}, "hash_len"),
        ({"salt_len": 2**32}, "salt_len"),
        ({"parallelism": 4, "memory_cost": 31}, "memory_cost"),
    ],
)
def test_profile_outside_argon2s_limits_is_refused_at_construction(
    settings: dict[str, int], setting: str
) -> None:
    # argon2's own limits (argon2.h: ARGON2_MIN_SALT_LENGTH 8, ARGON2_MIN_OUTLEN 4, lanes <
    # 2**24, 32-bit counts, 8 KiB of memory per lane): refused when the profile is built, never
    # at the first hash() of a running service.
    values = {"time_cost": 1, "memory_cost": 8, "parallelism": 1} | settings
    with pytest.raises(ConfigurationError) as caught:
        Argon2Profile(**values)
    assert caught.value.setting == setting
    assert setting in str(caught.value)


def test_profile_at_argon2s_lower_limits_hashes() -> None:
    profile = Argon2Profile(time_cost=1, memory_cost=8, parallelism=1, hash_len=4, salt_len=8)
    hasher = PasswordHasher(profile)
    assert hasher.verify(hasher.hash(PASSWORD), PASSWORD)


def test_a_wrapped_argon2_hasher_is_checked_against_the_same_limits() -> None:
    with pytest.raises(ConfigurationError) as caught:
        PasswordHasher.from_argon2(
            argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, salt_len=4)
        )
    assert caught.value.setting == "salt_len"
