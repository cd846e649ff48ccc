"""The tutorial API of access and refresh tokens, on bastion's token service.

Guides and tutorials write token code as five functions (``create_access_token``,
``create_refresh_token``, ``verify_token(token, expected_type)``, ``revoke_token(jti)``,
``is_token_revoked(jti)``), often with revoked IDs in a module-level ``set()`` and long-lived
refresh JWTs. :class:`GuideTokens` offers the same five calls over
:class:`~bastion.tokens.service.Tokens`: typed, the deny-list and user epochs in the store,
refresh tokens opaque and rotated in families. One difference: ``revoke_token`` and
``is_token_revoked`` also take the token's ``subject``, because the deny-list is kept per user
so that the revocation and the user's epoch are read in one lookup::

    guide = runtime.tokens.guide
    access = await guide.create_access_token("alice", scopes=("read",))
    claims = await guide.verify_token(access, "access")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from bastion.core.tokens.reasons import TokenReason, TokenRejected
from bastion.errors import ConfigurationError
from bastion.tokens.pair import scopes_of

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    from bastion.core.tokens.jwt import Claims
    from bastion.engine.tokens.refresh import FamilyInfo
    from bastion.tokens.service import Tokens

__all__ = ["GuideTokens", "TokenType"]

TokenType = Literal["access", "refresh", "2fa_pending"]


class GuideTokens:
    """The five tutorial calls over a :class:`~bastion.tokens.service.Tokens`."""

    __slots__ = ("_tokens",)

    def __init__(self, tokens: Tokens) -> None:
        self._tokens = tokens

    def __repr__(self) -> str:
        return f"GuideTokens({self._tokens!r})"

    async def create_access_token(
        self,
        subject: str,
        *,
        scopes: Collection[str] = (),
        claims: Mapping[str, object] | None = None,
    ) -> str:
        """An access token alone (no refresh family)."""
        epoch = await self._tokens.revocations.current_epoch(subject)
        return self._tokens.mint_access(
            subject, scopes_of(scopes), epoch, jkt=self._tokens.binding(None), extra=claims
        )

    async def create_refresh_token(self, subject: str, *, scopes: Collection[str] = ()) -> str:
        """A refresh token opening a new family (exchange it with :meth:`refresh`)."""
        epoch = await self._tokens.revocations.current_epoch(subject)
        token, _family = await self._tokens.refresher().issue(
            subject, scopes=scopes_of(scopes), epoch=epoch, cnf_jkt=self._tokens.binding(None)
        )
        return token

    async def verify_token(self, token: str, expected_type: TokenType) -> Claims | FamilyInfo:
        """Check ``token`` as ``expected_type`` without using it: an access token's verified
        claims (revocation and epoch included), a refresh token's family (not rotated), or a
        pending token's claims. A token of another type is refused."""
        if expected_type == "access":
            claims, epoch, _jkt = self._tokens.decode_access(token)
            reason = await self._tokens.revocations.check(
                claims.issuer,
                claims.token_id,
                claims.subject,
                epoch,
                family_id=self._tokens.family_of(claims),
            )
            if reason is not None:
                raise TokenRejected(reason)
            return claims
        if expected_type == "refresh":
            if not self._tokens.is_refresh(token):
                raise TokenRejected(TokenReason.MALFORMED, "not a refresh token")
            return await self._tokens.refresher().inspect(token)
        if expected_type == "2fa_pending":
            claims = self._tokens.pending_claims(token)
            if await self._tokens.revocations.is_revoked(
                claims.issuer, claims.token_id, subject=claims.subject
            ):
                raise TokenRejected(TokenReason.REVOKED)
            return claims
        raise ConfigurationError(
            "expected_type must be 'access', 'refresh' or '2fa_pending'", setting="expected_type"
        )

    async def revoke_token(
        self, jti: str, *, subject: str, expires_at: float | None = None
    ) -> None:
        """Put ``jti`` (of this issuer, issued to ``subject``) on the deny-list until
        ``expires_at`` (default: as long as any access token can live). The subject is part of
        the entry's key: the deny-list and the user's epoch are then read in one lookup."""
        until = expires_at
        if until is None:
            until = (
                self._tokens.clock.now()
                + self._tokens.policy.access_lifetime
                + self._tokens.policy.leeway
            )
        await self._tokens.revocations.revoke_jti(
            self._tokens.policy.issuer, jti, subject=subject, expires_at=until
        )

    async def is_token_revoked(self, jti: str, *, subject: str) -> bool:
        """Whether ``jti`` (of this issuer, issued to ``subject``) is on the deny-list."""
        return await self._tokens.revocations.is_revoked(
            self._tokens.policy.issuer, jti, subject=subject
        )
