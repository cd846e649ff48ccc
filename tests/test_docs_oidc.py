"""docs/oidc.md's examples run, against the real local provider: its python blocks in order in
one namespace (the issuer of the page swapped for the local provider's, the client registered
there as ``my-app``), then a sign-in through each of the page's Starlette, FastAPI and Flask
apps, a sign-out through the FastAPI and Flask apps' sign-out forms (RP-initiated logout), and
a sign-in through the tokens-mode app; and its refusal table is the code's (every reason, with
its status)."""

from __future__ import annotations

import html
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from bastion.oidc import OIDCReason
from bastion.oidc.service import (
    BAD_HOST,
    LOGIN_STORE_UNAVAILABLE,
    NO_ACCOUNT,
    UNKNOWN_PROVIDER,
    refusal_for,
)
from oidc_support import ALICE, MALLORY, complete_login, oidc_provider_fixture  # noqa: F401

if TYPE_CHECKING:
    from collections.abc import Callable

    from oidc_support import OIDCClient, OIDCProviderServer

PAGE: Final = Path(__file__).resolve().parent.parent / "docs" / "oidc.md"
ISSUER_ON_THE_PAGE: Final = "https://accounts.google.com"
JSON: Final = {"accept": "application/json"}


def _blocks(language: str) -> list[str]:
    text = PAGE.read_text(encoding="utf-8")
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


@pytest.fixture(scope="module")
def my_app(oidc_provider: OIDCProviderServer) -> OIDCClient:
    """The page's ``client_id="my-app"``, registered for the test clients' callbacks."""
    return oidc_provider.register_client(
        client_id="my-app",
        redirect_uris=[
            "https://testserver/auth/google/callback",  # Starlette's and FastAPI's TestClient
            "https://localhost/auth/google/callback",  # Flask's test client
        ],
    )


def _at_provider(authorize: str, account: Any, base: str) -> str:
    with httpx.Client() as provider_browser:
        callback = complete_login(provider_browser, authorize, account.username, account.password)
    assert callback.startswith(f"{base}/auth/google/callback?")
    return callback.removeprefix(base)


def _sign_ins(get: Callable[[str], tuple[int, dict[str, str], str]], base: str) -> None:
    """Alice signs in (linked to u1 by her verified e-mail) and lands on /account; mallory,
    whose copy of alice's address is unverified, is refused; an open ``next`` is refused."""
    status, headers, _ = get("/auth/google/login?" + urlencode({"next": "/account"}))
    assert status == 302
    assert "code_challenge_method=S256" in headers["location"]
    status, headers, _ = get(_at_provider(headers["location"], ALICE, base))
    assert (status, headers["location"]) == (303, "/account")
    assert get("/account")[2] == "signed in as u1"

    status, headers, _ = get("/auth/google/login")
    status, _headers, body = get(_at_provider(headers["location"], MALLORY, base))
    assert status == 403
    assert '"error": "unverified_email"' in body

    status, _headers, body = get("/auth/google/login?next=//evil.example")
    assert status == 400
    assert '"error": "next_refused"' in body


def _sign_out(
    get: Callable[[str], tuple[int, dict[str, str], str]],
    post: Callable[[str, dict[str, str]], tuple[int, dict[str, str], str]],
    base: str,
    issuer: str,
) -> None:
    """Alice signs in, a POST without the form's CSRF token is refused and keeps her signed
    in, the form's POST signs her out and sends her to the provider (with ``client_id``)."""
    status, headers, _ = get("/auth/google/login")
    status, headers, _ = get(_at_provider(headers["location"], ALICE, base))
    assert get("/account")[2] == "signed in as u1"
    status, _headers, body = post("/auth/google/logout", {})
    assert (status, '"error": "csrf_failed"' in body) == (403, True)
    assert get("/account")[2] == "signed in as u1"
    form = get("/sign-out")[2]
    match = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert match is not None
    status, headers, _ = post("/auth/google/logout", {"csrf_token": html.unescape(match[1])})
    assert status == 303
    target = urlsplit(headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}".startswith(issuer)
    # The page's configuration has no field encryption: no ID token is kept, so none is sent.
    assert "id_token_hint" not in parse_qs(target.query)
    assert parse_qs(target.query)["client_id"] == ["my-app"]
    assert get("/account")[2] == "signed in as None"


