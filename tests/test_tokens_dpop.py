"""DPoP proofs (RFC 9449): valid proofs, the RFC's own examples and vectors, htu normalisation,
configuration. The refusals are in test_tokens_dpop_attacks.py, which reuses the proof maker
below."""

from __future__ import annotations

import base64
import functools
import json
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from bastion.core.client import TrustedProxies
from bastion.core.clock import FrozenClock
from bastion.core.tokens.dpop import (
    DEFAULT_ALGORITHMS,
    DPoPCheck,
    DPoPProof,
    DPoPRejected,
    DPoPVerifier,
    access_token_hash,
    htu_for,
    jwk_thumbprint,
    normalize_htu,
    request_htu,
)
from bastion.core.tokens.reasons import TokenReason, TokenRejected
from bastion.errors import ConfigurationError

NOW = 1_800_000_000.0
URL = "https://api.example/resource"


# -- a proof maker: builds the compact JWS by hand so tests can bend any part of it -----------


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@functools.cache
def client_key(alg: str, variant: int = 0) -> Any:
    """A client key pair for ``alg`` (``variant`` gives other keys of the same kind)."""
    del variant
    if alg.startswith(("RS", "PS")):
        return RSAKey.generate_key(2048)
    if alg == "ES384":
        return ECKey.generate_key("P-384")
    if alg.startswith("ES"):
        return ECKey.generate_key("P-256")
    return OKPKey.generate_key("Ed25519")


def public_jwk(key: Any) -> dict[str, Any]:
    return dict(key.as_dict(private=False))


def encode(part: dict[str, Any] | str | bytes) -> str:
    if isinstance(part, dict):
        part = json.dumps(part)
    if isinstance(part, str):
        part = part.encode("utf-8")
    return b64(part)


def sign(alg: str, key: Any, header: dict[str, Any] | str, claims: dict[str, Any] | str) -> str:
    """``header.claims.signature`` signed with joserfc's model of ``alg`` (no checks)."""
    signing_input = f"{encode(header)}.{encode(claims)}"
    signature = JWSRegistry.algorithms[alg].sign(signing_input.encode("ascii"), key)
    return f"{signing_input}.{b64(signature)}"


def claims_for(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"jti": "jti-1", "htm": "GET", "htu": URL, "iat": NOW}
    for name, value in overrides.items():
        if value is DROP:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


DROP: Any = object()


