"""The code exchange (through Authlib's httpx client) and the ID token's signature (joserfc).

:func:`exchange_code` POSTs the authorization code, the redirect URI and the PKCE verifier to
the token endpoint with :class:`authlib.integrations.httpx_client.AsyncOAuth2Client`,
authenticating the client with ``client_secret_basic`` (a :class:`ClientAuth` with a secret:
HTTP Basic), ``client_secret_post`` (the secret in the form body, RFC 6749 2.3.1, for a
provider that accepts no other) or ``private_key_jwt`` (with a private key: Authlib's
:class:`~authlib.oauth2.rfc7523.PrivateKeyJWT`). Refusals: ``code_rejected`` when the
endpoint answers an OAuth error (``invalid_grant``: a replayed code, a wrong verifier;
the error code is the detail), ``provider_unavailable`` for a connection failure, a timeout or
a 5xx, ``bad_response`` for a body that is too large, not a JSON object, or has no
``id_token``.

:func:`verify_id_token` checks the signature of the compact JWS with a key from
:class:`~bastion.engine.oidc.jwks.ProviderKeys` only: the header's ``alg`` must be one the
discovery document allows AND asymmetric (``none`` and ``HS*`` are refused even when listed,
detail ``alg``); an embedded key (``jwk``, ``jku``, ``x5u``, ``x5c``) is never used; the
verification runs with exactly that one algorithm. Then ``at_hash``, when the token has it, must
match the ``access_token`` of the same response (:func:`bastion.core.oidc.idtoken.check_at_hash`).
It returns the payload, whose claims :func:`bastion.core.oidc.idtoken.check_claims` then
checks.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import authlib.deprecate  # type: ignore[import-untyped]  # noqa: F401 - installs its filter now
import httpx

# Authlib ships no type information; the names below are used as documented.
with warnings.catch_warnings():
    # Authlib 1.9 warns, once, at import, that it runs on httpx rather than its fork httpx2.
    # bastion's extra pins httpx; the warning would be an error under filterwarnings=error.
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    from authlib.integrations.base_client.errors import (  # type: ignore[import-untyped]
        OAuthError,
    )
    from authlib.integrations.httpx_client import (  # type: ignore[import-untyped]
        AsyncOAuth2Client,
    )
    from authlib.oauth2.rfc7523 import PrivateKeyJWT  # type: ignore[import-untyped]
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, OKPKey, RSAKey

from bastion.core.oidc.discovery import ASYMMETRIC_ALGS
from bastion.core.oidc.idtoken import check_at_hash
from bastion.core.oidc.reasons import OIDCReason, OIDCRejected
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from bastion.engine.oidc.jwks import ProviderKeys

__all__ = [
    "MAX_ID_TOKEN",
    "PRIVATE_KEY_JWT",
    "SECRET_METHODS",
    "ClientAuth",
    "exchange_code",
    "verify_id_token",
]

MAX_ID_TOKEN: Final = 16 * 1024
SECRET_METHODS: Final = ("client_secret_basic", "client_secret_post")
"""The methods of a shared secret, the default first: HTTP Basic, or the form body."""
PRIVATE_KEY_JWT: Final = "private_key_jwt"
_ERROR_CODE_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz_")
_DEFAULT_KEY_ALG: Final = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientAuth:
    """How bastion authenticates to the token endpoint: ``secret`` (``client_secret_basic``,
    or ``client_secret_post`` with ``auth_method="client_secret_post"``) or ``private_key``
    (``private_key_jwt``: a JWK dict, a PEM string or a joserfc key; its ``alg`` defaults by
    key type: RS256, ES256, EdDSA). ``auth_method`` ``None`` picks the credential's default."""

    client_id: str
    secret: str | None = None
    private_key: object = None
    private_key_alg: str | None = None
    auth_method: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.client_id, str) or not self.client_id:
            raise ConfigurationError("client_id must be non-empty text", setting="client_id")
        if (self.secret is None) == (self.private_key is None):
            raise ConfigurationError(
                "give exactly one of client_secret and private_key", setting="client_secret"
            )
        if self.secret is not None and (not isinstance(self.secret, str) or not self.secret):
            raise ConfigurationError(
                "client_secret must be non-empty text", setting="client_secret"
            )
        if self.private_key is not None:
            key = self.signing_key()
            alg = self.private_key_alg or _DEFAULT_KEY_ALG[key.key_type]
            if alg not in ASYMMETRIC_ALGS:
                raise ConfigurationError(
                    f"private_key_alg must be asymmetric, got {alg!r}", setting="private_key_alg"
                )
        object.__setattr__(self, "auth_method", self._checked_method())

    def _checked_method(self) -> str:
        allowed = SECRET_METHODS if self.secret is not None else (PRIVATE_KEY_JWT,)
        method = self.auth_method if self.auth_method is not None else allowed[0]
        if method not in allowed:
            raise ConfigurationError(
                f"auth_method {method!r} does not go with "
                f"{'client_secret' if self.secret is not None else 'private_key'}: one of "
                f"{', '.join(allowed)}",
                setting="auth_method",
            )
        return method

    def signing_key(self) -> RSAKey | ECKey | OKPKey:
        """The private key as a joserfc key (ConfigurationError when it is not one)."""
        raw = self.private_key
        if isinstance(raw, RSAKey | ECKey | OKPKey):
            key: object = raw
        else:
            key = _import_private_key(raw)
        if not isinstance(key, RSAKey | ECKey | OKPKey) or not key.is_private:
            raise ConfigurationError(
                "private_key must be an RSA, EC or OKP private key", setting="private_key"
            )
        return key

    @property
    def method(self) -> str:
        """The token endpoint authentication method (RFC 7591 name)."""
        return str(self.auth_method)

    def __repr__(self) -> str:
        return f"ClientAuth(client_id={self.client_id!r}, method={self.method!r})"


