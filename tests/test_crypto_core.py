"""The sans-I/O field-encryption core: ciphertext format, record binding, keys, blind indexes.

Every refusal asserts its exact class and reason. The byte layout is checked field by field
(version, algorithm, key id, nonce, tag), and hypothesis flips every byte of real ciphertexts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core.crypto import (
    FORMAT_VERSION,
    MIN_PBKDF2_ITERATIONS,
    OVERHEAD_BYTES,
    Algorithm,
    BlindIndexKey,
    Cipher,
    DataKey,
    DataKeyRing,
    DecryptionFailed,
    DecryptReason,
    MalformedCiphertext,
    PassphraseKDF,
    RecordAAD,
    UnknownKey,
    decode_text,
    encode_text,
    key_id_of,
    record_aad,
)
from bastion.core.crypto.keys import hkdf_subkey
from bastion.core.keys import SecretKey
from bastion.errors import BadData, ConfigurationError

KEY1 = DataKey(1, SecretKey(b"\x01" * 32))
KEY2 = DataKey(2, SecretKey(b"\x02" * 32))
AAD = record_aad("users", 42, "phone")


def refused(cipher: Cipher, blob: bytes, aad: bytes = AAD) -> DecryptionFailed:
    with pytest.raises(DecryptionFailed) as caught:
        cipher.open(blob, aad)
    return caught.value


def test_the_header_is_version_algorithm_key_id_and_nonce() -> None:
    cipher = Cipher(DataKeyRing(KEY2, previous=[KEY1]))
    blob = cipher.seal(b"x" * 32, AAD)
    assert blob[0] == FORMAT_VERSION == 1
    assert blob[1] == 1  # AES-256-GCM
    assert int.from_bytes(blob[2:6], "big") == 2 == key_id_of(blob) == cipher.current_id
    assert len(blob) == 32 + OVERHEAD_BYTES == 66
    assert len(encode_text(blob)) == 88
    assert cipher.seal(b"x" * 32, AAD)[6:18] != blob[6:18]  # a fresh nonce each time
    assert cipher.open(blob, AAD) == b"x" * 32


def test_gcm_siv_writes_algorithm_2_and_both_algorithms_decrypt() -> None:
    ring = DataKeyRing(KEY1)
    siv = Cipher(ring, algorithm=Algorithm.AES_256_GCM_SIV)
    gcm = Cipher(ring)
    blob = siv.seal(b"value", AAD)
    assert blob[1] == 2
    assert gcm.open(blob, AAD) == b"value"
    assert siv.open(gcm.seal(b"other", AAD), AAD) == b"other"
    assert gcm.needs_rotation(blob)  # new values use GCM: the SIV one is rewritten
    assert not siv.needs_rotation(blob)


@pytest.mark.parametrize(
    ("table", "row", "column"),
    [
        ("users", 43, "phone"),  # another row
        ("users", 42, "email"),  # another column
        ("admins", 42, "phone"),  # another table
        ("users", "42x", "phone"),
        ("users", (42, 1), "phone"),  # a composite key is another row
    ],
)
def test_a_ciphertext_moved_to_another_field_is_not_authentic(
    table: str, row: str | int | tuple[str | int, ...], column: str
) -> None:
    cipher = Cipher(DataKeyRing(KEY1))
    blob = cipher.seal(b"+44 20 7946 0000", AAD)
    error = refused(cipher, blob, record_aad(table, row, column))
    assert type(error) is DecryptionFailed
    assert error.reason is DecryptReason.NOT_AUTHENTIC
    assert error.key_id == 1


def test_an_int_key_and_its_decimal_text_name_the_same_row() -> None:
    assert record_aad("users", 42, "phone") == record_aad("users", "42", "phone")
    # length prefixes: shifting characters between parts changes the bytes
    assert record_aad("ab", "c", "d") != record_aad("a", "bc", "d")
    assert record_aad("t", ("a", "b"), "c") != record_aad("t", "ab", "c")
    assert record_aad("t", ("a", "b"), "c") != record_aad("t", ("ab",), "c")
    with pytest.raises(TypeError, match="primary key"):
        record_aad("t", (), "c")
    with pytest.raises(TypeError, match="primary key must be str, int or UUID"):
        record_aad("t", 1.5, "c")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="primary key must be str, int or UUID"):
        record_aad("t", True, "c")


@pytest.mark.parametrize("cut", [1, 16, 17, 40, 50, 65])
def test_a_truncated_ciphertext_is_refused(cut: int) -> None:
    cipher = Cipher(DataKeyRing(KEY1))
    blob = cipher.seal(b"x" * 32, AAD)[:cut]
    error = refused(cipher, blob)
    if cut < OVERHEAD_BYTES:
        assert type(error) is MalformedCiphertext
        assert error.reason is DecryptReason.MALFORMED
        assert "cut short" in str(error)
    else:
        assert type(error) is DecryptionFailed
        assert error.reason is DecryptReason.NOT_AUTHENTIC


def test_a_changed_key_id_is_refused() -> None:
    old_and_new = Cipher(DataKeyRing(KEY2, previous=[KEY1]))
    blob = bytearray(old_and_new.seal(b"secret", AAD))
    blob[2:6] = (1).to_bytes(4, "big")  # claims key 1, which the ring holds
    error = refused(old_and_new, bytes(blob))
    assert error.reason is DecryptReason.NOT_AUTHENTIC  # the header is associated data
    blob[2:6] = (9).to_bytes(4, "big")  # a key id nobody has
    unknown = refused(old_and_new, bytes(blob))
    assert type(unknown) is UnknownKey
    assert unknown.reason is DecryptReason.UNKNOWN_KEY
    assert unknown.key_id == 9
    assert "ids 2, 1" in str(unknown)


def test_a_removed_key_and_a_same_id_other_key_are_refused() -> None:
    blob = Cipher(DataKeyRing(KEY1)).seal(b"secret", AAD)
    removed = refused(Cipher(DataKeyRing(KEY2)), blob)
    assert type(removed) is UnknownKey
    assert removed.key_id == 1
    impostor = refused(Cipher(DataKeyRing(DataKey(1, SecretKey(b"\x09" * 32)))), blob)
    assert impostor.reason is DecryptReason.NOT_AUTHENTIC


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (bytes([2, 1]) + bytes(40), DecryptReason.UNSUPPORTED_FORMAT),
        (bytes([1, 3]) + bytes(40), DecryptReason.UNSUPPORTED_FORMAT),
        (bytes([0, 1]) + bytes(40), DecryptReason.UNSUPPORTED_FORMAT),
        (b"", DecryptReason.MALFORMED),
    ],
)
def test_unknown_formats_are_refused(blob: bytes, reason: DecryptReason) -> None:
    error = refused(Cipher(DataKeyRing(KEY1)), blob)
    assert type(error) is MalformedCiphertext
    assert error.reason is reason


@pytest.mark.parametrize(
    "text",
    [
        "AQEAAAAB!",  # not the alphabet
        "AQEAAAAB+/==",  # standard base64, not URL-safe
        "AQEAAAABAQ==",  # padded
        "AQEAAAABAR",  # stray bits in the last character (not canonical)
        "A",  # impossible length
        " AQEAAAABAQ",
    ],
)
def test_only_canonical_base64url_text_decodes(text: str) -> None:
    with pytest.raises(MalformedCiphertext) as caught:
        decode_text(text)
    assert caught.value.reason is DecryptReason.MALFORMED


def test_text_round_trip_and_non_text() -> None:
    blob = bytes(range(70))
    assert decode_text(encode_text(blob)) == blob
    assert "=" not in encode_text(blob)
    with pytest.raises(MalformedCiphertext, match="text, not bytes"):
        decode_text(b"abc")  # type: ignore[arg-type]
    assert issubclass(DecryptionFailed, BadData)


@settings(max_examples=60, deadline=None)
@given(value=st.binary(max_size=64), data=st.data())
def test_every_single_byte_change_is_refused(value: bytes, data: st.DataObject) -> None:
    cipher = Cipher(DataKeyRing(KEY2, previous=[KEY1]))
    blob = cipher.seal(value, AAD)
    assert cipher.open(blob, AAD) == value
    position = data.draw(st.integers(0, len(blob) - 1))
    flip = data.draw(st.integers(1, 255))
    changed = bytearray(blob)
    changed[position] ^= flip
    with pytest.raises(DecryptionFailed):
        cipher.open(bytes(changed), AAD)


def test_subkeys_are_hkdf_per_algorithm_and_key_id() -> None:
    master = b"\x01" * 32
    gcm = hkdf_subkey(master, b"aead\x00\x01" + (1).to_bytes(4, "big"))
    siv = hkdf_subkey(master, b"aead\x00\x02" + (1).to_bytes(4, "big"))
    assert len(gcm) == 32
    assert gcm != siv != master
    # the AES key is the HKDF subkey, not the master key: encrypt with the subkey directly
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

    blob = Cipher(DataKeyRing(KEY1)).seal(b"v", AAD)
    assert AESGCM(gcm).decrypt(blob[6:18], blob[18:], blob[:18] + AAD) == b"v"


def test_key_ring_validation_names_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="id 1 twice") as twice:
        DataKeyRing(KEY1, previous=[DataKey(1, SecretKey(b"\x05" * 32))])
    assert twice.value.setting == "crypto.keys"
    with pytest.raises(ConfigurationError, match="same secret"):
        DataKeyRing(KEY1, previous=[DataKey(2, SecretKey(b"\x01" * 32))])
    with pytest.raises(ConfigurationError, match="at least 32 random bytes") as short:
        DataKey(3, SecretKey(b"short", production=False))
    assert short.value.setting == "crypto.keys[3].secret"
    for bad in (0, -1, 2**32, True, "1"):
        with pytest.raises(ConfigurationError, match="whole number from 1"):
            DataKey(bad, SecretKey(b"\x01" * 32))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not one key"):
        DataKeyRing(KEY1, previous=KEY2)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="must be a SecretKey"):
        DataKey(1, b"\x01" * 32)  # type: ignore[arg-type]
    ring = DataKeyRing(KEY2, previous=[KEY1])
    assert repr(ring) == "DataKeyRing(<ids 2, 1; current 2>)"
    assert "\\x01" not in repr(KEY1)
    assert repr(KEY1) == "DataKey(id=1, secret=SecretKey('**********'))"
    assert ring.get(1) == KEY1
    assert ring.get(3) is None
    with pytest.raises(TypeError, match="pickled"):
        ring.__reduce__()


def test_key_ring_from_text() -> None:
    new, old = SecretKey.generate(), SecretKey.generate()
    ring = DataKeyRing.from_text(f"2:{new.to_text()}, 1:{old.to_text()}")
    assert [key.id for key in ring] == [2, 1]
    assert ring.current.secret == new
    for bad in ("", "2", "x:abc", f"2:{new.to_text()[:20]}", "2:!!!"):
        with pytest.raises(ConfigurationError) as caught:
            DataKeyRing.from_text(bad)
        assert caught.value.setting == "crypto.keys"


def test_passphrase_kdf_is_pbkdf2_600k_with_a_random_salt() -> None:
    first, second = PassphraseKDF.new(), PassphraseKDF.new()
    assert first.iterations == MIN_PBKDF2_ITERATIONS == 600_000
    assert len(first.salt) == 16
    assert first.salt != second.salt
    again = PassphraseKDF.from_text(first.to_text())
    assert again.salt == first.salt
    assert again.iterations == 600_000
    assert first.to_text().startswith("pbkdf2-sha256$600000$")
    key = first.derive("correct horse battery staple")
    expected = hashlib.pbkdf2_hmac("sha256", b"correct horse battery staple", first.salt, 600_000)
    assert key.reveal() == expected
    assert DataKey(1, key).id == 1  # a derived key is a valid master key
    assert repr(first) == "PassphraseKDF(iterations=600000)"


def test_passphrase_kdf_refuses_weak_parameters() -> None:
    with pytest.raises(ConfigurationError, match="at least 600,000") as few:
        PassphraseKDF(salt=b"s" * 16, iterations=100_000)
    assert few.value.setting == "crypto.passphrase.iterations"
    with pytest.raises(ConfigurationError, match="16 random bytes") as salt:
        PassphraseKDF(salt=b"fixed_salt")
    assert salt.value.setting == "crypto.passphrase.salt"
    for text in ("pbkdf2-sha256$1000$" + "A" * 22, "sha1$600000$" + "A" * 22, "x"):
        with pytest.raises(ConfigurationError):
            PassphraseKDF.from_text(text)
    with pytest.raises(ConfigurationError, match="non-empty"):
        PassphraseKDF(salt=b"s" * 16).derive("")


def test_blind_index_is_hmac_under_a_per_column_subkey() -> None:
    secret = SecretKey(b"\x07" * 32)
    index = BlindIndexKey(secret)
    value = index.index("ada@example.com", table="users", column="email")
    assert value == index.index(b"ada@example.com", table="users", column="email")
    assert len(value) == 32
    assert value != index.index("ada@example.com", table="users", column="backup_email")
    assert value != index.index("ada@example.com", table="admins", column="email")
    assert value != index.index("Ada@example.com", table="users", column="email")
    # not a plain HMAC under the configured key: a per-column HKDF subkey
    plain = hmac.digest(secret.reveal(), b"ada@example.com", hashlib.sha256)[:16].hex()
    assert value != plain
    short = BlindIndexKey(secret, size=4).index("ada@example.com", table="users", column="email")
    assert short == value[:8]
    for size in (3, 33, True):
        with pytest.raises(ConfigurationError, match="4 to 32"):
            BlindIndexKey(secret, size=size)
    with pytest.raises(TypeError, match="str or bytes"):
        index.index(5, table="users", column="email")  # type: ignore[arg-type]


def test_unsupported_algorithm_name_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="aes-256-gcm, aes-256-gcm-siv") as caught:
        Cipher(DataKeyRing(KEY1), algorithm="chacha20")  # type: ignore[arg-type]
    assert caught.value.setting == "crypto.algorithm"
    with pytest.raises(ConfigurationError, match="DataKeyRing"):
        Cipher([KEY1])  # type: ignore[arg-type]


def test_base64_of_a_real_ciphertext_is_url_safe() -> None:
    blob = Cipher(DataKeyRing(KEY1)).seal(b"\xff" * 90, AAD)
    text = encode_text(blob)
    assert base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)) == blob
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


_ROW = st.one_of(
    st.integers(-(2**70), 2**70),
    st.text(max_size=20),
    st.tuples(st.integers(), st.text(max_size=5)),
)


@settings(max_examples=80, deadline=None)
@given(table=st.text(max_size=10), row=_ROW, column=st.text(max_size=10))
def test_the_cached_record_aad_gives_the_same_bytes(
    table: str, row: str | int | tuple[str | int, ...], column: str
) -> None:
    cached = RecordAAD()
    try:
        expected = record_aad(table, row, column)
    except TypeError:  # lone surrogates
        with pytest.raises(TypeError):
            cached(table, row, column)
        return
    assert cached(table, row, column) == expected
    assert cached(table, row, column) == expected  # from the cache


def test_the_cached_record_aad_refuses_what_record_aad_refuses() -> None:
    cached = RecordAAD()
    for row in (True, 1.5, b"1", ()):
        with pytest.raises(TypeError, match="primary key"):
            cached("t", row, "c")  # type: ignore[arg-type]


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(min_size=1, max_size=40), last=st.sampled_from(_ALPHABET + "=+/"))
def test_decode_text_accepts_exactly_the_canonical_encoding(blob: bytes, last: str) -> None:
    text = encode_text(blob)
    assert decode_text(text) == blob
    changed = text[:-1] + last
    try:
        raw = decode_text(changed)
    except MalformedCiphertext:
        return
    assert encode_text(raw) == changed  # whatever decodes is the one encoding of its bytes
