"""Group ``tokens``: access-token verification against PyJWT and joserfc; refresh rotation.

Verification (issue 14, "Speed"). One token per algorithm is made once, outside the timed
loop, and every verifier checks that same string: header ``{"alg", "kid", "typ": "at+jwt"}``,
claims ``iss``, ``aud`` (one string), ``sub``, ``jti``, ``iat``, ``exp`` (an hour ahead),
``scope`` and ``epoch``. Cases per algorithm (HS256, EdDSA, ES256):

* ``PyJWT decode + claims`` (the baseline): ``jwt.decode(token, key, algorithms=[alg],
  audience=..., issuer=..., leeway=30, options={"require": [...]})``, claim validation alone;
* ``joserfc decode + claims registry``: ``joserfc.jwt.decode`` with the one algorithm, then a
  ``JWTClaimsRegistry`` (built once) requiring the same claims and values;
* ``bastion decode (codec only)``: ``JWTCodec.decode`` with ``typ``, audience, issuer and the
  six required claims (header, size, encoding and claim-type checks included);
* ``bastion decode + revocation check (memory)``: the same, then
  :meth:`~bastion.engine.tokens.revocation.Revocations.check_sync` on a memory store (deny-list
  entry and user epoch, one ``get_many``), the user's epoch record present: what an API pays
  per request; also timed once more as its ``(vs joserfc)`` row.

Targets: the last row at least 1.5x PyJWT's rate (a ratio <= 0.67) and at least joserfc's
(<= 1.00 against it). joserfc warns (``SecurityWarning``) on every EdDSA decode since RFC 9864
deprecated the name; the warning is filtered to ``ignore`` here as an application would, and
what is left of it (the ``warnings.warn`` call) is joserfc's cost.

Every case is proved at set-up: it accepts the token and names the subject, and it refuses the
same token under another audience, so that a verifier that checks nothing cannot report a fast
figure. Refresh rotation rows are in :mod:`bench.groups.tokens_refresh`.
"""

from __future__ import annotations

import importlib.util
import secrets
import time
import warnings
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OctKey, OKPKey
from joserfc.jwt import JWTClaimsRegistry

from bench.group import Group
from bench.measure import sync_case

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from bench.group import Options
    from bench.measure import Case

__all__ = [
    "ALGORITHMS",
    "CODEC_ONLY",
    "GROUP",
    "JOSERFC",
    "OURS",
    "PYJWT",
    "VS_JOSERFC",
    "TokenFixture",
    "build_verifiers",
    "have_codec",
    "make_fixture",
    "token_cases",
]

ISSUER: Final = "https://issuer.example"
AUDIENCE: Final = "https://api.example"
OTHER_AUDIENCE: Final = "https://other.example"
SUBJECT: Final = "user-1"
TYP: Final = "at+jwt"
LEEWAY: Final = 30.0
EPOCH: Final = 1
REQUIRED: Final = ("exp", "iat", "jti", "iss", "aud", "sub")
ALGORITHMS: Final = ("HS256", "EdDSA", "ES256")
VERIFY_WEIGHT: Final = 10
"""Verifications take tens of microseconds, rotations milliseconds: longer batches for those."""

PYJWT: Final = "PyJWT decode + claims"
JOSERFC: Final = "joserfc decode + claims registry"
CODEC_ONLY: Final = "bastion decode (codec only)"
OURS: Final = "bastion decode + revocation check (memory)"
VS_JOSERFC: Final = f"{OURS} (vs joserfc)"
LABELS: Final = (PYJWT, JOSERFC, CODEC_ONLY, OURS, VS_JOSERFC)
_BASELINES: Final = {
    PYJWT: None,
    JOSERFC: PYJWT,
    CODEC_ONLY: PYJWT,
    OURS: PYJWT,
    VS_JOSERFC: JOSERFC,
}


