"""The login route cannot fill the store: ``OIDCPolicy(max_pending_per_client=N)``.

An anonymous client floods ``GET /auth/{provider}/login`` through the real Starlette routes and
the real Flask blueprint, on a real SQLite store file: with fresh cookies each time (a new
visitor), a spoofed ``X-Forwarded-For`` (no proxy is trusted), and alternating providers. It
gets N redirects, then 429 ``too_many_logins`` with ``Retry-After``; the store holds N login
records, never more, and every refusal is audited. Behind a trusted proxy the forwarded client
address is the key (IPv6 grouped by /64). The providers have explicit endpoints, so a login
start talks to no provider: these tests need none.
"""

from __future__ import annotations

import sqlite3
import warnings
from typing import TYPE_CHECKING, Any, Final

import pytest
from flask import Flask
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.routing import Mount

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from bastion import Bastion
from bastion.asgi import protect
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.client import TrustedProxies
from bastion.core.clock import FrozenClock
from bastion.core.environment import Environment
from bastion.core.keys import KeyRing
from bastion.errors import ConfigurationError
from bastion.flask import protect as flask_protect
from bastion.flask.oidc import oidc_blueprint
from bastion.oidc import OIDC, OIDCPolicy, OIDCReason, Provider
from bastion.oidc.starlette import oidc_router
from bastion.stores.sqlite import SQLiteStore
from bastion.testing.audit import RecordingAuditSink

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from bastion.oidc import Identity
    from bastion.runtime import Runtime

ISSUER: Final = "https://op.example"
BUDGET: Final = 3
LIFETIME: Final = 60.0
TIMEOUT: Final = 5.0
WINDOW: Final = int(LIFETIME + TIMEOUT)  # the budget's window: a record's lifetime, plus the
# longest the provider's metadata may take between the charge and the record's write
JSON: Final = {"accept": "application/json"}


def provider(name: str) -> Provider:
    return Provider(
        name=name,
        issuer=ISSUER,
        client_id="app",
        client_secret="a-test-client-secret-of-32-bytes!",
        authorization_endpoint=f"{ISSUER}/authorize",
        token_endpoint=f"{ISSUER}/token",
        jwks_uri=f"{ISSUER}/jwks",
    )


def nobody(identity: Identity) -> None:
    return None


class Site:
    """One app on a SQLite file, a frozen clock and a recording audit sink."""

    def __init__(
        self, tmp_path: Path, *, budget: int | None = BUDGET, proxies: tuple[str, ...] = ()
    ) -> None:
        self.path = tmp_path / "bastion.db"
        self.clock = FrozenClock(1_800_000_000.0)
        self.store = SQLiteStore(self.path, clock=self.clock)
        self.sink = RecordingAuditSink()
        keyring = KeyRing.generate()
        self.auditor = Auditor(IdentifierHasher(keyring), self.clock, self.sink, aggregation=None)
        self.runtime: Runtime = Bastion(
            store=self.store,
            keyring=keyring,
            headers=None,
            auditor=self.auditor,
            clock=self.clock,
            environment=Environment.TEST,
            proxies=TrustedProxies(proxies),
        ).build()
        self.policy = OIDCPolicy(
            providers=(provider("local"), provider("other")),
            state_lifetime=LIFETIME,
            timeout=TIMEOUT,
            max_pending_per_client=budget,
        )
        self.oidc = OIDC(self.policy, store=self.store, auditor=self.auditor, clock=self.clock)

    def close(self) -> None:
        self.oidc.close()
        self.runtime.close()

    def pending(self) -> int:
        """The login-state records in the SQLite file, read with a connection of our own."""
        with sqlite3.connect(self.path) as db:
            (count,) = db.execute(
                "SELECT count(*) FROM bastion_kv WHERE substr(key, 1, 11) = ?",
                (b"oidc-state:",),
            ).fetchone()
        return int(count)

    def fails(self) -> list[dict[str, Any]]:
        return [dict(e.details) for e in self.sink.events if e.name == "authn_login_fail"]

    def starlette(self) -> Starlette:
        return Starlette(routes=[Mount("/auth", oidc_router(self.oidc, on_identity=nobody))])

    def flask(self) -> Flask:
        app = Flask(__name__)
        flask_protect(app, self.runtime)
        app.register_blueprint(oidc_blueprint(self.oidc, on_identity=nobody))
        return app


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    made = Site(tmp_path)
    yield made
    made.close()


def _assert_too_many(status: int, headers: Any, body: Any, *, retry_after: int) -> None:
    assert status == 429
    assert body["error"] == "too_many_logins"
    assert "Too many sign-ins" in body["detail"]
    assert headers["retry-after"] == str(retry_after)
    assert headers["cache-control"] == "no-store"
    assert "location" not in headers


