"""Attacks on JWT verification: each case asserts the exact TokenReason of its refusal.

Tokens are forged byte by byte here (raw JSON text, raw base64url), so that duplicate members,
odd encodings and hostile headers reach the codec exactly as an attacker would send them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bastion.core.tokens.jwt as jwt_module
from bastion.core.clock import FrozenClock
from bastion.core.tokens import JWTCodec, JWTKey, JWTKeySet, TokenReason, TokenRejected

if TYPE_CHECKING:
    from pathlib import Path

ISSUER = "https://a.example"
NOW = 1_700_000_000.0
TYP = "at+jwt"
AUD = "api"

ED = JWTKey.generate("EdDSA", kid="ed-1")
HS = JWTKey.generate("HS256", kid="hs-1")
EC = JWTKey.generate("ES256", kid="ec-1")
RSA = JWTKey.generate("RS256", kid="rsa-1")
ATTACKER = JWTKey.generate("EdDSA", kid="ed-1")  # same id as ED, another key
KEYS = JWTKeySet(ED, verifying=[HS, EC, RSA])
CODEC = JWTCodec(KEYS, issuer=ISSUER, leeway=30, clock=FrozenClock(NOW))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(value: dict[str, Any] | str | bytes) -> str:
    """A dict is compact JSON; a str is raw JSON text as sent; bytes are sent as they are."""
    if isinstance(value, dict):
        return b64(json.dumps(value, separators=(",", ":")).encode())
    if isinstance(value, str):
        return b64(value.encode("utf-8", "surrogatepass"))
    return b64(value)


def header(**members: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"alg": "EdDSA", "kid": "ed-1", "typ": TYP}
    base.update(members)
    return {name: value for name, value in base.items() if value is not _DROP}


def claims(**members: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": AUD,
        "iat": NOW,
        "exp": NOW + 600,
        "jti": "jti-1",
    }
    base.update(members)
    return {name: value for name, value in base.items() if value is not _DROP}


_DROP = object()


def forge(
    head: dict[str, Any] | str | bytes,
    body: dict[str, Any] | str | bytes,
    key: JWTKey | None = ED,
    *,
    secret: bytes | None = None,
) -> str:
    """A compact token signed with ``key`` (or HMAC-SHA256 with ``secret``, or unsigned)."""
    signing_input = f"{segment(head)}.{segment(body)}"
    if secret is not None:
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    elif key is not None:
        signature = key.sign(signing_input.encode())
    else:
        signature = b""
    return f"{signing_input}.{b64(signature)}"


def refused(
    token: str | bytes,
    reason: TokenReason,
    *,
    codec: JWTCodec = CODEC,
    typ: str = TYP,
    audience: str = AUD,
    **options: Any,
) -> None:
    with pytest.raises(TokenRejected) as caught:
        codec.decode(token, typ=typ, audience=audience, **options)
    assert caught.value.reason is reason, caught.value
    text = token if isinstance(token, str) else token.decode("latin-1")
    for part in text.split("."):
        if len(part) >= 8:
            assert part not in str(caught.value)  # the message never echoes the token


def accepted(token: str, **options: Any) -> None:
    assert CODEC.decode(token, typ=TYP, audience=AUD, **options).issuer == ISSUER


def test_the_forge_makes_valid_tokens() -> None:
    accepted(forge(header(), claims()))
    accepted(forge(header(alg="HS256", kid="hs-1"), claims(), HS))
    accepted(forge(header(alg="ES256", kid="ec-1"), claims(), EC))
    accepted(forge(header(alg="RS256", kid="rsa-1"), claims(), RSA))


# -- alg none ------------------------------------------------------------------------------

NONE_SPELLINGS = ["none", "None", "NONE", "nOnE", " none", "none ", "\tnone\n", "NoNe"]


@pytest.mark.parametrize("spelling", NONE_SPELLINGS)
@pytest.mark.parametrize("signed", [False, True], ids=["no-signature", "with-signature"])
@pytest.mark.parametrize("kid", ["ed-1", "hs-1", None])
def test_alg_none_in_any_spelling(spelling: str, signed: bool, kid: str | None) -> None:
    head = header(alg=spelling, kid=kid if kid is not None else _DROP)
    token = forge(head, claims(), ED if signed else None)
    refused(token, TokenReason.ALG_NONE)


def test_alg_none_without_the_third_segment_is_malformed() -> None:
    refused(f"{segment(header(alg='none'))}.{segment(claims())}", TokenReason.MALFORMED)


# -- key-type confusion and the pinned algorithm -------------------------------------------


def _public_forms(key: JWTKey) -> dict[str, bytes]:
    public = key.key.public_key
    forms = {
        "spki-pem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "spki-der": public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "jwk-json": json.dumps(key.public_jwk()).encode(),
    }
    if key.alg == "RS256":
        forms["pkcs1-pem"] = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
        )
    return forms


@pytest.mark.parametrize("victim", [RSA, EC, ED], ids=lambda k: k.alg)
def test_hs256_signed_with_the_public_key_as_secret(victim: JWTKey) -> None:
    """The classic confusion: the verifier's public key, used as an HMAC secret."""
    for form in _public_forms(victim).values():
        token = forge(header(alg="HS256", kid=victim.kid), claims(), secret=form)
        refused(token, TokenReason.ALG_NOT_ALLOWED)
        # without a kid the token names no key at all
        refused(
            forge(header(alg="HS256", kid=_DROP), claims(), secret=form), TokenReason.UNKNOWN_KID
        )
        # under the HMAC key's id the PEM is just a wrong secret
        token = forge(header(alg="HS256", kid="hs-1"), claims(), secret=form)
        refused(token, TokenReason.BAD_SIGNATURE)


