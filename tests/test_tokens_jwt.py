"""JWT keys, key sets, JWKS and the codec: round trips, rotation, configuration errors.

The attacks (alg none, key confusion, embedded keys, encodings, claim edges) are in
test_tokens_jwt_attacks.py.
"""

from __future__ import annotations

import copy
import importlib
import json
import pickle
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from bastion.core.clock import FrozenClock
from bastion.core.keys import SecretKey
from bastion.core.tokens import JWTCodec, JWTKey, JWTKeySet, TokenReason, TokenRejected
from bastion.core.tokens.jwk import ALGORITHMS
from bastion.core.tokens.jwt import Claims
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from bastion.core.tokens.jwk import Algorithm

ISSUER = "https://issuer.example"
NOW = 1_700_000_000.0
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture(scope="module")
def keys() -> dict[str, JWTKey]:
    """One generated key per algorithm (RSA generation is slow: once per module)."""
    return {alg: JWTKey.generate(alg, kid=f"{alg.lower()}-1") for alg in sorted(ALGORITHMS)}  # type: ignore[arg-type]


def _codec(key: JWTKey, clock: FrozenClock, **options: Any) -> JWTCodec:
    return JWTCodec(JWTKeySet(key), issuer=ISSUER, clock=clock, **options)


def _pem(private: Any, *, public: bool = False) -> bytes:
    if public:
        return private.public_key().public_bytes(  # type: ignore[no-any-return]
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return private.private_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("alg", sorted(ALGORITHMS))
def test_every_algorithm_round_trips(alg: str, keys: dict[str, JWTKey], clock: FrozenClock) -> None:
    codec = _codec(keys[alg], clock)
    token = codec.encode(
        {"sub": "user-1", "aud": "api", "scope": "read"}, typ="at+jwt", expires_in=600
    )
    claims = codec.decode(token, typ="at+jwt", audience="api")
    assert isinstance(claims, Claims)
    assert claims.subject == "user-1"
    assert claims.issuer == ISSUER
    assert claims.audience == ("api",)
    assert claims.issued_at == NOW
    assert claims.expires_at == NOW + 600
    assert claims.not_before is None
    assert claims.kid == f"{alg.lower()}-1"
    assert claims.typ == "at+jwt"
    assert len(claims.token_id) >= 22  # 128 random bits, base64url
    assert claims["scope"] == "read"
    assert dict(claims) == dict(claims.raw)
    assert set(claims) == {"sub", "aud", "scope", "iss", "iat", "exp", "jti"}
    header = json.loads(pyjwt.utils.base64url_decode(token.split(".")[0]))
    assert header == {"alg": alg, "kid": f"{alg.lower()}-1", "typ": "at+jwt"}


def test_bytes_and_bytearray_decode_like_text(keys: dict[str, JWTKey], clock: FrozenClock) -> None:
    codec = _codec(keys["HS256"], clock)
    token = codec.encode({"sub": "u", "aud": "api"}, typ="at+jwt", expires_in=60)
    for form in (token, token.encode(), bytearray(token.encode())):
        assert codec.decode(form, typ="at+jwt", audience="api").subject == "u"


def test_every_jti_is_fresh(keys: dict[str, JWTKey], clock: FrozenClock) -> None:
    codec = _codec(keys["HS256"], clock)
    ids = {
        codec.decode(
            codec.encode({"sub": "u", "aud": "api"}, typ="at+jwt", expires_in=60),
            typ="at+jwt",
            audience="api",
        ).token_id
        for _ in range(50)
    }
    assert len(ids) == 50


def test_given_claims_are_kept(keys: dict[str, JWTKey], clock: FrozenClock) -> None:
    codec = _codec(keys["EdDSA"], clock)
    token = codec.encode(
        {
            "sub": "u",
            "aud": ["api", "admin"],
            "jti": "fixed-id",
            "iat": NOW - 10,
            "exp": NOW + 5,
            "nbf": NOW - 10,
        },
        typ="at+jwt",
    )
    claims = codec.decode(token, typ="at+jwt", audience="admin")
    assert claims.token_id == "fixed-id"
    assert claims.audience == ("api", "admin")
    assert (claims.issued_at, claims.expires_at, claims.not_before) == (NOW - 10, NOW + 5, NOW - 10)


@pytest.mark.parametrize("alg", ["HS256", "EdDSA", "ES256", "RS256", "PS256", "ES384"])
def test_pyjwt_agrees_both_ways(alg: str, keys: dict[str, JWTKey], clock: FrozenClock) -> None:
    """Interoperability: another implementation verifies our tokens, and we verify its."""
    key = keys[alg]
    codec = _codec(key, clock)
    secret_or_public: Any = key.key.raw_value if alg == "HS256" else key.key.public_key
    signer: Any = key.key.raw_value if alg == "HS256" else key.key.private_key
    ours = codec.encode({"sub": "u", "aud": "api"}, typ="at+jwt", expires_in=60)
    decoded = pyjwt.decode(
        ours, secret_or_public, algorithms=[alg], audience="api", options={"verify_exp": False}
    )
    assert decoded["sub"] == "u"
    theirs = pyjwt.encode(
        {
            "sub": "u",
            "aud": "api",
            "iss": ISSUER,
            "iat": int(NOW),
            "exp": int(NOW) + 60,
            "jti": "j",
        },
        signer,
        algorithm=alg,
        headers={"kid": key.kid, "typ": "at+jwt"},
    )
    assert codec.decode(theirs, typ="at+jwt", audience="api").token_id == "j"


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "AT+JWT", "Application/At+Jwt"])
def test_typ_compares_as_a_media_type(
    typ: str, keys: dict[str, JWTKey], clock: FrozenClock
) -> None:
    """RFC 7515 4.1.9 / RFC 8725 3.11: case-insensitive, 'application/' may be omitted."""
    codec = _codec(keys["HS256"], clock)
    token = codec.encode({"sub": "u", "aud": "api"}, typ=typ, expires_in=60)
    assert codec.decode(token, typ="at+jwt", audience="api").typ == "at+jwt"
    assert codec.decode(token, typ="application/at+jwt", audience="api").subject == "u"


