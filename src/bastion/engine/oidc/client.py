"""One OpenID Provider, end to end: the engine API the ``bastion.oidc`` facade wraps.

::

    client = OIDCClient(
        ClientConfig(name="local", issuer="http://127.0.0.1:4000", client_id="app",
                     client_secret="...", redirect_uri="https://app.example/auth/local/callback"),
        store=store, clock=clock, http=httpx.AsyncClient(),
    )
    url = await client.begin(session_handle, next_url=request.query_params.get("next"))
    ...                                             # 302 to url; the provider calls back
    login = await client.complete(session_handle, dict(request.query_params))
    login.issuer, login.subject, login.claims["email"], login.next

:meth:`OIDCClient.begin` checks ``next_url`` (:func:`bastion.core.oidc.redirect.check_next`
with :attr:`ClientConfig.allowed_next`: ``next_refused``), stores a fresh login-state record
bound to ``session_binding`` (the browser's pre-login session handle: any stable secret string
the browser's cookie carries) and returns the authorization URL (``response_type=code``,
``state``, ``nonce``, PKCE S256).

:meth:`OIDCClient.complete` runs, in order, and raises
:class:`~bastion.core.oidc.reasons.OIDCRejected` at the first failure:

1. :func:`~bastion.core.oidc.callback.read_callback` (``state_missing``, ``provider_error``);
2. the record is taken, once (``state_unknown``, ``state_mismatch``); a record of another
   provider is ``iss_mismatch`` (a mix-up: A's response at B's callback);
3. :func:`~bastion.core.oidc.callback.check_response`: RFC 9207 ``iss`` (required when the
   discovery document says the provider sends it), ``error=``, ``code``;
4. the code exchange (``code_rejected``, ``provider_unavailable``, ``bad_response``);
5. the ID token: signature with a provider key (``id_token_invalid``), ``at_hash`` against the
   access token when present, then its claims (``id_token_invalid`` with the claim as detail,
   ``nonce_mismatch``).

A plain OAuth 2.0 provider (``ClientConfig(id_token=False)``) has no step 5: no ``nonce`` is
sent, an ``id_token`` in the token response is ignored, and the identity is the
``subject_claim`` member of the userinfo endpoint's JSON, fetched with the bearer access token
(``bad_response`` for an unusable token response or document, ``provider_unavailable`` for an
outage). Its ``issuer`` is the configured one: the namespace of its subjects.

The engine does not audit: the caller (the facade) emits ``authn_login_fail`` with
``reason=<OIDCReason>`` for a refusal and maps ``reason.status`` to the response. The engine
never logs a code, a token or a claim.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from bastion.core._check import text
from bastion.core.clock import system_clock
from bastion.core.oidc.authorize import authorization_url, end_session_url
from bastion.core.oidc.callback import check_response, read_callback
from bastion.core.oidc.discovery import is_url
from bastion.core.oidc.idtoken import DEFAULT_LEEWAY, DEFAULT_MAX_AGE, check_claims, check_leeway
from bastion.core.oidc.reasons import OIDCReason, OIDCRejected
from bastion.core.oidc.redirect import check_allowed, check_next
from bastion.core.oidc.state import new_login_state
from bastion.core.oidc.userinfo import access_token_of, subject_of
from bastion.engine.oidc.exchange import ClientAuth, exchange_code, verify_id_token
from bastion.engine.oidc.jwks import (
    DEFAULT_MAX_BYTES,
    DEFAULT_METADATA_TTL,
    DEFAULT_REFRESH_INTERVAL,
    DEFAULT_TIMEOUT,
    ProviderKeys,
    fetch_json,
)
from bastion.engine.oidc.state_store import DEFAULT_STATE_TTL, LoginStates
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from bastion.core.clock import Clock
    from bastion.core.oidc.discovery import ProviderMetadata
    from bastion.stores.base import Store

__all__ = ["ClientConfig", "OIDCClient", "VerifiedLogin"]


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{name} must be a positive number, got {value!r}", setting=name)
    return float(value)


def _check_redirect_uri(value: object) -> None:
    # http is accepted: the redirect URI is the application's own (a test client's
    # http://testserver); deployments serve it over https, which the provider's registration
    # usually enforces too.
    if not is_url(value, secure=False) or "#" in str(value):
        raise ConfigurationError(
            f"redirect_uri must be an absolute http(s) URL without a fragment, got {value!r}",
            setting="redirect_uri",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """One provider as the engine needs it. Exactly one of ``client_secret``
    (``client_secret_basic``, or ``client_secret_post`` with ``auth_method=``) and
    ``private_key`` (``private_key_jwt``: a private JWK dict, a PEM string or a joserfc key).
    ``metadata`` skips discovery (explicit endpoints). ``allowed_next`` lists absolute URLs a
    ``next`` may name besides same-origin paths. ``id_token=False``: a plain OAuth 2.0
    provider, whose identity is the ``subject_claim`` member of its userinfo endpoint's answer
    (``metadata`` must name that endpoint)."""

    name: str
    issuer: str
    client_id: str
    redirect_uri: str
    client_secret: str | None = field(default=None, repr=False)
    private_key: object = field(default=None, repr=False)
    private_key_alg: str | None = None
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    allowed_next: tuple[str, ...] = ()
    default_next: str = "/"
    metadata: ProviderMetadata | None = None
    leeway: float = DEFAULT_LEEWAY
    max_token_age: float = DEFAULT_MAX_AGE
    state_ttl: float = DEFAULT_STATE_TTL
    jwks_refresh_interval: float = DEFAULT_REFRESH_INTERVAL
    metadata_ttl: float = DEFAULT_METADATA_TTL
    timeout: float = DEFAULT_TIMEOUT
    max_response_bytes: int = DEFAULT_MAX_BYTES
    id_token: bool = True
    subject_claim: str = "sub"
    auth_method: str | None = None

    def __post_init__(self) -> None:
        text("name", self.name)
        text("subject_claim", self.subject_claim)
        if not self.id_token and (self.metadata is None or self.metadata.userinfo_endpoint is None):
            raise ConfigurationError(
                "a plain OAuth 2.0 provider (id_token=False) needs metadata= naming its "
                "userinfo_endpoint",
                setting="userinfo_endpoint",
            )
        if not is_url(text("issuer", self.issuer)):
            raise ConfigurationError(
                f"issuer must be an https URL (http on loopback only), got {self.issuer!r}",
                setting="issuer",
            )
        _check_redirect_uri(self.redirect_uri)
        if isinstance(self.scopes, str) or (self.id_token and "openid" not in self.scopes):
            raise ConfigurationError(
                "scopes must be a tuple that includes 'openid'", setting="scopes"
            )
        for scope in self.scopes:
            if not isinstance(scope, str) or not scope or " " in scope:
                raise ConfigurationError(f"bad scope {scope!r}", setting="scopes")
        object.__setattr__(self, "allowed_next", check_allowed(self.allowed_next))
        check_next(self.default_next, allowed=self.allowed_next)
        check_leeway(self.leeway)
        for name in (
            "max_token_age",
            "state_ttl",
            "jwks_refresh_interval",
            "metadata_ttl",
            "timeout",
        ):
            _positive(name, getattr(self, name))
        _positive("max_response_bytes", self.max_response_bytes)
        self.client_auth()  # validates client_id, the secret or the key

    def client_auth(self) -> ClientAuth:
        """The token endpoint authentication this config describes."""
        return ClientAuth(
            client_id=self.client_id,
            secret=self.client_secret,
            private_key=self.private_key,
            private_key_alg=self.private_key_alg,
            auth_method=self.auth_method,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedLogin:
    """A completed login: the verified ID token's claims (a plain OAuth 2.0 provider's:
    the userinfo document) and where to send the browser.

    Map (``issuer``, ``subject``) to the application's user, never the e-mail alone;
    ``claims.get("email_verified") is True`` before linking by ``claims["email"]``.
    ``id_token`` is ``None`` for a plain OAuth 2.0 provider.
    """

    provider: str
    issuer: str
    subject: str
    claims: Mapping[str, object]
    next: str
    id_token: str | None = field(repr=False)
    access_token: str | None = field(default=None, repr=False)


class OIDCClient:
    """The login flow for one provider (see the module docstring). ``http`` serves discovery
    and JWKS (an ``httpx.AsyncClient`` the caller owns; one is made, and closed by
    :meth:`aclose`, when omitted); the code exchange runs on Authlib's own httpx client."""

    __slots__ = ("_auth", "_clock", "_config", "_http", "_keys", "_own_http", "_states")

    def __init__(
        self,
        config: ClientConfig,
        *,
        store: Store,
        clock: Clock = system_clock,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._config = config
        self._auth = config.client_auth()
        self._clock = clock
        self._own_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(follow_redirects=False)
        self._states = LoginStates(store, clock=clock, ttl=config.state_ttl)
        self._keys = ProviderKeys(
            config.issuer,
            http=self._http,
            clock=clock,
            metadata=config.metadata,
            refresh_interval=config.jwks_refresh_interval,
            metadata_ttl=config.metadata_ttl,
            timeout=config.timeout,
            max_bytes=config.max_response_bytes,
        )

    def __repr__(self) -> str:
        return f"OIDCClient(name={self._config.name!r}, issuer={self._config.issuer!r})"

    @property
    def config(self) -> ClientConfig:
        return self._config

    @property
    def keys(self) -> ProviderKeys:
        return self._keys

    async def metadata(self) -> ProviderMetadata:
        """The provider's checked discovery document (cached)."""
        return await self._keys.metadata()

    async def begin(
        self,
        session_binding: str,
        next_url: str | None = None,
        *,
        redirect_uri: str | None = None,
    ) -> str:
        """The authorization URL to redirect the browser to (see the module docstring)."""
        config = self._config
        destination = check_next(next_url, allowed=config.allowed_next, default=config.default_next)
        callback = config.redirect_uri if redirect_uri is None else redirect_uri
        _check_redirect_uri(callback)
        metadata = await self._keys.metadata()
        record = new_login_state(
            provider=config.name,
            redirect_uri=callback,
            next_url=destination,
            session_binding=session_binding,
            now=self._clock.now(),
        )
        await self._states.put(record)
        return authorization_url(
            metadata.authorization_endpoint,
            record,
            client_id=config.client_id,
            scopes=config.scopes,
            nonce=config.id_token,
        )

    async def complete(self, session_binding: str, params: Mapping[str, str]) -> VerifiedLogin:
        """The verified login of a callback with query ``params`` (module docstring)."""
        config = self._config
        callback = read_callback(params)
        record = await self._states.take(callback.state, session_binding)
        if record.provider != config.name:
            raise OIDCRejected(
                OIDCReason.ISS_MISMATCH, "login state was issued for another provider"
            )
        metadata = await self._keys.metadata()
        code = check_response(
            callback, issuer=config.issuer, iss_required=metadata.iss_parameter_supported
        )
        answer = await exchange_code(
            token_endpoint=metadata.token_endpoint,
            auth=self._auth,
            code=code,
            redirect_uri=record.redirect_uri,
            code_verifier=record.code_verifier,
            timeout_s=config.timeout,
            max_bytes=config.max_response_bytes,
            require_id_token=config.id_token,
        )
        if not config.id_token:
            return await self._from_userinfo(metadata, answer, record.next)
        id_token = str(answer["id_token"])
        access = answer.get("access_token")
        claims = await verify_id_token(
            id_token,
            keys=self._keys,
            allowed_algs=metadata.id_token_algs,
            access_token=access if isinstance(access, str) else None,
        )
        subject = check_claims(
            claims,
            issuer=config.issuer,
            client_id=config.client_id,
            nonce=record.nonce,
            now=self._clock.now(),
            leeway=config.leeway,
            max_age=config.max_token_age,
        )
        return VerifiedLogin(
            provider=config.name,
            issuer=config.issuer,
            subject=subject,
            claims=dict(claims),
            next=record.next,
            id_token=id_token,
            access_token=access if isinstance(access, str) else None,
        )

    async def _from_userinfo(
        self, metadata: ProviderMetadata, answer: Mapping[str, object], next_url: str
    ) -> VerifiedLogin:
        """The login of a plain OAuth 2.0 provider: the userinfo document of the access token."""
        config = self._config
        access = access_token_of(answer)
        document = await fetch_json(
            self._http,
            str(metadata.userinfo_endpoint),
            timeout_s=config.timeout,
            max_bytes=config.max_response_bytes,
            what="userinfo",
            bearer=access,
        )
        subject = subject_of(document, config.subject_claim)
        claims = dict(document) if isinstance(document, dict) else {}
        return VerifiedLogin(
            provider=config.name,
            issuer=config.issuer,
            subject=subject,
            claims=claims,
            next=next_url,
            id_token=None,
            access_token=access,
        )

    async def logout_url(
        self,
        id_token: str | None,
        *,
        post_logout_redirect_uri: str | None = None,
        state: str | None = None,
    ) -> str | None:
        """Where to send the browser to end its provider session too (RP-initiated logout),
        or ``None`` when the provider has no ``end_session_endpoint``. ``id_token`` is the
        :attr:`VerifiedLogin.id_token` of the session (the provider's hint); the
        ``post_logout_redirect_uri`` must be registered at the provider."""
        metadata = await self._keys.metadata()
        if metadata.end_session_endpoint is None:
            return None
        if post_logout_redirect_uri is not None:
            _check_redirect_uri(post_logout_redirect_uri)
        return end_session_url(
            metadata.end_session_endpoint,
            client_id=self._config.client_id,
            id_token_hint=id_token,
            post_logout_redirect_uri=post_logout_redirect_uri,
            state=state,
        )

    async def aclose(self) -> None:
        """Close the httpx client this object made (never one the caller passed)."""
        if self._own_http:
            await self._http.aclose()
