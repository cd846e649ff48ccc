"""``bastion.core.headers.grading``: the MDN HTTP Observatory's rules as pure functions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.core.headers.grading import (
    GRADES,
    MODIFIERS,
    Observation,
    grade_at_least,
    grade_for,
    grade_response,
    parse_set_cookie,
)

STRICT = (
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'nonce-abc'; frame-ancestors 'none'",
    ),
    ("Strict-Transport-Security", "max-age=63072000; includeSubDomains"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Set-Cookie", "__Host-session=abc; Path=/; Secure; HttpOnly; SameSite=Lax"),
)


def results(
    headers: tuple[tuple[str, str], ...], *, https: bool = True, **kw: object
) -> dict[str, str]:
    report = grade_response(Observation(status=200, headers=headers, https=https, **kw))  # type: ignore[arg-type]
    return {f.test: f.result for f in report.findings}


def replaced(name: str, value: str | None) -> tuple[tuple[str, str], ...]:
    kept = tuple((k, v) for k, v in STRICT if k.lower() != name.lower())
    return kept if value is None else (*kept, (name, value))


def test_strict_headers_grade_a_plus_with_every_bonus() -> None:
    report = grade_response(Observation(status=200, headers=STRICT, https=True))
    # 100 + CSP 10 + cookies 5 + referrer 5 + XFO via CSP 5 + CORP 10
    assert report.score == 135
    assert report.grade == "A+"
    assert all(f.passed for f in report.findings)


def test_bare_http_response_grades_f() -> None:
    report = grade_response(
        Observation(
            status=200,
            headers=(("Set-Cookie", "sessionid=1"),),
            https=False,
            http_route=("http://example.org/",),
        )
    )
    found = {f.test: f for f in report.findings}
    assert found["content-security-policy"].result == "csp-not-implemented"
    assert found["cookies"].result == "cookies-session-without-secure-flag"
    assert found["strict-transport-security"].result == "hsts-not-implemented-no-https"
    assert found["redirection"].result == "redirection-missing"
    assert found["x-frame-options"].result == "x-frame-options-not-implemented"
    assert found["x-content-type-options"].result == "x-content-type-options-not-implemented"
    assert report.score == 0
    assert report.grade == "F"
    assert "Secure" in found["cookies"].fix


def test_bonus_only_counts_from_ninety() -> None:
    # Without X-Content-Type-Options (-5) and with a short HSTS (-10): 85 before bonuses.
    headers = replaced("X-Content-Type-Options", None)
    headers = tuple(h for h in headers if h[0] != "Strict-Transport-Security")
    headers = (*headers, ("Strict-Transport-Security", "max-age=300"))
    report = grade_response(Observation(status=200, headers=headers, https=True))
    assert report.score == 85
    assert report.grade == "A-"


@pytest.mark.parametrize(
    ("csp", "expected"),
    [
        ("default-src 'none'", "csp-implemented-with-no-unsafe-default-src-none"),
        ("default-src 'self'", "csp-implemented-with-no-unsafe"),
        (
            "default-src 'self'; script-src 'self' 'unsafe-inline'",
            "csp-implemented-with-unsafe-inline",
        ),
        (
            "default-src 'self'; script-src 'nonce-x' 'unsafe-inline'",
            "csp-implemented-with-no-unsafe",
        ),
        ("default-src 'self'; script-src 'self' 'unsafe-eval'", "csp-implemented-with-unsafe-eval"),
        (
            "default-src 'self'; style-src 'unsafe-inline'",
            "csp-implemented-with-unsafe-inline-in-style-src-only",
        ),
        (
            "default-src 'self'; script-src http://cdn.example",
            "csp-implemented-with-insecure-scheme",
        ),
        (
            "default-src 'self'; img-src http://img.example",
            "csp-implemented-with-insecure-scheme-in-passive-content-only",
        ),
        ("default-src 'self'; default-src 'none'", "csp-header-invalid"),
        ("default-src 'self'; script-src 'strict-dynamic'", "csp-header-invalid"),
        ("script-src 'self'", "csp-implemented-with-unsafe-inline"),  # object-src falls back to *
        (
            "default-src 'none'; report-uri /a; report-uri /b",
            "csp-implemented-but-duplicate-directives",
        ),
        ("x", "csp-header-invalid"),
    ],
)
def test_csp(csp: str, expected: str) -> None:
    assert results(replaced("Content-Security-Policy", csp))["content-security-policy"] == expected


def test_csp_report_only_is_not_enforcement() -> None:
    only = ("Content-Security-Policy-Report-Only", "default-src 'none'")
    headers = (*replaced("Content-Security-Policy", None), only)
    found = results(headers)
    assert found["content-security-policy"] == "csp-not-implemented-but-reporting-enabled"
    assert MODIFIERS[found["content-security-policy"]] == -25


@pytest.mark.parametrize(
    ("cookie", "hsts", "expected"),
    [
        (
            "sid=1; Secure; HttpOnly; SameSite=Strict",
            True,
            "cookies-secure-with-httponly-sessions-and-samesite",
        ),
        ("sid=1; Secure; HttpOnly", True, "cookies-secure-with-httponly-sessions"),
        ("theme=dark; SameSite=Lax", True, "cookies-without-secure-flag-but-protected-by-hsts"),
        ("theme=dark; SameSite=Lax", False, "cookies-without-secure-flag"),
        (
            "session=1; HttpOnly; SameSite=Lax",
            True,
            "cookies-session-without-secure-flag-but-protected-by-hsts",
        ),
        ("session=1; HttpOnly; SameSite=Lax", False, "cookies-session-without-secure-flag"),
        ("session=1; Secure; SameSite=Lax", True, "cookies-session-without-httponly-flag"),
        ("csrftoken=1; Secure", True, "cookies-anticsrf-without-samesite-flag"),
        ("a=1; Secure; SameSite=Sideways", True, "cookies-samesite-flag-invalid"),
        ("a=1; SameSite=None", False, "cookies-samesite-flag-invalid"),  # None needs Secure
    ],
)
def test_cookies(cookie: str, hsts: bool, expected: str) -> None:
    headers = replaced("Set-Cookie", cookie)
    if not hsts:
        headers = tuple(h for h in headers if h[0] != "Strict-Transport-Security")
    assert results(headers)["cookies"] == expected


def test_no_cookie_is_neutral() -> None:
    assert results(replaced("Set-Cookie", None))["cookies"] == "cookies-not-found"


def test_the_worst_cookie_wins() -> None:
    headers = (*STRICT, ("Set-Cookie", "login=1; SameSite=Lax"), ("Set-Cookie", "x=1; Secure"))
    # login=1 lacks Secure (HSTS-protected, -10) and HttpOnly (-30): the worse one is reported.
    assert results(headers)["cookies"] == "cookies-session-without-httponly-flag"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # The Observatory 1.4.8 counts 15552000 (180 days) as six months.
        ("max-age=15552000", "hsts-implemented-max-age-at-least-six-months"),
        ("max-age=15551999", "hsts-implemented-max-age-less-than-six-months"),
        ("includeSubDomains", "hsts-header-invalid"),
        ("max-age=1, max-age=2", "hsts-header-invalid"),
        (None, "hsts-not-implemented"),
    ],
)
def test_hsts(value: str | None, expected: str) -> None:
    assert (
        results(replaced("Strict-Transport-Security", value))["strict-transport-security"]
        == expected
    )


def test_hsts_needs_https() -> None:
    assert (
        results(STRICT, https=False)["strict-transport-security"] == "hsts-not-implemented-no-https"
    )


@pytest.mark.parametrize(
    ("allow", "credentials", "expected", "modifier"),
    [
        (None, None, "cross-origin-resource-sharing-not-implemented", 0),
        ("*", None, "cross-origin-resource-sharing-implemented-with-public-access", 0),
        (
            "https://a.example",
            "true",
            "cross-origin-resource-sharing-implemented-with-restricted-access",
            0,
        ),
        (
            "https://probe.example",
            "true",
            "cross-origin-resource-sharing-implemented-with-universal-access",
            -50,
        ),
    ],
)
def test_cors(allow: str | None, credentials: str | None, expected: str, modifier: int) -> None:
    cors: list[tuple[str, str]] = []
    if allow:
        cors.append(("Access-Control-Allow-Origin", allow))
    if credentials:
        cors.append(("Access-Control-Allow-Credentials", credentials))
    found = results(STRICT, probe_origin="https://probe.example", cors_headers=tuple(cors))
    assert found["cross-origin-resource-sharing"] == expected
    assert MODIFIERS[expected] == modifier


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        (None, "redirection-not-needed-no-http"),
        (("http://a.example/",), "redirection-missing"),
        (("http://a.example/", "https://a.example/"), "redirection-to-https"),
        (("http://a.example/", "http://a.example/x"), "redirection-not-to-https"),
        (
            ("http://a.example/", "http://a.example/x", "https://a.example/"),
            "redirection-not-to-https-on-initial-redirection",
        ),
        (("http://a.example/", "https://www.a.example/"), "redirection-off-host-from-http"),
    ],
)
def test_redirection(route: tuple[str, ...] | None, expected: str) -> None:
    assert results(STRICT, http_route=route)["redirection"] == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("no-referrer", "referrer-policy-private"),
        ("unsafe-url, strict-origin-when-cross-origin", "referrer-policy-private"),
        ("strict-origin, unsafe-url", "referrer-policy-unsafe"),
        ("bogus", "referrer-policy-header-invalid"),
        (None, "referrer-policy-not-implemented"),
    ],
)
def test_referrer_policy(value: str | None, expected: str) -> None:
    assert results(replaced("Referrer-Policy", value))["referrer-policy"] == expected


@pytest.mark.parametrize(
    ("csp", "xfo", "expected"),
    [
        ("default-src 'none'; frame-ancestors 'self'", None, "x-frame-options-implemented-via-csp"),
        ("default-src 'none'", "DENY", "x-frame-options-sameorigin-or-deny"),
        ("default-src 'none'", "allow-from https://a.example", "x-frame-options-allow-from-origin"),
        ("default-src 'none'", "maybe", "x-frame-options-header-invalid"),
        ("default-src 'none'", None, "x-frame-options-not-implemented"),
    ],
)
def test_x_frame_options(csp: str, xfo: str | None, expected: str) -> None:
    headers = replaced("Content-Security-Policy", csp)
    if xfo is not None:
        headers = (*headers, ("X-Frame-Options", xfo))
    assert results(headers)["x-frame-options"] == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("same-site", "corp-implemented-with-same-site"),
        ("Same-Origin", "corp-implemented-with-same-origin"),
        ("cross-origin", "corp-implemented-with-cross-origin"),
        ("everyone", "corp-header-invalid"),
        (None, "corp-not-implemented"),
    ],
)
def test_corp(value: str | None, expected: str) -> None:
    assert (
        results(replaced("Cross-Origin-Resource-Policy", value))["cross-origin-resource-policy"]
        == expected
    )


def test_x_content_type_options_invalid() -> None:
    headers = replaced("X-Content-Type-Options", "sniff-away")
    assert results(headers)["x-content-type-options"] == "x-content-type-options-header-invalid"


@pytest.mark.parametrize(
    ("score", "grade"),
    [
        (135, "A+"),
        (100, "A+"),
        (99, "A"),
        (90, "A"),
        (89, "A-"),
        (70, "B"),
        (64, "C+"),
        (25, "D-"),
        (24, "F"),
        (0, "F"),
        (-40, "F"),
    ],
)
def test_grade_thresholds(score: int, grade: str) -> None:
    assert grade_for(score) == grade


@given(st.integers(-200, 300), st.integers(-200, 300))
def test_grades_are_monotonic(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert grade_at_least(grade_for(high), grade_for(low))


def test_grade_at_least() -> None:
    assert grade_at_least("A+", "A")
    assert not grade_at_least("B+", "A-")
    with pytest.raises(ValueError, match="not in tuple"):
        grade_at_least("Z", "A")
    assert GRADES[0] == "A+"


@given(st.text(max_size=200))
def test_parse_set_cookie_never_raises(line: str) -> None:
    cookie = parse_set_cookie(line)
    if cookie is not None:
        assert cookie.name
        assert cookie.same_site in {None, "lax", "strict", "none"}


_NAMES = st.sampled_from(
    [
        "Content-Security-Policy",
        "Set-Cookie",
        "Referrer-Policy",
        "Strict-Transport-Security",
        "X-Frame-Options",
    ]
)


@given(st.lists(st.tuples(_NAMES, st.text(max_size=80)), max_size=6), st.booleans())
def test_grading_is_total(headers: list[tuple[str, str]], https: bool) -> None:
    report = grade_response(Observation(status=200, headers=tuple(headers), https=https))
    assert report.score >= 0
    assert report.grade == grade_for(report.score)
    assert len(report.findings) == 9


def test_parse_set_cookie_flags() -> None:
    cookie = parse_set_cookie("__Host-s=v=w; Path=/; secure; HTTPONLY; samesite=Strict")
    assert cookie is not None
    assert (cookie.name, cookie.secure, cookie.http_only, cookie.same_site) == (
        "__Host-s",
        True,
        True,
        "strict",
    )
    assert parse_set_cookie("=v; Secure") is None
    assert parse_set_cookie("novalue") is None


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        (("http://A.example:80/", "https://a.example:443/x"), "redirection-to-https"),
        (("http://[::1]/", "https://[::1]:8443/"), "redirection-to-https"),
        (("http://u:p@a.example/", "https://b.example/"), "redirection-off-host-from-http"),
        (("http://a.example/", "nonsense"), "redirection-not-to-https"),
    ],
)
def test_redirection_hosts(route: tuple[str, ...], expected: str) -> None:
    assert results(STRICT, http_route=route)["redirection"] == expected


# -- repeated headers: the Observatory reads them as one value joined by ", " (Node's rule)


@pytest.mark.parametrize(
    ("name", "value", "test", "expected", "score"),
    [
        (
            "Strict-Transport-Security",
            "max-age=63072000; includeSubDomains",
            "strict-transport-security",
            "hsts-header-invalid",
            80,
        ),
        (
            "X-Content-Type-Options",
            "nosniff",
            "x-content-type-options",
            "x-content-type-options-header-invalid",
            130,
        ),
        (
            "Cross-Origin-Resource-Policy",
            "same-origin",
            "cross-origin-resource-policy",
            "corp-header-invalid",
            120,
        ),
    ],
)
def test_a_repeated_header_is_graded_as_the_observatory_reads_it(
    name: str, value: str, test: str, expected: str, score: int
) -> None:
    headers = (*replaced(name, value), (name, value))
    report = grade_response(Observation(status=200, headers=headers, https=True))
    assert {f.test: f.result for f in report.findings}[test] == expected
    assert report.score == score


def test_a_repeated_x_frame_options_is_invalid_without_frame_ancestors() -> None:
    headers = (
        *replaced("Content-Security-Policy", "default-src 'none'"),
        ("X-Frame-Options", "DENY"),
        ("X-Frame-Options", "DENY"),
    )
    report = grade_response(Observation(status=200, headers=headers, https=True))
    assert {f.test: f.result for f in report.findings}["x-frame-options"] == (
        "x-frame-options-header-invalid"
    )
    assert (report.score, report.grade) == (80, "B+")


# -- cookies: every response of the redirect chain fills one cookie jar


def test_a_cookie_set_by_a_redirect_is_graded() -> None:
    # "/" answers 302 to /login with an insecure session cookie; /login is clean.
    redirect = (("Location", "/login"), ("Set-Cookie", "sessionid=abc; Path=/"))
    final = tuple(h for h in STRICT if h[0] != "Set-Cookie")
    report = grade_response(
        Observation(
            status=200,
            headers=final,
            https=True,
            url="https://a.example/login",
            chain=(("https://a.example/", redirect),),
        )
    )
    found = {f.test: f.result for f in report.findings}
    assert found["cookies"] == "cookies-session-without-httponly-flag"
    assert (report.score, report.grade) == (70, "B")


def test_the_jar_keeps_the_last_cookie_of_a_name_domain_and_path() -> None:
    redirect = (("Set-Cookie", "sessionid=abc; Path=/"),)
    final = (*STRICT, ("Set-Cookie", "sessionid=new; Path=/; Secure; HttpOnly; SameSite=Lax"))
    found = results(final, url="https://a.example/", chain=(("https://a.example/", redirect),))
    assert found["cookies"] == "cookies-secure-with-httponly-sessions-and-samesite"
    # Another path is another cookie: both are graded.
    other = (("Set-Cookie", "sessionid=abc; Path=/old"),)
    found = results(final, url="https://a.example/", chain=(("https://a.example/", other),))
    assert found["cookies"] == "cookies-session-without-httponly-flag"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # Refused by the jar (the Observatory's tough-cookie): not graded.
        ("__Host-sessionid=1; Path=/x; HttpOnly", "cookies-not-found"),
        ("__Secure-sessionid=1; HttpOnly", "cookies-not-found"),
        ("sessionid=1; Domain=elsewhere.example", "cookies-not-found"),
        ("heroku-session-affinity=1", "cookies-not-found"),
        # Kept: graded.
        ("sessionid=1; Domain=a.example; Secure", "cookies-session-without-httponly-flag"),
        ("sessionid=1; Max-Age=0; Secure", "cookies-session-without-httponly-flag"),
    ],
)
def test_the_jar_follows_the_observatory(line: str, expected: str) -> None:
    final = (*replaced("Set-Cookie", None), ("Set-Cookie", line))
    assert results(final, url="https://www.a.example/")["cookies"] == expected


def test_an_invalid_same_site_counts_on_the_final_response_only() -> None:
    redirect = (("Set-Cookie", "a=1; Secure; SameSite=Sideways"),)
    found = results(STRICT, url="https://a.example/", chain=(("https://a.example/", redirect),))
    assert found["cookies"] == "cookies-secure-with-httponly-sessions"
