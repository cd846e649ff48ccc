"""JWT access tokens: a strict codec over joserfc's signatures, with typed verified claims.

:meth:`JWTCodec.decode` refuses a token at the first failed check, in this order, each with
its own :class:`~bastion.core.tokens.reasons.TokenReason`:

1. the size cap on the raw length (``TOO_LARGE``), before any base64 or JSON work;
2. the shape: three segments of canonical base64url (``MALFORMED``, ``NOT_CANONICAL``; see
   :mod:`bastion.core.tokens.compact`);
3. the header, a UTF-8 JSON object without duplicate members (``MALFORMED``,
   ``DUPLICATE_KEY``), then RFC 8725's rules: ``alg`` ``none`` in any spelling (``ALG_NONE``);
   ``kid`` naming a configured key (``UNKNOWN_KID``; nothing outside the key set is ever looked
   up); ``alg`` equal to that key's pinned algorithm (``ALG_NOT_ALLOWED``: an ``HS256`` token
   under an RSA/EC/Ed25519 key id dies here, so a public key is never an HMAC secret); no
   embedded key material ``jwk``/``jku``/``x5u``/``x5c``/``x5t`` (``EMBEDDED_KEY``); no
   ``crit`` (``UNKNOWN_CRIT``: no extension is implemented); ``typ`` equal to the expected
   token kind (``WRONG_TYPE``);
4. the signature, with the key's one algorithm (``BAD_SIGNATURE``);
5. the claims, parsed only now that they are authentic (``MALFORMED``, ``DUPLICATE_KEY``):
   presence (``MISSING_CLAIM``), JSON types and ranges (``BAD_CLAIM``), ``iss`` equal to the
   configured issuer (``WRONG_ISSUER``: equality, never a prefix), ``aud`` containing the
   expected audience exactly (``WRONG_AUDIENCE``), then ``exp``, ``nbf`` and ``iat`` against
   the clock with the configured leeway (``EXPIRED``, ``NOT_YET_VALID``, ``ISSUED_IN_FUTURE``).

Token kinds never stand in for each other: each kind has its own ``typ`` and its own audience,
and both are checked on every decode.
"""

from __future__ import annotations

import dataclasses
import json
import math
import secrets
from collections.abc import Collection, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Final, NoReturn

from bastion.core.clock import Clock, system_clock
from bastion.core.tokens.compact import b64url_encode, json_object, split_compact
from bastion.core.tokens.jwk import ALGORITHMS, JWTKey, JWTKeySet
from bastion.core.tokens.reasons import TokenReason, TokenRejected
from bastion.errors import ConfigurationError

__all__ = ["DEFAULT_REQUIRED", "Claims", "JWTCodec"]

DEFAULT_REQUIRED: Final = ("exp", "iat", "jti", "iss", "aud", "sub")
"""Claims a token must carry unless the caller says otherwise. ``exp``, ``iat``, ``iss`` and
``aud`` are required whatever ``required`` says: a token without them is never accepted."""

MAX_LEEWAY: Final = 300.0
"""Largest clock-skew allowance accepted, in seconds."""

MIN_MAX_BYTES: Final = 512
MAX_MAX_BYTES: Final = 65_536

MAX_NUMERIC_DATE: Final = 253_402_300_799
"""9999-12-31T23:59:59Z: a NumericDate beyond it (or before 1970) is refused as BAD_CLAIM."""

_EMBEDDED: Final = frozenset({"jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256"})
_UNUSUAL: Final = _EMBEDDED | {"crit"}


def _refuse(reason: TokenReason, message: str) -> NoReturn:
    raise TokenRejected(reason, message)


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Claims(Mapping[str, object]):
    """The verified claims of a token: the registered ones typed, every one in ``raw``.

    Reading ``claims["scope"]`` reads ``raw``. ``subject`` and ``token_id`` are ``""`` only
    when the caller did not require ``sub``/``jti`` and the token has none; ``not_before`` is
    None without ``nbf``. ``kid`` names the key that verified the token, ``typ`` its kind.
    """

    subject: str
    issuer: str
    audience: tuple[str, ...]
    token_id: str
    issued_at: float
    expires_at: float
    raw: Mapping[str, object]
    kid: str
    typ: str
    not_before: float | None = None

    def __getitem__(self, name: str) -> object:
        return self.raw[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)

    def __repr__(self) -> str:
        # Claim values may be personal data: the repr names the token, not its contents.
        return (
            f"Claims(typ={self.typ!r}, kid={self.kid!r}, token_id={self.token_id!r}, "
            f"expires_at={self.expires_at!r})"
        )


