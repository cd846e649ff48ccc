"""A rate-limit key or cost function that raises (or returns what no key can be) is a bug in the
app's code, not bad input; but the input may be what trips it (a key function that splits a
header a client sent malformed). Either way the limit cannot be decided, so the rule fails
closed: a ``503`` with bastion's refusal body and no traceback, an error logged with the rule's
name, an audit event, and the app is not called. A shadow rule refuses nothing, so it lets the
request through (logged and audited all the same)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import flask
import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bastion.asgi import RateLimitMiddleware
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.keys import SecretKey
from bastion.engine.ratelimit import RateLimiter, Rule
from bastion.errors import ConfigurationError
from bastion.stores.memory import MemoryStore
from bastion.testing.audit import RecordingAuditSink
from bastion.wsgi import RateLimitMiddleware as WSGIRateLimitMiddleware

if TYPE_CHECKING:
    from starlette.requests import Request

    from bastion.core.request import RequestView

NOW = 1_700_000_000.0
FAILED = '{"error": "rate_limit_failed", "detail": "Service Unavailable"}'
SECRET_TEXT = "the-key-function-secret-detail"


def broken_key(request: RequestView) -> str | None:
    """A key function with a bug a client's header trips: it expects ``tenant:plan``."""
    return (request.header("x-tenant") or "").split(":")[1] + SECRET_TEXT


def broken_cost(request: RequestView) -> int:
    raise ZeroDivisionError(SECRET_TEXT)


def empty_key(request: RequestView) -> str | None:
    return ""  # no key: None exempts, "" is a bug


def limiter_and_sink() -> tuple[RateLimiter, RecordingAuditSink]:
    clock = FrozenClock(NOW)
    sink = RecordingAuditSink()
    auditor = Auditor(IdentifierHasher(SecretKey(b"k" * 32)), clock, sink)
    return RateLimiter(MemoryStore(clock=clock), auditor=auditor), sink


def cases() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("key", {"key": broken_key}),
        ("cost", {"cost": broken_cost}),
        ("empty-key", {"key": empty_key}),
    ]


CASES = [pytest.param(options, id=name) for name, options in cases()]


def _check_logged_and_audited(
    caplog: pytest.LogCaptureFixture, sink: RecordingAuditSink, rule: str, count: int
) -> None:
    errors = [
        r
        for r in caplog.records
        if r.name == "bastion.security.ratelimit" and r.levelno == logging.ERROR
    ]
    assert len(errors) == count
    assert all(repr(rule) in r.getMessage() for r in errors)
    events = [e for e in sink.events if e.name == "ratelimit_key_failed"]
    assert len(events) == count
    assert all(e.outcome == "failure" and e.details["rule"] == rule for e in events)


