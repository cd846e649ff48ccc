"""JWT signing keys: one key id, one key, one algorithm, and the immutable key set around them.

A :class:`JWTKey` pins its algorithm: a token is checked with the algorithm its key id was
configured with, never with the one its header names. That is the whole defence against
algorithm confusion (CVE-2024-33663 in python-jose, CVE-2022-29217 in PyJWT): a token that
says ``HS256`` under the key id of an RSA, EC or Ed25519 key is refused before anything is
computed, so a public key can never be used as an HMAC secret.

A :class:`JWTKeySet` maps key ids to keys. The signing key signs; every key of the set
verifies, so a rotation (:meth:`JWTKeySet.rotated`) keeps older tokens valid until their key is
retired (:meth:`JWTKeySet.retired`). :meth:`JWTKeySet.jwks` is the public document for
``/.well-known/jwks.json``: public members only, never a private member, never an HMAC secret.

Key handling is joserfc's (``pip install 'bastion[jwt]'``): keys are imported and validated once,
at construction, and each key holds a ready verifier, so verification imports nothing.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import re
import secrets
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn, get_args

from bastion.core.keys import MIN_SECRET_BYTES, SecretKey
from bastion.errors import ConfigurationError

try:
    from cryptography.exceptions import UnsupportedAlgorithm
    from joserfc.errors import JoseError, SecurityWarning
    from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey
    from joserfc.jws import JWSRegistry
except ImportError as error:  # pragma: no cover (the dev environment has every extra)
    raise ImportError(
        "bastion's JWT support needs the 'jwt' extra: pip install 'bastion[jwt]'",
        name=error.name,
    ) from error

if TYPE_CHECKING:
    from joserfc.jwk import Key

__all__ = ["ALGORITHMS", "Algorithm", "JWTKey", "JWTKeySet"]

Algorithm = Literal["EdDSA", "ES256", "ES384", "RS256", "PS256", "HS256"]
"""The JWS algorithms bastion signs and verifies with (RFC 7518, RFC 8037)."""

ALGORITHMS: Final[frozenset[str]] = frozenset(get_args(Algorithm))

MIN_RSA_BITS: Final = 2048
"""Smallest RSA modulus accepted (NIST SP 800-131A)."""

_KEY_CLASS: Final[dict[str, type[Key]]] = {
    "EdDSA": OKPKey,
    "ES256": ECKey,
    "ES384": ECKey,
    "RS256": RSAKey,
    "PS256": RSAKey,
    "HS256": OctKey,
}
_CURVE: Final[dict[str, str]] = {"EdDSA": "Ed25519", "ES256": "P-256", "ES384": "P-384"}
_KID = re.compile(r"[\x21-\x7e]{1,256}", re.ASCII)
# A key id is visible ASCII: it is sent in headers and compared byte for byte.
_KEY_ERRORS = (JoseError, ValueError, TypeError, KeyError, UnsupportedAlgorithm)


def _fail(message: str, setting: str) -> NoReturn:
    raise ConfigurationError(message, setting=setting)


@contextlib.contextmanager
def _importing(setting: str, what: str) -> Iterator[None]:
    """Turn joserfc's refusals and its security warnings into a ConfigurationError.

    joserfc warns (instead of refusing) on weak keys such as short RSA moduli; a configuration
    must refuse them, so any :class:`SecurityWarning` raised while importing is an error.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SecurityWarning)
        try:
            yield
        except ConfigurationError:
            raise
        except _KEY_ERRORS as exc:
            _fail(f"{setting}: cannot use {what}: {type(exc).__name__}: {exc}", setting)
    for warning in caught:
        if issubclass(warning.category, SecurityWarning):
            _fail(f"{setting}: refused {what}: {warning.message}", setting)
        warnings.warn(warning.message, warning.category, stacklevel=3)


