"""Adversarial checks of encrypted columns through SQLAlchemy, on SQLite and PostgreSQL: an
inherited encrypted column (joined-table inheritance), its blind index and its rotation; a
rotation stopped half-way and run again; a ciphertext moved between tables.

With joined-table inheritance a subclass's row lives in two tables: the parent's columns in the
parent's table. A value must be bound to the table that stores it, or ``bastion crypto
rotate`` (which walks that table) and a blind-index search (which names the column's table)
disagree with the mapper about where the value belongs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bastion.core.crypto.errors import DecryptionFailed, DecryptReason, EncryptionFailed
from bastion.core.keys import SecretKey
from bastion.crypto import CryptoPolicy, DataKey, EncryptionService
from bastion.crypto.rotation import RotationReport, rotate_table
from bastion.crypto.sqlalchemy import (
    EncryptedString,
    blind_index_column,
    matches,
    use_encryption,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Engine

OLD = DataKey(1, SecretKey(b"\x51" * 32))
NEW = DataKey(2, SecretKey(b"\x52" * 32))
INDEX = SecretKey(b"\x53" * 32)


class Base(DeclarativeBase):
    pass


class Person(Base):
    __tablename__ = "adv_people"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(10))
    email: Mapped[str] = mapped_column(EncryptedString(80))
    email_index: Mapped[str] = blind_index_column("email", normalize=str.casefold)
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "person"}  # noqa: RUF012


class Staff(Person):
    __tablename__ = "adv_staff"
    id: Mapped[int] = mapped_column(sa.ForeignKey("adv_people.id"), primary_key=True)
    badge: Mapped[str] = mapped_column(EncryptedString(40))
    __mapper_args__ = {"polymorphic_identity": "staff"}  # noqa: RUF012


class Note(Base):
    __tablename__ = "adv_notes"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    body: Mapped[str] = mapped_column(EncryptedString(80))


class Draft(Base):
    """The same column name and key as ``Note``: only the table tells the two apart."""

    __tablename__ = "adv_drafts"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    body: Mapped[str] = mapped_column(EncryptedString(80))


def service(*keys: DataKey) -> EncryptionService:
    return EncryptionService(CryptoPolicy(keys=list(keys), index_key=INDEX))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    else:
        path = tmp_path_factory.mktemp("adv-crypto") / "app.sqlite3"
        engine = sa.create_engine(f"sqlite:///{path}")
    assert engine.dialect.name == request.param
    yield engine
    engine.dispose()


@pytest.fixture
def db(engine: Engine) -> Engine:
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    return engine


class Encrypted:
    def __init__(self, crypto: EncryptionService) -> None:
        self.crypto = crypto

    def __enter__(self) -> EncryptionService:
        self.hooks = use_encryption(Base, self.crypto)
        return self.crypto

    def __exit__(self, *_: object) -> None:
        self.hooks.remove()


def seed_people(db: Engine, crypto: EncryptionService) -> None:
    with Encrypted(crypto), Session(db) as session:
        session.add_all(
            [
                Person(email="Ada@Example.com"),  # autoincrement: written after the INSERT
                Staff(email="Bob@Example.com", badge="B-7"),
            ]
        )
        session.commit()


def test_an_inherited_encrypted_column_reads_back_and_is_found_by_its_blind_index(
    db: Engine,
) -> None:
    crypto = service(OLD)
    seed_people(db, crypto)
    with Encrypted(crypto), Session(db) as session:
        staff = session.scalars(
            sa.select(Person).where(matches(Person.email_index, "bob@example.com", crypto))
        ).one()
        assert isinstance(staff, Staff)
        assert (staff.email, staff.badge) == ("Bob@Example.com", "B-7")
        ada = session.scalars(
            sa.select(Person).where(matches(Person.email_index, "ADA@example.com", crypto))
        ).one()
        assert (type(ada), ada.email) == (Person, "Ada@Example.com")


def test_an_inherited_encrypted_column_is_bound_to_the_table_that_stores_it(db: Engine) -> None:
    crypto = service(OLD)
    seed_people(db, crypto)
    with db.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, email FROM adv_people ORDER BY id")).all()
        badge = conn.execute(sa.text("SELECT id, badge FROM adv_staff")).one()
    for pk, token in rows:
        plain = crypto.decrypt_field(token, table="adv_people", row=pk, column="email")
        assert plain in {"Ada@Example.com", "Bob@Example.com"}
    assert crypto.decrypt_field(badge[1], table="adv_staff", row=badge[0], column="badge") == "B-7"


def test_rotation_walks_the_parent_and_child_tables_of_an_inherited_model(db: Engine) -> None:
    seed_people(db, service(OLD))
    rotated = service(NEW, OLD)
    people = rotate_table(db, Person.__table__, rotated, batch_size=10)  # type: ignore[arg-type]
    staff = rotate_table(db, Staff.__table__, rotated, batch_size=10)  # type: ignore[arg-type]
    assert people == RotationReport(
        table="adv_people", total=2, scanned=2, stale=2, rewritten=2, skipped=0, failed=0
    )
    assert staff == RotationReport(
        table="adv_staff", total=1, scanned=1, stale=1, rewritten=1, skipped=0, failed=0
    )
    with Encrypted(service(NEW)), Session(db) as session:  # the old key gone: all rewritten
        loaded = session.scalars(sa.select(Person).order_by(Person.id)).all()
        assert [p.email for p in loaded] == ["Ada@Example.com", "Bob@Example.com"]
        assert isinstance(loaded[1], Staff)
        assert loaded[1].badge == "B-7"


def seed_notes(db: Engine, crypto: EncryptionService, count: int) -> None:
    with Encrypted(crypto), Session(db) as session:
        session.add_all(Note(id=i, body=f"note {i}") for i in range(1, count + 1))
        session.commit()


class Interrupted(Exception):
    pass


def test_a_rotation_stopped_after_a_batch_resumes_where_it_left(db: Engine) -> None:
    seed_notes(db, service(OLD), 5)
    rotated = service(NEW, OLD)
    seen: list[RotationReport] = []

    def stop_after_first(report: RotationReport) -> None:
        seen.append(report)
        raise Interrupted  # the process killed between two batches

    with pytest.raises(Interrupted):
        rotate_table(db, Note.__table__, rotated, batch_size=2, progress=stop_after_first)  # type: ignore[arg-type]
    assert seen == [RotationReport("adv_notes", total=5, scanned=2, stale=2, rewritten=2)]
    left = rotate_table(db, Note.__table__, rotated, batch_size=2, dry_run=True)  # type: ignore[arg-type]
    assert (left.scanned, left.stale, left.rewritten) == (5, 3, 0)
    done = rotate_table(db, Note.__table__, rotated, batch_size=2)  # type: ignore[arg-type]
    assert (done.scanned, done.stale, done.rewritten, done.failed) == (5, 3, 3, 0)
    with Encrypted(service(NEW)), Session(db) as session:
        bodies = [note.body for note in session.scalars(sa.select(Note).order_by(Note.id))]
    assert bodies == [f"note {i}" for i in range(1, 6)]


def test_a_ciphertext_moved_to_a_table_with_the_same_column_and_key_is_refused(
    db: Engine,
) -> None:
    crypto = service(OLD)
    seed_notes(db, crypto, 1)
    with db.begin() as conn:
        token = conn.execute(sa.text("SELECT body FROM adv_notes WHERE id = 1")).scalar_one()
        conn.execute(sa.text("INSERT INTO adv_drafts (id, body) VALUES (1, :t)"), {"t": token})
    with Encrypted(crypto), Session(db) as session, pytest.raises(DecryptionFailed) as caught:
        session.get(Draft, 1)
    assert caught.value.reason is DecryptReason.NOT_AUTHENTIC
    report = rotate_table(db, Draft.__table__, service(NEW, OLD))  # type: ignore[arg-type]
    assert (report.stale, report.failed, report.rewritten) == (1, 1, 0)
    with db.connect() as conn:  # the moved value is left as it was, for a look
        assert conn.execute(sa.text("SELECT body FROM adv_drafts")).scalar_one() == token


class Memo(Base):
    """An autoincrement key (values written after the INSERT) and an unbounded column."""

    __tablename__ = "adv_memos"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str | None] = mapped_column(EncryptedString(None), nullable=True)


ODD_VALUES = ("", "\x00", "a\x00b", "\u2028", "\U0001f512" * 10, "x" * 20_000, None)


def test_odd_values_round_trip_through_the_column_on_both_databases(db: Engine) -> None:
    crypto = service(OLD)
    with Encrypted(crypto), Session(db) as session:
        session.add_all(Memo(text=value) for value in ODD_VALUES)
        session.commit()
    with db.connect() as conn:  # PostgreSQL refuses NUL in text: only base64 is stored
        stored = conn.execute(sa.text("SELECT text FROM adv_memos ORDER BY id")).scalars().all()
    assert all(token is None or token.isascii() for token in stored)
    assert stored[-1] is None
    assert "" not in stored  # no placeholder left behind by the write after the INSERT
    with Encrypted(crypto), Session(db) as session:
        texts = [m.text for m in session.scalars(sa.select(Memo).order_by(Memo.id))]
    assert texts == list(ODD_VALUES)


def test_a_lone_surrogate_is_refused_and_the_insert_rolled_back(db: Engine) -> None:
    crypto = service(OLD)
    with Encrypted(crypto), Session(db) as session:
        session.add(Memo(text="\ud800"))
        with pytest.raises(EncryptionFailed, match="lone surrogate"):
            session.commit()
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM adv_memos")).scalar_one() == 0


def test_bulk_statements_that_skip_the_mapper_events_cannot_write_plaintext(db: Engine) -> None:
    crypto = service(OLD)
    seed_notes(db, crypto, 1)
    statements = [
        sa.insert(Note).values(id=2, body="plain"),
        sa.update(Note).where(Note.id == 1).values(body="plain"),
    ]
    with Encrypted(crypto), Session(db) as session:
        for statement in statements:
            with pytest.raises(sa.exc.StatementError) as caught:
                session.execute(statement)
            assert isinstance(caught.value.orig, EncryptionFailed)
            session.rollback()
        with pytest.raises(sa.exc.StatementError) as caught:
            session.execute(sa.insert(Note), [{"id": 3, "body": "plain"}])
        assert isinstance(caught.value.orig, EncryptionFailed)
        session.rollback()
        with pytest.raises(sa.exc.StatementError):  # searching by value: a blind index's job
            session.scalars(sa.select(Note).where(Note.body == "note 1")).all()
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT id FROM adv_notes")).scalars().all() == [1]


def test_lazy_rotation_never_reverts_a_write_made_after_the_load(db: Engine) -> None:
    seed_notes(db, service(OLD), 2)
    rotated = service(NEW, OLD)
    hooks = use_encryption(Base, rotated, rotate_on_load=True)
    try:
        reader = Session(db)  # a request that only reads, and commits at its end
        notes = reader.scalars(sa.select(Note).order_by(Note.id)).all()  # held to the commit
        assert [n.body for n in notes] == ["note 1", "note 2"]
        with Session(db) as writer:  # another request changes note 1 meanwhile
            note = writer.get(Note, 1)
            assert note is not None
            note.body = "edited"
            writer.commit()
        reader.commit()
        reader.close()
    finally:
        hooks.remove()
    with Encrypted(service(NEW)), Session(db) as session:  # both now under key 2
        bodies = [n.body for n in session.scalars(sa.select(Note).order_by(Note.id))]
    assert bodies == ["edited", "note 2"]  # the edit kept; note 2 rotated by the reader


def test_a_ciphertext_assigned_by_the_app_moves_the_blind_index_with_it(db: Engine) -> None:
    crypto = service(OLD)
    seed_people(db, crypto)
    with Encrypted(crypto), Session(db) as session:
        ada = session.scalars(
            sa.select(Person).where(matches(Person.email_index, "ada@example.com", crypto))
        ).one()
        ada.email = crypto.encrypt_field(  # type: ignore[assignment]
            "Eve@Example.com", table="adv_people", row=ada.id, column="email"
        )
        session.commit()
    with Encrypted(crypto), Session(db) as session:

        def found(email: str) -> list[str]:
            query = sa.select(Person).where(matches(Person.email_index, email, crypto))
            return [person.email for person in session.scalars(query)]

        assert found("ada@example.com") == []  # the old value's index is gone
        assert found("eve@example.com") == ["Eve@Example.com"]


def test_a_ciphertext_of_another_row_assigned_by_the_app_is_refused(db: Engine) -> None:
    crypto = service(OLD)
    seed_people(db, crypto)
    with Encrypted(crypto), Session(db) as session:
        people = session.scalars(sa.select(Person).order_by(Person.id)).all()
        moved = crypto.encrypt_field(
            "x@example.com", table="adv_people", row=people[1].id, column="email"
        )
        people[0].email = moved  # type: ignore[assignment]
        with pytest.raises(DecryptionFailed) as caught:
            session.commit()
    assert caught.value.reason is DecryptReason.NOT_AUTHENTIC
