"""CORSPolicy validation, the production refusals, the origin matcher and Vary merging."""

from __future__ import annotations

import re
import string
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bastion.core.cors import (
    MAX_ORIGIN_BYTES,
    CompiledCORS,
    CORSPolicy,
    CORSReason,
    apply_headers,
    parse_origin_setting,
)
from bastion.core.vary import merge_vary
from bastion.errors import ConfigurationError

# -- origins as configured -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "serialised"),
    [
        ("https://example.com", "https://example.com"),
        ("HTTPS://Example.COM", "https://example.com"),
        ("https://example.com/", "https://example.com"),
        ("https://example.com:443", "https://example.com"),
        ("http://example.com:80", "http://example.com"),
        ("https://example.com:0443", "https://example.com"),
        ("https://example.com:8443", "https://example.com:8443"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://[0:0::1]:8000", "http://[::1]:8000"),
        ("https://xn--bcher-kva.example", "https://xn--bcher-kva.example"),
        ("capacitor://localhost", "capacitor://localhost"),
        ("  https://example.com  ", "https://example.com"),
        ("https://*.Example.com", "https://*.example.com"),
        ("https://*.example.com:443", "https://*.example.com"),
        ("https://*.example.com:8443", "https://*.example.com:8443"),
    ],
)
def test_configured_origins_are_serialised_as_browsers_send_them(
    written: str, serialised: str
) -> None:
    assert parse_origin_setting(written) == serialised


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("example.com", "is not an origin; write scheme://host[:port]"),
        ("https://example.com/app", "has a path"),
        ("https://example.com?x", "has a query"),
        ("https://example.com#x", "has a fragment"),
        ("https://user@example.com", "has userinfo"),
        ("https://example.com.", "ends its host in '.'"),
        ("https://bücher.example", "is not ASCII; write an international host in the 'xn--'"),
        ("https://example.com:0", "port that is not a number from 1 to 65535"),
        ("https://example.com:65536", "port that is not a number from 1 to 65535"),
        ("https://example.com:", "port that is not a number from 1 to 65535"),
        ("https://example.com:x", "port that is not a number from 1 to 65535"),
        ("https://", "has no host"),
        ("https://a..example.com", "is not a DNS name"),
        ("https://127.1", "read as an IPv4 address"),
        ("https://0x7f.0.0.1", "read as an IPv4 address"),
        ("https://[::1", "unclosed '['"),
        ("https://[zz]", "no valid IPv6 address"),
        ("https://[::1]x", "text after its IPv6 host"),
        ("https://exa mple.com", "a character no origin has"),
        ("https://exa%6dple.com", "a character no origin has"),
        ("file://", "Origin: null"),
        ("https://*.com", "a DNS suffix of at least two labels"),
        ("https://*.0.0.1", "read as an IPv4 address"),
        ("https://*.1.2.3.4", "a DNS suffix of at least two labels"),
        ("https://*example.com", "is not a pattern"),
        ("https://api-*.example.com", "is not a pattern"),
        ("https://a.*.example.com", "is not a pattern"),
        ("https://*.*.example.com", "is not a pattern"),
        ("capacitor://*.example.com", "is not a pattern"),
        (3, "allow_origins entries must be str"),
    ],
)
def test_malformed_origins_are_refused_naming_the_setting(written: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)) as caught:
        CORSPolicy(allow_origins=(written,))
    assert caught.value.setting == "allow_origins"


def test_policy_normalises_and_deduplicates() -> None:
    policy = CORSPolicy(
        allow_origins=("https://A.example", "https://a.example/", "https://a.example:443"),
        allow_methods=("get", "Put", "PUT"),
        allow_headers=("Content-Type", "content-type", "X-Token"),
        expose_headers=("X-Request-Id",),
    )
    assert policy.allow_origins == ("https://a.example",)
    assert policy.allow_methods == ("GET", "PUT")
    assert policy.allow_headers == ("content-type", "x-token")
    assert policy.expose_headers == ("x-request-id",)
    assert CORSPolicy(allow_origins="https://a.example").allow_origins == ("https://a.example",)


