"""The demo's documents: a small SQL table governed by an authorization policy.

Each document has an owner, a ``public`` flag and a ``locked`` flag. The policy
(``policy.toml`` beside this module) says who may do what: anyone signed in may create a
document; a document is read by its owner, by anyone when it is public, and by moderators
and admins; it is written by its owner, never while it is locked (a deny rule, which
overrides every allow). Roles come from bastion's store (``runtime.authz.assignments``).

The list page asks the policy for a query filter (:meth:`Authorizer.filter`) and runs it as
SQLAlchemy ``WHERE`` clause, so it shows exactly the rows a per-row check would allow; the
page of one document checks that document as loaded from the table (its owner is the row's,
never a form field).

SQLAlchemy is synchronous here: each query runs in a worker thread so the event loop never
waits on SQLite.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from bastion.core.authz.subjects import Resource
from bastion.errors import StoreIOError

if TYPE_CHECKING:
    from sqlalchemy.sql.elements import ColumnElement

__all__ = ["DOCUMENTS", "Document", "DocumentTable"]

RESOURCE_TYPE: Final = "documents"
TITLE_MAX: Final = 200
BODY_MAX: Final = 20_000

_METADATA = MetaData()
DOCUMENTS: Final = Table(
    "documents",
    _METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("owner_id", String(64), nullable=False),
    Column("title", String(TITLE_MAX), nullable=False),
    Column("body", Text, nullable=False),
    Column("public", Boolean, nullable=False),
    Column("locked", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
)
"""The table. The policy's attributes are its column names (``resource.owner_id``,
``resource.public``, ``resource.locked``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Document:
    """One row."""

    id: int
    owner_id: str
    title: str
    body: str
    public: bool
    locked: bool
    created_at: float

    def resource(self) -> Resource:
        """The row as the policy sees it: its owner is the stored one."""
        return Resource(
            type=RESOURCE_TYPE,
            id=str(self.id),
            owner=self.owner_id,
            attributes={
                "owner_id": self.owner_id,
                "public": self.public,
                "locked": self.locked,
            },
        )


def _row(row: Any) -> Document:
    return Document(
        id=int(row.id),
        owner_id=str(row.owner_id),
        title=str(row.title),
        body=str(row.body),
        public=bool(row.public),
        locked=bool(row.locked),
        created_at=float(row.created_at),
    )


class DocumentTable:
    """The documents table in one SQLite database (a file, or memory for ``url=None``);
    :meth:`open` creates it."""

    __slots__ = ("_engine",)

    def __init__(self, url: str | None = None) -> None:
        if url is None:
            # One in-memory database shared by every thread of the process.
            self._engine = create_engine(
                "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        else:
            self._engine = create_engine(url)

    def _open(self) -> None:
        try:
            _METADATA.create_all(self._engine)
        except SQLAlchemyError as error:
            self._engine.dispose()
            cause = getattr(error, "orig", None) or error
            raise StoreIOError(
                f"the documents table {str(self._engine.url)!r} cannot be opened: "
                f"{str(cause).splitlines()[0]}"
            ) from error

    def __repr__(self) -> str:
        return f"DocumentTable({self._engine.url!r})"

    def close(self) -> None:
        self._engine.dispose()

    def _create(self, values: dict[str, object]) -> int:
        statement = insert(DOCUMENTS).values(**values)
        with self._engine.begin() as connection:
            key = connection.execute(statement).inserted_primary_key
        if key is None:  # pragma: no cover (SQLite always reports the new id)
            raise RuntimeError("the documents table did not report the new row's id")
        return int(key[0])

    def _get(self, document_id: int) -> Document | None:
        with self._engine.connect() as connection:
            row = connection.execute(select(DOCUMENTS).where(DOCUMENTS.c.id == document_id)).first()
        return None if row is None else _row(row)

    def _list(self, where: ColumnElement[bool]) -> list[Document]:
        statement = select(DOCUMENTS).where(where).order_by(DOCUMENTS.c.id)
        with self._engine.connect() as connection:
            return [_row(row) for row in connection.execute(statement)]

    def _set_body(self, document_id: int, body: str) -> None:
        with self._engine.begin() as connection:
            connection.execute(
                update(DOCUMENTS).where(DOCUMENTS.c.id == document_id).values(body=body)
            )

    def _delete_owned(self, owner: str) -> int:
        with self._engine.begin() as connection:
            return connection.execute(
                delete(DOCUMENTS).where(DOCUMENTS.c.owner_id == owner)
            ).rowcount

    async def open(self) -> None:
        """Create the table when it is missing (at the demo's start, after the store's)."""
        await asyncio.to_thread(self._open)

    async def create(
        self, owner: str, title: str, body: str, *, public: bool, locked: bool, now: float
    ) -> int:
        values: dict[str, object] = {
            "owner_id": owner,
            "title": title,
            "body": body,
            "public": public,
            "locked": locked,
            "created_at": now,
        }
        return await asyncio.to_thread(self._create, values)

    async def get(self, document_id: int) -> Document | None:
        return await asyncio.to_thread(self._get, document_id)

    async def find(self, raw_id: str) -> Document | None:
        """The document a path segment names; ``None`` for one that is not a plain number."""
        if not (raw_id.isascii() and raw_id.isdigit()) or len(raw_id) > 18:
            return None
        return await self.get(int(raw_id))

    async def list(self, where: ColumnElement[bool]) -> list[Document]:
        """The rows that ``where`` (the policy's query filter) selects, oldest first."""
        return await asyncio.to_thread(self._list, where)

    async def set_body(self, document_id: int, body: str) -> None:
        await asyncio.to_thread(self._set_body, document_id, body)

    async def delete_owned(self, owner: str) -> int:
        """Delete every document ``owner`` owns (the account is being deleted); the count."""
        return await asyncio.to_thread(self._delete_owned, owner)
