"""The one call of an app's CSRF identity function (``Bastion(csrf_identity=...)``).

The identity binds a double-submit cookie to a user; it is the app's code, run on the request,
so the request may be what trips it (a header it cannot parse). When it raises, or gives
something other than text, the CSRF check cannot be decided: the adapters refuse the request
with ``503`` and :attr:`~bastion.core.csrf.checks.CSRFReason.IDENTITY_FAILED` (audited like
every CSRF refusal), rather than answer a server error with a traceback. The error is logged
on ``bastion.security.csrf`` with its traceback; the request's values are not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion.core.csrf.config import logger

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["IdentityFailed", "identity_of"]


class IdentityFailed(Exception):
    """The identity function failed; the middleware answers the CSRF refusal it stands for."""


def identity_of(identity: Callable[[Any], str | None] | None, request: Any) -> str:
    """``identity(request)`` as the text a cookie is bound to (``""``: not bound to a user).

    Raises :class:`IdentityFailed` (after logging why) when the function raises or gives a
    value that is neither text nor ``None``.
    """
    if identity is None:
        return ""
    try:
        value = identity(request)
    except Exception as exc:
        logger.error(
            "bastion CSRF: the csrf_identity function failed (%s: %s); the request is refused "
            "with 503",
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        raise IdentityFailed from exc
    if value is None:
        return ""
    if not isinstance(value, str):
        logger.error(
            "bastion CSRF: the csrf_identity function gave a %s, not text or None; the request "
            "is refused with 503",
            type(value).__name__,
        )
        raise IdentityFailed
    return value
