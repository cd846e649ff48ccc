"""CSRF decisions, sans I/O: Fetch Metadata, Origin, masked tokens and a capped body scanner.

The checks run cheapest first, and the body is never read when the headers decide:

1. **Safe methods** (``GET``, ``HEAD``, ``OPTIONS``, ``TRACE``) pass without a token, unless a
   method override (``X-HTTP-Method-Override``, ``X-HTTP-Method``, ``X-Method-Override`` or a
   ``_method`` query parameter) asks a framework to treat them as unsafe: refused. A body on
   a safe method does not change that: no browser sends one (``fetch()`` refuses a body on
   ``GET`` and ``HEAD``, forms put ``GET`` data in the query), so it cannot carry a forged
   cross-site request, and APIs that search with ``GET`` and a JSON body keep working. What
   such a request can still do to a view that handles any non-``GET`` as a form post is
   bounded by the rate limiter, which counts it under ``POST`` rules
   (:func:`~bastion.core.request.body_methods`).
2. **Exempt routes** and, with the explicit ``skip_authenticated=True``, requests that carry a
   bearer token or an API key (a browser never attaches those by itself) pass.
3. **Fetch Metadata**: ``Sec-Fetch-Site: same-origin`` or ``none`` passes; ``same-site`` and
   ``cross-site`` fail unless the ``Origin`` is a trusted origin. Every current browser sends the
   header, so this check alone decides nearly every browser request.
4. **Origin** (older browsers): equal to a public origin or a trusted origin passes, any other
   value fails. ``Origin: null`` decides nothing (privacy redirects and sandboxed frames send it).
5. **Token**: without Fetch Metadata or a usable Origin (old browsers, ``curl``), a masked token
   is required, from the header (``X-CSRF-Token``) or from the ``csrf_token`` field of a
   urlencoded or multipart body. Over HTTPS a ``Referer`` that names another origin fails first.

Tokens. The secret is 32 random bytes: the session's CSRF secret (synchronizer token; the
session rotates it on ``login()``) or, for apps without server sessions, the random half of a
signed double-submit cookie whose HMAC binds it to the request's identity (user or client-side
session). A token sent to a page is ``mask || (mask XOR secret)`` with a fresh 32-byte mask per
call, base64url: the bytes differ on every response, so a compression side channel (BREACH)
learns nothing across responses. Comparison is constant time and total: non-ASCII, truncated
or oversized input is ``TOKEN_MALFORMED``, never an exception.

Danger: the secret must never be written into a page unmasked; use :func:`mask_secret`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from bastion.core.cookies import Cookie, SameSite
from bastion.core.keys import KeyRing
from bastion.core.refusal import wants_json
from bastion.core.request import is_normal, normalize_method, normalize_path, override_methods
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from bastion.core.keys import SecretKey

__all__ = [
    "DEFAULT_COOKIE_NAME",
    "DEFAULT_FIELD_NAME",
    "DEFAULT_HEADER_NAME",
    "DEVELOPMENT_COOKIE_NAME",
    "MASKED_TOKEN_CHARS",
    "SAFE_METHODS",
    "CSRFConfig",
    "CSRFPolicy",
    "DoubleSubmit",
    "Facts",
    "FormTokenScanner",
    "Pass",
    "Reason",
    "ScanStatus",
    "TokenSource",
    "Verdict",
    "check_token",
    "double_submit_setup",
    "mask_secret",
    "new_secret",
    "normalize_origin",
    "rejection_body",
    "secret_from_text",
    "unmask_token",
    "wants_json",
]

logger = logging.getLogger("bastion.security.csrf")

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
DEFAULT_HEADER_NAME: Final = "X-CSRF-Token"
DEFAULT_FIELD_NAME: Final = "csrf_token"
DEFAULT_COOKIE_NAME: Final = "__Host-csrf"
DEVELOPMENT_COOKIE_NAME: Final = "csrf"
SECRET_BYTES: Final = 32
MASKED_TOKEN_CHARS: Final = 86
"""Length of a masked token: 64 bytes in unpadded base64url."""
_MAX_TOKEN_CHARS: Final = 256
_MAX_PART_HEADER_BYTES: Final = 16 * 1024
_TOKEN_CHARS = re.compile(rb"[A-Za-z0-9_-]+", re.ASCII)
_BOUNDARY = re.compile(r"""boundary\s*=\s*(?:"([^"]{1,70})"|([^\s;"]{1,70}))""", re.IGNORECASE)
_DISPOSITION_PARAM = re.compile(rb""";\s*([A-Za-z0-9*_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)""")
_HEXDIGITS: Final = frozenset(b"0123456789abcdefABCDEF")


class Reason(enum.StrEnum):
    """Why a request was refused. Stable values: they appear in responses and audit events."""

    CROSS_SITE = "cross_site"
    SAME_SITE = "same_site"
    ORIGIN_MISMATCH = "origin_mismatch"
    REFERER_MISMATCH = "referer_mismatch"
    METHOD_OVERRIDE = "method_override"
    TOKEN_MISSING = "token_missing"  # noqa: S105 (a reason code, not a password)
    TOKEN_IN_QUERY = "token_in_query"  # noqa: S105 (a reason code, not a password)
    TOKEN_MALFORMED = "token_malformed"  # noqa: S105 (a reason code, not a password)
    TOKEN_INCORRECT = "token_incorrect"  # noqa: S105 (a reason code, not a password)
    NO_SESSION = "no_session"
    BODY_TOO_LARGE = "body_too_large"
    BODY_MALFORMED = "body_malformed"
    WEBSOCKET_ORIGIN = "websocket_origin"

    @property
    def status(self) -> int:
        """The HTTP status of the refusal: 413 and 400 for bodies, 403 for everything else."""
        if self is Reason.BODY_TOO_LARGE:
            return 413
        if self is Reason.BODY_MALFORMED:
            return 400
        return 403

    @property
    def detail(self) -> str:
        """One sentence for the client saying which check failed (no secrets, no echo)."""
        return _DETAILS[self]


_DETAILS: Final = {
    Reason.CROSS_SITE: "Sec-Fetch-Site says this request came from another site.",
    Reason.SAME_SITE: "Sec-Fetch-Site says this request came from another origin of this site.",
    Reason.ORIGIN_MISMATCH: "The Origin header names an origin this app does not trust.",
    Reason.REFERER_MISMATCH: "The Referer header names an origin this app does not trust.",
    Reason.METHOD_OVERRIDE: "A safe method may not be overridden into an unsafe one.",
    Reason.TOKEN_MISSING: (
        "No CSRF token: send it in the CSRF header or the csrf_token form field "
        "(JSON bodies need the header)."
    ),
    Reason.TOKEN_IN_QUERY: (
        "The CSRF token was in the query string, where it leaks; send it in the header or "
        "the form body."
    ),
    Reason.TOKEN_MALFORMED: "The CSRF token is malformed.",
    Reason.TOKEN_INCORRECT: "The CSRF token does not belong to this session.",
    Reason.NO_SESSION: "There is no session for this CSRF token; reload the page.",
    Reason.BODY_TOO_LARGE: "The body is over the size cap for finding a CSRF token.",
    Reason.BODY_MALFORMED: "The form body is malformed.",
    Reason.WEBSOCKET_ORIGIN: "The WebSocket handshake came from an origin this app does not trust.",
}


class Pass(enum.StrEnum):
    """Why a request passed without a token (for debug logs and the bench)."""

    SAFE_METHOD = "safe_method"
    EXEMPT = "exempt"
    AUTHENTICATED = "authenticated"
    FETCH_METADATA = "fetch_metadata"
    TRUSTED_ORIGIN = "trusted_origin"
    ORIGIN = "origin"


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


def _referer_origin(referer: str) -> str | None:
    scheme, sep, rest = referer.partition("://")
    if not sep:
        return None
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    return normalize_origin(f"{scheme}://{authority}")


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
      ``X-Forwarded-Proto``/``X-Forwarded-Host`` only when the peer is in ``trusted_proxies``).
    * ``trusted_origins``: other origins allowed to post here, exact or ``https://*.example.com``.
      They also lift a ``same-site``/``cross-site`` Fetch Metadata refusal.
    * ``trusted_proxies``: IP addresses or networks whose ``X-Forwarded-*`` headers are believed.
      No forwarded header is believed without it.
    * ``exempt``: paths that skip the checks: exact (``"/webhook"``) or a prefix ending in ``/``
      (``"/hooks/"``), written as the full path (mount prefix included) and matched exactly, case
      and trailing slash included; a request path with ``//``, ``.`` or ``..`` segments is never
      exempt (:mod:`bastion.core.request`). Danger: an exempt route must authenticate its
      callers another way.
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
    trusted_proxies: tuple[str, ...] = ()
    exempt: tuple[str, ...] = ()
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
            if not isinstance(getattr(self, flag), bool):
                raise ConfigurationError(f"{flag} must be True or False", setting=flag)
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
        proxies = _str_tuple("trusted_proxies", self.trusted_proxies)
        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigurationError(
                    f"trusted_proxies: {proxy!r} is not an IP address or network "
                    "(for example '10.0.0.1' or '10.0.0.0/8')",
                    setting="trusted_proxies",
                ) from None
        object.__setattr__(self, "trusted_proxies", proxies)
        exempt = _str_tuple("exempt", self.exempt)
        for path in exempt:
            if not isinstance(path, str) or not path.startswith("/"):
                raise ConfigurationError(
                    f"exempt: {path!r} must be a path starting with '/'", setting="exempt"
                )
            if not is_normal(path):
                raise ConfigurationError(
                    f"exempt: {path!r} has an empty, '.' or '..' segment and would never match; "
                    f"write it as {normalize_path(path)!r}",
                    setting="exempt",
                )
        object.__setattr__(self, "exempt", exempt)
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
        if (
            isinstance(self.max_body_bytes, bool)
            or not isinstance(self.max_body_bytes, int)
            or not 1024 <= self.max_body_bytes <= 64 * 1024 * 1024
        ):
            raise ConfigurationError(
                f"max_body_bytes must be a whole number between 1024 and 67108864, got "
                f"{self.max_body_bytes!r}",
                setting="max_body_bytes",
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


# -- the header decision ---------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Facts:
    """What the header checks look at, extracted by an adapter in one pass over the headers.

    Header values are the raw text (latin-1 decoded); ``None`` means absent.
    """

    method: str
    path: str
    scheme: str = "https"
    host: str | None = None
    client: str | None = None
    sec_fetch_site: str | None = None
    origin: str | None = None
    referer: str | None = None
    forwarded_proto: str | None = None
    forwarded_host: str | None = None
    authorization: str | None = None
    api_key: bool = False
    method_override: str | None = None
    query: str = ""
    content_type: str | None = None
    header_token: str | None = field(default=None, repr=False)
    accept: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The header checks' answer: passed (``passed``), refused (``reason``), or neither:
    a token is needed (both ``None``)."""

    passed: Pass | None = None
    reason: Reason | None = None

    @property
    def needs_token(self) -> bool:
        return self.passed is None and self.reason is None


_VERDICTS: Final = {p: Verdict(passed=p) for p in Pass}
_REFUSALS: Final = {r: Verdict(reason=r) for r in Reason}
_NEED_TOKEN: Final = Verdict()


class CSRFPolicy:
    """A :class:`CSRFConfig` compiled for the request path: origin sets, proxy networks."""

    __slots__ = (
        "_exact_exempt",
        "_prefix_exempt",
        "_proxies",
        "_public",
        "_trusted",
        "_wildcards",
        "config",
    )

    def __init__(self, config: CSRFConfig) -> None:
        if not isinstance(config, CSRFConfig):
            raise ConfigurationError("config must be a CSRFConfig", setting="config")
        self.config = config
        self._public = frozenset(config.public_origins)
        self._trusted = frozenset(o for o in config.trusted_origins if "://*." not in o)
        wildcards = []
        for pattern in config.trusted_origins:
            if "://*." in pattern:
                scheme, _, hostport = pattern.partition("://*.")
                host, _, port = hostport.partition(":")
                wildcards.append((scheme + "://", "." + host, port))
        self._wildcards = tuple(wildcards)
        self._proxies = tuple(ipaddress.ip_network(p, strict=False) for p in config.trusted_proxies)
        self._exact_exempt = frozenset(p for p in config.exempt if not p.endswith("/"))
        self._prefix_exempt = tuple(p for p in config.exempt if p.endswith("/"))

    def is_exempt(self, path: str) -> bool:
        """Whether ``path`` (the full path) is exempt: exactly an exempt path, or under an
        exempt prefix, and in normal form. A path with ``//``, ``.`` or ``..`` segments is never
        exempt, so ``/hooks/../transfer`` cannot borrow the exemption of ``/hooks/`` from a
        proxy or framework that resolves it (:mod:`bastion.core.request`)."""
        if not is_normal(path):
            return False
        return path in self._exact_exempt or any(path.startswith(p) for p in self._prefix_exempt)

    def _proxy_trusted(self, client: str | None) -> bool:
        if not self._proxies or client is None:
            return False
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return False
        return any(address in network for network in self._proxies)

    def request_origin(self, facts: Facts) -> str | None:
        """The origin this request was sent to (scheme and host as the browser saw them)."""
        scheme, host = facts.scheme, facts.host
        if (facts.forwarded_proto or facts.forwarded_host) and self._proxy_trusted(facts.client):
            if facts.forwarded_proto:
                scheme = facts.forwarded_proto.split(",", 1)[0].strip().lower()
            if facts.forwarded_host:
                host = facts.forwarded_host.split(",", 1)[0].strip()
        if not host:
            return None
        return normalize_origin(f"{scheme}://{host}")

    def is_https(self, facts: Facts) -> bool:
        origin = self.request_origin(facts)
        return facts.scheme == "https" if origin is None else origin.startswith("https:")

    def is_trusted(self, origin: str) -> bool:
        """Whether ``origin`` (normalized) is a configured trusted origin."""
        if origin in self._trusted:
            return True
        for scheme, suffix, port in self._wildcards:
            if origin.startswith(scheme):
                host, _, origin_port = origin[len(scheme) :].partition(":")
                if host.endswith(suffix) and origin_port == port:
                    return True
        return False

    def origin_allowed(self, origin: str, facts: Facts) -> bool:
        """Whether a normalized ``origin`` is this app's own (public) origin or a trusted one."""
        if self._public:
            if origin in self._public:
                return True
        elif origin == self.request_origin(facts):
            return True
        return self.is_trusted(origin)

    def check(self, facts: Facts) -> Verdict:  # noqa: PLR0911 (one exit per verdict)
        """The header checks, cheapest first (see the module docstring). Reads no body."""
        config = self.config
        if normalize_method(facts.method) in SAFE_METHODS:
            if _overrides_to_unsafe(facts):
                return _REFUSALS[Reason.METHOD_OVERRIDE]
            return _VERDICTS[Pass.SAFE_METHOD]
        if (self._exact_exempt or self._prefix_exempt) and self.is_exempt(facts.path):
            return _VERDICTS[Pass.EXEMPT]
        if config.skip_authenticated and (
            facts.api_key
            or (facts.authorization is not None and facts.authorization[:7].lower() == "bearer ")
        ):
            return _VERDICTS[Pass.AUTHENTICATED]
        site = facts.sec_fetch_site
        if site is not None:
            site = site.strip().lower()
            if site in {"same-origin", "none"}:
                return _VERDICTS[Pass.FETCH_METADATA]
            if site in {"same-site", "cross-site"}:
                origin = None if facts.origin is None else normalize_origin(facts.origin)
                if origin is not None and self.is_trusted(origin):
                    return _VERDICTS[Pass.TRUSTED_ORIGIN]
                return _REFUSALS[Reason.SAME_SITE if site == "same-site" else Reason.CROSS_SITE]
        if facts.origin is not None and facts.origin.strip() != "null":
            origin = normalize_origin(facts.origin)
            if origin is not None and self.origin_allowed(origin, facts):
                return _VERDICTS[Pass.ORIGIN]
            return _REFUSALS[Reason.ORIGIN_MISMATCH]
        if facts.referer is not None and self.is_https(facts):
            origin = _referer_origin(facts.referer)
            if origin is None or not self.origin_allowed(origin, facts):
                return _REFUSALS[Reason.REFERER_MISMATCH]
        return _NEED_TOKEN

    def check_websocket(self, facts: Facts) -> Reason | None:
        """A WebSocket handshake is refused when its ``Origin`` is not this app's or trusted.

        Browsers always send ``Origin`` on a WebSocket handshake; a handshake without one comes
        from a non-browser client, which cannot ride on a user's cookies, and passes.
        """
        if not self.config.check_websocket_origin or facts.origin is None:
            return None
        text = facts.origin.strip()
        origin = None if text == "null" else normalize_origin(text)
        if origin is not None:
            http_like = origin.replace("wss://", "https://", 1).replace("ws://", "http://", 1)
            if self.origin_allowed(http_like, facts):
                return None
        return Reason.WEBSOCKET_ORIGIN

    def missing_reason(self, facts: Facts) -> Reason:
        """The reason for a request with no token: in the query string, or simply missing."""
        name = self.config.field_name
        query = facts.query
        if query and (query.startswith(name + "=") or ("&" + name + "=") in query):
            return Reason.TOKEN_IN_QUERY
        return Reason.TOKEN_MISSING


def _overrides_to_unsafe(facts: Facts) -> bool:
    """Whether a method-override header or ``_method`` query parameter names a method other
    than a safe one, decoded as frameworks decode it
    (:func:`~bastion.core.request.override_methods`)."""
    if facts.method_override is None and not facts.query:
        return False
    asked = override_methods((facts.method_override,), facts.query)
    return any(method not in SAFE_METHODS for method in asked)


# -- tokens ----------------------------------------------------------------------------------------


def new_secret() -> bytes:
    """32 random bytes for a double-submit cookie."""
    return secrets.token_bytes(SECRET_BYTES)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: bytes) -> bytes | None:
    if _TOKEN_CHARS.fullmatch(text) is None or len(text) % 4 == 1:
        return None
    try:
        return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
    except (binascii.Error, ValueError):  # pragma: no cover - the regex admits only valid text
        return None


