"""Grade a response's security headers and cookies the way the MDN HTTP Observatory does.

Pure functions over what one fetch observed (:class:`Observation`: status, headers, whether
it came over HTTPS, the ``Origin`` the probe sent, the plain-HTTP redirect route, and the
responses of the redirect chain before the final one). The score
starts at 100; each test adds its modifier (:data:`MODIFIERS`, the Observatory's score table);
bonuses count only when the score without them is already 90 or more; the grade is read from
the score rounded down to a multiple of 5 (:func:`grade_for`).

Covered tests: content-security-policy, cookies, cross-origin-resource-sharing, redirection,
referrer-policy, strict-transport-security, x-content-type-options, x-frame-options,
cross-origin-resource-policy. Not covered (so a score may differ from the Observatory's for
pages they would change): ``<meta http-equiv>`` policies in the HTML body, subresource
integrity of ``<script src>`` tags, and the HSTS preload list.

One rule is stricter than the Observatory (1.4.8): a CORS answer that echoes the probe's
``Origin`` with ``Access-Control-Allow-Credentials: true`` is graded
``cross-origin-resource-sharing-implemented-with-universal-access`` (-50), which the
Observatory names but never reaches (it reads the ``Origin`` it sent from a request object
that does not expose it, so it says ``...-with-restricted-access``): any site could then read
the user's pages. Two readings follow the Observatory rather than the letter of HTTP, so that
a grade is never higher than the Observatory's:

- A header sent on several lines is read as one value, the lines joined by ``", "`` (how Node,
  which runs the Observatory, hands headers over): two ``Strict-Transport-Security`` lines
  are an invalid HSTS header, two ``X-Content-Type-Options: nosniff`` lines are not
  ``nosniff``. Node keeps only the first line of a few headers (``Content-Type``,
  ``Location``...), none of them graded.
- Cookies are those a cookie jar holds after the whole redirect chain: a session cookie set by
  the ``302`` in front of the final page counts. The jar follows RFC 6265 as the
  Observatory's does: a later cookie with the same name, domain and path replaces an earlier
  one; a cookie for another domain, or breaking the ``__Secure-``/``__Host-`` prefix rules,
  is dropped. A malformed ``SameSite`` is looked for on the final response's lines only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from bastion.core.headers.cookiejar import (
    SetCookie,
    _all,
    _scheme_and_host,
    cookie_jar,
    parse_set_cookie,
)
from bastion.core.headers.scores import (
    _PASSING,
    GRADES,
    MODIFIERS,
    Finding,
    Report,
    _finding,
    _report,
    grade_at_least,
    grade_for,
)

__all__ = [
    "GRADES",
    "MODIFIERS",
    "Finding",
    "Observation",
    "Report",
    "SetCookie",
    "cookie_jar",
    "grade_at_least",
    "grade_for",
    "grade_response",
    "parse_set_cookie",
]

_SIX_MONTHS: Final = 15_552_000  # the Observatory's "six months": 180 days
_NODE_KEEPS_FIRST: Final = frozenset(
    {
        "age",
        "authorization",
        "content-length",
        "content-type",
        "etag",
        "expires",
        "from",
        "host",
        "if-modified-since",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "proxy-authorization",
        "referer",
        "retry-after",
        "server",
        "user-agent",
    }
)

_DANGEROUSLY_BROAD: Final = frozenset(
    {"ftp:", "http:", "https:", "*", "http://*", "http://*.*", "https://*", "https://*.*"}
)
_BROAD_OR_INLINE: Final = _DANGEROUSLY_BROAD | {"'unsafe-inline'", "data:"}
_PASSIVE: Final = ("img-src", "media-src")
_NONCE_HASH: Final = ("'sha256-", "'sha384-", "'sha512-", "'nonce-")
_SHORTEST_POLICY: Final = len("img-src") - 1
_DUPLICATES_ALLOWED: Final = frozenset({"report-uri", "report-to"})
_REFERRER_PRIVATE: Final = (
    "no-referrer",
    "same-origin",
    "strict-origin",
    "strict-origin-when-cross-origin",
)
_REFERRER_UNSAFE: Final = (
    "origin",
    "origin-when-cross-origin",
    "unsafe-url",
    "no-referrer-when-downgrade",
)
_COOKIE_ORDER: Final = (
    "cookies-without-secure-flag-but-protected-by-hsts",
    "cookies-without-secure-flag",
    "cookies-session-without-secure-flag-but-protected-by-hsts",
    "cookies-samesite-flag-invalid",
    "cookies-anticsrf-without-samesite-flag",
    "cookies-session-without-httponly-flag",
    "cookies-session-without-secure-flag",
)


class _Invalid(ValueError):
    """A header the Observatory would call invalid (internal: becomes a finding)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """What one fetch saw. ``headers`` keep their order and repeats (names in any case).

    ``probe_origin`` is the ``Origin`` header a second fetch sent and ``cors_headers`` the
    headers it got back (the CORS test reads those; ``None``: use ``headers``).
    ``http_route`` is the chain of URLs a plain ``http://`` request went through, the first
    being the ``http://`` URL itself; ``None`` when nothing answered on plain HTTP.
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    https: bool
    probe_origin: str | None = None
    cors_headers: tuple[tuple[str, str], ...] | None = None
    http_route: tuple[str, ...] | None = None
    url: str = ""
    """The URL of the final response (the cookie jar's request URL; empty: unknown, then no
    cookie is refused for its domain)."""
    chain: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    """``(url, headers)`` of each response before the final one (the redirects), in order:
    the cookies they set are graded with the final response's."""


