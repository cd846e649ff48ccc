"""Security response headers: a validated policy compiled once into raw header bytes.

A :class:`HeaderPolicy` is configuration: frozen, keyword-only, checked field by field when it is
built, so a typo (``self`` for ``'self'``, ``max-age=-1``, a CR in a CSP source) fails at
start-up with a :class:`~bastion.errors.ConfigurationError` that names the setting. Its
:meth:`HeaderPolicy.compile` renders every header once into ``(name, value)`` byte pairs; the
per-response work in the adapters (:mod:`bastion.asgi.headers`, :mod:`bastion.wsgi.headers`) is
then a set lookup per response header, a list concatenation and, when the CSP carries a nonce,
one ``bytes.join`` per nonce header.

Three presets (:class:`Preset`): ``strict`` (the default, an HTML app that loads its own assets
only; A+ on the MDN HTTP Observatory rules), ``api`` (JSON endpoints: nothing may render, frame
or be sniffed), ``relaxed`` (an app that still needs inline styles, images from anywhere over
HTTPS and framing by itself). None of the presets has a :class:`Weakness`, so none logs a
warning. What ``relaxed`` gives up, each below the warning line: inline ``style`` attributes
and ``<style>`` blocks run (CSS injection can restyle a page or leak attribute values through
selectors, but not run script); images and fonts load from any HTTPS origin or ``data:`` (an
injected image can beacon out the page URL); pages may be framed by the same origin; no COEP
and COOP ``same-origin-allow-popups`` (no cross-origin isolation); CORP ``same-site``; HSTS one
year without ``includeSubDomains``; a shorter Permissions-Policy.

Opting out (:meth:`HeaderPolicy.weaknesses`): setting a protection off is done with its own
named setting, is logged once per policy at start-up as a warning on the
``bastion.security.headers`` logger, and, for the unsafe ones, refused with ``ENV=production``:

* Refused in production, warned elsewhere: script sources (``script-src``, else
  ``default-src``) with ``'unsafe-inline'`` but no nonce, hash or ``'strict-dynamic'``, or with
  ``*``, ``data:``, ``http:`` or ``https:`` but no ``'strict-dynamic'``; no frame-ancestors and
  ``x_frame_options=None``, or frame-ancestors ``*`` / ``http:`` / ``https:`` (clickjacking);
  ``hsts_max_age=0`` (browsers forget HSTS); ``nosniff=False``;
  ``referrer_policy='unsafe-url'``.
* Warned only: ``csp_policy=None`` (or a report-only CSP alone), a CSP without script-src and
  default-src, script ``'unsafe-eval'``, ``hsts_max_age=None`` (a proxy may send either
  header), ``hsts_max_age`` under six months (a staged rollout), ``referrer_policy=None`` or
  ``'no-referrer-when-downgrade'``.

Not warned about: COOP, COEP, CORP and Permissions-Policy set to ``None`` (isolation and feature
controls the browser default leaves open, tuned per app by the presets; turning them off breaks
no baseline protection), ``x_xss_protection_zero=False`` (the auditor it disables is gone from
current browsers), ``include_subdomains=False``, an empty ``remove``, and the three headers below
(``x_permitted_cross_domain_policies``, ``origin_agent_cluster``, ``x_dns_prefetch_control``).

Decisions worth knowing:

* **Handlers win** (Django's ``setdefault`` rule): a header the handler already set is kept,
  unless its name is in :attr:`HeaderPolicy.force`. A page that needs a looser CSP sets its own,
  or the app uses a per-route override policy in the middleware.
* **HSTS only over HTTPS**: RFC 6797 tells browsers to ignore the header on plain HTTP, and
  sending it there advertises a promise the connection did not keep. ``hsts_over_http=True``
  sends it anyway, for a TLS-terminating proxy that does not tell the app the scheme (prefer
  configuring the proxy headers instead).
* **Nonces**: the pseudo-source :data:`NONCE` (``'nonce'``) in a CSP directive is replaced per
  response by ``'nonce-<32 hex digits>'`` (128 random bits, from :class:`NonceSource`). The same
  nonce goes into the enforcing and the report-only policy and is handed to the app for its
  ``<script nonce=...>`` and ``<style nonce=...>`` tags.
* **X-Frame-Options follows CSP frame-ancestors**: ``'none'`` gives ``DENY``, ``'self'`` gives
  ``SAMEORIGIN``; an allowlist cannot be said in X-Frame-Options, so it is then left out (every
  browser with CSP level 2 obeys frame-ancestors). An explicit value that contradicts the CSP is
  refused.
* **X-XSS-Protection: 0**: the XSS auditors of old browsers were removed because they could be
  abused (to switch off a page's own scripts, and as a cross-site leak); ``0`` turns off any
  that remain, which is OWASP's current advice. CSP is the protection.
* **The guide's and helmet's other headers**, each pre-rendered like the rest (a few dozen
  bytes, no per-response work): ``X-Permitted-Cross-Domain-Policies: none`` in every preset
  (Adobe clients obey no ``crossdomain.xml`` on this host, so an uploaded file cannot grant
  another site read access; an API host needs it as much as a page); ``Origin-Agent-Cluster:
  ?1`` in ``strict`` and ``relaxed`` (the page gets its own agent cluster: ``document.domain``
  cannot merge it with a sibling subdomain; ``api`` leaves it out: JSON makes no document);
  ``X-DNS-Prefetch-Control: off`` in ``strict`` only (the host names of a page's links are not
  resolved before a click, so the DNS resolver does not learn which links a page showed, as in
  a webmail; the cost is the latency of the first lookup on a click, which is why ``relaxed``
  leaves prefetching to the browser, and ``api`` has no links). Setting any of them to
  ``None`` (``False``) is not a :class:`Weakness`.
* **Expect-CT is not sent**: Certificate Transparency is enforced by browsers for every publicly
  trusted certificate without any header; Chrome removed Expect-CT in version 107 and MDN lists
  it as deprecated. Sending it would add bytes and no protection.
* **Fingerprinting headers** (``Server``, ``X-Powered-By``) set by the app are removed. A
  ``Server`` header added by the HTTP server itself after the app (uvicorn, gunicorn) is out of
  reach of any middleware: switch it off there (``uvicorn --no-server-header``).
* **COEP require-corp in strict**: every cross-origin subresource must opt in (CORP or CORS),
  which also unlocks cross-origin isolation. Danger: a page embedding third-party images,
  videos or frames breaks; use ``relaxed`` or ``coep_policy="credentialless"`` (or ``None``).
* **CSP reports** are parsed by :func:`parse_csp_reports` (total: any body gives violations or
  :class:`~bastion.errors.BadData`) and accepted by a bounded :class:`ReportReceiver`.
* Every value that reaches a header is visible ASCII, spaces allowed only inside: no CR, LF,
  NUL or other control character, no non-ASCII, so no configuration can split a response.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import os
import re
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any, Final

from bastion.core.audit import EventName, Outcome
from bastion.core.clock import system_clock
from bastion.core.environment import is_production
from bastion.core.request import is_normal, normalize_method, normalize_path
from bastion.errors import BadData, ConfigurationError

if TYPE_CHECKING:
    from bastion.core.audit import Auditor
    from bastion.core.clock import Clock

__all__ = [
    "CSP_REPORT_MEDIA_TYPES",
    "NONCE",
    "CSPViolation",
    "ClientReportBudgets",
    "CompiledHeaders",
    "ContentSecurityPolicy",
    "CrossDomainPolicies",
    "CrossOriginEmbedderPolicy",
    "CrossOriginOpenerPolicy",
    "CrossOriginResourcePolicy",
    "DNSPrefetchControl",
    "HeaderPolicy",
    "HeaderRouter",
    "NonceSource",
    "PermissionsPolicy",
    "Preset",
    "ReferrerPolicy",
    "ReportBudget",
    "ReportReceiver",
    "Weakness",
    "XFrameOptions",
    "parse_csp_reports",
    "swagger_ui_policy",
]

logger = logging.getLogger("bastion.security.headers")

NONCE: Final = "'nonce'"
"""Pseudo-source for a CSP directive: replaced per response by ``'nonce-<value>'``."""

CSP_REPORT_MEDIA_TYPES: Final = frozenset({"application/csp-report", "application/reports+json"})
"""Media types a CSP report receiver accepts: ``report-uri`` and Reporting API bodies."""

# RFC 9110 token (header names, directive and feature names are tokens).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A header value we are willing to send: visible ASCII, interior single spaces allowed.
_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
# A CSP source expression: visible ASCII without ';' and ',' (RFC: no whitespace, no ';' ',').
_SOURCE = re.compile(r"[\x21-\x2b\x2d-\x3a\x3c-\x7e]+")
_FEATURE = re.compile(r"[a-z][a-z0-9-]*")
_ORIGIN = re.compile(r"https?://(?:\*\.)?[A-Za-z0-9.-]+(?::[0-9]{1,5})?")
_ENDPOINT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
# A request id believed from the proxy: a short token (AWS "Root=1-...;Parent=..." included).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:;=/+@-]{1,128}", re.ASCII)

_NONCE_MISSING = "this policy's CSP uses NONCE: pass a nonce from NonceSource to apply()"
_NONCE_MARK = "\x00"  # never valid in a value, so it cannot collide with configured text
_NONCE_BYTES = 16
_NONCE_BATCH = 1024
# Usual mixed-case spellings that bytes.title() does not produce.
_CANONICAL = {
    b"x-xss-protection": b"X-XSS-Protection",
    b"content-security-policy-report-only": b"Content-Security-Policy-Report-Only",
}

# Keywords that browsers only recognise when single-quoted; unquoted they are host names.
_CSP_KEYWORDS = frozenset(
    {
        "self",
        "none",
        "unsafe-inline",
        "unsafe-eval",
        "strict-dynamic",
        "unsafe-hashes",
        "report-sample",
        "wasm-unsafe-eval",
        "inline-speculation-rules",
    }
)
_CSP_DIRECTIVES = frozenset(
    {
        "default-src",
        "script-src",
        "script-src-elem",
        "script-src-attr",
        "style-src",
        "style-src-elem",
        "style-src-attr",
        "img-src",
        "font-src",
        "connect-src",
        "media-src",
        "object-src",
        "frame-src",
        "child-src",
        "worker-src",
        "manifest-src",
        "fenced-frame-src",
        "base-uri",
        "form-action",
        "frame-ancestors",
        "sandbox",
        "report-uri",
        "report-to",
        "upgrade-insecure-requests",
        "require-trusted-types-for",
        "trusted-types",
        "webrtc",
    }
)
_VALUELESS = frozenset({"upgrade-insecure-requests"})
_HSTS_PRELOAD_MIN = 31_536_000  # hstspreload.org: at least one year
_HSTS_SHORT = 15_768_000  # six months: the MDN Observatory's minimum for full marks
# Sources that let a script from any origin (or a data: URL, i.e. inline) run.
_WIDE_SOURCES = frozenset({"*", "data:", "http:", "https:"})
_HASH_PREFIXES = ("'nonce-", "'sha256-", "'sha384-", "'sha512-")
_HSTS_MAX = 2**31 - 1


def _short(text: object) -> str:
    rendered = repr(text)
    return rendered if len(rendered) <= 80 else rendered[:77] + "..."


def _check_value(setting: str, value: object) -> str:
    """``value`` if it may be sent as a header value; else a ConfigurationError naming it."""
    if not isinstance(value, str):
        raise ConfigurationError(
            f"{setting} must be a str, got {type(value).__name__}", setting=setting
        )
    if _VALUE.fullmatch(value) is None:
        raise ConfigurationError(
            f"{setting}={_short(value)} cannot be sent as a header value: use visible ASCII only "
            "(no CR, LF, tab or other control characters, no non-ASCII, no leading or trailing "
            "space)",
            setting=setting,
        )
    return value


def _check_name(setting: str, name: object) -> str:
    if not isinstance(name, str) or _TOKEN.fullmatch(name) is None:
        raise ConfigurationError(
            f"{setting}: header name {_short(name)} is not an RFC 9110 token; use ASCII letters, "
            "digits and !#$%&'*+-.^_`|~",
            setting=setting,
        )
    return name.lower()


def _coerce(kind: type[Any], setting: str, value: object) -> Any:
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(repr(member.value) for member in kind)
        raise ConfigurationError(
            f"{setting}={_short(value)} is not one of {choices}", setting=setting
        ) from None


class Preset(StrEnum):
    STRICT = "strict"
    API = "api"
    RELAXED = "relaxed"


class ReferrerPolicy(StrEnum):
    NO_REFERRER = "no-referrer"
    NO_REFERRER_WHEN_DOWNGRADE = "no-referrer-when-downgrade"
    ORIGIN = "origin"
    ORIGIN_WHEN_CROSS_ORIGIN = "origin-when-cross-origin"
    SAME_ORIGIN = "same-origin"
    STRICT_ORIGIN = "strict-origin"
    STRICT_ORIGIN_WHEN_CROSS_ORIGIN = "strict-origin-when-cross-origin"
    UNSAFE_URL = "unsafe-url"


class CrossOriginOpenerPolicy(StrEnum):
    SAME_ORIGIN = "same-origin"
    SAME_ORIGIN_ALLOW_POPUPS = "same-origin-allow-popups"
    NOOPENER_ALLOW_POPUPS = "noopener-allow-popups"
    UNSAFE_NONE = "unsafe-none"


class CrossOriginEmbedderPolicy(StrEnum):
    REQUIRE_CORP = "require-corp"
    CREDENTIALLESS = "credentialless"
    UNSAFE_NONE = "unsafe-none"


class CrossOriginResourcePolicy(StrEnum):
    SAME_ORIGIN = "same-origin"
    SAME_SITE = "same-site"
    CROSS_ORIGIN = "cross-origin"


class XFrameOptions(StrEnum):
    AUTO = "auto"
    """Derive from the CSP ``frame-ancestors`` directive (``DENY`` when there is none)."""
    DENY = "DENY"
    SAMEORIGIN = "SAMEORIGIN"


class CrossDomainPolicies(StrEnum):
    """``X-Permitted-Cross-Domain-Policies``: which ``crossdomain.xml`` policy files Adobe
    clients (Acrobat, the Flash player) may obey on this host."""

    NONE = "none"
    MASTER_ONLY = "master-only"
    BY_CONTENT_TYPE = "by-content-type"
    ALL = "all"


class DNSPrefetchControl(StrEnum):
    """``X-DNS-Prefetch-Control``: whether the browser resolves the host names of a page's
    links before they are followed."""

    OFF = "off"
    ON = "on"


@dataclass(frozen=True, slots=True, init=False)
class ContentSecurityPolicy:
    """A CSP as validated directives, in the order given. Build from keywords or a mapping::

        ContentSecurityPolicy(default_src="'none'", script_src=[NONCE, "'strict-dynamic'"])
        ContentSecurityPolicy({"default-src": ["'self'"]}, upgrade_insecure_requests=True)
        ContentSecurityPolicy.parse("default-src 'self'; img-src 'self' https:")

    Keyword arguments use ``_`` for ``-``. A value is a sequence of sources, a string of
    whitespace-separated sources, or ``True`` for a directive without sources. Unknown directive
    names and unquoted keywords (``self`` for ``'self'``) are refused: both are silent no-ops in a
    browser.
    """

    directives: tuple[tuple[str, tuple[str, ...]], ...]

    def __init__(
        self,
        directives: Mapping[str, Iterable[str] | str | bool] | None = None,
        /,
        **more: Iterable[str] | str | bool,
    ) -> None:
        merged: dict[str, tuple[str, ...]] = {}
        items = [*(directives or {}).items(), *((k.replace("_", "-"), v) for k, v in more.items())]
        for raw_name, raw_sources in items:
            name = _check_directive(raw_name)
            if name in merged:
                raise ConfigurationError(
                    f"CSP directive {name!r} is given twice; browsers use only the first, so "
                    "merge the sources into one entry",
                    setting=f"csp.{name}",
                )
            merged[name] = _check_sources(name, raw_sources)
        object.__setattr__(self, "directives", tuple(merged.items()))

    @classmethod
    def parse(cls, text: str) -> ContentSecurityPolicy:
        """Validate a CSP written as a header value (``"default-src 'self'; img-src *"``)."""
        _check_value("csp", text)
        found: dict[str, Iterable[str] | str | bool] = {}
        for piece in text.split(";"):
            words = piece.split()
            if not words:
                continue
            name = words[0].lower()
            if name in found:
                raise ConfigurationError(
                    f"CSP directive {name!r} appears twice in {_short(text)}", setting="csp"
                )
            found[name] = words[1:] or True
        return cls(found)

    def get(self, name: str) -> tuple[str, ...] | None:
        for directive, sources in self.directives:
            if directive == name:
                return sources
        return None

    def with_directives(
        self, **changes: Iterable[str] | str | bool | None
    ) -> ContentSecurityPolicy:
        """A copy with directives replaced, added, or (given ``None``) removed."""
        updated: dict[str, Iterable[str] | str | bool] = dict(self.directives)
        for key, value in changes.items():
            name = key.replace("_", "-")
            if value is None:
                updated.pop(name, None)
            else:
                updated[name] = value
        return ContentSecurityPolicy(updated)

    @property
    def uses_nonce(self) -> bool:
        return any(NONCE in sources for _, sources in self.directives)

    def render(self, nonce: str | None = None) -> str:
        """The header value; :data:`NONCE` becomes ``'nonce-<nonce>'`` (kept as is if ``None``)."""
        parts = []
        for name, sources in self.directives:
            shown = sources
            if nonce is not None:
                shown = tuple(f"'nonce-{nonce}'" if s == NONCE else s for s in sources)
            parts.append(" ".join((name, *shown)))
        return "; ".join(parts)


def _check_directive(name: object) -> str:
    if not isinstance(name, str) or name.lower() not in _CSP_DIRECTIVES:
        raise ConfigurationError(
            f"unknown CSP directive {_short(name)}; use one of "
            f"{', '.join(sorted(_CSP_DIRECTIVES))} (keyword arguments use '_' for '-')",
            setting="csp",
        )
    return name.lower()


def _source_list(setting: str, raw: object) -> list[object]:
    if isinstance(raw, str):
        sources: list[object] = list(raw.split(" "))
        if any(not s for s in sources):
            raise ConfigurationError(
                f"{setting}={_short(raw)}: separate sources with single spaces", setting=setting
            )
        return sources
    if isinstance(raw, Iterable) and not isinstance(raw, bytes | bool):
        return list(raw)
    raise ConfigurationError(
        f"{setting} must be a list of sources, a str or True, got {type(raw).__name__}",
        setting=setting,
    )


def _check_sources(name: str, raw: object) -> tuple[str, ...]:
    setting = f"csp.{name}"
    if raw is True:
        if name not in _VALUELESS and name != "sandbox":
            raise ConfigurationError(
                f"CSP directive {name!r} needs sources, not True", setting=setting
            )
        return ()
    sources = _source_list(setting, raw)
    if name in _VALUELESS and sources:
        raise ConfigurationError(f"CSP directive {name!r} takes no sources", setting=setting)
    if not sources and name != "sandbox":
        raise ConfigurationError(
            f"{setting} is empty; write \"'none'\" to allow nothing", setting=setting
        )
    checked: list[str] = []
    for source in sources:
        if not isinstance(source, str) or _SOURCE.fullmatch(source) is None:
            raise ConfigurationError(
                f"{setting}: source {_short(source)} is not a CSP source expression (visible "
                "ASCII without spaces, ';' or ',')",
                setting=setting,
            )
        if source.lower() in _CSP_KEYWORDS:
            raise ConfigurationError(
                f"{setting}: {source!r} must be single-quoted (\"'{source}'\"); unquoted it is a "
                "host name",
                setting=setting,
            )
        if source == NONCE and name not in {
            "script-src",
            "script-src-elem",
            "style-src",
            "style-src-elem",
            "default-src",
        }:
            raise ConfigurationError(
                f"{setting}: NONCE belongs in script-src or style-src", setting=setting
            )
        checked.append(source)
    if "'none'" in checked and len(checked) > 1:
        raise ConfigurationError(
            f"{setting}: \"'none'\" cannot be combined with other sources (it would be ignored)",
            setting=setting,
        )
    return tuple(checked)


@dataclass(frozen=True, slots=True, init=False)
class PermissionsPolicy:
    """A ``Permissions-Policy`` header from features and their allowlists::

        PermissionsPolicy(camera=(), geolocation=["self", "https://maps.example"])

    ``()`` disables the feature everywhere, ``"self"`` allows this origin, ``"*"`` every origin,
    origins are written as ``https://host[:port]``. Keyword arguments use ``_`` for ``-``.
    """

    features: tuple[tuple[str, tuple[str, ...]], ...]

    def __init__(
        self, features: Mapping[str, Iterable[str] | str] | None = None, /, **more: Iterable[str]
    ) -> None:
        checked: dict[str, tuple[str, ...]] = {}
        items = [*(features or {}).items(), *((k.replace("_", "-"), v) for k, v in more.items())]
        for name, allow in items:
            setting = f"permissions_policy.{name}"
            if not isinstance(name, str) or _FEATURE.fullmatch(name) is None:
                raise ConfigurationError(
                    f"permissions_policy: feature {_short(name)} must be lowercase letters, "
                    "digits and '-' (e.g. 'camera')",
                    setting="permissions_policy",
                )
            members = [allow] if isinstance(allow, str) else list(allow)
            rendered: list[str] = []
            for member in members:
                folded = member.strip("'").lower() if isinstance(member, str) else None
                if folded in {"self", "src", "*"}:
                    rendered.append(folded)
                elif folded == "none":
                    continue
                elif isinstance(member, str) and _ORIGIN.fullmatch(member):
                    rendered.append(f'"{member}"')
                else:
                    raise ConfigurationError(
                        f"{setting}: {_short(member)} is not 'self', '*' or an origin such as "
                        "'https://example.com'",
                        setting=setting,
                    )
            if "*" in rendered and len(rendered) > 1:
                raise ConfigurationError(
                    f"{setting}: '*' already allows every origin", setting=setting
                )
            checked[name] = tuple(rendered)
        object.__setattr__(self, "features", tuple(checked.items()))

    def render(self) -> str:
        parts = []
        for name, allow in self.features:
            if allow == ("*",):
                parts.append(f"{name}=*")
            else:
                parts.append(f"{name}=({' '.join(allow)})")
        return ", ".join(parts)


_STRICT_CSP = ContentSecurityPolicy(
    default_src="'none'",
    script_src=[NONCE, "'strict-dynamic'"],
    style_src=["'self'", NONCE],
    img_src="'self'",
    font_src="'self'",
    connect_src="'self'",
    manifest_src="'self'",
    form_action="'self'",
    base_uri="'none'",
    frame_ancestors="'none'",
)
_API_CSP = ContentSecurityPolicy(default_src="'none'", frame_ancestors="'none'")
_RELAXED_CSP = ContentSecurityPolicy(
    default_src="'self'",
    script_src=["'self'", NONCE],
    style_src=["'self'", "'unsafe-inline'"],
    img_src=["'self'", "data:", "https:"],
    font_src=["'self'", "data:", "https:"],
    object_src="'none'",
    base_uri="'self'",
    form_action="'self'",
    frame_ancestors="'self'",
)
_STRICT_PERMISSIONS = PermissionsPolicy(
    accelerometer=(),
    autoplay=(),
    camera=(),
    display_capture=(),
    encrypted_media=(),
    fullscreen=("self",),
    geolocation=(),
    gyroscope=(),
    magnetometer=(),
    microphone=(),
    midi=(),
    payment=(),
    picture_in_picture=(),
    publickey_credentials_get=("self",),
    screen_wake_lock=(),
    usb=(),
    xr_spatial_tracking=(),
)
_RELAXED_PERMISSIONS = PermissionsPolicy(camera=(), geolocation=(), microphone=(), payment=())


@dataclass(frozen=True, slots=True)
class Weakness:
    """A setting of a :class:`HeaderPolicy` that turns a protection off or weakens it.

    ``refused_in_production`` weaknesses raise :class:`~bastion.errors.ConfigurationError` when
    the app runs with ``ENV=production`` (or ``BASTION_ENV=production``); elsewhere every
    weakness is logged once, at start-up, on the ``bastion.security.headers`` logger.
    """

    setting: str
    problem: str
    fix: str
    refused_in_production: bool = False


_Csp = ContentSecurityPolicy | str | None
_Permissions = PermissionsPolicy | Mapping[str, Iterable[str] | str] | str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderPolicy:
    """Which security headers to send, validated when built; :meth:`compile` renders them.

    The defaults are the ``strict`` preset. :meth:`preset` gives the others, with overrides::

        HeaderPolicy.preset("api", cache_control=None)
        HeaderPolicy(csp_policy=ContentSecurityPolicy.parse("default-src 'self'"))

    Parameters named as in the common reference middleware: ``hsts_max_age``,
    ``include_subdomains``, ``csp_policy``, ``referrer_policy``, ``coop_policy``,
    ``coep_policy``. ``None`` leaves a header out.

    ``report_to`` (a path such as ``"/csp-report"`` or an absolute ``https://`` URL) adds
    ``report-to`` and ``report-uri`` to both CSPs and a ``Reporting-Endpoints`` header; the
    middlewares serve a path given here with their bounded report receiver.
    """

    hsts_max_age: int | None = 63_072_000
    include_subdomains: bool = True
    hsts_preload: bool = False
    hsts_over_http: bool = False
    csp_policy: _Csp = _STRICT_CSP
    csp_report_only: _Csp = None
    report_to: str | None = None
    report_group: str = "csp-endpoint"
    permissions_policy: _Permissions = _STRICT_PERMISSIONS
    referrer_policy: ReferrerPolicy | str | None = ReferrerPolicy.STRICT_ORIGIN_WHEN_CROSS_ORIGIN
    coop_policy: CrossOriginOpenerPolicy | str | None = CrossOriginOpenerPolicy.SAME_ORIGIN
    coep_policy: CrossOriginEmbedderPolicy | str | None = CrossOriginEmbedderPolicy.REQUIRE_CORP
    corp_policy: CrossOriginResourcePolicy | str | None = CrossOriginResourcePolicy.SAME_ORIGIN
    x_frame_options: XFrameOptions | str | None = XFrameOptions.AUTO
    nosniff: bool = True
    x_xss_protection_zero: bool = True
    x_permitted_cross_domain_policies: CrossDomainPolicies | str | None = CrossDomainPolicies.NONE
    origin_agent_cluster: bool = True
    x_dns_prefetch_control: DNSPrefetchControl | str | None = DNSPrefetchControl.OFF
    cache_control: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    remove: tuple[str, ...] = ("server", "x-powered-by")
    force: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for flag in (
            "include_subdomains",
            "hsts_preload",
            "hsts_over_http",
            "nosniff",
            "x_xss_protection_zero",
            "origin_agent_cluster",
        ):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigurationError(f"{flag} must be True or False", setting=flag)
        self._check_hsts()
        self._check_policies()
        self._check_names()
        self._check_reporting()

    def _check_policies(self) -> None:
        put = object.__setattr__
        for setting in ("csp_policy", "csp_report_only"):
            value = getattr(self, setting)
            if isinstance(value, str):
                put(self, setting, ContentSecurityPolicy.parse(value))
            elif value is not None and not isinstance(value, ContentSecurityPolicy):
                raise ConfigurationError(
                    f"{setting} must be a ContentSecurityPolicy, a str or None", setting=setting
                )
        permissions = self.permissions_policy
        if isinstance(permissions, str):
            _check_value("permissions_policy", permissions)
        elif isinstance(permissions, Mapping):
            put(self, "permissions_policy", PermissionsPolicy(permissions))
        elif permissions is not None and not isinstance(permissions, PermissionsPolicy):
            raise ConfigurationError(
                "permissions_policy must be a PermissionsPolicy, a mapping, a str or None",
                setting="permissions_policy",
            )
        for setting, kind in (
            ("referrer_policy", ReferrerPolicy),
            ("coop_policy", CrossOriginOpenerPolicy),
            ("coep_policy", CrossOriginEmbedderPolicy),
            ("corp_policy", CrossOriginResourcePolicy),
            ("x_frame_options", XFrameOptions),
            ("x_permitted_cross_domain_policies", CrossDomainPolicies),
            ("x_dns_prefetch_control", DNSPrefetchControl),
        ):
            value = getattr(self, setting)
            if value is not None:
                put(self, setting, _coerce(kind, setting, value))
        if self.cache_control is not None:
            _check_value("cache_control", self.cache_control)

    def _check_names(self) -> None:
        put = object.__setattr__
        if not isinstance(self.extra, Mapping):
            raise ConfigurationError("extra must be a mapping of header names to values")
        put(
            self,
            "extra",
            {
                _check_name("extra", k): _check_value(f"extra[{k!r}]", v)
                for k, v in self.extra.items()
            },
        )
        if isinstance(self.remove, str) or not isinstance(self.remove, Iterable):
            raise ConfigurationError("remove must be a tuple of header names", setting="remove")
        put(self, "remove", tuple(_check_name("remove", n) for n in self.remove))
        if isinstance(self.force, str) or not isinstance(self.force, Iterable):
            raise ConfigurationError("force must be a set of header names", setting="force")
        put(self, "force", frozenset(_check_name("force", n) for n in self.force))

    def _check_hsts(self) -> None:
        max_age = self.hsts_max_age
        if max_age is None:
            return
        if isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 0:
            raise ConfigurationError(
                f"hsts_max_age must be a whole number of seconds >= 0 (or None to send no HSTS), "
                f"got {_short(max_age)}",
                setting="hsts_max_age",
            )
        if max_age > _HSTS_MAX:
            raise ConfigurationError(
                f"hsts_max_age={max_age} is too large; 63072000 (two years) is the usual value",
                setting="hsts_max_age",
            )
        if self.hsts_preload and (max_age < _HSTS_PRELOAD_MIN or not self.include_subdomains):
            raise ConfigurationError(
                "hsts_preload=True needs hsts_max_age >= 31536000 and include_subdomains=True "
                "(the preload list refuses anything less)",
                setting="hsts_preload",
            )

    def _check_reporting(self) -> None:
        target = self.report_to
        if _ENDPOINT_NAME.fullmatch(self.report_group) is None:
            raise ConfigurationError(
                f"report_group={_short(self.report_group)} must be a name of letters, digits, "
                "'_' and '-'",
                setting="report_group",
            )
        if target is None:
            return
        _check_value("report_to", target)
        if not (target.startswith("/") and not target.startswith("//")) and not (
            target.startswith("https://") and _SOURCE.fullmatch(target)
        ):
            raise ConfigurationError(
                f"report_to={_short(target)} must be a path ('/csp-report') or an https:// URL",
                setting="report_to",
            )
        if '"' in target:
            raise ConfigurationError("report_to must not contain '\"'", setting="report_to")

    def weaknesses(self) -> tuple[Weakness, ...]:
        """The protections this policy turns off or weakens, in setting order (none for the
        presets). See :meth:`check_environment` for what is done with them."""
        found: list[Weakness] = []
        found.extend(self._csp_weaknesses())
        found.extend(self._hsts_weaknesses())
        if not self.nosniff:
            found.append(
                Weakness(
                    "nosniff",
                    "nosniff=False lets browsers guess content types, so an upload or a JSON "
                    "reply can be run as HTML or script",
                    "Keep nosniff=True and send a correct Content-Type",
                    refused_in_production=True,
                )
            )
        referrer = self.referrer_policy
        keep = "Keep referrer_policy='strict-origin-when-cross-origin' (the default)"
        if referrer is None:
            found.append(
                Weakness(
                    "referrer_policy",
                    "referrer_policy=None sends no Referrer-Policy; older browsers then send "
                    "full URLs (paths and query strings) to other sites",
                    keep,
                )
            )
        elif referrer is ReferrerPolicy.UNSAFE_URL:
            found.append(
                Weakness(
                    "referrer_policy",
                    "'unsafe-url' sends full URLs, query strings included, to every site, even "
                    "over plain HTTP",
                    keep,
                    refused_in_production=True,
                )
            )
        elif referrer is ReferrerPolicy.NO_REFERRER_WHEN_DOWNGRADE:
            found.append(
                Weakness(
                    "referrer_policy",
                    "'no-referrer-when-downgrade' sends full URLs (paths and query strings) to "
                    "every HTTPS site",
                    keep,
                )
            )
        return tuple(found)

    def _csp_weaknesses(self) -> Iterator[Weakness]:
        csp = self.csp_policy
        if not isinstance(csp, ContentSecurityPolicy):
            if self.csp_report_only is not None:
                yield Weakness(
                    "csp_policy",
                    "csp_policy=None with csp_report_only: violations are reported, nothing is "
                    "blocked",
                    "Move the policy to csp_policy once the reports are clean",
                )
            else:
                yield Weakness(
                    "csp_policy",
                    "csp_policy=None sends no Content-Security-Policy, so injected scripts run",
                    "Keep a CSP (every preset has one); roll a new one out with csp_report_only",
                )
        else:
            yield from _script_weaknesses(csp)
        ancestors = csp.get("frame-ancestors") if isinstance(csp, ContentSecurityPolicy) else None
        if ancestors is None and self.x_frame_options is None:
            yield Weakness(
                "x_frame_options",
                "x_frame_options=None without a CSP frame-ancestors directive lets any site "
                "frame these pages (clickjacking)",
                "Keep x_frame_options='auto' (DENY) or add frame-ancestors to the CSP",
                refused_in_production=True,
            )
        elif ancestors is not None and _WIDE_SOURCES.intersection(ancestors):
            yield Weakness(
                "csp_policy.frame-ancestors",
                f"frame-ancestors {' '.join(ancestors)!r} lets any site frame these pages "
                "(clickjacking)",
                "Use \"'none'\", \"'self'\" or a list of the origins that may frame them",
                refused_in_production=True,
            )

    def _hsts_weaknesses(self) -> Iterator[Weakness]:
        max_age = self.hsts_max_age
        if max_age is None:
            yield Weakness(
                "hsts_max_age",
                "hsts_max_age=None sends no Strict-Transport-Security, so a first visit or an "
                "http:// link can be downgraded to plain HTTP",
                "Keep hsts_max_age=63072000, or have the TLS-terminating proxy send HSTS",
            )
        elif max_age == 0:
            yield Weakness(
                "hsts_max_age",
                "hsts_max_age=0 tells browsers to forget that this host is HTTPS-only",
                "Set hsts_max_age=63072000 (two years); withdraw HSTS at the proxy if you must",
                refused_in_production=True,
            )
        elif max_age < _HSTS_SHORT:
            yield Weakness(
                "hsts_max_age",
                f"hsts_max_age={max_age} is under six months; browsers soon forget that this "
                "host is HTTPS-only",
                "Raise it step by step to 63072000 (two years)",
            )

    def check_environment(self, *, production: bool | None = None, where: str = "") -> None:
        """Refuse the weaknesses marked ``refused_in_production`` in production; log the others.

        ``production=None`` asks :func:`bastion.core.environment.is_production`. Called once per
        policy by :class:`HeaderRouter` at start-up, so each warning is logged once per
        middleware; ``where`` (an override prefix) is named in the message.
        """
        if production is None:
            production = is_production()
        place = f" (override {where!r})" if where else ""
        found = self.weaknesses()
        for weakness in found:
            if production and weakness.refused_in_production:
                raise ConfigurationError(
                    f"security headers{place}: {weakness.setting}: {weakness.problem}; this is "
                    f"refused when ENV=production. Fix: {weakness.fix}.",
                    setting=weakness.setting,
                )
        for weakness in found:
            logger.warning(
                "bastion security headers%s: %s: %s. %s.",
                place,
                weakness.setting,
                weakness.problem,
                weakness.fix,
            )

    @classmethod
    def preset(cls, name: Preset | str = Preset.STRICT, **overrides: Any) -> HeaderPolicy:
        """The named preset (``strict``, ``api``, ``relaxed``) with ``overrides`` applied."""
        preset = _coerce(Preset, "preset", name)
        base: dict[str, Any] = {}
        if preset is Preset.API:
            base = {
                "csp_policy": _API_CSP,
                "permissions_policy": None,
                "referrer_policy": ReferrerPolicy.NO_REFERRER,
                "coop_policy": None,
                "coep_policy": None,
                "origin_agent_cluster": False,
                "x_dns_prefetch_control": None,
                "cache_control": "no-store",
            }
        elif preset is Preset.RELAXED:
            base = {
                "hsts_max_age": 31_536_000,
                "include_subdomains": False,
                "csp_policy": _RELAXED_CSP,
                "permissions_policy": _RELAXED_PERMISSIONS,
                "coop_policy": CrossOriginOpenerPolicy.SAME_ORIGIN_ALLOW_POPUPS,
                "coep_policy": None,
                "corp_policy": CrossOriginResourcePolicy.SAME_SITE,
                "x_dns_prefetch_control": None,
            }
        base.update(overrides)
        return cls(**base)

    def replace(self, **changes: Any) -> HeaderPolicy:
        """A validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def compile(self) -> CompiledHeaders:
        """Render every header once into bytes (see :class:`CompiledHeaders`)."""
        dynamic: list[tuple[str, str]] = []
        csp = self._with_reporting(self.csp_policy)
        report_only = self._with_reporting(self.csp_report_only)
        if csp is not None:
            dynamic.append(("content-security-policy", csp.render(_NONCE_MARK)))
        if report_only is not None:
            dynamic.append(("content-security-policy-report-only", report_only.render(_NONCE_MARK)))
        plain = self._plain_headers(csp, reporting=bool(dynamic))
        hsts: list[tuple[str, str]] = []
        if self.hsts_max_age is not None:
            value = f"max-age={self.hsts_max_age}"
            if self.include_subdomains:
                value += "; includeSubDomains"
            if self.hsts_preload:
                value += "; preload"
            hsts.append(("strict-transport-security", value))
        names = [name for name, _ in (*plain, *dynamic, *hsts)]
        emitted = set(names)
        if len(emitted) != len(names):
            twice = sorted({name for name in names if names.count(name) > 1})
            raise ConfigurationError(
                f"extra names headers the policy already sends: {twice}; set them through "
                "their own settings instead",
                setting="extra",
            )
        unknown = self.force - emitted
        if unknown:
            raise ConfigurationError(
                f"force names headers this policy does not send: {sorted(unknown)}",
                setting="force",
            )
        clash = emitted & set(self.remove)
        if clash:
            raise ConfigurationError(
                f"remove names headers this policy sends: {sorted(clash)}", setting="remove"
            )
        return CompiledHeaders(
            plain=plain,
            dynamic=dynamic,
            hsts=hsts,
            hsts_over_http=self.hsts_over_http,
            remove=self.remove,
            force=self.force,
        )

    def _plain_headers(
        self, csp: ContentSecurityPolicy | None, *, reporting: bool
    ) -> list[tuple[str, str]]:
        plain: list[tuple[str, str]] = []
        if self.report_to is not None and reporting:
            plain.append(("reporting-endpoints", f'{self.report_group}="{self.report_to}"'))
        frame = self._frame_options(csp)
        if frame is not None:
            plain.append(("x-frame-options", frame))
        if self.nosniff:
            plain.append(("x-content-type-options", "nosniff"))
        if self.referrer_policy is not None:
            plain.append(("referrer-policy", str(self.referrer_policy)))
        permissions = self.permissions_policy
        if isinstance(permissions, PermissionsPolicy):
            if permissions.features:
                plain.append(("permissions-policy", permissions.render()))
        elif isinstance(permissions, str):
            plain.append(("permissions-policy", permissions))
        for name, value in (
            ("cross-origin-opener-policy", self.coop_policy),
            ("cross-origin-embedder-policy", self.coep_policy),
            ("cross-origin-resource-policy", self.corp_policy),
        ):
            if value is not None:
                plain.append((name, str(value)))
        for name, setting in (
            ("x-xss-protection", "0" if self.x_xss_protection_zero else None),
            ("x-permitted-cross-domain-policies", self.x_permitted_cross_domain_policies),
            ("origin-agent-cluster", "?1" if self.origin_agent_cluster else None),
            ("x-dns-prefetch-control", self.x_dns_prefetch_control),
            ("cache-control", self.cache_control),
        ):
            if setting is not None:
                plain.append((name, str(setting)))
        plain.extend(self.extra.items())
        return plain

    def _with_reporting(self, csp: object) -> ContentSecurityPolicy | None:
        if not isinstance(csp, ContentSecurityPolicy):
            return None
        if self.report_to is None:
            return csp
        changes: dict[str, str] = {}
        if csp.get("report-to") is None:
            changes["report_to"] = self.report_group
        if csp.get("report-uri") is None:
            changes["report_uri"] = self.report_to
        return csp.with_directives(**changes) if changes else csp

    def _frame_options(self, csp: ContentSecurityPolicy | None) -> str | None:
        if self.x_frame_options is None:
            return None
        setting = XFrameOptions(self.x_frame_options)
        ancestors = None if csp is None else csp.get("frame-ancestors")
        derived: str | None
        if ancestors is None or ancestors == ("'none'",):
            derived = XFrameOptions.DENY.value
        elif ancestors == ("'self'",):
            derived = XFrameOptions.SAMEORIGIN.value
        else:
            derived = None
        if setting is XFrameOptions.AUTO:
            return derived
        if ancestors is not None and derived != setting.value:
            raise ConfigurationError(
                f"x_frame_options={setting.value!r} contradicts the CSP frame-ancestors "
                f"{' '.join(ancestors)!r}; use x_frame_options='auto' to derive it",
                setting="x_frame_options",
            )
        return str(setting.value)


def _script_weaknesses(csp: ContentSecurityPolicy) -> Iterator[Weakness]:
    """What lets an attacker's script run under ``csp`` (script-src, else default-src)."""
    setting = "csp_policy.script-src"
    scripts = csp.get("script-src")
    if scripts is None:
        scripts = csp.get("default-src")
        setting = "csp_policy.default-src"
    if scripts is None:
        yield Weakness(
            "csp_policy.script-src",
            "the CSP has neither script-src nor default-src, so it does not restrict scripts",
            "Add script-src with NONCE and \"'strict-dynamic'\" (as the strict preset does)",
        )
        return
    dynamic = "'strict-dynamic'" in scripts
    # With a nonce or a hash, CSP 2 browsers ignore 'unsafe-inline' (a CSP 1 fallback);
    # with 'strict-dynamic', CSP 3 browsers also ignore host and scheme sources.
    keyed = dynamic or any(s == NONCE or s.startswith(_HASH_PREFIXES) for s in scripts)
    if "'unsafe-inline'" in scripts and not keyed:
        yield Weakness(
            setting,
            "\"'unsafe-inline'\" without a nonce or hash lets injected inline scripts run",
            "Use NONCE (csp_nonce() in templates) or script hashes instead",
            refused_in_production=True,
        )
    wide = sorted(_WIDE_SOURCES.intersection(scripts))
    if wide and not dynamic:
        yield Weakness(
            setting,
            f"{' '.join(wide)} lets scripts from any origin or data: URL run",
            "List the script origins, or use NONCE with \"'strict-dynamic'\"",
            refused_in_production=True,
        )
    if "'unsafe-eval'" in scripts:
        yield Weakness(
            setting,
            "\"'unsafe-eval'\" lets strings run as code (eval, new Function)",
            "Remove it once the code no longer needs eval",
        )


_Apply = Callable[[list[tuple[bytes, bytes]], bool, "bytes | None"], list[tuple[bytes, bytes]]]


def _encode(pairs: Iterable[tuple[str, str]]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((n.encode("ascii"), v.encode("ascii")) for n, v in pairs)


class CompiledHeaders:
    """A :class:`HeaderPolicy` rendered to bytes, applied per response by :attr:`apply`.

    ``uses_nonce`` says whether a nonce must be drawn for each response. Instances are
    immutable after construction and safe to share between threads and event loops.
    """

    __slots__ = (
        "_force",
        "_remove",
        "apply",
        "http_extra",
        "https_extra",
        "nonce_headers",
        "owned",
        "uses_nonce",
    )

    owned: frozenset[bytes]
    """Response header names (in lowercase, Title-Case and UPPERCASE spellings) that send a
    response down the slow path of :attr:`apply`: kept, dropped or replaced there. A response
    without any of them gets ``headers + extra`` and the nonce headers appended, nothing else."""
    https_extra: list[tuple[bytes, bytes]]
    """The static headers appended over HTTPS (with HSTS). Danger: shared; never mutate it."""
    http_extra: list[tuple[bytes, bytes]]
    """The static headers appended over plain HTTP. Danger: shared; never mutate it."""
    nonce_headers: tuple[tuple[bytes, tuple[bytes, ...]], ...]
    """``(name, parts)`` per header that carries the nonce, in order: its value is
    ``nonce.join(parts)``, appended after the static headers."""

    apply: _Apply
    """``apply(headers, https, nonce)``: a new list, the response's ``headers`` with the policy
    applied (the input list is not modified).

    Positional arguments only: this is the per-response path, built as a closure in
    ``__init__``. Names of the policy are found in lowercase (as ASGI requires), Title-Case or
    UPPERCASE; the WSGI adapter lowercases names first. A header of the policy that the response
    already has is kept (unless forced); removed names are dropped. ``nonce`` (ASCII bytes from
    :class:`NonceSource`) is required when :attr:`uses_nonce` is true.
    """

    def __init__(
        self,
        *,
        plain: Iterable[tuple[str, str]],
        dynamic: Iterable[tuple[str, str]],
        hsts: Iterable[tuple[str, str]],
        hsts_over_http: bool,
        remove: Iterable[str],
        force: Iterable[str],
    ) -> None:
        split = [
            (name.encode("ascii"), tuple(part.encode("ascii") for part in value.split(_NONCE_MARK)))
            for name, value in dynamic
        ]
        # A CSP without a nonce is as static as any other header.
        static = _encode(plain) + tuple((n, parts[0]) for n, parts in split if len(parts) == 1)
        secure = static + _encode(hsts)
        # Lists, concatenated onto each response's list; never mutated after this point.
        self.https_extra = list(secure)
        self.http_extra = list(secure if hsts_over_http else static)
        self.nonce_headers = tuple((n, parts) for n, parts in split if len(parts) > 1)
        self.uses_nonce = bool(self.nonce_headers)
        self._remove = frozenset(n.encode("ascii") for n in remove)
        self._force = frozenset(n.encode("ascii") for n in force)
        names = {n for n, _ in secure} | {n for n, _ in self.nonce_headers} | self._remove
        # A response header named in this set takes the slow path (kept, dropped or replaced).
        # ASGI requires lowercase names; Title-Case and UPPERCASE spellings are listed too, so
        # the per-response check is a set lookup per header, without lowercasing each name.
        self.owned = frozenset(
            variant for n in names for variant in (n, n.title(), n.upper(), _CANONICAL.get(n, n))
        )
        self.apply = self._specialise()

    def _specialise(self) -> _Apply:
        """The per-response function, with everything it reads bound as closure variables."""
        owned, secure, plain, slow = self.owned, self.https_extra, self.http_extra, self._apply_slow
        if not self.nonce_headers:

            def apply_static(
                headers: list[tuple[bytes, bytes]], https: bool, nonce: bytes | None, /
            ) -> list[tuple[bytes, bytes]]:
                for name, _ in headers:
                    if name in owned:
                        return slow(headers, https, nonce)
                return headers + (secure if https else plain)

            return apply_static
        dynamic = self.nonce_headers

        def apply_with_nonce(
            headers: list[tuple[bytes, bytes]], https: bool, nonce: bytes | None, /
        ) -> list[tuple[bytes, bytes]]:
            for name, _ in headers:
                if name in owned:
                    return slow(headers, https, nonce)
            if nonce is None:
                raise ConfigurationError(_NONCE_MISSING, setting="nonce")
            result = headers + (secure if https else plain)
            for name, parts in dynamic:
                result.append((name, nonce.join(parts)))
            return result

        return apply_with_nonce

    def _apply_slow(
        self, existing: list[tuple[bytes, bytes]], https: bool, nonce: bytes | None
    ) -> list[tuple[bytes, bytes]]:
        drop = self._remove | self._force
        result = [item for item in existing if item[0].lower() not in drop]
        kept = {item[0].lower() for item in result}
        result.extend(
            item for item in (self.https_extra if https else self.http_extra) if item[0] not in kept
        )
        for name, parts in self.nonce_headers:
            if name not in kept:
                if nonce is None:
                    raise ConfigurationError(_NONCE_MISSING, setting="nonce")
                result.append((name, nonce.join(parts)))
        return result

    def __repr__(self) -> str:
        names = sorted(
            {n.decode() for n, _ in self.https_extra} | {n.decode() for n, _ in self.nonce_headers}
        )
        return f"CompiledHeaders({', '.join(names)})"


class NonceSource:
    """128-bit CSP nonces, as ``(text, ascii_bytes)`` pairs of 32 hex digits.

    ``os.urandom`` is called once per 1024 nonces and the batch is cut up at once, so drawing a
    nonce is one C-level ``next()``: ``next(source.batch, None) or source.refill()``. The batch
    is dropped in a forked child (``os.register_at_fork``), so two worker processes never hand
    out the same nonces.

    Drawing is one C-level ``next()``, atomic under the GIL, so two threads never get the same
    nonce; a race at the end of a batch only makes both threads start a fresh one. (The WSGI
    middleware uses :func:`secrets.token_hex` anyway: its budget is not in microseconds.)
    """

    __slots__ = ("__weakref__", "batch")

    def __init__(self) -> None:
        self.batch: Iterator[tuple[str, bytes]] = iter(())
        ref = weakref.ref(self)

        def _forget() -> None:
            source = ref()
            if source is not None:
                source.batch = iter(())

        os.register_at_fork(after_in_child=_forget)

    def refill(self) -> tuple[str, bytes]:
        """Start a fresh batch and return its first nonce."""
        # hex() with a separator every 16 bytes, then split(): the batch is cut up in C. An
        # explicit separator takes CPython's faster single-character split path.
        digits = os.urandom(_NONCE_BYTES * _NONCE_BATCH).hex(" ", _NONCE_BYTES)
        self.batch = zip(digits.split(" "), digits.encode("ascii").split(b" "), strict=True)
        return next(self.batch)

    def __call__(self) -> tuple[str, bytes]:
        return next(self.batch, None) or self.refill()

    def __repr__(self) -> str:
        return "NonceSource()"


class ReportBudget:
    """A token bucket bounding how many CSP reports are accepted: ``burst`` at once, refilled at
    ``per_second``. Pure state over an injected clock; callers that share it between threads
    must hold a lock around :meth:`take`.
    """

    __slots__ = ("_burst", "_clock", "_rate", "_tokens", "_updated")

    def __init__(self, clock: Clock, *, burst: int = 50, per_second: float = 1.0) -> None:
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ConfigurationError("report burst must be an int >= 1", setting="report_burst")
        if not isinstance(per_second, int | float) or not per_second > 0:
            raise ConfigurationError(
                "report rate must be > 0 reports per second", setting="report_rate"
            )
        self._clock = clock
        self._burst = float(burst)
        self._rate = float(per_second)
        self._tokens = float(burst)
        self._updated = clock.now()

    def take(self) -> bool:
        """Spend one token if there is one; ``False`` means refuse (429)."""
        now = self._clock.now()
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def give_back(self) -> None:
        """Return the token of a report another budget then refused."""
        self._tokens = min(self._burst, self._tokens + 1.0)

    def __repr__(self) -> str:
        return f"ReportBudget(burst={int(self._burst)}, per_second={self._rate})"


class ClientReportBudgets:
    """A token bucket per client (``burst`` at once, refilled at ``per_second``), so that one
    noisy client spends its own budget, not everyone's.

    The key is what the adapter resolved (:meth:`ClientIP.key
    <bastion.core.ratelimit.ClientIP.key>`: the address, an IPv6 client's /64); clients whose
    address is unknown share the key ``None``. The table holds at most ``max_clients``
    buckets, least recently used dropped first: anonymous traffic cannot grow memory without
    bound. A dropped client starts again from a full bucket, which the process-wide
    :class:`ReportBudget` behind this one still bounds. Pure state over an injected clock;
    threaded callers hold a lock around :meth:`take`.
    """

    __slots__ = ("_burst", "_clock", "_max", "_rate", "_table")

    def __init__(
        self, clock: Clock, *, burst: int = 10, per_second: float = 0.5, max_clients: int = 4096
    ) -> None:
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ConfigurationError(
                "per-client report burst must be an int >= 1", setting="report_client_burst"
            )
        if not isinstance(per_second, int | float) or not per_second > 0:
            raise ConfigurationError(
                "per-client report rate must be > 0 reports per second",
                setting="report_client_rate",
            )
        if isinstance(max_clients, bool) or not isinstance(max_clients, int) or max_clients < 1:
            raise ConfigurationError(
                "report_max_clients must be an int >= 1 (4096 is the default)",
                setting="report_max_clients",
            )
        self._clock = clock
        self._burst = float(burst)
        self._rate = float(per_second)
        self._max = max_clients
        self._table: dict[str | None, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._table)

    def take(self, key: str | None) -> bool:
        """Spend one of ``key``'s tokens if it has one; ``False`` means refuse (429)."""
        now = self._clock.now()
        tokens, updated = self._table.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + max(0.0, now - updated) * self._rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._table[key] = (tokens, now)  # re-inserted last: the dict is the LRU order
        if len(self._table) > self._max:
            del self._table[next(iter(self._table))]
        return allowed

    def give_back(self, key: str | None) -> None:
        """Return ``key``'s token for a report the process-wide budget then refused."""
        entry = self._table.get(key)
        if entry is not None:
            self._table[key] = (min(self._burst, entry[0] + 1.0), entry[1])

    def __repr__(self) -> str:
        return (
            f"ClientReportBudgets(burst={int(self._burst)}, per_second={self._rate}, "
            f"max_clients={self._max})"
        )


@dataclass(frozen=True, slots=True)
class CSPViolation:
    """One CSP violation report, reduced to what is safe to log.

    URLs lose their query and fragment (they may carry tokens); ``sample`` is never kept.
    """

    document_url: str
    blocked_url: str
    directive: str
    disposition: str
    status_code: int | None


_MAX_FIELD = 512


def _text(value: object, *, url: bool = False) -> str:
    if not isinstance(value, str):
        return ""
    if url:
        value = value.split("#", 1)[0].split("?", 1)[0]
    return value[:_MAX_FIELD]


def _violation(body: Mapping[str, Any], *, legacy: bool) -> CSPViolation:
    if legacy:
        keys = ("document-uri", "blocked-uri", "effective-directive", "status-code")
        directive = body.get(keys[2]) or body.get("violated-directive")
    else:
        keys = ("documentURL", "blockedURL", "effectiveDirective", "statusCode")
        directive = body.get(keys[2])
    status = body.get(keys[3])
    return CSPViolation(
        document_url=_text(body.get(keys[0]), url=True),
        blocked_url=_text(body.get(keys[1]), url=True),
        directive=_text(directive),
        disposition=_text(body.get("disposition")) or "enforce",
        status_code=status if isinstance(status, int) and not isinstance(status, bool) else None,
    )


def parse_csp_reports(
    body: bytes, content_type: str, *, limit: int = 20
) -> tuple[CSPViolation, ...]:
    """The CSP violations in a report request body.

    ``content_type`` must be ``application/csp-report`` (a ``report-uri`` body:
    ``{"csp-report": {...}}``) or ``application/reports+json`` (a Reporting API list whose
    ``csp-violation`` entries are kept, other report types skipped). At most ``limit``
    violations are returned. Raises :class:`~bastion.errors.BadData` on anything else: bad
    UTF-8, bad JSON, JSON nested too deeply, or the wrong shape. Never raises anything else.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in CSP_REPORT_MEDIA_TYPES:
        raise BadData(f"report media type must be one of {sorted(CSP_REPORT_MEDIA_TYPES)}")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadData("report body is not UTF-8 JSON") from None
    if media == "application/csp-report":
        inner = data.get("csp-report") if isinstance(data, dict) else None
        if not isinstance(inner, dict):
            raise BadData('a csp-report body must be an object with a "csp-report" object')
        return (_violation(inner, legacy=True),)
    if not isinstance(data, list):
        raise BadData("a reports+json body must be a JSON list of reports")
    found: list[CSPViolation] = []
    for report in data:
        if not isinstance(report, dict):
            raise BadData("each report in a reports+json body must be an object")
        if report.get("type") != "csp-violation":
            continue
        inner = report.get("body")
        if not isinstance(inner, dict):
            raise BadData('a csp-violation report needs a "body" object')
        if len(found) < limit:
            found.append(_violation(inner, legacy=False))
    return tuple(found)


class ReportReceiver:
    """The decisions of a CSP report endpoint. Adapters read the body and send the answer.

    Order, cheapest first: method (405), volume (429: first the client's own budget, a
    :class:`ClientReportBudgets` bucket, then the :class:`ReportBudget` of the whole process,
    so one noisy client is refused before it can spend everyone's), media type (415), declared
    length (413), then, once the adapter has read at most ``max_bytes``, the JSON (400) and
    acceptance (204). Every accepted violation becomes a ``csp_violation`` audit event and
    every refusal but 429 an ``input_validation_fail`` event; the budgets bound both, so a
    flood cannot flood the audit trail. 429s are not audited.

    Danger: the budgets are not locked; threaded callers serialise :meth:`precheck`.
    """

    __slots__ = ("_auditor", "_budget", "_clients", "max_bytes")

    EXTRA_HEADERS: Final[Mapping[int, tuple[tuple[bytes, bytes], ...]]] = {
        405: ((b"allow", b"POST"),),
        429: ((b"retry-after", b"1"),),
    }

    def __init__(
        self,
        auditor: Auditor,
        clock: Clock,
        *,
        max_bytes: int = 16_384,
        burst: int = 50,
        per_second: float = 1.0,
        client_burst: int = 10,
        client_per_second: float = 0.5,
        max_clients: int = 4096,
    ) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
            raise ConfigurationError("report_max_bytes must be an int", setting="report_max_bytes")
        if not 256 <= max_bytes <= 1_048_576:
            raise ConfigurationError(
                f"report_max_bytes={max_bytes} must be between 256 and 1048576 (reports are "
                "small; 16384 is plenty)",
                setting="report_max_bytes",
            )
        self._auditor = auditor
        self._budget = ReportBudget(clock, burst=burst, per_second=per_second)
        self._clients = ClientReportBudgets(
            clock, burst=client_burst, per_second=client_per_second, max_clients=max_clients
        )
        self.max_bytes = max_bytes

    def precheck(
        self,
        method: str,
        content_type: str,
        content_length: str | None,
        client_ip: str | None,
        client_key: str | None = None,
    ) -> int | None:
        """A refusal status decided from the request line and headers, or ``None`` to read on.

        ``client_key`` names the client's budget (:meth:`ClientIP.key
        <bastion.core.ratelimit.ClientIP.key>`); ``client_ip`` goes into audit events.
        """
        if normalize_method(method) != "POST":
            return 405
        if not self._clients.take(client_key):
            return 429
        if not self._budget.take():
            self._clients.give_back(client_key)
            return 429
        if content_type.split(";", 1)[0].strip().lower() not in CSP_REPORT_MEDIA_TYPES:
            return self._refuse(client_ip, "unsupported_media_type", 415)
        if content_length is not None and (
            not content_length.isdigit() or int(content_length) > self.max_bytes
        ):
            return self.too_large(client_ip)
        return None

    def too_large(self, client_ip: str | None) -> int:
        """The body ran past ``max_bytes`` while being read: 413."""
        return self._refuse(client_ip, "too_large", 413)

    def accept(self, body: bytes, content_type: str, client_ip: str | None) -> int:
        """Parse ``body`` and audit its violations: 204, or 400 if it is malformed."""
        try:
            violations = parse_csp_reports(body, content_type)
        except BadData:
            return self._refuse(client_ip, "malformed", 400)
        for violation in violations:
            self._auditor.emit(
                "csp_violation",
                outcome=Outcome.BLOCKED if violation.disposition == "enforce" else Outcome.FAILURE,
                client_ip=client_ip,
                details={
                    "directive": violation.directive,
                    "blocked_url": violation.blocked_url,
                    "document_url": violation.document_url,
                    "disposition": violation.disposition,
                    "status_code": violation.status_code,
                },
            )
        return 204

    def _refuse(self, client_ip: str | None, reason: str, status: int) -> int:
        self._auditor.emit(
            EventName.INPUT_VALIDATION_FAIL,
            outcome=Outcome.FAILURE,
            client_ip=client_ip,
            details={"field": "csp_report", "reason": reason},
        )
        return status

    def __repr__(self) -> str:
        return f"ReportReceiver(max_bytes={self.max_bytes}, budget={self._budget!r})"


class HeaderRouter:
    """What a headers middleware holds, built once: the compiled default policy, per-path
    overrides and, when the policy's ``report_to`` is a path, the CSP report receiver.

    ``overrides`` maps path prefixes to other policies (``{"/legacy": "relaxed"}``); the longest
    matching prefix wins, matched on whole segments (``/docs`` covers ``/docs/x``, not
    ``/docsx``). Shared by the ASGI and WSGI adapters so both route identically.

    Each policy is checked once here (:meth:`HeaderPolicy.check_environment`): its weaknesses
    are logged, and in production (``production=None`` asks
    :func:`~bastion.core.environment.is_production`) the unsafe ones are refused.
    """

    __slots__ = ("default", "overrides", "receiver", "report_path", "request_id_header")

    def __init__(
        self,
        policy: HeaderPolicy | Preset | str = Preset.STRICT,
        *,
        overrides: Mapping[str, HeaderPolicy | Preset | str] | None = None,
        auditor: Auditor | None = None,
        report_max_bytes: int = 16_384,
        report_burst: int = 50,
        report_rate: float = 1.0,
        report_client_burst: int = 10,
        report_client_rate: float = 0.5,
        report_max_clients: int = 4096,
        request_id_header: str | None = None,
        clock: Clock = system_clock,
        production: bool | None = None,
    ) -> None:
        if production is None:
            production = is_production()
        self.request_id_header = (
            None
            if request_id_header is None
            else _check_name("request_id_header", request_id_header).lower()
        )
        resolved = _resolve_policy(policy)
        resolved.check_environment(production=production)
        self.default = resolved.compile()
        routes: list[tuple[str, CompiledHeaders]] = []
        for prefix, other in (overrides or {}).items():
            checked = _check_override_prefix(prefix)
            policy_there = _resolve_policy(other)
            if policy_there is not resolved:
                policy_there.check_environment(production=production, where=checked)
            routes.append((checked, policy_there.compile()))
        self.overrides = tuple(sorted(routes, key=lambda item: len(item[0]), reverse=True))
        target = resolved.report_to
        self.report_path = target if target is not None and target.startswith("/") else None
        self.receiver: ReportReceiver | None = None
        if self.report_path is not None:
            if auditor is None:
                raise ConfigurationError(
                    f"report_to={target!r} makes this middleware receive CSP reports, which are "
                    "audit events: pass auditor=Auditor(...)",
                    setting="auditor",
                )
            self.receiver = ReportReceiver(
                auditor,
                clock,
                max_bytes=report_max_bytes,
                burst=report_burst,
                per_second=report_rate,
                client_burst=report_client_burst,
                client_per_second=report_client_rate,
                max_clients=report_max_clients,
            )

    @staticmethod
    def request_id(value: str | None) -> str | None:
        """The request id the proxy sent in ``request_id_header``, if it is a short token
        (at most 128 of ``A-Z a-z 0-9 . _ : ; = / + @ -``); ``None``: draw a fresh one."""
        if value is None or _REQUEST_ID.fullmatch(value) is None:
            return None
        return value

    def for_path(self, path: str) -> CompiledHeaders:
        """The compiled policy for ``path`` (the full path, mount prefix included): the longest
        matching override, else the default.

        An override is an exception to the default, so it applies only when every reading of
        the path agrees on it (:mod:`bastion.core.request`): ``/app/../docs`` gets the
        ``/docs`` override only if ``/app/../docs`` as sent would get it too; otherwise the
        default policy.
        """
        chosen = self._lookup(path)
        if (
            chosen is not self.default
            and not is_normal(path)
            and self._lookup(normalize_path(path)) is not chosen
        ):
            return self.default
        return chosen

    def _lookup(self, path: str) -> CompiledHeaders:
        for prefix, compiled in self.overrides:
            if path.startswith(prefix) and (
                len(path) == len(prefix) or path[len(prefix)] == "/" or prefix.endswith("/")
            ):
                return compiled
        return self.default

    def __repr__(self) -> str:
        return f"HeaderRouter({self.default!r}, overrides={len(self.overrides)})"


def _resolve_policy(policy: HeaderPolicy | Preset | str) -> HeaderPolicy:
    return policy if isinstance(policy, HeaderPolicy) else HeaderPolicy.preset(policy)


def _check_override_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not prefix.startswith("/"):
        raise ConfigurationError(
            f"override prefix {prefix!r} must be a path starting with '/'", setting="overrides"
        )
    return prefix


# -- a policy for Swagger UI ----------------------------------------------------------------------


class _PageAssets(HTMLParser):
    """The scripts, stylesheets and icons an HTML page loads, and its inline scripts' texts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[str] = []
        self.inline_scripts: list[str] = []
        self.stylesheets: list[str] = []
        self.icons: list[str] = []
        self._inline: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "script":
            if found.get("src"):
                self.scripts.append(found["src"])
            else:
                self._inline = []
        elif tag == "link" and found.get("href"):
            rel = found.get("rel", "").lower().split()
            if "stylesheet" in rel:
                self.stylesheets.append(found["href"])
            elif "icon" in rel:
                self.icons.append(found["href"])

    def handle_data(self, data: str) -> None:
        if self._inline is not None:
            self._inline.append(data)  # a script's text is raw: no character references

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._inline is not None:
            self.inline_scripts.append("".join(self._inline))
            self._inline = None


def _sha256_source(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def _url_sources(urls: Iterable[str]) -> list[str]:
    """Each absolute URL as itself (a path-exact host-source); a relative one as ``'self'``."""
    out: list[str] = []
    for url in urls:
        source = url if url.startswith(("https://", "http://")) else "'self'"
        if source not in out:
            out.append(source)
    return out


def swagger_ui_policy(
    *pages: str, base: HeaderPolicy | Preset | str = Preset.STRICT
) -> HeaderPolicy:
    """The policy for Swagger UI pages (FastAPI's ``/docs`` and ``/docs/oauth2-redirect``, or
    any app's), from their HTML: ``base`` with a CSP that allows what the pages load and
    nothing more.

    Swagger UI loads a bundle and a stylesheet from a CDN and starts with an inline script that
    carries no nonce, so no nonce-based preset runs it. Here each external script and
    stylesheet is allowed by its full URL (``cdn.jsdelivr.net`` serves every npm package: the
    host alone would let an injected tag load any of them), each inline script by the SHA-256
    of its text, with no ``'strict-dynamic'`` (it would make browsers ignore the URLs). Styles
    add ``'unsafe-inline'``: Swagger UI writes ``style`` attributes, and CSS cannot run script.
    Images allow ``data:`` (the stylesheet's icons) and the page's favicon; ``connect-src
    'self'`` lets it fetch the OpenAPI document and try requests; COEP is left out (the CDN
    files do not opt in to being embedded). :func:`bastion.asgi.headers.fastapi_swagger_ui_policy`
    renders FastAPI's pages for this function.

    Danger: the hashes are those of these exact pages. Pass pages rendered from the app's
    configuration, never ones holding request data, and build the policy again when the pages
    change (another title, other Swagger UI parameters).
    """
    assets = _PageAssets()
    for page in pages:
        assets.feed(page)
        assets.close()
    if not assets.scripts and not assets.inline_scripts:
        raise ConfigurationError(
            "swagger_ui_policy(): the pages load no script; pass the HTML of the Swagger UI "
            "pages (FastAPI: fastapi_swagger_ui_policy(app))",
            setting="pages",
        )
    script = _url_sources(assets.scripts)
    script += list(dict.fromkeys(map(_sha256_source, assets.inline_scripts)))
    csp = ContentSecurityPolicy(
        default_src="'none'",
        script_src=script,
        style_src=[*_url_sources(["/", *assets.stylesheets]), "'unsafe-inline'"],
        img_src=[*_url_sources(["/", *assets.icons]), "data:"],
        font_src=["'self'", "data:"],
        connect_src="'self'",
        form_action="'self'",
        base_uri="'none'",
        frame_ancestors="'none'",
    )
    return _resolve_policy(base).replace(csp_policy=csp, coep_policy=None)
