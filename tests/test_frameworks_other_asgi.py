"""bastion's plain ASGI middlewares around real Litestar and Quart apps, driven in-process.

What a handler uses in each framework:

* Litestar: ``request.session`` *is* bastion's session (Litestar's ``ASGIConnection.session``
  returns ``scope["session"]``); ``get_session(request)`` (``.login(...)``, ``.logout()``),
  ``csp_nonce(request)`` and ``csrf_token(request)`` take the Litestar ``Request`` as it is (it
  has ``.scope``). ``request.set_session(data)`` replaces the data and
  ``request.clear_session()`` ends the session as ``session.logout()`` does: bastion reads
  ``scope["session"]`` back when the response starts.
* Quart: ``quart.session`` is Quart's own cookie-session interface and never sees bastion's
  session. Reach bastion's session through the ASGI scope, ``quart.request.scope["session"]``
  (or ``get_session(quart.request)``, then ``.login(...)``, ``.logout()``), and pass
  ``quart.request`` to ``csp_nonce`` and ``csrf_token`` (it has ``.scope``). Wrap
  ``app.asgi_app`` (or the app object) in the middlewares, outermost last.

Neither framework warns at import under ``filterwarnings = error``; no filter is needed. The
apps define no lifespan hooks, so httpx's ``ASGITransport`` (which sends no lifespan) suffices;
one test checks that a lifespan scope passes through the whole ``protect()`` stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import httpx
import pytest
import quart
from litestar import Litestar, Request, route
from litestar.enums import HttpMethod

from bastion.asgi import (
    CSRFMiddleware,
    RateLimitMiddleware,
    SecurityHeadersMiddleware,
    SessionMiddleware,
    csp_nonce,
    csrf_token,
    protect,
)
from bastion.asgi.sessions import get_session
from bastion.config import Bastion
from bastion.core.clock import FrozenClock
from bastion.core.environment import Environment
from bastion.core.sessions import SessionConfig
from bastion.engine.ratelimit import RateLimiter, Rule
from bastion.stores.memory import MemoryStore
from bastion.testing.csrf import afetch_token, browser_headers

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    from bastion.asgi.types import ASGIApp

    View = Callable[[Any, MutableMapping[str, Any]], Awaitable[dict[str, Any]]]

NOW = 1_700_000_000.0  # 20 s into a minute: a fixed 60 s window resets in 40 s
HTTPS = "https://testserver"
DEV = "http://localhost"  # plain-HTTP development: the cookie is `session`, without Secure
DEV_SESSIONS = SessionConfig(secure=False, development=True)
JSON = {"Accept": "application/json"}
FRAMEWORKS = ["litestar", "quart"]


class Probe:
    """What the handlers saw: how often the app ran, and whether the framework's own session
    accessor (``request.session`` / ``quart.session``) returned bastion's session last time."""

    def __init__(self) -> None:
        self.calls = 0
        self.native_is_bastion: bool | None = None


# -- the shared views: `request` is a Litestar Request or quart.request; `session` is what the
# -- framework's own session accessor returns (Litestar) or scope["session"] (Quart)


async def ping(_request: Any, _session: MutableMapping[str, Any]) -> dict[str, Any]:
    return {"ok": True}


async def nonce(request: Any, _session: MutableMapping[str, Any]) -> dict[str, Any]:
    return {"nonce": csp_nonce(request), "from_scope": csp_nonce(request.scope)}


async def token(request: Any, _session: MutableMapping[str, Any]) -> dict[str, Any]:
    return {"csrf_token": csrf_token(request)}


async def incr(_request: Any, session: MutableMapping[str, Any]) -> dict[str, Any]:
    session["n"] = session.get("n", 0) + 1
    return {"n": session["n"]}


async def me(request: Any, session: MutableMapping[str, Any]) -> dict[str, Any]:
    return {"user": get_session(request).user_id, "n": session.get("n", 0)}


async def sign_in(request: Any, _session: MutableMapping[str, Any]) -> dict[str, Any]:
    get_session(request).login("alice")
    return {"user": "alice"}


async def sign_out(request: Any, _session: MutableMapping[str, Any]) -> dict[str, Any]:
    get_session(request).logout()
    return {"user": None}


VIEWS: list[tuple[str, str, View]] = [
    ("GET", "/ping", ping),
    ("GET", "/nonce", nonce),
    ("GET", "/token", token),
    ("POST", "/incr", incr),
    ("GET", "/me", me),
    ("POST", "/login", sign_in),
    ("POST", "/logout", sign_out),
]


def litestar_app(probe: Probe) -> Litestar:
    def handler(method: str, path: str, view: View) -> Any:
        async def endpoint(request: Request[Any, Any, Any]) -> dict[str, Any]:
            probe.calls += 1
            bare = path in {"/ping", "/nonce", "/token"}  # no session middleware in some tests
            probe.native_is_bastion = None if bare else request.session is request.scope["session"]
            return await view(request, {} if bare else request.session)

        endpoint.__name__ = view.__name__
        return route(path, http_method=[HttpMethod(method)], status_code=200)(endpoint)

    return Litestar(route_handlers=[handler(*v) for v in VIEWS])


