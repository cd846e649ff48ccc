"""RP-initiated logout (``POST /auth/{provider}/logout``) against the real local provider,
through the Starlette routes and the Flask blueprint.

The route ends the bastion session, then sends the browser to the provider's
``end_session_endpoint`` with the session's ID token as ``id_token_hint`` (these apps have field
encryption, so the session keeps it sealed: tests/test_oidc_bounds_logout.py); the provider's own
logout page then ends its session and returns to the registered ``post_logout_redirect_uri``.
A POST without a CSRF token is refused by bastion's CSRF check (403, ``malicious_csrf``), and
the session stays logged in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from bastion.oidc import OIDC, Provider
from oidc_routes_support import FLASK, JSON, STARLETTE, Site, register
from oidc_support import (  # noqa: F401 (fixtures)
    ALICE,
    complete_login,
    complete_logout,
    jwt_parts,
    oidc_provider_fixture,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from oidc_support import OIDCClient, OIDCProviderServer


class Local:
    """The provider ``local`` registered for both apps, with its post-logout URIs."""

    def __init__(self, op: OIDCProviderServer, **changes: Any) -> None:
        self.client: OIDCClient = register(op)
        self.provider = Provider(
            name="local",
            issuer=op.issuer,
            client_id=self.client.client_id,
            client_secret=self.client.client_secret,
            **changes,
        )


@pytest.fixture
def local(oidc_provider: OIDCProviderServer) -> Local:
    return Local(oidc_provider, post_logout_redirect_uri=f"{STARLETTE}/bye")


@pytest.fixture
def site(local: Local) -> Iterator[Site]:
    opened = Site([local.provider], crypto=True)  # the ID token is kept, encrypted, as the hint
    yield opened
    opened.close()


def signed_in(client: Any, browser: httpx.Client, *, base: str = STARLETTE) -> None:
    """Sign ``client`` (an app's test client) in through the provider's pages in ``browser``
    (which keeps the provider's own session cookie)."""
    login = client.get("/auth/local/login", follow_redirects=False)
    assert login.status_code == 302
    callback = complete_login(browser, login.headers["location"], ALICE.username, ALICE.password)
    done = client.get(callback.removeprefix(base), follow_redirects=False)
    assert done.status_code == 303


def csrf(client: Any) -> dict[str, str]:
    return {"x-csrf-token": client.get("/csrf").text}


def test_logout_ends_both_sessions(
    site: Site, local: Local, oidc_provider: OIDCProviderServer
) -> None:
    with site.starlette() as client, httpx.Client() as browser:
        signed_in(client, browser)
        assert client.get("/me").json() == {"user": "user-1"}
        response = client.post("/auth/local/logout", headers=csrf(client), follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["cache-control"] == "no-store"
        target = response.headers["location"]
        assert target.startswith(f"{oidc_provider.issuer}/session/end?")
        query = parse_qs(urlsplit(target).query)
        assert query["client_id"] == [local.client.client_id]
        assert query["post_logout_redirect_uri"] == [f"{STARLETTE}/bye"]
        _header, hint = jwt_parts(query["id_token_hint"][0])
        assert (hint["sub"], hint["aud"]) == ("alice", local.client.client_id)
        assert client.get("/me").json() == {"user": None}
        # The provider's page ends its own session and returns to the registered URI.
        assert complete_logout(browser, target) == f"{STARLETTE}/bye"
        # Signed out at the provider: the next login asks for the password again.
        again = client.get("/auth/local/login", follow_redirects=False).headers["location"]
        page = browser.get(again, follow_redirects=True)
        assert 'name="password"' in page.text
    destroyed = site.events("session_destroyed")
    assert destroyed
    assert destroyed[-1]["reason"] == "logout"


def test_logout_without_a_csrf_token_is_refused(site: Site) -> None:
    with site.starlette() as client, httpx.Client() as browser:
        signed_in(client, browser)
        response = client.post("/auth/local/logout", headers=JSON, follow_redirects=False)
        assert response.status_code == 403
        assert (response.json()["error"], response.json()["reason"]) == (
            "csrf_failed",
            "token_missing",
        )
        assert client.get("/me").json() == {"user": "user-1"}  # still signed in
    (refused,) = site.events("malicious_csrf")
    assert (refused["path"], refused["reason"]) == ("/auth/local/logout", "token_missing")
    assert site.events("session_destroyed") == []


def test_logout_is_not_a_get(site: Site) -> None:
    with site.starlette() as client:
        assert client.get("/auth/local/logout", follow_redirects=False).status_code == 405


def test_unknown_provider_is_a_404(site: Site) -> None:
    with site.starlette() as client:
        response = client.post("/auth/nowhere/logout", headers={**JSON, **csrf(client)})
        assert response.status_code == 404
        assert response.json()["error"] == "unknown_provider"


def test_a_session_that_never_signed_in_here_sends_no_hint(site: Site) -> None:
    with site.starlette() as client:
        client.get("/me")
        response = client.post("/auth/local/logout", headers=csrf(client), follow_redirects=False)
        assert response.status_code == 303
        query = parse_qs(urlsplit(response.headers["location"]).query)
        assert "id_token_hint" not in query  # this session never signed in through local
        assert query["post_logout_redirect_uri"] == [f"{STARLETTE}/bye"]


def test_a_provider_without_end_session_endpoint(oidc_provider: OIDCProviderServer) -> None:
    client_at_op = register(oidc_provider)
    plain = Provider(
        name="local",
        issuer=oidc_provider.issuer,
        client_id=client_at_op.client_id,
        client_secret=client_at_op.client_secret,
        authorization_endpoint=f"{oidc_provider.issuer}/auth",
        token_endpoint=f"{oidc_provider.issuer}/token",
        userinfo_endpoint=f"{oidc_provider.issuer}/me",
        id_token=False,
    )
    for provider, where in ((plain, "/"), (_with(plain, f"{STARLETTE}/bye"), f"{STARLETTE}/bye")):
        site = Site([provider])
        try:
            with site.starlette() as client, httpx.Client() as browser:
                signed_in(client, browser)
                response = client.post(
                    "/auth/local/logout", headers=csrf(client), follow_redirects=False
                )
                assert response.status_code == 303
                assert response.headers["location"] == where
                assert client.get("/me").json() == {"user": None}
        finally:
            site.close()


def _with(provider: Provider, back: str) -> Provider:
    from dataclasses import replace  # noqa: PLC0415

    return replace(provider, post_logout_redirect_uri=back)


def test_provider_down_at_logout_still_ends_the_session(
    site: Site, oidc_provider: OIDCProviderServer
) -> None:
    with site.starlette() as client, httpx.Client() as browser:
        signed_in(client, browser)
        cookies = dict(client.cookies)
    fresh = OIDC(site.policy, store=site.store, auditor=site.auditor, clock=site.clock)
    try:
        with site.starlette(fresh) as client:  # no cached metadata: discovery is needed
            client.cookies.update(cookies)
            assert client.get("/me").json() == {"user": "user-1"}
            with oidc_provider.respond("/.well-known/openid-configuration", status=503):
                response = client.post(
                    "/auth/local/logout", headers={**JSON, **csrf(client)}, follow_redirects=False
                )
            assert response.status_code == 503
            assert response.json()["error"] == "provider_unavailable"
            assert client.get("/me").json() == {"user": None}
    finally:
        fresh.close()
    assert site.events("session_destroyed")[-1]["reason"] == "logout"


def test_flask_blueprint_logout(site: Site, local: Local) -> None:
    app = site.flask()
    with app.test_client() as client, httpx.Client() as browser:
        login = client.get("/auth/local/login", base_url=FLASK)
        callback = complete_login(
            browser, login.headers["Location"], ALICE.username, ALICE.password
        )
        assert client.get(callback.removeprefix(FLASK), base_url=FLASK).status_code == 303
        assert client.get("/me", base_url=FLASK).json == {"user": "user-1"}
        refused = client.post("/auth/local/logout", base_url=FLASK, headers=JSON)
        assert refused.status_code == 403
        assert refused.json["reason"] == "token_missing"
        assert client.get("/me", base_url=FLASK).json == {"user": "user-1"}
        token = client.get("/csrf", base_url=FLASK).text
        response = client.post(
            "/auth/local/logout", base_url=FLASK, headers={"X-CSRF-Token": token}
        )
        assert response.status_code == 303
        query = parse_qs(urlsplit(response.headers["Location"]).query)
        assert query["client_id"] == [local.client.client_id]
        _header, hint = jwt_parts(query["id_token_hint"][0])
        assert hint["sub"] == "alice"
        assert client.get("/me", base_url=FLASK).json == {"user": None}
        assert complete_logout(browser, response.headers["Location"]) == f"{STARLETTE}/bye"
    assert [e["reason"] for e in site.events("malicious_csrf")] == ["token_missing"]
    assert site.events("session_destroyed")[-1]["reason"] == "logout"
