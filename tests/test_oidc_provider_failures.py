"""A provider that is down or answers garbage, and an unknown provider name: clear 503, 502 and
404 refusals (never a 500) in the Starlette routes and the Flask blueprint alike.

Each case runs through both adapters against the real local provider, the failure made by the
tampering proxy in front of it (tests/oidc_proxy.py): at the login (discovery), at the callback
(the token endpoint, the keys). Each asserts the status, the refusal's ``error``, the audited
``authn_login_fail`` reason and that nobody was logged in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.routing import Mount, Route

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from bastion.asgi import protect
from bastion.flask import protect as flask_protect
from bastion.flask import session as flask_session
from bastion.flask.oidc import oidc_blueprint
from bastion.oidc import OIDC
from bastion.oidc.starlette import oidc_router
from bastion.stores.redis import RedisStore
from oidc_adapter_support import ProviderBrowser, RegisteredOnce
from oidc_support import ALICE, oidc_provider_fixture  # noqa: F401 (fixture)
from test_oidc_http import Harness, me

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from bastion.testing.redis_server import RedisServer
    from oidc_support import OIDCProviderServer

JSON = {"accept": "application/json"}
HTML = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
FRAMEWORKS = ("starlette", "flask")
PROVIDER_BROWSER = ProviderBrowser()


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


class Browser:
    """One browser on the app of ``framework`` (Starlette's or Flask's test client)."""

    def __init__(self, get: Callable[[str, dict[str, str]], Answer], base: str) -> None:
        self._get = get
        self.base = base

    def get(self, path: str, headers: dict[str, str] = JSON) -> Answer:
        return self._get(path, headers)

    def start(self) -> str:
        answer = self.get("/auth/local/login")
        assert answer.status == 302, answer.text
        return answer.headers["location"]

    def sign_in(self) -> str:
        return PROVIDER_BROWSER.sign_in(self.start(), ALICE).removeprefix(self.base)

    def user(self) -> object:
        return self.get("/me").json()["user"]


@contextlib.contextmanager
def _starlette(h: Harness) -> Iterator[Browser]:
    app = Starlette(
        routes=[Route("/me", me), Mount("/auth", oidc_router(h.oidc, on_identity=h.hook))]
    )
    with TestClient(protect(app, h.config), base_url="https://testserver") as client:

        def get(path: str, headers: dict[str, str]) -> Answer:
            response = client.get(path, headers=headers, follow_redirects=False)
            return Answer(response.status_code, dict(response.headers), response.text)

        yield Browser(get, "https://testserver")


@contextlib.contextmanager
def _flask(h: Harness) -> Iterator[Browser]:
    app = Flask(__name__)
    flask_protect(app, h.config)
    app.register_blueprint(oidc_blueprint(h.oidc, on_identity=h.hook))

    @app.get("/me")
    def flask_me() -> dict[str, Any]:
        return {"user": flask_session.user_id}

    client = app.test_client()

    def get(path: str, headers: dict[str, str]) -> Answer:
        response = client.get(path, headers=headers, base_url="https://localhost")
        return Answer(
            response.status_code,
            {name.lower(): value for name, value in response.headers.items()},
            response.get_data(as_text=True),
        )

    yield Browser(get, "https://localhost")


@pytest.fixture(scope="module", autouse=True)
def _close_the_provider_browser() -> Iterator[None]:
    yield
    PROVIDER_BROWSER.close()


@pytest.fixture(scope="module")
def registered(oidc_provider: OIDCProviderServer) -> RegisteredOnce:
    return RegisteredOnce(oidc_provider)


@pytest.fixture
def h(registered: RegisteredOnce) -> Iterator[Harness]:
    harness = Harness(registered)  # type: ignore[arg-type]
    yield harness
    harness.oidc.close()


@pytest.fixture(params=FRAMEWORKS)
def browser(request: pytest.FixtureRequest, h: Harness) -> Iterator[Browser]:
    build = _starlette if request.param == "starlette" else _flask
    with build(h) as made:
        yield made


def assert_refused(h: Harness, browser: Browser, answer: Answer, status: int, reason: str) -> None:
    assert answer.status == status, answer.text
    assert answer.json()["error"] == reason
    assert answer.headers["cache-control"] == "no-store"
    if status == 503:
        assert answer.headers["retry-after"] == "5"
    assert "location" not in answer.headers
    assert h.fails()[-1]["reason"] == reason
    assert h.successes() == []
    assert browser.user() is None


def _huge(what: bytes) -> bytes:
    return what + b" " * (600 * 1024)


DISCOVERY = "/.well-known/openid-configuration"


@pytest.mark.parametrize(
    ("status", "body", "expected", "reason"),
    [
        (503, b"down for maintenance", 503, "provider_unavailable"),
        (200, b"<html>a captive portal</html>", 502, "bad_response"),
        (200, b"[]", 502, "bad_response"),
        (200, b"{}", 502, "bad_response"),
        (200, b'{"issuer": "http://127.0.0.1:1"}', 502, "bad_response"),
        (302, b"", 502, "bad_response"),
        (200, _huge(b"{}"), 502, "bad_response"),
    ],
    ids=["503", "html", "array", "empty", "other-issuer", "302", "huge"],
)
def test_discovery_failure_at_the_login(
    h: Harness,
    browser: Browser,
    oidc_provider: OIDCProviderServer,
    status: int,
    body: bytes,
    expected: int,
    reason: str,
) -> None:
    with oidc_provider.respond(DISCOVERY, status=status, body=body):
        answer = browser.get("/auth/local/login")
    assert_refused(h, browser, answer, expected, reason)
    # The provider is back: the next login discovers it (a failure is not cached).
    assert browser.get("/auth/local/login").status == 302


def test_discovery_unreachable_at_the_login(
    h: Harness, browser: Browser, oidc_provider: OIDCProviderServer
) -> None:
    with oidc_provider.unreachable(DISCOVERY):
        answer = browser.get("/auth/local/login")
    assert_refused(h, browser, answer, 503, "provider_unavailable")


@pytest.mark.parametrize(
    ("status", "body", "expected", "reason"),
    [
        (503, b"down", 503, "provider_unavailable"),
        (200, b"<html>garbage", 502, "bad_response"),
        (200, b"[]", 502, "bad_response"),
        (200, b'{"access_token": "x", "token_type": "Bearer"}', 502, "bad_response"),
        (400, b"<html>bad request</html>", 502, "bad_response"),
        (302, b"", 502, "bad_response"),
        (200, _huge(b'{"access_token": "x"}'), 502, "bad_response"),
        (
            200,
            b'{"access_token": "x", "token_type": "Bearer", "id_token": "not-a-jwt"}',
            400,
            "id_token_invalid",
        ),
    ],
    ids=[
        "503",
        "html",
        "array",
        "no-id-token",
        "400-html",
        "302",
        "huge",
        "id-token-garbage",
    ],
)
def test_token_endpoint_failure_at_the_callback(
    h: Harness,
    browser: Browser,
    oidc_provider: OIDCProviderServer,
    status: int,
    body: bytes,
    expected: int,
    reason: str,
) -> None:
    callback = browser.sign_in()
    with oidc_provider.respond("/token", status=status, body=body):
        answer = browser.get(callback)
    assert_refused(h, browser, answer, expected, reason)


def test_token_endpoint_unreachable(
    h: Harness, browser: Browser, oidc_provider: OIDCProviderServer
) -> None:
    callback = browser.sign_in()
    with oidc_provider.unreachable("/token"):
        answer = browser.get(callback)
    assert_refused(h, browser, answer, 503, "provider_unavailable")


@pytest.mark.parametrize(
    ("status", "body", "expected", "reason"),
    [
        (503, b"down", 503, "provider_unavailable"),
        (200, b"<html>", 502, "bad_response"),
        (200, b'{"keys": []}', 502, "bad_response"),
        (200, b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', 502, "bad_response"),
    ],
    ids=["503", "html", "no-keys", "only-symmetric"],
)
def test_keys_failure_at_the_callback(
    h: Harness,
    browser: Browser,
    oidc_provider: OIDCProviderServer,
    status: int,
    body: bytes,
    expected: int,
    reason: str,
) -> None:
    callback = browser.sign_in()
    with oidc_provider.respond("/jwks", status=status, body=body):
        answer = browser.get(callback)
    assert_refused(h, browser, answer, expected, reason)


def test_keys_unreachable(h: Harness, browser: Browser, oidc_provider: OIDCProviderServer) -> None:
    callback = browser.sign_in()
    with oidc_provider.unreachable("/jwks"):
        answer = browser.get(callback)
    assert_refused(h, browser, answer, 503, "provider_unavailable")


def test_a_browser_gets_a_readable_page(
    h: Harness, browser: Browser, oidc_provider: OIDCProviderServer
) -> None:
    with oidc_provider.respond(DISCOVERY, status=503, body=b"down"):
        down = browser.get("/auth/local/login", headers=HTML)
    assert down.status == 503
    assert down.headers["content-type"].startswith("text/plain")
    assert down.text == "The sign-in provider cannot be reached. Please try again shortly.\n"
    callback = browser.sign_in()
    with oidc_provider.respond("/token", status=200, body=b"<html>garbage"):
        garbage = browser.get(callback, headers=HTML)
    assert garbage.status == 502
    assert garbage.text == "The sign-in provider sent an answer that cannot be used.\n"
    assert "garbage" not in garbage.text  # the provider's answer is never echoed


def test_unknown_provider_is_a_404_and_audited(h: Harness, browser: Browser) -> None:
    for path in ("/auth/nowhere/login", "/auth/nowhere/callback?state=x&code=y"):
        answer = browser.get(path)
        assert answer.status == 404
        assert answer.json()["error"] == "unknown_provider"
        assert h.fails()[-1] == {
            "method": "oidc",
            "reason": "unknown_provider",
            "provider": "nowhere",
        }
    page = browser.get("/auth/nowhere/login", headers=HTML)
    assert (page.status, page.text) == (404, "No such sign-in provider.\n")
    assert len(h.fails()) == 3
    assert browser.user() is None


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_login_store_outage_is_a_503(
    h: Harness, start_redis_server: Callable[..., RedisServer], framework: str
) -> None:
    """The login records on a Redis that goes away (the sessions stay in memory): the login
    and the callback answer 503 ``login_store_unavailable``, audited."""
    server = start_redis_server()
    states = RedisStore.from_url(server.url, prefix="oidc-outage:")
    h.oidc.close()
    h.oidc = OIDC(h.policy, store=states, auditor=h.auditor, clock=h.clock)
    build = _starlette if framework == "starlette" else _flask
    try:
        with build(h) as browser:
            callback = browser.sign_in()
            server.stop()
            for path in ("/auth/local/login", callback):
                answer = browser.get(path)
                assert_refused(h, browser, answer, 503, "login_store_unavailable")
            assert [event["reason"] for event in h.fails()] == ["login_store_unavailable"] * 2
    finally:
        asyncio.run(states.aclose())
