"""docs/oidc.md's examples run, against the real local provider: its python blocks in order in
one namespace (the issuer of the page swapped for the local provider's, the client registered
there as ``my-app``), then a sign-in through each of the page's Starlette, FastAPI and Flask
apps; and its refusal table is the code's (every reason, with its status)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode

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


def test_the_python_blocks_run_and_each_app_signs_in(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    oidc_provider: OIDCProviderServer,
    my_app: OIDCClient,
) -> None:
    monkeypatch.chdir(tmp_path)  # the page's sqlite:///app.db
    assert my_app.client_secret is not None
    monkeypatch.setenv("GOOGLE_CLIENT_SECRET", my_app.client_secret)
    blocks = _blocks("python")
    assert len(blocks) == 6
    assert ISSUER_ON_THE_PAGE in blocks[0]
    blocks[0] = blocks[0].replace(ISSUER_ON_THE_PAGE, oidc_provider.issuer)
    namespace: dict[str, Any] = {"__name__": "docs_oidc"}
    for number, block in enumerate(blocks):
        exec(compile(block, f"docs/oidc.md block {number}", "exec"), namespace)
    runtime = namespace["runtime"]
    try:
        for app in (namespace["app"], namespace["api"]):
            with TestClient(app, base_url="https://testserver") as client:

                def get(path: str, client: TestClient = client) -> tuple[int, dict[str, str], str]:
                    response = client.get(path, headers=JSON, follow_redirects=False)
                    return response.status_code, dict(response.headers), response.text

                _sign_ins(get, "https://testserver")

        flask_client = namespace["flask_app"].test_client()

        def flask_get(path: str) -> tuple[int, dict[str, str], str]:
            response = flask_client.get(path, headers=JSON, base_url="https://localhost")
            headers = {name.lower(): value for name, value in response.headers.items()}
            return response.status_code, headers, response.get_data(as_text=True)

        _sign_ins(flask_get, "https://localhost")
    finally:
        runtime.close()
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
