"""``OIDCPolicy`` and ``Provider``: the sign-in slice of :class:`~bastion.config.Bastion`.

Frozen and validated, so a provider that cannot work (no way to find its endpoints, no client
credential, an endpoint over plain HTTP to a public host) fails at start-up with a message
naming the setting, not at the first login. Secrets (the client secret, the private key of
``private_key_jwt``) never appear in a ``repr``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from bastion.core._check import flag, seconds
from bastion.core.keys import SecretKey
from bastion.core.oidc.reasons import OIDCRejected
from bastion.core.oidc.redirect import check_allowed, check_next
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from bastion.core.tokens.jwk import JWTKey

__all__ = ["DEFAULT_SCOPES", "OIDCLogin", "OIDCPolicy", "Provider"]

DEFAULT_SCOPES: Final = ("openid", "email", "profile")

_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}", re.ASCII)
_SCOPE: Final = re.compile(r"[!#-\[\]-~]{1,128}", re.ASCII)  # RFC 6749 scope-token
_LOOPBACK: Final = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
_SUBJECT_CLAIM: Final = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)
_SECRET_METHODS: Final = ("client_secret_basic", "client_secret_post")  # the default first


def _url(value: object, setting: str) -> str:
    """An absolute ``https`` URL (``http`` only to a loopback host: a local provider in tests
    or development), without a fragment or user information."""
    if not isinstance(value, str) or not value or len(value) > 2048:
        raise ConfigurationError(
            f"{setting} must be a URL (at most 2048 characters)", setting=setting
        )
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in value):
        raise ConfigurationError(
            f"{setting} must not contain spaces or control characters", setting=setting
        )
    parts = urlsplit(value)
    host = (parts.hostname or "").lower()
    if parts.scheme not in {"https", "http"} or not host:
        raise ConfigurationError(
            f"{setting} must be an absolute https:// URL, got {value!r}", setting=setting
        )
    if parts.scheme == "http" and host not in _LOOPBACK:
        raise ConfigurationError(
            f"{setting} must use https:// (plain http is accepted only for a loopback host), "
            f"got {value!r}",
            setting=setting,
        )
    if parts.fragment or "#" in value or parts.username is not None or parts.password is not None:
        raise ConfigurationError(
            f"{setting} must not carry a fragment or user information, got {value!r}",
            setting=setting,
        )
    return value


def _optional_url(value: object, setting: str) -> str | None:
    return None if value is None else _url(value, setting)


def _check_budget(value: object) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000
    ):
        raise ConfigurationError(
            "oidc.max_pending_per_client must be a whole number from 1 to 10000 (or None to "
            f"turn the bound off), got {value!r}",
            setting="oidc.max_pending_per_client",
        )


class OIDCLogin(enum.StrEnum):
    """What a successful callback gives the browser (``OIDCPolicy(login=...)``)."""

    SESSION = "session"  # session.login(user_id): a new session ID and CSRF secret, then 303
    TOKENS = "tokens"  # bastion access (and refresh) tokens as JSON, no session


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class Provider:
    """One identity provider the app offers ("Sign in with ...").

    * ``name``: the provider's part of the routes (``/auth/{name}/login``): lowercase letters,
      digits, ``-`` and ``_``, at most 32 characters.
    * ``client_id``: the app's client at the provider.
    * ``issuer``: the OpenID Provider's issuer; its discovery document
      (``{issuer}/.well-known/openid-configuration``) gives the endpoints and keys, and ID
      tokens must carry exactly this ``iss``.
    * ``authorization_endpoint``, ``token_endpoint``, ``jwks_uri``: all three or none:
      explicit endpoints instead of discovery (a provider without a discovery document);
      ``userinfo_endpoint`` and ``end_session_endpoint`` (RP-initiated logout) go with them.
    * ``id_token``: ``False`` for a plain OAuth 2.0 provider (GitHub): no ID token is asked
      for or read; the identity comes from ``userinfo_endpoint`` (GET with the access token
      the code exchange returned), whose ``subject_claim`` member (GitHub: ``"id"``) is the
      subject, and ``issuer`` is then only the name of the identity namespace (an
      https URL the app picks, such as ``https://github.com``). Needs
      ``authorization_endpoint``, ``token_endpoint`` and ``userinfo_endpoint``; ``openid``
      is not required in ``scopes``. Such a provider asserts no ``email_verified``, so
      :meth:`~bastion.oidc.service.OIDC.linkable_email` refuses its e-mail.
    * ``client_secret``: the shared secret (``client_secret_basic``); or ``private_key``: a
      :class:`~bastion.core.tokens.jwk.JWTKey` with a private key, the client then
      authenticates with a signed assertion (``private_key_jwt``, RFC 7523). Exactly one.
    * ``auth_method``: how the token request authenticates (RFC 7591 names), registered the
      same at the provider. ``None`` (default): ``client_secret_basic`` (HTTP Basic) with a
      secret, ``private_key_jwt`` with a key. ``"client_secret_post"`` sends the secret in
      the form body instead (RFC 6749 2.3.1), for a provider that accepts no Basic header.
    * ``scopes``: requested scopes (default ``openid email profile``); ``openid`` is
      required (no ID token without it).
    * ``redirect_uri``: the callback URL registered at the provider. ``None`` builds it from
      the request (the callback route's own URL); set it in production behind a proxy, so that
      a forged ``Host`` header can never pick it.
    * ``post_logout_redirect_uri``: where the provider sends the browser back after
      RP-initiated logout (``/auth/{name}/logout``); it must be registered at the provider.
      ``None``: the provider shows its own signed-out page.
    """

    name: str
    issuer: str
    client_id: str
    client_secret: SecretKey | str | None = None
    private_key: JWTKey | None = None
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    jwks_uri: str | None = None
    userinfo_endpoint: str | None = None
    end_session_endpoint: str | None = None
    redirect_uri: str | None = None
    post_logout_redirect_uri: str | None = None
    id_token: bool = True
    subject_claim: str = "sub"
    auth_method: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.name, str) or _NAME.fullmatch(self.name) is None:
            raise ConfigurationError(
                "Provider.name must be 1-32 lowercase letters, digits, '-' or '_' (it is part "
                f"of the login route), got {self.name!r}",
                setting="oidc.providers.name",
            )
        where = f"oidc.providers[{self.name}]"
        if (
            not isinstance(self.client_id, str)
            or not self.client_id
            or len(self.client_id) > 512
            or any(ord(char) < 0x21 or ord(char) == 0x7F for char in self.client_id)
        ):
            raise ConfigurationError(
                f"{where}.client_id must be 1-512 visible characters", setting=f"{where}.client_id"
            )
        set_(self, "issuer", _url(self.issuer, f"{where}.issuer"))
        for endpoint in (
            "authorization_endpoint",
            "token_endpoint",
            "jwks_uri",
            "userinfo_endpoint",
            "end_session_endpoint",
            "redirect_uri",
            "post_logout_redirect_uri",
        ):
            set_(self, endpoint, _optional_url(getattr(self, endpoint), f"{where}.{endpoint}"))
        flag(f"{where}.id_token", self.id_token)
        if self.id_token:
            self._check_openid_endpoints(where)
        else:
            self._check_oauth2_endpoints(where)
        self._check_credential(where)
        scopes = (self.scopes,) if isinstance(self.scopes, str) else tuple(self.scopes)
        for scope in scopes:
            if not isinstance(scope, str) or _SCOPE.fullmatch(scope) is None:
                raise ConfigurationError(
                    f"{where}.scopes: {scope!r} is not a scope token (visible ASCII, no "
                    "spaces, quotes or backslashes)",
                    setting=f"{where}.scopes",
                )
        if len(set(scopes)) != len(scopes):
            raise ConfigurationError(
                f"{where}.scopes lists a scope twice", setting=f"{where}.scopes"
            )
        if self.id_token and "openid" not in scopes:
            raise ConfigurationError(
                f"{where}.scopes must include 'openid': without it the provider issues no ID token",
                setting=f"{where}.scopes",
            )
        set_(self, "scopes", scopes)

    def _check_openid_endpoints(self, where: str) -> None:
        explicit = {
            self.authorization_endpoint is not None,
            self.token_endpoint is not None,
            self.jwks_uri is not None,
        }
        if len(explicit) > 1:
            raise ConfigurationError(
                f"{where}: give authorization_endpoint=, token_endpoint= and jwks_uri= "
                "together (explicit endpoints), or none of them (discovery from issuer=)",
                setting=f"{where}.authorization_endpoint",
            )
        if self.subject_claim != "sub":
            raise ConfigurationError(
                f"{where}.subject_claim: an ID token's subject is always 'sub'; subject_claim "
                "names the userinfo member of a plain OAuth 2.0 provider (id_token=False)",
                setting=f"{where}.subject_claim",
            )

    def _check_oauth2_endpoints(self, where: str) -> None:
        for endpoint in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint"):
            if getattr(self, endpoint) is None:
                raise ConfigurationError(
                    f"{where}.{endpoint} is needed: a plain OAuth 2.0 provider (id_token=False) "
                    "has no discovery document, and its identity comes from userinfo_endpoint",
                    setting=f"{where}.{endpoint}",
                )
        if self.jwks_uri is not None:
            raise ConfigurationError(
                f"{where}.jwks_uri verifies ID tokens; a provider with id_token=False has none",
                setting=f"{where}.jwks_uri",
            )
        claim = self.subject_claim
        if not isinstance(claim, str) or _SUBJECT_CLAIM.fullmatch(claim) is None:
            raise ConfigurationError(
                f"{where}.subject_claim must name a userinfo member (1-64 letters, digits, '_' "
                f"or '-'), got {claim!r}",
                setting=f"{where}.subject_claim",
            )

    def _check_credential(self, where: str) -> None:
        secret, key = self.client_secret, self.private_key
        if (secret is None) == (key is None):
            raise ConfigurationError(
                f"{where}: give exactly one of client_secret= (client_secret_basic or "
                "client_secret_post) and private_key= (private_key_jwt)",
                setting=f"{where}.client_secret",
            )
        if secret is not None:
            if isinstance(secret, str):
                if not secret:
                    raise ConfigurationError(
                        f"{where}.client_secret is empty", setting=f"{where}.client_secret"
                    )
                object.__setattr__(
                    self, "client_secret", SecretKey(secret, setting=f"{where}.client_secret")
                )
            elif not isinstance(secret, SecretKey):
                raise ConfigurationError(
                    f"{where}.client_secret must be text or a SecretKey, not "
                    f"{type(secret).__name__}",
                    setting=f"{where}.client_secret",
                )
        allowed = _SECRET_METHODS if secret is not None else ("private_key_jwt",)
        method = allowed[0] if self.auth_method is None else self.auth_method
        if method not in allowed:
            raise ConfigurationError(
                f"{where}.auth_method {method!r} does not go with "
                f"{'client_secret=' if secret is not None else 'private_key='}: "
                f"{' or '.join(repr(name) for name in allowed)}",
                setting=f"{where}.auth_method",
            )
        object.__setattr__(self, "auth_method", method)
        if key is not None:
            from bastion.core.tokens.jwk import JWTKey  # noqa: PLC0415 (the jwt extra)

            if not isinstance(key, JWTKey) or not key.can_sign or key.alg == "HS256":
                raise ConfigurationError(
                    f"{where}.private_key must be a JWTKey holding an asymmetric private key "
                    "(JWTKey.from_pem(..., alg='RS256'))",
                    setting=f"{where}.private_key",
                )

    @property
    def discovery(self) -> bool:
        """Whether the endpoints come from the discovery document (no explicit endpoints)."""
        return self.authorization_endpoint is None

    def __repr__(self) -> str:
        credential = (
            "client_secret=<redacted>"
            if self.client_secret is not None
            else f"private_key={self.private_key!r}"
        )
        return (
            f"Provider(name={self.name!r}, issuer={self.issuer!r}, "
            f"client_id={self.client_id!r}, {credential}, auth_method={self.auth_method!r})"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class OIDCPolicy:
    """Sign-in with external providers.

    * ``providers``: the :class:`Provider` s, by distinct name.
    * ``allowed_next``: absolute destinations a login may return to besides same-origin
      relative paths (``https://app.example/`` allows that origin and every path under it).
      The login route's ``next`` is refused (a 400 ``next_refused``, no redirect) unless it
      is a safe relative path or starts with one of these.
    * ``default_next``: where a login goes without a usable ``next`` (default ``/``).
    * ``state_lifetime``: seconds a login attempt's ``state`` lives in the store (default
      600; 30 s to 1 hour). Single-use either way.
    * ``max_pending_per_client``: login attempts one client address (IPv6: one /64) may start
      within ``state_lifetime`` plus ``timeout`` (default 30; 1 to 10000), so it never holds
      more login records in the store; the next is a 429 ``too_many_logins`` with ``Retry-After``
      (:mod:`bastion.oidc.budget`). ``None`` turns the bound off: then bound the login route
      with a rate-limit rule of your own.
    * ``link_verified_email``: whether the account hook may link a provider identity to an
      existing account by e-mail (only when the provider asserts ``email_verified``).
      Default ``False``: identities are mapped by ``(iss, sub)`` only.
    * ``leeway``: clock skew accepted on the ID token's ``exp`` and ``iat`` (default 60 s).
    * ``timeout``: seconds for each request to a provider (default 10).
    * ``jwks_refresh``: the shortest interval between two refetches of a provider's keys on an
      unknown ``kid`` (default 60 s), so forged tokens cannot make bastion hammer the provider.
    * ``login``: ``"session"`` (default): the callback logs the browser's bastion session in
      and answers 303 to ``next``; ``"tokens"``: the callback answers 200 with bastion's own
      access (and refresh) token as JSON (``runtime.tokens``, so ``Bastion(tokens=...)`` is
      needed), and no session is logged in. ``token_scopes``: the scopes of those tokens.
    """

    providers: tuple[Provider, ...]
    allowed_next: tuple[str, ...] = ()
    default_next: str = "/"
    state_lifetime: float = 600.0
    max_pending_per_client: int | None = 30
    link_verified_email: bool = False
    leeway: float = 60.0
    timeout: float = 10.0
    jwks_refresh: float = 60.0
    login: OIDCLogin = OIDCLogin.SESSION
    token_scopes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        providers = (
            (self.providers,) if isinstance(self.providers, Provider) else tuple(self.providers)
        )
        if not providers:
            raise ConfigurationError(
                "oidc.providers needs at least one Provider", setting="oidc.providers"
            )
        names: set[str] = set()
        for provider in providers:
            if not isinstance(provider, Provider):
                raise ConfigurationError(
                    "oidc.providers must hold Provider(...) objects, not "
                    f"{type(provider).__name__}",
                    setting="oidc.providers",
                )
            if provider.name in names:
                raise ConfigurationError(
                    f"oidc.providers names {provider.name!r} twice", setting="oidc.providers"
                )
            names.add(provider.name)
        set_(self, "providers", providers)
        allowed = (
            (self.allowed_next,) if isinstance(self.allowed_next, str) else tuple(self.allowed_next)
        )
        set_(self, "allowed_next", check_allowed(allowed, setting="oidc.allowed_next"))
        if not isinstance(self.default_next, str) or not self.default_next.startswith("/"):
            raise ConfigurationError(
                "oidc.default_next must be a same-origin path such as '/' or '/account'",
                setting="oidc.default_next",
            )
        try:
            check_next(self.default_next)  # the rule every next passes: no //host, no escapes
        except OIDCRejected:
            raise ConfigurationError(
                f"oidc.default_next {self.default_next!r} is not a safe same-origin path",
                setting="oidc.default_next",
            ) from None
        lifetime = seconds("oidc.state_lifetime", self.state_lifetime)
        if not 30 <= lifetime <= 3600:
            raise ConfigurationError(
                f"oidc.state_lifetime must be between 30 and 3600 seconds, got {lifetime:g}",
                setting="oidc.state_lifetime",
            )
        set_(self, "state_lifetime", lifetime)
        _check_budget(self.max_pending_per_client)
        flag("oidc.link_verified_email", self.link_verified_email)
        leeway = seconds("oidc.leeway", self.leeway, allow_zero=True)
        if leeway > 300:
            raise ConfigurationError(
                f"oidc.leeway must be at most 300 seconds, got {leeway:g}", setting="oidc.leeway"
            )
        set_(self, "leeway", leeway)
        set_(self, "timeout", seconds("oidc.timeout", self.timeout))
        set_(self, "jwks_refresh", seconds("oidc.jwks_refresh", self.jwks_refresh))
        try:
            set_(self, "login", OIDCLogin(self.login))
        except ValueError:
            raise ConfigurationError(
                f"oidc.login must be 'session' or 'tokens', got {self.login!r}",
                setting="oidc.login",
            ) from None
        scopes = (
            (self.token_scopes,) if isinstance(self.token_scopes, str) else tuple(self.token_scopes)
        )
        for scope in scopes:
            if not isinstance(scope, str) or _SCOPE.fullmatch(scope) is None:
                raise ConfigurationError(
                    f"oidc.token_scopes: {scope!r} is not a scope token",
                    setting="oidc.token_scopes",
                )
        if scopes and self.login is not OIDCLogin.TOKENS:
            raise ConfigurationError(
                "oidc.token_scopes apply to login='tokens' only", setting="oidc.token_scopes"
            )
        set_(self, "token_scopes", scopes)

    def provider(self, name: str) -> Provider | None:
        """The provider called ``name`` (``None`` when there is none)."""
        for provider in self.providers:
            if provider.name == name:
                return provider
        return None
