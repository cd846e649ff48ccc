"""The MDN HTTP Observatory's score table, and how test results become a score and a grade.

Each test result has a modifier (:data:`MODIFIERS`); the score starts at 100 and adds them,
bonuses (positive modifiers) counting only when the score without them is already 90 or more;
the grade is read from the score rounded down to a multiple of 5 (:func:`grade_for`). This table
changes when the Observatory changes its scoring; :mod:`bastion.core.headers.grading` holds the
tests that read a response.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

__all__ = ["GRADES", "MODIFIERS", "Finding", "Report", "grade_at_least", "grade_for"]

GRADES: Final = ("A+", "A", "A-", "B+", "B", "B-", "C+", "C", "C-", "D+", "D", "D-", "F")
"""Every grade, best first."""

_GRADE_CHART: Final = {
    100: "A+",
    95: "A",
    90: "A",
    85: "A-",
    80: "B+",
    75: "B",
    70: "B",
    65: "B-",
    60: "C+",
    55: "C",
    50: "C",
    45: "C-",
    40: "D+",
    35: "D",
    30: "D",
    25: "D-",
}
_EXTRA_CREDIT_FROM: Final = 90

MODIFIERS: Final[dict[str, int]] = {
    "csp-implemented-with-no-unsafe-default-src-none": 10,
    "csp-implemented-with-no-unsafe": 5,
    "csp-implemented-with-unsafe-inline-in-style-src-only": 0,
    "csp-implemented-with-insecure-scheme-in-passive-content-only": -10,
    "csp-implemented-with-unsafe-eval": -10,
    "csp-implemented-with-unsafe-inline": -20,
    "csp-implemented-with-insecure-scheme": -20,
    "csp-header-invalid": -25,
    "csp-not-implemented": -25,
    "csp-not-implemented-but-reporting-enabled": -25,
    "csp-implemented-but-duplicate-directives": 0,
    "cookies-secure-with-httponly-sessions-and-samesite": 5,
    "cookies-secure-with-httponly-sessions": 0,
    "cookies-not-found": 0,
    "cookies-without-secure-flag-but-protected-by-hsts": -5,
    "cookies-session-without-secure-flag-but-protected-by-hsts": -10,
    "cookies-without-secure-flag": -20,
    "cookies-samesite-flag-invalid": -20,
    "cookies-anticsrf-without-samesite-flag": -20,
    "cookies-session-without-httponly-flag": -30,
    "cookies-session-without-secure-flag": -40,
    "cross-origin-resource-sharing-not-implemented": 0,
    "cross-origin-resource-sharing-implemented-with-public-access": 0,
    "cross-origin-resource-sharing-implemented-with-restricted-access": 0,
    "cross-origin-resource-sharing-implemented-with-universal-access": -50,
    "redirection-to-https": 0,
    "redirection-not-needed-no-http": 0,
    "redirection-off-host-from-http": -5,
    "redirection-not-to-https-on-initial-redirection": -10,
    "redirection-not-to-https": -20,
    "redirection-missing": -20,
    "referrer-policy-private": 5,
    "referrer-policy-not-implemented": 0,
    "referrer-policy-unsafe": -5,
    "referrer-policy-header-invalid": -5,
    "hsts-implemented-max-age-at-least-six-months": 0,
    "hsts-implemented-max-age-less-than-six-months": -10,
    "hsts-not-implemented": -20,
    "hsts-header-invalid": -20,
    "hsts-not-implemented-no-https": -20,
    "x-content-type-options-nosniff": 0,
    "x-content-type-options-not-implemented": -5,
    "x-content-type-options-header-invalid": -5,
    "x-frame-options-implemented-via-csp": 5,
    "x-frame-options-sameorigin-or-deny": 0,
    "x-frame-options-allow-from-origin": 0,
    "x-frame-options-not-implemented": -20,
    "x-frame-options-header-invalid": -20,
    "corp-header-invalid": -5,
    "corp-implemented-with-cross-origin": 0,
    "corp-implemented-with-same-origin": 10,
    "corp-implemented-with-same-site": 10,
    "corp-not-implemented": 0,
}
"""The Observatory's score modifier for each test result."""