def test_required_adds_claims_but_never_drops_the_core_four(
    keys: dict[str, JWTKey], clock: FrozenClock
) -> None:
    codec = _codec(keys["HS256"], clock)
    token = codec.encode({"aud": "api"}, typ="at+jwt", expires_in=60)
    with pytest.raises(TokenRejected) as caught:
        codec.decode(token, typ="at+jwt", audience="api")  # sub is required by default
    assert caught.value.reason is TokenReason.MISSING_CLAIM
    claims = codec.decode(token, typ="at+jwt", audience="api", required=("jti",))
    assert claims.subject == ""
    with pytest.raises(TokenRejected) as caught:
        codec.decode(token, typ="at+jwt", audience="api", required=("jti", "scope"))
    assert caught.value.reason is TokenReason.MISSING_CLAIM


# -- rotation and key sets -----------------------------------------------------------------


def test_rotation_old_kid_verifies_until_retired(clock: FrozenClock) -> None:
    old = JWTKey.generate("EdDSA", kid="2026-01")
    new = JWTKey.generate("EdDSA", kid="2026-02")
    before = JWTCodec(JWTKeySet(old), issuer=ISSUER, clock=clock)
    old_token = before.encode({"sub": "u", "aud": "api"}, typ="at+jwt", expires_in=600)

    rotated_keys = before.keys.rotated(new)
    assert rotated_keys.signing is new
    assert rotated_keys.get("2026-01") is old
    after = before.with_keys(rotated_keys)
    assert after.decode(old_token, typ="at+jwt", audience="api").kid == "2026-01"
    new_token = after.encode({"sub": "u", "aud": "api"}, typ="at+jwt", expires_in=600)
    assert after.decode(new_token, typ="at+jwt", audience="api").kid == "2026-02"
    with pytest.raises(TokenRejected) as caught:
        before.decode(new_token, typ="at+jwt", audience="api")  # a process still on the old set
    assert caught.value.reason is TokenReason.UNKNOWN_KID

    retired = after.with_keys(rotated_keys.retired("2026-01"))
    with pytest.raises(TokenRejected) as caught:
        retired.decode(old_token, typ="at+jwt", audience="api")
    assert caught.value.reason is TokenReason.UNKNOWN_KID
    assert retired.decode(new_token, typ="at+jwt", audience="api").kid == "2026-02"
    assert [key.kid for key in retired.keys] == ["2026-02"]


