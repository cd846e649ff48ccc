"""The ID token's claims (OpenID Connect Core 1.0, section 3.1.3.7), checked after the engine
verified its signature with one of the provider's keys.

:func:`check_claims` refuses with :class:`~bastion.core.oidc.reasons.OIDCRejected`:
``id_token_invalid`` with the claim as the detail (``iss`` not exactly the issuer, ``aud``
without the client id, ``azp`` present and not the client id or absent with several audiences,
``exp`` passed, ``iat`` in the future or older than ``max_age``, ``sub`` missing), and
``nonce_mismatch`` when ``nonce`` is not this login's. ``leeway`` (at most
:data:`MAX_LEEWAY` seconds) absorbs clock skew on ``exp`` and ``iat`` only.

:func:`check_at_hash` (section 3.1.3.8, optional in the code flow): when the ID token carries
``at_hash``, it must be the left half of the hash of the access token the same token response
carried, so an access token swapped in beside a genuine ID token is refused (detail
``at_hash``). The hash is the one of the token's signature algorithm: SHA-256/384/512 by the
algorithm's size, SHA-512 for Ed25519 and SHAKE256 (114 bytes) for Ed448.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from typing import TYPE_CHECKING, Final

from bastion.core.oidc.reasons import OIDCReason, OIDCRejected
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_LEEWAY",
    "DEFAULT_MAX_AGE",
    "MAX_LEEWAY",
    "check_at_hash",
    "check_claims",
    "check_leeway",
    "token_hash",
]

DEFAULT_LEEWAY: Final = 60.0
MAX_LEEWAY: Final = 300.0
DEFAULT_MAX_AGE: Final = 600.0
"""How old ``iat`` may be: the token endpoint has just minted the token, so an old one is a
replayed one."""
_MAX_SUB: Final = 255  # section 2: "MUST NOT exceed 255 ASCII characters"


def check_leeway(leeway: float) -> float:
    """``leeway`` as seconds between 0 and :data:`MAX_LEEWAY`, else ConfigurationError."""
    if (
        isinstance(leeway, bool)
        or not isinstance(leeway, int | float)
        or not 0 <= leeway <= MAX_LEEWAY
    ):
        raise ConfigurationError(
            f"leeway must be 0 to {MAX_LEEWAY:g} seconds, got {leeway!r}", setting="leeway"
        )
    return float(leeway)


def _invalid(detail: str) -> OIDCRejected:
    return OIDCRejected(OIDCReason.ID_TOKEN_INVALID, f"id token: bad {detail}", detail=detail)


def _number(claims: Mapping[str, object], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _invalid(name)
    return float(value)


def check_claims(
    claims: Mapping[str, object],
    *,
    issuer: str,
    client_id: str,
    nonce: str,
    now: float,
    leeway: float = DEFAULT_LEEWAY,
    max_age: float = DEFAULT_MAX_AGE,
) -> str:
    """The ``sub`` of a verified ID token whose ``claims`` pass every check (module docstring)."""
    if claims.get("iss") != issuer:
        raise _invalid("iss")
    aud = claims.get("aud")
    audiences: list[object] = aud if isinstance(aud, list) else [aud]
    if not audiences or not all(isinstance(a, str) for a in audiences):
        raise _invalid("aud")
    if client_id not in audiences:
        raise _invalid("aud")
    azp = claims.get("azp")
    if (azp is not None or len(audiences) > 1) and azp != client_id:
        raise _invalid("azp")
    if _number(claims, "exp") <= now - leeway:
        raise _invalid("exp")
    iat = _number(claims, "iat")
    if iat > now + leeway or iat < now - max_age - leeway:
        raise _invalid("iat")
    got = claims.get("nonce")
    if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
        raise OIDCRejected(OIDCReason.NONCE_MISMATCH, "id token: nonce is not this login's")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > _MAX_SUB:
        raise _invalid("sub")
    return sub


_SHA_BY_SIZE: Final = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}


def token_hash(value: str, *, alg: str, curve: str | None = None) -> str:
    """The ``at_hash`` of ``value`` for an ID token signed with ``alg`` (``curve``: the OKP
    key's curve for ``EdDSA``): base64url of the left half of its hash, unpadded."""
    raw = value.encode("ascii", "strict")
    if alg in {"EdDSA", "Ed25519"}:
        digest = (
            hashlib.shake_256(raw).digest(114) if curve == "Ed448" else hashlib.sha512(raw).digest()
        )
    else:
        sha = _SHA_BY_SIZE.get(alg[2:])
        if sha is None:
            raise _invalid("alg")
        digest = sha(raw).digest()
    half = digest[: len(digest) // 2]
    return base64.urlsafe_b64encode(half).rstrip(b"=").decode("ascii")


def check_at_hash(
    claims: Mapping[str, object], access_token: str | None, *, alg: str, curve: str | None = None
) -> None:
    """Refuse (``id_token_invalid``, detail ``at_hash``) an ID token whose ``at_hash`` does not
    match ``access_token``, or that names an access token the response did not carry; nothing
    to check when the claim is absent."""
    value = claims.get("at_hash")
    if value is None:
        return
    if not isinstance(value, str) or not isinstance(access_token, str) or not access_token:
        raise _invalid("at_hash")
    try:
        expected = token_hash(access_token, alg=alg, curve=curve)
    except UnicodeEncodeError:
        raise _invalid("at_hash") from None
    if not hmac.compare_digest(value.encode("ascii", "replace"), expected.encode("ascii")):
        raise _invalid("at_hash")