def quart_app(probe: Probe) -> quart.Quart:
    app = quart.Quart(__name__)

    def handler(view: View) -> Callable[[], Awaitable[dict[str, Any]]]:
        async def endpoint() -> dict[str, Any]:
            probe.calls += 1
            scope = cast("dict[str, Any]", quart.request.scope)  # a TypedDict without "session"
            probe.native_is_bastion = quart.session is scope.get("session")
            return await view(quart.request, scope.get("session", {}))

        return endpoint

    for method, path, view in VIEWS:
        app.add_url_rule(path, view.__name__, handler(view), methods=[method])
    return app


def make_app(framework: str, probe: Probe) -> ASGIApp:
    return litestar_app(probe) if framework == "litestar" else quart_app(probe)


def client(app: ASGIApp, base_url: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4000))
    return httpx.AsyncClient(transport=transport, base_url=base_url)


def memory_limiter() -> RateLimiter:
    return RateLimiter(MemoryStore(clock=FrozenClock(NOW)))


def sessions_and_csrf(app: ASGIApp) -> ASGIApp:
    clock = FrozenClock(NOW)
    inner = CSRFMiddleware(app, clock=clock, production=False)
    store = MemoryStore(clock=clock)
    return SessionMiddleware(inner, store=store, config=DEV_SESSIONS, clock=clock, production=False)


# -- 1. security headers and the CSP nonce


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.asyncio
async def test_strict_headers_and_the_nonce_reach_the_handler(framework: str) -> None:
    app = SecurityHeadersMiddleware(make_app(framework, Probe()))
    async with client(app, HTTPS) as http:
        first, second = await http.get("/nonce"), await http.get("/nonce")
        missing = await http.get("/no-such-page")  # the framework's own 404 page
    seen = first.json()["nonce"]
    assert first.status_code == 200
    assert first.json()["from_scope"] == seen
    assert len(seen) == 32
    assert second.json()["nonce"] != seen
    csp = first.headers["content-security-policy"]
    assert f"script-src 'nonce-{seen}' 'strict-dynamic'" in csp
    assert csp.startswith("default-src 'none';")
    assert csp.endswith("frame-ancestors 'none'")
    for response in (first, missing):
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "strict-origin-when-cross-origin"
        assert response.headers["cross-origin-opener-policy"] == "same-origin"
        assert (
            response.headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"
        )
    assert missing.status_code == 404
    assert "'nonce-" in missing.headers["content-security-policy"]


# -- 2. rate limiting


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.asyncio
async def test_rate_limit_admits_two_then_429_without_calling_the_app(framework: str) -> None:
    probe = Probe()
    rule = Rule("site", "2/minute", strategy="fixed_window")
    app = RateLimitMiddleware(make_app(framework, probe), limiter=memory_limiter(), rules=[rule])
    async with client(app, HTTPS) as http:
        admitted = [await http.get("/ping") for _ in range(2)]
        refused = await http.get("/ping")
    assert [r.status_code for r in admitted] == [200, 200]
    assert [r.json() for r in admitted] == [{"ok": True}, {"ok": True}]
    assert [r.headers["ratelimit"] for r in admitted] == ['"site";r=1;t=40', '"site";r=0;t=40']
    assert admitted[0].headers["ratelimit-policy"] == '"site";q=2;w=60'
    assert "retry-after" not in admitted[0].headers
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "40"
    assert refused.headers["ratelimit"] == '"site";r=0;t=40'
    assert probe.calls == 2


# -- 3. CSRF behind bastion's sessions


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.asyncio
async def test_csrf_refuses_cross_site_and_passes_same_origin_and_token(framework: str) -> None:
    probe = Probe()
    app = sessions_and_csrf(make_app(framework, probe))
    async with client(app, DEV) as http:
        forged = await http.post(
            "/incr", headers={**browser_headers(DEV, site="cross-site"), **JSON}
        )
        assert forged.status_code == 403
        assert forged.json()["reason"] == "cross_site"
        assert probe.calls == 0
        same_origin = await http.post("/incr", headers=browser_headers(DEV))
        assert same_origin.status_code == 200
        assert same_origin.json() == {"n": 1}
        token = await afetch_token(http, "/token")  # from csrf_token(request) in the handler
        bare = await http.post("/incr", headers=JSON)  # no Fetch Metadata, no Origin, no token
        assert bare.status_code == 403
        assert bare.json()["reason"] == "token_missing"
        with_token = await http.post("/incr", headers={"X-CSRF-Token": token})
        assert with_token.status_code == 200
        assert with_token.json() == {"n": 2}
        form = await http.post("/incr", data={"csrf_token": token})  # the form field, body replayed
        assert form.json() == {"n": 3}
    assert probe.calls == 4  # /token and the three admitted posts


