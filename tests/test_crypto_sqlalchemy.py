"""Encrypted columns through SQLAlchemy on a real SQLite file and a real PostgreSQL server:
round trips, what the database holds, one INSERT for app-chosen keys, composite and UUID keys,
blind indexes across a rotation, lazy rotation, Core writes, and the refused misuses. The
attacks on stored ciphertexts are in tests/test_crypto_sqlalchemy_attacks.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from bastion.core.crypto import decode_text, key_id_of
from bastion.crypto import (
    DecryptionFailed,
    DecryptReason,
    EncryptionFailed,
)
from bastion.crypto.sqlalchemy import (
    ciphertext_length,
    matches,
    use_encryption,
)
from bastion.errors import ConfigurationError
from bastion.testing.audit import RecordingAuditSink
from crypto_sql_support import (
    NEW,
    OLD,
    Account,
    Base,
    Document,
    Encrypted,
    Membership,
    Patient,
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