def test_rotation_keeps_every_verifying_key(keys: dict[str, JWTKey]) -> None:
    first = JWTKeySet(keys["EdDSA"], verifying=[keys["ES256"]])
    second = first.rotated(keys["RS256"])
    assert second.signing is keys["RS256"]
    assert {key.kid for key in second} == {"eddsa-1", "es256-1", "rs256-1"}
    assert first.signing is keys["EdDSA"]  # the original set is unchanged
    assert len(first) == 2
    assert "es256-1" in second
    assert 3 not in second


def test_a_key_set_is_immutable(keys: dict[str, JWTKey]) -> None:
    key_set = JWTKeySet(keys["EdDSA"])
    with pytest.raises(AttributeError):
        key_set.signing = keys["ES256"]  # type: ignore[misc]
    with pytest.raises(AttributeError):
        keys["EdDSA"].alg = "HS256"  # type: ignore[misc]


def test_a_verify_only_set_cannot_encode(keys: dict[str, JWTKey], clock: FrozenClock) -> None:
    signer = _codec(keys["ES256"], clock)
    token = signer.encode({"sub": "u", "aud": "api"}, typ="at+jwt", expires_in=60)
    verifier = JWTCodec(
        JWTKeySet(None, verifying=[keys["ES256"].public()]), issuer=ISSUER, clock=clock
    )
    assert verifier.decode(token, typ="at+jwt", audience="api").subject == "u"
    with pytest.raises(ConfigurationError, match="verify-only"):
        verifier.encode({"sub": "u", "aud": "api"}, typ="at+jwt", expires_in=60)


# -- JWKS, public halves, thumbprints ------------------------------------------------------


def test_jwks_lists_public_members_only(keys: dict[str, JWTKey]) -> None:
    key_set = JWTKeySet(
        keys["EdDSA"], verifying=[keys["ES256"], keys["RS256"], keys["HS256"], keys["PS256"]]
    )
    document = key_set.jwks()
    assert set(document) == {"keys"}
    listed = document["keys"]
    assert isinstance(listed, list)
    assert {entry["kid"] for entry in listed} == {"eddsa-1", "es256-1", "rs256-1", "ps256-1"}
    for entry in listed:
        assert entry["use"] == "sig"
        assert entry["alg"] == keys[entry["alg"]].alg
        assert not PRIVATE_MEMBERS & set(entry), entry
    by_kid = {entry["kid"]: entry for entry in listed}
    assert set(by_kid["eddsa-1"]) == {"kty", "crv", "x", "kid", "alg", "use"}
    assert set(by_kid["es256-1"]) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    assert set(by_kid["rs256-1"]) == {"kty", "n", "e", "kid", "alg", "use"}
    # no secret in any form: the HS256 secret's base64url text appears nowhere
    secret_text = pyjwt.utils.base64url_encode(keys["HS256"].key.raw_value).decode()
    assert secret_text not in json.dumps(document)
    json.dumps(document)  # a plain JSON document


def test_a_resource_server_verifies_with_the_published_jwks(
    keys: dict[str, JWTKey], clock: FrozenClock
) -> None:
    issuer_set = JWTKeySet(keys["ES256"], verifying=[keys["EdDSA"]])
    document = json.loads(json.dumps(issuer_set.jwks()))
    resource = JWTCodec(JWTKeySet.from_jwks(document), issuer=ISSUER, clock=clock)
    token = JWTCodec(issuer_set, issuer=ISSUER, clock=clock).encode(
        {"sub": "u", "aud": "api"}, typ="at+jwt", expires_in=60
    )
    assert resource.decode(token, typ="at+jwt", audience="api").kid == "es256-1"
    assert resource.keys.signing is None


