"""Cross-origin resource sharing: a validated policy and the decisions it makes, sans I/O.

:class:`CORSPolicy` is the configuration: frozen, checked when it is built, so a mistake fails
at start-up with a :class:`~bastion.errors.ConfigurationError` naming the setting.
:class:`CompiledCORS` is what a middleware holds: every header a response can carry is rendered
to bytes once, per configured origin; on the request path only a pattern-matched origin is
copied into a header. The adapters (:mod:`bastion.asgi.cors`, :mod:`bastion.wsgi.cors`) read
four request headers and apply the answer; nothing here sees a scope or an environ.

Origins. A configured origin is exact (``"https://app.example.com"``, ``"http://localhost:3000"``)
or a pattern (``"https://*.example.com"``), or the lone ``"*"``. Exact origins are normalised
as browsers serialise them (lower-case scheme and host, the default port dropped, one trailing
``/`` tolerated); a path, a query, userinfo, a non-ASCII host (write its ``xn--`` form) or a
trailing dot is refused. A pattern's ``*`` stands for one or more whole DNS labels in front of
a suffix of at least two labels, with the pattern's port: ``https://*.example.com`` admits
``https://a.example.com`` and ``https://a.b.example.com``, never ``https://example.com``,
``https://evilexample.com``, ``https://example.com.evil`` or ``https://a.example.com:8443``.
Danger: the suffix is not checked against the public-suffix list; ``https://*.co.uk`` is every
British company.

A request's ``Origin`` is compared as sent, byte for byte, with those serialised forms. A
browser only ever sends the serialised form, so anything else (``HTTPS://EXAMPLE.COM``, a
trailing dot, ``https://a@example.com``, a path, a default port written out, non-ASCII bytes,
more than :data:`MAX_ORIGIN_BYTES`, two ``Origin`` headers, which the adapters join with a
comma) matches nothing and gets no CORS header: it comes from a program, which needs no CORS to
read the response anyway. ``Origin: null`` (sandboxed frames, ``file:`` pages, some redirects)
is admitted only with ``allow_null=True``, which logs a warning: any page can send it.

Answers.

* A **preflight** is an ``OPTIONS`` (compared as :func:`~bastion.core.request.normalize_method`
  compares methods, so ``options`` is one) carrying ``Origin`` and
  ``Access-Control-Request-Method``. It is answered here, never by the app: ``204`` with the
  allow headers when the origin, the method, every requested header and a private-network
  request (``Access-Control-Request-Private-Network: true``) are allowed, else ``403`` with no
  CORS header at all and a ``malicious_cors`` audit event. A 403 rather than passing the
  request to the app: the app has nothing to say to a preflight, an app's own ``OPTIONS``
  handler could answer it with headers that contradict the policy, and the refusal costs no
  application code and no store I/O (the layer sits before rate limiting and sessions). The
  browser fails the preflight either way; the status makes the refusal visible in its console
  and in logs. Both answers carry ``Vary: Origin, Access-Control-Request-Method,
  Access-Control-Request-Headers, Access-Control-Request-Private-Network`` (they depend on
  those headers; ``OPTIONS`` answers are not cached by HTTP caches, so this costs nothing).
* An ``OPTIONS`` without those two headers is a plain request and goes to the app.
* Every other response passes through the app. The layer owns the ``Access-Control-*``
  response headers: any the app set are removed, so a disallowed origin gets none. An allowed
  origin gets ``Access-Control-Allow-Origin`` (its own value echoed; only a configured origin
  or one matching a pattern's strict grammar is ever echoed), ``Access-Control-Allow-Credentials:
  true`` with ``allow_credentials`` and ``Access-Control-Expose-Headers`` when set. Unless the
  policy is the bare ``"*"``, every response (from an allowed origin, a disallowed one, or none)
  carries ``Vary: Origin``, merged into the app's ``Vary`` (never duplicated; left alone when
  it is ``*``), as the Fetch standard asks of responses whose headers depend on ``Origin``.
* With the bare ``"*"`` (never with credentials) the resource is public: every response carries
  the same ``Access-Control-Allow-Origin: *``, whatever the ``Origin``, and so needs no
  ``Vary`` (the Fetch standard's advice for public resources).

Methods are compared as :func:`~bastion.core.request.normalize_method` compares them (ASCII
upper-cased), header names case-insensitively. ``*`` is refused in ``allow_methods``,
``allow_headers`` and ``expose_headers``: browsers read it as "any" only for requests without
credentials and never as ``Authorization``; list the names.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from bastion.core.request import normalize_method
from bastion.core.vary import merge_vary
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "MAX_ORIGIN_BYTES",
    "MAX_REQUEST_HEADERS_BYTES",
    "PREFLIGHT_VARY",
    "CORSPolicy",
    "CORSReason",
    "CompiledCORS",
    "Preflight",
    "apply_headers",
    "parse_origin_setting",
]

logger = logging.getLogger("bastion.security.cors")

MAX_ORIGIN_BYTES: Final = 300
"""Longest ``Origin`` compared (scheme, a 253-character host and a port fit)."""
MAX_REQUEST_HEADERS_BYTES: Final = 2048
"""Longest ``Access-Control-Request-Headers`` read; a longer one refuses the preflight."""
_MAX_REQUESTED_HEADERS: Final = 64
_MAX_METHOD_BYTES: Final = 64
MAX_AGE_LIMIT: Final = 86_400
"""The largest ``max_age`` (Firefox's cap; Chromium stops at 7200 seconds)."""

PREFLIGHT_VARY: Final = (
    b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers, "
    b"Access-Control-Request-Private-Network"
)

_ACAO: Final = b"access-control-allow-origin"
_ACAC: Final = (b"access-control-allow-credentials", b"true")
_ACAPN: Final = (b"access-control-allow-private-network", b"true")
_PREFIX: Final = b"access-control-"
_TEXT: Final = (b"content-type", b"text/plain; charset=utf-8")
_VARY_ORIGIN: Final = (b"vary", b"Origin")
_FIRST: Final = frozenset(b"aAvV")
"""First bytes of the response header names the layer looks at (``Access-Control-*``, ``Vary``)."""

_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", re.ASCII)
_SCHEME: Final = re.compile(r"[a-z][a-z0-9+.\-]*", re.ASCII)
_LABEL: Final = re.compile(r"[a-z0-9_\-]{1,63}", re.ASCII)
_LABELS: Final = re.compile(rb"[a-z0-9_\-]{1,63}(?:\.[a-z0-9_\-]{1,63})*")
_SERIALISED: Final = re.compile(
    rb"[a-z][a-z0-9+.\-]*://(?:[a-z0-9_\-]{1,63}(?:\.[a-z0-9_\-]{1,63})*|\[[0-9a-f:.]+\])"
    rb"(?::[1-9][0-9]{0,4})?"
)
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_OPAQUE_SCHEMES: Final = frozenset({"file", "data", "blob", "about", "javascript"})
_FORBIDDEN_METHODS: Final = frozenset({"CONNECT", "TRACE", "TRACK"})
# Fetch's forbidden request-header names: a page can never set them, so a CORS permission for
# them is a misunderstanding (cookies go with allow_credentials).
_FORBIDDEN_REQUEST_HEADERS: Final = frozenset(
    {
        "accept-charset",
        "accept-encoding",
        "access-control-request-headers",
        "access-control-request-method",
        "access-control-request-private-network",
        "connection",
        "content-length",
        "cookie",
        "cookie2",
        "date",
        "dnt",
        "expect",
        "host",
        "keep-alive",
        "origin",
        "referer",
        "set-cookie",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "via",
    }
)
_FORBIDDEN_RESPONSE_HEADERS: Final = frozenset({"set-cookie", "set-cookie2"})
_FORBIDDEN: Final = {
    **{("allow_methods", m): "browsers never send this method" for m in _FORBIDDEN_METHODS},
    **{
        ("allow_headers", h): (
            "a page can never set this header (the browser does), so it needs no CORS "
            "permission (cookies go with allow_credentials)"
        )
        for h in (*_FORBIDDEN_REQUEST_HEADERS, "sec-")
    },
    **{
        ("expose_headers", h): "browsers never let a page read it"
        for h in _FORBIDDEN_RESPONSE_HEADERS
    },
}


class CORSReason(enum.StrEnum):
    """Why a preflight was refused (the ``reason`` of its ``malicious_cors`` audit event)."""

    ORIGIN_MALFORMED = "origin_malformed"
    """``Origin`` is not a serialised origin (case, path, userinfo, two headers, too long)."""
    ORIGIN_DISALLOWED = "origin_disallowed"
    METHOD_MALFORMED = "method_malformed"
    METHOD_DISALLOWED = "method_disallowed"
    HEADERS_MALFORMED = "headers_malformed"
    """``Access-Control-Request-Headers`` is not a list of header names, or is too long."""
    HEADER_DISALLOWED = "header_disallowed"
    PRIVATE_NETWORK_DISALLOWED = "private_network_disallowed"


# -- settings --------------------------------------------------------------------------------------


def _host(setting: str, value: str, host: str) -> str:
    """The serialised form of a configured ``host`` (lower case DNS name, IPv4, ``[IPv6]``)."""
    if host.startswith("["):
        if not host.endswith("]"):
            raise ConfigurationError(
                f"{setting}: {value!r} has an unclosed '[' in its host", setting=setting
            )
        try:
            return f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            raise ConfigurationError(
                f"{setting}: {value!r} has no valid IPv6 address between '[' and ']'",
                setting=setting,
            ) from None
    if host.endswith("."):
        raise ConfigurationError(
            f"{setting}: {value!r} ends its host in '.'; a trailing dot makes another origin "
            f"that browsers keep apart. Write {value.rstrip('/').rstrip('.')!r}",
            setting=setting,
        )
    labels = host.split(".")
    last = labels[-1]
    if last.isdigit() or last.startswith("0x"):  # read as an IPv4 address by the URL standard
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise ConfigurationError(
                f"{setting}: {value!r} has a host browsers read as an IPv4 address; write it "
                "as four decimal numbers (127.0.0.1)",
                setting=setting,
            ) from None
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ConfigurationError(
            f"{setting}: {value!r} has a host that is not a DNS name (labels of letters, "
            "digits, '-' and '_', 1 to 63 characters, separated by '.')",
            setting=setting,
        )
    return host


def _scheme_and_rest(setting: str, value: str) -> tuple[str, str]:
    """The lower-case scheme and the authority of a configured origin (checked characters)."""
    text = value.strip()
    if not text.isascii():
        raise ConfigurationError(
            f"{setting}: {value!r} is not ASCII; write an international host in the 'xn--' "
            "form browsers send",
            setting=setting,
        )
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or _SCHEME.fullmatch(scheme) is None:
        raise ConfigurationError(
            f"{setting}: {value!r} is not an origin; write scheme://host[:port], for example "
            "'https://app.example.com'",
            setting=setting,
        )
    if scheme in _OPAQUE_SCHEMES:
        raise ConfigurationError(
            f"{setting}: {value!r}: pages from {scheme}: URLs have no origin of their own and "
            "send 'Origin: null' (see allow_null)",
            setting=setting,
        )
    rest = rest.removesuffix("/")
    for char, what in (("/", "a path"), ("?", "a query"), ("#", "a fragment"), ("@", "userinfo")):
        if char in rest:
            raise ConfigurationError(
                f"{setting}: {value!r} has {what}; an origin is scheme://host[:port] only",
                setting=setting,
            )
    if any(c in rest for c in "\\% \t"):
        raise ConfigurationError(
            f"{setting}: {value!r} has a character no origin has", setting=setting
        )
    return scheme, rest.lower()


def _split_port(setting: str, value: str, scheme: str, rest: str) -> tuple[str, str]:
    """``(host, ":port")`` of an authority; the port is empty when absent or the default."""
    if rest.startswith("["):
        end = rest.find("]")
        host, tail = (rest, "") if end < 0 else (rest[: end + 1], rest[end + 1 :])
        if tail and not tail.startswith(":"):
            raise ConfigurationError(
                f"{setting}: {value!r} has text after its IPv6 host", setting=setting
            )
    else:
        host, colon, port = rest.partition(":")
        tail = colon + port
    if not tail:
        return host, ""
    port = tail[1:]
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigurationError(
            f"{setting}: {value!r} has a port that is not a number from 1 to 65535",
            setting=setting,
        )
    number = int(port)
    return host, "" if number == _DEFAULT_PORTS.get(scheme) else f":{number}"


def parse_origin_setting(value: object, *, setting: str = "allow_origins") -> str:
    """The serialised form of one configured origin or pattern (see the module docstring).

    Raises :class:`~bastion.errors.ConfigurationError` for ``setting`` when ``value`` is not
    ``scheme://host[:port]`` (or ``scheme://*.suffix[:port]``).
    """
    if not isinstance(value, str):
        raise ConfigurationError(
            f"{setting} entries must be str, got {type(value).__name__}", setting=setting
        )
    scheme, rest = _scheme_and_rest(setting, value)
    host, port = _split_port(setting, value, scheme, rest)
    if "*" in host:
        if not host.startswith("*.") or "*" in host[2:] or scheme not in _DEFAULT_PORTS:
            raise ConfigurationError(
                f"{setting}: {value!r} is not a pattern; a pattern is http(s)://*.suffix with "
                "the '*' as the whole first label ('https://*.example.com')",
                setting=setting,
            )
        base = _host(setting, value, host[2:])
        if base.startswith("[") or base.replace(".", "").isdigit() or "." not in base:
            raise ConfigurationError(
                f"{setting}: {value!r}: a pattern needs a DNS suffix of at least two labels "
                "('*.example.com'); '*.com' would admit every site under it",
                setting=setting,
            )
        return f"{scheme}://*.{base}{port}"
    if not host:
        raise ConfigurationError(f"{setting}: {value!r} has no host", setting=setting)
    return f"{scheme}://{_host(setting, value, host)}{port}"


def _names(setting: str, values: object, *, kind: str) -> tuple[str, ...]:
    if isinstance(values, str):
        values = (values,)
    if not isinstance(values, (list, tuple, set, frozenset)):
        raise ConfigurationError(
            f"{setting} must be a list of {kind} names, got {type(values).__name__}",
            setting=setting,
        )
    found: list[str] = []
    for value in values:
        if not isinstance(value, str) or _TOKEN.fullmatch(value) is None:
            raise ConfigurationError(
                f"{setting}: {value!r} is not an HTTP {kind} name (a token: letters, digits "
                "and !#$%&'*+-.^_`|~)",
                setting=setting,
            )
        if value == "*":
            raise ConfigurationError(
                f"{setting}: '*' is read by browsers as any {kind} only without credentials "
                "(and never as Authorization); list the names",
                setting=setting,
            )
        name = normalize_method(value) if kind == "method" else value.lower()
        why = _FORBIDDEN.get((setting, name))
        if why is None and setting == "allow_headers" and name.startswith(("proxy-", "sec-")):
            why = _FORBIDDEN[setting, "sec-"]
        if why is not None:
            raise ConfigurationError(f"{setting}: {name!r}: {why}; remove it", setting=setting)
        if name not in found:
            found.append(name)
    return tuple(found)


def _origins(origins: object) -> tuple[str, ...]:
    if isinstance(origins, str):
        origins = (origins,)
    if not isinstance(origins, (list, tuple, set, frozenset)):
        raise ConfigurationError(
            f"allow_origins must be a list of origins, got {type(origins).__name__}",
            setting="allow_origins",
        )
    parsed: list[str] = []
    for origin in origins:
        if isinstance(origin, str) and origin.strip() == "*":
            text = "*"
        elif isinstance(origin, str) and origin.strip().lower() == "null":
            raise ConfigurationError(
                "allow_origins: 'null' is not listed as an origin; set allow_null=True "
                "(any page can send Origin: null from a sandboxed frame)",
                setting="allow_origins",
            )
        else:
            text = parse_origin_setting(origin)
        if text not in parsed:
            parsed.append(text)
    if "*" in parsed and len(parsed) > 1:
        raise ConfigurationError(
            "allow_origins: '*' admits every origin and must stand alone; remove the "
            "other entries or the '*'",
            setting="allow_origins",
        )
    return tuple(parsed)


@dataclass(frozen=True, slots=True, kw_only=True)
class CORSPolicy:
    """Which other origins may read this app's responses, and how. Validated when built.

    * ``allow_origins``: exact origins and ``https://*.suffix`` patterns, or ``("*",)`` alone
      (a public resource; refused with credentials). Empty: no cross-origin reads at all.
    * ``allow_methods``: methods a preflight may ask for (default ``GET``, ``HEAD``,
      ``POST``), normalised like :func:`~bastion.core.request.normalize_method`; ``CONNECT``,
      ``TRACE`` and ``TRACK`` are refused (browsers never send them).
    * ``allow_headers``: request headers a preflight may ask for, case-insensitive. Nothing is
      implied: a JSON ``POST`` asks for ``content-type``; list it when the app takes JSON from
      other origins. Names a page can never set (``cookie``, ``host`` ...) are refused.
    * ``expose_headers``: response headers the other origin's script may read (``set-cookie``
      is refused: browsers never expose it).
    * ``allow_credentials``: let the browser send cookies and read the answer. Never with
      ``"*"`` or ``allow_null``; refused with any ``http://`` origin when ``ENV=production``.
    * ``allow_null``: admit ``Origin: null``. Logged as a warning (any page can send it from a
      sandboxed frame); refused with credentials, and refused when ``ENV=production``: use
      ``"*"`` when a resource is public.
    * ``allow_private_network``: answer Private Network Access preflights
      (``Access-Control-Allow-Private-Network: true``) for a server on a private network that
      public pages may reach. Logged; refused with ``"*"`` when ``ENV=production``.
    * ``max_age``: seconds a browser may cache a preflight's answer, 0 to 86400.
    """

    allow_origins: tuple[str, ...] = ()
    allow_methods: tuple[str, ...] = ("GET", "HEAD", "POST")
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    allow_credentials: bool = False
    allow_null: bool = False
    allow_private_network: bool = False
    max_age: int = 600

    def __post_init__(self) -> None:
        for flag in ("allow_credentials", "allow_null", "allow_private_network"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigurationError(f"{flag} must be True or False", setting=flag)
        parsed = _origins(self.allow_origins)
        object.__setattr__(self, "allow_origins", parsed)
        if self.allow_credentials and parsed == ("*",):
            raise ConfigurationError(
                "allow_credentials=True with allow_origins=('*',) would let every site read "
                "signed-in users' data; list the origins, or drop allow_credentials for a "
                "public resource",
                setting="allow_credentials",
            )
        if self.allow_credentials and self.allow_null:
            raise ConfigurationError(
                "allow_credentials=True with allow_null=True would let any page (a sandboxed "
                "frame sends Origin: null) read signed-in users' data; drop allow_null",
                setting="allow_null",
            )
        for setting, kind in (
            ("allow_methods", "method"),
            ("allow_headers", "header"),
            ("expose_headers", "header"),
        ):
            object.__setattr__(self, setting, _names(setting, getattr(self, setting), kind=kind))
        age = self.max_age
        if isinstance(age, bool) or not isinstance(age, int) or not 0 <= age <= MAX_AGE_LIMIT:
            raise ConfigurationError(
                f"max_age must be a whole number of seconds from 0 to {MAX_AGE_LIMIT}, got {age!r}",
                setting="max_age",
            )

    @property
    def any_origin(self) -> bool:
        """Whether the policy is the bare ``"*"``."""
        return self.allow_origins == ("*",)

    def check_environment(self, *, production: bool) -> None:
        """Refuse in production the combinations that hand users' data to an attacker; log
        the risky settings otherwise. Called once by each middleware at start-up.

        Refused when ``production``: ``allow_credentials`` with an ``http://`` origin or
        pattern (anyone on the network path can inject a script into a plain-HTTP page, and
        that script then reads users' data), ``allow_null`` (any page can send
        ``Origin: null``; a public resource is ``"*"``), and ``allow_private_network`` with
        ``"*"`` (every public site could reach the private network server through visitors'
        browsers, which is what Private Network Access exists to stop).
        """
        plain = [o for o in self.allow_origins if o.startswith("http://")]
        risks = [
            (
                "allow_credentials",
                self.allow_credentials and bool(plain),
                (
                    f"allow_credentials=True with plain-HTTP origins {plain!r}: a script "
                    "injected into such a page on the network path reads signed-in users' data"
                ),
            ),
            (
                "allow_null",
                self.allow_null,
                (
                    "allow_null=True admits Origin: null, which any page can send from a "
                    "sandboxed frame; use allow_origins=('*',) if the resource is public"
                ),
            ),
            (
                "allow_private_network",
                self.allow_private_network and self.any_origin,
                (
                    "allow_private_network=True with allow_origins=('*',) lets every public "
                    "site reach this private-network server through its visitors' browsers"
                ),
            ),
        ]
        found = [(flag, why) for flag, on, why in risks if on]
        if production and found:
            flag, why = found[0]
            raise ConfigurationError(f"{why}; this is refused when ENV=production", setting=flag)
        for flag, why in found:
            logger.warning("bastion CORS: %s (setting %s)", why, flag)
        if self.allow_private_network and not self.any_origin:
            logger.warning(
                "bastion CORS: allow_private_network=True lets the listed origins reach this "
                "private-network server from public pages"
            )
        if self.allow_credentials and any("://*." in o for o in self.allow_origins):
            logger.warning(
                "bastion CORS: allow_credentials=True with a pattern: every host under it (a "
                "forgotten or taken-over subdomain too) can read signed-in users' data"
            )


# -- decisions -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Preflight:
    """The whole answer to a preflight: sent by the middleware as it is, the app never runs."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    reason: CORSReason | None
    """Why it was refused; ``None`` for the ``204``."""


def _well_formed(origin: bytes) -> bool:
    return origin == b"null" or (
        len(origin) <= MAX_ORIGIN_BYTES and _SERIALISED.fullmatch(origin) is not None
    )


def _refusal(reason: CORSReason) -> Preflight:
    body = f"CORS preflight refused: {reason.value}".encode("ascii")
    headers = ((b"vary", PREFLIGHT_VARY), _TEXT, (b"content-length", str(len(body)).encode()))
    return Preflight(403, headers, body, reason)


class CompiledCORS:
    """A :class:`CORSPolicy` rendered to header bytes, with the decisions of the module
    docstring. Build one per middleware, at start-up; ``production`` is checked here
    (:meth:`CORSPolicy.check_environment`)."""

    __slots__ = (
        "_exact",
        "_methods",
        "_patterns",
        "_preflight_rest",
        "_preflights",
        "_refusals",
        "_requestable",
        "_simple_rest",
        "_static",
        "any_origin",
        "policy",
        "vary",
    )

    def __init__(self, policy: CORSPolicy, *, production: bool) -> None:
        if not isinstance(policy, CORSPolicy):
            raise ConfigurationError("policy must be a CORSPolicy", setting="policy")
        policy.check_environment(production=production)
        self.policy = policy
        self.any_origin = policy.any_origin
        self.vary = not self.any_origin
        """Whether every response gets ``Vary: Origin`` (all but the bare ``"*"``)."""
        simple: list[tuple[bytes, bytes]] = []
        if policy.allow_credentials:
            simple.append(_ACAC)
        if policy.expose_headers:
            simple.append(
                (b"access-control-expose-headers", ", ".join(policy.expose_headers).encode())
            )
        self._simple_rest = tuple(simple)
        # Expose-Headers is for actual responses only; a preflight has nothing to expose.
        rest = [_ACAC] if policy.allow_credentials else []
        rest.append((b"access-control-allow-methods", ", ".join(policy.allow_methods).encode()))
        if policy.allow_headers:
            rest.append((b"access-control-allow-headers", ", ".join(policy.allow_headers).encode()))
        rest.append((b"access-control-max-age", str(policy.max_age).encode()))
        self._preflight_rest = tuple(rest)
        self._methods = frozenset(policy.allow_methods)
        self._requestable = frozenset(h.encode() for h in policy.allow_headers)
        self._refusals = {reason: _refusal(reason) for reason in CORSReason}
        self._static: tuple[tuple[bytes, bytes], ...] = ()
        self._exact: dict[bytes, tuple[tuple[bytes, bytes], ...]] = {}
        self._preflights: dict[tuple[bytes, bool], Preflight] = {}
        patterns: list[tuple[bytes, bytes]] = []
        exact = [o.encode() for o in policy.allow_origins if "*" not in o]
        if policy.allow_null:
            exact.append(b"null")
        if self.any_origin:
            self._static = ((_ACAO, b"*"), *self._simple_rest)
        for origin in exact:
            self._exact[origin] = ((_ACAO, origin), *self._simple_rest)
        for origin in [*exact, b"*"] if self.any_origin else exact:
            for private in (False, True):
                self._preflights[origin, private] = self._allowed(origin, private=private)
        for pattern in policy.allow_origins:
            if "://*." in pattern:
                scheme, _, suffix = pattern.partition("://*")
                patterns.append(((scheme + "://").encode(), suffix.encode()))
        self._patterns = tuple(patterns)

    def _allowed(self, origin: bytes, *, private: bool) -> Preflight:
        headers = [(_ACAO, origin), *self._preflight_rest]
        if private:
            headers.append(_ACAPN)
        headers += [(b"vary", PREFLIGHT_VARY), (b"content-length", b"0")]
        return Preflight(204, tuple(headers), b"", None)

    def matches_pattern(self, origin: bytes) -> bool:
        """Whether ``origin`` (as sent) is one or more DNS labels under a pattern's suffix."""
        for prefix, suffix in self._patterns:
            if (
                len(origin) <= MAX_ORIGIN_BYTES
                and origin.startswith(prefix)
                and origin.endswith(suffix)
                and _LABELS.fullmatch(origin, len(prefix), len(origin) - len(suffix))
            ):
                return True
        return False

    def allows(self, origin: bytes | None) -> bool:
        """Whether a request's ``Origin`` (``None``: absent) passes a preflight's origin check:
        a configured origin, a pattern's, or ``null`` with ``allow_null``; for the bare
        ``"*"``, any serialised origin (an actual response gets ``*`` whatever it sent)."""
        if origin is None:
            return False
        if self.any_origin:
            return _well_formed(origin)
        return origin in self._exact or (bool(self._patterns) and self.matches_pattern(origin))

    def simple(self, origin: bytes | None) -> tuple[tuple[bytes, bytes], ...]:
        """The CORS headers of an actual response to a request with ``origin`` (``None``:
        absent); empty for a disallowed one. ``Vary`` is separate (:attr:`vary`)."""
        if self.any_origin:
            return self._static
        if origin is None:
            return ()
        found = self._exact.get(origin)
        if found is not None:
            return found
        if self._patterns and self.matches_pattern(origin):
            return ((_ACAO, origin), *self._simple_rest)
        return ()

    def preflight(  # noqa: PLR0911 (one exit per verdict)
        self,
        origin: bytes,
        method: bytes,
        headers: bytes | None = None,
        private_network: bytes | None = None,
    ) -> Preflight:
        """The answer to a preflight from ``origin`` asking for ``method``, the requested
        ``headers`` (``Access-Control-Request-Headers``; repeated ones joined with ``,``) and
        ``private_network`` (``Access-Control-Request-Private-Network``)."""
        refusals = self._refusals
        if self.any_origin:
            if not _well_formed(origin):
                return refusals[CORSReason.ORIGIN_MALFORMED]
            key = b"*"
        elif origin in self._exact or (self._patterns and self.matches_pattern(origin)):
            key = origin
        elif _well_formed(origin):
            return refusals[CORSReason.ORIGIN_DISALLOWED]
        else:
            return refusals[CORSReason.ORIGIN_MALFORMED]
        text = normalize_method(method.decode("latin-1"))
        if len(method) > _MAX_METHOD_BYTES or _TOKEN.fullmatch(text) is None:
            return refusals[CORSReason.METHOD_MALFORMED]
        if text not in self._methods:
            return refusals[CORSReason.METHOD_DISALLOWED]
        if headers:
            reason = self._check_headers(headers)
            if reason is not None:
                return refusals[reason]
        private = private_network is not None and private_network.strip().lower() == b"true"
        if private and not self.policy.allow_private_network:
            return refusals[CORSReason.PRIVATE_NETWORK_DISALLOWED]
        found = self._preflights.get((key, private))
        return found if found is not None else self._allowed(origin, private=private)

    def _check_headers(self, headers: bytes) -> CORSReason | None:
        if len(headers) > MAX_REQUEST_HEADERS_BYTES:
            return CORSReason.HEADERS_MALFORMED
        allowed = self._requestable
        parts = headers.split(b",", _MAX_REQUESTED_HEADERS)
        if len(parts) > _MAX_REQUESTED_HEADERS:
            return CORSReason.HEADERS_MALFORMED
        for part in parts:
            name = part.strip(b" \t").lower()
            if not name:
                continue  # an empty list element (RFC 9110, section 5.6.1)
            if name not in allowed:
                if _TOKEN.fullmatch(name.decode("latin-1")) is None:
                    return CORSReason.HEADERS_MALFORMED
                return CORSReason.HEADER_DISALLOWED
        return None

    def __repr__(self) -> str:
        return f"CompiledCORS({self.policy!r})"


# -- response headers ------------------------------------------------------------------------------


def apply_headers(
    headers: Iterable[tuple[bytes, bytes]],
    extra: tuple[tuple[bytes, bytes], ...],
    *,
    vary: bool,
) -> list[tuple[bytes, bytes]]:
    """A response's headers with the app's ``Access-Control-*`` ones removed, ``extra``
    appended and, when ``vary``, ``Origin`` merged into its ``Vary`` (the first one, unless a
    ``Vary`` already lists it)."""
    out = list(headers)
    for name, _ in out:
        if name and name[0] in _FIRST:
            break
    else:  # the common case: neither a Vary nor a CORS header from the app
        if vary:
            out.append(_VARY_ORIGIN)
        out += extra
        return out
    return _merged(out, extra, vary=vary)


def _merged(
    headers: list[tuple[bytes, bytes]], extra: tuple[tuple[bytes, bytes], ...], *, vary: bool
) -> list[tuple[bytes, bytes]]:
    """:func:`apply_headers` for a response that has a ``Vary`` or an ``Access-Control-*``."""
    kept: list[tuple[bytes, bytes]] = []
    first_vary = -1
    covered = False
    for pair in headers:
        name = pair[0]
        if name and name[0] in _FIRST:
            lowered = name.lower()
            if lowered.startswith(_PREFIX):
                continue
            if vary and lowered == b"vary":
                if first_vary < 0:
                    first_vary = len(kept)
                if not covered and merge_vary(pair[1], b"Origin") is None:
                    covered = True
        kept.append(pair)
    if vary and not covered:
        if first_vary < 0:
            kept.append(_VARY_ORIGIN)
        else:
            name, value = kept[first_vary]
            kept[first_vary] = (name, merge_vary(value, b"Origin") or value)
    kept += extra
    return kept