_FIXES: Final[dict[str, str]] = {
    "csp-implemented-with-no-unsafe": "add default-src 'none' and allow each source type "
    "explicitly (bastion's strict preset)",
    "csp-implemented-with-unsafe-inline-in-style-src-only": "replace 'unsafe-inline' in "
    "style-src with nonces (csp_nonce) or hashes",
    "csp-implemented-with-insecure-scheme-in-passive-content-only": "load images and media "
    "over https: only",
    "csp-implemented-with-unsafe-eval": "remove 'unsafe-eval' from script-src and style-src",
    "csp-implemented-with-unsafe-inline": "remove 'unsafe-inline', data: and broad sources "
    "(*, https:) from script-src and object-src; use nonces (csp_nonce)",
    "csp-implemented-with-insecure-scheme": "load scripts and other active content over https:",
    "csp-header-invalid": "fix the Content-Security-Policy syntax (no repeated directive, "
    "'strict-dynamic' only with a nonce or hash)",
    "csp-not-implemented": "send Content-Security-Policy (SecurityHeadersMiddleware, strict "
    "preset)",
    "csp-not-implemented-but-reporting-enabled": "enforce the policy: send "
    "Content-Security-Policy, not only Content-Security-Policy-Report-Only",
    "csp-implemented-but-duplicate-directives": "send report-uri and report-to once each",
    "cookies-secure-with-httponly-sessions": "add SameSite=Lax (or Strict) to every cookie",
    "cookies-without-secure-flag-but-protected-by-hsts": "add Secure to every cookie",
    "cookies-session-without-secure-flag-but-protected-by-hsts": "add Secure to the session cookie",
    "cookies-without-secure-flag": "add Secure to every cookie",
    "cookies-samesite-flag-invalid": "use SameSite=Lax, Strict, or None with Secure",
    "cookies-anticsrf-without-samesite-flag": "add SameSite=Lax (or Strict) to the CSRF cookie",
    "cookies-session-without-httponly-flag": "add HttpOnly to the session cookie",
    "cookies-session-without-secure-flag": "add Secure to the session cookie",
    "cross-origin-resource-sharing-implemented-with-universal-access": "stop echoing any "
    "Origin with Access-Control-Allow-Credentials: true; allow a fixed list of origins",
    "redirection-off-host-from-http": "redirect http:// to https:// on the same host first",
    "redirection-not-to-https-on-initial-redirection": "make the first redirect go to https://",
    "redirection-not-to-https": "end the plain-HTTP redirect chain on an https:// URL",
    "redirection-missing": "redirect every plain-HTTP request to https://",
    "referrer-policy-not-implemented": "send Referrer-Policy: strict-origin-when-cross-origin "
    "(or no-referrer) for the bonus",
    "referrer-policy-unsafe": "send Referrer-Policy: strict-origin-when-cross-origin or "
    "no-referrer",
    "referrer-policy-header-invalid": "send a valid Referrer-Policy, e.g. no-referrer",
    "hsts-implemented-max-age-less-than-six-months": "raise the HSTS max-age to at least "
    "15768000 (six months); 63072000 is usual",
    "hsts-not-implemented": "send Strict-Transport-Security: max-age=63072000; includeSubDomains",
    "hsts-header-invalid": "send one Strict-Transport-Security header with a max-age",
    "hsts-not-implemented-no-https": "serve the site over HTTPS, then send "
    "Strict-Transport-Security",
    "x-content-type-options-not-implemented": "send X-Content-Type-Options: nosniff",
    "x-content-type-options-header-invalid": "send X-Content-Type-Options: nosniff",
    "x-frame-options-sameorigin-or-deny": "add frame-ancestors to the CSP for the bonus",
    "x-frame-options-allow-from-origin": "use the CSP frame-ancestors directive instead",
    "x-frame-options-not-implemented": "add frame-ancestors 'none' (or 'self') to the CSP, "
    "or send X-Frame-Options: DENY",
    "x-frame-options-header-invalid": "send X-Frame-Options: DENY or SAMEORIGIN",
    "corp-header-invalid": "send Cross-Origin-Resource-Policy: same-origin (or same-site)",
    "corp-implemented-with-cross-origin": "send Cross-Origin-Resource-Policy: same-origin "
    "unless other sites must embed this resource",
    "corp-not-implemented": "send Cross-Origin-Resource-Policy: same-origin for the bonus",
}

_PASSING: Final = frozenset(
    {
        "csp-implemented-with-no-unsafe-default-src-none",
        "csp-implemented-with-no-unsafe",
        "csp-implemented-with-unsafe-inline-in-style-src-only",
        "csp-implemented-with-insecure-scheme-in-passive-content-only",
        "cookies-secure-with-httponly-sessions-and-samesite",
        "cookies-secure-with-httponly-sessions",
        "cookies-not-found",
        "cross-origin-resource-sharing-not-implemented",
        "cross-origin-resource-sharing-implemented-with-public-access",
        "cross-origin-resource-sharing-implemented-with-restricted-access",
        "redirection-to-https",
        "redirection-not-needed-no-http",
        "referrer-policy-private",
        "referrer-policy-not-implemented",
        "hsts-implemented-max-age-at-least-six-months",
        "x-content-type-options-nosniff",
        "x-frame-options-implemented-via-csp",
        "x-frame-options-sameorigin-or-deny",
        "x-frame-options-allow-from-origin",
        "corp-implemented-with-cross-origin",
        "corp-implemented-with-same-origin",
        "corp-implemented-with-same-site",
        "corp-not-implemented",
    }
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One test's outcome: the Observatory's result name, its modifier, and the fix."""

    test: str
    result: str
    modifier: int
    passed: bool
    fix: str


@dataclass(frozen=True, slots=True)
class Report:
    """A score, its grade and the findings, in the Observatory's test order."""

    score: int
    grade: str
    findings: tuple[Finding, ...] = field(default=())


def grade_for(score: int) -> str:
    """The letter grade of ``score`` (scores over 100 are A+, under 25 are F)."""
    key = min(max(score, 0) // 5 * 5, 100)
    return _GRADE_CHART.get(key, "F")


def grade_at_least(grade: str, minimum: str) -> bool:
    """Whether ``grade`` is ``minimum`` or better. Raises ValueError for an unknown grade."""
    return GRADES.index(grade) <= GRADES.index(minimum)


def _finding(test: str, result: str) -> Finding:
    return Finding(
        test=test,
        result=result,
        modifier=MODIFIERS[result],
        passed=result in _PASSING,
        fix=_FIXES.get(result, ""),
    )


def _report(findings: tuple[Finding, ...]) -> Report:
    """The score and grade of ``findings``: bonuses count only from 90 without them."""
    with_bonus = 100 + sum(f.modifier for f in findings)
    without_bonus = 100 + sum(f.modifier for f in findings if f.modifier < 0)
    score = max(with_bonus if without_bonus >= _EXTRA_CREDIT_FROM else without_bonus, 0)
    return Report(score=score, grade=grade_for(score), findings=findings)