def _import_private_key(raw: object) -> object:
    """A JWK dict, or a PEM (str or bytes) of an RSA, EC or OKP key, as a joserfc key."""
    if isinstance(raw, dict):
        attempts: tuple[str | None, ...] = (None,)
    elif isinstance(raw, str | bytes):
        attempts = ("RSA", "EC", "OKP")
    else:
        attempts = ()
    for key_type in attempts:
        try:
            if key_type is None:
                return JWKRegistry.import_key(raw)  # type: ignore[arg-type]
            return JWKRegistry.import_key(raw, key_type)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError):
            continue
    raise ConfigurationError(
        "private_key is not an RSA, EC or OKP private key (a JWK dict or a PEM)",
        setting="private_key",
    )


def _refuse_5xx(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 500:
        raise OIDCRejected(
            OIDCReason.PROVIDER_UNAVAILABLE, f"token endpoint: HTTP {response.status_code}"
        )
    return response


async def exchange_code(
    *,
    token_endpoint: str,
    auth: ClientAuth,
    code: str,
    redirect_uri: str,
    code_verifier: str,
    timeout_s: float,
    max_bytes: int,
    require_id_token: bool = True,
) -> dict[str, object]:
    """The token endpoint's answer for ``code`` (see the module docstring);
    ``require_id_token=False`` for a plain OAuth 2.0 provider."""
    secret: object = auth.secret
    if auth.private_key is not None:
        secret = auth.signing_key()
    client = AsyncOAuth2Client(
        client_id=auth.client_id,
        client_secret=secret,
        token_endpoint_auth_method=auth.method,
        timeout=timeout_s,
        follow_redirects=False,
    )
    async with client:
        if auth.private_key is not None:
            key = auth.signing_key()
            alg = auth.private_key_alg or _DEFAULT_KEY_ALG[key.key_type]
            client.register_client_auth_method(PrivateKeyJWT(token_endpoint, alg=alg))
        client.register_compliance_hook("access_token_response", _refuse_5xx)
        try:
            token = await client.fetch_token(
                token_endpoint,
                grant_type="authorization_code",
                code=code,
                redirect_uri=redirect_uri,
                code_verifier=code_verifier,
            )
        except OIDCRejected:
            raise  # from _refuse_5xx; a ValueError, so it must pass the clause below untouched
        except OAuthError as exc:
            error = str(getattr(exc, "error", "") or "")
            detail = error if error and set(error) <= _ERROR_CODE_CHARS else None
            raise OIDCRejected(
                OIDCReason.CODE_REJECTED, "token endpoint refused the code", detail=detail
            ) from exc
        except httpx.HTTPStatusError as exc:
            status = exc.response.status_code
            reason = OIDCReason.PROVIDER_UNAVAILABLE if status >= 500 else OIDCReason.BAD_RESPONSE
            raise OIDCRejected(reason, f"token endpoint: HTTP {status}") from exc
        except httpx.HTTPError as exc:
            raise OIDCRejected(
                OIDCReason.PROVIDER_UNAVAILABLE, f"token endpoint: {type(exc).__name__}"
            ) from exc
        except ValueError as exc:
            raise OIDCRejected(OIDCReason.BAD_RESPONSE, "token endpoint: not JSON") from exc
    answer = dict(token)
    if len(json.dumps(answer, default=str)) > max_bytes:
        raise OIDCRejected(OIDCReason.BAD_RESPONSE, "token endpoint: answer too large")
    if not require_id_token:
        return answer
    id_token = answer.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        raise OIDCRejected(OIDCReason.BAD_RESPONSE, "token endpoint: no id_token")
    return answer


_EMBEDDED: Final = frozenset({"jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256"})


def _invalid(detail: str, message: str) -> OIDCRejected:
    return OIDCRejected(OIDCReason.ID_TOKEN_INVALID, f"id token: {message}", detail=detail)


async def verify_id_token(
    id_token: str,
    *,
    keys: ProviderKeys,
    allowed_algs: tuple[str, ...],
    access_token: str | None = None,
) -> Mapping[str, object]:
    """The payload of ``id_token`` once its signature verifies (see the module docstring)."""
    if len(id_token) > MAX_ID_TOKEN or id_token.count(".") != 2:
        raise _invalid("malformed", "not a compact JWS of sane size")
    try:
        header = dict(jws.extract_compact(id_token.encode("ascii")).headers())
    except (JoseError, ValueError, TypeError, UnicodeError) as exc:
        raise _invalid("malformed", "unreadable header") from exc
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in allowed_algs or alg not in ASYMMETRIC_ALGS:
        raise _invalid("alg", "algorithm not allowed")
    if _EMBEDDED & header.keys():
        raise _invalid("alg", "embedded key in the header")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise _invalid("kid", "kid is not a string")
    key = await keys.key(kid, alg)
    try:
        token = jwt.decode(id_token, key, algorithms=[alg])
    except (JoseError, ValueError, TypeError) as exc:
        raise _invalid("signature", "signature does not verify") from exc
    curve = key.curve_name if isinstance(key, OKPKey) else None
    check_at_hash(token.claims, access_token, alg=alg, curve=curve)
    return token.claims
