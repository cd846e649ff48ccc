"""The "password ok, second factor pending" session state in a real Starlette app.

The pending state grants nothing (no user, nothing in the user's registry), lives under a fresh
session ID, expires, runs out after a bounded number of wrong codes, and turns into a login
(with an ID rotation) only through complete_second_factor.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import pytest
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route

from bastion.asgi import SessionMiddleware
from bastion.asgi.sessions import get_session, list_sessions
from bastion.core.clock import FrozenClock
from bastion.core.sessions import record_key, session_handle
from bastion.core.totp import DEFAULT_PENDING_ATTEMPTS, DEFAULT_PENDING_TTL, PendingSecondFactor
from bastion.engine.second_factor import (
    begin_second_factor,
    cancel_second_factor,
    complete_second_factor,
    fail_second_factor,
    second_factor_status,
)
from bastion.errors import ConfigurationError
from bastion.stores.memory import MemoryStore

with warnings.catch_warnings():
    # Starlette >= 1.x announces a move of its test client to httpx2 at import time.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

if TYPE_CHECKING:
    from collections.abc import Iterator

    from starlette.requests import Request

HTTPS = "https://testserver"
COOKIE = "__Host-session"
GOOD_CODE = "123456"  # the app's own code check stands in for a TOTP verifier


async def password(request: Request) -> JSONResponse:
    state = begin_second_factor(get_session(request), request.query_params["user"])
    return JSONResponse({"pending_for": state.user_id})


async def code(request: Request) -> JSONResponse:
    session = get_session(request)
    status, state = second_factor_status(session)
    if status != "active" or state is None:
        return JSONResponse({"status": str(status)}, status_code=409)
    if request.query_params["code"] == GOOD_CODE:
        return JSONResponse({"user": complete_second_factor(session)})
    return JSONResponse({"status": str(fail_second_factor(session))}, status_code=401)


async def whoami(request: Request) -> JSONResponse:
    session = get_session(request)
    status, _state = second_factor_status(session)
    return JSONResponse({"user": session.user_id, "status": str(status)})


async def direct_login(request: Request) -> JSONResponse:
    get_session(request).login(request.query_params["user"])
    return JSONResponse({"ok": True})


async def cancel(request: Request) -> JSONResponse:
    cancel_second_factor(get_session(request))
    return JSONResponse({"ok": True})


async def devices(request: Request) -> JSONResponse:
    found = await list_sessions(request, request.query_params["user"])
    return JSONResponse({"count": len(found)})


class App:
    def __init__(self) -> None:
        self.clock = FrozenClock()
        self.store = MemoryStore(clock=self.clock)
        self.app = Starlette(
            routes=[
                Route("/password", password, methods=["POST"]),
                Route("/code", code, methods=["POST"]),
                Route("/whoami", whoami),
                Route("/login", direct_login, methods=["POST"]),
                Route("/cancel", cancel, methods=["POST"]),
                Route("/devices", devices),
            ],
            middleware=[
                Middleware(SessionMiddleware, store=self.store, clock=self.clock, production=False)
            ],
        )

    def stored(self, session_id: str) -> bytes | None:
        return self.store.sync.get(record_key(session_handle(session_id)))


@pytest.fixture
def world() -> Iterator[tuple[App, TestClient]]:
    made = App()
    with TestClient(made.app, base_url=HTTPS) as client:
        yield made, client


def test_pending_grants_nothing_and_lives_under_a_fresh_id(world: tuple[App, TestClient]) -> None:
    app, client = world
    client.get("/whoami")  # an anonymous session exists before the password step
    client.cookies.clear()
    client.post("/password", params={"user": "early"})
    before = client.cookies[COOKIE]
    assert client.post("/password", params={"user": "alice"}).json() == {"pending_for": "alice"}
    pending_id = client.cookies[COOKIE]
    assert pending_id != before  # a new ID for the pending state
    assert b'"t":null' in (app.stored(before) or b"")  # the earlier ID is dead
    assert client.get("/whoami").json() == {"user": None, "status": "active"}
    assert client.get("/devices", params={"user": "alice"}).json() == {"count": 0}
    raw = app.stored(pending_id)
    assert raw is not None
    assert b'"u":null' in raw
    assert b'"a":null' in raw


def test_the_right_code_logs_in_and_rotates_the_id(world: tuple[App, TestClient]) -> None:
    app, client = world
    client.post("/password", params={"user": "alice"})
    pending_id = client.cookies[COOKIE]
    assert client.post("/code", params={"code": GOOD_CODE}).json() == {"user": "alice"}
    logged_in = client.cookies[COOKIE]
    assert logged_in != pending_id
    assert client.get("/whoami").json() == {"user": "alice", "status": "none"}
    assert client.get("/devices", params={"user": "alice"}).json() == {"count": 1}
    assert b'"t":null' in (app.stored(pending_id) or b"")  # the pending ID is dead
    with TestClient(app.app, base_url=HTTPS, cookies={COOKIE: pending_id}) as replay:
        assert replay.get("/whoami").json() == {"user": None, "status": "none"}


def test_wrong_codes_run_out_and_then_even_the_right_code_is_refused(
    world: tuple[App, TestClient],
) -> None:
    _app, client = world
    client.post("/password", params={"user": "alice"})
    statuses = [
        client.post("/code", params={"code": "000000"}).json()["status"]
        for _ in range(DEFAULT_PENDING_ATTEMPTS)
    ]
    assert statuses == ["active"] * (DEFAULT_PENDING_ATTEMPTS - 1) + ["exhausted"]
    refused = client.post("/code", params={"code": GOOD_CODE})
    assert refused.status_code == 409
    assert refused.json() == {"status": "exhausted"}
    assert client.get("/whoami").json() == {"user": None, "status": "exhausted"}


def test_the_pending_state_expires(world: tuple[App, TestClient]) -> None:
    app, client = world
    client.post("/password", params={"user": "alice"})
    app.clock.advance(DEFAULT_PENDING_TTL)
    refused = client.post("/code", params={"code": GOOD_CODE})
    assert refused.status_code == 409
    assert refused.json() == {"status": "expired"}
    assert client.get("/whoami").json()["user"] is None


def test_a_new_password_step_ends_an_existing_login(world: tuple[App, TestClient]) -> None:
    app, client = world
    client.post("/login", params={"user": "mallory"})
    mallory_id = client.cookies[COOKIE]
    assert client.get("/devices", params={"user": "mallory"}).json() == {"count": 1}
    client.post("/password", params={"user": "alice"})
    assert client.cookies[COOKIE] != mallory_id
    assert client.get("/whoami").json() == {"user": None, "status": "active"}
    assert client.get("/devices", params={"user": "mallory"}).json() == {"count": 0}
    assert b'"t":null' in (app.stored(mallory_id) or b"")


def test_cancel_drops_the_pending_state(world: tuple[App, TestClient]) -> None:
    _app, client = world
    client.post("/password", params={"user": "alice"})
    client.post("/cancel")
    assert client.get("/whoami").json() == {"user": None, "status": "none"}
    assert client.post("/code", params={"code": GOOD_CODE}).status_code == 409


def test_the_session_holds_only_the_pending_record(world: tuple[App, TestClient]) -> None:
    app, client = world
    client.post("/password", params={"user": "alice"})
    raw = app.stored(client.cookies[COOKIE])
    assert raw is not None
    assert raw.endswith(
        b',"d":{"'
        + PendingSecondFactor.SESSION_KEY.encode()
        + b'":{"v":1,"user_id":"alice","started_at":1700000000.0,"failed_attempts":0}}}'
    )


@pytest.mark.parametrize("bad", ["", True, None, 1.5])
def test_begin_refuses_a_missing_user_id(bad: object) -> None:
    engine = SessionMiddleware(password, store=MemoryStore(), production=False).engine
    session = engine.open(None)
    with pytest.raises(ConfigurationError, match="user_id"):
        begin_second_factor(session, bad)  # type: ignore[arg-type]
    assert len(session) == 0