def make_proof(
    alg: str = "ES256",
    *,
    key: Any = None,
    jwk: dict[str, Any] | None = None,
    header: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """A proof by ``key`` (the ``alg`` client key by default) for GET ``URL`` at ``NOW``;
    ``header`` entries override the header's (``DROP`` removes one), ``claims`` the claims'."""
    key = key if key is not None else client_key(alg)
    full: dict[str, Any] = {"typ": "dpop+jwt", "alg": alg, "jwk": jwk or public_jwk(key)}
    for name, value in (header or {}).items():
        if value is DROP:
            full.pop(name, None)
        else:
            full[name] = value
    return sign(alg, key, full, claims_for(**claims))


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def verifier(clock: FrozenClock) -> DPoPVerifier:
    return DPoPVerifier(clock=clock)


def refused(verifier: DPoPVerifier, proof: Any, **request: Any) -> DPoPRejected:
    """The refusal ``verifier`` gives ``proof`` for GET ``URL`` (``request`` overrides)."""
    arguments: dict[str, Any] = {"method": "GET", "url": URL, **request}
    with pytest.raises(DPoPRejected) as info:
        verifier.verify(proof, **arguments)
    return info.value


# -- valid proofs ------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256"])
def test_a_valid_proof_is_accepted_with_its_claims_and_thumbprint(
    verifier: DPoPVerifier, alg: str
) -> None:
    key = client_key(alg)
    token = "an.access-token"
    proof = make_proof(alg, htm="POST", jti=f"jti-{alg}", ath=access_token_hash(token))

    found = verifier.verify(proof, method="POST", url=URL, access_token=token)

    assert found == DPoPProof(
        jkt=key.thumbprint(),  # joserfc's own RFC 7638 thumbprint agrees with ours
        jti=f"jti-{alg}",
        htm="POST",
        htu=URL,
        iat=NOW,
        ath=access_token_hash(token),
        nonce=None,
        alg=alg,
    )
    assert found.jkt == jwk_thumbprint(public_jwk(key))
    bound = verifier.verify(proof, method="POST", url=URL, expected_jkt=key.thumbprint())
    assert bound.jkt == key.thumbprint()


@pytest.mark.parametrize("alg", ["ES384", "PS256"])
def test_other_algorithms_work_once_allowed(clock: FrozenClock, alg: str) -> None:
    verifier = DPoPVerifier(algorithms=(*DEFAULT_ALGORITHMS, alg), clock=clock)
    assert verifier.verify(make_proof(alg), method="GET", url=URL).alg == alg
    assert refused(DPoPVerifier(clock=clock), make_proof(alg)).check is DPoPCheck.ALG_NOT_ALLOWED


def test_a_nonce_claim_is_returned(verifier: DPoPVerifier) -> None:
    assert verifier.verify(make_proof(nonce="n-1"), method="GET", url=URL).nonce == "n-1"


def test_optional_jwk_members_and_extra_claims_are_ignored(verifier: DPoPVerifier) -> None:
    key = client_key("ES256")
    jwk = {**public_jwk(key), "kid": "device-1", "alg": "ES256", "use": "sig"}
    found = verifier.verify(make_proof(jwk=jwk, extra="x"), method="GET", url=URL)
    assert found.jkt == key.thumbprint()


# -- the RFCs' own examples --------------------------------------------------------------------

RFC9449_JWK = {
    "kty": "EC",
    "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
    "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
    "crv": "P-256",
}
RFC9449_JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"  # section 6.1
RFC9449_HEADER = (
    "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0"
    "VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10"
    "NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19"
)
RFC9449_TOKEN_PROOF = (  # Figure 2: a token request
    RFC9449_HEADER + ".eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8v"
    "c2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8ig"
    "iMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg"
)
RFC9449_ACCESS_TOKEN = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
RFC9449_RESOURCE_PROOF = (  # Figure 13: a protected resource request, with ath
    RFC9449_HEADER + ".eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoiR0VUIiwiaHR1IjoiaHR0cHM6Ly9y"
    "ZXNvdXJjZS5leGFtcGxlLm9yZy9wcm90ZWN0ZWRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8y"
    "cjJaM0RaNTNFc05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9.2oW9RP35yRqzhrtNP86L-Ey71EOptxRimPPToA1"
    "plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA"
)


def test_rfc7638_thumbprint_example() -> None:
    # RFC 7638 section 3.1, with the optional members of the example ("alg", "kid") present
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6"
        "tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65Y"
        "GjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdk"
        "t-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_rfc9449_thumbprint_and_access_token_hash_examples() -> None:
    assert jwk_thumbprint(RFC9449_JWK) == RFC9449_JKT
    assert access_token_hash(RFC9449_ACCESS_TOKEN) == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"


def test_thumbprint_refuses_unknown_key_types() -> None:
    with pytest.raises(ValueError, match="kty"):
        jwk_thumbprint({"kty": "oct", "k": "c2VjcmV0"})
    with pytest.raises(TypeError, match="'y'"):
        jwk_thumbprint({"kty": "EC", "crv": "P-256", "x": "AA"})


def test_rfc9449_example_proofs_verify() -> None:
    token_proof = DPoPVerifier(clock=FrozenClock(1562262616)).verify(
        RFC9449_TOKEN_PROOF,
        method="POST",
        url="https://server.example.com/token",
        expected_jkt=RFC9449_JKT,
    )
    assert (token_proof.jti, token_proof.jkt) == ("-BwC3ESc6acc2lTc", RFC9449_JKT)

    resource_proof = DPoPVerifier(clock=FrozenClock(1562262618)).verify(
        RFC9449_RESOURCE_PROOF,
        method="GET",
        url="https://resource.example.org/protectedresource",
        access_token=RFC9449_ACCESS_TOKEN,
        expected_jkt=RFC9449_JKT,
    )
    assert resource_proof.ath == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"


# -- htu normalisation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("https://api.example/resource", "https://api.example/resource"),
        ("HTTPS://API.Example/resource", "https://api.example/resource"),  # scheme, host
        ("https://api.example:443/resource", "https://api.example/resource"),  # default port
        ("https://api.example:0443/resource", "https://api.example/resource"),
        ("https://api.example:/resource", "https://api.example/resource"),  # empty port
        ("http://api.example:80/x", "http://api.example/x"),
        ("http://api.example:443/x", "http://api.example:443/x"),  # not http's default
        ("https://api.example:8443/x", "https://api.example:8443/x"),
        ("https://api.example", "https://api.example/"),  # empty path
        ("https://api.example?q=1", "https://api.example/"),
        ("https://api.example/resource?q=1#f", "https://api.example/resource"),  # query, fragment
        ("https://api.example/resource#f?q", "https://api.example/resource"),
        ("https://api.example/%7euser/%2fa%2Fb", "https://api.example/~user/%2Fa%2Fb"),
        ("https://api.example/Resource", "https://api.example/Resource"),  # path case kept
        ("https://api.example/a/../b", "https://api.example/a/../b"),  # dot segments kept
        ("https://[2001:DB8::1]:443/x", "https://[2001:db8::1]/x"),
        ("https://[::1]:8443/x", "https://[::1]:8443/x"),
        ("https://127.0.0.1:443/", "https://127.0.0.1/"),
    ],
)
def test_htu_normalisation(given: str, normal: str) -> None:
    assert normalize_htu(given) == normal