@pytest.mark.parametrize(
    "alg", ["ES256", "RS256", "PS256", "HS256", "HS512", "ES256K", "Ed25519", "EdDSA ", "eddsa"]
)
def test_an_algorithm_outside_the_pin_is_refused(alg: str) -> None:
    # "Ed25519" is RFC 9864's fully specified name, which joserfc also knows: not our pin.
    refused(forge(header(alg=alg), claims()), TokenReason.ALG_NOT_ALLOWED)


def test_a_valid_token_relabelled_with_another_kid_is_refused() -> None:
    hs_token = forge(header(alg="HS256", kid="hs-1"), claims(), HS)
    accepted(hs_token)
    _, body, signature = hs_token.split(".")
    for kid in ("ed-1", "ec-1", "rsa-1"):
        relabelled = f"{segment(header(alg='HS256', kid=kid))}.{body}.{signature}"
        refused(relabelled, TokenReason.ALG_NOT_ALLOWED)


@pytest.mark.parametrize("alg", [None, 256, ["EdDSA"], {"EdDSA": 1}, True, _DROP])
def test_alg_that_is_not_a_string_is_malformed(alg: Any) -> None:
    refused(forge(header(alg=alg), claims()), TokenReason.MALFORMED)


# -- kid ----------------------------------------------------------------------------------

INJECTED_KIDS = [
    "../../../../etc/passwd",
    "/dev/null",
    "file:///dev/null",
    "' OR '1'='1",
    "ed-1' --",
    "ed-1; DROP TABLE keys",
    "ed-1\x00",
    "ed-1 ",
    " ed-1",
    "ED-1",
    "",
    "*",
    "%",
    "ed-*",
    "https://evil.example/jwks.json",
    "{{7*7}}",
]


def _spy_set() -> tuple[JWTKeySet, list[object]]:
    seen: list[object] = []

    class Spy(JWTKeySet):
        lookups: ClassVar[list[object]] = seen

        def get(self, kid: str) -> JWTKey | None:
            self.lookups.append(kid)
            return super().get(kid)

    return Spy(ED, verifying=[HS]), seen


@pytest.mark.parametrize("kid", INJECTED_KIDS)
def test_kid_injection_finds_no_key_and_looks_nowhere_else(kid: str) -> None:
    spy, seen = _spy_set()
    codec = JWTCodec(spy, issuer=ISSUER, clock=FrozenClock(NOW))
    for key in (ED, HS):
        token = forge(header(alg=key.alg, kid=kid), claims(), key)
        refused(token, TokenReason.UNKNOWN_KID, codec=codec)
    assert seen == [kid, kid]  # one exact lookup per token, no normalised retry


