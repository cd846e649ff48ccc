"""The authorization response (the callback's query parameters), checked in two steps.

:func:`read_callback` runs before any store call: it needs ``state`` (else ``state_missing``;
an ``error=`` response without ``state`` is ``provider_error``) and bounds every value's size.
The engine then takes the login-state record ``state`` names (``state_unknown`` /
``state_mismatch`` are its refusals), and :func:`check_response` checks the rest against it:

1. RFC 9207 ``iss``: when sent it must equal the issuer this login was started with
   (``iss_mismatch``: a response from provider A delivered to provider B's callback); when the
   provider's metadata says it sends ``iss`` (``authorization_response_iss_parameter_supported``)
   a response without it is refused too.
2. ``error``: ``provider_error`` (``access_denied`` when the user declined), with the error
   code as the detail when it is a plain RFC 6749 token.
3. ``code``: present and of sane size, else ``bad_response``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from bastion.core.oidc.reasons import OIDCReason, OIDCRejected

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["MAX_PARAM", "Callback", "check_response", "read_callback"]

MAX_PARAM: Final = 4096
"""The longest ``state``, ``code``, ``iss`` or ``error`` value accepted; longer is refused
before any work (a code is rarely over a few hundred characters)."""

_ERROR_CODE: Final = re.compile(r"[a-z_]{1,64}", re.ASCII)


@dataclass(frozen=True, slots=True)
class Callback:
    """The callback parameters bastion reads; every other parameter is ignored."""

    state: str
    code: str | None
    iss: str | None
    error: str | None


def _value(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_PARAM:
        reason = OIDCReason.STATE_UNKNOWN if name == "state" else OIDCReason.BAD_RESPONSE
        raise OIDCRejected(reason, f"callback: {name} is not a string of sane size")
    return value


def read_callback(params: Mapping[str, str]) -> Callback:
    """The callback's ``state``, ``code``, ``iss`` and ``error`` (see the module docstring)."""
    error = _value(params, "error")
    state = _value(params, "state")
    if not state:
        if error is not None:
            raise OIDCRejected(
                OIDCReason.PROVIDER_ERROR, "callback: provider error", detail=_detail(error)
            )
        raise OIDCRejected(OIDCReason.STATE_MISSING, "callback: no state")
    return Callback(
        state=state, code=_value(params, "code"), iss=_value(params, "iss"), error=error
    )


def _detail(error: str) -> str | None:
    return error if _ERROR_CODE.fullmatch(error) else None


def check_response(callback: Callback, *, issuer: str, iss_required: bool) -> str:
    """The authorization code of ``callback``, for a login started with ``issuer``."""
    if callback.iss is not None:
        if callback.iss != issuer:
            raise OIDCRejected(OIDCReason.ISS_MISMATCH, "callback: iss is another issuer")
    elif iss_required:
        raise OIDCRejected(OIDCReason.ISS_MISMATCH, "callback: iss missing (RFC 9207)")
    if callback.error is not None:
        raise OIDCRejected(
            OIDCReason.PROVIDER_ERROR, "callback: provider error", detail=_detail(callback.error)
        )
    if not callback.code:
        raise OIDCRejected(OIDCReason.BAD_RESPONSE, "callback: no code")
    return callback.code