def test_from_jwks_refuses_private_material(keys: dict[str, JWTKey]) -> None:
    private = dict(keys["EdDSA"].key.as_dict(private=True), kid="k", alg="EdDSA")
    with pytest.raises(ConfigurationError, match="private"):
        JWTKeySet.from_jwks({"keys": [private]})
    secret = dict(keys["HS256"].key.as_dict(), kid="s", alg="HS256")
    with pytest.raises(ConfigurationError, match="private"):
        JWTKeySet.from_jwks({"keys": [secret]})
    with pytest.raises(ConfigurationError, match="keys"):
        JWTKeySet.from_jwks({"keys": "nope"})


def test_from_jwk_round_trips_private_and_public(
    keys: dict[str, JWTKey], clock: FrozenClock
) -> None:
    for alg in ("EdDSA", "ES256", "RS256"):
        private = JWTKey.from_jwk(dict(keys[alg].key.as_dict(private=True), kid="x", alg=alg))
        assert private.can_sign
        public = JWTKey.from_jwk(keys[alg].public_jwk())
        assert not public.can_sign
        token = _codec(private, clock).encode({"sub": "u", "aud": "api"}, typ="t", expires_in=9)
        codec = JWTCodec(JWTKeySet(None, verifying=[public]), issuer=ISSUER, clock=clock)
        with pytest.raises(TokenRejected) as caught:  # kid "x" is not the public key's kid
            codec.decode(token, typ="t", audience="api")
        assert caught.value.reason is TokenReason.UNKNOWN_KID


def test_public_half(keys: dict[str, JWTKey]) -> None:
    public = keys["EdDSA"].public()
    assert (public.kid, public.alg, public.can_sign) == ("eddsa-1", "EdDSA", False)
    assert public.public() is public
    assert public.thumbprint() == keys["EdDSA"].thumbprint()
    with pytest.raises(ConfigurationError, match="public and cannot sign"):
        public.sign(b"x")
    with pytest.raises(ConfigurationError, match="no public half"):
        keys["HS256"].public()
    with pytest.raises(ConfigurationError, match="never published"):
        keys["HS256"].public_jwk()
    with pytest.raises(ConfigurationError, match="thumbprint"):
        keys["HS256"].thumbprint()


def test_thumbprint_matches_rfc_7638() -> None:
    # RFC 7638 section 3.1
    key = JWTKey.from_jwk(
        {
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L"
            "6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-"
            "65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNL"
            "yrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awap"
            "JzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29",
        }
    )
    assert key.thumbprint() == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_generated_kids_default_to_thumbprints() -> None:
    key = JWTKey.generate("ES256")
    assert key.kid == key.thumbprint()
    secret = JWTKey.generate("HS256")
    assert len(secret.kid) >= 16  # random, not derived from the secret


def test_from_pem_private_public_and_encrypted(clock: FrozenClock) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    signer = JWTKey.from_pem(_pem(private), alg="ES256", kid="ec")
    verifier = JWTKey.from_pem(_pem(private, public=True).decode(), alg="ES256", kid="ec")
    assert signer.can_sign
    assert not verifier.can_sign
    token = _codec(signer, clock).encode({"sub": "u", "aud": "api"}, typ="t", expires_in=9)
    codec = JWTCodec(JWTKeySet(None, verifying=[verifier]), issuer=ISSUER, clock=clock)
    assert codec.decode(token, typ="t", audience="api").kid == "ec"
    locked = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pass"),
    )
    assert JWTKey.from_pem(locked, alg="ES256", password=b"pass").kid == signer.thumbprint()
    with pytest.raises(ConfigurationError, match="pem"):
        JWTKey.from_pem(locked, alg="ES256", password=b"wrong")