@pytest.mark.parametrize(
    ("settings_", "setting", "message"),
    [
        (
            {"allow_origins": ("*",), "allow_credentials": True},
            "allow_credentials",
            "allow_credentials=True with allow_origins=('*',) would let every site read",
        ),
        (
            {
                "allow_origins": ("https://a.example",),
                "allow_null": True,
                "allow_credentials": True,
            },
            "allow_null",
            "allow_credentials=True with allow_null=True would let any page",
        ),
        (
            {"allow_origins": ("*", "https://a.example")},
            "allow_origins",
            "'*' admits every origin and must stand alone",
        ),
        ({"allow_origins": ("null",)}, "allow_origins", "set allow_null=True"),
        ({"allow_origins": 3}, "allow_origins", "must be a list of origins"),
        ({"allow_methods": ("*",)}, "allow_methods", "'*' is read by browsers as any method"),
        ({"allow_methods": ("GE T",)}, "allow_methods", "is not an HTTP method name"),
        ({"allow_methods": ("TRACE",)}, "allow_methods", "browsers never send this method"),
        ({"allow_methods": ("connect",)}, "allow_methods", "browsers never send this method"),
        ({"allow_methods": 3}, "allow_methods", "must be a list of method names"),
        ({"allow_headers": ("*",)}, "allow_headers", "(and never as Authorization)"),
        ({"allow_headers": ("x:y",)}, "allow_headers", "is not an HTTP header name"),
        ({"allow_headers": ("Cookie",)}, "allow_headers", "a page can never set this header"),
        ({"allow_headers": ("Sec-Fetch-Site",)}, "allow_headers", "a page can never set this"),
        ({"allow_headers": ("proxy-x",)}, "allow_headers", "a page can never set this header"),
        ({"expose_headers": ("*",)}, "expose_headers", "'*' is read by browsers as any header"),
        ({"expose_headers": ("Set-Cookie",)}, "expose_headers", "never let a page read it"),
        ({"max_age": -1}, "max_age", "from 0 to 86400"),
        ({"max_age": 86_401}, "max_age", "from 0 to 86400"),
        ({"max_age": True}, "max_age", "from 0 to 86400"),
        ({"max_age": 1.5}, "max_age", "from 0 to 86400"),
        ({"allow_credentials": "yes"}, "allow_credentials", "must be True or False"),
        ({"allow_null": 1}, "allow_null", "must be True or False"),
        ({"allow_private_network": None}, "allow_private_network", "must be True or False"),
    ],
)
def test_unsafe_or_malformed_settings_are_refused(
    settings_: dict[str, Any], setting: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)) as caught:
        CORSPolicy(**settings_)
    assert caught.value.setting == setting


def test_compiled_needs_a_policy() -> None:
    with pytest.raises(ConfigurationError, match="policy must be a CORSPolicy"):
        CompiledCORS({"allow_origins": "*"}, production=False)  # type: ignore[arg-type]