@pytest.mark.parametrize("kid", [None, 1, ["ed-1"], {"kid": "ed-1"}, True, _DROP])
def test_a_kid_that_is_not_a_string_is_unknown_without_a_lookup(kid: Any) -> None:
    spy, seen = _spy_set()
    codec = JWTCodec(spy, issuer=ISSUER, clock=FrozenClock(NOW))
    refused(forge(header(kid=kid), claims()), TokenReason.UNKNOWN_KID, codec=codec)
    assert seen == []


def test_a_kid_naming_a_file_that_holds_the_secret_is_unknown(tmp_path: Path) -> None:
    secret = b"s" * 32
    path = tmp_path / "secret.key"
    path.write_bytes(secret)
    token = forge(header(alg="HS256", kid=str(path)), claims(), secret=secret)
    refused(token, TokenReason.UNKNOWN_KID)


def test_an_unknown_kid() -> None:
    refused(forge(header(kid="ed-2"), claims()), TokenReason.UNKNOWN_KID)
    retired = JWTCodec(JWTKeySet(HS), issuer=ISSUER, clock=FrozenClock(NOW))
    refused(forge(header(), claims()), TokenReason.UNKNOWN_KID, codec=retired)


# -- embedded key material and crit --------------------------------------------------------


def test_an_embedded_jwk_of_the_attackers_key_is_refused_before_the_signature() -> None:
    token = forge(header(jwk=ATTACKER.public_jwk()), claims(), ATTACKER)
    refused(token, TokenReason.EMBEDDED_KEY)  # not BAD_SIGNATURE: refused on sight
    refused(
        forge(header(jwk=ATTACKER.public_jwk(), kid=_DROP), claims(), ATTACKER),
        TokenReason.UNKNOWN_KID,
    )


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("jwk", ED.public_jwk()),
        ("jku", "https://evil.example/jwks.json"),
        ("x5u", "https://evil.example/cert.pem"),
        ("x5c", ["MIIBszCCAVmgAwIBAgIU"]),
        ("x5t", "dGh1bWJwcmludA"),
        ("x5t#S256", "dGh1bWJwcmludA"),
    ],
)
def test_embedded_key_members_are_refused_even_when_signed(member: str, value: object) -> None:
    refused(forge(header(**{member: value}), claims()), TokenReason.EMBEDDED_KEY)


@pytest.mark.parametrize(
    "members",
    [
        {"crit": ["exp"], "exp": 1},
        {"crit": ["b64"], "b64": False},
        {"crit": ["http://example.invalid/ext"], "http://example.invalid/ext": True},
        {"crit": ["absent"]},
        {"crit": []},
        {"crit": "exp"},
        {"crit": None},
    ],
)
def test_crit_is_refused(members: dict[str, Any]) -> None:
    refused(forge(header(**members), claims()), TokenReason.UNKNOWN_CRIT)


# -- typ and token kinds -------------------------------------------------------------------

KINDS = {"at+jwt": "api", "2fa-pending+jwt": "login:2fa", "JWT": "client-1", "logout+jwt": "rp"}


@pytest.mark.parametrize("minted", sorted(KINDS))
@pytest.mark.parametrize("expected", sorted(KINDS))
def test_token_kinds_never_stand_in_for_each_other(minted: str, expected: str) -> None:
    token = CODEC.encode({"sub": "u", "aud": KINDS[minted]}, typ=minted, expires_in=60)
    if minted == expected:
        assert CODEC.decode(token, typ=expected, audience=KINDS[expected]).typ == expected
        return
    refused(token, TokenReason.WRONG_TYPE, typ=expected, audience=KINDS[expected])
    # the audience alone would refuse it too, were the typ check ever dropped
    refused(token, TokenReason.WRONG_AUDIENCE, typ=minted, audience=KINDS[expected])