_NUMERIC: Final = (int, float)


def _bad_claim(name: str) -> NoReturn:
    _refuse(TokenReason.BAD_CLAIM, f"claim {name!r} is of the wrong JSON type or out of range")


def _audiences(value: object) -> tuple[str, ...]:
    if type(value) is str and value:
        return (value,)
    if type(value) is list and value and all(type(a) is str and a for a in value):
        return tuple(value)
    _refuse(TokenReason.BAD_CLAIM, "claim 'aud' is not a string or a list of strings")


def _media_type(value: str) -> str:
    # RFC 7515 section 4.1.9: media types compare case-insensitively, and "application/" may
    # be omitted when the rest has no other "/".
    value = value.lower()
    rest = value[12:]
    return rest if value.startswith("application/") and "/" not in rest else value


class JWTCodec:
    """Encode and verify JWTs of one issuer with one key set.

    ``leeway`` (0 to 300 s) is the clock skew allowed on ``exp``/``nbf``/``iat``; ``max_bytes``
    (512 to 65536, default 8 KiB) caps the raw token before any decoding. ``clock`` is read
    once per encode or decode.
    """

    __slots__ = ("_clock", "_issuer", "_keys", "_leeway", "_max_bytes")

    def __init__(
        self,
        keys: JWTKeySet,
        *,
        issuer: str,
        leeway: float = 30.0,
        max_bytes: int = 8192,
        clock: Clock = system_clock,
    ) -> None:
        if not isinstance(keys, JWTKeySet):
            _config(f"keys must be a JWTKeySet, not {type(keys).__name__}", "keys")
        if not isinstance(issuer, str) or not issuer or issuer != issuer.strip():
            _config(
                f"issuer must be a non-empty string without spaces around; got {issuer!r}", "issuer"
            )
        if (
            isinstance(leeway, bool)
            or not isinstance(leeway, int | float)
            or not 0 <= leeway <= MAX_LEEWAY
        ):
            _config(f"leeway must be 0 to {MAX_LEEWAY:g} seconds; got {leeway!r}", "leeway")
        if (
            isinstance(max_bytes, bool)
            or not isinstance(max_bytes, int)
            or not MIN_MAX_BYTES <= max_bytes <= MAX_MAX_BYTES
        ):
            _config(
                f"max_bytes must be an int from {MIN_MAX_BYTES} to {MAX_MAX_BYTES}; "
                f"got {max_bytes!r}",
                "max_bytes",
            )
        if not isinstance(clock, Clock):
            _config(f"clock must have a now() method; got {clock!r}", "clock")
        self._keys = keys
        self._issuer = issuer
        self._leeway = float(leeway)
        self._max_bytes = max_bytes
        self._clock = clock

    @property
    def keys(self) -> JWTKeySet:
        return self._keys

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def leeway(self) -> float:
        return self._leeway

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    def with_keys(self, keys: JWTKeySet) -> JWTCodec:
        """The same codec over another key set (after :meth:`JWTKeySet.rotated`)."""
        return JWTCodec(
            keys,
            issuer=self._issuer,
            leeway=self._leeway,
            max_bytes=self._max_bytes,
            clock=self._clock,
        )

    # -- encode -------------------------------------------------------------------------

    def encode(
        self, claims: Mapping[str, object], *, typ: str, expires_in: float | None = None
    ) -> str:
        """Sign ``claims`` as a token of kind ``typ`` with the signing key.

        Adds ``iss`` (the configured issuer; another one is refused), ``iat`` (now, whole
        seconds) and ``jti`` (128 random bits) unless given, and ``exp = iat + expires_in``
        when ``expires_in`` is given. ``exp`` and ``aud`` must end up present. The header is
        ``{"alg", "kid", "typ"}``. A malformed claim raises ConfigurationError (a bug in the
        caller), as does a token longer than ``max_bytes``, which decode would refuse.
        """
        key = self._keys.signing
        if key is None:
            _config("this key set is verify-only (no signing key)", "keys.signing")
        if not isinstance(typ, str) or not typ:
            _config("typ must be a non-empty string such as 'at+jwt'", "typ")
        body = dict(claims)
        if body.setdefault("iss", self._issuer) != self._issuer:
            _config("claims['iss'] differs from the codec's issuer", "claims.iss")
        iat = body.setdefault("iat", int(self._clock.now()))
        if expires_in is not None:
            if "exp" in body:
                _config("give exp in claims or expires_in, not both", "expires_in")
            if (
                isinstance(expires_in, bool)
                or not isinstance(expires_in, int | float)
                or not 0 < expires_in < math.inf
            ):
                _config(f"expires_in must be a positive number; got {expires_in!r}", "expires_in")
            body["exp"] = iat + expires_in  # type: ignore[operator]
        body.setdefault("jti", secrets.token_urlsafe(16))
        for name in ("exp", "aud"):
            if name not in body:
                _config(f"claims need {name!r}", f"claims.{name}")
        try:
            self._typed(body, ())
        except TokenRejected as error:
            _config(f"claims are not valid: {error}", "claims")
        _check_names(body)
        try:
            payload = json.dumps(
                body, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            ).encode("utf-8")
        except (TypeError, ValueError) as error:
            _config(f"claims must be JSON values: {error}", "claims")
        header = json.dumps(
            {"alg": key.alg, "kid": key.kid, "typ": typ}, separators=(",", ":")
        ).encode("utf-8")
        signing_input = b64url_encode(header) + b"." + b64url_encode(payload)
        token = signing_input + b"." + b64url_encode(key.sign(signing_input))
        if len(token) > self._max_bytes:
            _config(
                f"the token is {len(token)} bytes, over max_bytes={self._max_bytes}",
                "max_bytes",
            )
        return token.decode("ascii")

    # -- decode -------------------------------------------------------------------------

    def decode(
        self,
        token: str | bytes,
        *,
        typ: str,
        audience: str,
        required: Collection[str] = DEFAULT_REQUIRED,
    ) -> Claims:
        """Verify ``token`` as a token of kind ``typ`` for ``audience`` (module docstring).

        Raises :class:`TokenRejected` with the reason of the first failed check; nothing else
        for any input.
        """
        raw = self._capped(token)
        if type(typ) is not str or not typ or type(audience) is not str or not audience:
            _config("decode needs a non-empty typ and audience", "typ")
        signing_input, header_bytes, payload_bytes, signature = split_compact(raw)
        key = self._header(json_object(header_bytes), typ)
        if not key.verify(signing_input, signature):
            _refuse(TokenReason.BAD_SIGNATURE, "the signature does not verify")
        body = json_object(payload_bytes)
        subject, issuer, audiences, token_id, iat, exp, nbf = self._typed(body, required)
        if issuer != self._issuer:
            _refuse(TokenReason.WRONG_ISSUER, "the token is from another issuer")
        if audience not in audiences:
            _refuse(TokenReason.WRONG_AUDIENCE, "the token is for another audience")
        now = self._clock.now()
        leeway = self._leeway
        if now >= exp + leeway:
            _refuse(TokenReason.EXPIRED, "the token has expired")
        if nbf is not None and now + leeway < nbf:
            _refuse(TokenReason.NOT_YET_VALID, "the token is not valid yet")
        if iat > now + leeway:
            _refuse(TokenReason.ISSUED_IN_FUTURE, "the token was issued in the future")
        return _verified(
            subject,
            issuer,
            audiences,
            token_id,
            iat,
            exp,
            MappingProxyType(body),
            key.kid,
            typ,
            nbf,
        )

    def _capped(self, token: object) -> bytes:
        # The size cap comes first, on the raw length, before any decoding.
        if type(token) is str:
            if len(token) > self._max_bytes:
                _refuse(TokenReason.TOO_LARGE, "the token is over the size cap")
            if not token.isascii():
                _refuse(TokenReason.NOT_CANONICAL, "a token is ASCII base64url text")
            return token.encode("ascii")
        if isinstance(token, bytes | bytearray):
            if len(token) > self._max_bytes:
                _refuse(TokenReason.TOO_LARGE, "the token is over the size cap")
            return bytes(token)
        _refuse(TokenReason.MALFORMED, "a token is text or bytes")

    def _header(self, header: dict[str, Any], typ: str) -> JWTKey:
        alg = header.get("alg")
        if type(alg) is not str:
            _refuse(TokenReason.MALFORMED, "the header has no 'alg' string")
        if alg not in ALGORITHMS and alg.strip().lower() == "none":
            _refuse(TokenReason.ALG_NONE, "unsigned tokens are refused")
        kid = header.get("kid")
        key = self._keys.get(kid) if type(kid) is str else None
        if key is None:
            _refuse(TokenReason.UNKNOWN_KID, "the header names no configured key id")
        if alg != key.alg:
            _refuse(TokenReason.ALG_NOT_ALLOWED, "the algorithm is not the key's algorithm")
        if not _UNUSUAL.isdisjoint(header):
            if not _EMBEDDED.isdisjoint(header):
                _refuse(TokenReason.EMBEDDED_KEY, "the header carries key material")
            _refuse(TokenReason.UNKNOWN_CRIT, "the header names critical extensions")
        found = header.get("typ")
        if found != typ and (type(found) is not str or _media_type(found) != _media_type(typ)):
            _refuse(TokenReason.WRONG_TYPE, "the token is of another kind")
        return key

    @staticmethod
    def _typed(
        body: Mapping[str, Any], required: Collection[str]
    ) -> tuple[str, str, tuple[str, ...], str, float, float, float | None]:
        for name in required:
            if name not in body:
                _refuse(TokenReason.MISSING_CLAIM, f"claim {name!r} is required")
        if "exp" not in body or "iat" not in body or "iss" not in body or "aud" not in body:
            _refuse(TokenReason.MISSING_CLAIM, "claims exp, iat, iss and aud are required")
        # Inlined type checks (this runs on every request); type() and not isinstance(): a
        # JSON true is a bool, which isinstance counts as an int.
        exp, iat, issuer, aud = body["exp"], body["iat"], body["iss"], body["aud"]
        if type(exp) not in _NUMERIC or not 0 <= exp <= MAX_NUMERIC_DATE:
            _bad_claim("exp")
        if type(iat) not in _NUMERIC or not 0 <= iat <= MAX_NUMERIC_DATE:
            _bad_claim("iat")
        nbf = body.get("nbf")
        if (nbf is not None or "nbf" in body) and (
            type(nbf) not in _NUMERIC or not 0 <= nbf <= MAX_NUMERIC_DATE  # type: ignore[operator]
        ):
            _bad_claim("nbf")
        if type(issuer) is not str or not issuer:
            _bad_claim("iss")
        audiences = (aud,) if type(aud) is str and aud else _audiences(aud)
        subject = body.get("sub", "")
        if type(subject) is not str or (not subject and "sub" in body):
            _bad_claim("sub")
        token_id = body.get("jti", "")
        if type(token_id) is not str or (not token_id and "jti" in body):
            _bad_claim("jti")
        return subject, issuer, audiences, token_id, iat, exp, nbf

    def __repr__(self) -> str:
        return (
            f"JWTCodec(issuer={self._issuer!r}, keys={self._keys!r}, leeway={self._leeway!r}, "
            f"max_bytes={self._max_bytes!r})"
        )


