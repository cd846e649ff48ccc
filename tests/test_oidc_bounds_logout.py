"""No ID token in clear in the session store, and RP-initiated logout still works.

Against the real local provider, through the Starlette routes and the Flask blueprint: after a
sign-in, the session's raw record in the store holds no JWT (no ``eyJ``: the base64url of
``{"``). With field encryption (``OIDC(crypto=...)``) the ID token is kept sealed, as base32,
and the logout sends it as ``id_token_hint``; without, nothing is kept and the logout sends
``client_id`` without a hint, which the provider accepts: its logout page returns to the
registered ``post_logout_redirect_uri`` and its own session is over. A sealed hint copied into
another login's session does not decrypt there (audited) and that logout goes without it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from bastion.core.sessions.ids import is_session_id, record_key, session_handle
from bastion.oidc import Provider
from bastion.oidc.logout_hint import LOGOUT_KEY, hint_of, kept_for_logout
from oidc_routes_support import FLASK, STARLETTE, Site, register
from oidc_support import (  # noqa: F401 (fixtures)
    ALICE,
    complete_login,
    complete_logout,
    jwt_parts,
    oidc_provider_fixture,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from oidc_support import OIDCClient, OIDCProviderServer


@pytest.fixture
def client_at_op(oidc_provider: OIDCProviderServer) -> OIDCClient:
    return register(oidc_provider)


def _provider(op: OIDCProviderServer, client: OIDCClient) -> Provider:
    return Provider(
        name="local",
        issuer=op.issuer,
        client_id=client.client_id,
        client_secret=client.client_secret,
        post_logout_redirect_uri=f"{STARLETTE}/bye",
    )


@pytest.fixture(params=[True, False], ids=["crypto", "no-crypto"])
def site(
    request: pytest.FixtureRequest, oidc_provider: OIDCProviderServer, client_at_op: OIDCClient
) -> Iterator[Site]:
    opened = Site([_provider(oidc_provider, client_at_op)], crypto=request.param)
    yield opened
    opened.close()


def _session_id(set_cookies: Iterable[str]) -> str:
    for header in set_cookies:
        value = header.split(";", 1)[0].split("=", 1)[1]
        if is_session_id(value):
            return value
    raise AssertionError(f"no session cookie in {list(set_cookies)}")


def _raw_record(site: Site, session_id: str) -> bytes:
    raw = site.store.sync.get(record_key(session_handle(session_id)))
    assert raw is not None
    return raw


def _assert_no_jwt(raw: bytes) -> dict[str, Any]:
    """The record's data; ``raw`` holds no JWT. The CSRF secret (``"x"``: 43 random base64url
    characters, ``eyJ`` by chance about once in 6000 records) is blanked first."""
    record = json.loads(raw)
    record["x"] = ""
    assert "eyJ" not in json.dumps(record)
    data: dict[str, Any] = record["d"]
    return data


def _check_kept(site: Site, data: dict[str, Any]) -> None:
    if site.crypto is None:
        assert LOGOUT_KEY not in data  # nothing kept for the logout
    else:
        kept = data[LOGOUT_KEY]
        assert set(kept) == {"provider", "hint"}
        assert kept["provider"] == "local"
        assert set(kept["hint"]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


def _check_logout_url(site: Site, target: str, op: OIDCProviderServer, client_id: str) -> None:
    assert target.startswith(f"{op.issuer}/session/end?")
    query = parse_qs(urlsplit(target).query)
    assert query["client_id"] == [client_id]
    assert query["post_logout_redirect_uri"] == [f"{STARLETTE}/bye"]
    if site.crypto is None:
        assert "id_token_hint" not in query
    else:
        _header, hint = jwt_parts(query["id_token_hint"][0])
        assert (hint["sub"], hint["aud"]) == ("alice", client_id)


def test_starlette_session_keeps_no_jwt_and_logout_works(
    site: Site, oidc_provider: OIDCProviderServer, client_at_op: OIDCClient
) -> None:
    with site.starlette() as app, httpx.Client() as browser:
        login = app.get("/auth/local/login", follow_redirects=False)
        callback = complete_login(
            browser, login.headers["location"], ALICE.username, ALICE.password
        )
        done = app.get(callback.removeprefix(STARLETTE), follow_redirects=False)
        assert done.status_code == 303
        data = _assert_no_jwt(_raw_record(site, _session_id(done.headers.get_list("set-cookie"))))
        _check_kept(site, data)
        token = app.get("/csrf").text
        response = app.post(
            "/auth/local/logout", headers={"x-csrf-token": token}, follow_redirects=False
        )
        assert response.status_code == 303
        target = response.headers["location"]
        _check_logout_url(site, target, oidc_provider, client_at_op.client_id)
        assert app.get("/me").json() == {"user": None}
        # The provider accepts the logout (with or without the hint) and ends its session.
        assert complete_logout(browser, target) == f"{STARLETTE}/bye"
        again = app.get("/auth/local/login", follow_redirects=False).headers["location"]
        assert 'name="password"' in browser.get(again, follow_redirects=True).text
    assert site.events("crypt_decrypt_fail") == []
    assert site.events("session_destroyed")[-1]["reason"] == "logout"


def test_flask_session_keeps_no_jwt_and_logout_works(
    site: Site, oidc_provider: OIDCProviderServer, client_at_op: OIDCClient
) -> None:
    app = site.flask()
    with app.test_client() as client, httpx.Client() as browser:
        login = client.get("/auth/local/login", base_url=FLASK)
        callback = complete_login(
            browser, login.headers["Location"], ALICE.username, ALICE.password
        )
        done = client.get(callback.removeprefix(FLASK), base_url=FLASK)
        assert done.status_code == 303
        data = _assert_no_jwt(_raw_record(site, _session_id(done.headers.getlist("Set-Cookie"))))
        _check_kept(site, data)
        token = client.get("/csrf", base_url=FLASK).text
        response = client.post(
            "/auth/local/logout", base_url=FLASK, headers={"X-CSRF-Token": token}
        )
        assert response.status_code == 303
        target = response.headers["Location"]
        _check_logout_url(site, target, oidc_provider, client_at_op.client_id)
        assert client.get("/me", base_url=FLASK).json == {"user": None}
        assert complete_logout(browser, target) == f"{STARLETTE}/bye"


class _Login:
    """What :func:`hint_of` reads of a session: its user, its login time and its data."""

    def __init__(self, user_id: str | None, authenticated_at: float | None) -> None:
        self.user_id = user_id
        self.authenticated_at = authenticated_at
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


def test_a_hint_decrypts_only_in_its_own_login(oidc_provider: OIDCProviderServer) -> None:
    site = Site([_provider(oidc_provider, register(oidc_provider))], crypto=True)
    try:
        crypto = site.crypto
        assert crypto is not None
        token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
        mine = _Login("user-1", 1_800_000_000.25)
        kept = kept_for_logout(mine, "local", token, crypto)  # type: ignore[arg-type]
        assert kept is not None
        assert "eyJ" not in kept["hint"]
        mine.data[LOGOUT_KEY] = kept
        assert hint_of(mine, "local", crypto) == token  # type: ignore[arg-type]
        assert hint_of(mine, "other", crypto) is None  # type: ignore[arg-type]
        assert hint_of(mine, "local", None) is None  # type: ignore[arg-type]
        assert site.events("crypt_decrypt_fail") == []
        for user, at in (("user-1", 1_800_000_001.25), ("user-2", 1_800_000_000.25)):
            other = _Login(user, at)  # a later login of the same user, another user
            other.data[LOGOUT_KEY] = kept  # the sealed hint copied over
            assert hint_of(other, "local", crypto) is None  # type: ignore[arg-type]
        assert len(site.events("crypt_decrypt_fail")) == 2
        mine.data[LOGOUT_KEY] = {"provider": "local", "hint": kept["hint"][:-4] + "AAAA"}
        assert hint_of(mine, "local", crypto) is None  # type: ignore[arg-type]
        mine.data[LOGOUT_KEY] = {"provider": "local", "hint": "not base32 at all!"}
        assert hint_of(mine, "local", crypto) is None  # type: ignore[arg-type]
        # An entry an older bastion wrote (the token in clear) is not read.
        mine.data[LOGOUT_KEY] = {"provider": "local", "id_token": token}
        assert hint_of(mine, "local", crypto) is None  # type: ignore[arg-type]
        assert kept_for_logout(_Login(None, None), "local", token, crypto) is None  # type: ignore[arg-type]
        assert kept_for_logout(mine, "local", token, None) is None  # type: ignore[arg-type]
    finally:
        site.close()