@pytest.mark.parametrize(
    "typ",
    [
        _DROP,
        None,
        "",
        "jwt",
        "at+jwt ",
        " at+jwt",
        "at+jwt; x=1",
        "application/application/at+jwt",
        "at+JWT+x",
        ["at+jwt"],
        1,
        "application/",
    ],
)
def test_a_wrong_or_missing_typ(typ: Any) -> None:
    refused(forge(header(typ=typ), claims()), TokenReason.WRONG_TYPE)


@pytest.mark.parametrize(
    "opaque",
    ["brt_3fJQ.q2x9Zk", "bot_abc.def", "bak_abcdefabcdef", "brt_a.b.c.d", ""],
)
def test_opaque_tokens_are_not_jwts(opaque: str) -> None:
    refused(opaque, TokenReason.MALFORMED if opaque.count(".") != 2 else TokenReason.NOT_CANONICAL)


# -- time claims at the leeway edges (leeway 30 s, fixed clock) ----------------------------


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ({"exp": NOW - 30}, TokenReason.EXPIRED),  # now == exp + leeway: expired
        ({"exp": NOW - 30.001}, TokenReason.EXPIRED),
        ({"exp": NOW - 29.999}, None),
        ({"exp": NOW - 29}, None),
        ({"nbf": NOW + 30}, None),  # nbf == now + leeway: valid
        ({"nbf": NOW + 30.001}, TokenReason.NOT_YET_VALID),
        ({"nbf": NOW + 31}, TokenReason.NOT_YET_VALID),
        ({"iat": NOW + 30}, None),  # iat == now + leeway: accepted
        ({"iat": NOW + 30.5}, TokenReason.ISSUED_IN_FUTURE),
        ({"iat": NOW + 3600, "exp": NOW + 7200}, TokenReason.ISSUED_IN_FUTURE),
    ],
)
def test_time_claims_at_the_leeway_edges(
    members: dict[str, Any], reason: TokenReason | None
) -> None:
    token = forge(header(), claims(**members))
    if reason is None:
        accepted(token)
    else:
        refused(token, reason)


def test_without_leeway_the_edges_are_exact() -> None:
    codec = JWTCodec(KEYS, issuer=ISSUER, leeway=0, clock=FrozenClock(NOW))
    refused(forge(header(), claims(exp=NOW)), TokenReason.EXPIRED, codec=codec)
    codec.decode(forge(header(), claims(exp=NOW + 0.001)), typ=TYP, audience=AUD)
    codec.decode(forge(header(), claims(nbf=NOW, iat=NOW)), typ=TYP, audience=AUD)
    refused(forge(header(), claims(nbf=NOW + 0.001)), TokenReason.NOT_YET_VALID, codec=codec)
    refused(forge(header(), claims(iat=NOW + 0.001)), TokenReason.ISSUED_IN_FUTURE, codec=codec)


def test_a_token_expires_as_the_clock_moves() -> None:
    clock = FrozenClock(NOW)
    codec = JWTCodec(KEYS, issuer=ISSUER, leeway=30, clock=clock)
    token = codec.encode({"sub": "u", "aud": AUD}, typ=TYP, expires_in=600)
    clock.advance(629.9)
    assert codec.decode(token, typ=TYP, audience=AUD).subject == "u"
    clock.advance(0.1)
    refused(token, TokenReason.EXPIRED, codec=codec)


# -- claims: presence, types, issuer, audience ---------------------------------------------


@pytest.mark.parametrize("name", ["exp", "iat", "jti", "iss", "aud", "sub"])
def test_each_default_claim_is_required(name: str) -> None:
    refused(forge(header(), claims(**{name: _DROP})), TokenReason.MISSING_CLAIM)