def secret_from_text(text: str) -> bytes:
    """The 32 secret bytes of a session's CSRF secret (43 base64url characters).

    A session secret of any other shape (written by a third party) is hashed to 32 bytes, so
    every secret yields a usable token.
    """
    raw = _unb64(text.encode("ascii", "replace"))
    if raw is not None and len(raw) == SECRET_BYTES:
        return raw
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def mask_secret(secret: bytes) -> str:
    """A token for ``secret``: ``mask || (mask XOR secret)`` with a fresh mask, base64url.

    Every call returns different text for the same secret (BREACH defence); all of them verify.
    """
    mask = secrets.token_bytes(len(secret))
    masked = (int.from_bytes(mask) ^ int.from_bytes(secret)).to_bytes(len(secret))
    return _b64(mask + masked)


def unmask_token(token: str | bytes) -> bytes | None:
    """The secret inside a masked token, or ``None`` when ``token`` is not one. Never raises."""
    data = _ascii(token)
    if data is None or len(data) != MASKED_TOKEN_CHARS:
        return None
    raw = _unb64(data)
    if raw is None or len(raw) != 2 * SECRET_BYTES:
        return None
    mask, masked = raw[:SECRET_BYTES], raw[SECRET_BYTES:]
    return (int.from_bytes(mask) ^ int.from_bytes(masked)).to_bytes(SECRET_BYTES)