# -- 4. sessions: a counter, login rotation, logout


@pytest.mark.parametrize(("framework", "native"), [("litestar", True), ("quart", False)])
@pytest.mark.asyncio
async def test_session_counter_login_rotates_logout_ends(framework: str, native: bool) -> None:
    probe = Probe()
    app = SessionMiddleware(
        make_app(framework, probe), store="memory://", config=DEV_SESSIONS, production=False
    )
    async with client(app, DEV) as http:
        first = await http.post("/incr")
        assert first.json() == {"n": 1}
        assert first.headers["set-cookie"].startswith("session=")
        anonymous_id = http.cookies["session"]
        assert (await http.post("/incr")).json() == {"n": 2}
        assert (await http.get("/me")).json() == {"user": None, "n": 2}
        # Litestar's request.session is bastion's session; quart.session is Quart's own.
        assert probe.native_is_bastion is native
        signed_in = await http.post("/login")
        assert signed_in.json() == {"user": "alice"}
        assert signed_in.headers["cache-control"] == "no-store"
        logged_in_id = http.cookies["session"]
        assert logged_in_id != anonymous_id
        assert (await http.get("/me")).json() == {"user": "alice", "n": 2}
        signed_out = await http.post("/logout")
        assert signed_out.json() == {"user": None}
        assert "max-age=0" in signed_out.headers["set-cookie"].lower()
        assert "session" not in http.cookies
        assert (await http.get("/me")).json() == {"user": None, "n": 0}
    for stale in (anonymous_id, logged_in_id):  # neither the pre-login nor the logged-out ID
        async with client(app, DEV) as replay:
            replay.cookies.set("session", stale)
            assert (await replay.get("/me")).json() == {"user": None, "n": 0}


@pytest.mark.asyncio
async def test_litestar_clear_session_ends_the_session() -> None:
    @route("/incr", http_method=["POST"], status_code=200)
    async def incr_view(request: Request[Any, Any, Any]) -> dict[str, Any]:
        request.session["n"] = request.session.get("n", 0) + 1
        return {"n": request.session["n"]}

    @route("/clear", http_method=["POST"], status_code=200)
    async def clear_view(request: Request[Any, Any, Any]) -> dict[str, Any]:
        request.clear_session()
        return {}

    @route("/replace", http_method=["POST"], status_code=200)
    async def replace_view(request: Request[Any, Any, Any]) -> dict[str, Any]:
        request.set_session({"n": 10})
        return {}

    app = SessionMiddleware(
        Litestar(route_handlers=[incr_view, clear_view, replace_view]),
        store="memory://",
        config=DEV_SESSIONS,
        production=False,
    )
    async with client(app, DEV) as http:
        assert (await http.post("/incr")).json() == {"n": 1}
        cleared = await http.post("/clear")
        assert "max-age=0" in cleared.headers["set-cookie"].lower()  # ended, as by .logout()
        assert (await http.post("/incr")).json() == {"n": 1}
        await http.post("/replace")
        assert (await http.post("/incr")).json() == {"n": 11}  # the data was replaced


# -- 5. protect() end to end


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.asyncio
async def test_protect_end_to_end(framework: str) -> None:
    probe = Probe()
    # The rate limits run on config.clock (runtime.limiter): the frozen NOW, as before.
    app = protect(
        make_app(framework, probe),
        Bastion(
            store=MemoryStore(clock=FrozenClock(NOW)),
            rate_limits=(Rule("site", "5/minute"),),
            clock=FrozenClock(NOW),
            environment=Environment.TEST,
        ),
    )
    async with client(app, HTTPS) as http:
        page = await http.get("/nonce")
        assert f"'nonce-{page.json()['nonce']}'" in page.headers["content-security-policy"]
        token = await afetch_token(http, "/token")
        assert http.cookies["__Host-session"]  # the CSRF secret lives in the new session
        counted = await http.post("/incr", headers={"X-CSRF-Token": token})
        assert counted.json() == {"n": 1}
        forged = await http.post("/incr", headers={**browser_headers(site="cross-site"), **JSON})
        assert forged.status_code == 403
        assert forged.json()["reason"] == "cross_site"
        assert forged.headers["x-frame-options"] == "DENY"
        assert (await http.post("/incr", headers=browser_headers())).json() == {"n": 2}
        limited = await http.get("/me")  # the sixth request this minute
        assert limited.status_code == 429
        assert limited.headers["x-content-type-options"] == "nosniff"
    assert probe.calls == 4
    await assert_lifespan_passes_through(app)


async def assert_lifespan_passes_through(app: ASGIApp) -> None:
    """Drive a lifespan scope through the stack: every layer hands it to the framework."""
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> MutableMapping[str, Any]:
        return inbox.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message["type"])

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    await app(scope, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