@pytest.mark.parametrize("name", ["exp", "iat", "iss", "aud"])
def test_the_core_claims_are_required_even_when_not_asked(name: str) -> None:
    refused(forge(header(), claims(**{name: _DROP})), TokenReason.MISSING_CLAIM, required=())


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
@pytest.mark.parametrize(
    "value",
    [
        '"1700000600"',
        "true",
        "false",
        "null",
        "1e400",  # a float overflow: Python reads inf
        "-1e400",
        "100000000000000000000",
        "-1",
        "[1700000000]",
        '{"t":1700000000}',
        "253402300800",  # one second after 9999-12-31T23:59:59Z
    ],
)
def test_numeric_dates_of_the_wrong_type_or_range(name: str, value: str) -> None:
    body = json.dumps(claims(**{name: _DROP}))[:-1] + f',"{name}":{value}}}'
    refused(forge(header(), body), TokenReason.BAD_CLAIM)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_are_malformed(constant: str) -> None:
    body = json.dumps(claims())[:-1] + f',"nbf":{constant}}}'
    refused(forge(header(), body), TokenReason.MALFORMED)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("iss", 1),
        ("iss", [ISSUER]),
        ("iss", None),
        ("iss", ""),
        ("sub", ""),
        ("sub", 1),
        ("sub", None),
        ("sub", ["user-1"]),
        ("jti", ""),
        ("jti", None),
        ("jti", 7),
        ("aud", []),
        ("aud", [""]),
        ("aud", [1]),
        ("aud", [AUD, 1]),
        ("aud", {AUD: 1}),
        ("aud", ""),
        ("aud", None),
        ("aud", True),
    ],
)
def test_string_claims_of_the_wrong_type(name: str, value: object) -> None:
    refused(forge(header(), claims(**{name: value})), TokenReason.BAD_CLAIM)


@pytest.mark.parametrize(
    "issuer",
    [
        "https://a.example.evil",
        "https://a.example/",
        "https://a.example.",
        "https://A.example",
        "https://a.exampl",
        "http://a.example",
        "https://a.example\x00",
        "https://a.example ",
    ],
)
def test_a_wrong_or_prefix_matching_issuer(issuer: str) -> None:
    refused(forge(header(), claims(iss=issuer)), TokenReason.WRONG_ISSUER)


@pytest.mark.parametrize(
    "audience", ["ap", "api2", "API", "api ", "api-evil", ["other"], ["api-evil", "apix"], ["API"]]
)
def test_a_wrong_or_prefix_matching_audience(audience: object) -> None:
    refused(forge(header(), claims(aud=audience)), TokenReason.WRONG_AUDIENCE)


def test_an_audience_list_containing_ours_is_accepted() -> None:
    accepted(forge(header(), claims(aud=["other", AUD])))
    refused(forge(header(), claims(aud=["other", AUD])), TokenReason.WRONG_AUDIENCE, audience="ap")


