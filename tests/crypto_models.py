"""Models and policies that ``bastion crypto rotate`` imports in tests/test_crypto_rotation.py
(``--metadata crypto_models:Base --policy crypto_models:ROTATED``)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bastion.core.keys import SecretKey
from bastion.crypto import CryptoPolicy, DataKey
from bastion.crypto.sqlalchemy import EncryptedString

OLD = DataKey(1, SecretKey(b"\x41" * 32))
NEW = DataKey(2, SecretKey(b"\x42" * 32))

ORIGINAL = CryptoPolicy(keys=[OLD])
ROTATED = CryptoPolicy(keys=[NEW, OLD])
NEW_ONLY = CryptoPolicy(keys=[NEW])


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(sa.String(40))
    phone: Mapped[str | None] = mapped_column(EncryptedString(40), nullable=True)
    address: Mapped[str] = mapped_column(EncryptedString(200))


class Plain(Base):
    __tablename__ = "plain"
    id: Mapped[int] = mapped_column(primary_key=True)


class Visit(Base):
    """A composite key: the walk pages with row values, ``(clinic, number) > (...)``."""

    __tablename__ = "visits"
    clinic: Mapped[str] = mapped_column(sa.String(10), primary_key=True)
    number: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    note: Mapped[str] = mapped_column(EncryptedString(60))
