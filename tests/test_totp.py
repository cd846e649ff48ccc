"""TOTP second factor, replay refusal, recovery codes and the pending state, on real stores."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing
from bastion.core.totp import (
    PendingSecondFactor,
    PendingStatus,
    generate_recovery_codes,
    normalize_recovery_code,
    normalize_totp_code,
    pending_status,
    validate_totp_secret,
)
from bastion.engine.totp import TOTPManager, TOTPResult
from bastion.errors import ConfigurationError
from bastion.stores.memory import MemoryStore
from bastion.testing.sync_store import CountingStore

if TYPE_CHECKING:
    from bastion.stores.base import Store

START = 1_800_000_010.0  # 10 s into a 30 s step


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def store(any_store: Store) -> Store:
    return any_store


@pytest.fixture
def counting(store: Store) -> CountingStore:
    return CountingStore(store)


@pytest.fixture
def manager(counting: CountingStore, clock: FrozenClock) -> TOTPManager:
    return TOTPManager(counting, KeyRing.generate(), issuer="Bastion Demo", clock=clock)


def code_at(secret: str, when: float, offset: int = 0) -> str:
    return pyotp.TOTP(secret).at(when, counter_offset=offset)


# --- enrolment --------------------------------------------------------------------------------


def test_enrolment_gives_secret_uri_and_svg() -> None:
    manager = TOTPManager(MemoryStore(), KeyRing.generate(), issuer="Bastion Demo")
    enrollment = manager.enroll("alice@example.org")
    assert len(enrollment.secret) == 32
    parts = urlsplit(enrollment.uri)
    assert parts.scheme == "otpauth"
    assert parts.netloc == "totp"
    query = parse_qs(parts.query)
    assert query["secret"] == [enrollment.secret]
    assert query["issuer"] == ["Bastion Demo"]
    assert enrollment.svg.startswith("<svg")
    assert enrollment.svg.rstrip().endswith("</svg>")
    assert enrollment.secret not in repr(enrollment)
    assert manager.enroll("alice@example.org").secret != enrollment.secret


def test_settings_are_validated() -> None:
    store = MemoryStore()
    for settings, setting in (
        ({"issuer": "a:b"}, "issuer"),
        ({"issuer": "x", "digits": 4}, "digits"),
        ({"issuer": "x", "interval": 5}, "interval"),
        ({"issuer": "x", "valid_window": 5}, "valid_window"),
    ):
        with pytest.raises(ConfigurationError) as caught:
            TOTPManager(store, KeyRing.generate(), **settings)  # type: ignore[arg-type]
        assert caught.value.setting == setting


# --- verification -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_current_code_is_accepted_once(manager: TOTPManager) -> None:
    secret = pyotp.random_base32()
    code = code_at(secret, START)
    assert await manager.verify("alice", secret, code) is TOTPResult.ACCEPTED
    assert await manager.verify("alice", secret, code) is TOTPResult.REPLAYED


@pytest.mark.asyncio
async def test_code_replayed_within_its_window_is_refused(
    manager: TOTPManager, clock: FrozenClock
) -> None:
    secret = pyotp.random_base32()
    code = code_at(secret, START)
    assert await manager.verify("alice", secret, code) is TOTPResult.ACCEPTED
    clock.advance(30)  # next step: the old code is still inside the drift window
    assert await manager.verify("alice", secret, code) is TOTPResult.REPLAYED
    fresh = code_at(secret, clock.now())
    assert await manager.verify("alice", secret, fresh) is TOTPResult.ACCEPTED
    # an older step than the last accepted one is refused too
    assert await manager.verify("alice", secret, code_at(secret, START)) is TOTPResult.REPLAYED


@pytest.mark.asyncio
async def test_one_step_of_drift_either_way(manager: TOTPManager) -> None:
    secret = pyotp.random_base32()
    assert await manager.verify("a", secret, code_at(secret, START, -1)) is TOTPResult.ACCEPTED
    assert await manager.verify("b", secret, code_at(secret, START, +1)) is TOTPResult.ACCEPTED
    assert await manager.verify("c", secret, code_at(secret, START, +2)) is TOTPResult.INVALID
    assert await manager.verify("c", secret, code_at(secret, START, -2)) is TOTPResult.INVALID


@pytest.mark.asyncio
async def test_users_do_not_share_steps(manager: TOTPManager) -> None:
    secret = pyotp.random_base32()
    code = code_at(secret, START)
    assert await manager.verify("alice", secret, code) is TOTPResult.ACCEPTED
    assert await manager.verify("bob", secret, code) is TOTPResult.ACCEPTED


@pytest.mark.asyncio
async def test_concurrent_submits_of_one_code_accept_exactly_once(manager: TOTPManager) -> None:
    secret = pyotp.random_base32()
    code = code_at(secret, START)
    # Six at once: the wrong-code budget compares six codes before its back-off (each submit
    # reserves a slot before its code is compared, and a replay refunds it only afterwards),
    # so more submits in flight at once than that may be answered LOCKED, never ACCEPTED.
    results = await asyncio.gather(*(manager.verify("alice", secret, code) for _ in range(6)))
    assert results.count(TOTPResult.ACCEPTED) == 1
    assert results.count(TOTPResult.REPLAYED) == 5
    late = await asyncio.gather(*(manager.verify("alice", secret, code) for _ in range(8)))
    assert set(late) <= {TOTPResult.REPLAYED, TOTPResult.LOCKED}
    assert TOTPResult.REPLAYED in late


@pytest.mark.asyncio
async def test_malformed_codes_cost_no_store_call_and_a_wrong_one_its_reservation(
    manager: TOTPManager, counting: CountingStore
) -> None:
    secret = pyotp.random_base32()
    for code in ("", "12345", "1234567", "12a456", "١٢٣٤٥٦", "x" * 10_000):
        assert await manager.verify("alice", secret, code) is TOTPResult.MALFORMED
    window = {code_at(secret, START, offset) for offset in (-1, 0, 1)}
    wrong = next(c for c in ("000000", "111111", "222222", "333333") if c not in window)
    assert counting.total == 0  # nothing malformed touched the store
    assert await manager.verify("alice", secret, wrong) is TOTPResult.INVALID
    # a wrong code costs its reservation on the wrong-code budget (see test_totp_budget.py)
    assert dict(counting.calls) == {"get": 1, "compare_and_set": 1}


BAD_SECRETS = (
    ("", "too short"),
    ("JBSWY3DPEHPK3PXP", "too short"),  # the classic 80-bit example: under 128 bits
    ("A" * 24, "too short"),  # 120 bits
    ("not base32 at all, but long enough!", "not base32"),
    ("1" * 32, "not base32"),  # 0, 1, 8 and 9 are not in the alphabet
    ("A" * 30, "not base32"),  # a length no base32 text can have
    ("A" * 16 + "=" + "A" * 16, "not base32"),  # padding inside
    ("é" * 32, "not base32"),
)


@pytest.mark.asyncio
@pytest.mark.parametrize(("secret", "problem"), BAD_SECRETS)
async def test_a_bad_stored_secret_is_a_typed_error_before_any_store_call(
    manager: TOTPManager, counting: CountingStore, secret: str, problem: str
) -> None:
    with pytest.raises(ConfigurationError, match=problem) as caught:
        await manager.verify("alice", secret, "123456")
    assert caught.value.setting == "secret"
    assert secret not in str(caught.value) or not secret
    with pytest.raises(ConfigurationError, match=problem):
        manager.verify_sync("alice", secret, "not a code")
    with pytest.raises(ConfigurationError, match=problem):
        validate_totp_secret(secret)
    assert counting.total == 0


def test_good_secrets_are_accepted_in_any_case_with_padding() -> None:
    secret = pyotp.random_base32()  # 32 characters, 160 bits
    assert validate_totp_secret(secret) == secret
    assert validate_totp_secret(secret.lower()) == secret
    assert validate_totp_secret("A" * 26) == "A" * 26  # 130 bits
    padded = "B" * 26 + "======"
    assert validate_totp_secret(padded) == "B" * 26
    enrollment = TOTPManager(MemoryStore(), KeyRing.generate(), issuer="x").enroll("alice")
    assert validate_totp_secret(enrollment.secret) == enrollment.secret


def test_code_normalisation() -> None:
    assert normalize_totp_code(" 123 456 ") == "123456"
    assert normalize_totp_code("12345678", digits=8) == "12345678"
    assert normalize_totp_code("12345") is None


# --- recovery codes ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_ten_recovery_codes_each_used_once(
    manager: TOTPManager, counting: CountingStore
) -> None:
    codes = await manager.new_recovery_codes("alice")
    assert len(codes) == 10
    assert len(set(codes)) == 10
    assert await manager.remaining_recovery_codes("alice") == 10
    assert await manager.use_recovery_code("alice", codes[0])
    assert not await manager.use_recovery_code("alice", codes[0])  # used twice: refused
    assert await manager.remaining_recovery_codes("alice") == 9
    assert not await manager.use_recovery_code("bob", codes[1])  # another user's code
    assert await manager.use_recovery_code("alice", codes[1].upper().replace("-", " "))


@pytest.mark.asyncio
async def test_recovery_codes_are_stored_hashed(clock: FrozenClock) -> None:
    memory = MemoryStore(clock=clock)
    manager = TOTPManager(memory, KeyRing.generate(), issuer="x", clock=clock)
    codes = await manager.new_recovery_codes("alice")
    stored = b"".join(value for value, _ in memory._data.values())  # white-box: what leaks
    for code in codes:
        assert code.encode() not in stored
        assert code.replace("-", "").encode() not in stored
    assert b"alice" not in b"".join(key.encode() for key in memory._data)


@pytest.mark.asyncio
async def test_new_set_replaces_the_old_one(manager: TOTPManager) -> None:
    old = await manager.new_recovery_codes("alice")
    new = await manager.new_recovery_codes("alice")
    assert not await manager.use_recovery_code("alice", old[0])
    assert await manager.use_recovery_code("alice", new[0])


@pytest.mark.asyncio
async def test_concurrent_use_of_one_recovery_code_succeeds_once(manager: TOTPManager) -> None:
    codes = await manager.new_recovery_codes("alice")
    results = await asyncio.gather(
        *(manager.use_recovery_code("alice", codes[3]) for _ in range(6))
    )
    assert results.count(True) == 1


def test_recovery_code_format_and_lookalikes() -> None:
    codes = generate_recovery_codes()
    assert len(codes) == 10
    for code in codes:
        assert len(code) == 11
        assert code[5] == "-"
        assert normalize_recovery_code(code) == code.replace("-", "")
    assert normalize_recovery_code("abcde-fghij") == "abcdefghij"
    assert normalize_recovery_code(" ABCDE FGHIJ ") == "abcdefghij"
    assert normalize_recovery_code("abcd0-fgh1j") == "abcdofghij"
    assert normalize_recovery_code("short") is None
    with pytest.raises(ConfigurationError):
        generate_recovery_codes(0)


@given(st.text(max_size=80))
def test_recovery_code_normalisation_is_total(text: str) -> None:
    result = normalize_recovery_code(text)
    assert result is None or len(result) == 10


# --- the pending state ------------------------------------------------------------------------


def test_pending_state_grants_nothing_and_expires() -> None:
    state = PendingSecondFactor(user_id="u1", started_at=1000.0)
    assert not state.grants_access
    session = {PendingSecondFactor.SESSION_KEY: state.to_dict()}
    assert pending_status(session, now=1000.0) == (PendingStatus.ACTIVE, state)
    assert pending_status(session, now=1300.0)[0] is PendingStatus.EXPIRED
    assert pending_status({}, now=1000.0) == (PendingStatus.NONE, None)
    exhausted = state
    for _ in range(5):
        exhausted = exhausted.failed()
    session = {PendingSecondFactor.SESSION_KEY: exhausted.to_dict()}
    assert pending_status(session, now=1001.0)[0] is PendingStatus.EXHAUSTED
    assert PendingSecondFactor.from_dict(state.failed().to_dict()) == state.failed()


@given(st.one_of(st.none(), st.integers(), st.text(), st.dictionaries(st.text(), st.integers())))
def test_pending_state_decoding_is_total(data: object) -> None:
    assert PendingSecondFactor.from_dict(data) is None  # none of these has the right shape