def _check_alg(alg: object, setting: str) -> str:
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        _fail(f"{setting} must be one of {sorted(ALGORITHMS)}; got {alg!r}", setting)
    return alg


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class JWTKey:
    """One key id bound to one key and one algorithm.

    ``key`` is the joserfc key object (private or public; an HS256 key is its secret). Build
    keys with the class methods; the constructor validates whatever it is given: the key type
    and curve must match ``alg``, RSA moduli have at least 2048 bits, HS256 secrets at least 32
    bytes, and a key's own ``alg``/``use``/``key_ops`` members (from a JWK) must agree.

    Danger: a private key or secret is in ``key``. ``repr`` shows only the id, the algorithm
    and whether the key can sign; the key cannot be pickled.
    """

    kid: str
    alg: Algorithm
    key: Key
    _verify: Callable[[bytes, bytes], bool] = field(init=False)
    _sign: Callable[[bytes], bytes] | None = field(init=False)
    _public: Key = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.kid, str) or _KID.fullmatch(self.kid) is None:
            _fail(f"kid must be 1-256 visible ASCII characters; got {self.kid!r}", "kid")
        alg = _check_alg(self.alg, "alg")
        key = self.key
        expected = _KEY_CLASS[alg]
        if not isinstance(key, expected):
            _fail(f"alg {alg} needs a {expected.key_type} key, not {type(key).__name__}", "alg")
        curve = _CURVE.get(alg)
        if curve is not None and key.curve_name != curve:  # type: ignore[union-attr]
            _fail(f"alg {alg} needs a {curve} key, not {key.curve_name}", "alg")  # type: ignore[union-attr]
        if isinstance(key, RSAKey) and key.public_key.key_size < MIN_RSA_BITS:
            _fail(
                f"RSA keys need at least {MIN_RSA_BITS} bits; got {key.public_key.key_size}",
                "key",
            )
        if isinstance(key, OctKey) and len(key.raw_value) < MIN_SECRET_BYTES:
            _fail(
                f"an {alg} secret needs at least {MIN_SECRET_BYTES} random bytes; got "
                f"{len(key.raw_value)} (generate one with JWTKey.generate('HS256'))",
                "secret",
            )
        if key.get("alg") not in (None, alg):
            _fail(f"the key is marked for alg {key.get('alg')!r}, not {alg}", "alg")
        if key.get("use") not in (None, "sig"):
            _fail(f"the key is marked for use {key.get('use')!r}, not 'sig'", "use")
        ops = key.get("key_ops")
        if ops is not None and "verify" not in ops and "sign" not in ops:
            _fail(f"the key's key_ops {ops!r} allow neither sign nor verify", "key_ops")
        model = JWSRegistry.algorithms[alg]
        public = key if isinstance(key, OctKey) else _public_half(key)
        with _importing("key", "the key"):
            model.check_key(public)
        signer = None
        if key.is_private and (ops is None or "sign" in ops):
            signer = functools.partial(model.sign, key=key)
        verify: Callable[[bytes, bytes], bool]
        if isinstance(key, OctKey):
            # joserfc's HMACAlgorithm.verify re-reads the key's key_ops and length on every
            # call; both were checked above, so the per-call work is the HMAC itself.
            keyed = hmac.new(key.get_op_key("verify"), digestmod=hashlib.sha256)
            verify = functools.partial(_hmac_verify, keyed)
        else:
            verify = functools.partial(model.verify, key=public)
        object.__setattr__(self, "_public", public)
        object.__setattr__(self, "_verify", verify)
        object.__setattr__(self, "_sign", signer)

    # -- construction -------------------------------------------------------------------

    @classmethod
    def generate(cls, alg: Algorithm = "EdDSA", *, kid: str | None = None) -> JWTKey:
        """A new random key for ``alg``; ``kid`` defaults to the RFC 7638 thumbprint (a
        random id for HS256, whose thumbprint would be a hash of the secret)."""
        alg = _check_alg(alg, "alg")  # type: ignore[assignment]
        key: Key
        if alg == "HS256":
            key = OctKey.import_key(secrets.token_bytes(MIN_SECRET_BYTES))
            kid = kid if kid is not None else secrets.token_urlsafe(12)
        elif alg == "EdDSA":
            key = OKPKey.generate_key("Ed25519")
        elif alg in _CURVE:
            key = ECKey.generate_key(_CURVE[alg])
        else:
            key = RSAKey.generate_key(MIN_RSA_BITS)
        return cls(kid if kid is not None else key.thumbprint(), alg, key)

    @classmethod
    def from_pem(
        cls,
        pem: bytes | str,
        *,
        alg: Algorithm,
        kid: str | None = None,
        password: bytes | None = None,
    ) -> JWTKey:
        """An asymmetric key from PEM text (private key, public key or certificate).

        ``kid`` defaults to the RFC 7638 thumbprint of the public key.
        """
        alg = _check_alg(alg, "alg")  # type: ignore[assignment]
        if alg == "HS256":
            _fail("an HS256 key is a secret, not PEM: use JWTKey.from_secret", "alg")
        data = pem.encode("utf-8") if isinstance(pem, str) else pem
        if not isinstance(data, bytes):
            _fail(f"pem must be bytes or str, not {type(pem).__name__}", "pem")
        with _importing("pem", "the PEM key"):
            key = _KEY_CLASS[alg].import_key(data, password=password)
        return cls(kid if kid is not None else key.thumbprint(), alg, key)

    @classmethod
    def from_secret(
        cls, secret: bytes | SecretKey, *, kid: str, alg: Algorithm = "HS256"
    ) -> JWTKey:
        """An HMAC key from random secret bytes (at least 32 of them, else ConfigurationError).

        A secret is never derived from a password or taken from text: use random bytes, or
        ``KeyRing.derive("tokens:jwt")`` for a subkey of the configured ring.
        """
        alg = _check_alg(alg, "alg")  # type: ignore[assignment]
        if alg != "HS256":
            _fail(f"a secret signs with HS256 only, not {alg}: use from_pem or from_jwk", "alg")
        raw = secret.reveal() if isinstance(secret, SecretKey) else secret
        if not isinstance(raw, bytes):
            _fail(f"secret must be bytes or a SecretKey, not {type(secret).__name__}", "secret")
        if len(raw) < MIN_SECRET_BYTES:
            _fail(
                f"an HS256 secret needs at least {MIN_SECRET_BYTES} random bytes; got "
                f"{len(raw)} (generate one with JWTKey.generate('HS256'))",
                "secret",
            )
        with _importing("secret", "the secret"):
            key = OctKey.import_key(raw)
        return cls(kid, alg, key)

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, object]) -> JWTKey:
        """A key from a JWK (RFC 7517) that names its ``kid`` and ``alg``.

        Both are required: a key without a pinned algorithm is exactly what algorithm
        confusion needs.
        """
        if not isinstance(jwk, Mapping):
            _fail(f"jwk must be a mapping, not {type(jwk).__name__}", "jwk")
        kid, alg = jwk.get("kid"), jwk.get("alg")
        if not isinstance(kid, str):
            _fail("a JWK needs a 'kid' (the key id tokens name)", "jwk.kid")
        alg = _check_alg(alg, "jwk.alg")
        with _importing("jwk", "the JWK"):
            key = _KEY_CLASS[alg].import_key(dict(jwk))  # type: ignore[arg-type]
        return cls(kid, alg, key)  # type: ignore[arg-type]

    # -- views --------------------------------------------------------------------------

    @property
    def is_symmetric(self) -> bool:
        """An HMAC key: the same secret signs and verifies, and is never published."""
        return self.alg == "HS256"

    @property
    def can_sign(self) -> bool:
        """The key holds private material (or the secret) and may sign."""
        return self._sign is not None

    def public(self) -> JWTKey:
        """The verify-only half of an asymmetric key (the key itself if already public).

        An HS256 key has no public half: it raises ConfigurationError.
        """
        if self.is_symmetric:
            _fail("an HS256 key has no public half; its secret both signs and verifies", "alg")
        if not self.key.is_private:
            return self
        return JWTKey(self.kid, self.alg, self._public)

    def public_jwk(self) -> dict[str, object]:
        """The public JWK: key members without private ones, plus ``kid``, ``alg``, ``use``."""
        if self.is_symmetric:
            _fail("an HS256 secret is never published in a JWK", "alg")
        registry = self._public.value_registry
        members: dict[str, object] = {
            name: value
            for name, value in self._public.as_dict(private=False).items()
            if name == "kty" or (name in registry and not registry[name].private)
        }
        members.update(kid=self.kid, alg=self.alg, use="sig")
        return members

    def thumbprint(self) -> str:
        """The RFC 7638 SHA-256 thumbprint of the public key, base64url (a DPoP ``jkt``)."""
        if self.is_symmetric:
            _fail("an HS256 secret has no thumbprint (it would be a hash of the secret)", "alg")
        return self._public.thumbprint()

    def sign(self, signing_input: bytes) -> bytes:
        """The signature of ``signing_input`` with this key and its one algorithm."""
        if self._sign is None:
            _fail(f"key {self.kid!r} is public and cannot sign", "signing")
        return self._sign(signing_input)

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's signature of ``signing_input``."""
        return self._verify(signing_input, signature)

    def __repr__(self) -> str:
        kind = "secret" if self.is_symmetric else "private" if self.key.is_private else "public"
        return f"JWTKey(kid={self.kid!r}, alg={self.alg!r}, {kind})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("JWTKey cannot be pickled: it may hold a private key or a secret")

    def __copy__(self) -> JWTKey:
        return self  # immutable

    def __deepcopy__(self, memo: object) -> JWTKey:
        return self  # immutable


