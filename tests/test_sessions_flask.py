"""bastion.flask and bastion.wsgi.SessionMiddleware with real Flask / WSGI apps and real stores."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask, jsonify
from werkzeug.test import Client

from bastion.config import Bastion
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.environment import Environment
from bastion.core.keys import KeyRing
from bastion.errors import ConfigurationError
from bastion.flask import protect, session, session_engine
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.stores.sqlite import SQLiteStore
from bastion.testing.audit import RecordingAuditSink
from bastion.testing.sync_store import CountingStore
from bastion.wsgi import SessionMiddleware, get_session

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from flask.testing import FlaskClient

    from bastion.stores.base import Store
    from bastion.testing.redis_server import RedisServer

HTTPS = "https://localhost"
COOKIE = "__Host-session"


def make_flask(store: Store | str, sink: RecordingAuditSink | None = None, **options: Any) -> Flask:
    app = Flask(__name__)
    clock = FrozenClock()
    auditor = Auditor(IdentifierHasher(KeyRing.generate()), clock, sink or RecordingAuditSink())
    # Sessions alone, as the session extension installed them (no CSRF, no headers layer).
    config = Bastion(
        store=store,
        auditor=auditor,
        clock=clock,
        csrf=None,
        headers=None,
        environment=Environment.TEST,
        **options,
    )
    protect(app, config)

    @app.get("/")
    def untouched() -> str:
        return "ok"

    @app.get("/read")
    def read() -> Any:
        return jsonify(n=session.get("n"), user=session.get("user_seen"))

    @app.post("/incr")
    def incr() -> Any:
        session["n"] = session.get("n", 0) + 1
        return jsonify(n=session["n"])

    @app.post("/cart")
    def cart() -> Any:
        session.setdefault("cart", [])
        session["cart"].append(len(session["cart"]))
        session.modified = True
        return jsonify(session["cart"])

    @app.post("/login")
    def sign_in() -> Any:
        session.login("ada")
        return jsonify(ok=True)

    @app.get("/whoami")
    def whoami() -> Any:
        current = session._get_current_object()  # type: ignore[attr-defined]
        return jsonify(user=current.user_id)

    @app.post("/logout")
    def sign_out() -> Any:
        session.logout()
        return "bye"

    @app.post("/regenerate")
    def regen() -> Any:
        session.regenerate()
        return "ok"

    @app.post("/boom")
    def boom() -> Any:
        session["n"] = 500
        return "failed", 500

    @app.get("/devices")
    def devices() -> Any:
        return jsonify(len(session_engine().list_sessions_sync("ada")))

    return app


def cookie_of(response: Any) -> str | None:
    header = response.headers.get("Set-Cookie")
    if header is None:
        return None
    match = re.match(rf"{COOKIE}=([^;]*)", header)
    return None if match is None else match.group(1)


def call(client: FlaskClient, method: str, path: str, **kwargs: Any) -> Any:
    return client.open(path, method=method, base_url=HTTPS, **kwargs)


@pytest.fixture
def counted() -> CountingStore:
    return CountingStore(MemoryStore())


@pytest.fixture
def client(counted: CountingStore) -> FlaskClient:
    return make_flask(counted).test_client()


def test_flask_session_is_a_drop_in(client: FlaskClient) -> None:
    response = call(client, "POST", "/incr")
    assert response.get_json() == {"n": 1}
    assert response.headers["Cache-Control"] == "no-store"
    assert "Cookie" in response.headers["Vary"]
    header = response.headers["Set-Cookie"]
    assert header.split("; ")[1:] == ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"]
    assert call(client, "POST", "/incr").get_json() == {"n": 2}
    assert call(client, "GET", "/read").get_json() == {"n": 2, "user": None}


def test_flask_round_trips(client: FlaskClient, counted: CountingStore) -> None:
    call(client, "POST", "/incr")
    counted.reset()
    assert call(client, "GET", "/").text == "ok"
    assert counted.total == 0
    call(client, "GET", "/read")
    assert dict(counted.calls) == {"get": 1}
    counted.reset()
    call(client, "POST", "/incr")
    assert dict(counted.calls) == {"get": 1, "compare_and_set": 1}


def test_flask_nested_changes_and_modified_flag(client: FlaskClient) -> None:
    call(client, "POST", "/cart")
    assert call(client, "POST", "/cart").get_json() == [0, 1]


def test_flask_login_logout_regenerate(client: FlaskClient) -> None:
    before = cookie_of(call(client, "POST", "/incr"))
    after = cookie_of(call(client, "POST", "/login"))
    assert after not in {None, before}
    assert call(client, "GET", "/whoami").get_json() == {"user": "ada"}
    assert call(client, "GET", "/devices").get_json() == 1
    regenerated = cookie_of(call(client, "POST", "/regenerate"))
    assert regenerated not in {None, after}
    assert call(client, "GET", "/whoami").get_json() == {"user": "ada"}
    response = call(client, "POST", "/logout")
    assert response.headers["Set-Cookie"].startswith(f"{COOKIE}=; Max-Age=0")
    assert response.headers["Clear-Site-Data"] == '"cookies"'
    assert call(client, "GET", "/whoami").get_json() == {"user": None}
    assert call(client, "GET", "/devices").get_json() == 0


def test_flask_no_save_after_5xx(client: FlaskClient, counted: CountingStore) -> None:
    response = call(client, "POST", "/boom")
    assert response.status_code == 500
    assert "Set-Cookie" not in response.headers
    assert counted.total == 0


def test_flask_on_sqlite_file(tmp_path: Path) -> None:
    app = make_flask(f"sqlite:///{tmp_path / 'flask.db'}")
    client = app.test_client()
    call(client, "POST", "/incr")
    assert call(client, "POST", "/incr").get_json() == {"n": 2}


@pytest.mark.redis
def test_flask_on_redis(redis_url: str, redis_prefix: str) -> None:
    store = RedisStore.from_url(redis_url, prefix=redis_prefix)
    client = make_flask(store).test_client()
    call(client, "POST", "/incr")
    assert call(client, "POST", "/incr").get_json() == {"n": 2}
    assert call(client, "GET", "/read").get_json() == {"n": 2, "user": None}
    store.sync.close()


@pytest.mark.redis
def test_flask_store_outage_is_a_503(start_redis_server: Callable[..., RedisServer]) -> None:
    server = start_redis_server()
    store = RedisStore.from_url(server.url, socket_timeout=1.0, connect_timeout=1.0)
    sink = RecordingAuditSink()
    client = make_flask(store, sink).test_client()
    call(client, "POST", "/incr")
    server.stop()
    response = call(client, "GET", "/read", headers={"Accept": "text/html"})
    assert response.status_code == 503
    assert response.text.startswith("Service unavailable: the session store")
    assert str(sink.events[-1].name) == "session_store_unavailable"
    api = call(client, "GET", "/read", headers={"Accept": "application/json"})
    assert api.status_code == 503
    assert api.get_json()["error"] == "session_store_unavailable"
    assert int(api.headers["Content-Length"]) == len(api.get_data())
    server.start()
    assert call(client, "GET", "/read").get_json() == {"n": 1, "user": None}
    store.sync.close()


# -- plain WSGI ---------------------------------------------------------------------------------


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    session = get_session(environ)
    if environ["PATH_INFO"] == "/incr":
        session["n"] = session.get("n", 0) + 1
        body = str(session["n"]).encode()
    else:
        body = b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Vary", "Accept")])
    return [body]


def test_wsgi_middleware_on_sqlite(tmp_path: Path) -> None:
    store = CountingStore(SQLiteStore(tmp_path / "wsgi.db"))
    app = SessionMiddleware(wsgi_app, store=store, production=False)
    client = Client(app)
    first = client.post("/incr", base_url=HTTPS)
    assert first.text == "1"
    assert first.headers["Vary"] == "Accept, Cookie"
    assert client.post("/incr", base_url=HTTPS).text == "2"
    store.reset()
    assert client.get("/", base_url=HTTPS).text == "ok"
    assert store.total == 0
    assert "Set-Cookie" not in client.get("/", base_url=HTTPS).headers
    store.sync.close()


def test_wsgi_middleware_refuses_a_store_without_a_sync_side() -> None:
    class AsyncOnly:
        """A real store's async side alone (no ``sync``), as a third-party store may be."""

        def __init__(self) -> None:
            self._inner = MemoryStore()

        async def get(self, key: str) -> bytes | None:
            return await self._inner.get(key)

        async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
            await self._inner.set(key, value, ttl)

        async def delete(self, key: str) -> bool:
            return await self._inner.delete(key)

        async def compare_and_set(
            self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
        ) -> bool:
            return await self._inner.compare_and_set(key, expected, value, ttl)

        async def aclose(self) -> None:
            await self._inner.aclose()

    with pytest.raises(ConfigurationError, match="synchronous side") as caught:
        SessionMiddleware(wsgi_app, store=AsyncOnly(), production=False)
    assert caught.value.setting == "store"
