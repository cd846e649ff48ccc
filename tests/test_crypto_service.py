"""``CryptoPolicy`` and ``EncryptionService``: the guide's four calls, rotation, blind indexes,
and the ``crypt_decrypt_fail`` audit event of every refusal (exact reason and details)."""

from __future__ import annotations

import pytest

from bastion.core.audit import Auditor, EventName, IdentifierHasher, Outcome
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing, SecretKey
from bastion.crypto import (
    Algorithm,
    Ciphertext,
    CryptoPolicy,
    DataKey,
    DataKeyRing,
    DecryptionFailed,
    DecryptReason,
    EncryptionFailed,
    EncryptionService,
    MalformedCiphertext,
    UnknownKey,
)
from bastion.errors import ConfigurationError
from bastion.testing.audit import RecordingAuditSink

OLD = DataKey(1, SecretKey(b"\x01" * 32))
NEW = DataKey(2, SecretKey(b"\x02" * 32))
INDEX = SecretKey(b"\x03" * 32)
FIELD = {"table": "users", "row": 7, "column": "phone"}


def service(*keys: DataKey, sink: RecordingAuditSink | None = None) -> EncryptionService:
    auditor = (
        None
        if sink is None
        else Auditor(
            IdentifierHasher(KeyRing.generate()), FrozenClock(1_000.0), sink, aggregation=None
        )
    )
    return EncryptionService(CryptoPolicy(keys=list(keys), index_key=INDEX), auditor=auditor)


def test_the_guide_calls_round_trip() -> None:
    crypto = service(NEW)
    token = crypto.encrypt("4111 1111 1111 1111")
    assert isinstance(token, Ciphertext)
    assert crypto.decrypt(token) == "4111 1111 1111 1111"
    assert crypto.decrypt_bytes(crypto.encrypt(b"\x00\xff")) == b"\x00\xff"
    field = crypto.encrypt_field("555-0100", **FIELD)  # type: ignore[arg-type]
    assert field is not None
    assert crypto.decrypt_field(field, **FIELD) == "555-0100"  # type: ignore[arg-type]
    assert crypto.encrypt_field(None, **FIELD) is None  # type: ignore[arg-type]
    assert crypto.decrypt_field(None, **FIELD) is None  # type: ignore[arg-type]
    assert crypto.decrypt_field(crypto.encrypt_field("", **FIELD), **FIELD) == ""  # type: ignore[arg-type]
    assert crypto.current_key_id == 2
    assert crypto.key_id_of(field) == 2


def test_sizes_of_a_32_byte_value() -> None:
    crypto = service(NEW)
    value = "x" * 32
    assert len(crypto.encrypt(value)) == 88
    assert len(crypto.encrypt_field(value, **FIELD) or "") == 88  # type: ignore[arg-type]


def test_context_binds_and_fields_and_values_never_cross() -> None:
    sink = RecordingAuditSink()
    crypto = service(NEW, sink=sink)
    token = crypto.encrypt("v", context=b"invoice:9")
    assert crypto.decrypt(token, context=b"invoice:9") == "v"
    with pytest.raises(DecryptionFailed) as other:
        crypto.decrypt(token, context=b"invoice:10")
    assert other.value.reason is DecryptReason.NOT_AUTHENTIC
    field = crypto.encrypt_field("v", **FIELD)  # type: ignore[arg-type]
    assert field is not None
    with pytest.raises(DecryptionFailed):
        crypto.decrypt(field)
    with pytest.raises(DecryptionFailed):
        crypto.decrypt_field(crypto.encrypt("v"), **FIELD)  # type: ignore[arg-type]
    assert sink.names() == [EventName.CRYPT_DECRYPT_FAIL] * 3


def test_every_refusal_is_audited_with_its_reason() -> None:
    sink = RecordingAuditSink()
    crypto = service(NEW, sink=sink)
    token = crypto.encrypt_field("555-0100", **FIELD)  # type: ignore[arg-type]
    assert token is not None
    with pytest.raises(DecryptionFailed) as moved:
        crypto.decrypt_field(token, table="users", row=8, column="phone")
    assert type(moved.value) is DecryptionFailed
    with pytest.raises(MalformedCiphertext) as truncated:
        crypto.decrypt_field(token[:30], **FIELD)  # type: ignore[arg-type]
    assert truncated.value.reason is DecryptReason.MALFORMED
    with pytest.raises(UnknownKey):
        service(OLD, sink=sink).decrypt_field(token, **FIELD)  # type: ignore[arg-type]
    with pytest.raises(DecryptionFailed) as not_text:
        crypto.decrypt(crypto.encrypt(b"\xff\xfe"))
    assert not_text.value.reason is DecryptReason.NOT_TEXT
    details = [dict(event.details) for event in sink.events]
    assert details == [
        {"table": "users", "column": "phone", "reason": "not_authentic", "key_id": 2},
        {"table": "users", "column": "phone", "reason": "malformed"},
        {"table": "users", "column": "phone", "reason": "unknown_key", "key_id": 2},
        {"reason": "not_text"},
    ]
    assert all(event.outcome is Outcome.FAILURE for event in sink.events)
    assert all(str(event.name) == "crypt_decrypt_fail" for event in sink.events)
    assert all("555" not in str(event.to_dict()) for event in sink.events)
    assert all(token not in str(event.to_dict()) for event in sink.events)