# -- size ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "A" * 8193,
        "." * 9000,
        "é" * 8193,
        b"\xff" * 8193,
        bytearray(b"." * 8193),
        "a.b.c" + " " * 8189,
    ],
    ids=["base64", "dots", "non-ascii", "bytes", "bytearray", "spaces"],
)
def test_an_oversized_token_is_refused_before_parsing(
    token: str | bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[bytes] = []
    real = jwt_module.split_compact

    def watched(raw: bytes) -> tuple[bytes, bytes, bytes, bytes]:
        parsed.append(raw)
        return real(raw)

    monkeypatch.setattr(jwt_module, "split_compact", watched)
    refused(token, TokenReason.TOO_LARGE)
    assert parsed == []
    refused("A" * 8192, TokenReason.MALFORMED)  # at the cap: parsed, and refused for its shape
    assert len(parsed) == 1


def test_a_validly_signed_token_over_the_cap_is_refused() -> None:
    roomy = JWTCodec(KEYS, issuer=ISSUER, max_bytes=65_536, clock=FrozenClock(NOW))
    token = roomy.encode({"sub": "u", "aud": AUD, "pad": "x" * 9000}, typ=TYP, expires_in=60)
    assert roomy.decode(token, typ=TYP, audience=AUD).subject == "u"
    refused(token, TokenReason.TOO_LARGE)
    small = JWTCodec(KEYS, issuer=ISSUER, max_bytes=512, clock=FrozenClock(NOW))
    ordinary = CODEC.encode({"sub": "u", "aud": AUD}, typ=TYP, expires_in=60)
    assert len(ordinary) <= 512
    assert small.decode(ordinary, typ=TYP, audience=AUD).subject == "u"
    refused(ordinary + "A" * (513 - len(ordinary)), TokenReason.TOO_LARGE, codec=small)


# -- duplicate members ---------------------------------------------------------------------


def test_duplicate_claims_are_refused() -> None:
    body = json.dumps(claims())[:-1] + ',"sub":"admin"}'
    refused(forge(header(), body), TokenReason.DUPLICATE_KEY)
    escaped = json.dumps(claims())[:-1] + ',"s\\u0075b":"admin"}'  # the same name, escaped
    refused(forge(header(), escaped), TokenReason.DUPLICATE_KEY)
    nested = json.dumps(claims())[:-1] + ',"cnf":{"jkt":"a","jkt":"b"}}'
    refused(forge(header(), nested), TokenReason.DUPLICATE_KEY)


@pytest.mark.parametrize(
    "head",
    [
        '{"alg":"none","alg":"EdDSA","kid":"ed-1","typ":"at+jwt"}',
        '{"alg":"EdDSA","kid":"ed-1","typ":"at+jwt","alg":"EdDSA"}',
        '{"alg":"EdDSA","kid":"hs-1","kid":"ed-1","typ":"at+jwt"}',
        '{"alg":"EdDSA","kid":"ed-1","typ":"2fa-pending+jwt","typ":"at+jwt"}',
    ],
)
def test_duplicate_header_members_are_refused(head: str) -> None:
    refused(forge(head, claims()), TokenReason.DUPLICATE_KEY)


# -- encodings -----------------------------------------------------------------------------


def _lenient(segment_text: str) -> bytes:
    """What a lenient decoder makes of a segment (padding added, any alphabet)."""
    text = segment_text.replace("-", "+").replace("_", "/").rstrip("=")
    return base64.b64decode(text + "=" * (-len(text) % 4))


def test_signature_tail_bits_are_not_malleable() -> None:
    token = forge(header(), claims())
    head, body, signature = token.split(".")
    assert len(signature) % 4 == 2  # 64 bytes: the last character carries 4 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    flipped = signature[:-1] + alphabet[alphabet.index(signature[-1]) | 1]
    assert _lenient(flipped) == _lenient(signature)  # same bytes: a lenient codec would accept
    refused(f"{head}.{body}.{flipped}", TokenReason.NOT_CANONICAL)


def test_payload_tail_bits_are_not_malleable() -> None:
    for extra in range(3):
        token = forge(header(), claims(pad="x" * extra))
        head, body, signature = token.split(".")
        if len(body) % 4 == 0:
            continue
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        flipped = body[:-1] + alphabet[alphabet.index(body[-1]) | 1]
        assert _lenient(flipped) == _lenient(body)
        refused(f"{head}.{flipped}.{signature}", TokenReason.NOT_CANONICAL)


def test_padding_is_refused() -> None:
    token = forge(header(), claims())
    head, body, signature = token.split(".")
    for padded in (
        f"{head}.{body}.{signature}==",
        f"{head}=.{body}.{signature}",
        f"{head}.{body}=.{signature}",
        f"{head}.{body}.{signature}=",
    ):
        refused(padded, TokenReason.NOT_CANONICAL)


def test_the_standard_alphabet_is_refused() -> None:
    for jti in range(200):
        token = forge(header(), claims(jti=f"j{jti}"))
        head, body, signature = token.split(".")
        if "-" in signature or "_" in signature:
            break
    else:  # pragma: no cover (a 64-byte signature without - or _ 200 times in a row)
        pytest.fail("no signature with - or _")
    standard = signature.replace("-", "+").replace("_", "/")
    assert _lenient(standard) == _lenient(signature)
    refused(f"{head}.{body}.{standard}", TokenReason.NOT_CANONICAL)


@pytest.mark.parametrize(
    "damage",
    [
        lambda t: " " + t,
        lambda t: t + "\n",
        lambda t: t + "\r\n",
        lambda t: t[:10] + " " + t[10:],
        lambda t: t[:10] + "\t" + t[10:],
        lambda t: t.replace(".", " .", 1),
        lambda t: t.replace(".", ".\n", 1),
        lambda t: t[:10] + "\u00e9" + t[11:],
        lambda t: t[:10] + "\uff21" + t[11:],  # a fullwidth A
        lambda t: t[:10] + "\x00" + t[11:],
        lambda t: t + "A" * ((1 - len(t.split(".")[2])) % 4),  # length 1 (mod 4): impossible
        lambda t: t.replace(".", "A" * ((1 - len(t.split(".")[0])) % 4) + ".", 1),
    ],
)
def test_whitespace_and_foreign_characters_are_refused(damage: Any) -> None:
    token = forge(header(), claims())
    refused(damage(token), TokenReason.NOT_CANONICAL)
    refused(damage(token).encode("utf-8"), TokenReason.NOT_CANONICAL)


# -- shape ---------------------------------------------------------------------------------


def test_nested_and_other_shapes_are_malformed() -> None:
    jwe = ".".join(
        [
            segment({"alg": "dir", "enc": "A256GCM", "kid": "ed-1", "cty": "JWT"}),
            "",
            "aXY",
            "Y3Q",
            "dGFn",
        ]
    )
    refused(jwe, TokenReason.MALFORMED)  # five segments
    valid = forge(header(), claims())
    refused(valid + "." + valid, TokenReason.MALFORMED)
    refused(valid + ".", TokenReason.MALFORMED)
    refused(valid.rsplit(".", 1)[0], TokenReason.MALFORMED)
    refused("..", TokenReason.MALFORMED)  # an empty header is not JSON
    refused("", TokenReason.MALFORMED)
    refused(json.dumps({"payload": "x", "signatures": []}), TokenReason.MALFORMED)
    # a JWS whose payload is itself a JWT (cty JWT): the payload is not a claims object
    inner = forge(header(), claims())
    refused(forge(header(cty="JWT"), inner.encode()), TokenReason.MALFORMED)


@pytest.mark.parametrize("value", [None, 123, 1.5, ["a.b.c"], object()])
def test_a_token_that_is_not_text_is_malformed(value: object) -> None:
    with pytest.raises(TokenRejected) as caught:
        CODEC.decode(value, typ=TYP, audience=AUD)  # type: ignore[arg-type]
    assert caught.value.reason is TokenReason.MALFORMED


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"[]",
        b"null",
        b'"EdDSA"',
        b"1",
        b'{"alg":"EdDSA"',
        b"\xff\xfe{}",
        '{"alg":"EdDSA","kid":"ed-1","typ":"at+jwt"}'.encode("utf-16"),
        b'\xef\xbb\xbf{"alg":"EdDSA","kid":"ed-1","typ":"at+jwt"}',
        b'{"alg":"EdDSA","kid":"ed-1","typ":"at+jwt","x":"\xc3"}',
        b'{"alg":"EdDSA","kid":"ed-1","typ":"at+jwt","x":"\\ud800"}',
    ],
)
def test_a_header_that_is_not_a_utf8_json_object(head: bytes) -> None:
    refused(forge(head, claims()), TokenReason.MALFORMED)


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'"claims"',
        b"",
        b"\xff" + json.dumps(claims()).encode(),
        json.dumps(claims()).encode()[:-1] + b',"name":"\\udc00"}',
        json.dumps(claims()).encode()[:-1] + b',"n":' + b"9" * 5000 + b"}",
        json.dumps(claims()).encode()[:-1] + b',"n":' + b"[" * 2500 + b"]" * 2500 + b"}",
    ],
    ids=["list", "string", "empty", "bad-utf8", "lone-surrogate", "huge-int", "deep"],
)
def test_claims_that_are_not_a_utf8_json_object(body: bytes) -> None:
    refused(forge(header(), body), TokenReason.MALFORMED)


