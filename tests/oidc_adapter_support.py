"""Speed helpers for the adapter tests of OpenID Connect (tests/test_oidc_*_attacks.py,
tests/test_oidc_provider_failures.py): one client registration and one provider browser per
test module instead of one per test.

Each registration and each new ``httpx.Client`` costs about 50 ms (the TLS context is built
even for the provider's plain-http loopback origin); over a hundred tests that is seconds of
the suite. Nothing is shared that a test could see: every login has its own ``state``, code
and verifier, and the provider browser's cookies are cleared before each sign-in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from oidc_support import ALICE, complete_login

if TYPE_CHECKING:
    from oidc_support import OIDCClient, OIDCProviderServer

__all__ = ["ProviderBrowser", "RegisteredOnce"]


class RegisteredOnce:
    """Stands for the provider in ``test_oidc_http.Harness``: its ``register_client`` answers
    the one client registered here (with the redirect URIs the first call asked for)."""

    def __init__(self, provider: OIDCProviderServer) -> None:
        self.provider = provider
        self.issuer = provider.issuer
        self._client: OIDCClient | None = None

    def register_client(self, **options: Any) -> OIDCClient:
        if self._client is None:
            self._client = self.provider.register_client(**options)
        return self._client


class ProviderBrowser:
    """One ``httpx.Client`` (made on first use) that signs in at the provider's own pages, a
    fresh provider session (no cookies) each time."""

    def __init__(self) -> None:
        self._client: httpx.Client | None = None

    def sign_in(self, authorize: str, account: Any = ALICE, *, deny: bool = False) -> str:
        """The callback URL the provider redirects to after ``account`` signs in."""
        if self._client is None:
            self._client = httpx.Client(timeout=10)
        self._client.cookies.clear()
        return complete_login(
            self._client, authorize, account.username, account.password, deny=deny
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