def test_from_secret_accepts_secret_keys(clock: FrozenClock) -> None:
    secret = SecretKey.generate()
    key = JWTKey.from_secret(secret, kid="hs")
    same = JWTKey.from_secret(secret.reveal(), kid="hs")
    token = _codec(key, clock).encode({"sub": "u", "aud": "api"}, typ="t", expires_in=9)
    assert _codec(same, clock).decode(token, typ="t", audience="api").kid == "hs"


# -- configuration errors ------------------------------------------------------------------


def test_short_hmac_secrets_are_refused_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="at least 32") as caught:
        JWTKey.from_secret(b"x" * 31, kid="k")
    assert caught.value.setting == "secret"
    JWTKey.from_secret(b"x" * 32, kid="k")
    short_jwk = {
        "kty": "oct",
        "k": pyjwt.utils.base64url_encode(b"y" * 31).decode(),
        "kid": "k",
        "alg": "HS256",
    }
    with pytest.raises(ConfigurationError, match="at least 32"):
        JWTKey.from_jwk(short_jwk)
    with pytest.raises(ConfigurationError, match="bytes or a SecretKey"):
        JWTKey.from_secret("x" * 40, kid="k")  # type: ignore[arg-type]


def test_small_rsa_keys_are_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ConfigurationError, match="2048"):
        JWTKey.from_pem(_pem(small), alg="RS256", kid="r")
    with pytest.raises(ConfigurationError, match="2048"):
        JWTKey.from_pem(_pem(small, public=True), alg="PS256", kid="r")


@pytest.mark.parametrize(
    ("make", "alg"),
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), "ES384"),
        (lambda: ec.generate_private_key(ec.SECP384R1()), "ES256"),
        (lambda: ec.generate_private_key(ec.SECP256K1()), "ES256"),
        (ed448.Ed448PrivateKey.generate, "EdDSA"),
        (ed25519.Ed25519PrivateKey.generate, "ES256"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "EdDSA"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "RS256"),
    ],
)
def test_a_key_of_the_wrong_type_or_curve_is_refused(make: Any, alg: Algorithm) -> None:
    with pytest.raises(ConfigurationError):
        JWTKey.from_pem(_pem(make()), alg=alg, kid="k")


@pytest.mark.parametrize("alg", ["none", "HS512", "RS512", "ES256K", "eddsa", "", None, 256])
def test_unsupported_algorithms_are_refused(alg: Any) -> None:
    with pytest.raises(ConfigurationError, match="alg"):
        JWTKey.generate(alg)


def test_pem_for_hmac_and_secrets_for_asymmetric_algorithms_are_refused() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(ConfigurationError, match="from_secret"):
        JWTKey.from_pem(_pem(private), alg="HS256", kid="k")
    with pytest.raises(ConfigurationError, match="HS256 only"):
        JWTKey.from_secret(b"x" * 32, kid="k", alg="RS256")
    # a public key's PEM is not accepted as an HMAC secret either (joserfc refuses it)
    with pytest.raises(ConfigurationError):
        JWTKey.from_secret(_pem(private, public=True) + b"\n" * 40, kid="k")


def test_from_jwk_needs_kid_and_alg_and_agreeing_members(keys: dict[str, JWTKey]) -> None:
    public = keys["EdDSA"].public_jwk()
    for missing in ("kid", "alg"):
        with pytest.raises(ConfigurationError, match=missing):
            JWTKey.from_jwk({k: v for k, v in public.items() if k != missing})
    with pytest.raises(ConfigurationError, match="use"):
        JWTKey.from_jwk(dict(public, use="enc"))
    with pytest.raises(ConfigurationError, match="key_ops"):
        JWTKey.from_jwk(dict(public, use=None, key_ops=["encrypt"]) | {"use": "sig"})
    with pytest.raises(ConfigurationError):
        JWTKey.from_jwk(dict(public, alg="ES256"))
    with pytest.raises(ConfigurationError):
        JWTKey.from_jwk(dict(public, x="not base64!"))
    with pytest.raises(ConfigurationError, match="mapping"):
        JWTKey.from_jwk("{}")  # type: ignore[arg-type]


