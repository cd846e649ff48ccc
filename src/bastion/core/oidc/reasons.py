"""Why an OpenID Connect login was refused: the reason enum and the typed error.

Reasons are stable values: they appear in audit events (``authn_login_fail`` with
``reason=<OIDCReason>``) and tests. A refusal page shows the reason and its status, never a
token, a code, a claim value or the provider's raw answer.
"""

from __future__ import annotations

import enum

from bastion.errors import BadData

__all__ = ["OIDCReason", "OIDCRejected"]


class OIDCReason(enum.StrEnum):
    """Why a login through an OpenID Provider was refused."""

    STATE_MISSING = "state_missing"  # a callback without ``state``
    STATE_UNKNOWN = "state_unknown"  # a foreign, expired or replayed ``state``
    STATE_MISMATCH = "state_mismatch"  # a ``state`` bound to another browser (login CSRF)
    ISS_MISMATCH = "iss_mismatch"  # RFC 9207 ``iss`` missing where required, or another issuer
    PROVIDER_ERROR = "provider_error"  # ``error=`` from the provider (access_denied, ...)
    CODE_REJECTED = "code_rejected"  # the token endpoint refused the code (replay, verifier)
    ID_TOKEN_INVALID = "id_token_invalid"  # noqa: S105 - a reason; detail names the claim
    NONCE_MISMATCH = "nonce_mismatch"  # the ID token's nonce is not this login's
    PROVIDER_UNAVAILABLE = "provider_unavailable"  # the provider cannot be reached or is 5xx
    BAD_RESPONSE = "bad_response"  # garbage from the provider (not JSON, missing members)
    NEXT_REFUSED = "next_refused"  # a post-login destination off the allow-list
    UNVERIFIED_EMAIL = "unverified_email"  # linking by an e-mail the provider did not verify
    TOO_MANY_LOGINS = "too_many_logins"  # the client address's budget of pending logins is spent

    @property
    def status(self) -> int:
        """The HTTP status of the refusal page: 503 when the provider is down, 502 for its
        garbage, 403 for an unverified e-mail, 429 for a spent login budget, 400 for everything
        the browser brought."""
        if self is OIDCReason.PROVIDER_UNAVAILABLE:
            return 503
        if self is OIDCReason.BAD_RESPONSE:
            return 502
        if self is OIDCReason.UNVERIFIED_EMAIL:
            return 403
        if self is OIDCReason.TOO_MANY_LOGINS:
            return 429
        return 400


class OIDCRejected(BadData):
    """A login step failed a check; ``reason`` says which, ``detail`` narrows it (for
    ``id_token_invalid``: ``signature``, ``iss``, ``aud``, ``azp``, ``exp``, ``iat``, ``alg``,
    ``kid``, ``sub``, ``malformed``; for ``provider_error``: the provider's ``error`` code when
    it is a plain token).

    ``retry_after`` (whole seconds) is set for ``too_many_logins``: when the client's budget
    has room again, the refusal's ``Retry-After``.

    The message is for logs: it names the check and never echoes a code, token or claim value.
    """

    def __init__(
        self,
        reason: OIDCReason,
        message: str | None = None,
        *,
        detail: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        text = message or f"login refused: {reason.value}" + (f" ({detail})" if detail else "")
        super().__init__(text)
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after
