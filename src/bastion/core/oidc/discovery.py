"""The provider's discovery document (OpenID Connect Discovery 1.0), checked before use.

:func:`parse_discovery` takes the decoded JSON and the issuer the application configured and
returns :class:`ProviderMetadata`, or raises :class:`~bastion.core.oidc.reasons.OIDCRejected`
(``bad_response``) naming the member at fault:

* ``issuer`` equals the configured issuer exactly (section 4.3: no normalisation, so one
  provider cannot publish metadata in another's name);
* ``authorization_endpoint``, ``token_endpoint`` and ``jwks_uri`` are absolute ``https`` URLs
  (``http`` only on a loopback host, for tests and local development);
* ``response_types_supported`` contains ``code``;
* ``code_challenge_methods_supported``, when present, contains ``S256``;
* ``id_token_signing_alg_values_supported`` (``RS256`` when absent) intersected with the
  asymmetric algorithms bastion verifies (:data:`ASYMMETRIC_ALGS`) is not empty: ``none`` and
  the HMAC algorithms are dropped even when the provider lists them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from bastion.core.oidc._url import is_loopback, origin_of
from bastion.core.oidc.reasons import OIDCReason, OIDCRejected

__all__ = [
    "ASYMMETRIC_ALGS",
    "ProviderMetadata",
    "check_endpoint",
    "discovery_url",
    "is_url",
    "parse_discovery",
]

ASYMMETRIC_ALGS: Final = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
    "Ed25519",
)
"""The ID-token signature algorithms bastion accepts, in order of preference of none: each is
verified with a public key from the provider's JWKS, never a shared secret."""

_WELL_KNOWN: Final = "/.well-known/openid-configuration"


def discovery_url(issuer: str) -> str:
    """Where ``issuer`` publishes its discovery document (section 4.1)."""
    return issuer.rstrip("/") + _WELL_KNOWN


def is_url(value: object, *, secure: bool = True) -> bool:
    """Whether ``value`` is an absolute http(s) URL without user info (https or loopback
    http only, when ``secure``)."""
    origin = origin_of(value) if isinstance(value, str) else None
    if origin is None:
        return False
    return not secure or origin.scheme == "https" or is_loopback(origin)


def check_endpoint(name: str, value: object) -> str:
    """``value`` if it is an absolute https URL (http on loopback), else ``bad_response``."""
    if not isinstance(value, str):
        raise OIDCRejected(OIDCReason.BAD_RESPONSE, f"discovery: {name} is not a URL")
    origin = origin_of(value)
    if origin is None or (origin.scheme != "https" and not is_loopback(origin)):
        raise OIDCRejected(OIDCReason.BAD_RESPONSE, f"discovery: {name} is not an https URL")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderMetadata:
    """The checked parts of a discovery document that the login flow uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str | None  # None only for a plain OAuth 2.0 provider (no ID token to verify)
    id_token_algs: tuple[str, ...]
    iss_parameter_supported: bool = False
    userinfo_endpoint: str | None = None
    end_session_endpoint: str | None = None
    token_endpoint_auth_methods: tuple[str, ...] = ("client_secret_basic",)


def _strings(document: Mapping[str, object], name: str) -> tuple[str, ...] | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise OIDCRejected(OIDCReason.BAD_RESPONSE, f"discovery: {name} is not a list of strings")
    return tuple(value)


def _optional_endpoint(document: Mapping[str, object], name: str) -> str | None:
    value = document.get(name)
    return None if value is None else check_endpoint(name, value)


def parse_discovery(document: object, *, issuer: str) -> ProviderMetadata:
    """Check ``document`` (decoded JSON) against the configured ``issuer`` (module docstring)."""
    if not isinstance(document, Mapping):
        raise OIDCRejected(OIDCReason.BAD_RESPONSE, "discovery: not a JSON object")
    if document.get("issuer") != issuer:
        raise OIDCRejected(OIDCReason.BAD_RESPONSE, "discovery: issuer is not the configured one")
    responses = _strings(document, "response_types_supported")
    if responses is None or "code" not in responses:
        raise OIDCRejected(OIDCReason.BAD_RESPONSE, "discovery: response type code unsupported")
    methods = _strings(document, "code_challenge_methods_supported")
    if methods is not None and "S256" not in methods:
        raise OIDCRejected(OIDCReason.BAD_RESPONSE, "discovery: PKCE S256 unsupported")
    listed = _strings(document, "id_token_signing_alg_values_supported") or ("RS256",)
    algs = tuple(alg for alg in listed if alg in ASYMMETRIC_ALGS)
    if not algs:
        raise OIDCRejected(
            OIDCReason.BAD_RESPONSE, "discovery: no asymmetric ID-token signing algorithm"
        )
    iss_flag = document.get("authorization_response_iss_parameter_supported", False)
    if not isinstance(iss_flag, bool):
        raise OIDCRejected(
            OIDCReason.BAD_RESPONSE,
            "discovery: authorization_response_iss_parameter_supported is not a boolean",
        )
    auth_methods = _strings(document, "token_endpoint_auth_methods_supported")
    return ProviderMetadata(
        issuer=issuer,
        authorization_endpoint=check_endpoint(
            "authorization_endpoint", document.get("authorization_endpoint")
        ),
        token_endpoint=check_endpoint("token_endpoint", document.get("token_endpoint")),
        jwks_uri=check_endpoint("jwks_uri", document.get("jwks_uri")),
        id_token_algs=algs,
        iss_parameter_supported=iss_flag,
        userinfo_endpoint=_optional_endpoint(document, "userinfo_endpoint"),
        end_session_endpoint=_optional_endpoint(document, "end_session_endpoint"),
        token_endpoint_auth_methods=auth_methods or ("client_secret_basic",),
    )
