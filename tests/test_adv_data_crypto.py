"""Adversarial checks of field encryption's core: every bit of a ciphertext flipped, every cut
and extension, key ids that lie, a key rotated out, odd values (empty, NUL, lone surrogates,
long text), blind indexes across columns and tables, and passphrase parameters.
"""

from __future__ import annotations

import pytest

from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.crypto.envelope import (
    HEADER_BYTES,
    OVERHEAD_BYTES,
    Algorithm,
    Cipher,
    decode_text,
    encode_text,
    record_aad,
)
from bastion.core.crypto.errors import (
    DecryptionFailed,
    DecryptReason,
    EncryptionFailed,
    MalformedCiphertext,
    UnknownKey,
)
from bastion.core.crypto.keys import DataKeyRing, PassphraseKDF
from bastion.core.keys import KeyRing, SecretKey
from bastion.crypto import CryptoPolicy, DataKey, EncryptionService
from bastion.errors import ConfigurationError
from bastion.testing.audit import RecordingAuditSink

K1 = DataKey(1, SecretKey(b"\x61" * 32))
K2 = DataKey(2, SecretKey(b"\x62" * 32))
OTHER_1 = DataKey(1, SecretKey(b"\x63" * 32))  # another installation's key with the same id
INDEX = SecretKey(b"\x64" * 32)
FIELD = {"table": "users", "row": 7, "column": "phone"}


def service(*keys: DataKey, algorithm: Algorithm = Algorithm.AES_256_GCM) -> EncryptionService:
    return EncryptionService(CryptoPolicy(keys=list(keys), index_key=INDEX, algorithm=algorithm))


def reason_of(crypto: EncryptionService, token: str, **field: object) -> DecryptReason:
    with pytest.raises(DecryptionFailed) as caught:
        crypto.decrypt_field(token, **{**FIELD, **field})  # type: ignore[arg-type]
    return caught.value.reason


def test_every_single_bit_flip_is_refused_with_the_reason_of_its_byte() -> None:
    crypto = service(K1)
    blob = decode_text(crypto.encrypt_field("555-0100", **FIELD) or "")
    reasons: dict[int, set[DecryptReason]] = {}
    for position in range(len(blob)):
        for bit in range(8):
            flipped = bytearray(blob)
            flipped[position] ^= 1 << bit
            reasons.setdefault(position, set()).add(reason_of(crypto, encode_text(bytes(flipped))))
    assert reasons[0] == {DecryptReason.UNSUPPORTED_FORMAT}  # the format version
    # The algorithm byte (1): no single flip gives 2 (GCM-SIV), only unknown algorithms.
    assert reasons[1] == {DecryptReason.UNSUPPORTED_FORMAT}
    for position in range(2, 6):  # the key id: another id, not in the ring
        assert reasons[position] == {DecryptReason.UNKNOWN_KEY}
    for position in range(6, len(blob)):  # nonce, body and tag
        assert reasons[position] == {DecryptReason.NOT_AUTHENTIC}


def test_the_algorithm_byte_swapped_to_gcm_siv_is_not_authentic() -> None:
    crypto = service(K1)
    blob = bytearray(decode_text(crypto.encrypt_field("555-0100", **FIELD) or ""))
    blob[1] = 2  # AES-256-GCM-SIV under the same key id: its own subkey, its own header
    assert reason_of(crypto, encode_text(bytes(blob))) is DecryptReason.NOT_AUTHENTIC


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_every_cut_and_every_extension_is_refused(algorithm: Algorithm) -> None:
    crypto = service(K1, algorithm=algorithm)
    blob = decode_text(crypto.encrypt_field("555-0100", **FIELD) or "")
    assert len(blob) == OVERHEAD_BYTES + len("555-0100")
    for length in range(len(blob)):
        expected = (
            DecryptReason.MALFORMED if length < OVERHEAD_BYTES else DecryptReason.NOT_AUTHENTIC
        )
        assert reason_of(crypto, encode_text(blob[:length])) is expected, length
    for tail in (b"\x00", b"\x00" * 16, blob[HEADER_BYTES:]):
        assert reason_of(crypto, encode_text(blob + tail)) is DecryptReason.NOT_AUTHENTIC


