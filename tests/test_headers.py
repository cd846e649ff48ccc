"""bastion.core.headers: policy validation, presets, compiled output, nonces, reports."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.core.clock import FrozenClock
from bastion.core.headers import (
    NONCE,
    CompiledHeaders,
    ContentSecurityPolicy,
    CSPViolation,
    HeaderPolicy,
    HeaderRouter,
    NonceSource,
    PermissionsPolicy,
    ReportBudget,
    Weakness,
    parse_csp_reports,
)
from bastion.errors import BadData, ConfigurationError

N = "0123456789abcdef0123456789abcdef"

STRICT = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "strict-origin-when-cross-origin",
    "permissions-policy": (
        "accelerometer=(), autoplay=(), camera=(), display-capture=(), encrypted-media=(), "
        "fullscreen=(self), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), "
        "midi=(), payment=(), picture-in-picture=(), publickey-credentials-get=(self), "
        "screen-wake-lock=(), usb=(), xr-spatial-tracking=()"
    ),
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-embedder-policy": "require-corp",
    "cross-origin-resource-policy": "same-origin",
    "x-xss-protection": "0",
    "x-permitted-cross-domain-policies": "none",
    "origin-agent-cluster": "?1",
    "x-dns-prefetch-control": "off",
    "strict-transport-security": "max-age=63072000; includeSubDomains",
    "content-security-policy": (
        f"default-src 'none'; script-src 'nonce-{N}' 'strict-dynamic'; "
        f"style-src 'self' 'nonce-{N}'; img-src 'self'; font-src 'self'; connect-src 'self'; "
        "manifest-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
}
API = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-resource-policy": "same-origin",
    "x-xss-protection": "0",
    "x-permitted-cross-domain-policies": "none",
    "cache-control": "no-store",
    "strict-transport-security": "max-age=63072000; includeSubDomains",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}
RELAXED = {
    "x-frame-options": "SAMEORIGIN",
    "x-content-type-options": "nosniff",
    "referrer-policy": "strict-origin-when-cross-origin",
    "permissions-policy": "camera=(), geolocation=(), microphone=(), payment=()",
    "cross-origin-opener-policy": "same-origin-allow-popups",
    "cross-origin-resource-policy": "same-site",
    "x-xss-protection": "0",
    "x-permitted-cross-domain-policies": "none",
    "origin-agent-cluster": "?1",
    "strict-transport-security": "max-age=31536000",
    "content-security-policy": (
        f"default-src 'self'; script-src 'self' 'nonce-{N}'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: https:; font-src 'self' data: https:; object-src 'none'; "
        "base-uri 'self'; form-action 'self'; frame-ancestors 'self'"
    ),
}
EXPECTED = {"strict": STRICT, "api": API, "relaxed": RELAXED}


def rendered(policy: HeaderPolicy, *, https: bool = True, headers=None) -> dict[str, str]:
    out = policy.compile().apply(list(headers or []), https, N.encode())
    names = [name for name, _ in out]
    assert len(names) == len(set(names)), f"duplicate headers: {names}"
    return {name.decode(): value.decode() for name, value in out}


@pytest.mark.parametrize("preset", ["strict", "api", "relaxed"])
def test_presets_render_exact_values(preset: str) -> None:
    assert rendered(HeaderPolicy.preset(preset)) == EXPECTED[preset]


def test_default_policy_is_strict() -> None:
    assert HeaderPolicy() == HeaderPolicy.preset("strict")
    assert rendered(HeaderPolicy()) == STRICT


def test_hsts_only_over_https_unless_forced() -> None:
    assert "strict-transport-security" not in rendered(HeaderPolicy(), https=False)
    forced = HeaderPolicy(hsts_over_http=True)
    assert rendered(forced, https=False)["strict-transport-security"] == (
        "max-age=63072000; includeSubDomains"
    )


def test_hsts_parameters() -> None:
    policy = HeaderPolicy(hsts_max_age=31_536_000, include_subdomains=True, hsts_preload=True)
    assert rendered(policy)["strict-transport-security"] == (
        "max-age=31536000; includeSubDomains; preload"
    )
    assert "strict-transport-security" not in rendered(HeaderPolicy(hsts_max_age=None))
    assert rendered(HeaderPolicy(include_subdomains=False))["strict-transport-security"] == (
        "max-age=63072000"
    )


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"hsts_max_age": -1}, "hsts_max_age"),
        ({"hsts_max_age": True}, "hsts_max_age"),
        ({"hsts_max_age": "1"}, "hsts_max_age"),
        ({"hsts_max_age": 2**40}, "hsts_max_age"),
        ({"hsts_preload": True, "hsts_max_age": 3600}, "hsts_preload"),
        ({"hsts_preload": True, "include_subdomains": False}, "hsts_preload"),
        ({"include_subdomains": 1}, "include_subdomains"),
        ({"referrer_policy": "origin-please"}, "referrer_policy"),
        ({"coop_policy": "same"}, "coop_policy"),
        ({"coep_policy": "require"}, "coep_policy"),
        ({"corp_policy": "none"}, "corp_policy"),
        ({"x_frame_options": "ALLOW-FROM x"}, "x_frame_options"),
        ({"cache_control": "no-store\r\nSet-Cookie: a=b"}, "cache_control"),
        ({"extra": {"X-Test": "a\nb"}}, "extra['X-Test']"),
        ({"extra": {"Bad Name": "x"}}, "extra"),
        ({"remove": "server"}, "remove"),
        ({"report_to": "javascript:alert(1)"}, "report_to"),
        ({"report_to": "//evil.example/r"}, "report_to"),
        ({"report_group": "a b"}, "report_group"),
        ({"permissions_policy": {"Camera": ()}}, "permissions_policy"),
        ({"csp_policy": 42}, "csp_policy"),
    ],
)
def test_invalid_settings_name_the_setting(changes: dict, setting: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        HeaderPolicy(**changes)
    assert caught.value.setting == setting


def test_compile_checks_force_and_remove() -> None:
    with pytest.raises(ConfigurationError, match="does not send") as caught:
        HeaderPolicy(force=frozenset({"x-unknown"})).compile()
    assert caught.value.setting == "force"
    with pytest.raises(ConfigurationError, match="sends") as caught:
        HeaderPolicy(remove=("server", "x-frame-options")).compile()
    assert caught.value.setting == "remove"


def test_extra_cannot_duplicate_a_policy_header() -> None:
    with pytest.raises(ConfigurationError, match="already sends") as caught:
        HeaderPolicy(extra={"X-Frame-Options": "DENY"}).compile()
    assert caught.value.setting == "extra"
    assert rendered(HeaderPolicy(extra={"X-Custom": "1"}))["x-custom"] == "1"


def test_x_frame_options_follows_frame_ancestors() -> None:
    same = HeaderPolicy(csp_policy="default-src 'self'; frame-ancestors 'self'")
    assert rendered(same)["x-frame-options"] == "SAMEORIGIN"
    listed = HeaderPolicy(csp_policy="default-src 'self'; frame-ancestors https://a.example")
    assert "x-frame-options" not in rendered(listed)
    assert rendered(HeaderPolicy(csp_policy=None))["x-frame-options"] == "DENY"
    with pytest.raises(ConfigurationError, match="contradicts") as caught:
        HeaderPolicy(x_frame_options="SAMEORIGIN").compile()
    assert caught.value.setting == "x_frame_options"
    assert "x-frame-options" not in rendered(HeaderPolicy(x_frame_options=None))


def test_handler_header_is_kept_unless_forced() -> None:
    own = [(b"content-security-policy", b"default-src 'self'"), (b"X-Frame-Options", b"SAMEORIGIN")]
    kept = rendered(HeaderPolicy(), headers=own)
    assert kept["content-security-policy"] == "default-src 'self'"
    assert kept["X-Frame-Options"] == "SAMEORIGIN"
    assert "x-frame-options" not in kept  # compared case-insensitively
    forced = rendered(HeaderPolicy(force=frozenset({"Content-Security-Policy"})), headers=own)
    assert forced["content-security-policy"] == STRICT["content-security-policy"]


def test_fingerprinting_headers_are_removed_in_any_case() -> None:
    out = rendered(
        HeaderPolicy(),
        headers=[(b"Server", b"x/1"), (b"x-powered-by", b"php"), (b"content-type", b"a/b")],
    )
    assert "Server" not in out
    assert "x-powered-by" not in out
    assert out["content-type"] == "a/b"


def test_apply_does_not_modify_its_input() -> None:
    given_headers = [(b"content-type", b"text/html")]
    HeaderPolicy().compile().apply(given_headers, True, N.encode())
    assert given_headers == [(b"content-type", b"text/html")]


def test_csp_builder_forms_agree() -> None:
    by_keywords = ContentSecurityPolicy(default_src="'self'", img_src=["'self'", "https:"])
    by_mapping = ContentSecurityPolicy({"default-src": ["'self'"], "img-src": "'self' https:"})
    parsed = ContentSecurityPolicy.parse("default-src 'self'; img-src 'self' https:;")
    assert by_keywords == by_mapping == parsed
    assert parsed.render() == "default-src 'self'; img-src 'self' https:"
    valueless = ContentSecurityPolicy(default_src="'self'", upgrade_insecure_requests=True)
    assert valueless.render() == "default-src 'self'; upgrade-insecure-requests"
    changed = by_keywords.with_directives(img_src=None, script_src=[NONCE])
    assert changed.render("n") == "default-src 'self'; script-src 'nonce-n'"
    assert changed.uses_nonce
    assert not by_keywords.uses_nonce


@pytest.mark.parametrize(
    ("directives", "message"),
    [
        ({"default-src": ["self"]}, "single-quoted"),
        ({"default-scr": ["'self'"]}, "unknown CSP directive"),
        ({"default-src": []}, "empty"),
        ({"default-src": ["'none'", "'self'"]}, "cannot be combined"),
        ({"img-src": [NONCE]}, "NONCE belongs"),
        ({"default-src": ["'self';script-src"]}, "not a CSP source"),
        ({"default-src": "'self'  https:"}, "single spaces"),
        ({"upgrade-insecure-requests": ["x"]}, "takes no sources"),
        ({"script-src": True}, "needs sources"),
        ({"script-src": 3}, "must be a list"),
    ],
)
def test_csp_validation(directives: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ContentSecurityPolicy(directives)


def test_csp_parse_refuses_duplicates() -> None:
    with pytest.raises(ConfigurationError, match="twice"):
        ContentSecurityPolicy.parse("img-src 'self'; img-src https:")
    with pytest.raises(ConfigurationError, match="twice"):
        ContentSecurityPolicy({"img-src": "'self'"}, img_src="https:")


def test_report_only_and_reporting_endpoints() -> None:
    policy = HeaderPolicy(
        csp_report_only=ContentSecurityPolicy(default_src="'self'", script_src=NONCE),
        report_to="/csp-report",
    )
    out = rendered(policy)
    assert out["reporting-endpoints"] == 'csp-endpoint="/csp-report"'
    assert out["content-security-policy"].endswith(
        "; report-to csp-endpoint; report-uri /csp-report"
    )
    assert out["content-security-policy-report-only"] == (
        f"default-src 'self'; script-src 'nonce-{N}'; report-to csp-endpoint; "
        "report-uri /csp-report"
    )


def test_permissions_policy_builder() -> None:
    policy = PermissionsPolicy(
        {"camera": ()}, geolocation=["self", "https://maps.example"], fullscreen="*"
    )
    assert policy.render() == 'camera=(), geolocation=(self "https://maps.example"), fullscreen=*'
    assert rendered(HeaderPolicy(permissions_policy={"usb": ["'self'"]}))["permissions-policy"] == (
        "usb=(self)"
    )
    with pytest.raises(ConfigurationError, match="origin"):
        PermissionsPolicy(camera=["evil.example"])
    with pytest.raises(ConfigurationError, match="already allows"):
        PermissionsPolicy(camera=["*", "self"])


def test_reference_middleware_parameters() -> None:
    policy = HeaderPolicy(
        hsts_max_age=3600,
        include_subdomains=False,
        csp_policy="default-src 'self'",
        referrer_policy="no-referrer",
        coop_policy="same-origin-allow-popups",
        coep_policy="credentialless",
    )
    out = rendered(policy)
    assert out["strict-transport-security"] == "max-age=3600"
    assert out["content-security-policy"] == "default-src 'self'"
    assert out["referrer-policy"] == "no-referrer"
    assert out["cross-origin-opener-policy"] == "same-origin-allow-popups"
    assert out["cross-origin-embedder-policy"] == "credentialless"
    assert "expect-ct" not in out


def test_preset_overrides_and_replace() -> None:
    policy = HeaderPolicy.preset("api", cache_control=None)
    assert "cache-control" not in rendered(policy)
    assert policy.replace(cache_control="private").cache_control == "private"
    with pytest.raises(ConfigurationError):
        policy.replace(hsts_max_age=-5)
    with pytest.raises(ConfigurationError, match="preset"):
        HeaderPolicy.preset("paranoid")


# Every character that must never reach a header value: controls, DEL, non-ASCII.
_FORBIDDEN = re.compile(r"[^\x20-\x7e]")


@given(text=st.text(max_size=40))
def test_no_control_character_reaches_a_header(text: str) -> None:
    attempts: list[Any] = [
        lambda: {"csp_policy": f"default-src {text}"},
        lambda: {"csp_policy": ContentSecurityPolicy(default_src="'self'", img_src=[text])},
        lambda: {"csp_report_only": ContentSecurityPolicy({"script-src": text})},
        lambda: {"cache_control": text},
        lambda: {"extra": {"x-custom": text}},
        lambda: {"extra": {text: "x"}},
        lambda: {"permissions_policy": text},
        lambda: {"permissions_policy": {"camera": [text]}},
        lambda: {"report_to": "/" + text},
        lambda: {"referrer_policy": text},
    ]
    for attempt in attempts:
        try:
            compiled = HeaderPolicy(**attempt()).compile()
        except ConfigurationError:
            continue
        for name, value in compiled.apply([], True, N.encode()):
            decoded = value.decode("ascii")
            assert _FORBIDDEN.search(decoded) is None, (name, value)
            assert decoded == decoded.strip()


@given(sources=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=4))
def test_csp_sources_are_validated(sources: list[str]) -> None:
    try:
        csp = ContentSecurityPolicy({"img-src": sources})
    except ConfigurationError:
        return
    value = csp.render()
    assert _FORBIDDEN.search(value) is None
    assert value.count(";") == 0
    assert value.split(" ")[1:] == sources


def test_nonce_source_gives_distinct_128_bit_hex() -> None:
    source = NonceSource()
    pairs = [source() for _ in range(600)]  # crosses two refills
    nonces = [text for text, _ in pairs]
    assert len(set(nonces)) == 600
    assert all(re.fullmatch(r"[0-9a-f]{32}", n) for n in nonces)
    assert all(raw == text.encode() for text, raw in pairs)


def test_a_nonce_policy_refuses_to_render_without_a_nonce() -> None:
    compiled = HeaderPolicy().compile()
    assert compiled.uses_nonce
    with pytest.raises(ConfigurationError, match="NonceSource"):
        compiled.apply([], True, None)
    with pytest.raises(ConfigurationError, match="NonceSource"):
        compiled.apply([(b"server", b"x")], True, None)
    api = HeaderPolicy.preset("api").compile()
    assert not api.uses_nonce
    assert api.apply([], True, None)


def test_nonce_source_forgets_its_buffer_in_a_forked_child() -> None:
    source = NonceSource()
    source()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (child)
        os.write(write, source()[1])
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert child != source()[0]  # the parent's next nonce is not what the child handed out


def test_report_budget_refills_with_the_clock() -> None:
    clock = FrozenClock(1000.0)
    budget = ReportBudget(clock, burst=3, per_second=0.5)
    assert [budget.take() for _ in range(4)] == [True, True, True, False]
    clock.advance(1.0)
    assert budget.take() is False
    clock.advance(1.0)
    assert budget.take() is True
    clock.advance(-100)  # a clock stepping backwards never mints tokens
    assert budget.take() is False
    with pytest.raises(ConfigurationError):
        ReportBudget(clock, burst=0)
    with pytest.raises(ConfigurationError):
        ReportBudget(clock, per_second=0)


LEGACY = {
    "csp-report": {
        "document-uri": "https://app.example/page?token=secret#frag",
        "blocked-uri": "https://evil.example/x.js?q=1",
        "violated-directive": "script-src-elem",
        "effective-directive": "script-src-elem",
        "disposition": "enforce",
        "status-code": 200,
        "script-sample": "alert(document.cookie)",
    }
}
MODERN = [
    {
        "type": "csp-violation",
        "url": "https://app.example/",
        "body": {
            "documentURL": "https://app.example/p?x=1",
            "blockedURL": "inline",
            "effectiveDirective": "style-src-elem",
            "disposition": "report",
            "statusCode": 200,
            "sample": "color:red",
        },
    },
    {"type": "deprecation", "body": {}},
]


def test_parse_legacy_report() -> None:
    body = json.dumps(LEGACY).encode()
    assert parse_csp_reports(body, "application/csp-report; charset=utf-8") == (
        CSPViolation(
            document_url="https://app.example/page",
            blocked_url="https://evil.example/x.js",
            directive="script-src-elem",
            disposition="enforce",
            status_code=200,
        ),
    )


def test_parse_reporting_api_report() -> None:
    body = json.dumps(MODERN).encode()
    assert parse_csp_reports(body, "application/reports+json") == (
        CSPViolation(
            document_url="https://app.example/p",
            blocked_url="inline",
            directive="style-src-elem",
            disposition="report",
            status_code=200,
        ),
    )
    many = json.dumps(MODERN[:1] * 50).encode()
    assert len(parse_csp_reports(many, "application/reports+json", limit=5)) == 5


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{", "application/csp-report"),
        (b"\xff\xfe", "application/csp-report"),
        (b"[]", "application/csp-report"),
        (b'{"csp-report": 3}', "application/csp-report"),
        (b"{}", "application/reports+json"),
        (b"[1]", "application/reports+json"),
        (b'[{"type": "csp-violation", "body": []}]', "application/reports+json"),
        (b"[" * 100_000, "application/reports+json"),
        (b"{}", "application/json"),
        (b"{}", "text/plain"),
    ],
)
def test_parse_refuses_malformed_reports(body: bytes, content_type: str) -> None:
    with pytest.raises(BadData):
        parse_csp_reports(body, content_type)


@given(body=st.binary(max_size=200), legacy=st.booleans())
def test_parse_reports_is_total(body: bytes, legacy: bool) -> None:
    media = "application/csp-report" if legacy else "application/reports+json"
    with contextlib.suppress(BadData):
        parse_csp_reports(body, media)


@given(
    data=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=12,
    ),
    legacy=st.booleans(),
)
def test_parse_reports_any_json_is_a_result_or_bad_data(data: object, legacy: bool) -> None:
    media = "application/csp-report" if legacy else "application/reports+json"
    try:
        found = parse_csp_reports(json.dumps(data).encode(), media)
    except BadData:
        return
    assert all(isinstance(v, CSPViolation) for v in found)


# --- opting out: warnings, and refusals in production -----------------------------------------

LOGGER = "bastion.security.headers"

# (changes, the setting named, refused in production, words of the warning)
WEAKNESSES = [
    ({"csp_policy": None}, "csp_policy", False, "injected scripts run"),
    (
        {"csp_policy": None, "csp_report_only": "default-src 'self'"},
        "csp_policy",
        False,
        "nothing is blocked",
    ),
    (
        {"csp_policy": "img-src 'self'; frame-ancestors 'none'"},
        "csp_policy.script-src",
        False,
        "does not restrict scripts",
    ),
    (
        {"csp_policy": "script-src 'self' 'unsafe-inline'; frame-ancestors 'none'"},
        "csp_policy.script-src",
        True,
        "injected inline scripts run",
    ),
    (
        {"csp_policy": "default-src 'self' 'unsafe-inline'"},
        "csp_policy.default-src",
        True,
        "injected inline scripts run",
    ),
    ({"csp_policy": "script-src 'self' https:"}, "csp_policy.script-src", True, "any origin"),
    ({"csp_policy": "script-src 'nonce' data:"}, "csp_policy.script-src", True, "data: URL"),
    ({"csp_policy": "default-src *"}, "csp_policy.default-src", True, "any origin"),
    ({"csp_policy": "script-src 'self' 'unsafe-eval'"}, "csp_policy.script-src", False, "eval"),
    (
        {"csp_policy": "default-src 'self'", "x_frame_options": None},
        "x_frame_options",
        True,
        "clickjacking",
    ),
    (
        {"csp_policy": "default-src 'self'; frame-ancestors https:"},
        "csp_policy.frame-ancestors",
        True,
        "clickjacking",
    ),
    ({"hsts_max_age": None}, "hsts_max_age", False, "downgraded"),
    ({"hsts_max_age": 0}, "hsts_max_age", True, "forget"),
    ({"hsts_max_age": 86_400}, "hsts_max_age", False, "under six months"),
    ({"nosniff": False}, "nosniff", True, "guess content types"),
    ({"referrer_policy": None}, "referrer_policy", False, "full URLs"),
    ({"referrer_policy": "unsafe-url"}, "referrer_policy", True, "even over plain HTTP"),
    ({"referrer_policy": "no-referrer-when-downgrade"}, "referrer_policy", False, "full URLs"),
]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


@pytest.mark.parametrize("preset", ["strict", "api", "relaxed"])
def test_presets_have_no_weakness_and_pass_in_production(
    preset: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    policy = HeaderPolicy.preset(preset)
    assert policy.weaknesses() == ()
    HeaderRouter(policy, production=True)
    HeaderRouter(preset, production=False)
    assert warnings_of(caplog) == []


@pytest.mark.parametrize(("changes", "setting", "refused", "words"), WEAKNESSES)
def test_each_opt_out_is_named_warned_and_refused_if_unsafe(
    changes: dict[str, Any],
    setting: str,
    refused: bool,
    words: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    policy = HeaderPolicy(**changes)
    (weakness,) = policy.weaknesses()
    assert (weakness.setting, weakness.refused_in_production) == (setting, refused)
    assert words in weakness.problem
    HeaderRouter(policy, production=False)
    (logged,) = warnings_of(caplog)
    assert logged.startswith(f"bastion security headers: {setting}: ")
    assert words in logged
    assert weakness.fix in logged
    caplog.clear()
    if refused:
        with pytest.raises(ConfigurationError) as caught:
            HeaderRouter(policy, production=True)
        assert caught.value.setting == setting
        message = str(caught.value)
        assert message.startswith(f"security headers: {setting}: ")
        assert "refused when ENV=production" in message
        assert message.endswith(f"Fix: {weakness.fix}.")
        assert warnings_of(caplog) == []
    else:
        HeaderRouter(policy, production=True)
        assert len(warnings_of(caplog)) == 1


@pytest.mark.parametrize(
    "csp",
    [
        "script-src 'nonce' 'unsafe-inline'",  # CSP 2 browsers ignore 'unsafe-inline' here
        "script-src 'sha256-YWJj' 'unsafe-inline'",
        "script-src 'nonce' 'strict-dynamic' https: 'unsafe-inline'",  # the CSP 1 fallback
        "script-src 'self'; object-src 'none'",
    ],
)
def test_neutralised_script_sources_are_not_weaknesses(csp: str) -> None:
    assert HeaderPolicy(csp_policy=csp).weaknesses() == ()


def test_isolation_headers_off_are_not_weaknesses() -> None:
    policy = HeaderPolicy(
        coop_policy=None,
        coep_policy=None,
        corp_policy=None,
        permissions_policy=None,
        x_xss_protection_zero=False,
        include_subdomains=False,
        remove=(),
    )
    assert policy.weaknesses() == ()


def test_several_weaknesses_all_logged_and_the_first_unsafe_one_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    policy = HeaderPolicy(csp_policy=None, x_frame_options=None, nosniff=False)
    assert [w.setting for w in policy.weaknesses()] == ["csp_policy", "x_frame_options", "nosniff"]
    policy.check_environment(production=False)
    assert len(warnings_of(caplog)) == 3
    caplog.clear()
    with pytest.raises(ConfigurationError) as caught:
        policy.check_environment(production=True)
    assert caught.value.setting == "x_frame_options"
    assert warnings_of(caplog) == []  # refused before anything is logged


def test_overrides_are_checked_once_each_and_named(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    weak = HeaderPolicy(referrer_policy=None)
    HeaderRouter("strict", overrides={"/docs": weak, "/old": "relaxed"}, production=False)
    assert warnings_of(caplog) == [
        "bastion security headers (override '/docs'): referrer_policy: "
        + weak.weaknesses()[0].problem
        + ". "
        + weak.weaknesses()[0].fix
        + "."
    ]
    caplog.clear()
    HeaderRouter(weak, overrides={"/docs": weak}, production=False)
    assert len(warnings_of(caplog)) == 1  # the same policy object is checked once
    with pytest.raises(ConfigurationError, match=r"override '/legacy'.*nosniff"):
        HeaderRouter("strict", overrides={"/legacy": HeaderPolicy(nosniff=False)}, production=True)


def _routes(router: HeaderRouter) -> dict[str, CompiledHeaders]:
    return {pattern.text: compiled for pattern, compiled in router.overrides}


def test_override_keys_are_path_patterns() -> None:
    router = HeaderRouter(
        "strict", overrides={"/legacy/*": "relaxed", "/login": "api"}, production=False
    )
    legacy, login = _routes(router)["/legacy/*"], _routes(router)["/login"]
    for path in ("/legacy", "/legacy/", "/legacy/page", "/legacy/a/b"):
        assert router.for_path(path) is legacy, path
    for path in ("/legacyx", "/Legacy/page", "/", "/other"):
        assert router.for_path(path) is router.default, path
    assert router.for_path("/login") is login
    for path in ("/login/", "/login/x", "/Login", "/loginx"):
        assert router.for_path(path) is router.default, path


def test_the_most_specific_override_wins_whatever_the_order() -> None:
    keys = ["/*", "/docs/*", "/docs", "/docs/api/*"]
    for order in (keys, keys[::-1]):
        router = HeaderRouter("strict", overrides=dict.fromkeys(order, "relaxed"), production=False)
        routes = _routes(router)
        assert [pattern.text for pattern, _ in router.overrides] == [
            "/docs/api/*",
            "/docs",
            "/docs/*",
            "/*",
        ]
        assert router.for_path("/docs") is routes["/docs"]
        assert router.for_path("/docs/") is routes["/docs/*"]
        assert router.for_path("/docs/x") is routes["/docs/*"]
        assert router.for_path("/docs/api") is routes["/docs/api/*"]
        assert router.for_path("/docs/api/v1") is routes["/docs/api/*"]
        assert router.for_path("/") is routes["/*"]
        assert router.for_path("/docsx") is routes["/*"]


def test_an_override_applies_only_when_the_path_as_sent_and_its_normal_form_agree() -> None:
    router = HeaderRouter(
        "strict", overrides={"/docs/*": "relaxed", "/login": "api"}, production=False
    )
    docs, login = _routes(router)["/docs/*"], _routes(router)["/login"]
    assert router.for_path("/docs//x") is docs  # both readings are under /docs
    assert router.for_path("/docs/./x") is docs
    assert router.for_path("/docs/../account") is router.default  # normal form: /account
    assert router.for_path("/x/../docs") is router.default  # as sent: not under /docs
    assert router.for_path("//login") is router.default
    assert router.for_path("/login/.") is router.default
    assert router.for_path("/login") is login


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (
            "/legacy/",
            (
                "overrides: '/legacy/' ends in '/'; write '/legacy/*' for the prefix or '/legacy' "
                "for the exact path"
            ),
        ),
        (
            "docs",
            (
                "overrides: 'docs' must be a path starting with '/' ('/login' for one path, "
                "'/api/*' for a prefix)"
            ),
        ),
        (
            "/docs*",
            (
                "overrides: '/docs*' has a '*' that is not a final '/*' segment; patterns are an "
                "exact path ('/login') or a prefix ('/api/*'), nothing else"
            ),
        ),
    ],
)
def test_an_override_key_outside_the_path_grammar_is_refused(key: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        HeaderRouter("strict", overrides={key: "relaxed"}, production=False)
    assert str(caught.value) == message
    assert caught.value.setting == "overrides"


def test_production_default_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    unsafe = HeaderPolicy(referrer_policy="unsafe-url")
    monkeypatch.setenv("BASTION_ENV", "production")
    with pytest.raises(ConfigurationError, match="referrer_policy"):
        HeaderRouter(unsafe)
    HeaderRouter(unsafe, production=False)  # the explicit flag wins over the environment
    monkeypatch.setenv("BASTION_ENV", "test")
    with pytest.raises(ConfigurationError, match="referrer_policy"):
        HeaderRouter(unsafe, production=True)


def test_weakness_is_plain_data() -> None:
    weakness = Weakness("nosniff", "problem", "fix", refused_in_production=True)
    assert weakness == Weakness("nosniff", "problem", "fix", True)
    with pytest.raises(AttributeError):
        weakness.setting = "other"  # type: ignore[misc]


def test_the_guide_and_helmet_headers_can_be_tuned_or_left_out() -> None:
    policy = HeaderPolicy(
        x_permitted_cross_domain_policies="master-only",
        origin_agent_cluster=False,
        x_dns_prefetch_control=None,
    )
    out = rendered(policy)
    assert out["x-permitted-cross-domain-policies"] == "master-only"
    assert "origin-agent-cluster" not in out
    assert "x-dns-prefetch-control" not in out
    assert rendered(HeaderPolicy(x_dns_prefetch_control="on"))["x-dns-prefetch-control"] == "on"
    assert "x-permitted-cross-domain-policies" not in rendered(
        HeaderPolicy(x_permitted_cross_domain_policies=None)
    )
    with pytest.raises(ConfigurationError) as caught:
        HeaderPolicy(x_permitted_cross_domain_policies="everything")
    assert caught.value.setting == "x_permitted_cross_domain_policies"
    with pytest.raises(ConfigurationError) as caught:
        HeaderPolicy(x_dns_prefetch_control="maybe")
    assert caught.value.setting == "x_dns_prefetch_control"
    with pytest.raises(ConfigurationError) as caught:
        HeaderPolicy(origin_agent_cluster="yes")  # type: ignore[arg-type]
    assert caught.value.setting == "origin_agent_cluster"
    # Not opt-outs of a baseline protection: nothing is logged for them.
    assert policy.weaknesses() == ()