@dataclass(frozen=True, slots=True)
class TokenFixture:
    """One algorithm's key material in every library's form, and tokens made once with it."""

    alg: str
    kid: str
    pem_or_secret: bytes
    """The HS256 secret, or the private key as PKCS#8 PEM."""
    pyjwt_key: Any
    """What PyJWT verifies with: the secret, or the ``cryptography`` public key."""
    jose_key: Any
    token: str
    claims: dict[str, object]


def _claims(now: float) -> dict[str, object]:
    issued = int(now)
    return {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": SUBJECT,
        "jti": secrets.token_urlsafe(16),
        "iat": issued,
        "exp": issued + 3600,
        "scope": "read write",
        "epoch": EPOCH,
    }


def make_fixture(alg: str, *, now: float | None = None) -> TokenFixture:
    """Fresh keys for ``alg`` and one token signed with them (by PyJWT: a third party's
    token, so bastion's codec is shown to accept what another issuer makes)."""
    kid = f"bench-{alg.lower()}"
    claims = _claims(time.time() if now is None else now)
    headers = {"kid": kid, "typ": TYP}
    if alg == "HS256":
        secret = secrets.token_bytes(32)
        token = pyjwt.encode(claims, secret, algorithm=alg, headers=headers)
        return TokenFixture(alg, kid, secret, secret, OctKey.import_key(secret), token, claims)
    private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
    if alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(f"no bench fixture for {alg!r}")
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    token = pyjwt.encode(claims, private, algorithm=alg, headers=headers)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jose_key = OKPKey.import_key(public_pem) if alg == "EdDSA" else ECKey.import_key(public_pem)
    return TokenFixture(alg, kid, pem, private.public_key(), jose_key, token, claims)


def _pyjwt(fx: TokenFixture) -> Callable[[str, str], object]:
    def verify(token: str, audience: str) -> object:
        claims: dict[str, Any] = pyjwt.decode(
            token,
            fx.pyjwt_key,
            algorithms=[fx.alg],
            audience=audience,
            issuer=ISSUER,
            leeway=LEEWAY,
            options={"require": list(REQUIRED)},
        )
        return claims["sub"]

    return verify