Headers = dict[str, str]
"""Lower-cased name -> value, several lines of one name joined (see :func:`_merged`)."""


def _merged(headers: tuple[tuple[str, str], ...]) -> Headers:
    """The headers as the Observatory reads them: the lines of one name joined by ``", "``,
    except the few of which Node keeps the first (Set-Cookie is read line by line apart)."""
    merged: Headers = {}
    for key, value in headers:
        name = key.lower()
        if name not in merged:
            merged[name] = value
        elif name not in _NODE_KEEPS_FIRST:
            merged[name] = f"{merged[name]}, {value}"
    return merged


def _worse(new: str, old: str | None) -> str:
    if old is None or _COOKIE_ORDER.index(new) > _COOKIE_ORDER.index(old):
        return new
    return old


def _cookies(observation: Observation, hsts: bool) -> str:
    cookies = cookie_jar((*observation.chain, (observation.url, observation.headers)))
    if not cookies:
        return "cookies-not-found"
    result: str | None = None
    final = map(parse_set_cookie, _all(observation.headers, "set-cookie"))
    if any(cookie is not None and cookie.same_site_invalid for cookie in final):
        result = "cookies-samesite-flag-invalid"
    missing_same_site = False
    for cookie in cookies:
        lowered = cookie.name.lower()
        session = "login" in lowered or "sess" in lowered
        if not cookie.secure and cookie.same_site == "none":
            result = _worse("cookies-samesite-flag-invalid", result)
        if not cookie.secure:
            result = _worse(
                "cookies-without-secure-flag-but-protected-by-hsts"
                if hsts
                else "cookies-without-secure-flag",
                result,
            )
        if "csrf" in lowered and cookie.same_site is None:
            result = _worse("cookies-anticsrf-without-samesite-flag", result)
        if session and not cookie.secure:
            result = _worse(
                "cookies-session-without-secure-flag-but-protected-by-hsts"
                if hsts
                else "cookies-session-without-secure-flag",
                result,
            )
        if session and not cookie.http_only:
            result = _worse("cookies-session-without-httponly-flag", result)
        missing_same_site = missing_same_site or cookie.same_site is None
    if result is not None:
        return result
    if missing_same_site:
        return "cookies-secure-with-httponly-sessions"
    return "cookies-secure-with-httponly-sessions-and-samesite"