def _ascii(token: object) -> bytes | None:
    if isinstance(token, str):
        if len(token) > _MAX_TOKEN_CHARS or not token.isascii():
            return None
        return token.strip(" \t").encode("ascii")
    if isinstance(token, bytes | bytearray):
        if len(token) > _MAX_TOKEN_CHARS or not token.isascii():
            return None
        return bytes(token).strip(b" \t")
    return None


def check_token(submitted: str | bytes, secret: bytes) -> Reason | None:
    """``None`` when ``submitted`` is a masked token of ``secret``; else the reason.

    Constant time in the secret; total on any input (non-ASCII and oversized tokens are
    ``TOKEN_MALFORMED``).
    """
    unmasked = unmask_token(submitted)
    if unmasked is None:
        return Reason.TOKEN_MALFORMED
    if not hmac.compare_digest(unmasked, secret):
        return Reason.TOKEN_INCORRECT
    return None


class DoubleSubmit:
    """Signed double-submit cookies for apps without server sessions.

    The cookie is ``<random>.<mac>`` where ``mac`` is HMAC-SHA256, under the ring's
    ``"csrf-double-submit"`` subkey, over the length-prefixed identity and the random value.
    An attacker who can plant cookies (a sibling subdomain) cannot mint one for the victim's
    identity, and a cookie stops verifying when the identity changes (login): a new one is
    issued. ``identity`` is the user or client-side session the request belongs to; ``""``
    for anonymous requests.
    """

    __slots__ = ("_keys",)

    def __init__(self, keyring: KeyRing | SecretKey) -> None:
        ring = KeyRing.coerce(keyring).derive("csrf-double-submit")
        self._keys = tuple(key.reveal() for key in ring)

    def _mac(self, key: bytes, identity: str, value: bytes) -> bytes:
        who = identity.encode("utf-8", "surrogatepass")
        message = len(who).to_bytes(4) + who + value
        return hmac.digest(key, message, hashlib.sha256)

    def issue(self, identity: str) -> tuple[str, bytes]:
        """A new ``(cookie_value, secret)`` for ``identity``."""
        value = new_secret()
        return _b64(value) + "." + _b64(self._mac(self._keys[0], identity, value)), value

    def verify(self, cookie_value: str | None, identity: str) -> bytes | None:
        """The secret of a cookie issued for ``identity`` by any key of the ring, else ``None``.

        Never raises; tries every key without an early exit.
        """
        if cookie_value is None:
            return None
        data = _ascii(cookie_value)
        if data is None:
            return None
        value_text, dot, mac_text = data.partition(b".")
        if not dot:
            return None
        value, mac = _unb64(value_text), _unb64(mac_text)
        if value is None or mac is None or len(value) != SECRET_BYTES or len(mac) != 32:
            return None
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(self._mac(key, identity, value), mac)
        return value if matched else None

    def __repr__(self) -> str:
        return f"DoubleSubmit(keys={len(self._keys)})"


