"""``OIDCPolicy(login="tokens")``: what the sign-in needs of bastion's token service.

A protocol rather than an import: the token facade (:mod:`bastion.tokens`) is a layer of the
same rank as this one, and neither imports the other. ``runtime.tokens`` satisfies it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from bastion.core.tokens.reasons import TokenRejected
from bastion.errors import ConfigurationError
from bastion.oidc.policy import OIDCLogin

if TYPE_CHECKING:
    from collections.abc import Collection

    from bastion.oidc.policy import OIDCPolicy

__all__ = ["IssuedTokens", "TokenIssuer", "checked_tokens"]


class IssuedTokens(Protocol):
    """What :meth:`TokenIssuer.issue` returns (bastion's ``TokenPair``)."""

    def to_json(self) -> bytes: ...


class TokenIssuer(Protocol):
    """The part of ``runtime.tokens`` (:class:`bastion.tokens.Tokens`) that ``login="tokens"``
    uses; a protocol, because the token facade is a layer of its own."""

    def binding(self, dpop_jkt: str | None) -> str | None: ...

    async def issue(
        self,
        user_id: str,
        *,
        scopes: Collection[str] = (),
        client_id: str = "",
        authenticated_at: float | None = None,
    ) -> IssuedTokens: ...

    def issue_sync(
        self,
        user_id: str,
        *,
        scopes: Collection[str] = (),
        client_id: str = "",
        authenticated_at: float | None = None,
    ) -> IssuedTokens: ...


def checked_tokens(policy: OIDCPolicy, tokens: TokenIssuer | None) -> TokenIssuer | None:
    """``tokens`` when ``policy`` issues tokens, else ``None``; refused when it cannot work."""
    if policy.login is not OIDCLogin.TOKENS:
        return None
    if tokens is None:
        raise ConfigurationError(
            "OIDCPolicy(login='tokens') needs the token service: OIDC(..., tokens=runtime."
            "tokens), with Bastion(tokens=TokenPolicy(...))",
            setting="oidc.login",
        )
    try:
        tokens.binding(None)
    except TokenRejected:
        raise ConfigurationError(
            "OIDCPolicy(login='tokens') cannot issue tokens under TokenPolicy(dpop='required'): "
            "a browser's callback carries no DPoP proof",
            setting="oidc.login",
        ) from None
    return tokens
