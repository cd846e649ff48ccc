"""DPoP attack cases (issue 14) on the stateless checks: each asserts the exact refusal,
``reason`` and ``check``. Replay and server nonces are in test_tokens_dpop_replay.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import warnings
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OctKey, RSAKey
from tests.test_tokens_dpop import (
    DROP,
    NOW,
    URL,
    b64,
    claims_for,
    client_key,
    encode,
    make_proof,
    public_jwk,
    refused,
    sign,
)

from bastion.core.clock import FrozenClock
from bastion.core.tokens.dpop import (
    DPoPCheck,
    DPoPRejected,
    DPoPVerifier,
    access_token_hash,
)
from bastion.core.tokens.reasons import TokenReason, TokenRejected

INVALID, MISMATCH, REPLAYED = (
    TokenReason.DPOP_INVALID,
    TokenReason.DPOP_MISMATCH,
    TokenReason.DPOP_REPLAYED,
)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def verifier(clock: FrozenClock) -> DPoPVerifier:
    return DPoPVerifier(clock=clock)


def outcome(error: DPoPRejected) -> tuple[TokenReason, DPoPCheck]:
    return error.reason, error.check


# -- the request: method and URL ---------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "get", "HEAD", "GET "])
def test_wrong_method(verifier: DPoPVerifier, method: str) -> None:
    assert outcome(refused(verifier, make_proof(), method=method)) == (MISMATCH, DPoPCheck.METHOD)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.example/other",  # path
        "https://api.example/resource/",
        "https://api.example/RESOURCE",
        "https://api.example/resource%2F",
        "https://evil.example/resource",  # host
        "https://api.example.evil/resource",
        "https://sub.api.example/resource",
        "http://api.example/resource",  # scheme
        "https://api.example:8443/resource",  # port
        "http://api.example:443/resource",
        "not a url",
    ],
)
def test_wrong_url(verifier: DPoPVerifier, url: str) -> None:
    assert outcome(refused(verifier, make_proof(), url=url)) == (MISMATCH, DPoPCheck.URL)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.example/resource?q=1",  # query ignored
        "https://api.example/resource#top",  # fragment ignored
        "https://API.EXAMPLE:443/resource?a=b#c",
        "HTTPS://api.example/%72esource",  # %72 is "r": unreserved, decoded
    ],
)
def test_query_fragment_and_equivalent_spellings_are_the_same_url(
    verifier: DPoPVerifier, url: str
) -> None:
    assert verifier.verify(make_proof(), method="GET", url=url).htu == URL


@pytest.mark.parametrize(
    "htu",
    [
        "https://api.example/other",
        "https://evil.example/resource",
        "http://api.example/resource",
        "https://api.example:444/resource",
        "https://user@api.example/resource",
        "/resource",
        "",
    ],
)
def test_a_proof_for_another_url(verifier: DPoPVerifier, htu: str) -> None:
    assert outcome(refused(verifier, make_proof(htu=htu))) == (MISMATCH, DPoPCheck.URL)


def test_a_proof_htu_with_query_and_fragment_matches_its_path(verifier: DPoPVerifier) -> None:
    assert verifier.verify(make_proof(htu=URL + "?q#f"), method="GET", url=URL).htu == URL


# -- the key -----------------------------------------------------------------------------------


def test_a_proof_by_another_key_than_the_token_is_bound_to(verifier: DPoPVerifier) -> None:
    bound_to = client_key("ES256", 1).thumbprint()
    error = refused(verifier, make_proof(), expected_jkt=bound_to)
    assert outcome(error) == (MISMATCH, DPoPCheck.KEY_MISMATCH)
    for wrong in ("", bound_to[:-1], bound_to + "A", "\u00e9" * 43):
        assert refused(verifier, make_proof(), expected_jkt=wrong).check is DPoPCheck.KEY_MISMATCH


def test_a_jwk_header_naming_one_key_and_a_signature_by_another(verifier: DPoPVerifier) -> None:
    victim = public_jwk(client_key("ES256", 1))
    proof = make_proof(jwk=victim)  # signed by client_key("ES256"), claims victim's key
    assert outcome(refused(verifier, proof)) == (INVALID, DPoPCheck.BAD_SIGNATURE)


@pytest.mark.parametrize(
    ("alg", "key"),
    [
        ("ES256", ECKey.generate_key("P-256")),
        ("RS256", RSAKey.generate_key(2048)),
        ("EdDSA", None),
    ],
)
def test_private_key_in_jwk(verifier: DPoPVerifier, alg: str, key: Any) -> None:
    key = key or client_key("EdDSA")
    private = dict(key.as_dict(private=True))
    assert "d" in private
    error = refused(verifier, make_proof(alg, key=key, jwk=private))
    assert outcome(error) == (INVALID, DPoPCheck.PRIVATE_KEY)


@pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi", "oth", "k"])
def test_every_private_member_is_refused(verifier: DPoPVerifier, member: str) -> None:
    jwk = {**public_jwk(client_key("RS256")), member: "AQAB"}
    error = refused(verifier, make_proof("RS256", jwk=jwk))
    assert outcome(error) == (INVALID, DPoPCheck.PRIVATE_KEY)


@pytest.mark.parametrize(
    ("alg", "other"),
    [("ES256", "EdDSA"), ("RS256", "ES256"), ("EdDSA", "RS256"), ("ES256", "ES384")],
)
def test_a_key_of_another_type_than_alg(verifier: DPoPVerifier, alg: str, other: str) -> None:
    proof = make_proof(alg, jwk=public_jwk(client_key(other)))
    assert outcome(refused(verifier, proof)) == (INVALID, DPoPCheck.KEY_TYPE)


def test_rsa_under_2048_bits(verifier: DPoPVerifier) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = weak.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # joserfc warns: the point here
        key = RSAKey.import_key(pem)
        proof = make_proof("RS256", key=key)
    assert outcome(refused(verifier, proof)) == (INVALID, DPoPCheck.WEAK_KEY)


def test_non_canonical_and_broken_keys(verifier: DPoPVerifier) -> None:
    ec = public_jwk(client_key("ES256"))
    rsa_jwk = public_jwk(client_key("RS256"))
    bad = [
        {**ec, "x": ec["x"] + "="},  # padding
        {**ec, "x": b64(b"\x01" * 31)},  # short coordinate
        {**ec, "x": b64(b"\x00" + base64.urlsafe_b64decode(ec["x"] + "=")[:-1] + b"\x00")[:43]},
        {**ec, "y": None},
        {k: v for k, v in ec.items() if k != "y"},
        {**ec, "use": "enc"},
        {**rsa_jwk, "n": b64(b"\x00" + base64.urlsafe_b64decode(rsa_jwk["n"] + "=="))},
        {**rsa_jwk, "e": 65537},
        "not an object",
        None,
    ]
    for jwk in bad:
        alg = "RS256" if isinstance(jwk, dict) and jwk.get("kty") == "RSA" else "ES256"
        header = {"jwk": jwk} if jwk is not None else {"jwk": DROP}
        proof = make_proof(alg, header=header)
        assert outcome(refused(verifier, proof)) == (INVALID, DPoPCheck.BAD_KEY), jwk


def test_a_point_off_the_curve(verifier: DPoPVerifier) -> None:
    ec = public_jwk(client_key("ES256"))
    y = bytearray(base64.urlsafe_b64decode(ec["y"] + "="))
    y[-1] ^= 1
    proof = make_proof(jwk={**ec, "y": b64(bytes(y))})
    assert outcome(refused(verifier, proof)) == (INVALID, DPoPCheck.BAD_KEY)


@pytest.mark.parametrize("name", ["jku", "x5u", "x5c", "x5t", "x5t#S256"])
def test_other_key_references_beside_jwk(verifier: DPoPVerifier, name: str) -> None:
    proof = make_proof(header={name: "https://evil.example/key"})
    assert outcome(refused(verifier, proof)) == (INVALID, DPoPCheck.EMBEDDED_KEY)


def test_unknown_crit(verifier: DPoPVerifier) -> None:
    proof = make_proof(header={"crit": ["exp"], "exp": 1})
    assert outcome(refused(verifier, proof)) == (INVALID, DPoPCheck.UNKNOWN_CRIT)


# -- the algorithm -----------------------------------------------------------------------------


def test_hs256_proof(verifier: DPoPVerifier) -> None:
    secret = OctKey.import_key(b"a shared secret of at least thirty-two bytes")
    header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct"}}
    proof = sign("HS256", secret, header, claims_for())
    assert outcome(refused(verifier, proof)) == (INVALID, DPoPCheck.ALG_NOT_ALLOWED)


def test_hs256_signed_with_the_public_key_as_secret(verifier: DPoPVerifier) -> None:
    # the key-confusion attack: the public key's PEM (or JWK) used as an HMAC secret
    key = client_key("RS256")
    jwk = public_jwk(key)
    header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": jwk}
    for secret in (key.as_pem(private=False), json.dumps(jwk).encode()):
        signing_input = f"{encode(header)}.{encode(claims_for())}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        proof = f"{signing_input}.{b64(mac)}"
        assert outcome(refused(verifier, proof)) == (INVALID, DPoPCheck.ALG_NOT_ALLOWED)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", " none", "none "])
@pytest.mark.parametrize("signature", ["", "c2lnbmF0dXJl"])
def test_alg_none_in_every_spelling(verifier: DPoPVerifier, alg: str, signature: str) -> None:
    header = {"typ": "dpop+jwt", "alg": alg, "jwk": public_jwk(client_key("ES256"))}
    proof = f"{encode(header)}.{encode(claims_for())}.{signature}"
    assert outcome(refused(verifier, proof)) == (INVALID, DPoPCheck.ALG_NONE)


@pytest.mark.parametrize("alg", [None, 256, "", "ES256K", "RSA-OAEP", "es256"])
def test_alg_missing_or_outside_the_allow_list(verifier: DPoPVerifier, alg: Any) -> None:
    header = {"typ": "dpop+jwt", "alg": alg, "jwk": public_jwk(client_key("ES256"))}
    proof = sign("ES256", client_key("ES256"), header, claims_for())
    assert outcome(refused(verifier, proof)) == (INVALID, DPoPCheck.ALG_NOT_ALLOWED)


def test_a_tampered_payload_or_a_der_signature(verifier: DPoPVerifier) -> None:
    header_b64, _, signature_b64 = make_proof().split(".")
    tampered = f"{header_b64}.{encode(claims_for(htm='GET', jti='other'))}.{signature_b64}"
    assert outcome(refused(verifier, tampered)) == (INVALID, DPoPCheck.BAD_SIGNATURE)
    assert outcome(refused(verifier, f"{header_b64}.{encode(claims_for())}.")) == (
        INVALID,
        DPoPCheck.BAD_SIGNATURE,
    )
    key = client_key("ES256")
    signing_input = f"{header_b64}.{encode(claims_for())}"
    der = key.private_key.sign(signing_input.encode(), _ecdsa_sha256())
    assert outcome(refused(verifier, f"{signing_input}.{b64(der)}")) == (
        INVALID,
        DPoPCheck.BAD_SIGNATURE,
    )


def _ecdsa_sha256() -> Any:
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    return ec.ECDSA(hashes.SHA256())


# -- typing: a proof is not an access token, and an access token is not a proof ---------------


@pytest.mark.parametrize(
    "typ", ["at+jwt", "JWT", "jwt", "DPOP+JWT", "application/dpop+jwt", "dpop+jwt ", None, DROP]
)
def test_a_token_of_another_type_is_no_proof(verifier: DPoPVerifier, typ: Any) -> None:
    assert outcome(refused(verifier, make_proof(header={"typ": typ}))) == (
        INVALID,
        DPoPCheck.WRONG_TYPE,
    )


def test_an_access_token_presented_as_a_proof(verifier: DPoPVerifier) -> None:
    server_key = client_key("ES256", 7)
    access_token = sign(
        "ES256",
        server_key,
        {"alg": "ES256", "kid": "server-1", "typ": "at+jwt"},
        {"iss": "https://issuer.example", "sub": "u1", "aud": "api", "jti": "t1", "iat": NOW},
    )
    assert outcome(refused(verifier, access_token)) == (INVALID, DPoPCheck.WRONG_TYPE)


def test_a_proof_presented_as_an_access_token() -> None:
    jwt = pytest.importorskip("bastion.core.tokens.jwt", reason="helper jwt's codec not merged")
    signing = jwt.JWTKey.generate("ES256", kid="server-1")
    codec = jwt.JWTCodec(jwt.JWTKeySet(signing), issuer="https://issuer.example")
    # a client's proof: no kid of the server's set (it names its own key in jwk)
    with pytest.raises(TokenRejected) as info:
        codec.decode(make_proof(), typ="at+jwt", audience="api")
    assert info.value.reason in {TokenReason.UNKNOWN_KID, TokenReason.EMBEDDED_KEY}
    # even signed with the server's own key, a dpop+jwt is not an access token
    forged = codec.encode({"sub": "u1", "aud": "api", "exp": NOW + 60}, typ="dpop+jwt")
    with pytest.raises(TokenRejected) as info:
        codec.decode(forged, typ="at+jwt", audience="api")
    assert info.value.reason is TokenReason.WRONG_TYPE


# -- claims ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["jti", "htm", "htu", "iat"])
def test_missing_claims(verifier: DPoPVerifier, name: str) -> None:
    proof = make_proof(**{name: DROP})
    assert outcome(refused(verifier, proof)) == (INVALID, DPoPCheck.MISSING_CLAIM)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("iat", "1800000000"),
        ("iat", True),
        ("iat", None),
        ("iat", [NOW]),
        ("jti", ""),
        ("jti", 42),
        ("jti", "x" * 257),
        ("htm", ["GET"]),
        ("htu", {"url": URL}),
        ("ath", 1),
        ("nonce", ["n"]),
    ],
)
def test_claims_of_the_wrong_type(verifier: DPoPVerifier, name: str, value: Any) -> None:
    proof = make_proof(**{name: value})
    assert outcome(refused(verifier, proof)) == (INVALID, DPoPCheck.BAD_CLAIM)


def test_an_infinite_iat(verifier: DPoPVerifier) -> None:
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(client_key("ES256"))}
    claims = json.dumps(claims_for()).replace(json.dumps(NOW), "1e400")  # parses as inf
    proof = sign("ES256", client_key("ES256"), header, claims)
    assert outcome(refused(verifier, proof)) == (INVALID, DPoPCheck.BAD_CLAIM)


def test_iat_at_the_edges(verifier: DPoPVerifier) -> None:
    # max_age 60 s back, leeway 5 s ahead, on a fixed clock
    for iat in (NOW - 60, NOW, NOW + 5, int(NOW) - 60):
        assert verifier.verify(make_proof(iat=iat), method="GET", url=URL).iat == iat
    assert outcome(refused(verifier, make_proof(iat=NOW - 60.001))) == (
        MISMATCH,
        DPoPCheck.EXPIRED,
    )
    assert outcome(refused(verifier, make_proof(iat=0))) == (MISMATCH, DPoPCheck.EXPIRED)
    assert outcome(refused(verifier, make_proof(iat=NOW + 5.001))) == (
        MISMATCH,
        DPoPCheck.ISSUED_IN_FUTURE,
    )
    assert outcome(refused(verifier, make_proof(iat=NOW + 10**9))) == (
        MISMATCH,
        DPoPCheck.ISSUED_IN_FUTURE,
    )


def test_an_accepted_proof_expires_as_the_clock_moves(
    verifier: DPoPVerifier, clock: FrozenClock
) -> None:
    proof = make_proof()
    verifier.verify(proof, method="GET", url=URL)
    clock.advance(60)
    verifier.verify(proof, method="GET", url=URL)
    clock.advance(0.5)
    assert outcome(refused(verifier, proof)) == (MISMATCH, DPoPCheck.EXPIRED)


def test_ath_mismatch_and_missing(verifier: DPoPVerifier) -> None:
    token = "the-access-token"
    good = make_proof(ath=access_token_hash(token))
    verifier.verify(good, method="GET", url=URL, access_token=token)

    assert outcome(refused(verifier, good, access_token="another-token")) == (
        MISMATCH,
        DPoPCheck.ATH_MISMATCH,
    )
    assert outcome(refused(verifier, good, access_token="caf\u00e9")) == (
        MISMATCH,
        DPoPCheck.ATH_MISMATCH,
    )
    wrong_encoding = make_proof(ath=access_token_hash(token) + "=")
    assert refused(verifier, wrong_encoding, access_token=token).check is DPoPCheck.ATH_MISMATCH
    assert outcome(refused(verifier, make_proof(), access_token=token)) == (
        MISMATCH,
        DPoPCheck.ATH_MISSING,
    )


# -- the encoding ------------------------------------------------------------------------------


def test_an_oversized_proof_is_refused_before_any_decoding(verifier: DPoPVerifier) -> None:
    # garbage over the cap says TOO_LARGE, not MALFORMED: the size came first
    assert outcome(refused(verifier, "!" * 8193)) == (INVALID, DPoPCheck.TOO_LARGE)
    assert outcome(refused(verifier, "!" * 8192)) == (INVALID, DPoPCheck.MALFORMED)
    padded = make_proof(padding="p" * 8192)
    assert outcome(refused(verifier, padded)) == (INVALID, DPoPCheck.TOO_LARGE)
    small = DPoPVerifier(max_bytes=512, clock=FrozenClock(NOW))
    assert outcome(refused(small, make_proof("RS256"))) == (INVALID, DPoPCheck.TOO_LARGE)


def test_duplicate_members(verifier: DPoPVerifier) -> None:
    key = client_key("ES256")
    jwk = json.dumps(public_jwk(key))
    header = '{"typ":"dpop+jwt","alg":"none","alg":"ES256","jwk":%s}' % jwk  # noqa: UP031
    payload = json.dumps(claims_for())
    cases = [
        sign("ES256", key, header, payload),
        sign(
            "ES256",
            key,
            {"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(key)},
            payload[:-1] + ', "htu": "https://evil.example/"}',
        ),
        sign(
            "ES256",
            key,
            '{"typ":"dpop+jwt","alg":"ES256","jwk":%s}' % jwk.replace('"x":', '"x":"A","x":'),  # noqa: UP031
            payload,
        ),
    ]
    for proof in cases:
        assert outcome(refused(verifier, proof)) == (INVALID, DPoPCheck.DUPLICATE_KEY)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda h, p, s: f"{h}=.{p}.{s}",  # padding
        lambda h, p, s: f"{h}.{p}.{s}==",
        lambda h, p, s: f"{h}.{p[:-1]}+.{s}",  # the base64 alphabet, not base64url
        lambda h, p, s: f"{h}.{p[:-1]}/.{s}",
        lambda h, p, s: f"{h}.{p}.{s[:-1]}{_flip_low_bit(s[-1])}",  # stray trailing bits
        lambda h, p, s: f"{h} .{p}.{s}",  # whitespace
        lambda h, p, s: f"{h}.{p}.\t{s}",
        lambda h, p, s: f"{h}.{p}.AAAAA",  # a length no base64 has (4n + 1)
    ],
)
def test_non_canonical_base64url(verifier: DPoPVerifier, mangle: Any) -> None:
    header_b64, payload_b64, signature_b64 = make_proof().split(".")
    assert len(signature_b64) == 86  # 64 bytes: the last character carries 4 unused bits
    verifier.verify(f"{header_b64}.{payload_b64}.{signature_b64}", method="GET", url=URL)
    proof = mangle(header_b64, payload_b64, signature_b64)
    assert outcome(refused(verifier, proof)) == (INVALID, DPoPCheck.NOT_CANONICAL)


def _flip_low_bit(char: str) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return alphabet[alphabet.index(char) ^ 1]


NOT_AN_OBJECT = ".".join((b64(b"[1]"), b64(b"{}"), "c2ln"))


@pytest.mark.parametrize(
    "proof",
    [
        "",
        "a.b",
        "a.b.c.d.e",  # a JWE, or a nested token
        "..",
        NOT_AN_OBJECT,  # header not an object
        ".".join((b64(b'{"typ":'), b64(b"{}"), "c2ln")),  # not JSON
        ".".join((b64(bytes([0xFF])), b64(b"{}"), "c2ln")),  # not UTF-8
        ".".join((b64(b'{"alg":NaN}'), b64(b"{}"), "c2ln")),  # not JSON's number
        "\u00e9.b.c",
        b"a.b.c",
        None,
    ],
)
def test_malformed_proofs(verifier: DPoPVerifier, proof: Any) -> None:
    assert outcome(refused(verifier, proof)) == (INVALID, DPoPCheck.MALFORMED)


def test_a_payload_that_is_no_object(verifier: DPoPVerifier) -> None:
    key = client_key("ES256")
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(key)}
    assert outcome(refused(verifier, sign("ES256", key, header, "[]"))) == (
        INVALID,
        DPoPCheck.MALFORMED,
    )
