"""SecretKey and KeyRing: redaction, constant-time equality, length policy, rotation, derivation."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import logging
import pickle

import pytest

from bastion.core.keys import MIN_SECRET_BYTES, KeyRing, SecretKey, validate_purpose
from bastion.errors import ConfigurationError

SECRET_TEXT = "correct-horse-battery-staple-0123456789"  # 39 bytes, easy to spot in output
SHORT_TEXT = "hunter2-short"


def test_text_and_bytes_build_the_same_key() -> None:
    assert SecretKey(SECRET_TEXT) == SecretKey(SECRET_TEXT.encode())
    assert SecretKey(SECRET_TEXT).reveal() == SECRET_TEXT.encode("utf-8")
    assert SecretKey(bytearray(b"x" * 32)).reveal() == b"x" * 32


def test_non_ascii_text_is_encoded_as_utf8() -> None:
    text = "ключ-" * 8
    assert SecretKey(text).reveal() == text.encode("utf-8")


def test_generate_makes_distinct_random_keys() -> None:
    first, second = SecretKey.generate(), SecretKey.generate()
    assert len(first.reveal()) == MIN_SECRET_BYTES == 32
    assert first != second
    assert len(SecretKey.generate(64).reveal()) == 64


@pytest.mark.parametrize("nbytes", [0, 16, 31, 32.0, True])
def test_generate_refuses_short_or_odd_lengths(nbytes: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        SecretKey.generate(nbytes)  # type: ignore[arg-type]
    assert info.value.setting == "nbytes"


def test_to_text_is_base64url_of_the_bytes() -> None:
    key = SecretKey(b"\xff" * 32)
    text = key.to_text()
    assert text == base64.urlsafe_b64encode(b"\xff" * 32).rstrip(b"=").decode()
    assert "=" not in text
    assert len(text) == 43


@pytest.mark.parametrize(
    "render",
    [repr, str, format, lambda k: f"{k}", lambda k: f"{k!r}"],
    ids=["repr", "str", "format", "fstring", "fstring-r"],
)
def test_every_text_form_is_redacted(render: object) -> None:
    key = SecretKey(SECRET_TEXT)
    text = render(key)  # type: ignore[operator]
    assert text == "SecretKey('**********')"
    assert SECRET_TEXT not in text
    assert "correct" not in text


def test_containers_and_logging_do_not_leak(caplog: pytest.LogCaptureFixture) -> None:
    key = SecretKey(SECRET_TEXT)
    ring = KeyRing(key, previous=[SecretKey(SECRET_TEXT + "-old")])
    caplog.set_level(logging.DEBUG, logger="test.keys")
    logging.getLogger("test.keys").info("key=%s ring=%r list=%s", key, ring, [key])
    assert caplog.records, "the record must have been captured"
    assert "correct" not in caplog.text
    assert "correct" not in repr(ring)
    assert repr(ring) == "KeyRing(<2 keys>)"
    assert repr(KeyRing(key)) == "KeyRing(<1 key>)"


def test_equality_is_by_value_and_only_between_keys() -> None:
    key = SecretKey(SECRET_TEXT)
    assert key == SecretKey(SECRET_TEXT)
    assert key != SecretKey(SECRET_TEXT + "x")
    assert key != SecretKey(SECRET_TEXT[:-1] + "?")
    # Never equal to raw bytes or text: comparing a key with a guess must not work.
    assert key != SECRET_TEXT.encode()
    assert key != SECRET_TEXT


def test_hashing_is_disabled() -> None:
    key = SecretKey(SECRET_TEXT)
    with pytest.raises(TypeError):
        hash(key)
    with pytest.raises(TypeError):
        {key}  # noqa: B018 (building the set is the test)


def test_keys_cannot_be_pickled_but_copy_to_themselves() -> None:
    key = SecretKey(SECRET_TEXT)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(key)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(KeyRing(key))
    assert copy.copy(key) is key
    assert copy.deepcopy(key) is key


@pytest.mark.parametrize("production", [True, False, None])
@pytest.mark.parametrize("empty", ["", b""])
def test_an_empty_secret_is_always_refused(production: bool | None, empty: str | bytes) -> None:
    with pytest.raises(ConfigurationError, match="is empty") as info:
        SecretKey(empty, setting="SESSION_SECRET", production=production)
    assert info.value.setting == "SESSION_SECRET"
    assert "bastion secret" in str(info.value)


@pytest.mark.parametrize("value", [None, 12345, ["a" * 40], memoryview(b"a" * 40)])
def test_other_types_are_refused(value: object) -> None:
    with pytest.raises(ConfigurationError, match="must be bytes or str") as info:
        SecretKey(value)  # type: ignore[arg-type]
    assert info.value.setting == "secret_key"


def test_a_lone_surrogate_is_refused_without_echoing_the_secret() -> None:
    with pytest.raises(ConfigurationError, match="lone surrogate") as info:
        SecretKey("abc\ud800" + "x" * 40, production=False)
    assert "abc" not in str(info.value)


def test_short_secret_is_refused_in_production() -> None:
    with pytest.raises(ConfigurationError) as info:
        SecretKey(SHORT_TEXT, setting="BASTION_SECRET_KEY", production=True)
    message = str(info.value)
    assert info.value.setting == "BASTION_SECRET_KEY"
    assert f"{len(SHORT_TEXT)} bytes" in message
    assert "at least 32" in message
    assert "bastion secret" in message
    assert SHORT_TEXT not in message
    assert "hunter" not in message


def test_short_secret_warns_outside_production(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bastion.security.keys")
    key = SecretKey(SHORT_TEXT, setting="BASTION_SECRET_KEY", production=False)
    assert key.reveal() == SHORT_TEXT.encode()
    records = [r for r in caplog.records if r.name == "bastion.security.keys"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert "BASTION_SECRET_KEY" in records[0].getMessage()
    assert "bastion secret" in records[0].getMessage()
    assert "hunter" not in caplog.text


def test_long_enough_secret_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bastion.security.keys")
    SecretKey(b"k" * 32, production=False)
    SecretKey(b"k" * 32, production=True)
    assert caplog.records == []


def test_the_default_asks_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_ENV", "production")
    with pytest.raises(ConfigurationError):
        SecretKey(SHORT_TEXT)
    monkeypatch.setenv("BASTION_ENV", "test")
    assert SecretKey(b"z" * 40).reveal() == b"z" * 40


# --- derivation ---------------------------------------------------------------------------


def test_derive_is_hmac_sha256_with_a_fixed_label() -> None:
    secret = b"s" * 32
    expected = hmac.new(secret, b"bastion.derive.v1\x00signer:session", hashlib.sha256).digest()
    assert SecretKey(secret).derive("signer:session").reveal() == expected


def test_derived_keys_separate_purposes_and_secrets() -> None:
    key, other = SecretKey(b"a" * 32), SecretKey(b"b" * 32)
    assert key.derive("session") == key.derive("session")
    assert key.derive("session") != key.derive("csrf")
    assert key.derive("session") != other.derive("session")
    assert key.derive("session") != key
    assert len(key.derive("x").reveal()) == 32
    assert repr(key.derive("session")) == "SecretKey('**********')"


@pytest.mark.parametrize(
    "purpose", ["", " session", "session\x00", "séance", "a b", ".x", "x" * 201, None, b"csrf"]
)
def test_bad_purposes_are_refused(purpose: object) -> None:
    with pytest.raises(ConfigurationError, match="purpose") as info:
        SecretKey(b"a" * 32).derive(purpose)  # type: ignore[arg-type]
    assert info.value.setting == "purpose"


@pytest.mark.parametrize("purpose", ["session", "csrf", "signer:session", "a/b-c_d.e", "x" * 200])
def test_good_purposes_pass(purpose: str) -> None:
    assert validate_purpose(purpose) == purpose


# --- key rings ----------------------------------------------------------------------------


def test_ring_is_newest_first() -> None:
    new, old, older = SecretKey(b"n" * 32), SecretKey(b"o" * 32), SecretKey(b"p" * 32)
    ring = KeyRing(new, previous=[old, older])
    assert ring.current == new
    assert ring.keys == (new, old, older)
    assert list(ring) == [new, old, older]
    assert len(ring) == 3


def test_from_secrets_keeps_the_order() -> None:
    ring = KeyRing.from_secrets(["n" * 32, b"o" * 32])
    assert ring.current == SecretKey("n" * 32)
    assert ring.keys[1] == SecretKey(b"o" * 32)


def test_from_secrets_names_the_short_entry() -> None:
    with pytest.raises(ConfigurationError) as info:
        KeyRing.from_secrets(["n" * 32, "short"], setting="SECRET_KEYS", production=True)
    assert info.value.setting == "SECRET_KEYS[1]"


@pytest.mark.parametrize("values", ["n" * 40, b"n" * 40, [], ()])
def test_from_secrets_refuses_a_bare_string_or_nothing(values: object) -> None:
    with pytest.raises(ConfigurationError, match="non-empty list") as info:
        KeyRing.from_secrets(values)  # type: ignore[arg-type]
    assert info.value.setting == "secret_keys"


def test_duplicates_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="same secret twice") as info:
        KeyRing.from_secrets(["a" * 32, "b" * 32, "a" * 32])
    assert "positions 0 and 2" in str(info.value)
    assert "aaaa" not in str(info.value)
    with pytest.raises(ConfigurationError, match="same secret twice"):
        KeyRing(SecretKey(b"a" * 32), previous=[SecretKey(b"a" * 32)])


def test_ring_members_must_be_keys() -> None:
    with pytest.raises(ConfigurationError) as info:
        KeyRing("a" * 32)  # type: ignore[arg-type]
    assert info.value.setting == "current"
    with pytest.raises(ConfigurationError) as info:
        KeyRing(SecretKey(b"a" * 32), previous=[SecretKey(b"b" * 32), b"c" * 32])  # type: ignore[list-item]
    assert info.value.setting == "previous[1]"
    with pytest.raises(ConfigurationError, match="not a single key"):
        KeyRing(SecretKey(b"a" * 32), previous=SecretKey(b"b" * 32))  # type: ignore[arg-type]


def test_ring_derive_keeps_the_order() -> None:
    new, old = SecretKey(b"n" * 32), SecretKey(b"o" * 32)
    derived = KeyRing(new, previous=[old]).derive("session")
    assert derived.keys == (new.derive("session"), old.derive("session"))


def test_coerce_accepts_a_key_or_a_ring() -> None:
    key = SecretKey(b"n" * 32)
    ring = KeyRing(key)
    assert KeyRing.coerce(ring) is ring
    assert KeyRing.coerce(key).keys == (key,)
    with pytest.raises(ConfigurationError, match="KeyRing or a SecretKey"):
        KeyRing.coerce("n" * 32)  # type: ignore[arg-type]


def test_generated_ring_has_one_fresh_key() -> None:
    ring = KeyRing.generate()
    assert len(ring) == 1
    assert ring.current != KeyRing.generate().current


def test_lookup_names_under_every_key_current_first() -> None:
    new, old = SecretKey(b"n" * 32), SecretKey(b"o" * 32)
    rotated = KeyRing(new, previous=[old]).lookup("totp:ids")
    before = KeyRing(old).lookup("totp:ids")
    after = KeyRing(new).lookup("totp:ids")
    names = rotated.names(b"alice")
    # The current name is what a one-key ring of the new key gives; the next is the old name,
    # so records written before the rotation are found.
    assert names == (after.name(b"alice"), before.name(b"alice"))
    assert rotated.name(b"alice") == names[0]
    expected = hmac.digest(old.derive("totp:ids").reveal(), b"alice", hashlib.sha256)[:16].hex()
    assert names[1] == expected
    assert len(rotated) == 2
    assert "n" * 8 not in repr(rotated)
    assert len(KeyRing(new).lookup("apikey:lookup", size=32).name(b"x")) == 64
    for size in (7, 33, True, "16"):
        with pytest.raises(ConfigurationError) as info:
            KeyRing(new).lookup("p", size=size)  # type: ignore[arg-type]
        assert info.value.setting == "size"
    with pytest.raises(TypeError):
        pickle.dumps(rotated)
