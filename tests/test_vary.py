"""``Vary`` merging (bastion.core.vary): whole elements, never substrings.

The defect this pins: the session layers added ``Cookie`` to ``Vary`` only when the header did
not already *contain* the text "cookie", so an app answering ``Vary: X-Cookie-Consent`` lost
``Vary: Cookie`` on its session pages and a shared cache could hand one user's page to another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest
from flask import Flask
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from werkzeug.test import Client

import bastion
import bastion.asgi
import bastion.flask
import bastion.wsgi
from bastion.asgi import get_session
from bastion.core.vary import add_vary, add_vary_text, merge_vary, merge_vary_text
from bastion.stores.memory import MemoryStore

if TYPE_CHECKING:
    from starlette.requests import Request

HTTPS = "https://testserver"
CONSENT = "X-Cookie-Consent"


@pytest.mark.parametrize(
    ("value", "merged"),
    [
        (b"", b"Cookie"),
        (b"Accept", b"Accept, Cookie"),
        (b"X-Cookie-Consent", b"X-Cookie-Consent, Cookie"),
        (b"accept, cookie", None),
        (b" COOKIE ", None),
        (b"*", None),
        (b"Accept, *", None),
    ],
)
def test_merge_by_whole_element(value: bytes, merged: bytes | None) -> None:
    assert merge_vary(value, b"Cookie") == merged
    text = merge_vary_text(value.decode(), "Cookie")
    assert text == (None if merged is None else merged.decode())


def test_add_vary_looks_at_every_vary_header() -> None:
    headers = [(b"vary", b"Accept"), (b"vary", b"Cookie")]
    add_vary(headers, b"Cookie")
    assert headers == [(b"vary", b"Accept"), (b"vary", b"Cookie")]
    headers = [(b"content-type", b"text/plain")]
    add_vary(headers, b"Cookie")
    assert headers[-1] == (b"vary", b"Cookie")
    text = [("Vary", CONSENT)]
    add_vary_text(text, "Cookie")
    assert text == [("Vary", f"{CONSENT}, Cookie")]


def config() -> bastion.Bastion:
    return bastion.Bastion(store=MemoryStore(), keyring=bastion.KeyRing.generate(), csrf=None)


@pytest.mark.asyncio
async def test_asgi_session_page_varies_on_cookie_beside_a_consent_cookie() -> None:
    async def page(request: Request) -> PlainTextResponse:
        get_session(request)["seen"] = True
        return PlainTextResponse("hi", headers={"Vary": CONSENT})

    app = bastion.asgi.protect(Starlette(routes=[Route("/", page)]), config())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=HTTPS) as http:
        answer = await http.get("/")
    assert answer.headers.get_list("vary") == [f"{CONSENT}, Cookie"]


def test_wsgi_session_page_varies_on_cookie_beside_a_consent_cookie() -> None:
    def page(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        bastion.wsgi.get_session(environ)["seen"] = True
        start_response("200 OK", [("Content-Type", "text/plain"), ("Vary", CONSENT)])
        return [b"hi"]

    answer = Client(bastion.wsgi.protect(page, config())).get("/", base_url=HTTPS)
    assert answer.headers.get_all("Vary") == [f"{CONSENT}, Cookie"]


def test_flask_session_page_varies_on_cookie_beside_a_consent_cookie() -> None:
    app = Flask(__name__)
    bastion.flask.protect(app, config())

    @app.get("/")
    def page() -> Any:
        bastion.flask.session["seen"] = True
        return "hi", 200, {"Vary": CONSENT}

    answer = app.test_client().get("/", base_url=HTTPS)
    assert answer.headers.get_all("Vary") == [f"{CONSENT}, Cookie"]