def test_an_empty_value_still_carries_a_tag_and_is_bound_to_its_row() -> None:
    crypto = service(K1)
    token = crypto.encrypt_field("", **FIELD)
    assert token is not None
    assert len(decode_text(token)) == OVERHEAD_BYTES
    assert crypto.decrypt_field(token, **FIELD) == ""  # type: ignore[arg-type]
    assert reason_of(crypto, token, row=8) is DecryptReason.NOT_AUTHENTIC
    assert reason_of(crypto, "") is DecryptReason.MALFORMED


@pytest.mark.parametrize(
    "value", ["\x00", "a\x00b", "\u2028\u2029", "\U0001f600" * 3, "x" * 100_000]
)
def test_odd_values_round_trip(value: str) -> None:
    crypto = service(K1)
    token = crypto.encrypt_field(value, **FIELD)
    assert crypto.decrypt_field(token, **FIELD) == value  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["\ud800", "a\udcff", "\udfff\ud800"])
def test_lone_surrogates_are_refused_as_encryption_failed_everywhere(value: str) -> None:
    crypto = service(K1)
    with pytest.raises(EncryptionFailed, match="lone surrogate"):
        crypto.encrypt_field(value, **FIELD)
    with pytest.raises(EncryptionFailed, match="lone surrogate"):
        crypto.encrypt(value)
    # The same text searched for through a blind index (a JSON body may hold "\ud800"): the
    # same typed error, not a UnicodeEncodeError from deep inside.
    with pytest.raises(EncryptionFailed, match="lone surrogate"):
        crypto.blind_index(value, table="users", column="email")


def test_a_key_with_the_same_id_from_another_ring_is_not_authentic() -> None:
    token = service(K1).encrypt_field("555-0100", **FIELD) or ""
    assert reason_of(service(OTHER_1), token) is DecryptReason.NOT_AUTHENTIC


def test_a_key_rotated_out_is_an_unknown_key_naming_its_id() -> None:
    token = service(K1).encrypt_field("555-0100", **FIELD) or ""
    rotated = service(K2, K1)
    assert rotated.needs_rotation(token)
    fresh = rotated.rotate_field(token, **FIELD)  # type: ignore[arg-type]
    assert rotated.key_id_of(fresh) == 2
    assert not rotated.needs_rotation(fresh)
    with pytest.raises(UnknownKey) as caught:
        service(K2).decrypt_field(token, **FIELD)  # type: ignore[arg-type]
    assert (caught.value.reason, caught.value.key_id) == (DecryptReason.UNKNOWN_KEY, 1)
    assert service(K2).decrypt_field(fresh, **FIELD) == "555-0100"  # type: ignore[arg-type]


def test_row_spellings_that_name_the_same_row_and_those_that_do_not() -> None:
    crypto = service(K1)
    token = crypto.encrypt_field("v", table="t", row=5, column="c")
    assert token is not None
    assert crypto.decrypt_field(token, table="t", row="5", column="c") == "v"
    assert crypto.decrypt_field(token, table="t", row=(5,), column="c") == "v"
    for other in ("05", " 5", "5 ", (5, 5), -5):
        assert reason_of(crypto, token, table="t", row=other, column="c") is (
            DecryptReason.NOT_AUTHENTIC
        ), other
    for wrong_type in (True, 5.0, b"5"):
        with pytest.raises(TypeError):
            crypto.decrypt_field(token, table="t", row=wrong_type, column="c")  # type: ignore[arg-type]


