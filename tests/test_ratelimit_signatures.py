"""@limit keeps a FastAPI path operation's parameters exactly as FastAPI would read them.

The decorator rewrites the handler's signature (to add a hidden ``Request`` and to resolve
postponed annotations), so it must keep ``Annotated[...]`` metadata: ``Form()``, ``Query()``,
``Header()``, ``Body()`` and ``Annotated[X, Depends(...)]`` aliases such as ``SessionDep``. Each
test builds the same real FastAPI app with and without the decorator, from a module with
postponed annotations (this one) and one without (``tests/fastapi_signature_app.py``), and
compares the OpenAPI schemas and the answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import httpx
import pytest
from fastapi import Body, Depends, FastAPI, Form, Header, Query, Request

import fastapi_signature_app as eager
from bastion.core.clock import FrozenClock
from bastion.engine.ratelimit import RateLimiter
from bastion.integrations.ratelimit import limit
from bastion.integrations.sessions import SessionDep  # noqa: TC001 (FastAPI evaluates it at run time)
from bastion.stores.memory import MemoryStore
from fastapi_signature_app import Item, Ledger, LedgerDep, get_ledger

if TYPE_CHECKING:
    from collections.abc import Callable

    from fastapi_signature_app import Decorate


def build_postponed(decorate: Decorate) -> FastAPI:
    """``eager.build``'s endpoints again, here with postponed (string) annotations."""
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


BUILDERS: dict[str, Callable[[Decorate], FastAPI]] = {
    "postponed": build_postponed,
    "eager": eager.build,
}


def identity(func: Callable[..., Any]) -> Callable[..., Any]:
    return func


def limited(limiter: RateLimiter) -> Decorate:
    return limit(limiter, "2/minute", strategy="fixed_window")


@pytest.fixture
def limiter() -> RateLimiter:
    return RateLimiter(MemoryStore(clock=FrozenClock(1_700_000_000.0)))


def client_for(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=eager.serve(app), client=("203.0.113.9", 5000))
    return httpx.AsyncClient(transport=transport, base_url="https://testserver")


@pytest.mark.parametrize("annotations", list(BUILDERS))
def test_the_openapi_schema_is_unchanged_by_the_decorator(
    annotations: str, limiter: RateLimiter
) -> None:
    build = BUILDERS[annotations]
    plain = build(identity).openapi()
    decorated = build(limited(limiter)).openapi()
    assert decorated == plain
    login = plain["paths"]["/login"]["post"]
    assert "parameters" not in login  # the form fields are the body, not query parameters
    assert "application/x-www-form-urlencoded" in login["requestBody"]["content"]
    cart = plain["paths"]["/cart"]["post"]
    assert [p["name"] for p in cart["parameters"]] == ["item"]  # SessionDep is no parameter
    assert "/agent" in plain["paths"]


@pytest.mark.parametrize("annotations", list(BUILDERS))
@pytest.mark.asyncio
async def test_every_parameter_kind_reaches_the_decorated_handler(
    annotations: str, limiter: RateLimiter
) -> None:
    app = BUILDERS[annotations](limited(limiter))
    async with client_for(app) as client:
        form = await client.post("/login", data={"username": "ada", "password": "secret"})
        assert (form.status_code, form.json()) == (200, {"user": "ada", "length": 6})
        short = await client.post("/login", data={"username": "ada", "password": "no"})
        assert short.status_code == 422  # Form(min_length=3) applies, before any charge
        again = {"username": "ada", "password": "xyz"}
        assert (await client.post("/login", data=again)).status_code == 200
        assert (await client.post("/login", data=again)).status_code == 429

        assert (await client.post("/cart", params={"item": "tea"})).json() == ["tea"]
        assert (await client.post("/cart", params={"item": "milk"})).json() == ["tea", "milk"]
        assert (await client.post("/cart", params={"item": "jam"})).status_code == 429

        ledger = await client.get("/ledger", params={"page": 3}, headers={"X-Tenant": "acme"})
        assert ledger.json() == {"tag": "acme", "page": 3}
        assert (await client.get("/classic")).json() == {"tag": "public"}

        created = await client.post(
            "/items/7", json={"item": {"name": "pen", "price": 1.5}, "note": "blue"}
        )
        assert created.json() == {"name": "pen@7:blue", "price": 1.5}

        agent = await client.get("/agent", headers={"User-Agent": "probe/1"})
        assert agent.json() == "/agent probe/1"


def test_an_unresolvable_annotation_is_left_to_fastapi(limiter: RateLimiter) -> None:
    """A name that does not exist yet when the decorator runs does not break the decoration."""

    @limit(limiter, "1/minute")
    async def later(thing: Later) -> str:  # type: ignore[name-defined]  # noqa: F821
        return str(thing)

    assert later.__signature__.parameters["thing"].annotation == "Later"  # type: ignore[attr-defined]
