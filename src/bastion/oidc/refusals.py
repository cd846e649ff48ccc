"""The refusal pages of the sign-in routes: one status and one sentence per reason, the same in
every adapter (:mod:`bastion.oidc.starlette`, :mod:`bastion.flask.oidc`). A page names the
reason and never a code, a token, a claim or the provider's raw answer."""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from bastion.core.oidc.reasons import OIDCReason
from bastion.core.refusal import Refusal

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "BAD_HOST",
    "LOGIN_STORE_UNAVAILABLE",
    "METHOD",
    "NO_ACCOUNT",
    "UNKNOWN_PROVIDER",
    "refusal_for",
]

METHOD: Final = "oidc"
"""The ``method`` detail of the audit events of these logins."""

NO_ACCOUNT: Final = "no_account"
"""The audit reason when the app's account hook returned no user (a 403)."""

UNKNOWN_PROVIDER: Final = "unknown_provider"
"""The refusal of a route naming a provider the policy does not have (a 404, audited)."""

BAD_HOST: Final = "bad_host"
"""The login request's ``Host`` gives no usable callback URL (a 400, audited); only when the
provider has no configured ``redirect_uri``."""

LOGIN_STORE_UNAVAILABLE: Final = "login_store_unavailable"
"""The store of the login-state records cannot be reached (a 503 with ``Retry-After``)."""


_MESSAGES: Final[Mapping[str, str]] = MappingProxyType(
    {
        OIDCReason.STATE_MISSING: (
            "The sign-in response has no state. Please start the sign-in again."
        ),
        OIDCReason.STATE_UNKNOWN: (
            "This sign-in link is unknown, expired or was already used. Please start the sign-in "
            "again."
        ),
        OIDCReason.STATE_MISMATCH: (
            "This sign-in was started in another browser. Please start the sign-in again here."
        ),
        OIDCReason.ISS_MISMATCH: "The sign-in response came from another provider.",
        OIDCReason.PROVIDER_ERROR: "The provider did not complete the sign-in.",
        OIDCReason.CODE_REJECTED: "The provider refused this sign-in. Please start again.",
        OIDCReason.ID_TOKEN_INVALID: "The provider's answer failed verification.",
        OIDCReason.NONCE_MISMATCH: "The provider's answer does not belong to this sign-in.",
        OIDCReason.PROVIDER_UNAVAILABLE: (
            "The sign-in provider cannot be reached. Please try again shortly."
        ),
        OIDCReason.BAD_RESPONSE: "The sign-in provider sent an answer that cannot be used.",
        OIDCReason.NEXT_REFUSED: "The page to return to after sign-in is not allowed.",
        OIDCReason.UNVERIFIED_EMAIL: (
            "The provider has not verified this e-mail address, so it cannot be linked to an "
            "account."
        ),
        OIDCReason.TOO_MANY_LOGINS: (
            "Too many sign-ins were started from this address. Please wait a few minutes and "
            "try again."
        ),
        NO_ACCOUNT: "No account can sign in with this identity.",
        UNKNOWN_PROVIDER: "No such sign-in provider.",
        BAD_HOST: "Bad Request: the Host header is not a valid host.",
        LOGIN_STORE_UNAVAILABLE: (
            "Service unavailable: sign-in cannot be stored now. Please try again shortly."
        ),
    }
)


def refusal_for(reason: OIDCReason | str) -> tuple[int, Refusal]:
    """The status and body of the refusal page for ``reason`` (the same in every adapter):
    ``error`` is the reason itself, ``detail`` a sentence for people that never names a code,
    a token or a claim."""
    if isinstance(reason, OIDCReason):
        status = reason.status
    else:
        status = {NO_ACCOUNT: 403, UNKNOWN_PROVIDER: 404, LOGIN_STORE_UNAVAILABLE: 503}.get(
            reason, 400
        )
    message = _MESSAGES.get(reason, "Sign-in refused.")
    return status, Refusal(str(reason), message + "\n")
