"""SessionMiddleware in real Starlette and FastAPI apps over a real (counted) memory store."""

from __future__ import annotations

import logging
import re
import warnings
from typing import TYPE_CHECKING, Any

import pytest
from fastapi import Depends, FastAPI
from fastapi import Request as FastAPIRequest
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

with warnings.catch_warnings():
    # Starlette >= 1.x announces a move of its test client from httpx to httpx2 at import time;
    # the dev environment pins httpx. Only that import-time notice is silenced.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from bastion.asgi import SessionMiddleware, load_session
from bastion.asgi.sessions import (
    create_session,
    destroy_session,
    get_session,
    list_sessions,
    revoke_other_sessions,
    session_engine,
)
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing, SecretKey
from bastion.core.sessions import SessionConfig, new_session_id, record_key, session_handle
from bastion.engine.sessions import Session  # noqa: TC001 (FastAPI resolves it at runtime)
from bastion.errors import ConfigurationError, SessionDataError
from bastion.stores.memory import MemoryStore
from bastion.testing.audit import RecordingAuditSink
from bastion.testing.sync_store import CountingStore

if TYPE_CHECKING:
    from collections.abc import Iterator

    from starlette.requests import Request

HTTPS = "https://testserver"
COOKIE = "__Host-session"


async def untouched(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def read(request: Request) -> JSONResponse:
    return JSONResponse({"n": request.session.get("n"), "user": get_session(request).user_id})


async def incr(request: Request) -> JSONResponse:
    request.session["n"] = request.session.get("n", 0) + 1
    return JSONResponse({"n": request.session["n"]})


async def put(request: Request) -> JSONResponse:
    body = await request.json()
    request.session.update(body)
    return JSONResponse({"ok": True})


async def do_login(request: Request) -> JSONResponse:
    before = get_session(request).csrf_secret
    get_session(request).login("alice", remember=request.query_params.get("remember") == "1")
    after = get_session(request).csrf_secret
    return JSONResponse({"csrf_rotated": before != after})


async def do_logout(request: Request) -> PlainTextResponse:
    get_session(request).logout()
    return PlainTextResponse("bye")


async def do_regenerate(request: Request) -> PlainTextResponse:
    get_session(request).regenerate()
    return PlainTextResponse("ok")


async def bad_value(request: Request) -> PlainTextResponse:
    try:
        request.session["when"] = {1, 2}
    except SessionDataError as exc:
        return PlainTextResponse(str(exc), status_code=400)
    return PlainTextResponse("stored")  # pragma: no cover - the assignment must fail


async def boom(request: Request) -> PlainTextResponse:
    request.session["n"] = 99
    return PlainTextResponse("failed", status_code=500)


async def whoami(request: Request) -> JSONResponse:
    session = get_session(request)
    return JSONResponse(
        {"user": session.user_id, "auth": session.authenticated_at, "id": session.id}
    )


async def sessions_of_user(request: Request) -> JSONResponse:
    found = await list_sessions(request)
    return JSONResponse([[info.handle, info.current, info.ip] for info in found])


async def others_out(request: Request) -> JSONResponse:
    return JSONResponse({"revoked": await revoke_other_sessions(request)})


async def make_and_destroy(request: Request) -> JSONResponse:
    made = await create_session(request, {"via": "api"}, user_id="bob")
    engine = session_engine(request)
    found = await engine.store.get(record_key(session_handle(made)))
    destroyed = await destroy_session(request, made)
    gone = await engine.store.get(record_key(session_handle(made)))
    return JSONResponse({"found": found is not None, "destroyed": destroyed, "gone": gone is None})


ROUTES = [
    Route("/", untouched),
    Route("/read", read),
    Route("/incr", incr, methods=["POST"]),
    Route("/put", put, methods=["POST"]),
    Route("/login", do_login, methods=["POST"]),
    Route("/logout", do_logout, methods=["POST"]),
    Route("/regenerate", do_regenerate, methods=["POST"]),
    Route("/bad", bad_value, methods=["POST"]),
    Route("/boom", boom, methods=["POST"]),
    Route("/whoami", whoami),
    Route("/sessions", sessions_of_user),
    Route("/others-out", others_out, methods=["POST"]),
    Route("/admin", make_and_destroy, methods=["POST"]),
]


class Harness:
    def __init__(self, **config: Any) -> None:
        self.clock = FrozenClock()
        self.sink = RecordingAuditSink()
        self.keyring = KeyRing.generate()
        self.store = CountingStore(MemoryStore(clock=self.clock))
        self.config = SessionConfig(**config)
        auditor = Auditor(IdentifierHasher(self.keyring), self.clock, self.sink)
        self.app = Starlette(
            routes=ROUTES,
            middleware=[
                Middleware(
                    SessionMiddleware,
                    store=self.store,
                    config=self.config,
                    keyring=self.keyring,
                    auditor=auditor,
                    clock=self.clock,
                    production=False,
                )
            ],
        )

    def client(self) -> TestClient:
        return TestClient(self.app, base_url=HTTPS)


@pytest.fixture
def harness() -> Harness:
    return Harness()


@pytest.fixture
def client(harness: Harness) -> Iterator[TestClient]:
    with harness.client() as client:
        yield client


def cookie_of(response: Any) -> str | None:
    header = response.headers.get("set-cookie")
    if header is None:
        return None
    match = re.match(rf"{re.escape(COOKIE)}=([^;]*)", header)
    return None if match is None else match.group(1)


# -- round trips --------------------------------------------------------------------------------


def test_untouched_request_with_a_cookie_does_no_store_io(
    harness: Harness, client: TestClient
) -> None:
    assert client.post("/incr").status_code == 200
    harness.store.reset()
    response = client.get("/")
    assert response.text == "ok"
    assert harness.store.total == 0
    assert "set-cookie" not in response.headers
    assert "vary" not in response.headers


def test_read_only_request_is_one_round_trip(harness: Harness, client: TestClient) -> None:
    client.post("/incr")
    harness.store.reset()
    response = client.get("/read")
    assert response.json() == {"n": 1, "user": None}
    assert dict(harness.store.calls) == {"get": 1}
    assert "set-cookie" not in response.headers
    assert response.headers["vary"] == "Cookie"


def test_modifying_request_is_two_round_trips(harness: Harness, client: TestClient) -> None:
    client.post("/incr")
    harness.store.reset()
    assert client.post("/incr").json() == {"n": 2}
    assert dict(harness.store.calls) == {"get": 1, "compare_and_set": 1}


def test_a_new_session_is_one_create(harness: Harness, client: TestClient) -> None:
    response = client.post("/incr")
    assert dict(harness.store.calls) == {"compare_and_set": 1}
    value = cookie_of(response)
    assert value is not None
    assert len(value) == 43


def test_reading_an_empty_new_session_writes_nothing(harness: Harness, client: TestClient) -> None:
    response = client.get("/read")
    assert response.json() == {"n": None, "user": None}
    assert harness.store.total == 0
    assert "set-cookie" not in response.headers


# -- IDs and fixation ---------------------------------------------------------------------------


def test_only_a_hash_of_the_id_is_stored(harness: Harness, client: TestClient) -> None:
    session_id = cookie_of(client.post("/incr"))
    assert session_id is not None
    inner = harness.store.inner
    assert isinstance(inner, MemoryStore)
    keys = list(inner._data)
    assert keys == [record_key(session_handle(session_id))]
    assert session_id not in keys[0]
    assert session_id.encode() not in inner._data[keys[0]][0]


def test_client_chosen_id_is_not_adopted_stored_or_echoed(harness: Harness) -> None:
    chosen = new_session_id()
    with harness.client() as client:
        client.cookies.set(COOKIE, chosen, domain="testserver.local")
        response = client.post("/incr", headers={"cookie": f"{COOKIE}={chosen}"})
    assert response.status_code == 200
    issued = cookie_of(response)
    assert issued is not None
    assert issued != chosen
    assert chosen not in response.headers["set-cookie"]
    inner = harness.store.inner
    assert isinstance(inner, MemoryStore)
    assert record_key(session_handle(chosen)) not in inner._data
    event = harness.sink.events[0]
    assert (event.name, event.outcome, dict(event.details)["reason"]) == (
        "session_use_after_expire",
        "failure",
        "unknown",
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [("short", "malformed"), ("x" * 43 + "!", "malformed"), ("é" * 43, "malformed")],
)
def test_malformed_cookie_gets_a_fresh_session_and_an_audit_event(
    harness: Harness, value: str, reason: str
) -> None:
    with TestClient(harness.app, base_url=HTTPS) as client:
        raw = f"{COOKIE}={value}".encode()
        response = client.get("/read", headers={"cookie": raw})  # type: ignore[dict-item]
    assert response.status_code == 200
    assert response.json() == {"n": None, "user": None}
    # The bad cookie is cleared so the browser stops sending it.
    assert response.headers["set-cookie"].startswith(f"{COOKIE}=; Max-Age=0")
    assert harness.store.total == 0
    event = harness.sink.events[-1]
    assert (event.name, dict(event.details)["reason"]) == ("input_validation_fail", reason)


def test_signed_cookies_verify_across_key_rotation_and_refuse_tampering() -> None:
    old = SecretKey.generate()
    new = SecretKey.generate()
    store = MemoryStore(clock=FrozenClock())
    sink = RecordingAuditSink()

    def app_with(ring: KeyRing) -> Starlette:
        auditor = Auditor(IdentifierHasher(ring), FrozenClock(), sink)
        return Starlette(
            routes=ROUTES,
            middleware=[
                Middleware(
                    SessionMiddleware,
                    store=store,
                    config=SessionConfig(signed=True),
                    keyring=ring,
                    auditor=auditor,
                    production=False,
                )
            ],
        )

    with TestClient(app_with(KeyRing(old)), base_url=HTTPS) as client:
        signed = cookie_of(client.post("/incr"))
    assert signed is not None
    assert signed.count(".") == 1
    with TestClient(app_with(KeyRing(new, previous=[old])), base_url=HTTPS) as client:
        ok = client.get("/read", headers={"cookie": f"{COOKIE}={signed}"})
        assert ok.json()["n"] == 1
        payload, signature = signed.split(".")
        forged = payload + "." + ("A" if signature[0] != "A" else "B") + signature[1:]
        bad = client.get("/read", headers={"cookie": f"{COOKIE}={forged}"})
    assert bad.json()["n"] is None
    assert dict(sink.events[-1].details)["reason"] == "bad_signature"
    with pytest.raises(ConfigurationError, match="keyring"):
        SessionMiddleware(untouched, store=store, config=SessionConfig(signed=True))  # type: ignore[arg-type]


# -- lifecycle ----------------------------------------------------------------------------------


def test_login_rotates_the_id_and_csrf_secret_and_kills_the_old_id(
    harness: Harness, client: TestClient
) -> None:
    before = cookie_of(client.post("/incr"))
    response = client.post("/login")
    after = cookie_of(response)
    assert response.json() == {"csrf_rotated": True}
    assert before is not None
    assert after is not None
    assert after != before
    assert client.get("/whoami").json()["user"] == "alice"
    assert client.get("/read").json() == {"n": 1, "user": "alice"}
    # The pre-login ID (a possibly fixated one) reaches nothing, even right away.
    with harness.client() as other:
        stale = other.get("/read", headers={"cookie": f"{COOKIE}={before}"})
    assert stale.json() == {"n": None, "user": None}
    assert "session_renewed" in harness.sink.names()


def test_login_records_authenticated_at(harness: Harness, client: TestClient) -> None:
    client.post("/login")
    harness.clock.advance(100)
    data = client.get("/whoami").json()
    assert data["auth"] == harness.clock.now() - 100


def test_logout_deletes_data_expires_cookie_and_clears_site_data(
    harness: Harness, client: TestClient
) -> None:
    client.post("/login")
    session_id = client.get("/whoami").json()["id"]
    response = client.post("/logout")
    header = response.headers["set-cookie"]
    assert header.startswith(f"{COOKIE}=; Max-Age=0;")
    assert response.headers["clear-site-data"] == '"cookies"'
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["vary"] == "Cookie"
    inner = harness.store.inner
    assert isinstance(inner, MemoryStore)
    assert record_key(session_handle(session_id)) not in inner._data
    with harness.client() as other:
        replay = other.get("/whoami", headers={"cookie": f"{COOKIE}={session_id}"})
    assert replay.json()["user"] is None


def test_regenerate_issues_a_new_id_for_the_same_data(harness: Harness, client: TestClient) -> None:
    first = cookie_of(client.post("/incr"))
    second = cookie_of(client.post("/regenerate"))
    assert first is not None
    assert second not in {None, first}
    assert client.get("/read").json()["n"] == 1
    with harness.client() as other:
        assert other.get("/read", headers={"cookie": f"{COOKIE}={first}"}).json()["n"] is None


def test_create_and_destroy_helpers(client: TestClient) -> None:
    assert client.post("/admin").json() == {"found": True, "destroyed": True, "gone": True}


def test_registry_lists_and_revokes_other_devices(harness: Harness) -> None:
    with harness.client() as laptop, harness.client() as phone:
        laptop.post("/login", headers={"user-agent": "laptop"})
        phone.post("/login", headers={"user-agent": "phone"})
        listed = laptop.get("/sessions").json()
        assert len(listed) == 2
        assert [current for _h, current, _ip in listed].count(True) == 1
        assert laptop.post("/others-out").json() == {"revoked": 1}
        assert phone.get("/whoami").json()["user"] is None
        assert laptop.get("/whoami").json()["user"] == "alice"
        assert len(laptop.get("/sessions").json()) == 1


# -- lifetimes ----------------------------------------------------------------------------------


def test_idle_timeout_is_enforced_by_the_server(harness: Harness, client: TestClient) -> None:
    client.post("/incr")
    harness.clock.advance(harness.config.idle_timeout - 1)
    assert client.get("/read").json()["n"] == 1  # the touch pushed the idle deadline
    harness.clock.advance(harness.config.idle_timeout - 1)
    assert client.get("/read").json()["n"] == 1
    harness.clock.advance(harness.config.idle_timeout + 1)
    assert client.get("/read").json()["n"] is None
    assert harness.sink.events[-1].name == "session_expired"


def test_idle_refresh_is_throttled(harness: Harness, client: TestClient) -> None:
    client.post("/incr")
    harness.store.reset()
    harness.clock.advance(harness.config.touch_interval / 2)
    client.get("/read")
    assert dict(harness.store.calls) == {"get": 1}
    harness.clock.advance(harness.config.touch_interval)
    client.get("/read")
    assert dict(harness.store.calls) == {"get": 2, "compare_and_set": 1}


def test_absolute_lifetime_ends_even_a_busy_session() -> None:
    harness = Harness(idle_timeout=600, absolute_lifetime=1800, touch_interval=60, renew_every=None)
    with harness.client() as client:
        client.post("/incr")
        for _ in range(5):
            harness.clock.advance(300)
            assert client.get("/read").json()["n"] == 1
        harness.clock.advance(301)
        assert client.get("/read").json()["n"] is None
    assert dict(harness.sink.events[-1].details)["reason"] == "absolute_expired"


def test_periodic_renewal_keeps_the_old_id_for_a_grace_window() -> None:
    harness = Harness(renew_every=300, renew_grace=30)
    with harness.client() as client:
        old = cookie_of(client.post("/incr"))
        harness.clock.advance(301)
        renewed = client.post("/incr")
        new = cookie_of(renewed)
        assert new not in {None, old}
        assert renewed.json() == {"n": 2}
    with harness.client() as parallel:
        # A parallel request still carrying the old cookie reads and writes the live session.
        in_grace = parallel.post("/incr", headers={"cookie": f"{COOKIE}={old}"})
        assert in_grace.json() == {"n": 3}
        assert "set-cookie" not in in_grace.headers
        harness.clock.advance(31)
        late = parallel.get("/read", headers={"cookie": f"{COOKIE}={old}"})
        assert late.json()["n"] is None
    with harness.client() as current:
        assert current.get("/read", headers={"cookie": f"{COOKIE}={new}"}).json()["n"] == 3


def test_remember_me_cookie_max_age_matches_the_server_deadline(harness: Harness) -> None:
    with harness.client() as client:
        response = client.post("/login?remember=1")
    match = re.search(r"Max-Age=(\d+)", response.headers["set-cookie"])
    assert match is not None
    assert int(match.group(1)) == int(harness.config.persistent_idle_timeout)


def test_browser_session_cookie_has_no_max_age(client: TestClient) -> None:
    header = client.post("/incr").headers["set-cookie"]
    assert "Max-Age" not in header
    assert "Expires" not in header


# -- responses ----------------------------------------------------------------------------------


def test_cookie_policy_defaults_and_cache_headers(client: TestClient) -> None:
    response = client.post("/incr")
    header = response.headers["set-cookie"]
    attributes = header.split("; ")[1:]
    assert attributes == ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"]
    assert header.startswith("__Host-session=")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["vary"] == "Cookie"


def test_no_save_after_a_5xx(harness: Harness, client: TestClient) -> None:
    response = client.post("/boom")
    assert response.status_code == 500
    assert "set-cookie" not in response.headers
    assert harness.store.total == 0


def test_unserializable_value_fails_at_assignment_naming_the_key(client: TestClient) -> None:
    response = client.post("/bad")
    assert response.status_code == 400
    assert "session['when'] holds a set" in response.text


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ((1, 2), "holds a tuple"),
        (float("nan"), "JSON cannot represent"),
        ({1: "a"}, "dict key of type int"),
        (object(), "holds a object"),
    ],
)
def test_session_values_must_be_json(value: object, fragment: str) -> None:
    from bastion.core.sessions import check_session_value  # noqa: PLC0415

    with pytest.raises(SessionDataError, match=re.escape(fragment)) as caught:
        check_session_value("cart", value)
    assert "'cart'" in str(caught.value)


