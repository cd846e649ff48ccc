"""Attacks on stored ciphertexts through SQLAlchemy, on a real SQLite file and a real PostgreSQL
server: the stored value is edited with raw SQL (moved to another row or column, truncated, its
key id changed, its key removed from the ring) and each load asserts the exact typed refusal and
its ``crypt_decrypt_fail`` audit event."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from bastion.core.crypto import decode_text, encode_text
from bastion.crypto import (
    DecryptionFailed,
    DecryptReason,
    MalformedCiphertext,
    UnknownKey,
)
from bastion.testing.audit import RecordingAuditSink
from crypto_sql_support import (
    NEW,
    OLD,
    fresh_tables,
    load_patient,
    make_service,
    pick_engine,
    raw,
    seed,
    start_postgres,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Engine


@pytest.fixture(scope="module")
def postgres() -> Iterator[Engine]:
    yield from start_postgres()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return pick_engine(request, tmp_path_factory)


@pytest.fixture
def db(engine: Engine) -> Engine:
    return fresh_tables(engine)


@pytest.fixture
def sink() -> RecordingAuditSink:
    return RecordingAuditSink()


def test_a_ciphertext_moved_to_another_row_is_refused_and_audited(
    db: Engine, sink: RecordingAuditSink
) -> None:
    crypto = make_service(NEW, sink=sink)
    seed(db, crypto)
    raw(db, "UPDATE patients SET email = (SELECT email FROM patients WHERE id = 1) WHERE id = 2")
    assert load_patient(db, crypto, 1).email == "Ada@Example.com"  # the original still reads
    with pytest.raises(DecryptionFailed) as caught:
        load_patient(db, crypto, 2)
    assert type(caught.value) is DecryptionFailed
    assert caught.value.reason is DecryptReason.NOT_AUTHENTIC
    assert [str(event.name) for event in sink.events] == ["crypt_decrypt_fail"]
    assert dict(sink.events[0].details) == {
        "table": "patients",
        "column": "email",
        "reason": "not_authentic",
        "key_id": 2,
    }


def test_a_ciphertext_moved_to_another_column_is_refused(
    db: Engine, sink: RecordingAuditSink
) -> None:
    crypto = make_service(NEW, sink=sink)
    seed(db, crypto)
    raw(db, "UPDATE patients SET phone = email WHERE id = 2")
    with pytest.raises(DecryptionFailed) as caught:
        load_patient(db, crypto, 2)
    assert caught.value.reason is DecryptReason.NOT_AUTHENTIC
    assert dict(sink.events[0].details)["column"] == "phone"


@pytest.mark.parametrize(
    ("keep", "error_class", "reason"),
    [
        (30, MalformedCiphertext, DecryptReason.MALFORMED),  # shorter than header + tag
        (0, DecryptionFailed, DecryptReason.NOT_AUTHENTIC),  # whole base64 groups cut off
        (-1, MalformedCiphertext, DecryptReason.MALFORMED),  # not base64url any more
    ],
)
def test_a_truncated_ciphertext_is_refused(
    db: Engine,
    sink: RecordingAuditSink,
    keep: int,
    error_class: type[DecryptionFailed],
    reason: DecryptReason,
) -> None:
    crypto = make_service(NEW, sink=sink)
    seed(db, crypto)
    token = raw(db, "SELECT email FROM patients WHERE id = 1")[0].email
    cut = token[: (len(token) // 4 - 1) * 4] if keep == 0 else token[:keep]
    raw(db, "UPDATE patients SET email = :cut WHERE id = 1", cut=cut)
    with pytest.raises(DecryptionFailed) as caught:
        load_patient(db, crypto, 1)
    assert type(caught.value) is error_class
    assert caught.value.reason is reason
    assert dict(sink.events[0].details)["reason"] == reason.value


def _with_key_id(token: str, key_id: int) -> str:
    blob = bytearray(decode_text(token))
    blob[2:6] = key_id.to_bytes(4, "big")
    return encode_text(bytes(blob))


def test_a_changed_key_id_is_refused(db: Engine, sink: RecordingAuditSink) -> None:
    crypto = make_service(NEW, OLD, sink=sink)
    seed(db, crypto)
    token = raw(db, "SELECT email FROM patients WHERE id = 1")[0].email
    raw(db, "UPDATE patients SET email = :t WHERE id = 1", t=_with_key_id(token, 1))
    with pytest.raises(DecryptionFailed) as wrong:
        load_patient(db, crypto, 1)
    assert wrong.value.reason is DecryptReason.NOT_AUTHENTIC
    assert wrong.value.key_id == 1
    raw(db, "UPDATE patients SET email = :t WHERE id = 1", t=_with_key_id(token, 77))
    with pytest.raises(UnknownKey) as unknown:
        load_patient(db, crypto, 1)
    assert unknown.value.key_id == 77
    assert [dict(e.details)["reason"] for e in sink.events] == ["not_authentic", "unknown_key"]


def test_a_removed_key_is_refused_until_the_rows_are_rotated(
    db: Engine, sink: RecordingAuditSink
) -> None:
    seed(db, make_service(OLD))
    with pytest.raises(UnknownKey) as caught:
        load_patient(db, make_service(NEW, sink=sink), 1)
    assert caught.value.reason is DecryptReason.UNKNOWN_KEY
    assert caught.value.key_id == 1
    assert dict(sink.events[0].details) == {
        "table": "patients",
        "column": "email",
        "reason": "unknown_key",
        "key_id": 1,
    }
    assert load_patient(db, make_service(NEW, OLD), 1).email == "Ada@Example.com"