def test_composite_keys_and_names_do_not_run_into_each_other() -> None:
    crypto = service(K1)
    token = crypto.encrypt_field("v", table="ab", row=("c", "d"), column="e")
    assert token is not None
    for table, row, column in (
        ("a", ("bc", "d"), "e"),
        ("ab", ("cd",), "e"),
        ("ab", ("c", "de"), ""),
        ("ab", ("c", "d", ""), "e"),
        ("abc", ("d",), "e"),
    ):
        assert reason_of(crypto, token, table=table, row=row, column=column) is (
            DecryptReason.NOT_AUTHENTIC
        )


def test_a_field_ciphertext_never_opens_as_a_context_one_or_the_other_way() -> None:
    crypto = service(K1)
    field = crypto.encrypt_field("v", **FIELD) or ""
    with pytest.raises(DecryptionFailed) as caught:
        crypto.decrypt(field)
    assert caught.value.reason is DecryptReason.NOT_AUTHENTIC
    loose = crypto.encrypt("v", context=b"users/7/phone")
    assert reason_of(crypto, loose) is DecryptReason.NOT_AUTHENTIC
    with pytest.raises(DecryptionFailed):
        crypto.decrypt(loose, context=b"users/8/phone")
    assert crypto.decrypt(loose, context=b"users/7/phone") == "v"


def test_blind_indexes_are_keyed_per_table_and_column_and_survive_rotation() -> None:
    crypto = service(K1)
    value = "ada@example.com"
    indexes = {
        crypto.blind_index(value, table=table, column=column)
        for table, column in (("users", "email"), ("users", "backup"), ("admins", "email"),
                              ("users.email", ""), ("", "users.email"))
    }  # fmt: skip
    assert len(indexes) == 5
    assert crypto.blind_index(value, table="users", column="email") == service(K2, K1).blind_index(
        value, table="users", column="email"
    )
    assert len(crypto.blind_index(value, table="users", column="email")) == 32


def test_passphrase_parameters_edge_cases() -> None:
    kdf = PassphraseKDF.new()
    assert PassphraseKDF.from_text(kdf.to_text()).salt == kdf.salt
    assert kdf.salt != PassphraseKDF.new().salt  # a random salt each time
    salt = kdf.to_text().rsplit("$", 1)[1]
    for text in (
        f"pbkdf2-sha256$599999${salt}",
        f"pbkdf2-sha256$0600000${salt}",
        f"pbkdf2-sha256$600000${salt[:21]}",
        f"pbkdf2-sha256$600000${salt}=",
        f"PBKDF2-SHA256$600000${salt}",
        f"pbkdf2-sha256$600000${salt}\n",
        f"pbkdf2-sha1$600000${salt}",
    ):
        with pytest.raises(ConfigurationError) as caught:
            PassphraseKDF.from_text(text)
        assert caught.value.setting in {"crypto.passphrase", "crypto.passphrase.iterations"}
    with pytest.raises(ConfigurationError):
        PassphraseKDF(salt=b"\x00" * 15)
    with pytest.raises(ConfigurationError):
        PassphraseKDF(salt=b"\x00" * 16, iterations=True)  # type: ignore[arg-type]
    for passphrase in ("", b""):
        with pytest.raises(ConfigurationError) as caught:
            kdf.derive(passphrase)
        assert caught.value.setting == "crypto.passphrase"


def test_a_passphrase_that_is_not_text_is_a_configuration_error() -> None:
    # os.environ turns bytes that are not UTF-8 into lone surrogates (surrogateescape): a
    # passphrase read from a misencoded variable must fail as configuration, naming it.
    with pytest.raises(ConfigurationError) as caught:
        PassphraseKDF.new().derive("caf\udce9")
    assert caught.value.setting == "crypto.passphrase"


