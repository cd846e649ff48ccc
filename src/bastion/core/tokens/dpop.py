"""DPoP proofs (RFC 9449): sender-constrained tokens, checked without I/O.

A DPoP proof is a small JWT the client signs, for every request, with a key pair it holds; the
public half travels in the proof's ``jwk`` header. The server binds an access (or refresh)
token to the key's RFC 7638 thumbprint (``cnf.jkt``), so a stolen token is useless without the
private key. :class:`DPoPVerifier` runs the checks of RFC 9449 section 4.3 on one proof,
cheapest first (the header's before the payload is decoded), and returns a
:class:`DPoPProof`:

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

import hmac
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from bastion.core.clock import Clock, system_clock
from bastion.core.tokens.dpop_jwk import (
    SUPPORTED_ALGORITHMS,
    DPoPCheck,
    DPoPRejected,
    access_token_hash,
    decode_segment,
    json_object,
    jwk_thumbprint,
    public_members,
)
from bastion.core.tokens.htu import join_htu, normalize_htu
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

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
_OTHER_KEY_HEADERS: Final = frozenset({"jku", "x5u", "x5c", "x5t", "x5t#S256"})


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
    forwarded_for: Sequence[str] = (),
) -> str:
    """:func:`htu_for` of a request, believing ``X-Forwarded-Proto`` and ``X-Forwarded-Host``
    (the item the first trusted proxy wrote, counting the proxies in ``forwarded_for``:
    :meth:`~bastion.core.client.TrustedProxies.forwarded_value`) only when ``peer``, the
    connection's address, is a proxy ``proxies`` trusts; otherwise the connection's own
    ``scheme`` and ``Host`` count."""
    if (forwarded_proto or forwarded_host) and proxies.trusts(peer):
        scheme = proxies.forwarded_value(peer, forwarded_proto, forwarded_for) or scheme
        host = proxies.forwarded_value(peer, forwarded_host, forwarded_for) or host
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
    if isinstance(algorithms, str) or not isinstance(algorithms, tuple | list | set | frozenset):
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
        header = json_object(decode_segment(header_b64))
        alg, public = self._check_header(header)
        claims = json_object(decode_segment(payload_b64))
        signature = decode_segment(signature_b64)
        if not signature:
            raise DPoPRejected(DPoPCheck.BAD_SIGNATURE)
        try:
            key = _import_key(public)
            valid = self._models[alg].verify(
                f"{header_b64}.{payload_b64}".encode("ascii"), signature, key
            )
        except (ValueError, TypeError, KeyError, ArithmeticError) as exc:
            # joserfc's errors are ValueErrors; cryptography refuses a point off its curve
            raise DPoPRejected(DPoPCheck.BAD_KEY) from exc
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
        return alg, public_members(header["jwk"], alg)

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
