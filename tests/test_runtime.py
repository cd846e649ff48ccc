"""The front door at the HTTP level: one ``Bastion`` built once into a ``Runtime``, the same
``protect()`` for ASGI, WSGI and Flask, one auditor and one client-address reading for every
layer, and the runtime closed at shutdown.

Two defects of the hand-threaded stack are pinned here: a stack without ``keyring=`` hashed the
same client address differently in its session and its CSRF events, and ``protect(auditor=X)``
never reached the rate limiter. Trusted proxies were read by rate limiting but not by the
session registry, which recorded the proxy's address.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from flask import Flask, render_template_string
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import bastion
import bastion.asgi
import bastion.flask
import bastion.wsgi
from bastion import Bastion, ConfigurationError, Environment, TrustedProxies
from bastion.asgi import get_session
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import system_clock
from bastion.stores.memory import MemoryStore
from bastion.testing.audit import RecordingAuditSink
from bastion.testing.csrf import browser_headers

if TYPE_CHECKING:
    from pathlib import Path

    from starlette.requests import Request

HTTPS = "https://testserver"
KEYRING = bastion.KeyRing.from_secrets(["r" * 43])


def starlette_app() -> Starlette:
    async def home(request: Request) -> JSONResponse:
        return JSONResponse({"user": get_session(request).user_id})

    async def sign_in(request: Request) -> PlainTextResponse:
        get_session(request).login("ada")
        return PlainTextResponse("in")

    return Starlette(routes=[Route("/", home), Route("/login", sign_in, methods=["POST"])])


def client(app: Any, *, peer: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 50000))
    return httpx.AsyncClient(transport=transport, base_url=HTTPS)


def recording() -> tuple[Auditor, RecordingAuditSink]:
    sink = RecordingAuditSink()
    return Auditor(IdentifierHasher(KEYRING), system_clock, sink), sink


@pytest.mark.asyncio
async def test_one_auditor_reaches_every_layer_rate_limits_included() -> None:
    auditor, sink = recording()
    config = Bastion(
        store=MemoryStore(),
        keyring=KEYRING,
        auditor=auditor,
        rate_limits=(bastion.Rule("pages", "2/minute"),),
        environment=Environment.TEST,
    )
    async with client(bastion.asgi.protect(starlette_app(), config)) as http:
        assert (await http.get("/")).status_code == 200
        refused_csrf = await http.post("/login", headers={"Sec-Fetch-Site": "cross-site"})
        limited = await http.get("/")
    assert refused_csrf.status_code == 403
    assert limited.status_code == 429
    assert limited.headers["Retry-After"]
    assert "malicious_csrf" in sink.names()
    assert "excess_rate_limit_exceeded" in sink.names()


@pytest.mark.asyncio
async def test_every_layer_hashes_a_client_the_same_way_without_a_keyring(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = Bastion(store=MemoryStore(), environment=Environment.TEST)  # no keyring, no auditor
    app = bastion.asgi.protect(starlette_app(), config)
    with caplog.at_level(logging.DEBUG, logger="bastion.audit"):
        async with client(app, peer="192.0.2.7") as http:
            await http.post("/login", headers={"Sec-Fetch-Site": "cross-site"})  # CSRF refusal
            await http.post("/login", headers=browser_headers(HTTPS))  # a login: session events
    events = [r.audit_event for r in caplog.records if hasattr(r, "audit_event")]
    csrf = [e["client_ip"] for e in events if e["event"] == "malicious_csrf"]
    sessions = {e["client_ip"] for e in events if e["event"].startswith("session_")}
    assert len(csrf) == 1
    assert sessions == {csrf[0]}


@pytest.mark.asyncio
async def test_trusted_proxies_reach_the_session_registry() -> None:
    runtime = Bastion(
        store=MemoryStore(),
        keyring=KEYRING,
        proxies=TrustedProxies(["10.0.0.0/8"]),
        environment=Environment.TEST,
    ).build()
    app = bastion.asgi.protect(starlette_app(), runtime)
    forwarded = {**browser_headers(HTTPS), "X-Forwarded-For": "203.0.113.9"}
    async with client(app, peer="10.1.2.3") as http:
        assert (await http.post("/login", headers=forwarded)).status_code == 200
    async with client(app, peer="198.51.100.4") as http:  # not a proxy: the header is a lie
        assert (await http.post("/login", headers=forwarded)).status_code == 200
    assert runtime.sessions is not None
    seen = sorted(info.ip or "" for info in await runtime.sessions.list_sessions("ada"))
    assert seen == ["198.51.100.4", "203.0.113.9"]


@pytest.mark.asyncio
async def test_protect_closes_the_runtime_it_built_at_lifespan_shutdown(tmp_path: Path) -> None:
    app = bastion.asgi.protect(
        starlette_app(), Bastion(store=f"sqlite:///{tmp_path}/a.db", keyring=KEYRING)
    )
    runtime: bastion.Runtime = app.runtime  # type: ignore[attr-defined]
    assert runtime.store is not None
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    with pytest.raises(bastion.StoreError):
        await runtime.store.get("k")  # closed: unusable afterwards


@pytest.mark.asyncio
async def test_the_middleware_form_for_add_middleware() -> None:
    app = starlette_app()
    app.add_middleware(bastion.asgi.BastionMiddleware, config=Bastion(store=MemoryStore()))
    async with client(app) as http:
        answer = await http.get("/")
    assert answer.json() == {"user": None}
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_a_session_middleware_alone_reads_only_its_slice() -> None:
    config = Bastion(store=MemoryStore(), keyring=KEYRING)
    with pytest.raises(ConfigurationError, match="do not pass them again") as caught:
        bastion.asgi.SessionMiddleware(starlette_app(), bastion=config, store=MemoryStore())
    assert caught.value.setting == "bastion"
    with pytest.raises(ConfigurationError, match=re.escape("needs Bastion(store=...)")):
        bastion.asgi.SessionMiddleware(starlette_app(), bastion=Bastion(csrf=None))


@pytest.mark.asyncio
async def test_cors_sits_outside_the_rate_limiter_and_inside_the_headers() -> None:
    auditor, sink = recording()
    config = Bastion(
        store=MemoryStore(),
        keyring=KEYRING,
        auditor=auditor,
        cors=bastion.CORSPolicy(allow_origins=("https://app.example",)),
        rate_limits=(bastion.Rule("pages", "1/minute"),),
    )
    app = bastion.asgi.protect(starlette_app(), config)
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    async with client(app) as http:
        answers = [await http.options("/login", headers=preflight) for _ in range(3)]
        evil = await http.options("/login", headers={**preflight, "Origin": "https://evil.example"})
        first = await http.get("/", headers={"Origin": "https://app.example"})
        limited = await http.get("/", headers={"Origin": "https://app.example"})
    # preflights cost no rate-limit budget and no store I/O; the headers layer saw them
    assert [a.status_code for a in answers] == [204, 204, 204]
    assert answers[0].headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert answers[0].headers["X-Content-Type-Options"] == "nosniff"
    assert evil.status_code == 403
    assert not [h for h in evil.headers if h.lower().startswith("access-control-")]
    assert "malicious_cors" in sink.names()
    assert first.status_code == 200
    assert limited.status_code == 429  # a page on the allowed origin may read why
    assert limited.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Origin" in limited.headers["Vary"]


# -- production refusals and logged opt-outs ----------------------------------------------------


def test_production_refuses_a_missing_keyring_and_sessions_without_csrf() -> None:
    production = Environment.PRODUCTION
    with pytest.raises(
        ConfigurationError, match=r"Bastion\(keyring=None\) under ENV=production"
    ) as caught:
        Bastion(store=MemoryStore(), environment=production).build()
    assert caught.value.setting == "keyring"
    with pytest.raises(ConfigurationError, match="refused when ENV=production") as caught:
        Bastion(store=MemoryStore(), keyring=KEYRING, csrf=None, environment=production).build()
    assert caught.value.setting == "csrf"


def test_opt_outs_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bastion.security.protect"):
        Bastion(keyring=KEYRING, csrf=None, headers=None, environment=Environment.TEST).build()
    assert [r.getMessage() for r in caplog.records] == [
        "bastion: csrf=None; no CSRF check on any request",
        (
            "bastion: headers=None; no security headers (CSP, HSTS, framing, nosniff) unless "
            "the app or a proxy sends them"
        ),
    ]


def test_session_tokens_without_a_store_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="CSRF tokens live in the session") as caught:
        Bastion(keyring=KEYRING).build()
    assert caught.value.setting == "store"


def test_runtime_parts_need_what_they_use() -> None:
    runtime = Bastion(keyring=KEYRING, csrf=None).build()
    with pytest.raises(ConfigurationError, match=re.escape("runtime.throttle needs a store")):
        _ = runtime.throttle
    with pytest.raises(ConfigurationError, match="totp_issuer"):
        _ = Bastion(store=MemoryStore(), keyring=KEYRING).build().totp
    full = Bastion(store=MemoryStore(), keyring=KEYRING, totp_issuer="Example").build()
    assert full.throttle is full.throttle
    assert full.api_keys is full.api_keys
    assert full.totp is full.totp


# -- WSGI and Flask ----------------------------------------------------------------------------


def test_wsgi_protect_is_the_same_verb() -> None:
    from werkzeug.test import Client  # noqa: PLC0415

    def inner(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    auditor, sink = recording()
    config = Bastion(
        keyring=KEYRING,
        csrf=bastion.CSRFConfig(token_source=bastion.TokenSource.DOUBLE_SUBMIT),
        auditor=auditor,
        rate_limits=(bastion.Rule("pages", "1/minute"),),
    )
    http = Client(bastion.wsgi.protect(inner, config))
    assert http.get("/", base_url=HTTPS).status_code == 200
    refused = http.get("/", base_url=HTTPS)
    assert refused.status_code == 429
    assert refused.headers["X-Content-Type-Options"] == "nosniff"
    assert sink.names() == ["excess_rate_limit_exceeded"]


def flask_app(config: Bastion) -> tuple[Flask, bastion.Runtime]:
    app = Flask(__name__)
    runtime = bastion.flask.protect(app, config)

    @app.get("/")
    def home() -> Any:
        nonce = render_template_string("{{ csp_nonce() }}")
        return {
            "user": bastion.flask.session.user_id,
            "token": bastion.flask.csrf_token(),
            "nonce": nonce,
        }

    @app.post("/login")
    def sign_in() -> Any:
        bastion.flask.session.login("ada")
        return {"user": "ada"}

    return app, runtime


def test_flask_protect_checks_csrf_once_and_serves_flask_session() -> None:
    auditor, sink = recording()
    app, runtime = flask_app(
        Bastion(store=MemoryStore(), keyring=KEYRING, auditor=auditor, environment="test")  # type: ignore[arg-type]
    )
    http = app.test_client()
    forged = http.post("/login", base_url=HTTPS, headers={"Sec-Fetch-Site": "cross-site"})
    assert forged.status_code == 403
    assert sink.names().count("malicious_csrf") == 1  # one CSRF layer, not two
    assert forged.headers["X-Content-Type-Options"] == "nosniff"
    page = http.get("/", base_url=HTTPS)
    token = page.get_json()["token"]
    assert f"'nonce-{page.get_json()['nonce']}'" in page.headers["Content-Security-Policy"]
    signed_in = http.post(
        "/login", base_url=HTTPS, headers={**browser_headers(HTTPS), "X-CSRF-Token": token}
    )
    assert signed_in.status_code == 200
    assert http.get("/", base_url=HTTPS).get_json()["user"] == "ada"
    assert runtime.sessions is not None
    assert len(runtime.sessions.list_sessions_sync("ada")) == 1
    assert bastion.flask.session_engine.__doc__
    with app.test_request_context():
        assert bastion.flask.session_engine() is runtime.sessions


def test_flask_session_registry_reads_trusted_proxies() -> None:
    app, runtime = flask_app(
        Bastion(store=MemoryStore(), keyring=KEYRING, proxies=TrustedProxies(["10.0.0.1"]))
    )
    http = app.test_client()
    token = http.get("/", base_url=HTTPS).get_json()["token"]
    headers = {**browser_headers(HTTPS), "X-CSRF-Token": token, "X-Forwarded-For": "203.0.113.5"}
    answer = http.post(
        "/login", base_url=HTTPS, headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.1"}
    )
    assert answer.status_code == 200
    assert runtime.sessions is not None
    assert [s.ip for s in runtime.sessions.list_sessions_sync("ada")] == ["203.0.113.5"]
