"""What CSRF protection is configured with: :class:`CSRFConfig`, :class:`TokenSource`, origins.

The settings are checked once, when the config is built, so a bad one fails at start-up with a
:class:`~bastion.errors.ConfigurationError` naming it. Origins are compared in the serialized
form of :func:`normalize_origin`; exemptions are written in the one path grammar of
:mod:`bastion.core.paths`; which proxies may report the scheme and host is not a CSRF setting
but the app's one :class:`~bastion.core.client.TrustedProxies`, given to the middleware.
"""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass
from typing import Final

from bastion.core import _check
from bastion.core.paths import parse_patterns
from bastion.errors import ConfigurationError

__all__ = [
    "COMMON_UNSAFE_METHODS",
    "DEFAULT_COOKIE_NAME",
    "DEFAULT_FIELD_NAME",
    "DEFAULT_HEADER_NAME",
    "DEVELOPMENT_COOKIE_NAME",
    "SAFE_METHODS",
    "CSRFConfig",
    "TokenSource",
    "normalize_origin",
]

logger = logging.getLogger("bastion.security.csrf")

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
COMMON_UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
"""Unsafe methods as they arrive almost always: already normalized, so a method found here
needs no :func:`~bastion.core.request.normalize_method` call to be known unsafe."""
DEFAULT_HEADER_NAME: Final = "X-CSRF-Token"
DEFAULT_FIELD_NAME: Final = "csrf_token"
DEFAULT_COOKIE_NAME: Final = "__Host-csrf"
DEVELOPMENT_COOKIE_NAME: Final = "csrf"


class TokenSource(enum.StrEnum):
    """Where the token's secret lives."""

    SESSION = "session"
    """The server session's CSRF secret (synchronizer token). Needs bastion sessions."""
    DOUBLE_SUBMIT = "double_submit"
    """A signed cookie, HMAC-bound to the request's identity. Needs a key ring."""


# -- origins ---------------------------------------------------------------------------------------


_DEFAULT_PORTS: Final = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def normalize_origin(text: str) -> str | None:
    """``scheme://host[:port]`` in lower case with the default port dropped, or ``None`` when
    ``text`` is not a serialized origin (a path, userinfo or a bad port make it ``None``)."""
    scheme, sep, rest = text.strip().partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _DEFAULT_PORTS or not rest or not rest.isascii():
        return None
    if any(c in rest for c in "/?#@\\ "):
        return None
    host, port = rest.lower(), ""
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return None
        host, tail = host[: end + 1], host[end + 1 :]
        if tail:
            if not tail.startswith(":"):
                return None
            port = tail[1:]
    elif ":" in host:
        host, _, port = host.partition(":")
    if not host or (port and (not port.isdigit() or int(port) > 65535)):
        return None
    if port and port.lstrip("0") == _DEFAULT_PORTS[scheme]:
        port = ""
    return f"{scheme}://{host}" + (f":{int(port)}" if port else "")


def _check_origin_setting(setting: str, value: str, *, wildcard: bool) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"{setting} entries must be str, got {value!r}", setting=setting)
    text = value
    if wildcard and "://*." in text:
        scheme, _, host = text.partition("://*.")
        normalized = normalize_origin(f"{scheme}://{host}")
        if normalized is None:
            raise ConfigurationError(
                f"{setting}: {value!r} is not an origin pattern like 'https://*.example.com'",
                setting=setting,
            )
        return normalized.replace("://", "://*.", 1)
    normalized = normalize_origin(text)
    if normalized is None:
        raise ConfigurationError(
            f"{setting}: {value!r} is not an origin; write scheme://host[:port] without a path, "
            "for example 'https://example.com'",
            setting=setting,
        )
    return normalized


def _str_tuple(setting: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, tuple | list | frozenset | set):
        raise ConfigurationError(
            f"{setting} must be a sequence of str (for example ({value!r},)), got "
            f"{type(value).__name__}",
            setting=setting,
        )
    return tuple(value)


