"""``Tokens``: access tokens, refresh families, revocation and DPoP behind one object.

What a request handler calls. It gathers the sans-I/O parts (the JWT codec, DPoP proof
checks, the bearer header grammar) and the store parts (refresh families, the deny-list and the
per-user epoch, DPoP replay, one-time tokens), all on the runtime's one store, key ring, clock
and auditor::

    tokens = runtime.tokens
    pair = await tokens.issue("alice", scopes=("read",))      # after the password (and TOTP)
    pair = await tokens.refresh(pair.refresh_token)             # rotates the family
    principal = await tokens.authenticate(request)              # the bearer layer calls this

How the kinds are kept apart: an access token has ``typ: at+jwt`` and the policy's audience; a
second-factor-pending token has ``typ: 2fa-pending+jwt`` and another audience; refresh and
one-time tokens are opaque (no JWT at all), with their own prefixes. Each check alone keeps
one kind from standing in for another.

Revocation reaches three ways: a ``jti`` on the deny-list (keyed on the verified ``iss`` and
``jti``, so a re-encoded copy is refused too), a refresh family (its tokens, and the access
tokens minted with it, which name it in claim ``fid``), and the user's epoch: an
access token carries the epoch it was issued under (claim ``ep``), and sessions' "log out
everywhere" (or :meth:`Tokens.revoke_all`) raises it, which ends every session, every refresh
family and every older access token at once.

Every method has a ``*_sync`` twin for WSGI apps; both run the same checks, in the same order.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from bastion.core.audit import EventName, Outcome
from bastion.core.tokens.bearer import BearerChallenge, parse_authorization
from bastion.core.tokens.dpop import DPoPProof, DPoPVerifier
from bastion.core.tokens.jwk import JWTKey, JWTKeySet
from bastion.core.tokens.jwt import Claims, JWTCodec
from bastion.core.tokens.principal import BearerRequest, Principal
from bastion.core.tokens.reasons import TokenReason, TokenRejected
from bastion.core.tokens.refresh import new_family_id
from bastion.engine.tokens.dpop import DPoPReplayCache
from bastion.engine.tokens.onetime import OneTimeTokens
from bastion.engine.tokens.refresh import FamilyInfo, RefreshTokens, Rotation
from bastion.engine.tokens.revocation import DEFAULT_SLACK, Revocations, check_family_id
from bastion.errors import ConfigurationError
from bastion.tokens.pair import TokenPair, scopes_of
from bastion.tokens.policy import ACCESS_TYP, PENDING_TYP, DPoPMode, TokenPolicy

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    from bastion.core.audit import Auditor
    from bastion.core.clock import Clock
    from bastion.core.keys import KeyRing
    from bastion.engine.authz import Assignments
    from bastion.engine.sessions import SessionEngine
    from bastion.stores.base import Store
    from bastion.tokens.guide import GuideTokens

__all__ = ["EPOCH_CLAIM", "FAMILY_CLAIM", "PERMISSION_VERSION_CLAIM", "Tokens"]

EPOCH_CLAIM = "ep"
"""The private claim holding the user epoch an access token was issued under."""
FAMILY_CLAIM = "fid"
"""The private claim naming the refresh family an access token was minted with (by
:meth:`Tokens.issue` and :meth:`Tokens.refresh`): revoking the family (reuse, a revocation)
refuses the token too. A token minted without a family has no such claim."""
PERMISSION_VERSION_CLAIM = "pv"
"""The private claim holding the user's permission version at issue (with ``Bastion(authz=)``
keeping roles in the store): authorization reads the roles again under a newer one."""


class Tokens:
    """The token service (see the module docstring). Built by ``runtime.tokens``."""

    __slots__ = (
        "_auditor",
        "_clock",
        "_codec",
        "_dpop",
        "_jwks",
        "_replay",
        "_sessions",
        "_store",
        "_versions",
        "challenge",
        "onetime",
        "policy",
        "refresh_tokens",
        "revocations",
    )

    def __init__(
        self,
        policy: TokenPolicy,
        *,
        store: Store,
        keyring: KeyRing,
        clock: Clock,
        auditor: Auditor,
        production: bool = False,
        sessions: SessionEngine | None = None,
        permission_versions: Assignments | None = None,
    ) -> None:
        policy.check_environment(production=production)
        keys = policy.keys
        if keys is None:
            keys = JWTKeySet(JWTKey.generate("EdDSA"))
        self.policy = policy
        self._store = store
        self._clock = clock
        self._auditor = auditor
        self._sessions = sessions
        self._versions = permission_versions
        self._codec = JWTCodec(
            keys,
            issuer=policy.issuer,
            leeway=policy.leeway,
            max_bytes=policy.max_bytes,
            clock=clock,
        )
        self._jwks = json.dumps(keys.jwks(), separators=(",", ":")).encode("ascii")
        self.revocations = Revocations(store, clock=clock, auditor=auditor)
        self.refresh_tokens = (
            None
            if policy.refresh is None
            else RefreshTokens(
                store,
                keyring,
                policy=policy.refresh,
                clock=clock,
                auditor=auditor,
                # A revoked family's marker outlives every access token it minted.
                marker_ttl=policy.access_lifetime + DEFAULT_SLACK,
            )
        )
        self.onetime = OneTimeTokens(store, keyring, clock=clock, auditor=auditor)
        self._dpop = (
            None
            if policy.dpop is DPoPMode.OFF
            else DPoPVerifier(max_bytes=policy.max_bytes, clock=clock)
        )
        self._replay = (
            None
            if self._dpop is None
            else DPoPReplayCache.for_verifier(store, self._dpop, auditor=auditor)
        )
        self.challenge = BearerChallenge(
            realm=policy.realm,
            dpop_algorithms=() if self._dpop is None else self._dpop.algorithms,
        )

    def __repr__(self) -> str:
        return f"Tokens(issuer={self.policy.issuer!r}, dpop={self.policy.dpop.value!r})"

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def guide(self) -> GuideTokens:
        """The tutorial API (``create_access_token``, ``verify_token``, ...) on this service."""
        from bastion.tokens.guide import GuideTokens  # noqa: PLC0415 (guide imports this module)

        return GuideTokens(self)

    # -- documents --------------------------------------------------------------------------

    def jwks(self) -> bytes:
        """The JSON Web Key Set of the public keys (for ``/.well-known/jwks.json``)."""
        return self._jwks

    # -- issuing ----------------------------------------------------------------------------

    def mint_access(
        self,
        user_id: str,
        scopes: tuple[str, ...],
        epoch: int,
        *,
        jkt: str | None,
        extra: Mapping[str, object] | None,
        family: str | None = None,
    ) -> str:
        now = self._clock.now()
        claims: dict[str, object] = dict(extra or {})
        reserved_names = ("iss", "sub", "aud", "exp", "iat", "nbf", "jti", "scope", "cnf")
        for reserved in (*reserved_names, FAMILY_CLAIM):
            if reserved in claims:
                raise ConfigurationError(
                    f"claims must not set {reserved!r}: bastion sets it", setting="claims"
                )
        claims.update(
            sub=user_id,
            aud=self.policy.access_audience,
            iat=int(now),
            exp=int(now + self.policy.access_lifetime),
        )
        claims[EPOCH_CLAIM] = epoch
        if family is not None:
            claims[FAMILY_CLAIM] = family
        if scopes:
            claims["scope"] = " ".join(scopes)
        if jkt is not None:
            claims["cnf"] = {"jkt": jkt}
        return self._codec.encode(claims, typ=ACCESS_TYP)

    def _pair(
        self, access: str, refresh: str | None, scopes: tuple[str, ...], jkt: str | None
    ) -> TokenPair:
        return TokenPair(
            access_token=access,
            refresh_token=refresh,
            expires_in=int(self.policy.access_lifetime),
            token_type="DPoP" if jkt is not None else "Bearer",
            scope=" ".join(scopes),
        )

    def binding(self, dpop_jkt: str | None) -> str | None:
        if dpop_jkt is not None and self.policy.dpop is DPoPMode.OFF:
            raise ConfigurationError(
                "a DPoP key was given but TokenPolicy(dpop='off')", setting="tokens.dpop"
            )
        if dpop_jkt is None and self.policy.dpop is DPoPMode.REQUIRED:
            raise TokenRejected(TokenReason.DPOP_REQUIRED, "this issuer requires a DPoP proof")
        return dpop_jkt

    def _audit_issued(self, user_id: str, family: FamilyInfo | None, how: str) -> None:
        details: dict[str, str | int] = {"kind": how}
        if family is not None:
            details["family"] = family.family_id
        self._auditor.emit(
            EventName.AUTHN_TOKEN_CREATED, outcome=Outcome.SUCCESS, user=user_id, details=details
        )

    async def issue(
        self,
        user_id: str,
        *,
        scopes: Collection[str] = (),
        client_id: str = "",
        claims: Mapping[str, object] | None = None,
        dpop_jkt: str | None = None,
        authenticated_at: float | None = None,
    ) -> TokenPair:
        """An access token and (with a refresh policy) a new refresh family for ``user_id``.

        Call it once the user's credentials were checked; ``authenticated_at`` (when they were)
        makes a revocation that came in between win. ``dpop_jkt`` is the thumbprint of a
        verified DPoP proof (:meth:`verify_proof`): both tokens are then bound to that key.
        """
        wanted = scopes_of(scopes)
        jkt = self.binding(dpop_jkt)
        epoch = await self.revocations.current_epoch(user_id, authenticated_at=authenticated_at)
        if self._versions is not None:
            claims = self._with_version(claims, await self._versions.version(user_id))
        # Minted first (naming the family to come): claims the codec refuses leave no refresh
        # family behind.
        family_id = None if self.refresh_tokens is None else new_family_id()
        access = self.mint_access(user_id, wanted, epoch, jkt=jkt, extra=claims, family=family_id)
        refresh: str | None = None
        family: FamilyInfo | None = None
        if self.refresh_tokens is not None:
            refresh, family = await self.refresh_tokens.issue(
                user_id,
                client_id=client_id,
                scopes=wanted,
                epoch=epoch,
                cnf_jkt=jkt,
                family_id=family_id,
            )
        self._audit_issued(user_id, family, "login")
        return self._pair(access, refresh, wanted, jkt)

    def issue_sync(
        self,
        user_id: str,
        *,
        scopes: Collection[str] = (),
        client_id: str = "",
        claims: Mapping[str, object] | None = None,
        dpop_jkt: str | None = None,
        authenticated_at: float | None = None,
    ) -> TokenPair:
        """:meth:`issue` for WSGI apps."""
        wanted = scopes_of(scopes)
        jkt = self.binding(dpop_jkt)
        epoch = self.revocations.current_epoch_sync(user_id, authenticated_at=authenticated_at)
        if self._versions is not None:
            claims = self._with_version(claims, self._versions.version_sync(user_id))
        # Minted first (naming the family to come): claims the codec refuses leave no refresh
        # family behind.
        family_id = None if self.refresh_tokens is None else new_family_id()
        access = self.mint_access(user_id, wanted, epoch, jkt=jkt, extra=claims, family=family_id)
        refresh: str | None = None
        family: FamilyInfo | None = None
        if self.refresh_tokens is not None:
            refresh, family = self.refresh_tokens.issue_sync(
                user_id,
                client_id=client_id,
                scopes=wanted,
                epoch=epoch,
                cnf_jkt=jkt,
                family_id=family_id,
            )
        self._audit_issued(user_id, family, "login")
        return self._pair(access, refresh, wanted, jkt)

    @staticmethod
    def _with_version(claims: Mapping[str, object] | None, version: int) -> dict[str, object]:
        """``claims`` with the user's permission version (claim ``pv``), read at issue: a
        request under an older one has its roles read again (:mod:`bastion.authz`)."""
        if claims is not None and PERMISSION_VERSION_CLAIM in claims:
            raise ConfigurationError(
                f"claims must not set {PERMISSION_VERSION_CLAIM!r}: bastion sets it",
                setting="claims",
            )
        return {**(claims or {}), PERMISSION_VERSION_CLAIM: version}

    def _refreshed(self, rotation: Rotation, version: int | None = None) -> TokenPair:
        family = rotation.family
        extra = None if version is None else {PERMISSION_VERSION_CLAIM: version}
        access = self.mint_access(
            family.user_id,
            tuple(family.scopes),
            family.epoch,
            jkt=family.cnf_jkt,
            extra=extra,
            family=family.family_id,
        )
        if not rotation.replayed:
            self._audit_issued(family.user_id, family, "refresh")
        return self._pair(access, rotation.token, tuple(family.scopes), family.cnf_jkt)

    def refresher(self) -> RefreshTokens:
        if self.refresh_tokens is None:
            raise TokenRejected(TokenReason.UNKNOWN, "this issuer has no refresh tokens")
        return self.refresh_tokens

    async def refresh(self, refresh_token: str, *, dpop_jkt: str | None = None) -> TokenPair:
        """Rotate ``refresh_token``: a new pair in the same family. A token that was already
        rotated revokes the family (``REUSED``); see :mod:`bastion.engine.tokens.refresh`."""
        jkt = self.binding(dpop_jkt)
        rotation = await self.refresher().rotate(refresh_token, cnf_jkt=jkt)
        version = None
        if self._versions is not None:
            version = await self._versions.version(rotation.family.user_id)
        return self._refreshed(rotation, version)

    def refresh_sync(self, refresh_token: str, *, dpop_jkt: str | None = None) -> TokenPair:
        """:meth:`refresh` for WSGI apps."""
        jkt = self.binding(dpop_jkt)
        rotation = self.refresher().rotate_sync(refresh_token, cnf_jkt=jkt)
        version = None
        if self._versions is not None:
            version = self._versions.version_sync(rotation.family.user_id)
        return self._refreshed(rotation, version)

    # -- second-factor-pending tokens -------------------------------------------------------

    def issue_pending(self, user_id: str) -> str:
        """A short-lived token saying "the password was right; a second factor is due". It is
        no access token (another ``typ`` and audience) and is spent by :meth:`complete_pending`."""
        now = self._clock.now()
        return self._codec.encode(
            {
                "sub": user_id,
                "aud": self.policy.pending_audience,
                "iat": int(now),
                "exp": int(now + self.policy.pending_lifetime),
            },
            typ=PENDING_TYP,
        )

    def pending_claims(self, token: str) -> Claims:
        return self._codec.decode(token, typ=PENDING_TYP, audience=self.policy.pending_audience)

    async def complete_pending(self, token: str) -> str:
        """The user of a valid, unspent second-factor-pending token; spends it (its ``jti`` goes
        on the deny-list, so it works once). Call it after the second factor was checked."""
        claims = self.pending_claims(token)
        added = await self.revocations.revoke_jti(
            claims.issuer, claims.token_id, subject=claims.subject, expires_at=claims.expires_at
        )
        if not added:  # spent before (the deny-list write is the atomic "use")
            raise TokenRejected(TokenReason.REVOKED, "this pending token was already used")
        return claims.subject

    def complete_pending_sync(self, token: str) -> str:
        """:meth:`complete_pending` for WSGI apps."""
        claims = self.pending_claims(token)
        added = self.revocations.revoke_jti_sync(
            claims.issuer, claims.token_id, subject=claims.subject, expires_at=claims.expires_at
        )
        if not added:
            raise TokenRejected(TokenReason.REVOKED, "this pending token was already used")
        return claims.subject

    # -- checking ---------------------------------------------------------------------------

    def decode_access(self, token: str) -> tuple[Claims, int, str | None]:
        claims = self._codec.decode(token, typ=ACCESS_TYP, audience=self.policy.access_audience)
        epoch = claims.raw.get(EPOCH_CLAIM)
        if epoch is None:
            raise TokenRejected(TokenReason.MISSING_CLAIM, f"the {EPOCH_CLAIM!r} claim is missing")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise TokenRejected(TokenReason.BAD_CLAIM, f"the {EPOCH_CLAIM!r} claim is malformed")
        cnf = claims.raw.get("cnf")
        jkt: str | None = None
        if cnf is not None:
            found = cnf.get("jkt") if isinstance(cnf, dict) else None
            if not isinstance(found, str) or not found:
                raise TokenRejected(TokenReason.BAD_CLAIM, "the 'cnf' claim is malformed")
            jkt = found
        return claims, epoch, jkt

    def _principal(self, claims: Claims, jkt: str | None) -> Principal:
        scope = claims.raw.get("scope", "")
        if not isinstance(scope, str):
            raise TokenRejected(TokenReason.BAD_CLAIM, "the 'scope' claim is not a string")
        return Principal(
            subject=claims.subject,
            scopes=frozenset(scope.split()),
            token_id=claims.token_id,
            expires_at=claims.expires_at,
            claims=claims.raw,
            kind="access",
            cnf_jkt=jkt,
        )

    @staticmethod
    def family_of(claims: Claims) -> str | None:
        """The refresh family an access token names (claim ``fid``), ``None`` without one;
        ``TokenRejected`` (``BAD_CLAIM``) for a malformed one."""
        family = claims.raw.get(FAMILY_CLAIM)
        return None if family is None else check_family_id(family)

    def _checked_request(
        self, request: BearerRequest
    ) -> tuple[Claims, int, str | None, DPoPProof | None, str | None]:
        """The sans-I/O half of :meth:`authenticate`: header grammar, the JWT, the DPoP proof.
        Returns the claims, the epoch, the bound key, the proof (for its replay check) and
        the refresh family the token names."""
        credentials = parse_authorization(request.authorization, max_bytes=self.policy.max_bytes)
        if credentials is None:
            raise TokenRejected(TokenReason.MISSING, "no Authorization header")
        scheme, token = credentials.scheme, credentials.token
        claims, epoch, jkt = self.decode_access(token)
        family = self.family_of(claims)
        proof: DPoPProof | None = None
        if jkt is not None:
            if self._dpop is None:
                raise TokenRejected(TokenReason.DPOP_INVALID, "DPoP is off at this server")
            if scheme != "dpop" or request.dpop is None:
                raise TokenRejected(
                    TokenReason.DPOP_REQUIRED, "a DPoP-bound token needs the DPoP scheme"
                )
            proof = self._dpop.verify(
                request.dpop,
                method=request.method,
                url=request.url,
                access_token=token,
                expected_jkt=jkt,
            )
        elif scheme == "dpop":
            raise TokenRejected(TokenReason.NOT_BOUND, "the token is not DPoP-bound")
        elif self.policy.dpop is DPoPMode.REQUIRED:
            raise TokenRejected(TokenReason.DPOP_REQUIRED, "this server requires DPoP tokens")
        return claims, epoch, jkt, proof, family

    async def authenticate(self, request: BearerRequest) -> Principal:
        """The :class:`~bastion.core.tokens.principal.Principal` of a request's access token,
        or :class:`~bastion.core.tokens.reasons.TokenRejected` saying why not (audited, see
        :meth:`_audit_refused`). A store outage raises
        :class:`~bastion.errors.StoreUnavailable` (the bearer layer answers 503)."""
        try:
            claims, epoch, jkt, proof, family = self._checked_request(request)
        except TokenRejected as rejected:
            self._audit_refused(rejected.reason, None)
            raise
        reason = await self.revocations.check(
            claims.issuer, claims.token_id, claims.subject, epoch, family_id=family
        )
        if reason is not None:
            self._audit_refused(reason, claims.subject)
            raise TokenRejected(reason)
        if proof is not None and self._replay is not None:
            try:
                await self._replay.check_and_remember(proof)
            except TokenRejected as rejected:
                self._audit_refused(rejected.reason, claims.subject)
                raise
        return self._principal(claims, jkt)

    def authenticate_sync(self, request: BearerRequest) -> Principal:
        """:meth:`authenticate` for WSGI apps."""
        try:
            claims, epoch, jkt, proof, family = self._checked_request(request)
        except TokenRejected as rejected:
            self._audit_refused(rejected.reason, None)
            raise
        reason = self.revocations.check_sync(
            claims.issuer, claims.token_id, claims.subject, epoch, family_id=family
        )
        if reason is not None:
            self._audit_refused(reason, claims.subject)
            raise TokenRejected(reason)
        if proof is not None and self._replay is not None:
            try:
                self._replay.check_and_remember_sync(proof)
            except TokenRejected as rejected:
                self._audit_refused(rejected.reason, claims.subject)
                raise
        return self._principal(claims, jkt)

    def _audit_refused(self, reason: TokenReason, user: str | None) -> None:
        """A presented access token refused: ``input_validation_fail`` (aggregated, so a flood
        of one bad token writes two lines per interval) with the reason, and the user when the
        token was genuine (revoked, a replayed proof), never a name read from an unverified
        token. A request without a token is no event."""
        if reason is TokenReason.MISSING:
            return
        self._auditor.emit(
            EventName.INPUT_VALIDATION_FAIL,
            outcome=Outcome.BLOCKED,
            user=user,
            details={"reason": reason.value, "kind": "access_token"},
        )

    async def verify_proof(self, proof: str | None, *, method: str, url: str) -> str | None:
        """The key thumbprint of a DPoP proof sent to a token endpoint (``None`` without a
        proof, when DPoP is allowed rather than required); replays are refused."""
        if self._dpop is None or self._replay is None:
            return None
        if proof is None:
            if self.policy.dpop is DPoPMode.REQUIRED:
                raise TokenRejected(TokenReason.DPOP_REQUIRED, "a DPoP proof is required")
            return None
        checked = self._dpop.verify(proof, method=method, url=url)
        await self._replay.check_and_remember(checked)
        return checked.jkt

    def verify_proof_sync(self, proof: str | None, *, method: str, url: str) -> str | None:
        """:meth:`verify_proof` for WSGI apps."""
        if self._dpop is None or self._replay is None:
            return None
        if proof is None:
            if self.policy.dpop is DPoPMode.REQUIRED:
                raise TokenRejected(TokenReason.DPOP_REQUIRED, "a DPoP proof is required")
            return None
        checked = self._dpop.verify(proof, method=method, url=url)
        self._replay.check_and_remember_sync(checked)
        return checked.jkt

    # -- revoking ---------------------------------------------------------------------------

    def is_refresh(self, token: str) -> bool:
        policy = self.policy.refresh
        return policy is not None and token.startswith(policy.prefix)

    def _revocable(self, token: str) -> Claims | None:
        try:
            return self.decode_access(token)[0]
        except TokenRejected:
            return None  # malformed, foreign or expired: nothing to revoke (RFC 7009 2.2)

    def _audit_revoked(self, what: str, user: str | None) -> None:
        self._auditor.emit(
            EventName.AUTHN_TOKEN_REVOKED,
            outcome=Outcome.SUCCESS,
            user=user,
            details={"kind": what},
        )

    async def revoke(self, token: str) -> bool:
        """Revoke an access token (its ``jti``) or a refresh token (its whole family). Says
        whether something was revoked; an unknown or expired token is no error (RFC 7009)."""
        if self.is_refresh(token):
            done = await self.refresher().revoke(token)
            if done:
                self._audit_revoked("refresh_family", None)
            return done
        claims = self._revocable(token)
        if claims is None:
            return False
        await self.revocations.revoke_jti(
            claims.issuer, claims.token_id, subject=claims.subject, expires_at=claims.expires_at
        )
        return True

    def revoke_sync(self, token: str) -> bool:
        """:meth:`revoke` for WSGI apps."""
        if self.is_refresh(token):
            done = self.refresher().revoke_sync(token)
            if done:
                self._audit_revoked("refresh_family", None)
            return done
        claims = self._revocable(token)
        if claims is None:
            return False
        self.revocations.revoke_jti_sync(
            claims.issuer, claims.token_id, subject=claims.subject, expires_at=claims.expires_at
        )
        return True

    def _engine(self) -> SessionEngine:
        if self._sessions is None:
            raise ConfigurationError(
                "Tokens.revoke_all needs the runtime's session engine (it raises the user's "
                "epoch that sessions and tokens share); use runtime.tokens",
                setting="store",
            )
        return self._sessions

    async def revoke_all(self, user_id: str) -> int:
        """End every session, refresh family and access token of ``user_id`` (one epoch bump,
        shared with sessions' ``revoke_all``). Returns the number of listed sessions ended."""
        count = await self._engine().revoke_all(user_id)
        self._audit_revoked("all", user_id)
        return count

    def revoke_all_sync(self, user_id: str) -> int:
        """:meth:`revoke_all` for WSGI apps."""
        count = self._engine().revoke_all_sync(user_id)
        self._audit_revoked("all", user_id)
        return count
