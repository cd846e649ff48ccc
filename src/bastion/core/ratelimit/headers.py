"""The rate-limit response headers: ``RateLimit-Policy``, ``RateLimit``, ``X-RateLimit-*`` and
``Retry-After``, rendered in one place for every adapter (they encode the text, or take the
bytes of the common case from :func:`header_bytes`)."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Final

from bastion.core.ratelimit.rates import MICROS
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from bastion.core.ratelimit.algorithms import Decision
    from bastion.core.ratelimit.rates import Rate
    from bastion.core.ratelimit.rules import RateLimitResult

__all__ = [
    "check_policy_name",
    "header_bytes",
    "legacy_headers",
    "policy_header",
    "ratelimit_header",
    "render_headers",
    "retry_after_header",
    "tightest",
]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


_POLICY_NAME: Final = re.compile(r"[A-Za-z0-9_.:/+*-]{1,64}", re.ASCII)


def check_policy_name(name: str) -> str:
    """A policy name must be a short token-like string (it is quoted into headers)."""
    if not isinstance(name, str) or _POLICY_NAME.fullmatch(name) is None:
        raise ConfigurationError(
            f"rate-limit policy name {name!r} must be 1-64 characters of letters, digits and "
            "_ . : / + * -",
            setting="name",
        )
    return name


def policy_header(names: Sequence[str], rates: Sequence[Rate]) -> str:
    """``RateLimit-Policy``: ``"name";q=100;w=60`` for each limit. Static: render it once."""
    return ", ".join(
        f'"{name}";q={rate.limit};w={max(1, _ceil_div(rate.period_us, MICROS))}'
        for name, rate in zip(names, rates, strict=True)
    )


def _seconds(value: float) -> int:
    return max(0, math.ceil(value - 1e-9))


def ratelimit_header(names: Sequence[str], decisions: Sequence[Decision]) -> str:
    """``RateLimit``: ``"name";r=42;t=17`` for each limit (remaining, seconds to full)."""
    return ", ".join(
        f'"{name}";r={d.remaining};t={_seconds(d.reset_after)}'
        for name, d in zip(names, decisions, strict=True)
    )


def tightest(decisions: Sequence[Decision]) -> Decision:
    """The decision to report alone: a refusing one first, then the fewest remaining."""
    return min(decisions, key=lambda d: (d.allowed, d.remaining, -d.reset_after))


def legacy_headers(decisions: Sequence[Decision]) -> list[tuple[str, str]]:
    """``X-RateLimit-Limit/Remaining/Reset`` of the tightest limit; Reset in seconds from now."""
    d = tightest(decisions)
    return [
        ("x-ratelimit-limit", str(d.limit)),
        ("x-ratelimit-remaining", str(d.remaining)),
        ("x-ratelimit-reset", str(_seconds(d.reset_after))),
    ]


def retry_after_header(decisions: Sequence[Decision]) -> str:
    """``Retry-After`` in whole seconds (at least 1): when every refusing limit admits again."""
    wait = max((d.retry_after for d in decisions if not d.allowed), default=0.0)
    return str(max(1, _seconds(wait)))


def render_headers(
    results: Sequence[RateLimitResult], *, ietf: bool = True, legacy: bool = False
) -> list[tuple[str, str]]:
    """``RateLimit-Policy`` and ``RateLimit`` (``ietf``), ``X-RateLimit-*`` (``legacy``) and,
    when a result refuses, ``Retry-After``; names lower-case. Shadowed and failed results
    add nothing: a client is never told about a limit that is not enforced.
    """
    shown = [r for r in results if r.decisions and not r.shadowed]
    out: list[tuple[str, str]] = []
    if not shown:
        return out
    if ietf:
        policies = [
            r.rule.policy if r.names is r.rule.names else policy_header(r.names, r.rates)
            for r in shown
        ]
        out.append(("ratelimit-policy", ", ".join(policies)))
        out.append(("ratelimit", ", ".join(ratelimit_header(r.names, r.decisions) for r in shown)))
    decisions = [d for r in shown for d in r.decisions]
    if legacy:
        out.extend(legacy_headers(decisions))
    if any(not r.allowed for r in shown):
        out.append(("retry-after", retry_after_header(decisions)))
    return out


def header_bytes(
    results: Sequence[RateLimitResult], *, ietf: bool = True, legacy: bool = False
) -> list[tuple[bytes, bytes]]:
    """:func:`render_headers` as raw ASGI header pairs, with a fast path for the usual case
    (one admitted, enforced result with all its limits)."""
    if ietf and not legacy and len(results) == 1:
        only = results[0]
        if only.allowed and not only.shadowed and only.decisions and only.names is only.rule.names:
            rule = only.rule
            return [
                (b"ratelimit-policy", rule.policy_raw),
                (b"ratelimit", rule.ratelimit_raw(only.decisions)),
            ]
    return [
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in render_headers(results, ietf=ietf, legacy=legacy)
    ]
