"""The CSRF header checks, sans I/O: the method, exemptions, Fetch Metadata, Origin, Referer.

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

The token itself is checked by :mod:`bastion.core.csrf.tokens`; a request whose method is safe
is decided before anything else about it is read, so a page view pays for no check it does not
need (:class:`~bastion.core.csrf.guard.CSRFGuard`).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Final

from bastion.core.client import TrustedProxies
from bastion.core.csrf.config import (
    COMMON_UNSAFE_METHODS,
    SAFE_METHODS,
    CSRFConfig,
    normalize_origin,
)
from bastion.core.paths import PathPattern
from bastion.core.request import normalize_method, override_methods
from bastion.errors import ConfigurationError

__all__ = [
    "CSRFChecker",
    "CSRFReason",
    "Facts",
    "Pass",
    "Verdict",
    "rejection_body",
]


class CSRFReason(enum.StrEnum):
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
    IDENTITY_FAILED = "identity_failed"  # the app's csrf_identity function failed

    @property
    def status(self) -> int:
        """The HTTP status of the refusal: 413 and 400 for bodies, 503 when the app's identity
        function failed (the check could not be decided), 403 for everything else."""
        if self is CSRFReason.BODY_TOO_LARGE:
            return 413
        if self is CSRFReason.BODY_MALFORMED:
            return 400
        if self is CSRFReason.IDENTITY_FAILED:
            return 503
        return 403

    @property
    def detail(self) -> str:
        """One sentence for the client saying which check failed (no secrets, no echo)."""
        return _DETAILS[self]


_DETAILS: Final = {
    CSRFReason.CROSS_SITE: "Sec-Fetch-Site says this request came from another site.",
    CSRFReason.SAME_SITE: "Sec-Fetch-Site says this request came from another origin of this site.",
    CSRFReason.ORIGIN_MISMATCH: "The Origin header names an origin this app does not trust.",
    CSRFReason.REFERER_MISMATCH: "The Referer header names an origin this app does not trust.",
    CSRFReason.METHOD_OVERRIDE: "A safe method may not be overridden into an unsafe one.",
    CSRFReason.TOKEN_MISSING: (
        "No CSRF token: send it in the CSRF header or the csrf_token form field "
        "(JSON bodies need the header)."
    ),
    CSRFReason.TOKEN_IN_QUERY: (
        "The CSRF token was in the query string, where it leaks; send it in the header or "
        "the form body."
    ),
    CSRFReason.TOKEN_MALFORMED: "The CSRF token is malformed.",
    CSRFReason.TOKEN_INCORRECT: "The CSRF token does not belong to this session.",
    CSRFReason.NO_SESSION: "There is no session for this CSRF token; reload the page.",
    CSRFReason.BODY_TOO_LARGE: "The body is over the size cap for finding a CSRF token.",
    CSRFReason.BODY_MALFORMED: "The form body is malformed.",
    CSRFReason.WEBSOCKET_ORIGIN: (
        "The WebSocket handshake came from an origin this app does not trust."
    ),
    CSRFReason.IDENTITY_FAILED: "The CSRF token could not be checked. Please try again shortly.",
}


class Pass(enum.StrEnum):
    """Why a request passed without a token (for debug logs and the bench)."""

    SAFE_METHOD = "safe_method"
    EXEMPT = "exempt"
    AUTHENTICATED = "authenticated"
    BEARER = "bearer"  # the bearer layer verified an access token, and no cookie came
    COOKIELESS = "cookieless"  # a ``cookieless`` endpoint called without any cookie
    FETCH_METADATA = "fetch_metadata"
    TRUSTED_ORIGIN = "trusted_origin"
    ORIGIN = "origin"


def _referer_origin(referer: str) -> str | None:
    scheme, sep, rest = referer.partition("://")
    if not sep:
        return None
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    return normalize_origin(f"{scheme}://{authority}")


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
    forwarded: str | None = None
    authorization: str | None = None
    api_key: bool = False
    method_override: str | None = None
    query: str = ""
    content_type: str | None = None
    header_token: str | None = field(default=None, repr=False)
    accept: str | None = None
    cookie: bool = False
    bearer: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    """The header checks' answer: passed (``passed``), refused (``reason``), or neither:
    a token is needed (both ``None``)."""

    passed: Pass | None = None
    reason: CSRFReason | None = None

    @property
    def needs_token(self) -> bool:
        return self.passed is None and self.reason is None


_VERDICTS: Final = {p: Verdict(passed=p) for p in Pass}
_REFUSALS: Final = {r: Verdict(reason=r) for r in CSRFReason}
_NEED_TOKEN: Final = Verdict()


class CSRFChecker:
    """The header checks of a :class:`CSRFConfig`, compiled once: origin sets, exemption
    patterns, and ``proxies``, the one :class:`~bastion.core.client.TrustedProxies` of the app,
    which says whose scheme and host are believed (``Forwarded`` or ``X-Forwarded-Proto`` /
    ``-Host``, by its ``header``; nobody's when it trusts no proxy, the default)."""

    __slots__ = (
        "_cookieless",
        "_exempt",
        "_proxies",
        "_public",
        "_trusted",
        "_wildcards",
        "config",
    )

    def __init__(self, config: CSRFConfig, *, proxies: TrustedProxies | None = None) -> None:
        if not isinstance(config, CSRFConfig):
            raise ConfigurationError("config must be a CSRFConfig", setting="config")
        if proxies is not None and not isinstance(proxies, TrustedProxies):
            raise ConfigurationError(
                "proxies must be a bastion.core.client.TrustedProxies (for example "
                "TrustedProxies(['10.0.0.0/8']))",
                setting="proxies",
            )
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
        self._proxies = proxies if proxies is not None else TrustedProxies()
        self._exempt = tuple(PathPattern.parse(p, setting="exempt") for p in config.exempt)
        self._cookieless = tuple(
            PathPattern.parse(p, setting="cookieless") for p in config.cookieless
        )

    @property
    def proxies(self) -> TrustedProxies:
        """The proxies whose forwarding headers are believed."""
        return self._proxies

    def is_exempt(self, path: str) -> bool:
        """Whether ``path`` (the full path) is exempt: one of the ``exempt`` patterns exempts it
        (:meth:`~bastion.core.paths.PathPattern.exempts`). A path with ``//``, ``.`` or ``..``
        segments is never exempt, so ``/hooks/../transfer`` cannot borrow the exemption of
        ``/hooks/*`` from a proxy or framework that resolves it (:mod:`bastion.core.request`)."""
        return any(pattern.exempts(path) for pattern in self._exempt)

    def request_origin(self, facts: Facts) -> str | None:
        """The origin this request was sent to (scheme and host as the browser saw them)."""
        scheme, host = facts.scheme, facts.host
        if facts.forwarded_proto or facts.forwarded_host or facts.forwarded:
            reported_scheme, reported_host = self._proxies.forwarded_origin(
                facts.client,
                (facts.forwarded,) if facts.forwarded else (),
                proto=facts.forwarded_proto,
                host=facts.forwarded_host,
            )
            scheme = reported_scheme or scheme
            host = reported_host or host
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

    def check(self, facts: Facts) -> Verdict:  # noqa: PLR0911, PLR0912 (one exit per verdict)
        """The header checks, cheapest first (see the module docstring). Reads no body."""
        config = self.config
        method = facts.method
        if method not in COMMON_UNSAFE_METHODS and normalize_method(method) in SAFE_METHODS:
            if _overrides_to_unsafe(facts):
                return _REFUSALS[CSRFReason.METHOD_OVERRIDE]
            return _VERDICTS[Pass.SAFE_METHOD]
        if self._exempt and self.is_exempt(facts.path):
            return _VERDICTS[Pass.EXEMPT]
        if not facts.cookie:
            # No cookie: no ambient session credential rides on this request. It passes when
            # its authority is an access token the bearer layer verified (a browser never
            # attaches one by itself), or on an endpoint declared for clients without cookies.
            if facts.bearer:
                return _VERDICTS[Pass.BEARER]
            if self._cookieless and any(p.exempts(facts.path) for p in self._cookieless):
                return _VERDICTS[Pass.COOKIELESS]
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
                return _REFUSALS[
                    CSRFReason.SAME_SITE if site == "same-site" else CSRFReason.CROSS_SITE
                ]
        if facts.origin is not None and facts.origin.strip() != "null":
            origin = normalize_origin(facts.origin)
            if origin is not None and self.origin_allowed(origin, facts):
                return _VERDICTS[Pass.ORIGIN]
            return _REFUSALS[CSRFReason.ORIGIN_MISMATCH]
        if facts.referer is not None and self.is_https(facts):
            origin = _referer_origin(facts.referer)
            if origin is None or not self.origin_allowed(origin, facts):
                return _REFUSALS[CSRFReason.REFERER_MISMATCH]
        return _NEED_TOKEN

    def check_websocket(self, facts: Facts) -> CSRFReason | None:
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
        return CSRFReason.WEBSOCKET_ORIGIN

    def missing_reason(self, facts: Facts) -> CSRFReason:
        """The reason for a request with no token: in the query string, or simply missing."""
        name = self.config.field_name
        query = facts.query
        if query and (query.startswith(name + "=") or ("&" + name + "=") in query):
            return CSRFReason.TOKEN_IN_QUERY
        return CSRFReason.TOKEN_MISSING


def _overrides_to_unsafe(facts: Facts) -> bool:
    """Whether a method-override header or ``_method`` query parameter names a method other
    than a safe one, decoded as frameworks decode it
    (:func:`~bastion.core.request.override_methods`)."""
    if facts.method_override is None and not facts.query:
        return False
    asked = override_methods((facts.method_override,), facts.query)
    return any(method not in SAFE_METHODS for method in asked)


# -- the refusal -----------------------------------------------------------------------------------


_TITLES: Final = {413: "Request too large", 503: "Service unavailable (CSRF check failed)"}


def rejection_body(reason: CSRFReason, *, json_format: bool) -> tuple[bytes, bytes]:
    """``(content_type, body)`` of the refusal for ``reason``, JSON or a small HTML page.

    ``json_format`` comes from :func:`bastion.core.refusal.wants_json`, the rule every refusal
    follows. The JSON ``detail`` starts with ``"CSRF check failed:"``, so a client (or a test)
    can tell a CSRF refusal from the app's own 403 without knowing the reason codes.
    """
    if json_format:
        detail = f"CSRF check failed: {reason.detail}"
        payload = {"error": "csrf_failed", "reason": reason.value, "detail": detail}
        return b"application/json", json.dumps(payload).encode("utf-8")
    title = _TITLES.get(reason.status, "Forbidden (CSRF check failed)")
    html = (
        "<!doctype html><html><head><meta charset=utf-8><title>"
        f"{title}</title></head><body><h1>{title}</h1><p>{reason.detail}</p>"
        f"<p>Reason: <code>{reason.value}</code></p></body></html>"
    )
    return b"text/html; charset=utf-8", html.encode("utf-8")
