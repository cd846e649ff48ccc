"""One request's session state.

:class:`SessionState` is everything a request knows about its session: what it loaded (the
record, its bytes, the data part of those bytes), what the handler changed and which
lifecycle call is pending (login, regenerate, logout). The engine drives the store; the
decisions that need no store live in :mod:`~bastion.core.sessions.planning` (a save) and
:mod:`~bastion.core.sessions.deadlines`, re-exported here:

* :func:`plan_save`: nothing to write, the common write (a compare-and-set of the loaded
  record with only its data replaced), or the general save;
* :func:`diff` and :func:`merge`: this request's per-key changes, and those changes applied
  onto what another request stored meanwhile (both changes to different keys survive);
* :func:`resolve`: what a save does with what it finds under its key (a destroyed session
  stays destroyed; a renewal within its grace window is followed);
* :func:`renewal_due`, :func:`rotated_record` and :func:`tombstone_for`: the rotation rules (the
  old ID never comes back: a renewal's tombstone points at the new record, a privilege
  change's is dead);
* deadlines: :func:`liveness`, :func:`needs_touch`, :func:`needs_renewal`, :func:`record_ttl`,
  :func:`cookie_max_age`.
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeAlias

# The pure decisions, re-exported: this module was their home before they had their own.
from bastion.core.sessions.deadlines import (
    EXPIRY_SLACK,
    LIVE,
    Liveness,
    cookie_max_age,
    liveness,
    needs_renewal,
    needs_touch,
    record_ttl,
)
from bastion.core.sessions.ids import (
    handle_of,
    new_csrf_secret,
    new_session_id,
    presession_csrf_secret,
    session_handle,
)
from bastion.core.sessions.planning import (
    GENERAL,
    UNCHANGED,
    DataWrite,
    Plan,
    build,
    diff,
    merge,
    plan_save,
    renewal_due,
    resolve,
    rotated_record,
    tombstone_for,
    worth_storing,
)
from bastion.core.sessions.record import (
    SessionRecord,
    data_slice,
    stored_data,
)

__all__ = [
    "EXPIRY_SLACK",
    "GENERAL",
    "LIVE",
    "UNCHANGED",
    "DataWrite",
    "Liveness",
    "Plan",
    "Rotation",
    "SessionState",
    "build",
    "cookie_max_age",
    "diff",
    "liveness",
    "merge",
    "needs_renewal",
    "needs_touch",
    "plan_save",
    "record_ttl",
    "renewal_due",
    "resolve",
    "rotated_record",
    "tombstone_for",
    "worth_storing",
]

Rotation: TypeAlias = Literal["login", "regenerate", "renew"]
"""Why the ID moves: a login, a privilege change of the same login, or periodic renewal."""


class SessionState:
    """What one request knows about its session; mutated only by its own methods and the
    engine's load and save steps, never by I/O.

    ``raw`` is the record exactly as loaded and ``pristine`` its data part (the comparison
    base of every change); ``rotate`` is the pending rotation, ``logout`` a pending logout
    whose stored record (``ended``: key and user) is still to delete. ``presession`` is the
    random value of a visitor's pre-session cookie (see
    :data:`~bastion.core.sessions.PRESESSION_PREFIX`).
    """

    __slots__ = (
        "accessed",
        "authenticated_at",
        "cookie_value",
        "csrf_secret",
        "data",
        "default_persistent",
        "ended",
        "follower",
        "id",
        "key",
        "loaded",
        "logout",
        "meta_dirty",
        "persistent",
        "presession",
        "presession_new",
        "pristine",
        "raw",
        "record",
        "rejected",
        "rotate",
        "user_id",
    )

    def __init__(self, cookie_value: str | None, persistent: bool = False) -> None:
        self.cookie_value = cookie_value
        self.default_persistent = persistent
        self.accessed = False
        self.loaded = False
        self.id: str | None = None
        self.key: str | None = None
        self.raw: bytes | None = None
        self.pristine: bytes | None = None
        self.record: SessionRecord | None = None
        self.data: dict[str, Any] = {}
        self.follower = False
        self.rejected: str | None = None
        self.rotate: Rotation | None = None
        self.logout = False
        self.ended: tuple[str, str | None] | None = None
        self.meta_dirty = False
        self.presession: str | None = None
        self.presession_new = False
        self.user_id: str | None = None
        self.authenticated_at: float | None = None
        self.csrf_secret: str | None = None
        self.persistent = persistent

    # -- loading -------------------------------------------------------------------------------

    def start_fresh(self, rejected: str | None) -> None:
        """A new, empty, unstored session (``rejected``: why the cookie's was refused)."""
        self.loaded = True
        self.rejected = rejected
        self.id = None
        self.key = None
        self.raw = None
        self.pristine = None
        self.record = None
        self.data = {}
        self.follower = False
        self.user_id = None
        self.authenticated_at = None
        self.csrf_secret = None
        self.persistent = self.default_persistent

    def adopt(
        self, session_id: str, key: str, raw: bytes, record: SessionRecord, *, follower: bool
    ) -> None:
        """Take the stored ``record`` (``raw`` as read under ``key``) as this request's."""
        self.loaded = True
        self.id = session_id
        self.key = key
        self.raw = raw
        self.pristine = data_slice(raw)
        self.record = record
        self.data = record.data
        self.follower = follower
        self.user_id = record.user_id
        self.authenticated_at = record.authenticated_at
        self.csrf_secret = record.csrf_secret
        self.persistent = record.persistent

    def adopt_saved(self, session_id: str, key: str, value: bytes, record: SessionRecord) -> None:
        """After a create or a rotation wrote ``value``: it is what this request holds now."""
        self.adopt(session_id, key, value, record, follower=False)
        self.rotate = None
        self.meta_dirty = False
        self.data = stored_data(value)

    # -- facts ---------------------------------------------------------------------------------

    @property
    def handle(self) -> str | None:
        """The handle of the record this request uses (the renewed one within a grace window)."""
        if self.key is not None and self.rotate is None:
            return handle_of(self.key)
        return None if self.id is None else session_handle(self.id)

    def issue_csrf_secret(self) -> str:
        """The CSRF secret, issuing one when there is none: a visitor without a stored session
        gets a pre-session value instead of a store write."""
        if self.csrf_secret is None:
            if self.key is None:
                if self.presession is None:
                    self.presession = new_session_id()
                    self.presession_new = True
                self.csrf_secret = presession_csrf_secret(self.presession)
            else:  # pragma: no cover - a stored record always has its secret
                self.csrf_secret = new_csrf_secret()
                self.meta_dirty = True
        return self.csrf_secret

    def verification_secret(self) -> str | None:
        """The secret a submitted CSRF token is checked against, without issuing one."""
        if self.csrf_secret is not None:
            return self.csrf_secret
        if self.key is None and self.presession is not None:
            return presession_csrf_secret(self.presession)
        return None

    # -- lifecycle -----------------------------------------------------------------------------

    def login(self, user_id: str, now: float, *, remember: bool | None) -> None:
        self.user_id = user_id
        self.authenticated_at = now
        self.csrf_secret = new_csrf_secret()
        if remember is not None:
            self.persistent = bool(remember)
        self.meta_dirty = True
        self.rotate = "login"
        self.id = new_session_id()

    def end_login(self) -> None:
        if self.user_id is None:
            return
        self.user_id = None
        self.authenticated_at = None
        self.csrf_secret = new_csrf_secret()
        self.meta_dirty = True
        self.rotate = "regenerate"
        self.id = new_session_id()

    def regenerate(self) -> None:
        self.rotate = self.rotate or "regenerate"
        self.id = new_session_id()

    def end(self) -> None:
        """Logout: the stored record (if any) is to be deleted; the session starts afresh."""
        if self.key is not None and self.ended is None:
            self.ended = (self.key, None if self.record is None else self.record.user_id)
        self.start_fresh(self.rejected)
        self.logout = True
        self.rotate = None
        self.meta_dirty = False

    def discard(self) -> None:
        """Nothing of this request is written (a 5xx with nothing that must happen anyway)."""
        self.loaded = False
        self.logout = False
        self.ended = None
        self.rotate = None

    def keep_only_lifecycle(self) -> bool:
        """After a 5xx: drop this request's data changes, keep what must happen anyway (a
        logout, the old ID's death in a rotation). Says whether anything is left to write.

        A ``login()`` is not committed on a 5xx (the view failed, so whether it meant to grant
        the login is unknown): the loaded session moves to a new ID as ``regenerate()`` would,
        unbound as before. ``regenerate()`` and ``end_login()`` are committed with the loaded
        data."""
        if self.logout:
            if self.ended is None:
                return False
            self.start_fresh(self.rejected)
            self.meta_dirty = False
            return True
        loaded, pristine = self.record, self.pristine
        if self.rotate is None or loaded is None or self.key is None or pristine is None:
            return False
        self.data = json.loads(pristine)
        if self.rotate == "login" or self.user_id == loaded.user_id:
            self.user_id = loaded.user_id
            self.authenticated_at = loaded.authenticated_at
            self.csrf_secret = loaded.csrf_secret
            self.persistent = loaded.persistent
            self.meta_dirty = False
        self.rotate = "regenerate"
        return True
