"""The "password ok, second factor pending" state on a server-side session.

Between a correct password and a correct second factor the session holds a
:class:`~bastion.core.totp.PendingSecondFactor` under its own key and nothing else: no user is
bound (``session.user_id`` stays ``None``), so every view that checks for a logged-in user sees
an anonymous visitor. Only the second-factor view reads the pending state, and only
:func:`complete_second_factor` turns it into a login, through
:meth:`~bastion.engine.sessions.Session.login` (a new session ID and CSRF secret; the pending
ID dies)::

    # password view, after the password verified for an account with a second factor
    begin_second_factor(request.session, user.id)

    # second-factor view
    status, state = second_factor_status(request.session)
    if status is not PendingStatus.ACTIVE:
        ...  # back to the password form (expired, too many wrong codes, or none)
    elif totp_ok(state.user_id, code):
        complete_second_factor(request.session)
    else:
        fail_second_factor(request.session)

These functions only change the session; they work the same under the ASGI middleware, the
WSGI middleware and Flask. Time comes from the session engine's clock.

The bound on guessing is not here. The wrong-code counter of the pending state lives in the
session, which merges parallel requests key by key (the last write of a key wins), and a new
password step starts a new one: it only decides when to send the user back to the password
form. What bounds an attacker who has the password is the per-user budget that
:meth:`bastion.engine.totp.TOTPManager.verify` (and ``verify_sync``) keeps in the store and
reserves before a code is compared: concurrent codes on one pending session, or on many, are
counted once each, and ``TOTPResult.LOCKED`` means the code was not compared. A second factor
of the application's own (a code sent by e-mail, say) needs such a budget of its own; the login
throttle (:mod:`bastion.engine.throttle`) is no substitute, since it counts per address.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.core.totp import (
    DEFAULT_PENDING_ATTEMPTS,
    DEFAULT_PENDING_TTL,
    PendingSecondFactor,
    PendingStatus,
    pending_status,
)
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from bastion.engine.sessions import Session

__all__ = [
    "begin_second_factor",
    "cancel_second_factor",
    "complete_second_factor",
    "fail_second_factor",
    "second_factor_status",
]

_KEY = PendingSecondFactor.SESSION_KEY


def begin_second_factor(session: Session, user_id: str | int) -> PendingSecondFactor:
    """The password of ``user_id`` verified: mark ``session`` as waiting for the second factor.

    Grants nothing. The session gets a new ID when the response is sent (the old one dies), so
    the pending state never lives under an ID chosen before the password step. A session that
    was logged in is logged out of its user first (:meth:`Session.end_login`): a new login
    attempt never runs alongside the previous user's access.
    """
    if isinstance(user_id, bool) or not isinstance(user_id, str | int) or user_id == "":
        raise ConfigurationError(
            "begin_second_factor() needs a non-empty str or int user_id", setting="user_id"
        )
    if session.user_id is not None:
        session.end_login()
    else:
        session.regenerate()
    state = PendingSecondFactor(user_id=str(user_id), started_at=session.engine.clock.now())
    session[_KEY] = state.to_dict()
    return state


def second_factor_status(
    session: Session,
    *,
    ttl: float = DEFAULT_PENDING_TTL,
    max_attempts: int = DEFAULT_PENDING_ATTEMPTS,
) -> tuple[PendingStatus, PendingSecondFactor | None]:
    """Where the pending login of ``session`` stands (``ttl`` seconds, ``max_attempts`` codes)."""
    return pending_status(
        session, now=session.engine.clock.now(), ttl=ttl, max_attempts=max_attempts
    )


def fail_second_factor(
    session: Session,
    *,
    ttl: float = DEFAULT_PENDING_TTL,
    max_attempts: int = DEFAULT_PENDING_ATTEMPTS,
) -> PendingStatus:
    """Count one wrong code and say where the login stands afterwards.

    ``EXHAUSTED`` (or ``EXPIRED``) means the password must be entered again; the spent state
    stays in the session, still granting nothing, until :func:`begin_second_factor` or
    :func:`cancel_second_factor` replaces it.
    """
    status, state = second_factor_status(session, ttl=ttl, max_attempts=max_attempts)
    if status is not PendingStatus.ACTIVE or state is None:
        return status
    session[_KEY] = state.failed().to_dict()
    return second_factor_status(session, ttl=ttl, max_attempts=max_attempts)[0]


def complete_second_factor(
    session: Session,
    *,
    remember: bool | None = None,
    ttl: float = DEFAULT_PENDING_TTL,
    max_attempts: int = DEFAULT_PENDING_ATTEMPTS,
) -> str | None:
    """The second factor verified: log the pending user in and return their user id.

    Call it only after the code checked out. Returns ``None`` and changes nothing when there is
    no *active* pending login (none, expired, or out of attempts): the caller sends the user
    back to the password form. Otherwise the pending state is removed and
    :meth:`Session.login` rotates the ID and the CSRF secret and binds the user.
    """
    status, state = second_factor_status(session, ttl=ttl, max_attempts=max_attempts)
    if status is not PendingStatus.ACTIVE or state is None:
        return None
    del session[_KEY]
    session.login(state.user_id, remember=remember)
    return state.user_id


def cancel_second_factor(session: Session) -> None:
    """Drop any pending login (a "cancel" button, or before showing the password form again)."""
    session.pop(_KEY, None)