# -- production ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings_", "setting", "message"),
    [
        (
            {"allow_origins": ("http://*.example.com",), "allow_credentials": True},
            "allow_credentials",
            "allow_credentials=True with plain-HTTP origins ['http://*.example.com']",
        ),
        (
            {"allow_origins": ("https://a.example", "http://a.example"), "allow_credentials": True},
            "allow_credentials",
            "plain-HTTP origins ['http://a.example']",
        ),
        (
            {"allow_origins": ("https://a.example",), "allow_null": True},
            "allow_null",
            "allow_null=True admits Origin: null",
        ),
        (
            {"allow_origins": ("*",), "allow_private_network": True},
            "allow_private_network",
            "allow_private_network=True with allow_origins=('*',) lets every public site",
        ),
    ],
)
def test_production_refuses_unsafe_combinations(
    settings_: dict[str, Any], setting: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    policy = CORSPolicy(**settings_)
    with pytest.raises(ConfigurationError, match=re.escape(message)) as caught:
        CompiledCORS(policy, production=True)
    assert caught.value.setting == setting
    assert "refused when ENV=production" in str(caught.value)
    with caplog.at_level("WARNING", logger="bastion.security.cors"):
        CompiledCORS(policy, production=False)  # allowed elsewhere, with a warning
    assert message in caplog.text


@pytest.mark.parametrize(
    "settings_",
    [
        {"allow_origins": ("*",)},
        {"allow_origins": ("https://a.example", "https://*.a.example"), "allow_credentials": True},
        {"allow_origins": ("http://intranet.example",)},
        {"allow_origins": ("https://a.example",), "allow_private_network": True},
    ],
)
def test_production_allows_the_safe_ones(settings_: dict[str, Any]) -> None:
    assert CompiledCORS(CORSPolicy(**settings_), production=True).policy.allow_origins


def test_patterns_with_credentials_and_private_network_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = CORSPolicy(
        allow_origins=("https://*.a.example",), allow_credentials=True, allow_private_network=True
    )
    with caplog.at_level("WARNING", logger="bastion.security.cors"):
        CompiledCORS(policy, production=True)
    assert "a forgotten or taken-over subdomain too" in caplog.text
    assert "allow_private_network=True lets the listed origins reach" in caplog.text


# -- the origin matcher ----------------------------------------------------------------------------

SUFFIX = "example.com"
MATCHER = CompiledCORS(
    CORSPolicy(allow_origins=(f"https://*.{SUFFIX}", "https://exact.test")), production=False
)
LABEL_CHARS = string.ascii_lowercase + string.digits + "-_"
labels = st.lists(st.text(LABEL_CHARS, min_size=1, max_size=63), min_size=1, max_size=4)
noise = st.text(alphabet=st.characters(codec="latin-1"), max_size=40)


@given(labels)
def test_pattern_admits_one_or_more_labels_under_the_suffix(found: list[str]) -> None:
    origin = f"https://{'.'.join(found)}.{SUFFIX}".encode()
    assert MATCHER.allows(origin) is (len(origin) <= MAX_ORIGIN_BYTES)
    headers = MATCHER.simple(origin)
    assert (headers[:1] == ((b"access-control-allow-origin", origin),)) is MATCHER.allows(origin)


@settings(max_examples=500)
@given(noise, noise)
@example("https://", ".evil")
@example("https://evil", "")
@example("https://a.", ".")
@example("HTTPS://A.", "")
@example("https://a@b.", "")
@example("https://.", "")
@example("https://a..", "")
@example("https://a.", ":443")
@example("https://a.", ":8443")
@example("http://a.", "")
def test_pattern_admits_nothing_else(before: str, after: str) -> None:
    origin = (before + SUFFIX + after).encode("latin-1")
    host = origin.removeprefix(b"https://").removesuffix(b"." + SUFFIX.encode())
    wellformed = (
        origin.startswith(b"https://")
        and origin.endswith(b"." + SUFFIX.encode())
        and len(origin) <= MAX_ORIGIN_BYTES
        and all(
            1 <= len(label) <= 63 and all(chr(c) in LABEL_CHARS for c in label)
            for label in host.split(b".")
        )
    )
    assert MATCHER.allows(origin) is wellformed
    assert bool(MATCHER.simple(origin)) is wellformed


@given(st.binary(max_size=80))
def test_matcher_is_total_and_never_admits_what_it_should_not(origin: bytes) -> None:
    allowed = MATCHER.allows(origin)
    if allowed:
        assert origin == b"https://exact.test" or origin.endswith(b"." + SUFFIX.encode())
        assert origin.isascii()
        assert re.fullmatch(rb"[a-z0-9:/._-]+", origin)
    answer = MATCHER.preflight(origin, b"GET")
    assert (answer.status == 204) is allowed
    assert answer.reason in {None, CORSReason.ORIGIN_DISALLOWED, CORSReason.ORIGIN_MALFORMED}


@given(st.text(max_size=60))
def test_parse_origin_setting_is_idempotent_or_refuses(text: str) -> None:
    try:
        once = parse_origin_setting(text)
    except ConfigurationError as error:
        refused: ConfigurationError | None = error
    else:
        refused = None
        assert parse_origin_setting(once) == once
    assert refused is None or refused.setting == "allow_origins"


def test_preflight_method_with_a_non_ascii_letter_is_malformed() -> None:
    compiled = CompiledCORS(CORSPolicy(allow_origins=("https://exact.test",)), production=False)
    answer = compiled.preflight(b"https://exact.test", "po\u017ft".encode())
    assert answer.reason is CORSReason.METHOD_MALFORMED


# -- Vary and the response headers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "merged"),
    [
        (b"", b"Origin"),
        (b"Accept-Encoding", b"Accept-Encoding, Origin"),
        (b"accept-encoding , origin", None),
        (b"Cookie,Origin", None),
        (b" * ", None),
        (b"X-Origin, Originator", b"X-Origin, Originator, Origin"),
    ],
)
def test_merge_vary(value: bytes, merged: bytes | None) -> None:
    assert merge_vary(value, b"Origin") == merged


def test_apply_headers_drops_the_apps_cors_headers_and_merges_the_first_vary() -> None:
    headers = [
        (b"content-type", b"text/plain"),
        (b"Vary", b"Cookie"),
        (b"Access-Control-Allow-Origin", b"*"),
        (b"access-control-expose-headers", b"x"),
        (b"vary", b"Accept"),
        (b"", b"odd"),
    ]
    extra = ((b"access-control-allow-origin", b"https://a"),)
    assert apply_headers(headers, extra, vary=True) == [
        (b"content-type", b"text/plain"),
        (b"Vary", b"Cookie, Origin"),
        (b"vary", b"Accept"),
        (b"", b"odd"),
        (b"access-control-allow-origin", b"https://a"),
    ]
    assert apply_headers([(b"vary", b"Cookie"), (b"vary", b"origin")], (), vary=True) == [
        (b"vary", b"Cookie"),
        (b"vary", b"origin"),
    ]
    assert apply_headers([(b"vary", b"Cookie")], (), vary=False) == [(b"vary", b"Cookie")]
