"""The header vocabulary: the values a security header may take, and the checks on configured text.

Each enum is the closed set of values of one header (werkzeug's ``COOP``/``COEP``/``CORP`` style);
:class:`~bastion.core.headers.HeaderPolicy` coerces a string setting to its member, so a typo
fails at start-up. The private checks below are what every module of this package uses before
configured text can reach a header: an RFC 9110 token for names, visible ASCII for values.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from bastion.errors import ConfigurationError

__all__ = [
    "CrossDomainPolicies",
    "CrossOriginEmbedderPolicy",
    "CrossOriginOpenerPolicy",
    "CrossOriginResourcePolicy",
    "DNSPrefetchControl",
    "Preset",
    "ReferrerPolicy",
    "XFrameOptions",
]

# A header value we are willing to send: visible ASCII, interior single spaces allowed.
_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
# A CSP source expression: visible ASCII without ';' and ',' (RFC: no whitespace, no ';' ',').
_SOURCE = re.compile(r"[\x21-\x2b\x2d-\x3a\x3c-\x7e]+")


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
