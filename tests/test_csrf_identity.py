"""A CSRF identity function (``Bastion(csrf_identity=...)``) that fails is a typed refusal.

The identity binds a double-submit cookie to its user; it is the app's code run on the request,
so a request can trip it (here: an ``X-User`` header it cannot parse). The token cannot be
checked then: the answer is ``503`` with the reason ``identity_failed`` (JSON for a program,
a page for a browser), logged on ``bastion.security.csrf`` and audited, never the app's 500.
Real apps: Starlette through httpx, a plain WSGI app and Flask through werkzeug's client, each
behind its framework's ``protect()``.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import werkzeug.test
from flask import Flask
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import bastion.asgi
import bastion.flask
import bastion.wsgi
from bastion.config import Bastion
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.csrf import CSRFConfig, TokenSource
from bastion.core.environment import Environment
from bastion.core.keys import KeyRing
from bastion.testing.audit import RecordingAuditSink
from bastion.wsgi.csrf import csrf_token

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from starlette.requests import Request

HTTPS = "https://shop.example"
FAILED_JSON = (
    b'{"error": "csrf_failed", "reason": "identity_failed", "detail": "CSRF check failed: The '
    b'CSRF token could not be checked. Please try again shortly."}'
)


def user_of(value: str | None) -> str | None:
    """The identity: ``X-User`` must be a user name or a numeric id (``#42``)."""
    if value is None:
        return None
    if value.startswith("#"):
        return str(int(value[1:]))  # "#boom": ValueError, tripped by the request
    if value == "numeric":
        return 42  # type: ignore[return-value] (an app bug: not text)
    return value


def asgi_identity(scope: Any) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-user":
            return user_of(value.decode("latin-1"))
    return None


def wsgi_identity(environ: dict[str, Any]) -> str | None:
    return user_of(environ.get("HTTP_X_USER"))


def config(identity: Callable[[Any], str | None], sink: RecordingAuditSink) -> Bastion:
    clock = FrozenClock(1_700_000_000.0)
    keyring = KeyRing.generate()
    return Bastion(
        keyring=keyring,
        csrf=CSRFConfig(token_source=TokenSource.DOUBLE_SUBMIT),
        csrf_identity=identity,
        headers=None,
        auditor=Auditor(IdentifierHasher(keyring), clock, sink),
        clock=clock,
        environment=Environment.TEST,
    )


def starlette_app(sink: RecordingAuditSink) -> Any:
    async def token(request: Request) -> JSONResponse:
        return JSONResponse({"token": bastion.asgi.csrf_token(request)})

    async def act(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("done")

    app = Starlette(routes=[Route("/token", token), Route("/act", act, methods=["POST"])])
    return bastion.asgi.protect(app, config(asgi_identity, sink))


def wsgi_app(sink: RecordingAuditSink) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        body = b'"done"'
        if environ["REQUEST_METHOD"] != "POST":
            body = json.dumps({"token": csrf_token(environ)}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    return bastion.wsgi.protect(app, config(wsgi_identity, sink))


def flask_app(sink: RecordingAuditSink) -> Any:
    app = Flask(__name__)
    bastion.flask.protect(app, config(wsgi_identity, sink))

    @app.get("/token")
    def token() -> dict[str, str]:
        return {"token": bastion.flask.csrf_token()}

    @app.post("/act")
    def act() -> str:
        return "done"

    return app


async def exchange(kind: str, sink: RecordingAuditSink, user: str, accept: str) -> Any:
    """Get a token as ``ada``, then post it as ``user``: the POST's status, type and body."""
    headers = {"Accept": accept, "X-User": user}
    if kind == "asgi":
        transport = httpx.ASGITransport(app=starlette_app(sink))
        async with httpx.AsyncClient(transport=transport, base_url=HTTPS) as client:
            token = (await client.get("/token", headers={"X-User": "ada"})).json()["token"]
            response = await client.post("/act", headers={"X-CSRF-Token": token, **headers})
        return response.status_code, response.headers["content-type"], response.content
    app = wsgi_app(sink) if kind == "wsgi" else flask_app(sink)
    client = werkzeug.test.Client(app)
    token = client.get("/token", base_url=HTTPS, headers={"X-User": "ada"}).get_json()["token"]
    answer = client.post("/act", base_url=HTTPS, headers={"X-CSRF-Token": token, **headers})
    return answer.status_code, answer.headers["Content-Type"], answer.get_data()


KINDS = pytest.mark.parametrize("kind", ["asgi", "wsgi", "flask"])


@pytest.mark.asyncio
@KINDS
async def test_a_working_identity_passes(kind: str) -> None:
    sink = RecordingAuditSink()
    status, _type, body = await exchange(kind, sink, "ada", "application/json")
    assert (status, body.strip(b'"')) == (200, b"done")


@pytest.mark.asyncio
@KINDS
async def test_an_identity_function_that_raises_is_a_503_identity_failed(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    sink = RecordingAuditSink()
    with caplog.at_level(logging.ERROR, logger="bastion.security.csrf"):
        answer = await exchange(kind, sink, "#boom", "application/json")
    assert answer == (503, "application/json", FAILED_JSON)
    logged = [r for r in caplog.records if r.name == "bastion.security.csrf"]
    assert [r.levelno for r in logged] == [logging.ERROR]
    assert "csrf_identity function failed (ValueError" in logged[0].getMessage()
    assert logged[0].exc_info is not None  # the traceback, for the app's developer
    events = [e for e in sink.events if e.name == "malicious_csrf"]
    assert [e.details["reason"] for e in events] == ["identity_failed"]


@pytest.mark.asyncio
@KINDS
async def test_a_browser_gets_the_503_as_a_page(kind: str) -> None:
    status, content_type, body = await exchange(kind, RecordingAuditSink(), "#boom", "text/html")
    assert (status, content_type) == (503, "text/html; charset=utf-8")
    assert b"<title>Service unavailable (CSRF check failed)</title>" in body
    assert b"<code>identity_failed</code>" in body


@pytest.mark.asyncio
@KINDS
async def test_an_identity_that_is_not_text_is_a_503_identity_failed(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="bastion.security.csrf"):
        answer = await exchange(kind, RecordingAuditSink(), "numeric", "application/json")
    assert answer == (503, "application/json", FAILED_JSON)
    assert "gave a int, not text or None" in caplog.records[-1].getMessage()
