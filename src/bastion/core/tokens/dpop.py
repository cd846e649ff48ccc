"""DPoP proofs (RFC 9449): sender-constrained tokens, checked without I/O.

A DPoP proof is a small JWT the client signs, for every request, with a key pair it holds; the
public half travels in the proof's ``jwk`` header. The server binds an access (or refresh)
token to the key's RFC 7638 thumbprint (``cnf.jkt``), so a stolen token is useless without the
private key. :class:`DPoPVerifier` runs the checks of RFC 9449 section 4.3 on one proof, in
this order, cheapest first, and returns a :class:`DPoPProof`:

1. size cap on the raw text, before any base64 or JSON work (``max_bytes``, 8 KiB);
2. three segments of canonical base64url (no padding, no stray bits), JSON objects with no
   member named twice (a duplicate could make two parsers read two different proofs);
3. header: ``alg`` not ``none`` in any spelling, and one of the allowed asymmetric algorithms
   (never ``HS*``: a MAC key would have to be shared, so it proves nothing); ``typ`` exactly
   ``dpop+jwt`` (RFC 8725 section 3.11: an access token or ID token is never a proof); no
   ``crit`` (no extension is understood) and no other key reference (``jku``, ``x5u``,
   ``x5c``, ``x5t``) beside ``jwk``;
4. ``jwk``: a public key (any private member ``d``, ``p``, ``q``, ``dp``, ``dq``, ``qi``,
   ``oth`` or ``k`` refused) whose type and curve match ``alg``, in its one canonical encoding
   (full-length EC coordinates, no leading zero octets in RSA integers, so one key has one
   thumbprint), RSA of 2048 to 8192 bits;
5. the signature, with exactly that key and that algorithm (joserfc's algorithm models);
6. claims: ``jti`` (text, bounded), ``htm`` equal to the method (case-sensitive), ``htu``
   equal to the request URL after RFC 3986 normalisation (:func:`normalize_htu`), ``iat`` not
   older than ``max_age`` and not ahead of the clock by more than ``leeway``; ``ath`` equal to
   the access token's hash when one is presented; the thumbprint equal to ``expected_jkt``
   (the token's ``cnf.jkt``), compared in constant time; with ``nonces``, the server's current
   nonce (:mod:`bastion.core.tokens.dpop_nonce`; refused with ``DPOP_NONCE``, error code
   ``use_dpop_nonce``).

Replay: the verifier is stateless. The ``jti`` of an accepted proof must be remembered for
:attr:`DPoPVerifier.replay_ttl` seconds at least (``max_age + leeway``: the longest a proof
stays acceptable) by :class:`bastion.engine.tokens.dpop.DPoPReplayCache`; a proof seen twice is
refused there.

Every refusal raises :class:`DPoPRejected`, a
:class:`~bastion.core.tokens.reasons.TokenRejected` whose ``reason`` is ``DPOP_INVALID`` (the
proof itself is malformed, mistyped, badly keyed or badly signed), ``DPOP_MISMATCH`` (a valid
proof made for another request, key, token or time) or ``DPOP_REPLAYED``, so every proof
refusal is answered with RFC 9449's ``invalid_dpop_proof`` error code (``DPOP_NONCE``, a
missing or stale server nonce, with ``use_dpop_nonce``); ``check`` names the exact check
(:class:`DPoPCheck`) for audit events and tests.

The request URL. ``htu`` is compared with the URL the client sent the request to, so it
must be built from values the app trusts: :func:`htu_for` takes scheme, host and path, and
:func:`request_htu` believes ``X-Forwarded-Proto`` / ``X-Forwarded-Host`` only from a proxy
that :class:`~bastion.core.client.TrustedProxies` trusts. Danger: the ``Host`` header is the
client's word; an app reachable under several names, or through an untrusted hop, should build
``htu`` from its configured public origin instead, or a proof made for one server can be
replayed to another that shares the key binding.

Needs the ``jwt`` extra (``pip install 'bastion[jwt]'``: joserfc), imported when a verifier is
built.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from bastion.core.clock import Clock, system_clock
from bastion.core.tokens.htu import join_htu, normalize_htu
from bastion.core.tokens.reasons import TokenReason, TokenRejected
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from bastion.core.client import TrustedProxies

__all__ = [
    "DEFAULT_ALGORITHMS",
    "DEFAULT_LEEWAY",
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_BYTES",
    "DPOP_TYP",
    "SUPPORTED_ALGORITHMS",
    "DPoPCheck",
    "DPoPProof",
    "DPoPRejected",
    "DPoPVerifier",
    "NonceChecker",
    "access_token_hash",
    "htu_for",
    "jwk_thumbprint",
    "normalize_htu",
    "request_htu",
]

DPOP_TYP: Final = "dpop+jwt"
DEFAULT_ALGORITHMS: Final = ("EdDSA", "ES256", "RS256")
DEFAULT_MAX_AGE: Final = 60.0
DEFAULT_LEEWAY: Final = 5.0
DEFAULT_MAX_BYTES: Final = 8192
DEFAULT_MAX_JTI_LENGTH: Final = 256

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
_OTHER_KEY_HEADERS: Final = frozenset({"jku", "x5u", "x5c", "x5t", "x5t#S256"})
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


@dataclass(frozen=True, slots=True)
class DPoPProof:
    """A proof that passed every stateless check. Holds no secret: ``jkt`` is the public key's
    thumbprint (bind tokens to it, ``cnf.jkt``), ``jti`` the replay identifier."""

    jkt: str
    jti: str
    htm: str
    htu: str  # the claim as normalised (equal to the request URL's normal form)
    iat: float
    ath: str | None
    nonce: str | None
    alg: str = ""


# -- encoding ----------------------------------------------------------------------------------


def _b64decode(segment: str, check: DPoPCheck = DPoPCheck.NOT_CANONICAL) -> bytes:
    """Canonical base64url without padding: the one encoding of each byte string."""
    if _B64URL.fullmatch(segment) is None or len(segment) % 4 == 1:
        raise DPoPRejected(check)
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise DPoPRejected(check) from None
    if _b64encode(raw) != segment:  # stray bits in the last character
        raise DPoPRejected(check)
    return raw


def _b64encode(raw: bytes) -> str:
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


def _json_object(raw: bytes) -> dict[str, Any]:
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
    return _b64decode(value, DPoPCheck.BAD_KEY)


def _public_members(jwk: object, alg: str) -> dict[str, str]:
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
    return _b64encode(hashlib.sha256(canonical.encode("utf-8")).digest())


def access_token_hash(access_token: str) -> str:
    """The ``ath`` of ``access_token``: base64url of the SHA-256 of its ASCII text.

    Raises ``ValueError`` for non-ASCII text (no access token is)."""
    return _b64encode(hashlib.sha256(access_token.encode("ascii")).digest())


# -- the request URL ---------------------------------------------------------------------------


def htu_for(scheme: str, host: str, path: str) -> str:
    """The request URL to check ``htu`` against, from trusted parts: ``scheme`` and ``host``
    (with its port, as in a ``Host`` header) resolved by
    :class:`~bastion.core.client.TrustedProxies` (see :func:`request_htu`) or taken from the
    app's configured public origin, and the request ``path``. Never build it from raw
    ``X-Forwarded-*`` headers: any client can send them.

    Pass the raw path as received (ASGI ``raw_path``, WSGI ``REQUEST_URI`` without the query);
    a decoded path is percent-encoded again (UTF-8), which is exact unless it held a literal
    ``%``. A query or fragment in ``path`` is dropped. Raises :class:`DPoPRejected` (``URL``)
    when the parts cannot form a URL (a ``Host`` header with ``/`` or ``@`` in it, say), so no
    proof can match such a request.
    """
    normal = join_htu(scheme, host, path)
    if normal is None:
        raise DPoPRejected(DPoPCheck.URL)
    return normal


def request_htu(
    proxies: TrustedProxies,
    *,
    peer: str | None,
    scheme: str,
    host: str,
    path: str,
    forwarded_proto: str | None = None,
    forwarded_host: str | None = None,
) -> str:
    """:func:`htu_for` of a request, believing ``X-Forwarded-Proto`` and ``X-Forwarded-Host``
    (first value of each) only when ``peer``, the connection's address, is a proxy ``proxies``
    trusts; otherwise the connection's own ``scheme`` and ``Host`` count."""
    if (forwarded_proto or forwarded_host) and proxies.trusts(peer):
        if forwarded_proto:
            scheme = forwarded_proto.split(",", 1)[0].strip()
        if forwarded_host:
            host = forwarded_host.split(",", 1)[0].strip()
    return htu_for(scheme, host, path)


