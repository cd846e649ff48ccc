"""bastion.flask.protect's CSRF (bastion.flask.csrf.CSRF) and bastion.wsgi.CSRFMiddleware with
real Flask / WSGI apps and stores.

The attack cases of the ASGI suite, on the synchronous twin, with the exact status and reason.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask, jsonify, render_template_string, request, session
from werkzeug.test import Client

from bastion.config import Bastion
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.csrf import CSRFConfig, TokenSource
from bastion.core.environment import Environment
from bastion.core.keys import KeyRing
from bastion.core.request_limits import RequestLimits
from bastion.errors import BadToken, ConfigurationError
from bastion.flask import protect
from bastion.flask import session as bastion_session
from bastion.flask.csrf import CSRF
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.stores.sqlite import SQLiteStore
from bastion.testing.audit import RecordingAuditSink
from bastion.testing.csrf import browser_headers, fetch_token, find_token, token_headers
from bastion.wsgi import CSRFMiddleware, SessionMiddleware
from bastion.wsgi.csrf import csrf_input, csrf_token

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from flask.testing import FlaskClient

    from bastion.stores.base import Store

HTTPS = "https://localhost"
JSON = {"Accept": "application/json"}
PAGE = "<form method=post>{{ csrf_input() }}</form><meta name=x content='{{ csrf_token() }}'>"


class ListSink(RecordingAuditSink):
    def reasons(self) -> list[str]:
        return [str(e.details["reason"]) for e in self.events if e.name == "malicious_csrf"]


def make_flask(store: Store, sink: ListSink, **csrf: Any) -> Flask:
    app = Flask(__name__)
    clock = FrozenClock()
    auditor = Auditor(IdentifierHasher(KeyRing.generate()), clock, sink)
    config = Bastion(
        store=store,
        csrf=CSRFConfig(**csrf),
        headers=None,
        # Above the 10 MiB upload below: these tests meet CSRF's own 1 MiB form cap, not the
        # request limits' default one, which refuses such a body from its Content-Length.
        limits=RequestLimits(max_body_bytes=16 * 1024 * 1024),
        auditor=auditor,
        clock=clock,
        environment=Environment.TEST,
    )
    protect(app, config)

    @app.get("/form")
    def form() -> str:
        return render_template_string(PAGE)

    @app.get("/state")
    def state() -> Any:
        return jsonify(n=session.get("n", 0))

    @app.route("/item", methods=["GET", "HEAD", "OPTIONS", "POST"])
    def item() -> Any:
        if request.method == "POST":
            session["n"] = session.get("n", 0) + 1
        return jsonify(method=request.method)

    @app.post("/submit")
    def submit() -> Any:
        session["n"] = session.get("n", 0) + 1
        files = {k: len(v.read()) for k, v in request.files.items()}
        return jsonify(n=session["n"], fields=request.form.to_dict(), files=files)

    @app.post("/raw")
    def raw() -> Any:
        return jsonify(body=request.get_data(as_text=True))

    @app.post("/login")
    def sign_in() -> Any:
        bastion_session.login("ada")
        return jsonify(ok=True)

    return app


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return SQLiteStore(tmp_path / "flask.db")
    return MemoryStore()


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


@pytest.fixture
def client(store: Store, sink: ListSink) -> FlaskClient:
    return make_flask(store, sink).test_client()


def refused(response: Any, reason: str, status: int = 403) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.get_json()["reason"] == reason
    assert response.headers["Cache-Control"] == "no-store"


def post(client: FlaskClient, path: str = "/submit", **kwargs: Any) -> Any:
    headers = {**JSON, **kwargs.pop("headers", {})}
    return client.post(path, base_url=HTTPS, headers=headers, **kwargs)


def get_token(client: FlaskClient) -> str:
    return find_token(client.get("/form", base_url=HTTPS).get_data(as_text=True))


def state(client: FlaskClient) -> int:
    n: int = client.get("/state", base_url=HTTPS).get_json()["n"]
    return n


def test_same_origin_passes_without_token(client: FlaskClient) -> None:
    response = post(client, data={"a": "1"}, headers=browser_headers(HTTPS))
    assert response.status_code == 200
    assert response.get_json()["fields"] == {"a": "1"}


def test_cross_site_form_post_is_refused(client: FlaskClient, sink: ListSink) -> None:
    before = state(client)
    headers = {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}
    refused(post(client, data={"amount": "1000"}, headers=headers), "cross_site")
    assert state(client) == before
    assert sink.reasons() == ["cross_site"]


def test_same_site_subdomain_post_is_refused(client: FlaskClient) -> None:
    headers = {"Sec-Fetch-Site": "same-site", "Origin": "https://evil.localhost"}
    refused(post(client, data={"a": "1"}, headers=headers), "same_site")


def test_origin_of_another_port_is_refused(client: FlaskClient) -> None:
    refused(post(client, headers={"Origin": "https://localhost:8443"}), "origin_mismatch")


def test_missing_origin_and_referer_without_token_is_refused(client: FlaskClient) -> None:
    refused(post(client, data={"a": "1"}), "token_missing")


def test_token_of_another_session_is_refused(store: Store, sink: ListSink) -> None:
    app = make_flask(store, sink)
    attacker, victim = app.test_client(), app.test_client()
    attacker_token = get_token(attacker)
    get_token(victim)
    refused(post(victim, data={"csrf_token": attacker_token}), "token_incorrect")
    refused(post(app.test_client(), data={"csrf_token": attacker_token}), "no_session")


def test_token_in_query_string_only_is_refused(client: FlaskClient) -> None:
    token = get_token(client)
    refused(post(client, f"/submit?csrf_token={token}", data={"a": "1"}), "token_in_query")


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/item", {"X-HTTP-Method-Override": "DELETE"}),
        ("/item?_method=POST", {}),
    ],
)
def test_method_override_tricks_are_refused(
    client: FlaskClient, path: str, headers: dict[str, str]
) -> None:
    before = state(client)
    refused(client.get(path, base_url=HTTPS, headers={**headers, **JSON}), "method_override")
    assert state(client) == before


def test_text_plain_json_post_is_refused(client: FlaskClient) -> None:
    token = get_token(client)
    body = json.dumps({"csrf_token": token, "amount": 1000})
    refused(post(client, "/raw", data=body, content_type="text/plain"), "token_missing")


def test_non_ascii_token_is_refused(client: FlaskClient) -> None:
    get_token(client)
    refused(post(client, data={"csrf_token": "tökén"}), "token_malformed")
    refused(post(client, "/raw", headers={"X-CSRF-Token": "tökén"}), "token_malformed")


def test_multipart_token_after_a_10_mb_file_is_413(client: FlaskClient, sink: ListSink) -> None:
    get_token(client)
    boundary = "bNd"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n\r\n'
    ).encode()
    tail = (
        f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\nx\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    size = 10 * 1024 * 1024
    stream = _CountingBody(head, size, tail)
    response = post(
        client,
        content_type=f"multipart/form-data; boundary={boundary}",
        environ_overrides={
            "wsgi.input": stream,
            "CONTENT_LENGTH": str(len(head) + size + len(tail)),
        },
    )
    refused(response, "body_too_large", 413)
    assert stream.read_bytes < 2 * 1024 * 1024  # stopped near the 1 MiB cap
    assert sink.reasons() == ["body_too_large"]


class _CountingBody(io.RawIOBase):
    """A 10 MiB body produced on demand, counting what was read (no 10 MiB buffer)."""

    def __init__(self, head: bytes, size: int, tail: bytes) -> None:
        self._parts = [head, tail]
        self._filler = size
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._parts[0]:
            data = self._parts[0][: len(buffer)]
            self._parts[0] = self._parts[0][len(data) :]
        elif self._filler:
            data = b"x" * min(len(buffer), self._filler)
            self._filler -= len(data)
        else:
            data = self._parts[1][: len(buffer)]
            self._parts[1] = self._parts[1][len(data) :]
        buffer[: len(data)] = data
        self.read_bytes += len(data)
        return len(data)


def test_multipart_token_is_found_and_body_replayed(client: FlaskClient) -> None:
    token = get_token(client)
    data = {"csrf_token": token, "a": "1", "doc": (io.BytesIO(b"file data"), "d.txt")}
    response = post(client, data=data, content_type="multipart/form-data")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["fields"] == {"csrf_token": token, "a": "1"}
    assert response.get_json()["files"] == {"doc": 9}


def test_urlencoded_body_is_replayed_unchanged(client: FlaskClient) -> None:
    token = get_token(client)
    body = f"a=1&csrf_token={token}&b=%C3%A9"
    response = post(client, "/raw", data=body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    assert response.get_json()["body"] == body


def test_broken_multipart_is_400(client: FlaskClient) -> None:
    get_token(client)
    response = post(client, data=b"junk", content_type="multipart/form-data; boundary=zz")
    refused(response, "body_malformed", 400)


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_safe_methods_pass_and_change_nothing(client: FlaskClient, method: str) -> None:
    before = state(client)
    response = client.open(
        "/item", method=method, base_url=HTTPS, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
    assert state(client) == before


def test_login_rotates_the_token(client: FlaskClient) -> None:
    old = get_token(client)
    assert post(client, "/login", headers={"X-CSRF-Token": old}).status_code == 200
    refused(post(client, "/raw", headers={"X-CSRF-Token": old}), "token_incorrect")
    assert post(client, "/raw", headers=token_headers(client, HTTPS + "/form")).status_code == 200


def test_template_globals_are_markup_safe(client: FlaskClient) -> None:
    page = client.get("/form", base_url=HTTPS).get_data(as_text=True)
    assert '<input type="hidden" name="csrf_token" value="' in page
    token = fetch_token(client, HTTPS + "/form")
    assert post(client, data={"csrf_token": token}).status_code == 200


def test_csrf_needs_bastion_sessions_first() -> None:
    app = Flask(__name__)
    with pytest.raises(ConfigurationError) as info:
        CSRF(app, production=False)
    assert info.value.setting == "token_source"


def test_find_token_says_what_to_render() -> None:
    with pytest.raises(BadToken, match="csrf_input"):
        find_token("<p>no form here</p>")
    assert find_token('{"csrf_token": "abc"}') == "abc"
    assert find_token('<meta name="csrf-token" content="t0k">') == "t0k"


def test_redis_store_run(redis_url: str, redis_prefix: str) -> None:
    store = RedisStore.from_url(redis_url, prefix=redis_prefix)
    try:
        client = make_flask(store, ListSink()).test_client()
        token = get_token(client)
        assert post(client, data={"csrf_token": token}).status_code == 200
        assert post(client, "/login", headers={"X-CSRF-Token": token}).status_code == 200
        refused(post(client, data={"csrf_token": token}), "token_incorrect")
    finally:
        store.sync.close()


# -- plain WSGI -----------------------------------------------------------------------------------


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/token":
        body = json.dumps({"token": csrf_token(environ), "input": csrf_input(environ)})
    else:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.dumps({"got": environ["wsgi.input"].read(length).decode("latin-1")})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]


def test_plain_wsgi_with_session_middleware() -> None:
    store = MemoryStore()
    app = SessionMiddleware(
        CSRFMiddleware(wsgi_app, production=False), store=store, production=False
    )
    client = Client(app)
    token = client.get("/token", base_url=HTTPS).get_json()["token"]
    response = client.post(
        "/submit",
        base_url=HTTPS,
        data=f"csrf_token={token}&x=1",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    assert response.get_json() == {"got": f"csrf_token={token}&x=1"}
    response = client.post(
        "/submit",
        base_url=HTTPS,
        data="x=1",
        content_type="application/x-www-form-urlencoded",
        headers=JSON,
    )
    refused(response, "token_missing")


def test_plain_wsgi_double_submit() -> None:
    def identity(environ: dict[str, Any]) -> str | None:
        return environ.get("HTTP_X_USER")

    app = CSRFMiddleware(
        wsgi_app,
        config=CSRFConfig(token_source=TokenSource.DOUBLE_SUBMIT),
        keyring=KeyRing.generate(),
        identity=identity,
        production=False,
    )
    client = Client(app)
    response = client.get("/token", base_url=HTTPS, headers={"X-User": "ada"})
    assert response.headers["Set-Cookie"].startswith("__Host-csrf=")
    token = response.get_json()["token"]
    ok = client.post("/x", base_url=HTTPS, headers={"X-CSRF-Token": token, "X-User": "ada"})
    assert ok.status_code == 200
    refused(
        client.post("/x", base_url=HTTPS, headers={"X-CSRF-Token": token, "X-User": "eve", **JSON}),
        "no_session",
    )


def test_plain_wsgi_reads_no_identity_for_a_request_that_needs_no_token() -> None:
    asked: list[str] = []

    def identity(environ: dict[str, Any]) -> str | None:
        asked.append(environ["PATH_INFO"])
        return "ada"

    app = CSRFMiddleware(
        wsgi_app,
        config=CSRFConfig(token_source=TokenSource.DOUBLE_SUBMIT),
        keyring=KeyRing.generate(),
        identity=identity,
        production=False,
    )
    client = Client(app)
    token = client.get("/token", base_url=HTTPS).get_json()["token"]
    assert asked == ["/token"]
    assert client.get("/page", base_url=HTTPS).status_code == 200
    same_origin = {"Sec-Fetch-Site": "same-origin"}
    assert client.post("/x", base_url=HTTPS, headers=same_origin).status_code == 200
    assert asked == ["/token"]
    assert client.post("/x", base_url=HTTPS, headers={"X-CSRF-Token": token}).status_code == 200
    assert asked == ["/token", "/x"]


def test_plain_wsgi_session_source_without_sessions_says_how_to_fix() -> None:
    client = Client(CSRFMiddleware(wsgi_app, production=False))
    with pytest.raises(ConfigurationError, match="SessionMiddleware"):
        client.post("/x", base_url=HTTPS, headers={"X-CSRF-Token": "t"})


def test_flask_double_submit_without_sessions() -> None:
    app = Flask(__name__)
    CSRF(
        app,
        config=CSRFConfig(token_source=TokenSource.DOUBLE_SUBMIT),
        keyring=KeyRing.generate(),
        production=False,
    )

    @app.get("/form")
    def form() -> str:
        return render_template_string(PAGE)

    @app.post("/act")
    def act() -> str:
        return "done"

    client = app.test_client()
    page = client.get("/form", base_url=HTTPS)
    assert page.headers["Set-Cookie"].startswith("__Host-csrf=")
    token = find_token(page.get_data(as_text=True))
    assert post(client, "/act", data={"csrf_token": token}).get_data(as_text=True) == "done"
    refused(post(app.test_client(), "/act", data={"csrf_token": token}), "no_session")


def test_wsgi_log_only_audits_and_passes(caplog: pytest.LogCaptureFixture) -> None:
    sink = ListSink()
    auditor = Auditor(IdentifierHasher(KeyRing.generate()), FrozenClock(), sink)
    with caplog.at_level("WARNING", logger="bastion.security.csrf"):
        app = SessionMiddleware(
            CSRFMiddleware(
                wsgi_app, config=CSRFConfig(log_only=True), auditor=auditor, production=False
            ),
            store=MemoryStore(),
            production=False,
        )
        response = Client(app).post(
            "/x",
            base_url=HTTPS,
            data="a=1",
            content_type="application/x-www-form-urlencoded",
            headers={"Origin": "https://evil.example"},
        )
    assert response.status_code == 200
    assert response.get_json() == {"got": "a=1"}
    assert sink.reasons() == ["origin_mismatch"]
    assert "log_only=True" in caplog.text
    assert "would refuse POST /x: origin_mismatch" in caplog.text


def test_wsgi_chunked_body_without_content_length() -> None:
    store = MemoryStore()
    app = SessionMiddleware(
        CSRFMiddleware(wsgi_app, production=False), store=store, production=False
    )
    client = Client(app)
    token = client.get("/token", base_url=HTTPS).get_json()["token"]
    body = f"csrf_token={token}&x=1".encode()
    response = client.post(
        "/x",
        base_url=HTTPS,
        content_type="application/x-www-form-urlencoded",
        headers=JSON,
        environ_overrides={
            "wsgi.input": io.BytesIO(body),
            "wsgi.input_terminated": True,
            "CONTENT_LENGTH": "",
        },
    )
    assert response.status_code == 200, response.get_data(as_text=True)