def _parse_policies(policies: list[str]) -> tuple[dict[str, set[str]], bool]:
    """Directive -> sources, combining several policies (a source must be in each policy
    that names the directive); and whether report-uri/report-to were repeated."""
    combined: dict[str, set[str]] = {}
    duplicates = False
    for raw in policies:
        text = raw.replace("\r", "").replace("\n", "").strip()
        if len(text) < _SHORTEST_POLICY:
            raise _Invalid(text)
        seen: dict[str, set[str]] = {}
        for entry in text.split(";"):
            words = entry.split()
            if not words:
                continue
            directive = words[0].lower()
            sources = {word.lower() for word in words[1:]}
            if not sources and directive.endswith("-src"):
                sources = {"'none'"}
            if directive in seen:
                if directive not in _DUPLICATES_ALLOWED:
                    raise _Invalid(directive)
                duplicates = True
                continue
            seen[directive] = sources
        for directive, sources in seen.items():
            if directive in combined:
                combined[directive] &= sources
            else:
                combined[directive] = set(sources)
    return combined, duplicates


def _csp(headers: Headers, https: bool) -> tuple[str, dict[str, set[str]]]:
    policy = headers.get("content-security-policy")
    policies = [] if policy is None else [policy]
    if not policies:
        if headers.get("content-security-policy-report-only"):
            return "csp-not-implemented-but-reporting-enabled", {}
        return "csp-not-implemented", {}
    try:
        csp, duplicates = _parse_policies(policies)
    except _Invalid:
        return "csp-header-invalid", {}
    if not csp:
        return "csp-not-implemented", {}
    default = csp.get("default-src")
    script = set(csp.get("script-src", default if default is not None else {"*"}))
    style = set(csp.get("style-src", default if default is not None else {"*"}))
    objects = csp.get("object-src", default if default is not None else {"*"})
    for sources in (script, style):
        if any(s.startswith(_NONCE_HASH) for s in sources):
            sources.discard("'unsafe-inline'")
    result: str | None = None
    if "'strict-dynamic'" in script:
        if any(s.startswith(_NONCE_HASH) for s in script):
            script = {
                s
                for s in script
                if not s.startswith(tuple(_DANGEROUSLY_BROAD))
                and s not in {"'self'", "'unsafe-inline'"}
            }
        else:
            result = "csp-header-invalid"
    active = [
        s for d, sources in csp.items() if d not in _PASSIVE and d != "script-src" for s in sources
    ] + sorted(script)
    passive = [s for d in _PASSIVE for s in csp.get(d, default or set())]
    insecure = ("http:", "ftp:")
    checks = (
        (
            bool(script & _BROAD_OR_INLINE) or bool(objects & _DANGEROUSLY_BROAD),
            "csp-implemented-with-unsafe-inline",
        ),
        (
            https and any(s.startswith(insecure) for s in active),
            "csp-implemented-with-insecure-scheme",
        ),
        ("'unsafe-eval'" in script | style, "csp-implemented-with-unsafe-eval"),
        (
            https and any(s.startswith(insecure) for s in passive),
            "csp-implemented-with-insecure-scheme-in-passive-content-only",
        ),
        (bool(style & _BROAD_OR_INLINE), "csp-implemented-with-unsafe-inline-in-style-src-only"),
        (default == {"'none'"}, "csp-implemented-with-no-unsafe-default-src-none"),
        (True, "csp-implemented-with-no-unsafe"),
    )
    for failed, name in checks:
        if result is None and failed:
            result = name
    final = result or "csp-implemented-with-no-unsafe"
    if duplicates and final in _PASSING:
        final = "csp-implemented-but-duplicate-directives"
    return final, csp


def _hsts(headers: Headers, https: bool) -> str:  # noqa: PLR0911 (one table)
    if not https:
        return "hsts-not-implemented-no-https"
    header = headers.get("strict-transport-security")
    if header is None:
        return "hsts-not-implemented"
    header = header[:1024]
    if "," in header:
        return "hsts-header-invalid"
    max_age: int | None = None
    for raw in header.split(";"):
        parameter = raw.strip().lower()
        if parameter.startswith("max-age="):
            digits = parameter[8:128].strip().strip('"')
            if not digits.isascii() or not digits.isdigit():
                return "hsts-header-invalid"
            max_age = int(digits)
    if max_age is None:
        return "hsts-header-invalid"
    if max_age < _SIX_MONTHS:
        return "hsts-implemented-max-age-less-than-six-months"
    return "hsts-implemented-max-age-at-least-six-months"


