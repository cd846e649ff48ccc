"""The parts of a DPoP proof checked before its claims: the refusal vocabulary
(:class:`DPoPCheck`, :class:`DPoPRejected`), the strict encoding (canonical base64url, JSON
objects without duplicate members), the ``jwk`` header's public key, its RFC 7638 thumbprint,
and the ``ath`` hash. :mod:`bastion.core.tokens.dpop` re-exports the public names; read its
docstring for the order of the checks and why each is there.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import re
from typing import Any, Final

from bastion.core.tokens.reasons import TokenReason, TokenRejected

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "DPoPCheck",
    "DPoPRejected",
    "access_token_hash",
    "jwk_thumbprint",
]

# alg -> (kty, curves allowed for it; empty for RSA)
SUPPORTED_ALGORITHMS: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "EdDSA": ("OKP", ("Ed25519", "Ed448")),
    "Ed25519": ("OKP", ("Ed25519",)),
    "Ed448": ("OKP", ("Ed448",)),
    "ES256": ("EC", ("P-256",)),
    "ES384": ("EC", ("P-384",)),
    "ES512": ("EC", ("P-521",)),
    "RS256": ("RSA", ()),
    "RS384": ("RSA", ()),
    "RS512": ("RSA", ()),
    "PS256": ("RSA", ()),
    "PS384": ("RSA", ()),
    "PS512": ("RSA", ()),
}
"""The asymmetric JWS algorithms a verifier can be configured with, and the key each needs."""

_COORDINATE_BYTES: Final = {"P-256": 32, "P-384": 48, "P-521": 66, "Ed25519": 32, "Ed448": 57}
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_THUMBPRINT_MEMBERS: Final = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
}
_RSA_MIN_BITS: Final = 2048
_RSA_MAX_BITS: Final = 8192
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*")


class DPoPCheck(enum.StrEnum):
    """Which check refused a proof (stable values, for audit events and tests)."""

    TOO_LARGE = "too_large"  # over max_bytes, refused before any decoding
    MALFORMED = "malformed"  # not three base64url segments of JSON objects
    NOT_CANONICAL = "not_canonical"  # padding, stray bits, another alphabet
    DUPLICATE_KEY = "duplicate_key"  # a JSON object names a member twice
    ALG_NONE = "alg_none"  # "none" in any spelling
    ALG_NOT_ALLOWED = "alg_not_allowed"  # HS*, or an algorithm outside the allow-list
    WRONG_TYPE = "wrong_type"  # typ is not exactly dpop+jwt
    UNKNOWN_CRIT = "unknown_crit"  # a crit extension (none is understood)
    EMBEDDED_KEY = "embedded_key"  # jku / x5u / x5c / x5t beside jwk
    BAD_KEY = "bad_key"  # jwk missing, malformed, not canonical, or not a usable key
    PRIVATE_KEY = "private_key"  # jwk carries private key material
    KEY_TYPE = "key_type"  # jwk type or curve does not match alg
    WEAK_KEY = "weak_key"  # RSA under 2048 bits (or over 8192)
    BAD_SIGNATURE = "bad_signature"
    MISSING_CLAIM = "missing_claim"  # jti, htm, htu or iat absent
    BAD_CLAIM = "bad_claim"  # a claim of the wrong JSON type or length
    METHOD = "method"  # htm is not the request method
    URL = "url"  # htu is not the request URL
    EXPIRED = "expired"  # iat older than max_age
    ISSUED_IN_FUTURE = "issued_in_future"  # iat ahead of the clock by more than leeway
    ATH_MISSING = "ath_missing"  # an access token was presented, the proof has no ath
    ATH_MISMATCH = "ath_mismatch"  # ath is the hash of another token
    KEY_MISMATCH = "key_mismatch"  # the proof's key is not the one the token is bound to
    REPLAYED = "replayed"  # this jti was accepted before, with this key
    NONCE_MISSING = "nonce_missing"  # the server requires its nonce, the proof has none
    NONCE_STALE = "nonce_stale"  # not a current nonce of this server

    @property
    def reason(self) -> TokenReason:
        """The :class:`~bastion.core.tokens.reasons.TokenReason` this check refuses with."""
        if self is DPoPCheck.REPLAYED:
            return TokenReason.DPOP_REPLAYED
        if self in (DPoPCheck.NONCE_MISSING, DPoPCheck.NONCE_STALE):
            return TokenReason.DPOP_NONCE
        if self in _MISMATCHES:
            return TokenReason.DPOP_MISMATCH
        return TokenReason.DPOP_INVALID


_MISMATCHES: Final = frozenset(
    {
        DPoPCheck.METHOD,
        DPoPCheck.URL,
        DPoPCheck.EXPIRED,
        DPoPCheck.ISSUED_IN_FUTURE,
        DPoPCheck.ATH_MISSING,
        DPoPCheck.ATH_MISMATCH,
        DPoPCheck.KEY_MISMATCH,
    }
)


class DPoPRejected(TokenRejected):
    """A DPoP proof failed ``check``; ``reason`` is the check's
    :class:`~bastion.core.tokens.reasons.TokenReason`. The message names the check only, never
    the proof, a claim value or key material."""

    def __init__(self, check: DPoPCheck) -> None:
        super().__init__(check.reason, f"DPoP proof refused: {check.value}")
        self.check = check


# -- encoding ----------------------------------------------------------------------------------


def decode_segment(segment: str, check: DPoPCheck = DPoPCheck.NOT_CANONICAL) -> bytes:
    """Canonical base64url without padding: the one encoding of each byte string."""
    if _B64URL.fullmatch(segment) is None or len(segment) % 4 == 1:
        raise DPoPRejected(check)
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise DPoPRejected(check) from None
    if encode_segment(raw) != segment:  # stray bits in the last character
        raise DPoPRejected(check)
    return raw


def encode_segment(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, value in pairs:
        if name in found:
            raise DPoPRejected(DPoPCheck.DUPLICATE_KEY)
        found[name] = value
    return found


def _refuse_constant(_name: str) -> Any:
    raise DPoPRejected(DPoPCheck.MALFORMED)  # NaN, Infinity: not JSON


def json_object(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
        value = json.loads(
            text, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant
        )
    except DPoPRejected:
        raise  # a duplicate member (DPoPRejected is a ValueError too)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise DPoPRejected(DPoPCheck.MALFORMED) from None
    if not isinstance(value, dict):
        raise DPoPRejected(DPoPCheck.MALFORMED)
    return value


# -- keys --------------------------------------------------------------------------------------


def _member(jwk: dict[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise DPoPRejected(DPoPCheck.BAD_KEY)
    return decode_segment(value, DPoPCheck.BAD_KEY)


def public_members(jwk: object, alg: str) -> dict[str, str]:
    """The members of ``jwk`` that define a public key for ``alg``, checked (see step 4)."""
    if not isinstance(jwk, dict):
        raise DPoPRejected(DPoPCheck.BAD_KEY)
    if _PRIVATE_MEMBERS.intersection(jwk):
        raise DPoPRejected(DPoPCheck.PRIVATE_KEY)
    kty, curves = SUPPORTED_ALGORITHMS[alg]
    if jwk.get("kty") != kty:
        raise DPoPRejected(DPoPCheck.KEY_TYPE)
    use = jwk.get("use", "sig")
    if use != "sig":
        raise DPoPRejected(DPoPCheck.BAD_KEY)
    if kty == "RSA":
        n, e = _member(jwk, "n"), _member(jwk, "e")
        if n[0] == 0 or e[0] == 0 or len(e) > 8:
            raise DPoPRejected(DPoPCheck.BAD_KEY)
        bits = int.from_bytes(n, "big").bit_length()
        if not _RSA_MIN_BITS <= bits <= _RSA_MAX_BITS:
            raise DPoPRejected(DPoPCheck.WEAK_KEY)
        return {"kty": "RSA", "n": jwk["n"], "e": jwk["e"]}
    crv = jwk.get("crv")
    if not isinstance(crv, str) or crv not in curves:
        raise DPoPRejected(DPoPCheck.KEY_TYPE)
    size = _COORDINATE_BYTES[crv]
    if len(_member(jwk, "x")) != size:
        raise DPoPRejected(DPoPCheck.BAD_KEY)
    if kty == "OKP":
        if "y" in jwk:
            raise DPoPRejected(DPoPCheck.BAD_KEY)
        return {"kty": "OKP", "crv": crv, "x": jwk["x"]}
    if len(_member(jwk, "y")) != size:
        raise DPoPRejected(DPoPCheck.BAD_KEY)
    return {"kty": "EC", "crv": crv, "x": jwk["x"], "y": jwk["y"]}


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK, base64url: the JSON object of the
    key's required members only, in lexicographic order, without whitespace.

    Raises ``ValueError`` for a ``kty`` other than ``RSA``, ``EC`` or ``OKP``, ``TypeError``
    for a missing member. Members are taken as given: :class:`DPoPVerifier` first checks
    that they are in their one canonical encoding, so one key has one thumbprint.
    """
    kty = jwk.get("kty")
    names = _THUMBPRINT_MEMBERS.get(kty) if isinstance(kty, str) else None
    if names is None:
        raise ValueError(f"no RFC 7638 thumbprint for kty {kty!r} here")
    members = {}
    for name in names:
        value = jwk.get(name)
        if not isinstance(value, str):
            raise TypeError(f"a {kty} JWK needs the member {name!r} as a string")
        members[name] = value
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return encode_segment(hashlib.sha256(canonical.encode("utf-8")).digest())


def access_token_hash(access_token: str) -> str:
    """The ``ath`` of ``access_token``: base64url of the SHA-256 of its ASCII text.

    Raises ``ValueError`` for non-ASCII text (no access token is)."""
    return encode_segment(hashlib.sha256(access_token.encode("ascii")).digest())