def test_signature_failures() -> None:
    token = forge(header(), claims())
    head, body, signature = token.split(".")
    refused(forge(header(), claims(), ATTACKER), TokenReason.BAD_SIGNATURE)  # same kid, other key
    refused(f"{head}.{segment(claims(sub='admin'))}.{signature}", TokenReason.BAD_SIGNATURE)
    refused(f"{head}.{body}.", TokenReason.BAD_SIGNATURE)
    short = b64(base64.urlsafe_b64decode(signature + "==")[:-1])
    refused(f"{head}.{body}.{short}", TokenReason.BAD_SIGNATURE)
    refused(f"{head}.{body}.{b64(bytes(64))}", TokenReason.BAD_SIGNATURE)
    for key, alg in ((EC, "ES256"), (RSA, "RS256"), (HS, "HS256")):
        valid = forge(header(alg=alg, kid=key.kid), claims(), key)
        h, p, s = valid.split(".")
        refused(f"{h}.{segment(claims(sub='admin'))}.{s}", TokenReason.BAD_SIGNATURE)
        refused(f"{h}.{p}.{b64(bytes(len(_lenient(s))))}", TokenReason.BAD_SIGNATURE)


# -- properties ----------------------------------------------------------------------------

VALID = {
    "EdDSA": forge(header(), claims()),
    "HS256": forge(header(alg="HS256", kid="hs-1"), claims(), HS),
    "ES256": forge(header(alg="ES256", kid="ec-1"), claims(), EC),
}
MUTATION_CHARS = st.sampled_from(
    list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") + list(".=+/ \n\x00é")
)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    token = VALID[draw(st.sampled_from(sorted(VALID)))]
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.integers(0, max(len(token) - 1, 0)))
        how = draw(st.sampled_from(["replace", "insert", "delete", "swap", "truncate", "dup"]))
        if how == "replace":
            token = token[:where] + draw(MUTATION_CHARS) + token[where + 1 :]
        elif how == "insert":
            token = token[:where] + draw(MUTATION_CHARS) + token[where:]
        elif how == "delete":
            token = token[:where] + token[where + 1 :]
        elif how == "swap" and where + 1 < len(token):
            token = token[:where] + token[where + 1] + token[where] + token[where + 2 :]
        elif how == "truncate":
            token = token[:where]
        else:
            token = token[:where] + token[where:] + token[where:]
    return token


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutations_of_a_valid_token_never_verify(token: str) -> None:
    if token in VALID.values():
        return  # a swap of two equal characters, say: the same token
    with pytest.raises(TokenRejected):
        CODEC.decode(token, typ=TYP, audience=AUD)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_arbitrary_input_raises_only_token_rejected(token: str | bytes) -> None:
    with pytest.raises(TokenRejected):
        CODEC.decode(token, typ=TYP, audience=AUD)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