def test_the_python_blocks_run_and_each_app_signs_in(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    oidc_provider: OIDCProviderServer,
    my_app: OIDCClient,
) -> None:
    monkeypatch.chdir(tmp_path)  # the page's sqlite:///app.db
    assert my_app.client_secret is not None
    monkeypatch.setenv("GOOGLE_CLIENT_SECRET", my_app.client_secret)
    monkeypatch.setenv("GITHUB_CLIENT_SECRET", "not-used-here")
    blocks = _blocks("python")
    assert len(blocks) == 10
    assert ISSUER_ON_THE_PAGE in blocks[0]
    blocks[0] = blocks[0].replace(ISSUER_ON_THE_PAGE, oidc_provider.issuer)
    namespace: dict[str, Any] = {"__name__": "docs_oidc"}
    for number, block in enumerate(blocks):
        exec(compile(block, f"docs/oidc.md block {number}", "exec"), namespace)
    runtime, api_runtime = namespace["runtime"], namespace["api_runtime"]
    issuer = oidc_provider.issuer
    try:
        for app in (namespace["app"], namespace["api"]):
            with TestClient(app, base_url="https://testserver") as client:

                def get(path: str, client: TestClient = client) -> tuple[int, dict[str, str], str]:
                    response = client.get(path, headers=JSON, follow_redirects=False)
                    return response.status_code, dict(response.headers), response.text

                def post(
                    path: str, form: dict[str, str], client: TestClient = client
                ) -> tuple[int, dict[str, str], str]:
                    response = client.post(path, data=form, headers=JSON, follow_redirects=False)
                    return response.status_code, dict(response.headers), response.text

                _sign_ins(get, "https://testserver")
                if app is namespace["api"]:
                    _sign_out(get, post, "https://testserver", issuer)

        flask_client = namespace["flask_app"].test_client()

        def flask_get(path: str) -> tuple[int, dict[str, str], str]:
            response = flask_client.get(path, headers=JSON, base_url="https://localhost")
            headers = {name.lower(): value for name, value in response.headers.items()}
            return response.status_code, headers, response.get_data(as_text=True)

        def flask_post(path: str, form: dict[str, str]) -> tuple[int, dict[str, str], str]:
            response = flask_client.post(
                path, data=form, headers=JSON, base_url="https://localhost"
            )
            headers = {name.lower(): value for name, value in response.headers.items()}
            return response.status_code, headers, response.get_data(as_text=True)

        _sign_ins(flask_get, "https://localhost")
        _sign_out(flask_get, flask_post, "https://localhost", issuer)

        with TestClient(namespace["token_app"], base_url="https://testserver") as client:
            login = client.get("/auth/google/login", follow_redirects=False)
            answer = client.get(
                _at_provider(login.headers["location"], ALICE, "https://testserver"),
                follow_redirects=False,
            )
            assert answer.status_code == 200
            assert answer.headers["cache-control"] == "no-store"
            tokens = answer.json()
            assert (tokens["token_type"], tokens["scope"]) == ("Bearer", "read")
            assert tokens["access_token"]
            assert tokens["refresh_token"]
    finally:
        runtime.close()
        api_runtime.close()
    assert set(namespace["identities"].values()) == {"u1"}  # mallory was never linked


def test_the_refusal_table_is_every_reason_with_its_status() -> None:
    text = PAGE.read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \|", text, flags=re.MULTILINE))
    expected = {
        *map(str, OIDCReason),
        NO_ACCOUNT,
        UNKNOWN_PROVIDER,
        LOGIN_STORE_UNAVAILABLE,
        BAD_HOST,
    }
    assert set(rows) == expected
    enum = {str(reason): reason for reason in OIDCReason}
    for reason, status in rows.items():
        assert refusal_for(enum.get(reason, reason))[0] == int(status), reason
