"""Anonymous traffic writes nothing to the store, and never evicts security state.

A visitor shown a CSRF token gets a pre-session cookie, not a session record; the token still
validates on the POST that creates the session (login). On the memory store, only session
records are evictable: a flood of anonymous sessions never pushes out an account or a
throttle counter, and a store full of security state refuses with ``StoreFull``.
Real Starlette and Flask apps over real memory and SQLite stores.
"""

from __future__ import annotations

import re
import warnings
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask, jsonify
from flask import session as flask_session
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from bastion.asgi.csrf import CSRFMiddleware, csrf_token
from bastion.asgi.sessions import SessionMiddleware, get_session
from bastion.config import Bastion
from bastion.core.environment import Environment
from bastion.errors import StoreFull
from bastion.flask import csrf_token as flask_csrf_token
from bastion.flask import protect
from bastion.stores.memory import MemoryStore
from bastion.stores.sqlite import SQLiteStore
from bastion.testing.sync_store import CountingStore

with warnings.catch_warnings():
    # Starlette >= 1.x announces a move of its test client from httpx to httpx2 at import time;
    # the dev environment pins httpx. Only that import-time notice is silenced.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

if TYPE_CHECKING:
    from pathlib import Path

    from starlette.requests import Request

    from bastion.stores.base import Store

HTTPS = "https://localhost"
COOKIE = "__Host-session"
WRITES = ("set", "compare_and_set", "delete")


def writes(store: CountingStore) -> int:
    return sum(store.calls[name] for name in WRITES)


async def page(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"<form><input name=csrf_token value={csrf_token(request)}></form>")


async def do_login(request: Request) -> JSONResponse:
    get_session(request).login("alice")
    return JSONResponse({"user": "alice"})


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({"user": request.session.user_id})  # type: ignore[attr-defined]


async def note(request: Request) -> JSONResponse:
    request.session["note"] = "kept"
    return JSONResponse({"ok": True})


def asgi_app(store: Store) -> Starlette:
    return Starlette(
        routes=[
            Route("/login", page),
            Route("/login", do_login, methods=["POST"]),
            Route("/whoami", whoami),
            Route("/note", note, methods=["POST"]),
        ],
        middleware=[
            Middleware(SessionMiddleware, store=store, production=False),
            Middleware(CSRFMiddleware, production=False),
        ],
    )


@pytest.fixture(params=["memory", "sqlite"])
def counted(request: pytest.FixtureRequest, tmp_path: Path) -> CountingStore:
    if request.param == "memory":
        return CountingStore(MemoryStore())
    return CountingStore(SQLiteStore(tmp_path / "sessions.db"))


def token_of(response: Any) -> str:
    match = re.search(r"value=([A-Za-z0-9_-]+)", response.text)
    assert match is not None
    return match.group(1)


def test_anonymous_page_views_make_no_store_writes(counted: CountingStore) -> None:
    with TestClient(asgi_app(counted), base_url=HTTPS) as client:
        for _ in range(25):
            client.cookies.clear()
            response = client.get("/login")
            assert response.status_code == 200
            assert response.headers["set-cookie"].startswith(f"{COOKIE}=p.")
        for _ in range(5):  # the same visitor again, with its pre-session cookie
            assert client.get("/login").status_code == 200
    assert writes(counted) == 0
    assert counted.total == 0  # not even a read: the cookie names no stored session


def test_the_anonymous_token_logs_in_and_is_bound_to_its_cookie(counted: CountingStore) -> None:
    with TestClient(asgi_app(counted), base_url=HTTPS) as client:
        token = token_of(client.get("/login"))
        visitor = client.cookies[COOKIE]
        # No Origin, no Sec-Fetch-Site: the token decides.
        client.cookies.clear()
        refused = client.post("/login", data={"csrf_token": token})
        assert refused.status_code == 403
        assert "no_session" in refused.text
        client.cookies.clear()
        other_visitor = {"cookie": f"{COOKIE}=p.{'A' * 43}"}  # a cookie this token is not for
        wrong = client.post("/login", data={"csrf_token": token}, headers=other_visitor)
        assert wrong.status_code == 403
        assert "token_incorrect" in wrong.text
        client.cookies.clear()
        own = {"cookie": f"{COOKIE}={visitor}"}
        ok = client.post("/login", data={"csrf_token": token}, headers=own)
        assert ok.status_code == 200
        session_cookie = re.match(rf"{COOKIE}=([^;]*)", ok.headers["set-cookie"])
        assert session_cookie is not None
        assert not session_cookie.group(1).startswith("p.")
        client.cookies.clear()
        me = client.get("/whoami", headers={"cookie": f"{COOKIE}={session_cookie.group(1)}"})
        assert me.json() == {"user": "alice"}


def test_tokens_from_the_pre_session_page_stay_good_after_the_first_write() -> None:
    store = MemoryStore()
    with TestClient(asgi_app(store), base_url=HTTPS) as client:
        first = token_of(client.get("/login"))
        second = token_of(client.get("/login"))
        assert client.post("/note", data={"csrf_token": first}).status_code == 200
        assert not client.cookies[COOKIE].startswith("p.")  # the session now exists
        assert client.post("/note", data={"csrf_token": second}).status_code == 200


def test_flask_anonymous_page_views_make_no_store_writes(counted: CountingStore) -> None:
    app = Flask(__name__)
    protect(app, Bastion(store=counted, headers=None, environment=Environment.TEST))

    @app.get("/login")
    def flask_page() -> Any:
        return jsonify(token=flask_csrf_token(), user=flask_session.get("user"))

    client = app.test_client()
    for _ in range(25):
        client.delete_cookie(COOKIE, domain="localhost")
        response = client.get("/login", base_url=HTTPS)
        assert response.status_code == 200
    assert writes(counted) == 0


def test_a_flood_of_anonymous_sessions_never_evicts_security_state() -> None:
    store = MemoryStore(max_entries=50)
    sync = store.sync
    sync.set("demo:account:alice", b"argon2-hash")
    sync.set("throttle:{alice}", b"4")
    sync.set("totp-step:{alice}", b"1234")
    with TestClient(asgi_app(store), base_url=HTTPS) as client:
        for _ in range(300):
            client.cookies.clear()
            token = token_of(client.get("/login"))
            assert client.post("/note", data={"csrf_token": token}).status_code == 200
    assert sync.get("demo:account:alice") == b"argon2-hash"
    assert sync.get("throttle:{alice}") == b"4"
    assert sync.get("totp-step:{alice}") == b"1234"


def test_a_memory_store_full_of_security_state_refuses_instead_of_evicting() -> None:
    store = MemoryStore(max_entries=3)
    sync = store.sync
    sync.set("session:a", b"s")
    sync.set("account:alice", b"1")
    sync.set("account:bob", b"2")
    sync.set("account:carol", b"3")  # evicts the session, the only evictable entry
    assert sync.get("session:a") is None
    with pytest.raises(StoreFull):
        sync.set("account:dave", b"4")
    with pytest.raises(StoreFull):
        sync.set("session:b", b"s")
    assert [sync.get(f"account:{n}") for n in ("alice", "bob", "carol")] == [b"1", b"2", b"3"]
    sync.set("account:alice", b"rewritten")  # an existing key is no new entry
    assert sync.get("account:alice") == b"rewritten"