# -- the verifier ------------------------------------------------------------------------------


def _joserfc_algorithms(names: Iterable[str]) -> dict[str, Any]:
    try:
        from joserfc.jws import JWSRegistry  # noqa: PLC0415 (the jwt extra loads on demand)
    except ImportError:
        raise ConfigurationError(
            "DPoP needs the joserfc package; install it with: pip install 'bastion[jwt]'",
            setting="dpop",
        ) from None
    # The registry's class table is filled when joserfc.jws is imported; reading it directly
    # (not JWSRegistry.get_alg) skips the per-call deprecation warning on EdDSA.
    return {name: JWSRegistry.algorithms[name] for name in names}


def _import_key(members: dict[str, str]) -> Any:
    from joserfc.jwk import import_key  # noqa: PLC0415 (the jwt extra loads on demand)

    return import_key(members, members["kty"])  # type: ignore[call-overload]


def _seconds(setting: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigurationError(f"{setting} must be a number of seconds", setting=setting)
    if not low <= value <= high:
        raise ConfigurationError(
            f"{setting} must be from {low:g} to {high:g} seconds, got {value!r}", setting=setting
        )
    return float(value)


def _algorithms(algorithms: object) -> tuple[str, ...]:
    if isinstance(algorithms, str) or not isinstance(algorithms, tuple | list | frozenset):
        raise ConfigurationError(
            "algorithms must be a tuple of JWS algorithm names, e.g. ('EdDSA', 'ES256')",
            setting="algorithms",
        )
    chosen: list[str] = []
    for name in algorithms:
        if not isinstance(name, str):
            raise ConfigurationError("algorithms must be names (str)", setting="algorithms")
        if name.strip().lower() == "none" or name.upper().startswith("HS"):
            raise ConfigurationError(
                f"algorithm {name!r} cannot sign a DPoP proof: RFC 9449 needs an asymmetric "
                "signature (none proves nothing, a MAC key would be shared with the server)",
                setting="algorithms",
            )
        if name not in SUPPORTED_ALGORITHMS:
            raise ConfigurationError(
                f"algorithm {name!r} is not supported for DPoP; choose from "
                f"{', '.join(SUPPORTED_ALGORITHMS)}",
                setting="algorithms",
            )
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise ConfigurationError("algorithms must name at least one", setting="algorithms")
    return tuple(chosen)


@runtime_checkable
class NonceChecker(Protocol):
    """What checks a proof's ``nonce`` claim: :class:`~bastion.core.tokens.dpop_nonce.DPoPNonces`
    (stateless server nonces), or an app's own. Raises :class:`DPoPRejected` to refuse."""

    def check(self, nonce: str | None) -> None: ...


class DPoPVerifier:
    """Checks DPoP proofs against a request (see the module docstring); stateless, so one
    verifier serves every request and thread. Pair it with a replay cache."""

    __slots__ = (
        "_algorithms",
        "_clock",
        "_models",
        "leeway",
        "max_age",
        "max_bytes",
        "max_jti",
        "nonces",
    )

    def __init__(
        self,
        *,
        algorithms: Iterable[str] = DEFAULT_ALGORITHMS,
        max_age: float = DEFAULT_MAX_AGE,
        leeway: float = DEFAULT_LEEWAY,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_jti_length: int = DEFAULT_MAX_JTI_LENGTH,
        nonces: NonceChecker | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self._algorithms = _algorithms(algorithms)
        self.max_age = _seconds("max_age", max_age, 1.0, 3600.0)
        self.leeway = _seconds("leeway", leeway, 0.0, 300.0)
        for setting, value, low, high in (
            ("max_bytes", max_bytes, 512, 65536),
            ("max_jti_length", max_jti_length, 16, 1024),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigurationError(
                    f"{setting} must be a whole number from {low} to {high}, got {value!r}",
                    setting=setting,
                )
        self.max_bytes = max_bytes
        self.max_jti = max_jti_length
        if not isinstance(clock, Clock):
            raise ConfigurationError("clock must have a now() method", setting="clock")
        self._clock = clock
        if nonces is not None and not isinstance(nonces, NonceChecker):
            raise ConfigurationError(
                "nonces must be a DPoPNonces (or have a check(nonce) method)", setting="nonces"
            )
        self.nonces = nonces
        self._models = _joserfc_algorithms(self._algorithms)

    def __repr__(self) -> str:
        return (
            f"DPoPVerifier(algorithms={self._algorithms!r}, max_age={self.max_age!r}, "
            f"leeway={self.leeway!r})"
        )

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The allowed algorithms, for the ``DPoP algs="..."`` challenge (RFC 9449 7.1)."""
        return self._algorithms

    @property
    def replay_ttl(self) -> float:
        """How long an accepted ``jti`` must be remembered: a proof dated ``leeway`` ahead of
        the clock stays acceptable for ``max_age + leeway`` seconds."""
        return self.max_age + self.leeway

    def verify(
        self,
        proof: str,
        *,
        method: str,
        url: str,
        access_token: str | None = None,
        expected_jkt: str | None = None,
    ) -> DPoPProof:
        """Check ``proof`` (the ``DPoP`` header's value) for a request of ``method`` to
        ``url`` (:func:`htu_for`; query and fragment are ignored). With ``access_token`` (the
        token presented alongside, at a resource), ``ath`` must be its hash; with
        ``expected_jkt`` (the token's ``cnf.jkt``), the proof's key must be that key.

        Raises :class:`DPoPRejected`. Does not remember the ``jti``: run the returned proof
        through the replay cache before acting on the request.
        """
        if not isinstance(proof, str):
            raise DPoPRejected(DPoPCheck.MALFORMED)
        if len(proof) > self.max_bytes:
            raise DPoPRejected(DPoPCheck.TOO_LARGE)
        if not proof.isascii() or proof.count(".") != 2:
            raise DPoPRejected(DPoPCheck.MALFORMED)
        header_b64, payload_b64, signature_b64 = proof.split(".")
        header = _json_object(_b64decode(header_b64))
        alg, public = self._check_header(header)
        claims = _json_object(_b64decode(payload_b64))
        signature = _b64decode(signature_b64)
        if not signature:
            raise DPoPRejected(DPoPCheck.BAD_SIGNATURE)
        try:
            key = _import_key(public)
            valid = self._models[alg].verify(
                f"{header_b64}.{payload_b64}".encode("ascii"), signature, key
            )
        except (ValueError, TypeError, KeyError, ArithmeticError) as exc:  # joserfc's errors
            raise DPoPRejected(DPoPCheck.BAD_KEY) from exc  # are ValueErrors
        if not valid:
            raise DPoPRejected(DPoPCheck.BAD_SIGNATURE)
        found = self._check_claims(claims, method=method, url=url, access_token=access_token)
        jkt = jwk_thumbprint(public)
        if expected_jkt is not None and not _same(jkt, expected_jkt):
            raise DPoPRejected(DPoPCheck.KEY_MISMATCH)
        jti, htm, htu, iat, ath, nonce = found
        if self.nonces is not None:
            self.nonces.check(nonce)
        return DPoPProof(jkt=jkt, jti=jti, htm=htm, htu=htu, iat=iat, ath=ath, nonce=nonce, alg=alg)

    def _check_header(self, header: dict[str, Any]) -> tuple[str, dict[str, str]]:
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise DPoPRejected(DPoPCheck.ALG_NOT_ALLOWED)
        if alg.strip().lower() == "none":
            raise DPoPRejected(DPoPCheck.ALG_NONE)
        if header.get("typ") != DPOP_TYP:
            raise DPoPRejected(DPoPCheck.WRONG_TYPE)
        if alg not in self._models:
            raise DPoPRejected(DPoPCheck.ALG_NOT_ALLOWED)
        if "crit" in header:
            raise DPoPRejected(DPoPCheck.UNKNOWN_CRIT)
        if _OTHER_KEY_HEADERS.intersection(header):
            raise DPoPRejected(DPoPCheck.EMBEDDED_KEY)
        if "jwk" not in header:
            raise DPoPRejected(DPoPCheck.BAD_KEY)
        return alg, _public_members(header["jwk"], alg)

    def _check_claims(
        self, claims: dict[str, Any], *, method: str, url: str, access_token: str | None
    ) -> tuple[str, str, str, float, str | None, str | None]:
        jti, htm, htu, iat, ath, nonce = self._claim_values(claims)
        if htm != method:
            raise DPoPRejected(DPoPCheck.METHOD)
        normal = normalize_htu(htu)
        if normal is None or normal != normalize_htu(url):
            raise DPoPRejected(DPoPCheck.URL)
        now = self._clock.now()
        if now - iat > self.max_age:
            raise DPoPRejected(DPoPCheck.EXPIRED)
        if iat - now > self.leeway:
            raise DPoPRejected(DPoPCheck.ISSUED_IN_FUTURE)
        if access_token is not None:
            if ath is None:
                raise DPoPRejected(DPoPCheck.ATH_MISSING)
            try:
                expected = access_token_hash(access_token)
            except (UnicodeEncodeError, AttributeError):
                raise DPoPRejected(DPoPCheck.ATH_MISMATCH) from None
            if not _same(ath, expected):
                raise DPoPRejected(DPoPCheck.ATH_MISMATCH)
        return jti, htm, normal, iat, ath, nonce

    def _claim_values(
        self, claims: dict[str, Any]
    ) -> tuple[str, str, str, float, str | None, str | None]:
        """The claims of RFC 9449 section 4.2, present and of their JSON types."""
        for name in ("jti", "htm", "htu", "iat"):
            if name not in claims:
                raise DPoPRejected(DPoPCheck.MISSING_CLAIM)
        jti, htm, htu, iat = claims["jti"], claims["htm"], claims["htu"], claims["iat"]
        ath, nonce = claims.get("ath"), claims.get("nonce")
        if not isinstance(jti, str) or not 0 < len(jti) <= self.max_jti:
            raise DPoPRejected(DPoPCheck.BAD_CLAIM)
        if not isinstance(htm, str) or not isinstance(htu, str):
            raise DPoPRejected(DPoPCheck.BAD_CLAIM)
        if isinstance(iat, bool) or not isinstance(iat, int | float) or not math.isfinite(iat):
            raise DPoPRejected(DPoPCheck.BAD_CLAIM)
        if not isinstance(ath, str | None) or not isinstance(nonce, str | None):
            raise DPoPRejected(DPoPCheck.BAD_CLAIM)
        return jti, htm, htu, float(iat), ath, nonce


def _same(left: str, right: str) -> bool:
    """Constant-time equality of two texts (safe on non-ASCII input)."""
    if not isinstance(left, str) or not isinstance(right, str):
        return False
    return hmac.compare_digest(left.encode("utf-8"), right.encode("utf-8"))
