"""Rough side-by-side timing of JWT verification: bastion's JWTCodec vs PyJWT vs joserfc.

Every peer checks the signature, exp/iat, iss, aud and the presence of sub and jti. Run:
``PYTHONPATH=src python bench/jwt_decode.py``. This measures the codec alone; the token bench
proper (with the revocation and epoch lookup) belongs to the bench suite.
"""

from __future__ import annotations

import timeit
import warnings
from typing import TYPE_CHECKING

import jwt as pyjwt
from joserfc import jwt as jose_jwt

from bastion.core.tokens import JWTCodec, JWTKey, JWTKeySet

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.core.tokens.jwk import Algorithm

ISSUER = "https://issuer.example"
REQUIRED = ["exp", "iat", "jti", "iss", "aud", "sub"]


def _rate(func: Callable[[], object], number: int) -> float:
    return number / min(timeit.repeat(func, number=number, repeat=5))


def compare(alg: Algorithm, number: int) -> dict[str, float]:
    """Verifications per second of one token by each peer."""
    key = JWTKey.generate(alg)
    codec = JWTCodec(JWTKeySet(key), issuer=ISSUER)
    token = codec.encode({"sub": "user-1", "aud": "api"}, typ="at+jwt", expires_in=900)
    native: object = key.key.raw_value if alg == "HS256" else key.key.public_key
    jose_key = type(key.key).import_key(native)  # type: ignore[arg-type]
    registry = jose_jwt.JWTClaimsRegistry(
        leeway=30,
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": "api"},
        sub={"essential": True},
        jti={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
    )
    peers: dict[str, Callable[[], object]] = {
        "bastion": lambda: codec.decode(token, typ="at+jwt", audience="api"),
        "pyjwt": lambda: pyjwt.decode(
            token,
            native,  # type: ignore[arg-type]
            algorithms=[alg],
            audience="api",
            issuer=ISSUER,
            leeway=30,
            options={"require": REQUIRED},
        ),
        "joserfc": lambda: registry.validate(
            jose_jwt.decode(token, jose_key, algorithms=[alg]).claims
        ),
    }
    for check in peers.values():
        check()  # each peer accepts the token
    return {name: _rate(check, number) for name, check in peers.items()}


def main() -> None:
    warnings.simplefilter("ignore")  # joserfc warns that EdDSA is deprecated (RFC 9864)
    for alg, number in (("HS256", 20_000), ("EdDSA", 3_000)):
        rates = compare(alg, number)  # type: ignore[arg-type]
        base = rates["bastion"]
        shown = ", ".join(
            f"{name} {rate:,.0f}/s ({base / rate:.2f}x)" for name, rate in rates.items()
        )
        print(f"{alg}: {shown}")


if __name__ == "__main__":
    main()