@pytest.mark.parametrize("kid", ["", "a b", "\x00", "k\n", "x" * 257, 7, None, "é"])
def test_key_ids_are_visible_ascii(kid: Any) -> None:
    with pytest.raises(ConfigurationError, match="kid"):
        JWTKey.from_secret(b"x" * 32, kid=kid)


def test_key_set_errors(keys: dict[str, JWTKey]) -> None:
    with pytest.raises(ConfigurationError, match="public key"):
        JWTKeySet(keys["EdDSA"].public())
    with pytest.raises(ConfigurationError, match="needs a signing key"):
        JWTKeySet(None)
    twin = JWTKey.generate("EdDSA", kid="eddsa-1")
    with pytest.raises(ConfigurationError, match="unique"):
        JWTKeySet(keys["EdDSA"], verifying=[twin])
    assert len(JWTKeySet(keys["EdDSA"], verifying=[keys["EdDSA"]])) == 1
    with pytest.raises(ConfigurationError, match="JWTKey"):
        JWTKeySet(keys["EdDSA"], verifying=["eddsa-1"])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="JWTKey or None"):
        JWTKeySet("k")  # type: ignore[arg-type]
    key_set = JWTKeySet(keys["EdDSA"], verifying=[keys["ES256"]])
    with pytest.raises(ConfigurationError, match="rotate"):
        key_set.retired("eddsa-1")
    with pytest.raises(ConfigurationError, match="no key"):
        key_set.retired("nope")


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"issuer": ""}, "issuer"),
        ({"issuer": " https://issuer.example"}, "issuer"),
        ({"issuer": None}, "issuer"),
        ({"leeway": -1}, "leeway"),
        ({"leeway": 300.5}, "leeway"),
        ({"leeway": float("nan")}, "leeway"),
        ({"leeway": float("inf")}, "leeway"),
        ({"leeway": True}, "leeway"),
        ({"leeway": "30"}, "leeway"),
        ({"max_bytes": 100}, "max_bytes"),
        ({"max_bytes": 10**7}, "max_bytes"),
        ({"max_bytes": 8192.0}, "max_bytes"),
        ({"max_bytes": True}, "max_bytes"),
        ({"clock": object()}, "clock"),
        ({"keys": "nope"}, "keys"),
    ],
)
def test_codec_settings_are_bounded(
    options: dict[str, Any], setting: str, keys: dict[str, JWTKey]
) -> None:
    arguments: dict[str, Any] = {"keys": JWTKeySet(keys["HS256"]), "issuer": ISSUER} | options
    with pytest.raises(ConfigurationError) as caught:
        JWTCodec(**arguments)
    assert caught.value.setting == setting


def test_codec_bounds_are_inclusive(keys: dict[str, JWTKey]) -> None:
    for leeway, max_bytes in ((0, 512), (300, 65_536)):
        JWTCodec(JWTKeySet(keys["HS256"]), issuer=ISSUER, leeway=leeway, max_bytes=max_bytes)


