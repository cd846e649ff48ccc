"""The CORS configuration: :class:`CORSPolicy`, validated when it is built, and the grammar
of the origins it names (:func:`parse_origin_setting`). See :mod:`bastion.core.cors`."""

from __future__ import annotations

import enum
import ipaddress
import logging
import re
from dataclasses import dataclass
from typing import Final

from bastion.core import _check
from bastion.core.request import normalize_method
from bastion.errors import ConfigurationError

__all__ = [
    "MAX_AGE_LIMIT",
    "MAX_ORIGIN_BYTES",
    "MAX_REQUEST_HEADERS_BYTES",
    "PREFLIGHT_VARY",
    "RATE_LIMIT_HEADERS",
    "TOKEN",
    "CORSPolicy",
    "CORSReason",
    "parse_origin_setting",
]

logger = logging.getLogger("bastion.security.cors")

MAX_ORIGIN_BYTES: Final = 300
"""Longest ``Origin`` compared (scheme, a 253-character host and a port fit)."""
MAX_REQUEST_HEADERS_BYTES: Final = 2048
"""Longest ``Access-Control-Request-Headers`` read; a longer one refuses the preflight."""
MAX_AGE_LIMIT: Final = 86_400
"""The largest ``max_age`` (Firefox's cap; Chromium stops at 7200 seconds)."""

PREFLIGHT_VARY: Final = (
    b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers, "
    b"Access-Control-Request-Private-Network"
)

RATE_LIMIT_HEADERS: Final = ("retry-after", "ratelimit", "ratelimit-policy")
"""The rate-limit layer's response headers: the default ``expose_headers`` of a policy."""

TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", re.ASCII)
"""An HTTP token (RFC 9110): a method or a header name."""
_SCHEME: Final = re.compile(r"[a-z][a-z0-9+.\-]*", re.ASCII)
_LABEL: Final = re.compile(r"[a-z0-9_\-]{1,63}", re.ASCII)
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
        if not isinstance(value, str) or TOKEN.fullmatch(value) is None:
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
      is refused: browsers never expose it). Default :data:`RATE_LIMIT_HEADERS`
      (``Retry-After``, ``RateLimit``, ``RateLimit-Policy``), so that an allowed page can honour
      a 429 instead of retrying blindly: they describe the caller's own budget, which the 429
      already reveals, and a header the response lacks exposes nothing. A list of your own
      replaces the default (``(*RATE_LIMIT_HEADERS, "x-request-id")`` keeps it); ``()``
      exposes nothing.
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
    expose_headers: tuple[str, ...] = RATE_LIMIT_HEADERS
    allow_credentials: bool = False
    allow_null: bool = False
    allow_private_network: bool = False
    max_age: int = 600

    def __post_init__(self) -> None:
        for name in ("allow_credentials", "allow_null", "allow_private_network"):
            _check.flag(name, getattr(self, name))
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
        _check.whole_number("max_age", self.max_age, low=0, high=MAX_AGE_LIMIT)

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
