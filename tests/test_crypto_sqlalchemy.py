"""Encrypted columns through SQLAlchemy on a real SQLite file and a real PostgreSQL server.

Every test runs on both databases. The attack cases edit the stored ciphertext with raw SQL
(moved to another row or column, truncated, a changed key id, a key removed from the ring) and
assert the exact typed refusal and its ``crypt_decrypt_fail`` audit event.

PostgreSQL is started here (``PostgresServer``: initdb in a temporary directory); without it
the PostgreSQL half skips locally and fails under ``CI=true``.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.crypto import decode_text, encode_text, key_id_of
from bastion.core.keys import KeyRing, SecretKey
from bastion.crypto import (
    CryptoPolicy,
    DataKey,
    DecryptionFailed,
    DecryptReason,
    EncryptionFailed,
    EncryptionService,
    MalformedCiphertext,
    UnknownKey,
)
from bastion.crypto.sqlalchemy import (
    EncryptedString,
    blind_index_column,
    ciphertext_length,
    matches,
    use_encryption,
)
from bastion.errors import ConfigurationError
from bastion.testing.audit import RecordingAuditSink
from bastion.testing.postgres_server import INSTALL_HINT, PostgresServer, find_initdb

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Engine

    from bastion.crypto.sqlalchemy import EncryptionHooks

OLD = DataKey(1, SecretKey(b"\x11" * 32))
NEW = DataKey(2, SecretKey(b"\x22" * 32))
INDEX = SecretKey(b"\x33" * 32)


class Base(DeclarativeBase):
    pass


class Patient(Base):
    """Autoincrement key: encrypted columns are written by an UPDATE after the INSERT."""

    __tablename__ = "patients"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(40))
    email: Mapped[str] = mapped_column(EncryptedString(120))
    phone: Mapped[str | None] = mapped_column(EncryptedString(40), nullable=True)
    email_index: Mapped[str] = blind_index_column("email", normalize=str.casefold)
    phone_index: Mapped[str | None] = blind_index_column("phone", nullable=True)


class Account(Base):
    """A key chosen by the application: one INSERT, nothing after it."""

    __tablename__ = "accounts"
    handle: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    note: Mapped[str] = mapped_column(EncryptedString(200))


class Document(Base):
    """A UUID key chosen by the application (the recommended shape)."""

    __tablename__ = "documents"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    body: Mapped[str] = mapped_column(EncryptedString(None))


class Membership(Base):
    __tablename__ = "memberships"
    org: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    member: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    note: Mapped[str] = mapped_column(EncryptedString(100))


def require_postgres() -> None:
    if find_initdb() is not None:
        return
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{INSTALL_HINT} (CI=true: a missing service fails the run)")
    pytest.skip(INSTALL_HINT)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Engine]:
    require_postgres()
    with PostgresServer() as server:
        engine = sa.create_engine(server.sqlalchemy_url)
        yield engine
        engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    if request.param == "postgresql":
        engine: Engine = request.getfixturevalue("postgres")
    else:
        path = tmp_path_factory.mktemp("crypto-sql") / "app.sqlite3"
        engine = sa.create_engine(f"sqlite:///{path}")
    assert engine.dialect.name == request.param
    return engine


@pytest.fixture
def db(engine: Engine) -> Engine:
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    return engine


@pytest.fixture
def sink() -> RecordingAuditSink:
    return RecordingAuditSink()


def make_service(*keys: DataKey, sink: RecordingAuditSink | None = None) -> EncryptionService:
    auditor = None
    if sink is not None:
        hasher = IdentifierHasher(KeyRing.generate())
        auditor = Auditor(hasher, FrozenClock(1_000.0), sink, aggregation=None)
    return EncryptionService(CryptoPolicy(keys=list(keys), index_key=INDEX), auditor=auditor)


class Encrypted:
    """``use_encryption`` on the test base, removed again when the block ends."""

    def __init__(self, crypto: EncryptionService, **options: Any) -> None:
        self.crypto = crypto
        self.options = options
        self.hooks: EncryptionHooks | None = None

    def __enter__(self) -> EncryptionService:
        self.hooks = use_encryption(Base, self.crypto, **self.options)
        return self.crypto

    def __exit__(self, *_: object) -> None:
        assert self.hooks is not None
        self.hooks.remove()


def seed(db: Engine, crypto: EncryptionService) -> None:
    with Encrypted(crypto), Session(db) as session:
        session.add_all(
            [
                Patient(name="ada", email="Ada@Example.com", phone="+44 20 7946 0000"),
                Patient(name="bob", email="bob@example.com", phone=None),
            ]
        )
        session.commit()


def raw(db: Engine, sql: str, **params: Any) -> list[sa.Row[Any]]:
    with db.begin() as conn:
        result = conn.execute(sa.text(sql), params)
        return list(result.all()) if result.returns_rows else []


def load_patient(db: Engine, crypto: EncryptionService, pk: int) -> Patient:
    with Encrypted(crypto), Session(db) as session:
        patient = session.get(Patient, pk)
        assert patient is not None
        session.expunge(patient)
        return patient


def test_values_are_stored_as_ciphertexts_and_read_back(db: Engine) -> None:
    crypto = make_service(NEW)
    seed(db, crypto)
    rows = raw(db, "SELECT id, name, email, phone, email_index FROM patients ORDER BY id")
    assert [row.name for row in rows] == ["ada", "bob"]
    for row in rows:
        assert "xample" not in row.email
        assert key_id_of(decode_text(row.email)) == 2
        assert len(row.email_index) == 32
    assert "7946" not in rows[0].phone
    assert rows[1].phone is None
    ada = load_patient(db, crypto, 1)
    assert (ada.email, ada.phone) == ("Ada@Example.com", "+44 20 7946 0000")
    assert load_patient(db, crypto, 2).phone is None
    assert Patient.__table__.c.email.type.length == ciphertext_length(120) == 206  # type: ignore[attr-defined]


def test_updates_re_encrypt_and_expired_attributes_decrypt(db: Engine) -> None:
    crypto = make_service(NEW)
    seed(db, crypto)
    before = raw(db, "SELECT phone FROM patients WHERE id = 1")[0].phone
    with Encrypted(crypto), Session(db) as session:
        ada = session.get(Patient, 1)
        assert ada is not None
        ada.phone = "+1 555 0100"
        session.commit()
        assert ada.phone == "+1 555 0100"  # reloaded after commit, decrypted again
        session.expire(ada, ["phone"])
        assert ada.phone == "+1 555 0100"
        ada.name = "ada l."  # a change elsewhere leaves the ciphertexts alone
        session.commit()
    after = raw(db, "SELECT phone, email FROM patients WHERE id = 1")[0]
    assert after.phone not in {before, "+1 555 0100"}
    assert load_patient(db, crypto, 1).phone == "+1 555 0100"


def test_a_key_chosen_by_the_app_costs_one_insert_an_autoincrement_key_two(db: Engine) -> None:
    crypto = make_service(NEW)
    statements: list[str] = []

    def record(_conn: object, _cursor: object, sql: str, *_: object) -> None:
        statements.append(sql.split(maxsplit=1)[0].upper())

    sa.event.listen(db, "before_cursor_execute", record)
    try:
        with Encrypted(crypto), Session(db) as session:
            session.add(Account(handle="ada", note="likes tea"))
            session.commit()
            writes = [s for s in statements if s in {"INSERT", "UPDATE"}]
            assert writes == ["INSERT"]
            statements.clear()
            session.add(Patient(name="c", email="c@example.com"))
            session.commit()
            assert [s for s in statements if s in {"INSERT", "UPDATE"}] == ["INSERT", "UPDATE"]
    finally:
        sa.event.remove(db, "before_cursor_execute", record)
    with Encrypted(crypto), Session(db) as session:
        account = session.get(Account, "ada")
        assert account is not None
        assert account.note == "likes tea"


def test_composite_primary_keys_bind_every_part(db: Engine, sink: RecordingAuditSink) -> None:
    crypto = make_service(NEW, sink=sink)
    with Encrypted(crypto), Session(db) as session:
        session.add_all(
            [
                Membership(org="acme", member=1, note="one"),
                Membership(org="acme", member=2, note="two"),
            ]
        )
        session.commit()
    raw(
        db,
        "UPDATE memberships SET note = (SELECT note FROM memberships WHERE member = 1) "
        "WHERE member = 2",
    )
    with Encrypted(crypto), Session(db) as session:
        first = session.get(Membership, ("acme", 1))
        assert first is not None
        assert first.note == "one"
        with pytest.raises(DecryptionFailed) as caught:
            session.get(Membership, ("acme", 2))
    assert caught.value.reason is DecryptReason.NOT_AUTHENTIC
    assert dict(sink.events[-1].details)["table"] == "memberships"


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


def test_blind_index_search_and_it_survives_rotation(db: Engine) -> None:
    seed(db, make_service(OLD))
    crypto = make_service(NEW, OLD)
    with Encrypted(crypto, rotate_on_load=True), Session(db) as session:
        found = session.scalars(
            sa.select(Patient).where(matches(Patient.email_index, "ADA@example.COM", crypto))
        ).all()
        assert [p.name for p in found] == ["ada"]
        session.commit()  # lazy rotation rewrote the loaded row under key 2
    with Encrypted(crypto), Session(db) as session:
        again = session.scalars(
            sa.select(Patient).where(matches(Patient.email_index, "ada@example.com", crypto))
        ).one()
        assert again.email == "Ada@Example.com"
        assert (
            session.scalars(
                sa.select(Patient).where(matches(Patient.email_index, "eve@example.com", crypto))
            ).all()
            == []
        )
    ids = [
        key_id_of(decode_text(r.email)) for r in raw(db, "SELECT email FROM patients ORDER BY id")
    ]
    assert ids == [2, 1]  # ada was loaded (and rewritten), bob was not


def test_lazy_rotation_writes_nothing_when_the_session_rolls_back(db: Engine) -> None:
    seed(db, make_service(OLD))
    crypto = make_service(NEW, OLD)
    before = raw(db, "SELECT email FROM patients ORDER BY id")
    with Encrypted(crypto, rotate_on_load=True), Session(db) as session:
        assert [p.name for p in session.scalars(sa.select(Patient).order_by(Patient.id))] == [
            "ada",
            "bob",
        ]
        session.rollback()
    assert raw(db, "SELECT email FROM patients ORDER BY id") == before
    with Encrypted(crypto, rotate_on_load=False), Session(db) as session:
        session.scalars(sa.select(Patient)).all()
        session.commit()
    assert raw(db, "SELECT email FROM patients ORDER BY id") == before


def test_core_writes_take_only_ciphertexts(db: Engine) -> None:
    crypto = make_service(NEW)
    table = Account.__table__
    with db.begin() as conn, pytest.raises(sa_exc.StatementError) as plain:
        conn.execute(table.insert().values(handle="eve", note="plaintext"))  # type: ignore[attr-defined]
    assert isinstance(plain.value.orig, EncryptionFailed)
    assert "only ciphertexts" in str(plain.value.orig)
    note = crypto.encrypt_field("by hand", table="accounts", row="eve", column="note")
    with db.begin() as conn:
        conn.execute(table.insert().values(handle="eve", note=note))  # type: ignore[attr-defined]
    with db.connect() as conn:
        stored = conn.execute(sa.select(table.c.note)).scalar_one()  # type: ignore[attr-defined]
    assert crypto.decrypt_field(stored, table="accounts", row="eve", column="note") == "by hand"
    with Encrypted(crypto), Session(db) as session:
        with pytest.raises(sa_exc.StatementError, match="blind_index_column"):
            session.scalars(sa.select(Account).where(Account.note == "by hand")).all()
        account = session.get(Account, "eve")
        assert account is not None
        assert account.note == "by hand"


def test_changing_the_primary_key_is_refused(db: Engine) -> None:
    crypto = make_service(NEW)
    with Encrypted(crypto), Session(db) as session:
        session.add(Account(handle="ada", note="n"))
        session.commit()
        account = session.get(Account, "ada")
        assert account is not None
        account.handle = "ada2"
        with pytest.raises(EncryptionFailed, match="primary key of a row with encrypted"):
            session.commit()


def test_use_encryption_twice_is_refused() -> None:
    hooks = use_encryption(Base, make_service(NEW))
    try:
        with pytest.raises(ConfigurationError, match="already called for Base"):
            use_encryption(Base, make_service(NEW))
    finally:
        hooks.remove()
    use_encryption(Base, make_service(NEW)).remove()  # free again after remove()


def test_a_plain_value_of_another_type_is_refused(db: Engine) -> None:
    with Encrypted(make_service(NEW)), Session(db) as session:
        session.add(Account(handle="x", note=5))  # type: ignore[arg-type]
        with pytest.raises(EncryptionFailed, match="encrypted text column; got int"):
            session.commit()


def test_uuid_keys_bind_their_canonical_text(db: Engine) -> None:
    crypto = make_service(NEW)
    with Encrypted(crypto), Session(db) as session:
        document = Document(body="minutes of the board")
        session.add(document)
        session.commit()
        key = document.id
    stored = raw(db, "SELECT body FROM documents")[0].body
    assert crypto.decrypt_field(stored, table="documents", row=str(key), column="body") == (
        "minutes of the board"
    )
    with Encrypted(crypto), Session(db) as session:
        loaded = session.get(Document, key)
        assert loaded is not None
        assert loaded.body == "minutes of the board"


def test_clearing_a_value_clears_its_blind_index(db: Engine) -> None:
    crypto = make_service(NEW)
    seed(db, crypto)
    with Encrypted(crypto), Session(db) as session:
        ada = session.get(Patient, 1)
        assert ada is not None
        ada.email = None  # type: ignore[assignment]
        with pytest.raises(sa_exc.IntegrityError):  # email is NOT NULL
            session.commit()
        session.rollback()
        bob = session.get(Patient, 2)
        assert bob is not None
        bob.phone = "+1 555 0199"
        session.commit()
        assert raw(db, "SELECT phone_index FROM patients WHERE id = 2")[0].phone_index == (
            crypto.blind_index("+1 555 0199", table="patients", column="phone")
        )
        bob.phone = None
        session.commit()
    row = raw(db, "SELECT phone, phone_index FROM patients WHERE id = 2")[0]
    assert (row.phone, row.phone_index) == (None, None)
    assert load_patient(db, crypto, 1).email == "Ada@Example.com"  # the refused write left it


def test_a_failed_flush_encrypts_again_on_the_next_attempt(db: Engine) -> None:
    crypto = make_service(NEW)
    with Encrypted(crypto), Session(db) as session:
        session.add(Account(handle="ada", note="first"))
        session.commit()
    with Encrypted(crypto), Session(db) as session:
        second = Account(handle="ada", note="second")  # the key is taken
        session.add(second)
        with pytest.raises(sa_exc.IntegrityError):
            session.commit()
        session.rollback()
        second.handle = "bea"
        session.add(second)
        session.commit()
        assert second.note == "second"
    with Encrypted(crypto), Session(db) as session:
        bea = session.get(Account, "bea")
        assert bea is not None
        assert bea.note == "second"  # bound to "bea", not to the "ada" of the failed try