def test_old_keys_decrypt_and_rotation_rewrites_under_the_current_key() -> None:
    old = service(OLD).encrypt_field("555-0100", **FIELD)  # type: ignore[arg-type]
    assert old is not None
    crypto = service(NEW, OLD)
    assert crypto.decrypt_field(old, **FIELD) == "555-0100"  # type: ignore[arg-type]
    assert crypto.needs_rotation(old)
    assert crypto.key_id_of(old) == 1
    rotated = crypto.rotate_field(old, **FIELD)  # type: ignore[arg-type]
    assert crypto.key_id_of(rotated) == 2
    assert not crypto.needs_rotation(rotated)
    assert crypto.rotate_field(rotated, **FIELD) == rotated  # type: ignore[arg-type]
    assert service(NEW).decrypt_field(rotated, **FIELD) == "555-0100"  # type: ignore[arg-type]
    with pytest.raises(UnknownKey):
        service(NEW).decrypt_field(old, **FIELD)  # type: ignore[arg-type]


def test_blind_indexes_survive_the_rotation_of_data_keys() -> None:
    before = service(OLD).blind_index("ada@example.com", table="users", column="email")
    after = service(NEW, OLD).blind_index("ada@example.com", table="users", column="email")
    assert before == after
    without = EncryptionService(CryptoPolicy(keys=[NEW]))
    with pytest.raises(ConfigurationError, match="index_key") as caught:
        without.blind_index("x", table="users", column="email")
    assert caught.value.setting == "crypto.index_key"


def test_only_text_and_bytes_are_encrypted() -> None:
    crypto = service(NEW)
    with pytest.raises(EncryptionFailed, match="not int"):
        crypto.encrypt(5)  # type: ignore[arg-type]
    with pytest.raises(EncryptionFailed, match="lone surrogate"):
        crypto.encrypt_field("\udc80", **FIELD)  # type: ignore[arg-type]
    assert issubclass(EncryptionFailed, TypeError)


def test_policy_forms_and_validation() -> None:
    assert CryptoPolicy(keys=NEW).keys.current == NEW
    assert CryptoPolicy(keys=DataKeyRing(NEW, previous=[OLD])).keys.get(1) == OLD
    text = f"2:{SecretKey.generate().to_text()}"
    assert CryptoPolicy(keys=text).keys.current.id == 2
    policy = CryptoPolicy(keys=[NEW, OLD], index_key=INDEX, algorithm="aes-256-gcm-siv")  # type: ignore[arg-type]
    assert policy.algorithm is Algorithm.AES_256_GCM_SIV
    assert repr(policy) == (
        "CryptoPolicy(keys=DataKeyRing(<ids 2, 1; current 2>), index_key=SecretKey('**********'), "
        "algorithm='aes-256-gcm-siv', index_size=16)"
    )
    cases: list[tuple[dict[str, object], str, str]] = [
        ({"keys": []}, "crypto.keys", "DataKeyRing"),
        ({"keys": [NEW], "algorithm": "des"}, "crypto.algorithm", "must be one of"),
        ({"keys": [NEW], "index_key": NEW.secret}, "crypto.index_key", "key of its own"),
        ({"keys": [NEW], "index_key": "x" * 40}, "crypto.index_key", "SecretKey or None"),
        (
            {"keys": [NEW], "index_key": SecretKey(b"s", production=False)},
            "crypto.index_key",
            "32 random bytes",
        ),
        ({"keys": [NEW], "index_size": 2}, "crypto.index_size", "4 to 32"),
    ]
    for options, setting, words in cases:
        with pytest.raises(ConfigurationError, match=words) as caught:
            CryptoPolicy(**options)  # type: ignore[arg-type]
        assert caught.value.setting == setting
    with pytest.raises(ConfigurationError, match="CryptoPolicy"):
        EncryptionService({"keys": [NEW]})  # type: ignore[arg-type]
    assert "\\x02" not in repr(service(NEW))