def test_session_size_is_capped_with_a_clear_error(harness: Harness) -> None:
    with harness.client() as client, pytest.raises(SessionDataError, match="max_bytes=65536"):
        client.post("/put", json={"blob": "x" * 70_000})


def test_nested_changes_are_saved(harness: Harness) -> None:
    async def append(request: Request) -> JSONResponse:
        request.session.setdefault("cart", [])
        request.session["cart"].append(len(request.session["cart"]))
        return JSONResponse(request.session["cart"])

    app = Starlette(
        routes=[Route("/cart", append, methods=["POST"])],
        middleware=[Middleware(SessionMiddleware, store=harness.store, production=False)],
    )
    with TestClient(app, base_url=HTTPS) as client:
        client.post("/cart")
        assert client.post("/cart").json() == [0, 1]
        assert client.post("/cart").json() == [0, 1, 2]


# -- configuration ------------------------------------------------------------------------------


def test_insecure_cookie_needs_the_development_flag() -> None:
    with pytest.raises(ConfigurationError, match="development=True") as caught:
        SessionConfig(secure=False)
    assert caught.value.setting == "secure"


def test_development_flag_is_refused_in_production() -> None:
    config = SessionConfig(secure=False, development=True)
    with pytest.raises(ConfigurationError, match="ENV=production") as caught:
        SessionMiddleware(untouched, store="memory://", config=config, production=True)  # type: ignore[arg-type]
    assert caught.value.setting == "development"


