"""The ``OIDC`` service: the two steps of a login through an external provider.

::

    oidc = OIDC(policy, store=store, auditor=auditor, clock=clock)
    url = await oidc.begin("google", session, redirect_uri=callback, next="/account")
    ...  # the browser signs in at the provider and comes back to the callback
    done = await oidc.complete("google", session, request.query_params)
    user_id = find_or_create(done.identity)
    oidc.logged_in(session, done.identity, user_id, id_token=done.id_token)  # session.login()
    # or, with OIDCPolicy(login="tokens"): pair = await oidc.issue_tokens(done.identity, user_id)
    ...
    url = await oidc.logout("google", session)          # session.logout(), then the provider

:meth:`OIDC.begin` stores a single-use login-state record (``state``, ``nonce``, the PKCE
verifier, the checked ``next``) bound to the browser's pre-login session and returns the
provider's authorization URL. :meth:`OIDC.complete` takes that record back (once), checks the
callback, exchanges the code and verifies the ID token (a plain OAuth 2.0 provider: reads its
userinfo endpoint instead); every refusal is an
:class:`~bastion.core.oidc.reasons.OIDCRejected` with its reason, audited as
``authn_login_fail`` (``method=oidc``, ``reason=...``, ``provider=...``).

The browser binding is the session's CSRF secret: a visitor without a stored session gets a
pre-session cookie for it (no store write), so a ``state`` planted in another browser, whose
session holds another secret, is refused as ``state_mismatch``. ``login()`` rotates that
secret, so the binding dies with the login.

The routes (:mod:`bastion.oidc.starlette`, :mod:`bastion.flask.oidc`) are thin shells over
this class; an app may also drive it from its own handlers.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from bastion.core.audit import EventName, Outcome
from bastion.core.oidc.discovery import ASYMMETRIC_ALGS, is_url
from bastion.core.oidc.reasons import OIDCReason, OIDCRejected
from bastion.errors import ConfigurationError
from bastion.oidc._loop import LoopThread
from bastion.oidc.budget import LoginBudget
from bastion.oidc.issuing import IssuedTokens, TokenIssuer, checked_tokens
from bastion.oidc.logout_hint import LOGOUT_KEY, FieldCipher, hint_of, kept_for_logout
from bastion.oidc.policy import OIDCPolicy
from bastion.oidc.refusals import (
    BAD_HOST,
    LOGIN_STORE_UNAVAILABLE,
    METHOD,
    NO_ACCOUNT,
    UNKNOWN_PROVIDER,
    refusal_for,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    import httpx

    from bastion.core.audit import Auditor
    from bastion.core.clock import Clock
    from bastion.core.keys import SecretKey
    from bastion.engine.oidc import ClientConfig, OIDCClient
    from bastion.engine.sessions import Session
    from bastion.oidc.policy import Provider
    from bastion.stores.base import Store

__all__ = [
    "BAD_HOST",
    "LOGIN_STORE_UNAVAILABLE",
    "LOGOUT_KEY",
    "METHOD",
    "NO_ACCOUNT",
    "OIDC",
    "UNKNOWN_PROVIDER",
    "Completion",
    "Identity",
    "IssuedTokens",
    "TokenIssuer",
    "refusal_for",
    "usable_callback",
]


def _frozen(claims: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(claims))


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """Who the provider says signed in. ``(issuer, subject)`` is the identity: map it to the
    app's user. ``email`` is a hint: it identifies nobody unless ``email_verified`` is true
    and the app links by e-mail on purpose (:meth:`OIDC.linkable_email`). ``provider`` is
    the configured provider's name; ``claims`` the verified ID token's claims (with the
    UserInfo answer's, for a plain OAuth 2.0 provider)."""

    provider: str
    issuer: str
    subject: str
    email: str | None = None
    email_verified: bool = False
    claims: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "claims", _frozen(self.claims))


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    """A checked callback: the ``identity`` and where the login goes next (already checked
    against the policy's allow-list when the login began)."""

    identity: Identity
    next: str
    id_token: str | None = field(default=None, repr=False)