def _joserfc(fx: TokenFixture) -> Callable[[str, str], object]:
    registries = {
        audience: JWTClaimsRegistry(
            leeway=int(LEEWAY),
            iss={"essential": True, "value": ISSUER},
            aud={"essential": True, "value": audience},
            sub={"essential": True},
            jti={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
        )
        for audience in (AUDIENCE, OTHER_AUDIENCE)
    }
    algorithms = [fx.alg]

    def verify(token: str, audience: str) -> object:
        decoded = jose_jwt.decode(token, fx.jose_key, algorithms=algorithms)
        registries[audience].validate(decoded.claims)
        return decoded.claims["sub"]

    return verify


def _bastion(fx: TokenFixture, *, revocation: bool) -> Callable[[str, str], object]:
    from bastion.core.sessions.index import Epoch, encode_epoch  # noqa: PLC0415
    from bastion.core.tokens import jwt as bastion_jwt  # noqa: PLC0415
    from bastion.core.tokens.reasons import TokenRejected  # noqa: PLC0415
    from bastion.engine.sessions.registry import epoch_key  # noqa: PLC0415
    from bastion.engine.tokens.revocation import Revocations  # noqa: PLC0415
    from bastion.stores.memory import MemoryStore  # noqa: PLC0415

    if fx.alg == "HS256":
        key = bastion_jwt.JWTKey.from_secret(fx.pem_or_secret, kid=fx.kid, alg="HS256")
    else:
        key = bastion_jwt.JWTKey.from_pem(fx.pem_or_secret, alg=fx.alg, kid=fx.kid)
    codec = bastion_jwt.JWTCodec(bastion_jwt.JWTKeySet(key), issuer=ISSUER, leeway=LEEWAY)
    decode = codec.decode
    if not revocation:

        def verify_codec(token: str, audience: str) -> object:
            return decode(token, typ=TYP, audience=audience, required=REQUIRED).subject

        return verify_codec
    store = MemoryStore()
    store.sync.set(epoch_key(SUBJECT), encode_epoch(Epoch(EPOCH, time.time() - 60)), 86_400.0)
    check = Revocations(store).check_sync

    def verify(token: str, audience: str) -> object:
        claims = decode(token, typ=TYP, audience=audience, required=REQUIRED)
        epoch = claims.raw.get("epoch")
        reason = check(claims.issuer, claims.token_id, claims.subject, epoch)
        if reason is not None:
            raise TokenRejected(reason)
        return claims.subject

    return verify


def have_codec() -> bool:
    """Whether helper ``jwt``'s codec is importable (without it: the peer rows only)."""
    try:
        return importlib.util.find_spec("bastion.core.tokens.jwt") is not None
    except ModuleNotFoundError:
        return False


def build_verifiers(fx: TokenFixture) -> dict[str, Callable[[str, str], object]]:
    """``label -> verify(token, audience)`` for every verification case, each proved: it
    accepts ``fx.token`` (answering the subject) and refuses it under another audience. The
    bastion labels are present once ``bastion.core.tokens.jwt`` exists."""
    verifiers = {PYJWT: _pyjwt(fx), JOSERFC: _joserfc(fx)}
    if have_codec():
        ours = _bastion(fx, revocation=True)
        verifiers |= {CODEC_ONLY: _bastion(fx, revocation=False), OURS: ours, VS_JOSERFC: ours}
    for label, verify in verifiers.items():
        _prove(f"{fx.alg}: {label}", verify, fx.token)
    return verifiers


def _prove(name: str, verify: Callable[[str, str], object], token: str) -> None:
    from bastion.errors import BadToken  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        answer = verify(token, AUDIENCE)
        if answer != SUBJECT:
            raise RuntimeError(f"tokens case {name!r} answered {answer!r}, not {SUBJECT!r}")
        try:
            verify(token, OTHER_AUDIENCE)
        except (pyjwt.InvalidTokenError, JoseError, BadToken):
            return
    raise RuntimeError(f"tokens case {name!r} accepted a token for another audience")


def verify_op(fx: TokenFixture, label: str) -> Callable[[], object]:
    """The timed operation of case ``label``: one verification of ``fx.token``."""
    verify = build_verifiers(fx)[label]
    token = fx.token

    def op() -> object:
        return verify(token, AUDIENCE)

    return op


def _ignore_joserfc_warning() -> None:
    from joserfc.errors import SecurityWarning  # noqa: PLC0415

    warnings.filterwarnings("ignore", category=SecurityWarning)


@asynccontextmanager
async def token_cases(options: Options) -> AsyncIterator[list[Case]]:
    """Verification cases for every algorithm, then the refresh rotation cases (if any)."""
    from bench.groups.tokens_refresh import rotation_cases  # noqa: PLC0415

    cases: list[Case] = []
    with warnings.catch_warnings():
        _ignore_joserfc_warning()
        for alg in ALGORITHMS:
            fx = make_fixture(alg)
            verifiers = build_verifiers(fx)
            for label in (label for label in LABELS if label in verifiers):
                base = _BASELINES[label]
                cases.append(
                    sync_case(
                        f"{alg}: {label}",
                        partial(verifiers[label], fx.token, AUDIENCE),
                        baseline=None if base is None else f"{alg}: {base}",
                        weight=VERIFY_WEIGHT,
                    )
                )
        async with AsyncExitStack() as stack:
            cases += await rotation_cases(stack, options)
            yield cases


GROUP = Group(
    name="tokens",
    title=(
        "Access-token verification of one token per algorithm (every verifier requires iss, "
        "aud, sub, jti, iat, exp; bastion also checks typ and the header and, in the last "
        "rows, the deny-list and user epoch on a memory store), ratios against PyJWT's "
        "decode with claim validation; refresh rotations on SQLite and Redis against a raw "
        "read-and-write of one record. Targets: bastion with the revocation check >= 1.5x "
        "PyJWT's rate (ratio <= 0.67) and >= joserfc's (<= 1.00 vs joserfc)."
    ),
    iterations=200,
    cases=token_cases,
)