def _check_header_name(setting: str, value: object) -> str:
    if not isinstance(value, str) or re.fullmatch(r"[A-Za-z0-9-]{1,64}", value) is None:
        raise ConfigurationError(
            f"{setting} must be an HTTP header name of letters, digits and '-', got {value!r}",
            setting=setting,
        )
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class CSRFConfig:
    """How CSRF protection behaves. Frozen and validated here, so a bad setting fails at start.

    * ``public_origins``: the origins users reach the app at (``"https://example.com"``). When
      empty, the origin is computed per request from the scheme and ``Host`` (through
      ``X-Forwarded-Proto``/``-Host`` or ``Forwarded`` only when the peer is a proxy the
      middleware's ``proxies=`` trusts: :class:`~bastion.core.client.TrustedProxies`; none
      by default).
    * ``trusted_origins``: other origins allowed to post here, exact or ``https://*.example.com``.
      They also lift a ``same-site``/``cross-site`` Fetch Metadata refusal.
    * ``exempt``: paths that skip the checks, in the grammar of :mod:`bastion.core.paths`:
      exact (``"/webhook"``) or a prefix (``"/hooks/*"``: ``/hooks`` and everything below it),
      written as the full path (mount prefix included) and matched as written, case and
      trailing slash included; a request path with ``//``, ``.`` or ``..`` segments is never
      exempt (:meth:`~bastion.core.paths.PathPattern.exempts`). Danger: an exempt route must
      authenticate its callers another way.
    * ``cookieless``: endpoints for clients without cookies (a token endpoint called by
      ``curl`` or a mobile app), in the same grammar: a request there that carries no
      ``Cookie`` header passes, since no ambient credential rides on it; with cookies (a
      page's own script) every check applies. Danger: such a handler must read no other
      ambient credential (HTTP Basic, a client certificate, the client address) and set no
      cookie from the request alone.
    * Requests the bearer layer authenticated with an access token, and that carry no cookie,
      pass: their authority is the token, which a browser never attaches by itself.
    * ``skip_authenticated``: pass requests with ``Authorization: Bearer`` or one of
      ``api_key_headers``. Off by default; only for routes whose CORS policy does not let other
      origins send those headers.
    * ``log_only``: refusals are logged and audited, and the request goes through (rollout;
      refused when ``ENV=production``).
    * ``check_websocket_origin``: refuse WebSocket handshakes from an untrusted ``Origin``.
      ``False`` turns that off (logged; refused when ``ENV=production``).
    * ``token_source``: :class:`TokenSource`; ``DOUBLE_SUBMIT`` needs a key ring and uses the
      cookie ``cookie_name`` (``__Host-csrf``; ``csrf`` in plain-HTTP ``development``).
    * ``max_body_bytes``: how much of a form body is read while looking for the token (413 over).
    """

    public_origins: tuple[str, ...] = ()
    trusted_origins: tuple[str, ...] = ()
    exempt: tuple[str, ...] = ()
    cookieless: tuple[str, ...] = ()
    skip_authenticated: bool = False
    api_key_headers: tuple[str, ...] = ("X-API-Key",)
    log_only: bool = False
    header_name: str = DEFAULT_HEADER_NAME
    field_name: str = DEFAULT_FIELD_NAME
    max_body_bytes: int = 1024 * 1024
    token_source: TokenSource = TokenSource.SESSION
    cookie_name: str | None = None
    development: bool = False
    check_websocket_origin: bool = True

    def __post_init__(self) -> None:
        for flag in ("skip_authenticated", "log_only", "development", "check_websocket_origin"):
            _check.flag(flag, getattr(self, flag))
        public = tuple(
            _check_origin_setting("public_origins", o, wildcard=False)
            for o in _str_tuple("public_origins", self.public_origins)
        )
        trusted = tuple(
            _check_origin_setting("trusted_origins", o, wildcard=True)
            for o in _str_tuple("trusted_origins", self.trusted_origins)
        )
        object.__setattr__(self, "public_origins", public)
        object.__setattr__(self, "trusted_origins", trusted)
        # Kept as text (printable, comparable); the checker compiles the patterns.
        exempt = tuple(p.text for p in parse_patterns(self.exempt, setting="exempt"))
        object.__setattr__(self, "exempt", exempt)
        cookieless = tuple(p.text for p in parse_patterns(self.cookieless, setting="cookieless"))
        object.__setattr__(self, "cookieless", cookieless)
        api_keys = tuple(
            _check_header_name("api_key_headers", h)
            for h in _str_tuple("api_key_headers", self.api_key_headers)
        )
        object.__setattr__(self, "api_key_headers", api_keys)
        _check_header_name("header_name", self.header_name)
        if (
            not isinstance(self.field_name, str)
            or re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.field_name) is None
        ):
            raise ConfigurationError(
                f"field_name must be 1-64 letters, digits or '_.-', got {self.field_name!r}",
                setting="field_name",
            )
        _check.whole_number(
            "max_body_bytes", self.max_body_bytes, low=1024, high=64 * 1024 * 1024, unit="bytes"
        )
        try:
            object.__setattr__(self, "token_source", TokenSource(self.token_source))
        except ValueError:
            raise ConfigurationError(
                f"token_source must be TokenSource.SESSION or TokenSource.DOUBLE_SUBMIT, got "
                f"{self.token_source!r}",
                setting="token_source",
            ) from None
        name = self.cookie_name or (
            DEVELOPMENT_COOKIE_NAME if self.development else DEFAULT_COOKIE_NAME
        )
        object.__setattr__(self, "cookie_name", name)

    def check_environment(self, *, production: bool) -> None:
        """Refuse in production the settings that remove a protection; log every opt-out.

        Refused when ``production``: ``development=True`` (the cookie without ``Secure``),
        ``log_only=True`` (nothing is refused) and ``check_websocket_origin=False`` (a page on
        any site can open a WebSocket with the user's cookies). Logged, and allowed in
        production: ``skip_authenticated=True`` and ``exempt`` routes, which narrow the
        protection to what the app says needs it. Called once by each middleware at start-up.
        """
        removed = [
            (flag, why)
            for flag, on, why in (
                (
                    "development",
                    self.development,
                    "development=True sends the CSRF cookie without Secure",
                ),
                (
                    "log_only",
                    self.log_only,
                    "log_only=True logs forged requests but does NOT refuse them",
                ),
                (
                    "check_websocket_origin",
                    not self.check_websocket_origin,
                    (
                        "check_websocket_origin=False lets a page on any site open a WebSocket "
                        "with the user's cookies (cross-site WebSocket hijacking)"
                    ),
                ),
            )
            if on
        ]
        if production and removed:
            flag, why = removed[0]
            raise ConfigurationError(
                f"{why}; this is refused when ENV=production. Remove {flag}= (roll out "
                "log_only in staging)",
                setting=flag,
            )
        for flag, why in removed:
            logger.warning("bastion CSRF: %s (setting %s). Never use it in production", why, flag)
        if self.skip_authenticated:
            logger.warning(
                "bastion CSRF: skip_authenticated=True; requests with a bearer token or an API "
                "key skip CSRF checks. Keep CORS closed for those headers"
            )
        if self.exempt:
            logger.warning(
                "bastion CSRF: exempt=%r skip every CSRF check; each must authenticate its "
                "callers another way (a webhook signature, an API key)",
                self.exempt,
            )
        if self.cookieless:
            logger.warning(
                "bastion CSRF: cookieless=%r pass requests that carry no cookie; those "
                "handlers must read no other ambient credential",
                self.cookieless,
            )