class OIDC:
    """Sign-in with the providers of ``policy``; the module docstring has the flow.

    ``store`` keeps the login-state records (the runtime's store), ``auditor`` and ``clock``
    are the runtime's. ``http`` is the ``httpx.AsyncClient`` for discovery and keys (default:
    one made here, closed by :meth:`aclose`). ``tokens`` is ``runtime.tokens``, needed with
    ``OIDCPolicy(login="tokens")`` (and unused otherwise). ``crypto`` is ``runtime.crypto``
    (field encryption): with it a session keeps its ID token encrypted for the logout's
    ``id_token_hint``; without it, none (:mod:`bastion.oidc.logout_hint`).

    The ``*_sync`` methods (Flask, WSGI) run the same coroutines on one event loop this service
    starts in a daemon thread on first use, so the provider connections and the cached keys
    live on one loop; :meth:`close` stops it.
    """

    __slots__ = (
        "_auditor",
        "_bridge",
        "_budget",
        "_clients",
        "_clock",
        "_crypto",
        "_http",
        "_own_http",
        "_policy",
        "_tokens",
    )

    def __init__(
        self,
        policy: OIDCPolicy,
        *,
        store: Store,
        auditor: Auditor,
        clock: Clock,
        http: httpx.AsyncClient | None = None,
        tokens: TokenIssuer | None = None,
        crypto: FieldCipher | None = None,
    ) -> None:
        if not isinstance(policy, OIDCPolicy):
            raise ConfigurationError(
                "OIDC needs an OIDCPolicy(providers=(Provider(...),))", setting="oidc"
            )
        self._tokens = checked_tokens(policy, tokens)
        import httpx  # noqa: PLC0415 (the oidc extra)

        from bastion.engine.oidc import OIDCClient  # noqa: PLC0415 (the oidc extra)

        self._policy = policy
        self._crypto = crypto
        self._auditor = auditor
        self._clock = clock
        self._own_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(follow_redirects=False)
        self._clients = {
            provider.name: OIDCClient(
                client_config(provider, policy), store=store, clock=clock, http=self._http
            )
            for provider in policy.providers
        }
        pending = policy.max_pending_per_client
        self._budget = (
            None
            if pending is None
            else LoginBudget(store, limit=pending, window=policy.state_lifetime + policy.timeout)
        )
        self._bridge = LoopThread()

    @property
    def policy(self) -> OIDCPolicy:
        return self._policy

    def provider(self, name: str) -> Provider | None:
        """The configured provider called ``name`` (``None``: the routes answer 404)."""
        return self._policy.provider(name)

    async def begin(
        self,
        provider: str,
        session: Session,
        *,
        redirect_uri: str,
        next: str | None = None,  # noqa: A002 (the route's parameter)
    ) -> str:
        """Start a login: store its state record and return the provider's authorization URL.

        ``redirect_uri`` is the callback's absolute URL (the provider's ``redirect_uri``
        setting wins when set). ``next`` is checked now (:data:`OIDCReason.NEXT_REFUSED`);
        ``None`` or empty means the policy's ``default_next``. The session gets its CSRF
        secret now (an anonymous visitor: a pre-session cookie), the browser binding. The
        client address is charged one login of its budget first
        (:data:`OIDCReason.TOO_MANY_LOGINS`, :mod:`bastion.oidc.budget`)."""
        client = self._client(provider, session)
        chosen = client.config
        try:
            if self._budget is not None:
                await self._budget.charge(session.client_ip)
            return await client.begin(
                session.csrf_secret,
                next,
                redirect_uri=self._policy_redirect(provider) or redirect_uri,
            )
        except OIDCRejected as error:
            self.audit_refusal(session, chosen.name, error.reason, error.detail)
            raise

    async def complete(
        self, provider: str, session: Session, params: Mapping[str, str]
    ) -> Completion:
        """Finish a login from the callback's query ``params``: the state record is taken
        (single use), the callback checked, the code exchanged once and the ID token verified.
        Raises :class:`OIDCRejected` (audited) on any failure."""
        client = self._client(provider, session)
        # A browser without a session secret cannot own any state: a fresh random binding
        # matches no record (state_mismatch for a live state, state_unknown otherwise).
        binding = session.verification_csrf_secret() or secrets.token_urlsafe(32)
        try:
            login = await client.complete(binding, params)
        except OIDCRejected as error:
            self.audit_refusal(session, provider, error.reason, error.detail)
            raise
        email = login.claims.get("email")
        if not isinstance(email, str) or not email:
            email = None
        identity = Identity(
            provider=login.provider,
            issuer=login.issuer,
            subject=login.subject,
            email=email,
            email_verified=login.claims.get("email_verified") is True,
            claims=login.claims,
        )
        return Completion(identity=identity, next=login.next, id_token=login.id_token)

    def begin_sync(
        self,
        provider: str,
        session: Session,
        *,
        redirect_uri: str,
        next: str | None = None,  # noqa: A002 (the route's parameter)
    ) -> str:
        """:meth:`begin` for synchronous code (see the class docstring)."""
        return self._bridge.run(self.begin(provider, session, redirect_uri=redirect_uri, next=next))

    def complete_sync(
        self, provider: str, session: Session, params: Mapping[str, str]
    ) -> Completion:
        """:meth:`complete` for synchronous code (see the class docstring)."""
        return self._bridge.run(self.complete(provider, session, params))

    def _policy_redirect(self, provider: str) -> str | None:
        chosen = self._policy.provider(provider)
        return None if chosen is None else chosen.redirect_uri

    def _client(self, provider: str, session: Session) -> OIDCClient:
        client = self._clients.get(provider)
        if client is None:
            # The routes answer 404 before calling; a direct caller gets the typed error.
            self.audit_refusal(session, provider, OIDCReason.PROVIDER_ERROR, UNKNOWN_PROVIDER)
            raise OIDCRejected(OIDCReason.PROVIDER_ERROR, detail=UNKNOWN_PROVIDER)
        return client

    def linkable_email(self, identity: Identity) -> str:
        """The e-mail an account hook may link ``identity`` to an existing account by: only
        when the policy allows it (``link_verified_email=True``) and the provider asserted
        ``email_verified``. Raises :data:`OIDCReason.UNVERIFIED_EMAIL` otherwise (the
        routes answer 403 and audit it)."""
        if not self._policy.link_verified_email:
            raise OIDCRejected(
                OIDCReason.UNVERIFIED_EMAIL,
                "linking by e-mail is off (OIDCPolicy(link_verified_email=False))",
                detail="linking_disabled",
            )
        if identity.email is None or identity.email_verified is not True:
            raise OIDCRejected(OIDCReason.UNVERIFIED_EMAIL, detail="not_verified")
        return identity.email

    def logged_in(
        self,
        session: Session,
        identity: Identity,
        user_id: str | int,
        *,
        id_token: str | None = None,
    ) -> None:
        """Log ``session`` in as ``user_id`` (new session ID and CSRF secret) and audit
        ``authn_login_success``. With field encryption (``crypto=``) ``id_token``
        (:attr:`Completion.id_token`) is kept in the session encrypted (:data:`LOGOUT_KEY`),
        the hint of a later RP-initiated logout; without it nothing is kept
        (:mod:`bastion.oidc.logout_hint`)."""
        session.login(user_id)
        kept = kept_for_logout(session, identity.provider, id_token, self._crypto)
        if kept is not None:
            session[LOGOUT_KEY] = kept
        else:
            session.pop(LOGOUT_KEY, None)
        self._auditor.emit(
            EventName.AUTHN_LOGIN_SUCCESS,
            outcome=Outcome.SUCCESS,
            user=user_id,
            client_ip=session.client_ip,
            details={"method": METHOD, "provider": identity.provider},
        )

    # -- login="tokens" ----------------------------------------------------------------------

    async def issue_tokens(self, identity: Identity, user_id: str | int) -> IssuedTokens:
        """bastion's access (and refresh) token for ``user_id`` signed in as ``identity``
        (``OIDCPolicy(login="tokens")``), audited ``authn_login_success`` (``login=tokens``;
        the token service adds ``authn_token_created``). No session is logged in."""
        issuer = self._token_issuer()
        pair = await issuer.issue(
            _user_text(user_id),
            scopes=self._policy.token_scopes,
            client_id=f"oidc:{identity.provider}",
            authenticated_at=self._clock.now(),
        )
        self._audit_tokens(identity, user_id)
        return pair

    def issue_tokens_sync(self, identity: Identity, user_id: str | int) -> IssuedTokens:
        """:meth:`issue_tokens` for synchronous code (the store's sync side, no event loop)."""
        issuer = self._token_issuer()
        pair = issuer.issue_sync(
            _user_text(user_id),
            scopes=self._policy.token_scopes,
            client_id=f"oidc:{identity.provider}",
            authenticated_at=self._clock.now(),
        )
        self._audit_tokens(identity, user_id)
        return pair

    def _token_issuer(self) -> TokenIssuer:
        if self._tokens is None:
            raise ConfigurationError(
                "issuing tokens needs OIDCPolicy(login='tokens') and OIDC(tokens=runtime.tokens)",
                setting="oidc.login",
            )
        return self._tokens

    def _audit_tokens(self, identity: Identity, user_id: str | int) -> None:
        self._auditor.emit(
            EventName.AUTHN_LOGIN_SUCCESS,
            outcome=Outcome.SUCCESS,
            user=user_id,
            details={"method": METHOD, "provider": identity.provider, "login": "tokens"},
        )

    # -- RP-initiated logout -----------------------------------------------------------------

    async def logout(self, provider: str, session: Session) -> str:
        """End ``session`` (server data deleted, cookie expired: :meth:`Session.logout`), then
        the URL to send the browser to: the provider's ``end_session_endpoint`` with
        ``client_id``, the session's ID token as ``id_token_hint`` (only with ``crypto=``, when
        this session signed in through ``provider``) and the provider's
        ``post_logout_redirect_uri``; without such an
        endpoint, that URI or ``/``. The session ends even when the provider's metadata cannot
        be read (:class:`OIDCRejected`, ``provider_unavailable`` or ``bad_response``)."""
        client = self._client(provider, session)
        id_token = hint_of(session, provider, self._crypto)
        session.logout()
        chosen = self._policy.provider(provider)
        back = None if chosen is None else chosen.post_logout_redirect_uri
        url = await client.logout_url(id_token, post_logout_redirect_uri=back)
        return url or back or "/"

    def logout_sync(self, provider: str, session: Session) -> str:
        """:meth:`logout` for synchronous code (see the class docstring)."""
        return self._bridge.run(self.logout(provider, session))

    def audit_refusal(
        self,
        session: Session | None,
        provider: str,
        reason: OIDCReason | str,
        detail: str | None = None,
    ) -> None:
        """Audit a refused login as ``authn_login_fail`` (``reason``, ``detail``)."""
        details: dict[str, str] = {
            "method": METHOD,
            "reason": str(reason),
            "provider": provider[:64],
        }
        if detail:
            details["detail"] = detail
        self._auditor.emit(
            EventName.AUTHN_LOGIN_FAIL,
            outcome=Outcome.FAILURE,
            client_ip=None if session is None else session.client_ip,
            details=details,
        )

    async def aclose(self) -> None:
        """Close the HTTP client this service made (not one it was given)."""
        for client in self._clients.values():
            await client.aclose()
        if self._budget is not None:
            await self._budget.aclose()
        if self._own_http:
            await self._http.aclose()

    def close(self) -> None:
        """Stop the event loop of the ``*_sync`` methods (after closing the HTTP client on
        it, when it runs) and close the HTTP client."""
        if self._bridge.running:
            self._bridge.run(self.aclose())
            self._bridge.stop()
        else:
            asyncio.run(self.aclose())


