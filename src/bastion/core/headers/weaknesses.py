"""What a header policy turns off or weakens, and what is done about it.

A protection is switched off with its own named setting; :func:`weaknesses` lists each such
setting as a :class:`Weakness`, and :func:`check_environment` (called once per policy at
start-up) logs them on the ``bastion.security.headers`` logger and, with ``ENV=production``,
refuses the unsafe ones. The package docstring lists which settings are refused and which are
only warned about. :mod:`bastion.core.headers.grading` is the other judge of header strength:
it grades a response as the MDN HTTP Observatory does, while this module judges a configuration.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bastion.core.environment import is_production
from bastion.core.headers.csp import NONCE, ContentSecurityPolicy
from bastion.core.headers.vocabulary import ReferrerPolicy
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from bastion.core.headers.policy import HeaderPolicy

__all__ = ["Weakness", "check_environment", "weaknesses"]

logger = logging.getLogger("bastion.security.headers")

_HSTS_SHORT = 15_768_000  # six months: the MDN Observatory's minimum for full marks
# Sources that let a script from any origin (or a data: URL, i.e. inline) run.
_WIDE_SOURCES = frozenset({"*", "data:", "http:", "https:"})
_HASH_PREFIXES = ("'nonce-", "'sha256-", "'sha384-", "'sha512-")


@dataclass(frozen=True, slots=True)
class Weakness:
    """A setting of a :class:`~bastion.core.headers.HeaderPolicy` that turns a protection off
    or weakens it.

    ``refused_in_production`` weaknesses raise :class:`~bastion.errors.ConfigurationError` when
    the app runs with ``ENV=production`` (or ``BASTION_ENV=production``); elsewhere every
    weakness is logged once, at start-up, on the ``bastion.security.headers`` logger.
    """

    setting: str
    problem: str
    fix: str
    refused_in_production: bool = False


def weaknesses(policy: HeaderPolicy) -> tuple[Weakness, ...]:
    """The protections this policy turns off or weakens, in setting order (none for the
    presets). See :func:`check_environment` for what is done with them."""
    found: list[Weakness] = []
    found.extend(_csp_weaknesses(policy))
    found.extend(_hsts_weaknesses(policy))
    if not policy.nosniff:
        found.append(
            Weakness(
                "nosniff",
                "nosniff=False lets browsers guess content types, so an upload or a JSON "
                "reply can be run as HTML or script",
                "Keep nosniff=True and send a correct Content-Type",
                refused_in_production=True,
            )
        )
    referrer = policy.referrer_policy
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


def _csp_weaknesses(policy: HeaderPolicy) -> Iterator[Weakness]:
    csp = policy.csp_policy
    if not isinstance(csp, ContentSecurityPolicy):
        if policy.csp_report_only is not None:
            yield Weakness(
                "csp_policy",
                "csp_policy=None with csp_report_only: violations are reported, nothing is blocked",
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
    if ancestors is None and policy.x_frame_options is None:
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


def _hsts_weaknesses(policy: HeaderPolicy) -> Iterator[Weakness]:
    max_age = policy.hsts_max_age
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


def check_environment(
    policy: HeaderPolicy, *, production: bool | None = None, where: str = ""
) -> None:
    """Refuse the weaknesses marked ``refused_in_production`` in production; log the others.

    ``production=None`` asks :func:`bastion.core.environment.is_production`. Called once per
    policy by :class:`~bastion.core.headers.HeaderRouter` at start-up, so each warning is
    logged once per middleware; ``where`` (an override's path pattern) is named in the message.
    """
    if production is None:
        production = is_production()
    place = f" (override {where!r})" if where else ""
    found = weaknesses(policy)
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
