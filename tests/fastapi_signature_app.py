"""FastAPI path operations of every parameter kind, for the @limit signature tests.

Two copies of the same endpoints: this module evaluates its annotations eagerly (no
``from __future__ import annotations``, on purpose), ``tests/test_ratelimit_signatures.py``
defines them again with postponed annotations. ``build(decorate)`` wraps every handler with
``decorate`` (the identity, or bastion's ``@limit``), so the two apps can be compared.
"""

from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Form, Header, Query, Request
from pydantic import BaseModel

from bastion.asgi import SessionMiddleware
from bastion.integrations.sessions import SessionDep
from bastion.stores.memory import MemoryStore

Decorate = Callable[[Callable[..., Any]], Callable[..., Any]]


class Item(BaseModel):
    name: str
    price: float


class Ledger:
    """A per-request resource given by a dependency, like a database session."""

    def __init__(self, tag: str) -> None:
        self.tag = tag


def get_ledger(x_tenant: Annotated[str, Header()] = "public") -> Iterator[Ledger]:
    yield Ledger(x_tenant)


LedgerDep = Annotated[Ledger, Depends(get_ledger)]


def build(decorate: Decorate) -> FastAPI:
    app = FastAPI()

    @app.post("/login")
    @decorate
    async def log_in(
        username: Annotated[str, Form()], password: Annotated[str, Form(min_length=3)]
    ) -> dict[str, int | str]:
        return {"user": username, "length": len(password)}

    @app.post("/cart")
    @decorate
    async def add_to_cart(
        session: SessionDep, item: Annotated[str, Query(max_length=8)]
    ) -> list[str]:
        session["cart"] = [*session.get("cart", []), item]
        return list(session["cart"])

    @app.get("/ledger")
    @decorate
    async def ledger(ledger: LedgerDep, page: int = 1) -> dict[str, int | str]:
        return {"tag": ledger.tag, "page": page}

    @app.get("/classic")
    @decorate
    async def classic(ledger: Ledger = Depends(get_ledger)) -> dict[str, str]:  # noqa: B008
        return {"tag": ledger.tag}

    @app.post("/items/{shelf}")
    @decorate
    async def create_item(
        shelf: int, item: Item, note: Annotated[str | None, Body()] = None
    ) -> Item:
        return Item(name=f"{item.name}@{shelf}:{note}", price=item.price)

    @app.get("/agent")
    @decorate
    async def agent(request: Request, user_agent: Annotated[str | None, Header()] = None) -> str:
        return f"{request.url.path} {user_agent}"

    return app


def serve(app: FastAPI) -> SessionMiddleware:
    """``app`` behind bastion's sessions (``SessionDep`` needs them)."""
    return SessionMiddleware(app, store=MemoryStore(), production=False)