# -- the body scanner ------------------------------------------------------------------------------


class ScanStatus(enum.Enum):
    MORE = "more"
    """Feed the next chunk."""
    FOUND = "found"
    """The token field was found (:attr:`FormTokenScanner.token`); stop reading."""
    ABSENT = "absent"
    """The whole body was read and has no token field."""
    TOO_LARGE = "too_large"
    """``max_bytes`` were read without finding the token."""
    MALFORMED = "malformed"
    """The body is not the form it claims to be (or ends in the middle of a part)."""


_URLENCODED: Final = "application/x-www-form-urlencoded"
_MULTIPART: Final = "multipart/form-data"
_PREAMBLE, _AFTER_DELIMITER, _HEADERS, _CONTENT = range(4)


class FormTokenScanner:
    """Finds one form field in a urlencoded or multipart body fed chunk by chunk.

    Memory is bounded by ``max_bytes``: at most that much of the body is kept for parsing; the
    adapter keeps the chunks it read so it can replay the body to the app unchanged. Scanning
    stops at the token, so a file part after the token is streamed, never held.

    The work is linear in the body whatever its chunking: every search resumes where the
    previous one gave up (a body fed in 16-byte chunks is not searched again from the start of
    a pending field at each chunk), and a urlencoded name too long to decode to the field name
    is skipped without being decoded. :attr:`examined` counts the bytes searched, copied or
    decoded, so that tests can bound the work without timing it. Any chunking of a body gives
    the same answer as the body in one chunk.

    Build it with :meth:`for_content_type`, which returns ``None`` for a body that cannot carry
    a form token (JSON, text/plain...).
    """

    __slots__ = (
        "_buf",
        "_delimiter",
        "_field",
        "_is_token",
        "_max",
        "_multipart",
        "_pos",
        "_search_from",
        "_state",
        "examined",
        "token",
    )

    def __init__(self, *, field: str, max_bytes: int, boundary: bytes | None) -> None:
        self._buf = bytearray()
        self._field = field.encode("ascii")
        self._max = max_bytes
        self._multipart = boundary is not None
        self._delimiter = b"\r\n--" + (boundary or b"")
        self._pos = 0
        self._search_from = 0
        self._state = _PREAMBLE
        self._is_token = False
        self.examined = 0
        self.token: bytes | None = None

    @classmethod
    def for_content_type(
        cls, content_type: str | None, *, field: str, max_bytes: int
    ) -> FormTokenScanner | Reason | None:
        """A scanner for this body, ``None`` if it cannot hold a form field, or
        ``BODY_MALFORMED`` for a multipart type without a usable boundary."""
        if not content_type:
            return None
        media = content_type.split(";", 1)[0].strip().lower()
        if media == _URLENCODED:
            return cls(field=field, max_bytes=max_bytes, boundary=None)
        if media == _MULTIPART:
            match = _BOUNDARY.search(content_type)
            boundary = None if match is None else (match.group(1) or match.group(2))
            if not boundary or not boundary.isascii():
                return Reason.BODY_MALFORMED
            return cls(field=field, max_bytes=max_bytes, boundary=boundary.encode("ascii"))
        return None

    def feed(self, chunk: bytes, *, more: bool) -> ScanStatus:
        """Add the next chunk (``more=False`` for the last one) and say what is known.

        A body that reaches ``max_bytes`` exactly is not refused until a byte beyond the cap
        arrives: its end (an empty last chunk) may still follow.
        """
        room = self._max - len(self._buf)
        over = len(chunk) > room
        self._buf += chunk[:room] if over else chunk
        more = more or over  # a body cut at the cap is not a body that ended
        status = self._scan_multipart(more=more) if self._multipart else self._scan_form(more)
        if status is ScanStatus.MORE and over:
            return ScanStatus.TOO_LARGE
        return status

    def _find(self, needle: bytes) -> int:
        """Index of ``needle`` at or after the parse position, or -1. A failed search records
        how far it looked, so the next one (after more bytes arrived) starts there; every
        caller moves the position past a found needle, so the record never goes stale."""
        start = max(self._pos, self._search_from)
        index = self._buf.find(needle, start)
        if index < 0:
            self._search_from = max(start, len(self._buf) - len(needle) + 1)
            self.examined += len(self._buf) - start
        else:
            self.examined += index + len(needle) - start
        return index

    def _scan_form(self, more: bool) -> ScanStatus:
        # The pairs completed by this chunk (up to its last "&", or to the end of the body) are
        # split in one pass; the bytes after the last "&" wait for the next chunk, and are not
        # searched again.
        buf, start = self._buf, max(self._pos, self._search_from)
        end = len(buf) if not more else buf.rfind(b"&", start)
        self._search_from = len(buf)
        self.examined += len(buf) - start
        if end < self._pos:
            return ScanStatus.MORE
        region = bytes(buf[self._pos : end])
        self.examined += len(region)
        self._pos = end + 1
        for pair in region.split(b"&"):
            token = self._pair_token(pair)
            if token is not None:
                self.token = token
                return ScanStatus.FOUND
        return ScanStatus.MORE if more else ScanStatus.ABSENT

    def _pair_token(self, pair: bytes) -> bytes | None:
        """The decoded value of ``pair`` if its name is the token field."""
        name = self._field
        if len(pair) < len(name):
            return None
        key, _, value = pair.partition(b"=")
        # A decoded byte comes from one to three raw bytes: a raw name outside
        # [len(name), 3 * len(name)] cannot decode to the field name.
        if not len(name) <= len(key) <= 3 * len(name):
            return None
        self.examined += len(key)
        if _percent_decode(key) != name:
            return None
        self.examined += len(value)
        return _percent_decode(value)

    def _scan_multipart(self, *, more: bool) -> ScanStatus:  # noqa: PLR0911, PLR0912 (a state machine)
        buf, delimiter = self._buf, self._delimiter
        while True:
            if self._state == _PREAMBLE:
                first = delimiter[2:]
                if buf.startswith(first):
                    self._pos = len(first)
                else:
                    index = self._find(delimiter)
                    if index < 0:
                        return ScanStatus.MORE if more else ScanStatus.MALFORMED
                    self._pos = index + len(delimiter)
                self._state = _AFTER_DELIMITER
            elif self._state == _AFTER_DELIMITER:
                if len(buf) - self._pos < 2:
                    return ScanStatus.MORE if more else ScanStatus.MALFORMED
                if buf[self._pos : self._pos + 2] == b"--":
                    return ScanStatus.ABSENT
                line_end = self._find(b"\r\n")
                if line_end < 0:
                    if len(buf) - self._pos > 256:
                        return ScanStatus.MALFORMED
                    return ScanStatus.MORE if more else ScanStatus.MALFORMED
                if buf[self._pos : line_end].strip(b" \t"):
                    return ScanStatus.MALFORMED
                self._pos = line_end + 2
                self._state = _HEADERS
            elif self._state == _HEADERS:
                end = self._find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) - self._pos > _MAX_PART_HEADER_BYTES:
                        return ScanStatus.MALFORMED
                    return ScanStatus.MORE if more else ScanStatus.MALFORMED
                self.examined += end - self._pos
                self._is_token = self._names_token(bytes(buf[self._pos : end]))
                self._pos = end + 4
                self._state = _CONTENT
            else:
                index = self._find(delimiter)
                if index < 0:
                    return ScanStatus.MORE if more else ScanStatus.MALFORMED
                if self._is_token:
                    self.token = bytes(buf[self._pos : index])
                    self.examined += len(self.token)
                    return ScanStatus.FOUND
                self._pos = index + len(delimiter)
                self._state = _AFTER_DELIMITER

    def _names_token(self, headers: bytes) -> bool:
        for line in headers.split(b"\r\n"):
            name, colon, value = line.partition(b":")
            if not colon or name.strip().lower() != b"content-disposition":
                continue
            params = {
                key.lower(): _unquote(raw.strip()) for key, raw in _DISPOSITION_PARAM.findall(value)
            }
            return params.get(b"name") == self._field and b"filename" not in params
        return False


