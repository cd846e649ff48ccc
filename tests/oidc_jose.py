"""JOSE helpers of the OpenID Connect tests (tests/oidc_support.py re-exports them).

Key pairs made with joserfc (the provider's signing keys, client keys, keys nobody trusts), PKCE
pairs, and compact JWS built by hand where a test needs what a JOSE library refuses to make: an
unsigned token (``alg=none``) or an HMAC keyed by a public key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from joserfc.jwk import ECKey, RSAKey

__all__ = [
    "ec_key",
    "jwt_parts",
    "new_private_jwk",
    "pkce_pair",
    "public_jwk",
    "rsa_key",
    "sign_jwt",
]


_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def public_jwk(jwk: Mapping[str, Any]) -> dict[str, Any]:
    """The public members of a private JWK dict."""
    return {name: value for name, value in jwk.items() if name not in _PRIVATE_MEMBERS}


def rsa_key(kid: str) -> RSAKey:
    from joserfc.jwk import RSAKey  # noqa: PLC0415

    return RSAKey.generate_key(2048, {"kid": kid, "alg": "RS256", "use": "sig"}, private=True)


def ec_key(kid: str) -> ECKey:
    from joserfc.jwk import ECKey  # noqa: PLC0415

    return ECKey.generate_key("P-256", {"kid": kid, "alg": "ES256", "use": "sig"}, private=True)


def new_private_jwk(kid: str, alg: str = "ES256") -> dict[str, Any]:
    """A fresh private JWK (``ES256`` or ``RS256``): a client key, or a key no one trusts."""
    key = ec_key(kid) if alg == "ES256" else rsa_key(kid)
    jwk: dict[str, Any] = key.as_dict(private=True)
    return jwk


def pkce_pair() -> tuple[str, str]:
    """A PKCE ``(code_verifier, code_challenge)`` pair for ``S256`` (RFC 7636)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, _b64(digest)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``(header, claims)`` of a compact JWS, unverified (for assertions and forging)."""
    header, payload, _signature = token.split(".")
    return json.loads(_unb64(header)), json.loads(_unb64(payload))


def sign_jwt(header: Mapping[str, Any], claims: Mapping[str, Any], key: Any) -> str:
    """A compact JWS of ``claims`` with ``header`` (its ``alg`` decides the signature).

    ``alg=none`` gets an empty signature and ``HS256`` an HMAC keyed by ``key`` (bytes: e.g. the
    provider's public key, the classic confusion attack); other algorithms use ``key``, a
    private JWK dict or a joserfc key.
    """
    alg = header["alg"]
    signing_input = (
        _b64(json.dumps(dict(header), separators=(",", ":")).encode())
        + "."
        + _b64(json.dumps(dict(claims), separators=(",", ":")).encode())
    )
    if alg == "none":
        return signing_input + "."
    if alg == "HS256":
        mac = hmac.new(bytes(key), signing_input.encode("ascii"), hashlib.sha256).digest()
        return signing_input + "." + _b64(mac)
    from joserfc import jws  # noqa: PLC0415
    from joserfc.jwk import import_key  # noqa: PLC0415

    jwk = import_key(key) if isinstance(key, dict) else key
    payload = json.dumps(dict(claims), separators=(",", ":")).encode()
    token: str = jws.serialize_compact(dict(header), payload, jwk, algorithms=[alg])
    return token