@pytest.mark.parametrize(
    "url",
    [
        "",
        "/resource",
        "api.example/resource",
        "ftp://api.example/x",
        "javascript://api.example/x",
        "https://user@api.example/x",
        "https://user:pw@api.example/x",
        "https:///x",
        "https://api.example:99999/x",
        "https://api.example:8o/x",
        "https://api.example:1:2/x",
        "https://[::1/x",
        "https://[::1]x/x",
        "https://api example/x",
        "https://api.example/a b",
        "https://api.example/\x00",
        "https://bücher.example/x",
        "https://api.example/" + "a" * 5000,
        "https://api.example\\@evil.example/x",
        "https://api.example/100%",  # a "%" that starts no percent-encoding
        "https://api.example/%%37e",
        "https://api.example/%zz",
    ],
)
def test_urls_that_no_request_has_normalise_to_nothing(url: str) -> None:
    assert normalize_htu(url) is None


def test_htu_for_builds_the_normal_url_from_trusted_parts() -> None:
    assert htu_for("HTTPS", "API.example:443", "/resource") == URL
    assert htu_for("https", "api.example", "/resource?q=1") == URL
    assert htu_for("https", "api.example", "") == "https://api.example/"
    assert htu_for("https", "api.example", "/caf\u00e9 x") == "https://api.example/caf%C3%A9%20x"
    assert htu_for("http", "[::1]:8080", "/x") == "http://[::1]:8080/x"
    assert htu_for("https", "api.example", "/100%") == "https://api.example/100%25"
    assert htu_for("wss", "api.example:443", "/socket") == "https://api.example/socket"
    assert htu_for("WS", "api.example", "/socket") == "http://api.example/socket"


@pytest.mark.parametrize(
    ("scheme", "host", "path"),
    [
        ("https", "evil.example/x", "/resource"),  # a Host header moving text into the path
        ("https", "user@api.example", "/resource"),
        ("https", "api.example?", "/resource"),
        ("https", "api.example#", "/resource"),
        ("https", "", "/resource"),
        ("https", "api.example", "resource"),
        ("gopher", "api.example", "/resource"),
    ],
)
def test_htu_for_refuses_parts_that_form_no_url(scheme: str, host: str, path: str) -> None:
    with pytest.raises(DPoPRejected) as info:
        htu_for(scheme, host, path)
    assert (info.value.reason, info.value.check) == (TokenReason.DPOP_MISMATCH, DPoPCheck.URL)


