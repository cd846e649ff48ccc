"""The headers layer decides HTTPS (and so HSTS) from a trusted proxy's forwarded scheme.

The app runs on plain HTTP behind a TLS-terminating proxy at ``10.0.0.1``; browsers use
``https://shop.example``. Only a trusted proxy's ``X-Forwarded-Proto`` (or ``Forwarded``
``proto=``, with ``header="forwarded"``) says so; a client that is not a trusted proxy forges
it in vain, and gets no ``Strict-Transport-Security`` over plain HTTP. Real apps: Starlette
through httpx, a WSGI app and Flask through werkzeug's client, and the front door's
``protect()`` with ``Bastion(proxies=...)``.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import werkzeug.test
from flask import Flask
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import bastion.asgi
import bastion.flask
from bastion.asgi import SecurityHeadersMiddleware
from bastion.config import Bastion
from bastion.core.client import TrustedProxies
from bastion.core.environment import Environment
from bastion.core.keys import KeyRing
from bastion.wsgi import SecurityHeadersMiddleware as WSGISecurityHeadersMiddleware

PROXY = "10.0.0.1"
CLIENT = "192.0.2.7"
X_FORWARDED = TrustedProxies(["10.0.0.0/8"])
FORWARDED = TrustedProxies(["10.0.0.0/8"], header="forwarded")
HSTS = "max-age=63072000; includeSubDomains"


async def home(_request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


def wsgi_ok(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


async def asgi_hsts(app: Any, peer: str, headers: dict[str, str]) -> str | None:
    transport = httpx.ASGITransport(app=app, client=(peer, 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://10.0.0.5") as client:
        response = await client.get("/", headers=headers)
    assert response.status_code == 200
    return response.headers.get("strict-transport-security")


def wsgi_hsts(app: Any, peer: str, headers: dict[str, str]) -> str | None:
    response = werkzeug.test.Client(app).get(
        "/", base_url="http://10.0.0.5", headers=headers, environ_base={"REMOTE_ADDR": peer}
    )
    assert response.status_code == 200
    return response.headers.get("Strict-Transport-Security")


async def hsts(adapter: str, proxies: TrustedProxies, peer: str, headers: dict[str, str]) -> Any:
    if adapter == "asgi":
        starlette = Starlette(routes=[Route("/", home)])
        return await asgi_hsts(SecurityHeadersMiddleware(starlette, proxies=proxies), peer, headers)
    return wsgi_hsts(WSGISecurityHeadersMiddleware(wsgi_ok, proxies=proxies), peer, headers)


ADAPTERS = pytest.mark.parametrize("adapter", ["asgi", "wsgi"])


@pytest.mark.asyncio
@ADAPTERS
async def test_plain_http_without_a_proxy_gets_no_hsts(adapter: str) -> None:
    assert await hsts(adapter, X_FORWARDED, PROXY, {}) is None


@pytest.mark.asyncio
@ADAPTERS
async def test_a_trusted_proxys_forwarded_https_gets_hsts(adapter: str) -> None:
    assert await hsts(adapter, X_FORWARDED, PROXY, {"X-Forwarded-Proto": "https"}) == HSTS
    forwarded = {"Forwarded": "for=198.51.100.7;proto=https;host=shop.example"}
    assert await hsts(adapter, FORWARDED, PROXY, forwarded) == HSTS


@pytest.mark.asyncio
@ADAPTERS
async def test_a_trusted_proxys_forwarded_http_gets_no_hsts(adapter: str) -> None:
    assert await hsts(adapter, X_FORWARDED, PROXY, {"X-Forwarded-Proto": "http"}) is None


@pytest.mark.asyncio
@ADAPTERS
async def test_an_untrusted_clients_forwarded_proto_is_ignored(adapter: str) -> None:
    assert await hsts(adapter, X_FORWARDED, CLIENT, {"X-Forwarded-Proto": "https"}) is None
    assert await hsts(adapter, FORWARDED, CLIENT, {"Forwarded": "proto=https"}) is None
    # Without any trusted proxy, no forwarding header is read at all.
    assert await hsts(adapter, TrustedProxies(), PROXY, {"X-Forwarded-Proto": "https"}) is None


@pytest.mark.asyncio
@ADAPTERS
async def test_only_the_configured_family_is_read(adapter: str) -> None:
    """A proxy writes one family; the other may be the client's, passed through."""
    assert await hsts(adapter, FORWARDED, PROXY, {"X-Forwarded-Proto": "https"}) is None
    assert await hsts(adapter, X_FORWARDED, PROXY, {"Forwarded": "proto=https"}) is None


def front_door(**overrides: Any) -> Bastion:
    settings: dict[str, Any] = {
        "keyring": KeyRing.generate(),
        "csrf": None,
        "proxies": X_FORWARDED,
        "environment": Environment.TEST,
    }
    return Bastion(**{**settings, **overrides})


@pytest.mark.asyncio
async def test_the_front_door_hands_its_proxies_to_the_headers_layer() -> None:
    app = bastion.asgi.protect(Starlette(routes=[Route("/", home)]), front_door())
    assert await asgi_hsts(app, PROXY, {"X-Forwarded-Proto": "https"}) == HSTS
    assert await asgi_hsts(app, CLIENT, {"X-Forwarded-Proto": "https"}) is None


def test_flask_behind_a_trusted_proxy_gets_hsts() -> None:
    app = Flask(__name__)
    bastion.flask.protect(app, front_door())
    app.get("/")(lambda: "ok")
    assert wsgi_hsts(app, PROXY, {"X-Forwarded-Proto": "https"}) == HSTS
    assert wsgi_hsts(app, CLIENT, {"X-Forwarded-Proto": "https"}) is None


@pytest.mark.asyncio
@ADAPTERS
async def test_a_client_supplied_first_forwarded_proto_is_ignored(adapter: str) -> None:
    # The proxy serves plain HTTP and appends "http" after the client's own "https".
    assert await hsts(adapter, X_FORWARDED, PROXY, {"X-Forwarded-Proto": "https, http"}) is None


@pytest.mark.asyncio
@ADAPTERS
async def test_behind_two_trusted_proxies_the_edges_scheme_counts(adapter: str) -> None:
    # The edge (10.0.0.2) terminated TLS and appended "https"; the inner proxy appended "http".
    chain = {"X-Forwarded-Proto": "https, http", "X-Forwarded-For": "198.51.100.7, 10.0.0.2"}
    assert await hsts(adapter, X_FORWARDED, PROXY, chain) == HSTS
    # A client's own "https" before an edge that appended "http": still plain.
    forged = {"X-Forwarded-Proto": "https, http, http", "X-Forwarded-For": "198.51.100.7, 10.0.0.2"}
    assert await hsts(adapter, X_FORWARDED, PROXY, forged) is None