def _cors(headers: Headers, probe_origin: str | None) -> str:
    allow = headers.get("access-control-allow-origin")
    if not allow:
        return "cross-origin-resource-sharing-not-implemented"
    credentials = (headers.get("access-control-allow-credentials") or "").strip().lower()
    if allow[:256].strip().lower() == "*":
        return "cross-origin-resource-sharing-implemented-with-public-access"
    if probe_origin and allow == probe_origin and credentials == "true":
        return "cross-origin-resource-sharing-implemented-with-universal-access"
    return "cross-origin-resource-sharing-implemented-with-restricted-access"


def _redirection(route: tuple[str, ...] | None) -> str:
    if route is None:
        return "redirection-not-needed-no-http"
    if len(route) <= 1:
        return "redirection-missing"
    parts = [_scheme_and_host(url) for url in route]
    if parts[-1][0] != "https":
        return "redirection-not-to-https"
    if parts[1][0] == "http":
        return "redirection-not-to-https-on-initial-redirection"
    if parts[0][1] != parts[1][1]:
        return "redirection-off-host-from-http"
    return "redirection-to-https"


def _referrer(headers: Headers) -> str:
    value = headers.get("referrer-policy")
    if value is None:
        return "referrer-policy-not-implemented"
    tokens = [t.strip().lower() for t in value.split(",")]
    known = [t for t in tokens if t in _REFERRER_PRIVATE or t in _REFERRER_UNSAFE]
    if not known:
        return "referrer-policy-header-invalid"
    if known[-1] in _REFERRER_PRIVATE:
        return "referrer-policy-private"
    return "referrer-policy-unsafe"


def _x_content_type_options(headers: Headers) -> str:
    header = headers.get("x-content-type-options")
    if not header:
        return "x-content-type-options-not-implemented"
    if header[:256].strip().lower() == "nosniff":
        return "x-content-type-options-nosniff"
    return "x-content-type-options-header-invalid"


def _x_frame_options(headers: Headers, csp: dict[str, set[str]]) -> str:
    if "frame-ancestors" in csp:
        return "x-frame-options-implemented-via-csp"
    header = headers.get("x-frame-options")
    if not header:
        return "x-frame-options-not-implemented"
    value = header[:1024].strip().lower()
    if value in {"deny", "sameorigin"}:
        return "x-frame-options-sameorigin-or-deny"
    if value.startswith("allow-from"):
        return "x-frame-options-allow-from-origin"
    return "x-frame-options-header-invalid"


def _corp(headers: Headers) -> str:
    header = headers.get("cross-origin-resource-policy")
    if not header:
        return "corp-not-implemented"
    return {
        "same-site": "corp-implemented-with-same-site",
        "same-origin": "corp-implemented-with-same-origin",
        "cross-origin": "corp-implemented-with-cross-origin",
    }.get(header[:256].strip().lower(), "corp-header-invalid")


def grade_response(observation: Observation) -> Report:
    """Score and grade ``observation`` with the Observatory's rules (see the module docstring
    for what is not covered)."""
    headers = _merged(observation.headers)
    cors = headers if observation.cors_headers is None else _merged(observation.cors_headers)
    csp_result, csp = _csp(headers, observation.https)
    hsts = _hsts(headers, observation.https)
    findings = (
        _finding("content-security-policy", csp_result),
        _finding("cookies", _cookies(observation, hsts in _PASSING)),
        _finding("cross-origin-resource-sharing", _cors(cors, observation.probe_origin)),
        _finding("redirection", _redirection(observation.http_route)),
        _finding("referrer-policy", _referrer(headers)),
        _finding("strict-transport-security", hsts),
        _finding("x-content-type-options", _x_content_type_options(headers)),
        _finding("x-frame-options", _x_frame_options(headers, csp)),
        _finding("cross-origin-resource-policy", _corp(headers)),
    )
    return _report(findings)