def test_request_htu_believes_forwarding_headers_only_from_a_trusted_proxy() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    # Two trusted proxies that append: the edge's items, then the inner proxy's.
    forwarded: dict[str, Any] = {
        "forwarded_proto": "https, http",
        "forwarded_host": "api.example, inner",
        "forwarded_for": ["198.51.100.7, 10.0.0.7"],
    }
    behind = request_htu(
        proxies, peer="10.1.2.3", scheme="http", host="backend:8000", path="/x", **forwarded
    )
    assert behind == "https://api.example/x"
    # One proxy that appends: a client's own first items are not read.
    forged = {"forwarded_proto": "https, http", "forwarded_host": "evil.example, api.example"}
    assert request_htu(
        proxies, peer="10.1.2.3", scheme="http", host="backend:8000", path="/x", **forged
    ) == ("http://api.example/x")
    # the same headers from a client that is no proxy: the connection's own scheme and host
    direct = request_htu(
        proxies, peer="203.0.113.9", scheme="http", host="backend:8000", path="/x", **forwarded
    )
    assert direct == "http://backend:8000/x"
    alone = request_htu(
        TrustedProxies(),
        peer="10.1.2.3",
        scheme="http",
        host="backend:8000",
        path="/x",
        **forwarded,
    )
    assert alone == "http://backend:8000/x"


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "algorithms",
    [
        ("HS256",),
        ("EdDSA", "hs512"),
        ("none",),
        ("None",),
        (" NONE",),
        ("ES256K",),
        ("RSA-OAEP",),
        (),
        "ES256",
        (256,),
    ],
)
def test_algorithms_outside_the_asymmetric_set_are_refused_at_configuration(
    algorithms: Any,
) -> None:
    with pytest.raises(ConfigurationError) as info:
        DPoPVerifier(algorithms=algorithms)
    assert info.value.setting == "algorithms"


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("max_age", 0),
        ("max_age", 86400),
        ("max_age", float("nan")),
        ("max_age", True),
        ("leeway", -1),
        ("leeway", 301),
        ("max_bytes", 10),
        ("max_bytes", 10**6),
        ("max_jti_length", 0),
        ("clock", object()),
    ],
)
def test_bounds_are_checked_at_configuration(setting: str, value: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        DPoPVerifier(**{setting: value})
    assert info.value.setting == setting


def test_verifier_exposes_its_algorithms_and_replay_window() -> None:
    verifier = DPoPVerifier(algorithms=["ES256", "EdDSA", "ES256"], max_age=30, leeway=2)
    assert verifier.algorithms == ("ES256", "EdDSA")
    assert verifier.replay_ttl == 32.0
    assert "DPoPVerifier(algorithms=('ES256', 'EdDSA')" in repr(verifier)


def test_refusals_are_token_rejections_with_the_rfc9449_error_code(
    verifier: DPoPVerifier,
) -> None:
    error = refused(verifier, make_proof(htm="POST"))
    assert isinstance(error, TokenRejected)
    assert error.reason.error_code == "invalid_dpop_proof"
    assert error.reason.status == 401
    assert str(error) == "DPoP proof refused: method"  # names the check, never the proof


def test_without_joserfc_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "joserfc.jws", None)
    with pytest.raises(ConfigurationError, match=r"bastion\[jwt\]"):
        DPoPVerifier()


# -- totality: any input gives a refusal or a result, never another exception ------------------

URL_TEXT = st.one_of(
    st.text(max_size=60),
    st.builds(
        "".join,
        st.lists(
            st.sampled_from(
                [
                    "http",
                    "https",
                    "HTTPS",
                    "://",
                    "a.example",
                    "[::1]",
                    ":",
                    "443",
                    "80",
                    "/",
                    "%7e",
                    "%2f",
                    "%",
                    "%%37e",
                    "%3",
                    "?",
                    "#",
                    "@",
                    "x",
                    ".",
                    "..",
                    " ",
                    "\u00e9",
                ]
            ),
            max_size=12,
        ),
    ),
)


@settings(deadline=None, max_examples=300)
@given(URL_TEXT)
def test_normalize_htu_is_total_and_idempotent(url: str) -> None:
    normal = normalize_htu(url)
    if normal is not None:
        assert normalize_htu(normal) == normal
        assert "?" not in normal
        assert "#" not in normal


@settings(deadline=None, max_examples=300)
@given(st.text(alphabet='0123456789abcdefABCDEF-_.=+/ {}"', max_size=200))
def test_verify_refuses_any_text_with_a_dpop_refusal(text: str) -> None:
    with pytest.raises(DPoPRejected):
        DPoPVerifier(clock=FrozenClock(NOW)).verify(text, method="GET", url=URL)


@settings(deadline=None, max_examples=200)
@given(
    st.dictionaries(
        st.sampled_from(["typ", "alg", "jwk", "crit", "kid", "x5c"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.text(max_size=8),
            st.sampled_from(["dpop+jwt", "ES256", "EdDSA", "none", "HS256"]),
            st.dictionaries(
                st.sampled_from(["kty", "crv", "x", "y", "n", "e", "d"]),
                st.sampled_from(["EC", "OKP", "RSA", "P-256", "Ed25519", "AQAB", "", 1]),
                max_size=5,
            ),
        ),
        max_size=6,
    ),
    st.dictionaries(
        st.sampled_from(["jti", "htm", "htu", "iat", "ath", "nonce"]),
        st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=8)),
        max_size=6,
    ),
)
def test_verify_refuses_any_structured_garbage(
    header: dict[str, Any], claims: dict[str, Any]
) -> None:
    proof = f"{encode(header)}.{encode(claims)}.{b64(b'signature')}"
    with pytest.raises(DPoPRejected):
        DPoPVerifier(clock=FrozenClock(NOW)).verify(proof, method="GET", url=URL)
