"""The sans-I/O half of access tokens over HTTP: Authorization parsing, WWW-Authenticate, rules."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.core.client import TrustedProxies
from bastion.core.tokens.bearer import (
    BearerChallenge,
    BearerRefused,
    BearerRules,
    Credentials,
    Route,
    check_scopes,
    description,
    parse_authorization,
    public_url,
    quote_path,
)
from bastion.core.tokens.principal import BearerRequest, Principal
from bastion.core.tokens.reasons import TokenReason, TokenRejected
from bastion.errors import ConfigurationError

ERROR_DESCRIPTION = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6750 section 3


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Bearer abc", Credentials("bearer", "abc")),
        ("bearer abc", Credentials("bearer", "abc")),
        ("BEARER a.b-c_d~e+f/g==", Credentials("bearer", "a.b-c_d~e+f/g==")),
        ("DPoP abc", Credentials("dpop", "abc")),
        ("dpop abc", Credentials("dpop", "abc")),
        ("Bearer   abc", Credentials("bearer", "abc")),  # 1*SP
        ("  Bearer abc\t", Credentials("bearer", "abc")),  # OWS around the field value
        (b"Bearer abc", Credentials("bearer", "abc")),
        (None, None),
    ],
)
def test_well_formed_headers(value: str | bytes | None, expected: Credentials | None) -> None:
    assert parse_authorization(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Bearer",
        "Bearer ",
        "Bearer abc def",
        "Bearer abc,Bearer def",
        "Bearer abc, Bearer def",  # two headers joined by a WSGI server
        "Bearer\tabc",
        "Bearer a=b",  # padding only at the end
        'Bearer "abc"',
        "Bearer ab\x00c",
        "Bearer abcé",
        b"Bearer ab\xffc",
        "Basic YTpi",
        "Token abc",
        "Bearerabc",
        "MAC abc",
    ],
)
def test_malformed_headers(value: str | bytes) -> None:
    with pytest.raises(TokenRejected) as caught:
        parse_authorization(value)
    assert caught.value.reason is TokenReason.MALFORMED_HEADER
    assert caught.value.reason.status == 400
    assert caught.value.reason.error_code == "invalid_request"


def test_the_size_cap_comes_before_any_parsing() -> None:
    # Garbage that would be malformed is refused as too large: the cap is checked first.
    for value in ("\x00" * 8193, b"\xff" * 8193, "Bearer " + "é" * 5000):
        with pytest.raises(TokenRejected) as caught:
            parse_authorization(value)
        assert caught.value.reason is TokenReason.HEADER_TOO_LARGE
    assert parse_authorization("Bearer " + "a" * (8192 - 7)) is not None
    with pytest.raises(TokenRejected):
        parse_authorization("Bearer " + "a" * (8192 - 6))
    assert TokenReason.HEADER_TOO_LARGE.status == 400


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_the_parser_is_total(value: str | bytes) -> None:
    reason = None
    try:
        found = parse_authorization(value)
    except TokenRejected as rejected:
        reason = rejected.reason
        found = None
    assert reason in {None, TokenReason.MALFORMED_HEADER, TokenReason.HEADER_TOO_LARGE}
    assert (found is None) is (reason is not None)
    assert found is None or found.scheme in {"bearer", "dpop"}


def test_credentials_and_requests_never_show_the_token() -> None:
    assert "secret" not in repr(Credentials("bearer", "secret"))
    request = BearerRequest("Bearer secret", "proof-secret", "GET", "https://a.test/")
    assert "secret" not in repr(request)
    principal = Principal("alice", frozenset({"a"}), "t-1", 1.0, {"secret": "x"})
    assert "secret" not in repr(principal)


@pytest.mark.parametrize("reason", list(TokenReason))
def test_every_reason_has_fixed_rfc6750_text(reason: TokenReason) -> None:
    text = description(reason)
    assert ERROR_DESCRIPTION.fullmatch(text)
    header = BearerChallenge(realm="r").header(reason, scopes=("a", "b"))
    if reason is TokenReason.MISSING:
        assert header == 'Bearer realm="r"'
    else:
        assert header.startswith(f'Bearer realm="r", error="{reason.error_code}", ')
        assert f'error_description="{text}"' in header
    assert ('scope="a b"' in header) is (reason is TokenReason.INSUFFICIENT_SCOPE)


def test_dpop_challenges() -> None:
    dpop = BearerChallenge(realm="r", dpop_algorithms=("EdDSA", "ES256"))
    assert (
        dpop.header(TokenReason.MISSING) == 'Bearer realm="r", DPoP realm="r", algs="EdDSA ES256"'
    )
    assert dpop.header(TokenReason.DPOP_REPLAYED, scheme="dpop") == (
        'DPoP realm="r", error="invalid_dpop_proof", error_description="The DPoP proof is '
        'invalid", algs="EdDSA ES256", Bearer realm="r"'
    )


def test_scopes_are_scope_tokens() -> None:
    assert check_scopes(["a:b", "a:b", "c"]) == ("a:b", "c")
    assert check_scopes("solo") == ("solo",)
    for bad in ("", "a b", 'a"b', "a\\b", "é", 3):
        with pytest.raises(ConfigurationError, match="scope"):
            check_scopes([bad])  # type: ignore[list-item]


def test_rules_route_protect_optional_and_scopes() -> None:
    rules = BearerRules(protected=["/api/*"], optional=["/public"], scopes={"/admin/*": ["admin"]})
    assert rules.route("/api/x") == Route(required=True)
    assert rules.route("/API/x/") == Route(required=True)  # every reading of the path
    assert rules.route("/admin/users") == Route(required=True, scopes=("admin",))
    assert rules.route("/public") == Route(required=False)
    assert rules.route("/other") is None
    required = Route(required=True, scopes=("admin",))
    with pytest.raises(BearerRefused) as caught:
        rules.present(required, [])
    assert caught.value.reason is TokenReason.MISSING
    with pytest.raises(BearerRefused) as caught:
        rules.present(required, [b"Bearer a", b"Bearer b"])
    assert caught.value.reason is TokenReason.MALFORMED_HEADER
    with pytest.raises(BearerRefused) as caught:
        rules.present(required, [b"DPoP a"], [b"p1", b"p2"])
    assert (caught.value.reason, caught.value.scheme) == (TokenReason.DPOP_INVALID, "dpop")
    assert rules.present(Route(required=False), [b"Basic YTpi"]) is None
    presented = rules.present(required, [b"Bearer tok"], [b"proof"])
    assert presented is not None
    assert (presented.authorization, presented.dpop, presented.scheme) == (
        "Bearer tok",
        "proof",
        "bearer",
    )
    weak = Principal("alice", frozenset({"read"}), "t", 1.0, {})
    with pytest.raises(BearerRefused) as caught:
        rules.admit(required, weak)
    status, header, body = rules.answer(caught.value)
    assert status == 403
    assert header.endswith('scope="admin"')
    assert body.error == "insufficient_scope"


def test_urls_for_dpop() -> None:
    assert quote_path("/café/a b") == "/caf%C3%A9/a%20b"
    assert quote_path(b"/caf%C3%A9", encoded=True) == "/caf%C3%A9"
    assert quote_path(b"/100%") == "/100%25"
    proxies = TrustedProxies(["10.0.0.1"])
    # The proxy appends its item after the client's: the client's first item is not read.
    forwarded = {"forwarded_proto": "https", "forwarded_host": "evil.example, Public.Example"}
    assert public_url(
        "http", "inner:8000", "/x", peer="10.0.0.1", proxies=proxies, **forwarded
    ) == ("https://public.example/x")
    assert public_url(
        "http", "inner:8000", "/x", peer="10.9.9.9", proxies=proxies, **forwarded
    ) == ("http://inner:8000/x")
    assert public_url("wss", "a.test", "/ws") == "https://a.test/ws"


def test_challenge_configuration_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="realm"):
        BearerChallenge(realm="x" * 129)
    with pytest.raises(ConfigurationError, match="dpop_algorithms"):
        BearerChallenge(dpop_algorithms=("ES 256",))
    assert BearerChallenge(dpop_algorithms="EdDSA").dpop_algorithms == ("EdDSA",)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_header_bytes"):
        BearerRules(max_header_bytes=True)