@pytest.mark.parametrize(
    ("claims", "options", "match"),
    [
        ({"aud": "api"}, {}, "exp"),
        ({"sub": "u"}, {"expires_in": 60}, "aud"),
        ({"aud": "api", "iss": "https://other.example"}, {"expires_in": 60}, "iss"),
        ({"aud": "api", "exp": NOW + 60}, {"expires_in": 60}, "not both"),
        ({"aud": "api"}, {"expires_in": 0}, "positive"),
        ({"aud": "api"}, {"expires_in": float("inf")}, "positive"),
        ({"aud": "api"}, {"expires_in": True}, "positive"),
        ({"aud": "api", "exp": "soon"}, {}, "not valid"),
        ({"aud": 5}, {"expires_in": 60}, "not valid"),
        ({"aud": "api", "sub": ""}, {"expires_in": 60}, "not valid"),
        ({"aud": "api", "n": float("nan")}, {"expires_in": 60}, "JSON"),
        ({"aud": "api", "n": object()}, {"expires_in": 60}, "JSON"),
        ({"aud": "api", "n": "\ud800"}, {"expires_in": 60}, "JSON"),
        ({"aud": "api", "n": {1: "a", "1": "b"}}, {"expires_in": 60}, "names must be strings"),
        ({"aud": "api", "n": "x" * 9000}, {"expires_in": 60}, "max_bytes"),
    ],
)
def test_encode_refuses_tokens_decode_would_refuse(
    claims: dict[str, Any],
    options: dict[str, Any],
    match: str,
    keys: dict[str, JWTKey],
    clock: FrozenClock,
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        _codec(keys["HS256"], clock).encode(claims, typ="at+jwt", **options)


def test_encode_and_decode_need_a_kind(keys: dict[str, JWTKey], clock: FrozenClock) -> None:
    codec = _codec(keys["HS256"], clock)
    with pytest.raises(ConfigurationError, match="typ"):
        codec.encode({"aud": "api"}, typ="", expires_in=60)
    token = codec.encode({"sub": "u", "aud": "api"}, typ="t", expires_in=60)
    with pytest.raises(ConfigurationError):
        codec.decode(token, typ="t", audience="")
    with pytest.raises(ConfigurationError):
        codec.decode(token, typ="", audience="api")


# -- secrets stay secret -------------------------------------------------------------------


def test_reprs_redact_keys_and_claims(keys: dict[str, JWTKey], clock: FrozenClock) -> None:
    secret = keys["HS256"]
    private = keys["EdDSA"]
    texts = [
        repr(secret),
        str(secret),
        repr(private),
        repr(JWTKeySet(private, verifying=[secret])),
        repr(_codec(secret, clock)),
    ]
    secret_forms = [
        secret.key.raw_value.hex(),
        pyjwt.utils.base64url_encode(secret.key.raw_value).decode(),
        str(private.key.as_dict(private=True)["d"]),
    ]
    for text in texts:
        for form in secret_forms:
            assert form not in text
    assert repr(secret) == "JWTKey(kid='hs256-1', alg='HS256', secret)"
    assert repr(private) == "JWTKey(kid='eddsa-1', alg='EdDSA', private)"
    assert repr(private.public()) == "JWTKey(kid='eddsa-1', alg='EdDSA', public)"
    codec = _codec(secret, clock)
    claims = codec.decode(
        codec.encode({"sub": "alice@example.com", "aud": "api"}, typ="t", expires_in=9),
        typ="t",
        audience="api",
    )
    assert "alice" not in repr(claims)


def test_keys_cannot_be_pickled(keys: dict[str, JWTKey]) -> None:
    for key in (keys["HS256"], keys["EdDSA"]):
        with pytest.raises(TypeError, match="pickled"):
            pickle.dumps(key)
        assert copy.copy(key) is key
        assert copy.deepcopy(key) is key


# -- the optional extra --------------------------------------------------------------------


def test_importing_core_tokens_does_not_load_joserfc() -> None:
    code = "import sys, bastion.core.tokens; print('joserfc' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=None
    )
    assert out.stdout.strip() == "False"


def test_without_joserfc_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in sys.modules if n == "joserfc" or n.startswith("joserfc.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "joserfc", None)  # type: ignore[arg-type]
    for name in ("bastion.core.tokens.jwk", "bastion.core.tokens.jwt"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(ImportError, match=r"bastion\[jwt\]"):
        importlib.import_module("bastion.core.tokens.jwk")
    with pytest.raises(ImportError, match=r"bastion\[jwt\]"):
        importlib.import_module("bastion.core.tokens.jwt")


def test_unknown_names_of_the_package_are_attribute_errors() -> None:
    import bastion.core.tokens as tokens  # noqa: PLC0415

    with pytest.raises(AttributeError, match="Nope"):
        _ = tokens.Nope
    assert tokens.JWTCodec is JWTCodec