def test_development_flag_warns_once_and_works_over_plain_http(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = SessionConfig(secure=False, development=True)
    with caplog.at_level(logging.WARNING, logger="bastion.security.sessions"):
        app = Starlette(
            routes=ROUTES,
            middleware=[
                Middleware(SessionMiddleware, store="memory://", config=config, production=False)
            ],
        )
        with TestClient(app, base_url="http://localhost") as client:
            first = client.post("/incr")
            assert client.post("/incr").json() == {"n": 2}
    warnings = [r for r in caplog.records if r.name == "bastion.security.sessions"]
    assert len(warnings) == 1
    assert "development=True" in warnings[0].getMessage()
    assert first.headers["set-cookie"].startswith("session=")
    assert "Secure" not in first.headers["set-cookie"]


@pytest.mark.parametrize(
    ("settings", "setting"),
    [
        ({"idle_timeout": 0}, "idle_timeout"),
        ({"touch_interval": 4000}, "touch_interval"),
        ({"idle_timeout": 90000}, "idle_timeout"),
        ({"max_bytes": 10}, "max_bytes"),
        ({"renew_every": -1}, "renew_every"),
        ({"cookie_name": "__Host-x", "domain": "example.com"}, "cookie"),
        ({"persistent_absolute_lifetime": 500 * 86400.0}, "persistent_absolute_lifetime"),
    ],
)
def test_bad_settings_name_the_setting(settings: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        SessionConfig(**settings)
    assert caught.value.setting == setting


def test_missing_middleware_is_a_clear_error() -> None:
    async def handler(request: Request) -> PlainTextResponse:
        get_session(request)
        return PlainTextResponse("unreachable")  # pragma: no cover

    app = Starlette(routes=[Route("/", handler)])
    with (
        TestClient(app, base_url=HTTPS) as client,
        pytest.raises(ConfigurationError, match="SessionMiddleware"),
    ):
        client.get("/")


# -- FastAPI ------------------------------------------------------------------------------------


def test_fastapi_request_session_and_async_dependency() -> None:
    store = CountingStore(MemoryStore())
    api = FastAPI()
    api.add_middleware(SessionMiddleware, store=store, production=False)

    @api.post("/visit")
    async def visit(request: FastAPIRequest) -> dict[str, int]:
        request.session["visits"] = request.session.get("visits", 0) + 1
        return {"visits": request.session["visits"]}

    async def current_session(request: FastAPIRequest) -> Session:
        return await load_session(request)

    @api.get("/peek")
    async def peek(session: Session = Depends(current_session)) -> dict[str, Any]:  # noqa: B008 (the FastAPI idiom)
        return {"visits": session.get("visits"), "new": session.is_new}

    @api.post("/login")
    async def sign_in(request: FastAPIRequest) -> dict[str, bool]:
        get_session(request).login(7)
        return {"ok": True}

    with TestClient(api, base_url=HTTPS) as client:
        assert client.post("/visit").json() == {"visits": 1}
        assert client.post("/visit").json() == {"visits": 2}
        store.reset()
        assert client.get("/peek").json() == {"visits": 2, "new": False}
        assert dict(store.calls) == {"get": 1}
        old = client.cookies.get(COOKIE)
        client.post("/login")
        assert client.cookies.get(COOKIE) != old
        assert client.get("/peek").json() == {"visits": 2, "new": False}