HEADER_VALUES = {
    "alg": st.sampled_from(["EdDSA", "HS256", "none", "ES256", "RS256"]) | JSON,
    "kid": st.sampled_from(["ed-1", "hs-1", "nope"]) | JSON,
    "typ": st.sampled_from([TYP, "JWT"]) | JSON,
    "crit": JSON,
    "jwk": JSON,
}
CLAIM_VALUES = {
    "iss": st.sampled_from([ISSUER, ISSUER + ".evil"]) | JSON,
    "aud": st.sampled_from([AUD, [AUD], ["x"]]) | JSON,
    "sub": st.sampled_from(["u"]) | JSON,
    "jti": st.sampled_from(["j"]) | JSON,
    "exp": st.floats(NOW - 100, NOW + 100) | JSON,
    "iat": st.floats(NOW - 100, NOW + 100) | JSON,
    "nbf": st.floats(NOW - 100, NOW + 100) | JSON,
}


def _fixed_dicts(values: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=values)


@settings(max_examples=300, deadline=None)
@given(_fixed_dicts(HEADER_VALUES), _fixed_dicts(CLAIM_VALUES), st.sampled_from([ED, HS]))
def test_structured_junk_is_refused_or_verified_consistently(
    head: dict[str, Any], body: dict[str, Any], key: JWTKey
) -> None:
    """Signed junk either verifies with every claim in order, or is refused with a reason."""
    token = forge(head, body, key)
    try:
        verified = CODEC.decode(token, typ=TYP, audience=AUD, required=())
    except TokenRejected:
        return
    assert head.get("alg") == key.alg
    assert head.get("kid") == key.kid
    assert verified.issuer == ISSUER
    assert AUD in verified.audience
    assert verified.expires_at + 30 > NOW
    assert verified.issued_at <= NOW + 30
