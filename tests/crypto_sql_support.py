"""Models and helpers (the fixtures' bodies) of tests/test_crypto_sqlalchemy*.py.

Each module runs on a SQLite file and on a real PostgreSQL server (``PostgresServer``: initdb
in a temporary directory); without it the PostgreSQL half skips locally and fails under
``CI=true``.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing, SecretKey
from bastion.crypto import (
    CryptoPolicy,
    DataKey,
    EncryptionService,
)
from bastion.crypto.sqlalchemy import (
    EncryptedString,
    blind_index_column,
    use_encryption,
)
from bastion.testing.postgres_server import INSTALL_HINT, PostgresServer, find_initdb

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Engine

    from bastion.crypto.sqlalchemy import EncryptionHooks
    from bastion.testing.audit import RecordingAuditSink

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


def start_postgres() -> Iterator[Engine]:
    """The body of each test module's module-scoped ``postgres`` fixture."""
    require_postgres()
    with PostgresServer() as server:
        engine = sa.create_engine(server.sqlalchemy_url)
        yield engine
        engine.dispose()


def pick_engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """The engine of the ``engine`` fixture's parameter: a SQLite file, or the server's."""
    if request.param == "postgresql":
        engine: Engine = request.getfixturevalue("postgres")
    else:
        path = tmp_path_factory.mktemp("crypto-sql") / "app.sqlite3"
        engine = sa.create_engine(f"sqlite:///{path}")
    assert engine.dialect.name == request.param
    return engine


def fresh_tables(engine: Engine) -> Engine:
    """``engine`` with the models' tables dropped and created again (each test starts empty)."""
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    return engine


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