def test_starlette_flood_with_fresh_cookies_and_spoofed_forwarding(site: Site) -> None:
    app = protect(site.starlette(), site.runtime)
    answers = []
    for attempt in range(20):
        # A new visitor each time (no cookie jar kept), a forged client address, and the
        # providers in turn: none of it opens a fresh budget.
        browser = TestClient(app, base_url="https://testserver", follow_redirects=False)
        name = ("local", "other")[attempt % 2]
        answers.append(
            browser.get(
                f"/auth/{name}/login",
                headers={**JSON, "x-forwarded-for": f"198.51.100.{attempt}"},
            )
        )
    assert [answer.status_code for answer in answers[:BUDGET]] == [302] * BUDGET
    for answer in answers[BUDGET:]:
        _assert_too_many(answer.status_code, answer.headers, answer.json(), retry_after=WINDOW)
    assert site.pending() == BUDGET
    refused = site.fails()
    assert len(refused) == 20 - BUDGET
    assert refused[0] == {"method": "oidc", "reason": "too_many_logins", "provider": "other"}
    assert {event["reason"] for event in refused} == {"too_many_logins"}
    # One client address in every event (hashed): the peer's, none of the forged ones.
    assert len({e.client_ip for e in site.sink.events if e.name == "authn_login_fail"}) == 1


def test_the_budget_refills_when_the_oldest_login_leaves_the_window(site: Site) -> None:
    browser = TestClient(
        protect(site.starlette(), site.runtime),
        base_url="https://testserver",
        follow_redirects=False,
    )
    assert browser.get("/auth/local/login").status_code == 302
    site.clock.advance(20)
    for _ in range(BUDGET - 1):
        assert browser.get("/auth/local/login").status_code == 302
    refused = browser.get("/auth/local/login", headers=JSON)
    _assert_too_many(refused.status_code, refused.headers, refused.json(), retry_after=WINDOW - 20)
    site.clock.advance(WINDOW - 20)  # the first login's record has expired, and its charge left
    assert browser.get("/auth/local/login").status_code == 302
    refused = browser.get("/auth/local/login", headers=JSON)
    _assert_too_many(refused.status_code, refused.headers, refused.json(), retry_after=20)
    assert [event["reason"] for event in site.fails()] == ["too_many_logins"] * 2


def test_flask_flood_with_spoofed_forwarding(site: Site) -> None:
    app = site.flask()
    statuses = []
    for attempt in range(12):
        browser = app.test_client()  # a fresh cookie jar: a new anonymous visitor
        response = browser.get(
            f"/auth/{('local', 'other')[attempt % 2]}/login",
            headers={**JSON, "X-Forwarded-For": f"203.0.113.{attempt}"},
        )
        statuses.append(response.status_code)
        if response.status_code == 429:
            lowered = {key.lower(): value for key, value in response.headers.items()}
            _assert_too_many(429, lowered, response.json, retry_after=WINDOW)
    assert statuses == [302] * BUDGET + [429] * (12 - BUDGET)
    assert site.pending() == BUDGET
    assert [event["reason"] for event in site.fails()] == ["too_many_logins"] * (12 - BUDGET)


def test_flask_page_for_a_browser(site: Site) -> None:
    browser = site.flask().test_client()
    for _ in range(BUDGET):
        assert browser.get("/auth/local/login").status_code == 302
    page = browser.get("/auth/local/login", headers={"accept": "text/html"})
    assert page.status_code == 429
    assert page.headers["Retry-After"] == str(WINDOW)
    assert page.get_data(as_text=True) == (
        "Too many sign-ins were started from this address. Please wait a few minutes and try "
        "again.\n"
    )


def test_behind_a_trusted_proxy_each_client_has_its_own_budget(tmp_path: Path) -> None:
    """The proxy's forwarded address is the key: one client's flood does not lock out
    another, and an IPv6 client's /64 is one client."""
    site = Site(tmp_path, proxies=("127.0.0.1",))
    try:
        app = site.flask()

        def login(forwarded: str) -> int:
            browser = app.test_client()
            answer = browser.get(
                "/auth/local/login",
                headers={**JSON, "X-Forwarded-For": forwarded},
                environ_base={"REMOTE_ADDR": "127.0.0.1"},
            )
            return answer.status_code

        assert [login("198.51.100.1") for _ in range(BUDGET + 1)] == [302] * BUDGET + [429]
        assert login("198.51.100.2") == 302
        same_64 = [login(f"2001:db8:1:2::{n}") for n in range(1, BUDGET + 2)]
        assert same_64 == [302] * BUDGET + [429]
        assert login("2001:db8:1:3::1") == 302
        assert site.pending() == 2 * BUDGET + 2
        assert [event["reason"] for event in site.fails()] == ["too_many_logins"] * 2
    finally:
        site.close()


def test_no_budget_when_turned_off(tmp_path: Path) -> None:
    site = Site(tmp_path, budget=None)
    try:
        browser = site.flask().test_client()
        assert {browser.get("/auth/local/login").status_code for _ in range(10)} == {302}
        assert site.pending() == 10
    finally:
        site.close()


def test_the_default_budget_is_thirty(site: Site) -> None:
    policy = OIDCPolicy(providers=(provider("local"),))
    assert policy.max_pending_per_client == 30
    assert OIDCReason.TOO_MANY_LOGINS.status == 429


@pytest.mark.parametrize("value", [0, -1, 10_001, True, 2.5, "20"])
def test_a_bad_budget_is_a_configuration_error(value: object) -> None:
    with pytest.raises(ConfigurationError) as caught:
        OIDCPolicy(providers=(provider("local"),), max_pending_per_client=value)  # type: ignore[arg-type]
    assert caught.value.setting == "oidc.max_pending_per_client"