@pytest.mark.asyncio
@pytest.mark.parametrize("options", CASES)
async def test_asgi_a_raising_key_or_cost_function_is_a_503_not_a_500(
    options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    limiter, sink = limiter_and_sink()
    called: list[str] = []

    async def page(request: Request) -> PlainTextResponse:
        called.append(request.url.path)
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", page), Route("/free", page)])
    rule = Rule("tenants", "5/minute", path="/", **options)
    wrapped = RateLimitMiddleware(app, limiter, rule)
    transport = httpx.ASGITransport(app=wrapped, client=("203.0.113.7", 4000))  # type: ignore[arg-type]
    caplog.set_level(logging.ERROR, logger="bastion.security.ratelimit")
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for _ in range(2):
            response = await client.get("/", headers={"x-tenant": "acme"})
            assert (response.status_code, response.text) == (503, FAILED)
            assert response.headers["content-type"] == "application/json"
            assert "retry-after" not in response.headers  # not known to be temporary
            assert "ratelimit" not in response.headers
            assert SECRET_TEXT not in response.text
            assert "Traceback" not in response.text
        html = await client.get("/", headers={"accept": "text/html", "x-tenant": "acme"})
        assert (html.status_code, html.text) == (503, "Service Unavailable")
        assert (await client.get("/free")).status_code == 200  # the rule does not cover it
    assert called == ["/free"]  # the app never ran for a request the rule could not decide
    _check_logged_and_audited(caplog, sink, "tenants", 3)


@pytest.mark.parametrize("options", CASES)
def test_wsgi_a_raising_key_or_cost_function_is_a_503_not_a_500(
    options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    limiter, sink = limiter_and_sink()
    called: list[str] = []
    app = flask.Flask(__name__)

    @app.get("/")
    def index() -> str:
        called.append("/")
        return "ok"

    rule = Rule("tenants", "5/minute", **options)
    app.wsgi_app = WSGIRateLimitMiddleware(app.wsgi_app, limiter, rule)  # type: ignore[method-assign]
    client = app.test_client()
    caplog.set_level(logging.ERROR, logger="bastion.security.ratelimit")
    for _ in range(2):
        response = client.get("/", headers={"x-tenant": "acme"})
        assert (response.status_code, response.text) == (503, FAILED)
        assert "Retry-After" not in response.headers
        assert SECRET_TEXT not in response.text
        assert "Traceback" not in response.text
    assert called == []
    _check_logged_and_audited(caplog, sink, "tenants", 2)


@pytest.mark.asyncio
async def test_a_failing_rule_stops_the_request_before_later_rules_charge() -> None:
    limiter, _ = limiter_and_sink()
    later = Rule("later", "1/minute", strategy="fixed_window")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    wrapped = RateLimitMiddleware(app, limiter, [Rule("tenants", "5/minute", key=empty_key), later])
    transport = httpx.ASGITransport(app=wrapped, client=("203.0.113.7", 4000))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/")).status_code == 503
    # "later" was not charged by the refused request: its one request is still there
    assert limiter.hit_sync(later, "203.0.113.7").allowed


@pytest.mark.asyncio
async def test_a_shadow_rule_whose_key_raises_lets_the_request_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter, sink = limiter_and_sink()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    shadow = Rule("new", "5/minute", key=broken_key, shadow=True)
    wrapped = RateLimitMiddleware(app, limiter, [shadow, Rule("site", "5/minute")])
    transport = httpx.ASGITransport(app=wrapped, client=("203.0.113.7", 4000))  # type: ignore[arg-type]
    caplog.set_level(logging.ERROR, logger="bastion.security.ratelimit")
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/")
    assert (response.status_code, response.text) == (200, "ok")
    assert response.headers["ratelimit"] == '"site";r=4;t=12'  # the enforced rule still counts
    _check_logged_and_audited(caplog, sink, "new", 1)


def test_direct_hits_with_a_bad_key_still_raise() -> None:
    """Only the rule loop (keys from key functions) turns a bad key into a refusal: a caller
    passing one to ``hit_sync`` itself gets the typed error, as before."""
    limiter, _ = limiter_and_sink()
    with pytest.raises(ConfigurationError, match="non-empty"):
        limiter.hit_sync(Rule("r", "3/minute"), "")


def test_a_rule_set_keyed_by_the_peer_is_decided_without_a_view_the_same_way() -> None:
    """``check_peer_sync`` (the middlewares' path for rules keyed by the peer alone) gives the
    verdict ``check_sync`` gives over the request's view, admitted and refused alike."""
    from bastion.core.ratelimit.rules import RuleSet  # noqa: PLC0415
    from bastion.core.request import RequestView  # noqa: PLC0415

    by_peer, _ = limiter_and_sink()
    by_view, _ = limiter_and_sink()
    rules = RuleSet([Rule("a", "2/minute"), Rule("b", "3/minute", strategy="sliding_log")])
    assert rules.peer_keys is not None
    for peer in ["203.0.113.7", "203.0.113.7", "2001:db8::1", "testclient", None] * 2:
        view = RequestView("GET", "/", peer=peer)
        assert by_peer.check_peer_sync(peer, rules) == by_view.check_sync(view, rules)
    assert RuleSet([Rule("c", "1/s", path="/x")]).peer_keys is None
    assert RuleSet([Rule("c", "1/s", key=empty_key)]).peer_keys is None
    with pytest.raises(ConfigurationError, match="check_sync"):
        by_peer.check_peer_sync("203.0.113.7", RuleSet([Rule("c", "1/s", path="/x")]))
