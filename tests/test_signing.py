"""Signer and TimestampSigner: round trips, rotation, purposes, tampering, totality, time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing, SecretKey
from bastion.core.signing import (
    DEFAULT_CLOCK_SKEW,
    MAX_TOKEN_LENGTH,
    SignatureStatus,
    Signer,
    TimestampSigner,
    Verification,
)
from bastion.errors import BadData, BadSignature, ConfigurationError, SignatureExpired

NEW = SecretKey(b"n" * 32)
OLD = SecretKey(b"o" * 32)
RING = KeyRing(NEW)
T0 = 1_700_000_000.0

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
PLAIN_SHAPE = re.compile(r"[A-Za-z0-9_-]*\.[A-Za-z0-9_-]{43}")
TIMED_SHAPE = re.compile(r"[A-Za-z0-9_-]*\.[A-Za-z0-9_-]{2,11}\.[A-Za-z0-9_-]{43}")

# Every character, lone surrogates included (st.text() leaves them out by default).
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=200)
TOKENISH = st.text(st.sampled_from(B64 + ".=+/ \n"), max_size=120)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _timed(clock: FrozenClock, ring: KeyRing = RING, **kwargs: object) -> TimestampSigner:
    return TimestampSigner(ring, "reset", max_age=60, clock=clock, **kwargs)  # type: ignore[arg-type]


# --- round trips and format ---------------------------------------------------------------


@given(st.binary(max_size=512))
def test_round_trip_any_bytes(value: bytes) -> None:
    signer = Signer(RING, "session")
    token = signer.sign(value)
    assert PLAIN_SHAPE.fullmatch(token)
    result = signer.verify(token)
    assert result.status is SignatureStatus.VALID
    assert result.value == value
    assert result.signed_at is None
    assert signer.unsign(token) == value


@given(st.text(max_size=200))
def test_round_trip_text_as_utf8(value: str) -> None:
    signer = Signer(RING, "session")
    assert signer.unsign(signer.sign(value)) == value.encode("utf-8")


def test_token_is_cookie_and_url_safe() -> None:
    token = Signer(RING, "session").sign(b'\x00\xff; Path=/, "x" \r\n' * 3)
    assert token.isascii()
    assert not set(token) & set(' ;,"\\=+/\r\n')
    assert token.count(".") == 1
    assert len(token.rsplit(".", 1)[1]) == 43


def test_bytes_tokens_verify_too() -> None:
    signer = Signer(RING, "session")
    assert signer.verify(signer.sign(b"v").encode()).value == b"v"


def test_wire_format_is_pinned() -> None:
    # Tokens outlive releases: this known answer must never change without a format version.
    value = b"user:42"
    subkey = hmac.digest(b"n" * 32, b"bastion.derive.v1\x00signer:session", hashlib.sha256)
    payload = _b64(value)
    mac = hmac.digest(subkey, b"bastion.signer.v1\x00" + payload.encode(), hashlib.sha256)
    assert Signer(RING, "session").sign(value) == f"{payload}.{_b64(mac)}"


def test_timed_wire_format_is_pinned() -> None:
    clock = FrozenClock(T0 + 0.75)
    subkey = hmac.digest(b"n" * 32, b"bastion.derive.v1\x00signer:reset", hashlib.sha256)
    signed = f"{_b64(b'v')}.{_b64(int(T0).to_bytes(4, 'big'))}"
    mac = hmac.digest(subkey, b"bastion.timestamp-signer.v1\x00" + signed.encode(), hashlib.sha256)
    assert _timed(clock).sign(b"v") == f"{signed}.{_b64(mac)}"


def test_verification_is_truthy_only_when_valid_and_hides_the_value() -> None:
    signer = Signer(RING, "session")
    good = signer.verify(signer.sign(b"session-id-123"))
    assert good
    assert good.valid
    assert "session-id-123" not in repr(good)
    for status in SignatureStatus:
        if status is not SignatureStatus.VALID:
            assert not Verification(status)
            assert not Verification(status).valid


def test_repr_names_the_purpose_not_the_key() -> None:
    ring = KeyRing.from_secrets(["correct-horse-battery-staple-0123456789"])
    text = repr(Signer(ring, "session")) + repr(TimestampSigner(ring, "reset", max_age=5))
    assert "Signer(purpose='session', keys=1)" in text
    assert "TimestampSigner(purpose='reset', keys=1, max_age=5.0)" in text
    assert "horse" not in text


def test_sign_refuses_lone_surrogates_and_other_types() -> None:
    signer = Signer(RING, "session")
    with pytest.raises(BadData, match="lone surrogate"):
        signer.sign("a\udc80")
    with pytest.raises(TypeError, match="bytes or str"):
        signer.sign(42)  # type: ignore[arg-type]


def test_sign_refuses_to_produce_an_oversized_token() -> None:
    signer = Signer(RING, "session", max_length=100)
    assert len(signer.sign(b"x" * 40)) <= 100
    with pytest.raises(BadData, match="max_length=100"):
        signer.sign(b"x" * 50)


@pytest.mark.parametrize("max_length", [0, 63, -1, 100.0, True])
def test_max_length_is_validated(max_length: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        Signer(RING, "session", max_length=max_length)  # type: ignore[arg-type]
    assert info.value.setting == "max_length"


def test_bad_purpose_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        Signer(RING, "")
    with pytest.raises(ConfigurationError):
        Signer("not a ring", "session")  # type: ignore[arg-type]


def test_a_single_key_is_accepted() -> None:
    assert Signer(NEW, "session").unsign(Signer(RING, "session").sign(b"v")) == b"v"


# --- rotation -----------------------------------------------------------------------------


def test_rotation_keeps_old_tokens_valid_until_the_old_key_is_removed() -> None:
    before = Signer(KeyRing(OLD), "session")
    token = before.sign(b"alice")

    during = Signer(KeyRing(NEW, previous=[OLD]), "session")
    assert during.unsign(token) == b"alice"
    fresh = during.sign(b"alice")
    assert fresh != token  # the new key signs
    assert before.verify(fresh).status is SignatureStatus.BAD_SIGNATURE

    after = Signer(KeyRing(NEW), "session")
    assert after.verify(token).status is SignatureStatus.BAD_SIGNATURE
    assert after.unsign(fresh) == b"alice"


def test_any_position_in_the_ring_verifies() -> None:
    keys = [SecretKey(bytes([65 + i]) * 32) for i in range(4)]
    ring = KeyRing(keys[0], previous=keys[1:])
    for key in keys:
        token = Signer(KeyRing(key), "session").sign(b"v")
        assert Signer(ring, "session").verify(token).value == b"v"


def test_timed_rotation() -> None:
    clock = FrozenClock(T0)
    token = _timed(clock, KeyRing(OLD)).sign(b"v")
    assert _timed(clock, KeyRing(NEW, previous=[OLD])).verify(token).value == b"v"
    assert _timed(clock, KeyRing(NEW)).verify(token).status is SignatureStatus.BAD_SIGNATURE


# --- purpose separation -------------------------------------------------------------------


def test_purposes_are_separate() -> None:
    session, csrf = Signer(RING, "session"), Signer(RING, "csrf")
    assert csrf.verify(session.sign(b"v")).status is SignatureStatus.BAD_SIGNATURE
    assert session.verify(csrf.sign(b"v")).status is SignatureStatus.BAD_SIGNATURE
    with pytest.raises(BadSignature, match="another purpose"):
        csrf.unsign(session.sign(b"v"))


def test_timed_purposes_are_separate() -> None:
    clock = FrozenClock(T0)
    reset = _timed(clock)
    invite = TimestampSigner(RING, "invite", max_age=60, clock=clock)
    assert invite.verify(reset.sign(b"v")).status is SignatureStatus.BAD_SIGNATURE


def test_formats_do_not_cross() -> None:
    clock = FrozenClock(T0)
    plain, timed = Signer(RING, "reset"), _timed(clock)
    assert timed.verify(plain.sign(b"v")).status is SignatureStatus.MALFORMED
    assert plain.verify(timed.sign(b"v")).status is SignatureStatus.MALFORMED
    # A plain token whose value looks like "<value>.<timestamp>" still does not verify as timed.
    forged = plain.sign(b"v").replace(".", ".AQ.", 1)
    assert timed.verify(forged).status is SignatureStatus.BAD_SIGNATURE


# --- tampering ----------------------------------------------------------------------------


def _every_tampering(token: str) -> list[str]:
    variants = []
    for index, original in enumerate(token):
        variants.extend(
            token[:index] + other + token[index + 1 :] for other in B64 + "." if other != original
        )
        variants.append(token[:index] + token[index + 1 :])
    variants.extend(token + extra for extra in ("A", "=", "."))
    return variants


def test_every_single_character_change_is_refused() -> None:
    signer = Signer(RING, "session")
    token = signer.sign(b"user:42")
    for variant in _every_tampering(token):
        result = signer.verify(variant)
        assert result.status in {SignatureStatus.BAD_SIGNATURE, SignatureStatus.MALFORMED}, variant
        assert result.value is None


def test_every_single_character_change_of_a_timed_token_is_refused() -> None:
    clock = FrozenClock(T0)
    signer = _timed(clock)
    token = signer.sign(b"user:42")
    for variant in _every_tampering(token):
        result = signer.verify(variant)
        assert not result, variant
        assert result.value is None
        assert result.signed_at is None, variant  # an unauthenticated time is never reported


@settings(max_examples=300)
@given(st.binary(max_size=64), st.data())
def test_tampering_anywhere_is_refused(value: bytes, data: st.DataObject) -> None:
    signer = Signer(RING, "session")
    token = signer.sign(value)
    index = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.sampled_from(B64 + ".").filter(lambda c: c != token[index]))
    tampered = token[:index] + replacement + token[index + 1 :]
    assert not signer.verify(tampered)
    with pytest.raises(BadSignature):
        signer.unsign(tampered)


# --- totality -----------------------------------------------------------------------------


@settings(max_examples=500)
@given(st.one_of(ANY_TEXT, TOKENISH, st.binary(max_size=200)))
def test_verify_never_raises(token: str | bytes) -> None:
    clock = FrozenClock(T0)
    for signer in (Signer(RING, "session"), _timed(clock)):
        result = signer.verify(token)
        assert isinstance(result, Verification)
        assert result.status is not SignatureStatus.VALID
        assert result.value is None


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "..",
        "a.b",
        "\ud800.\udfff",
        "é" * 50,
        "A" * 1_000_000,
        "." * 1_000_000,
        "A" * 10 + "." + "A" * 43 + "\n",
        "A" * 10 + "." + "A" * 43 + "=",
        "A." + "A" * 43,  # base64 of impossible length 1
        "AAAA." + "A" * 42 + "\x00",
        None,
        42,
        ["a", "b"],
        object(),
        bytearray(b"A." + b"A" * 43),
        b"\xff" * 50,
    ],
    ids=lambda t: type(t).__name__ + str(len(t) if hasattr(t, "__len__") else ""),
)
def test_hostile_inputs_are_malformed_or_bad(token: object) -> None:
    clock = FrozenClock(T0)
    for signer in (Signer(RING, "session"), _timed(clock)):
        result = signer.verify(token)  # type: ignore[arg-type]
        assert result.status in {SignatureStatus.MALFORMED, SignatureStatus.BAD_SIGNATURE}


def test_huge_token_with_valid_structure_is_malformed_without_hmac() -> None:
    huge = "A" * (MAX_TOKEN_LENGTH + 1) + "." + "A" * 43
    assert Signer(RING, "session").verify(huge).status is SignatureStatus.MALFORMED
    # The same structure within the limit reaches the HMAC check.
    small = "A" * 100 + "." + "A" * 43
    assert Signer(RING, "session").verify(small).status is SignatureStatus.BAD_SIGNATURE


def test_a_longer_max_length_accepts_longer_tokens() -> None:
    signer = Signer(RING, "blob", max_length=64 * 1024)
    token = signer.sign(b"x" * 20_000)
    assert signer.unsign(token) == b"x" * 20_000
    assert Signer(RING, "blob").verify(token).status is SignatureStatus.MALFORMED


@settings(max_examples=100)
@given(ANY_TEXT)
def test_unsign_raises_only_bad_signature(token: str) -> None:
    with pytest.raises(BadSignature) as info:
        Signer(RING, "session").unsign(token)
    assert type(info.value) is BadSignature


def test_unsign_messages_never_echo_the_token() -> None:
    signer = Signer(RING, "session")
    token = signer.sign(b"session-id-0123456789")
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (tampered, tampered + "!", "x" + tampered):
        with pytest.raises(BadSignature) as info:
            signer.unsign(bad)
        assert tampered[:20] not in str(info.value)
        assert "purpose 'session'" in str(info.value)


# --- time ---------------------------------------------------------------------------------


def test_valid_until_max_age_then_expired() -> None:
    clock = FrozenClock(T0)
    signer = _timed(clock)
    token = signer.sign(b"v")
    clock.advance(60)
    result = signer.verify(token)
    assert result.status is SignatureStatus.VALID
    assert result.signed_at == T0
    assert result.value == b"v"
    clock.advance(1)
    result = signer.verify(token)
    assert result.status is SignatureStatus.EXPIRED
    assert result.signed_at == T0
    assert result.value is None
    assert not result


def test_unsign_raises_signature_expired_with_the_time() -> None:
    clock = FrozenClock(T0)
    signer = _timed(clock)
    token = signer.sign(b"v")
    clock.advance(3600)
    with pytest.raises(SignatureExpired) as info:
        signer.unsign(token)
    assert info.value.signed_at == T0
    assert "expired" in str(info.value)
    assert token not in str(info.value)
    assert isinstance(info.value, BadSignature)


def test_per_call_max_age() -> None:
    clock = FrozenClock(T0)
    signer = _timed(clock)
    token = signer.sign(b"v")
    clock.advance(30)
    assert signer.verify(token, max_age=29).status is SignatureStatus.EXPIRED
    assert signer.verify(token, max_age=30).status is SignatureStatus.VALID
    assert signer.verify(token).status is SignatureStatus.VALID
    with pytest.raises(SignatureExpired):
        signer.unsign(token, max_age=10)
    assert signer.unsign(token, max_age=100) == b"v"


def test_seconds_are_rounded_down_so_values_expire_early_never_late() -> None:
    clock = FrozenClock(T0 + 0.9)
    signer = _timed(clock)
    token = signer.sign(b"v")
    assert signer.verify(token).signed_at == T0
    clock.advance(59.5)  # true age 59.5 s, recorded age 60.4 s
    assert signer.verify(token).status is SignatureStatus.EXPIRED


def test_future_timestamps_beyond_the_skew_are_refused() -> None:
    assert DEFAULT_CLOCK_SKEW == 60.0
    clock = FrozenClock(T0)
    signer = _timed(clock)
    token = signer.sign(b"v")
    clock.advance(-60)  # the verifying host is 60 s behind: tolerated
    assert signer.verify(token).status is SignatureStatus.VALID
    clock.advance(-1)
    result = signer.verify(token)
    assert result.status is SignatureStatus.BAD_SIGNATURE
    assert result.signed_at == T0
    with pytest.raises(BadSignature, match="in the future") as info:
        signer.unsign(token)
    assert type(info.value) is BadSignature


def test_zero_skew_refuses_any_future_time() -> None:
    clock = FrozenClock(T0)
    signer = _timed(clock, clock_skew=0)
    token = signer.sign(b"v")
    assert signer.verify(token)
    clock.advance(-1)
    assert signer.verify(token).status is SignatureStatus.BAD_SIGNATURE


def test_a_nan_clock_fails_closed() -> None:
    clock = FrozenClock(T0)
    signer = _timed(clock)
    token = signer.sign(b"v")
    clock.set(float("nan"))
    assert not signer.verify(token)
    with pytest.raises(ConfigurationError) as info:
        signer.sign(b"v")
    assert info.value.setting == "clock"


def test_a_negative_clock_cannot_sign() -> None:
    with pytest.raises(ConfigurationError, match="non-negative"):
        _timed(FrozenClock(-5.0)).sign(b"v")


def test_epoch_zero_round_trips() -> None:
    clock = FrozenClock(0.0)
    signer = _timed(clock)
    assert signer.verify(signer.sign(b"v")).signed_at == 0.0


@given(st.floats(min_value=0, max_value=2**63, allow_nan=False), st.binary(max_size=32))
def test_timed_round_trip_at_any_time(now: float, value: bytes) -> None:
    clock = FrozenClock(now)
    signer = _timed(clock)
    token = signer.sign(value)
    assert TIMED_SHAPE.fullmatch(token)
    result = signer.verify(token)
    assert result.value == value
    assert result.signed_at == float(int(now))


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), True, "60"])
def test_max_age_and_skew_are_validated(bad: object) -> None:
    clock = FrozenClock(T0)
    with pytest.raises(ConfigurationError) as info:
        TimestampSigner(RING, "reset", max_age=bad, clock=clock)  # type: ignore[arg-type]
    assert info.value.setting == "max_age"
    with pytest.raises(ConfigurationError):
        _timed(clock).verify("x", max_age=bad)  # type: ignore[arg-type]
    if bad != 0:
        with pytest.raises(ConfigurationError) as info:
            _timed(clock, clock_skew=bad)
        assert info.value.setting == "clock_skew"


def test_subkeys_are_derived_once_not_per_call() -> None:
    signer = Signer(RING, "session")
    first = signer._keys._all
    signer.sign(b"v")
    signer.verify(signer.sign(b"v"))
    assert signer._keys._all is first
    assert first == (NEW.derive("signer:session").reveal(),)