def _hmac_verify(keyed: hmac.HMAC, signing_input: bytes, signature: bytes) -> bool:
    # A copy of the keyed state skips the key schedule (the ipad/opad blocks) on every call.
    mac = keyed.copy()
    mac.update(signing_input)
    return hmac.compare_digest(mac.digest(), signature)


def _public_half(key: Key) -> Key:
    if not key.is_private:
        return key
    params = {name: key.get(name) for name in ("kid", "alg", "use") if key.get(name)}
    return type(key).import_key(key.public_key, params or None)  # type: ignore[arg-type]


class JWTKeySet:
    """The configured key ids and nothing else: a token naming any other id is refused.

    ``signing`` signs (and verifies); ``verifying`` keys only verify: older keys after a
    rotation, or, with ``signing=None``, another issuer's public keys on a resource server.
    Key ids are unique. The set is immutable; rotation makes a new set.
    """

    __slots__ = ("_by_kid", "signing")

    signing: JWTKey | None
    _by_kid: dict[str, JWTKey]

    def __init__(self, signing: JWTKey | None, *, verifying: Sequence[JWTKey] = ()) -> None:
        if signing is not None and not isinstance(signing, JWTKey):
            _fail(f"signing must be a JWTKey or None, not {type(signing).__name__}", "signing")
        if signing is not None and not signing.can_sign:
            _fail(f"signing key {signing.kid!r} is a public key; it cannot sign", "signing")
        table: dict[str, JWTKey] = {}
        for key in (signing, *verifying) if signing is not None else tuple(verifying):
            if not isinstance(key, JWTKey):
                _fail(f"verifying keys must be JWTKey, not {type(key).__name__}", "verifying")
            known = table.get(key.kid)
            if known is not None and known is not key:
                _fail(f"two keys have the id {key.kid!r}; key ids must be unique", "verifying")
            table[key.kid] = key
        if not table:
            _fail("a key set needs a signing key or at least one verifying key", "keys")
        object.__setattr__(self, "signing", signing)
        object.__setattr__(self, "_by_kid", table)

    @classmethod
    def from_jwks(cls, document: Mapping[str, object]) -> JWTKeySet:
        """A verify-only set from a JWKS document (``{"keys": [...]}``, each with kid and alg).

        Private members and HMAC secrets are refused: a published document never holds them.
        """
        keys = document.get("keys") if isinstance(document, Mapping) else None
        if not isinstance(keys, list):
            _fail("a JWKS document is an object with a 'keys' list", "jwks")
        found = []
        for entry in keys:
            key = JWTKey.from_jwk(entry)
            if key.is_symmetric or key.key.is_private:
                _fail(f"JWKS key {key.kid!r} holds private material; refused", "jwks")
            found.append(key)
        return cls(None, verifying=found)

    def get(self, kid: str) -> JWTKey | None:
        """The key with exactly this id, or None. Nothing beyond the configured set is read."""
        return self._by_kid.get(kid)

    def __iter__(self) -> Iterator[JWTKey]:
        return iter(self._by_kid.values())

    def __len__(self) -> int:
        return len(self._by_kid)

    def __contains__(self, kid: object) -> bool:
        return isinstance(kid, str) and kid in self._by_kid

    def jwks(self) -> dict[str, object]:
        """The JWKS document of the asymmetric keys (RFC 7517 section 5): public members with
        ``kid``, ``alg`` and ``use="sig"``. HS256 secrets are never listed."""
        return {"keys": [key.public_jwk() for key in self if not key.is_symmetric]}

    def rotated(self, new: JWTKey) -> JWTKeySet:
        """A set in which ``new`` signs and the current signing key still verifies."""
        rest = [key for key in self._by_kid.values() if key is not self.signing]
        previous = [self.signing] if self.signing is not None else []
        return JWTKeySet(new, verifying=[*previous, *rest])

    def retired(self, kid: str) -> JWTKeySet:
        """A set without key ``kid``: tokens it signed stop verifying. The signing key cannot
        be retired (rotate first)."""
        if kid not in self._by_kid:
            _fail(f"no key has the id {kid!r}", "kid")
        if self.signing is not None and self.signing.kid == kid:
            _fail(f"key {kid!r} signs; rotate to a new key before retiring it", "kid")
        rest = [key for key in self._by_kid.values() if key.kid != kid and key is not self.signing]
        return JWTKeySet(self.signing, verifying=rest)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("JWTKeySet is immutable; rotated() and retired() make new sets")

    def __repr__(self) -> str:
        signing = self.signing.kid if self.signing is not None else None
        return f"JWTKeySet(signing={signing!r}, kids={list(self._by_kid)!r})"