def test_a_passphrase_key_is_deterministic_for_its_salt_and_works_as_a_data_key() -> None:
    kdf = PassphraseKDF(salt=b"\x01" * 16)
    key = kdf.derive("correct horse battery staple")
    assert key == PassphraseKDF.from_text(kdf.to_text()).derive(b"correct horse battery staple")
    crypto = EncryptionService(CryptoPolicy(keys=[DataKey(1, key)]))
    token = crypto.encrypt_field("v", **FIELD)
    assert crypto.decrypt_field(token, **FIELD) == "v"  # type: ignore[arg-type]


def test_a_ring_refuses_reused_secrets_and_ids_and_text_keys_must_be_long() -> None:
    with pytest.raises(ConfigurationError, match="same secret"):
        DataKeyRing(K1, previous=[DataKey(2, K1.secret)])
    with pytest.raises(ConfigurationError, match="twice"):
        DataKeyRing(K1, previous=[OTHER_1])
    with pytest.raises(ConfigurationError, match="index_key must be a key of its own"):
        CryptoPolicy(keys=[K1], index_key=K1.secret)
    short = SecretKey(b"\x01" * 31)
    with pytest.raises(ConfigurationError):
        DataKey(3, short)
    with pytest.raises(ConfigurationError):
        DataKeyRing.from_text("1:" + "A" * 41)  # 30 bytes
    for text in ("0:" + "A" * 43, "-1:" + "A" * 43, "\u0661:" + "A" * 43, "1 " + "A" * 43):
        with pytest.raises(ConfigurationError):
            DataKeyRing.from_text(text)


def test_malformed_text_forms_are_refused_before_any_key_is_used() -> None:
    crypto = service(K1)
    token = crypto.encrypt_field("v", **FIELD) or ""
    for bad in (token + "\n", " " + token, token[:10] + "\n" + token[10:], token + "=",
                token.replace("A", "+", 1) if "A" in token else token + "+", token + "é",
                token[:-1]):  # fmt: skip
        with pytest.raises(MalformedCiphertext) as caught:
            crypto.decrypt_field(bad, **FIELD)  # type: ignore[arg-type]
        assert caught.value.reason is DecryptReason.MALFORMED
    with pytest.raises(MalformedCiphertext):
        crypto.decrypt_field(b"AQEAAAAB", **FIELD)  # type: ignore[arg-type]


def test_the_cipher_reads_the_key_id_without_a_key_and_refuses_short_headers() -> None:
    cipher = Cipher(DataKeyRing(K2, previous=[K1]))
    blob = cipher.seal(b"v", b"aad")
    assert cipher.open(blob, b"aad") == b"v"
    assert not cipher.needs_rotation(blob)
    with pytest.raises(MalformedCiphertext):
        cipher.needs_rotation(blob[: OVERHEAD_BYTES - 1])


def audited_service(sink: RecordingAuditSink) -> EncryptionService:
    auditor = Auditor(
        IdentifierHasher(KeyRing.generate()), FrozenClock(1.0), sink, aggregation=None
    )
    return EncryptionService(CryptoPolicy(keys=[K1], index_key=INDEX), auditor=auditor)


def test_every_refused_field_is_audited_with_its_table_and_column_never_its_row() -> None:
    sink = RecordingAuditSink()
    crypto = audited_service(sink)
    # Authentic bytes that are not UTF-8 (stored as bytes by another writer of the same key).
    binary = Cipher(DataKeyRing(K1)).seal(b"\xff\xfe", record_aad("users", 7, "phone"))
    for token in (encode_text(binary), crypto.encrypt_field("v", **{**FIELD, "row": 8}), "!"):
        with pytest.raises(DecryptionFailed):
            crypto.decrypt_field(token, **FIELD)  # type: ignore[arg-type]
    assert [dict(event.details) for event in sink.events] == [
        {"table": "users", "column": "phone", "reason": "not_text"},
        {"table": "users", "column": "phone", "reason": "not_authentic", "key_id": 1},
        {"table": "users", "column": "phone", "reason": "malformed"},
    ]
    assert {event.name for event in sink.events} == {"crypt_decrypt_fail"}
