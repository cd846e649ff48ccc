"""A plain OAuth 2.0 provider's answers, checked: the token response without an ID token, and
the UserInfo document the identity is read from (GitHub's ``/user``, for instance).

Without an ID token nothing is signed: the identity is whatever the userinfo endpoint answers
for the access token that this login's code exchange (PKCE, client authentication, TLS) just
returned. :func:`access_token_of` takes that access token from the token response (a bearer
token: another ``token_type``, DPoP for instance, needs a proof bastion does not send);
:func:`subject_of` reads the subject member of the UserInfo document. Each refuses with
``bad_response`` (the provider's answer cannot be used).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from bastion.core.oidc.reasons import OIDCReason, OIDCRejected

__all__ = ["MAX_ACCESS_TOKEN", "MAX_SUBJECT", "access_token_of", "subject_of"]

MAX_ACCESS_TOKEN: Final = 8192
MAX_SUBJECT: Final = 255  # as an ID token's sub (OpenID Connect Core section 2)


def access_token_of(answer: Mapping[str, object]) -> str:
    """The bearer access token of a token response ``answer``, else ``bad_response``."""
    token = answer.get("access_token")
    if not isinstance(token, str) or not token or len(token) > MAX_ACCESS_TOKEN:
        raise OIDCRejected(OIDCReason.BAD_RESPONSE, "token endpoint: no usable access_token")
    if not token.isascii() or not token.isprintable() or " " in token:
        raise OIDCRejected(OIDCReason.BAD_RESPONSE, "token endpoint: access_token not a token")
    kind = answer.get("token_type")
    if not isinstance(kind, str) or kind.lower() != "bearer":
        raise OIDCRejected(OIDCReason.BAD_RESPONSE, "token endpoint: token_type is not Bearer")
    return token


def subject_of(document: object, claim: str) -> str:
    """The subject of a UserInfo ``document`` (decoded JSON): its ``claim`` member, a
    non-empty string or an integer (GitHub's numeric ``id``, as decimal text); booleans,
    floats, objects and empty or over-long strings are ``bad_response``."""
    if not isinstance(document, Mapping):
        raise OIDCRejected(OIDCReason.BAD_RESPONSE, "userinfo: not a JSON object")
    value = document.get(claim)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise OIDCRejected(
            OIDCReason.BAD_RESPONSE, f"userinfo: no subject member {claim!r}", detail="subject"
        )
    subject = str(value)
    if not subject or len(subject) > MAX_SUBJECT or not subject.isprintable():
        raise OIDCRejected(
            OIDCReason.BAD_RESPONSE, "userinfo: subject of no sane form", detail="subject"
        )
    return subject
