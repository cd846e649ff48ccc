"""The sign-in attacked from outside, against the real local provider: what the other OIDC
tests leave open. Each test asserts the exact answer (status, reason) and audit event."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import httpx
import pytest

from bastion.core.clock import FrozenClock
from bastion.engine.oidc.jwks import DEFAULT_METADATA_TTL, ProviderKeys
from bastion.errors import ConfigurationError
from oidc_routes_support import Site, sign_in
from oidc_support import oidc_provider_fixture  # noqa: F401 (fixture)
from test_oidc_oauth2 import oauth2
from test_oidc_tokens_mode import provider as tokens_provider

if TYPE_CHECKING:
    from collections.abc import Iterator

    from oidc_support import OIDCProviderServer


@pytest.fixture
def site(oidc_provider: OIDCProviderServer) -> Iterator[Site]:
    opened = Site([oauth2(oidc_provider)])
    yield opened
    opened.close()


def _signs_in(site: Site) -> None:
    with site.starlette() as client:
        start = client.get("/auth/local/login", follow_redirects=False)
        assert start.status_code == 302
        done = client.get(sign_in(start.headers["location"]), follow_redirects=False)
        assert (done.status_code, done.headers.get("location")) == (303, "/"), done.text
        assert client.get("/me").json() == {"user": "user-1"}


def test_the_service_serves_a_second_event_loop(site: Site) -> None:
    """One runtime.oidc behind two test clients (two event loops, one after the other, as in
    a test suite or an app restarted in-process): the userinfo request of the second login
    must not reuse a connection of the first, closed loop."""
    _signs_in(site)
    _signs_in(site)
    assert len(site.events("authn_login_success")) == 2


def test_the_provider_keys_serve_callers_on_two_event_loops(
    oidc_provider: OIDCProviderServer,
) -> None:
    """A discovery refetch contended on one event loop, then on another (a second test client,
    the Flask blueprint's loop thread beside the ASGI server's loop): the cache's lock must not
    stay bound to the first loop (it raised RuntimeError, a 500 at the login)."""
    clock = FrozenClock(time.time())
    http = httpx.AsyncClient()
    keys = ProviderKeys(oidc_provider.issuer, http=http, clock=clock)

    async def two_at_once() -> list[str]:
        found = await asyncio.gather(keys.metadata(), keys.metadata())
        return [metadata.issuer for metadata in found]

    assert asyncio.run(two_at_once()) == [oidc_provider.issuer] * 2
    clock.advance(DEFAULT_METADATA_TTL + 1)
    try:
        assert asyncio.run(two_at_once()) == [oidc_provider.issuer] * 2
    finally:
        asyncio.run(http.aclose())


@pytest.mark.parametrize("returned", [True, "", 1.5])
def test_a_hook_answer_sessions_refuse_mints_no_token(
    oidc_provider: OIDCProviderServer, returned: object
) -> None:
    """A hook answer that ``session.login()`` refuses (``True``, ``""``, a float) is the same
    ConfigurationError in tokens mode: it minted a token for the subject ``"True"``."""
    site = Site([tokens_provider(oidc_provider)], login="tokens")
    site.hook = lambda identity: returned  # type: ignore[assignment,method-assign,return-value]
    try:
        with site.starlette() as client:
            start = client.get("/auth/local/login", follow_redirects=False)
            callback = sign_in(start.headers["location"])
            with pytest.raises(ConfigurationError) as refused:
                client.get(callback, follow_redirects=False)
        assert refused.value.setting == "on_identity"
        assert site.events("authn_login_success") == []
        assert site.events("authn_token_created") == []
    finally:
        site.close()