def _user_text(user_id: object) -> str:
    """``user_id`` as the tokens' subject, under the rule of ``session.login()``: a hook that
    returns ``True``, ``""`` or an object is a bug in both modes, never a token for ``"True"``
    (tokens mode) where session mode refuses."""
    if isinstance(user_id, bool) or not isinstance(user_id, str | int) or user_id == "":
        raise ConfigurationError(
            "the account hook must return a non-empty str or int user id (or None)",
            setting="on_identity",
        )
    return str(user_id)


def usable_callback(url: str) -> str | None:
    """``url`` (a callback URL an adapter built from the request) when it is one the provider
    could be given, ``None`` when the request's ``Host`` left it malformed (``BAD_HOST``)."""
    return url if is_url(url, secure=False) and "#" not in url else None


def client_config(provider: Provider, policy: OIDCPolicy) -> ClientConfig:
    """The engine's configuration of ``provider`` under ``policy``."""
    from bastion.core.oidc.discovery import ProviderMetadata  # noqa: PLC0415
    from bastion.engine.oidc import ClientConfig  # noqa: PLC0415 (the oidc extra)

    metadata = None
    if not provider.discovery:
        metadata = ProviderMetadata(
            issuer=provider.issuer,
            authorization_endpoint=str(provider.authorization_endpoint),
            token_endpoint=str(provider.token_endpoint),
            jwks_uri=provider.jwks_uri,
            id_token_algs=tuple(sorted(ASYMMETRIC_ALGS)) if provider.id_token else (),
            userinfo_endpoint=provider.userinfo_endpoint,
            end_session_endpoint=provider.end_session_endpoint,
        )
    secret = provider.client_secret
    key = provider.private_key
    return ClientConfig(
        name=provider.name,
        issuer=provider.issuer,
        client_id=provider.client_id,
        # Each login passes its callback URL; this one is only the engine's fallback.
        redirect_uri=provider.redirect_uri or provider.issuer,
        client_secret=None if secret is None else _secret_text(secret),
        private_key=None if key is None else key.key,
        private_key_alg=None if key is None else key.alg,
        scopes=provider.scopes,
        allowed_next=policy.allowed_next,
        default_next=policy.default_next,
        metadata=metadata,
        leeway=policy.leeway,
        state_ttl=policy.state_lifetime,
        jwks_refresh_interval=policy.jwks_refresh,
        timeout=policy.timeout,
        id_token=provider.id_token,
        subject_claim=provider.subject_claim,
        auth_method=provider.auth_method,
    )


def _secret_text(secret: SecretKey | str) -> str:
    if isinstance(secret, str):
        return secret
    return secret.reveal().decode("utf-8")
