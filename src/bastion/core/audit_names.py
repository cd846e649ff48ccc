"""The guide's event names mapped onto the OWASP vocabulary that bastion emits."""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

from bastion.core.audit import EventName
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["GUIDE_EVENTS", "owasp_name"]

GUIDE_EVENTS: Mapping[str, EventName] = MappingProxyType(
    {
        "LOGIN_SUCCESS": EventName.AUTHN_LOGIN_SUCCESS,
        "LOGIN_FAILED": EventName.AUTHN_LOGIN_FAIL,
        "LOGIN_BLOCKED": EventName.AUTHN_LOGIN_LOCK,
        "PASSWORD_RESET": EventName.AUTHN_PASSWORD_CHANGE,
        "PERMISSION_DENIED": EventName.AUTHZ_FAIL,
        "SUSPICIOUS_ACTIVITY": EventName.AUTHN_LOGIN_SUSPICIOUS,
        "API_KEY_CREATED": EventName.AUTHN_TOKEN_CREATED,
        "API_KEY_REVOKED": EventName.AUTHN_TOKEN_REVOKED,
        "DATA_EXPORT": EventName.SENSITIVE_READ,
        "ACCOUNT_DELETED": EventName.USER_DELETED,
    }
)
"""The guide's ``SecurityEventType`` names and the vocabulary event bastion emits for each."""


def owasp_name(guide_name: str) -> EventName:
    """The vocabulary event for one of the guide's names; an unknown one is refused."""
    try:
        return GUIDE_EVENTS[guide_name.upper()]
    except KeyError:
        raise ConfigurationError(
            f"{guide_name!r} is not one of the guide's events ({', '.join(GUIDE_EVENTS)})",
            setting="guide_name",
        ) from None
