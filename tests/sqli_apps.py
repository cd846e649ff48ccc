"""Small shops for tests/test_testing_sqli.py: the same three endpoints written safely
(parameterised queries, ``OrderColumns``, ``like_contains``) and the way the guide warns against
(f-strings), as Starlette and Flask apps over a SQLAlchemy engine (SQLite or PostgreSQL).

- ``GET /items?owner=&q=&sort=``: the owner's items (a name search and a sort order);
- ``GET /items/{item_id}``: one item, by id;
- ``POST /notes`` (form ``owner``, ``note``): stores a note (writes on purpose: the probe watches
  the ``items`` table only).

Bob's item carries :data:`CANARY`: alice's listing must never show it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import Flask, jsonify
from flask import request as flask_request
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from bastion.query import OrderColumns, UnsafeOrderBy, like_contains

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from starlette.requests import Request

CANARY = "bob-canary-7f3a"

metadata = sa.MetaData()
items = sa.Table(
    "items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("owner", sa.String(20)),
    sa.Column("name", sa.String(40)),
    sa.Column("price", sa.Integer),
    sa.Column("note", sa.String(40)),
)
notes = sa.Table(
    "notes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("owner", sa.String(20)),
    sa.Column("note", sa.String(400)),
)
ROWS = [
    {"id": 1, "owner": "alice", "name": "lamp", "price": 30, "note": "alice-1"},
    {"id": 2, "owner": "alice", "name": "50% desk", "price": 120, "note": "alice-2"},
    {"id": 3, "owner": "bob", "name": "safe", "price": 900, "note": CANARY},
]
SORTABLE = OrderColumns(columns={"name": "name", "price": "price", "id": "id"}, default="id")
FIELDS = ("id", "owner", "name", "price")


def reset(engine: Engine) -> None:
    metadata.drop_all(engine)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(items.insert(), ROWS)


def acceptable(*values: str, limit: int = 20) -> bool:
    """Input the columns can hold: PostgreSQL refuses NUL in text and values over the column's
    length with an error (a 500 if unchecked); the probe found both in the first version."""
    return all("\x00" not in value and len(value) <= limit for value in values)


class SafeShop:
    """Bound parameters for values, the allow-list for the sort order, escaped LIKE, and input
    checked against what the columns hold."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def listing(self, owner: str, q: str, sort: str | None) -> tuple[int, Any]:
        if not acceptable(owner, q, limit=40):
            return 400, {"error": "bad input"}
        try:
            order = SORTABLE.parse(sort)
        except UnsafeOrderBy as refused:
            return 400, {"error": "bad sort", "reason": refused.reason}
        query = sa.text(
            "SELECT id, owner, name, price FROM items "
            f"WHERE owner = :owner AND name LIKE :q ESCAPE '\\' ORDER BY {order.sql}"
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query, {"owner": owner, "q": like_contains(q)})
            return 200, [dict(zip(FIELDS, row, strict=True)) for row in rows]

    def item(self, item_id: str) -> tuple[int, Any]:
        if not item_id.isascii() or not item_id.isdigit() or len(item_id) > 9:
            return 404, {"error": "no such item"}
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT id, owner, name, price FROM items WHERE id = :id"),
                {"id": int(item_id)},
            ).first()
        if row is None:
            return 404, {"error": "no such item"}
        return 200, dict(zip(FIELDS, row, strict=True))

    def add_note(self, owner: str, note: str) -> tuple[int, Any]:
        if not acceptable(owner) or not acceptable(note, limit=400):
            return 400, {"error": "bad input"}
        with self.engine.begin() as conn:
            conn.execute(notes.insert().values(owner=owner, note=note))
        return 201, {"stored": True}


class VulnerableShop:
    """The same endpoints built from f-strings: what the probe must catch."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _run(self, sql: str, *, script: bool = False) -> list[Any]:
        raw = self.engine.raw_connection()
        try:
            if script and self.engine.dialect.name == "sqlite":
                raw.driver_connection.executescript(sql)  # type: ignore[union-attr]
                rows: list[Any] = []
            else:
                cursor = raw.cursor()
                cursor.execute(sql)  # psycopg runs several statements when given no parameters
                rows = list(cursor.fetchall()) if cursor.description else []
            raw.commit()
            return rows
        finally:
            raw.close()

    def listing(self, owner: str, q: str, sort: str | None) -> tuple[int, Any]:
        rows = self._run(
            f"SELECT id, owner, name, price, note FROM items WHERE owner = '{owner}' "
            f"AND name LIKE '%{q}%' ORDER BY {sort or 'id'}"
        )
        return 200, [list(row) for row in rows]

    def item(self, item_id: str) -> tuple[int, Any]:
        try:
            rows = self._run(f"SELECT id, owner, name, price FROM items WHERE id = {item_id}")
        except Exception as error:
            return 400, {"error": str(error)}
        return (200, list(rows[0])) if rows else (404, {"error": "no such item"})

    def add_note(self, owner: str, note: str) -> tuple[int, Any]:
        self._run(f"INSERT INTO notes (owner, note) VALUES ('{owner}', '{note}')", script=True)
        return 201, {"stored": True}


Shop = SafeShop | VulnerableShop


def starlette_app(shop: Shop) -> Starlette:
    # Coroutines calling the blocking shop directly: no thread-pool hop per request (a test
    # app; a real one would use an async driver or run_in_threadpool).
    async def listing(request: Request) -> JSONResponse:
        params = request.query_params
        status, body = shop.listing(
            params.get("owner", ""), params.get("q", ""), params.get("sort")
        )
        return JSONResponse(body, status_code=status)

    async def item(request: Request) -> JSONResponse:
        status, body = shop.item(request.path_params["item_id"])
        return JSONResponse(body, status_code=status)

    async def add_note(request: Request) -> JSONResponse:
        form = await request.form()
        status, body = shop.add_note(str(form.get("owner", "")), str(form.get("note", "")))
        return JSONResponse(body, status_code=status)

    return Starlette(
        routes=[
            Route("/items", listing),
            Route("/items/{item_id}", item),
            Route("/notes", add_note, methods=["POST"]),
        ]
    )


def flask_app(shop: Shop) -> Flask:
    app = Flask(__name__)
    app.logger.disabled = True  # the vulnerable shop's 500s are expected; keep the output clean

    @app.get("/items")
    def listing() -> Any:
        args = flask_request.args
        status, body = shop.listing(args.get("owner", ""), args.get("q", ""), args.get("sort"))
        return jsonify(body), status

    @app.get("/items/<item_id>")
    def item(item_id: str) -> Any:
        status, body = shop.item(item_id)
        return jsonify(body), status

    @app.post("/notes")
    def add_note() -> Any:
        form = flask_request.form
        status, body = shop.add_note(form.get("owner", ""), form.get("note", ""))
        return jsonify(body), status

    return app