_new = object.__new__
(_SUBJECT, _ISSUER, _AUDIENCE, _TOKEN_ID, _ISSUED_AT, _EXPIRES_AT, _RAW, _KID, _TYP, _NBF) = (
    getattr(Claims, item.name).__set__ for item in dataclasses.fields(Claims)
)


def _verified(  # noqa: PLR0917 (one argument per field)
    subject: str,
    issuer: str,
    audience: tuple[str, ...],
    token_id: str,
    issued_at: float,
    expires_at: float,
    raw: Mapping[str, object],
    kid: str,
    typ: str,
    not_before: float | None,
) -> Claims:
    # Claims(...) as the dataclass would build it, through the slot descriptors: the frozen
    # __init__ sets each field by name through object.__setattr__, at twice the cost, on every
    # verification. The values were checked by decode.
    claims = _new(Claims)
    _SUBJECT(claims, subject)
    _ISSUER(claims, issuer)
    _AUDIENCE(claims, audience)
    _TOKEN_ID(claims, token_id)
    _ISSUED_AT(claims, issued_at)
    _EXPIRES_AT(claims, expires_at)
    _RAW(claims, raw)
    _KID(claims, kid)
    _TYP(claims, typ)
    _NBF(claims, not_before)
    return claims


def _config(message: str, setting: str) -> NoReturn:
    raise ConfigurationError(message, setting=setting)


def _check_names(value: object) -> None:
    # json.dumps turns 1 into "1": {1: "a", "1": "b"} would encode a duplicate member.
    if isinstance(value, Mapping):
        for name, item in value.items():
            if not isinstance(name, str):
                _config(f"claim member names must be strings; got {name!r}", "claims")
            _check_names(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_names(item)