def _unquote(raw: bytes) -> bytes:
    if len(raw) >= 2 and raw[:1] == b'"' and raw[-1:] == b'"':
        return re.sub(rb"\\(.)", rb"\1", raw[1:-1])
    return raw


def _percent_decode(data: bytes) -> bytes:
    """``application/x-www-form-urlencoded`` decoding of one name or value (``+`` is a space,
    a ``%`` not followed by two hex digits stays as it is)."""
    data = data.replace(b"+", b" ")
    if b"%" not in data:
        return data
    out = bytearray()
    index, size = 0, len(data)
    while index < size:
        byte = data[index]
        if (
            byte == 0x25
            and index + 2 < size
            and data[index + 1] in _HEXDIGITS
            and data[index + 2] in _HEXDIGITS
        ):
            out.append(int(data[index + 1 : index + 3], 16))
            index += 3
        else:
            out.append(byte)
            index += 1
    return bytes(out)


# -- the refusal -----------------------------------------------------------------------------------


def rejection_body(reason: Reason, *, json_format: bool) -> tuple[bytes, bytes]:
    """``(content_type, body)`` of the refusal for ``reason``, JSON or a small HTML page.

    ``json_format`` comes from :func:`bastion.core.refusal.wants_json`, the rule every refusal
    follows. The JSON ``detail`` starts with ``"CSRF check failed:"``, so a client (or a test)
    can tell a CSRF refusal from the app's own 403 without knowing the reason codes.
    """
    if json_format:
        detail = f"CSRF check failed: {reason.detail}"
        payload = {"error": "csrf_failed", "reason": reason.value, "detail": detail}
        return b"application/json", json.dumps(payload).encode("utf-8")
    title = "Request too large" if reason.status == 413 else "Forbidden (CSRF check failed)"
    html = (
        "<!doctype html><html><head><meta charset=utf-8><title>"
        f"{title}</title></head><body><h1>{title}</h1><p>{reason.detail}</p>"
        f"<p>Reason: <code>{reason.value}</code></p></body></html>"
    )
    return b"text/html; charset=utf-8", html.encode("utf-8")


def double_submit_setup(
    config: CSRFConfig, keyring: KeyRing | SecretKey | None
) -> tuple[DoubleSubmit, Cookie] | None:
    """The signer and the cookie template of the double-submit mode; ``None`` when tokens live
    in the session. Built once, at start-up, by both middlewares.

    The cookie is readable by the page's JavaScript on purpose: single-page apps copy it into
    the header. It is no more secret than a token in the page, and HMAC-bound to the identity.
    """
    if config.token_source is not TokenSource.DOUBLE_SUBMIT:
        return None
    if keyring is None:
        raise ConfigurationError(
            "token_source=DOUBLE_SUBMIT signs its cookie: pass keyring=KeyRing.from_secrets([...])",
            setting="keyring",
        )
    try:
        cookie = Cookie(
            name=config.cookie_name or "",
            secure=not config.development,
            http_only=False,
            same_site=SameSite.STRICT,
        )
    except ValueError as exc:
        raise ConfigurationError(f"CSRF cookie policy: {exc}", setting="cookie_name") from exc
    return DoubleSubmit(keyring), cookie
