"""The load of one request's session, in steps without I/O.

The engine's three loads (:meth:`~bastion.engine.sessions.SessionEngine.load`, ``load_sync``
and ``load_flow``) read the store between these steps: :meth:`Loader.key` says which record to
read, :meth:`Loader.found` judges what was read (adopt, follow a renewal, or refuse), and
:meth:`Loader.checked` refuses a logged-in session whose user's sessions were revoked after
its login. Unknown, expired, malformed or revoked IDs are never adopted: the request gets a
fresh session and the refusal is audited.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.core.audit import EventName, Outcome
from bastion.core.sessions.ids import PRESESSION_PREFIX, is_session_id, record_key, session_handle
from bastion.core.sessions.index import decode_epoch
from bastion.core.sessions.record import RecordDecoder, SessionRecord, Tombstone
from bastion.core.sessions.state import LIVE, liveness
from bastion.errors import BadData

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.core.audit import Auditor
    from bastion.core.clock import Clock
    from bastion.core.sessions.config import SessionConfig
    from bastion.core.signing import Signer
    from bastion.engine.sessions.session import Session

__all__ = ["Loader", "bound_user"]


class Loader:
    """The load steps of one engine (its configuration, clock, decoder, signer and filter)."""

    __slots__ = ("_auditor", "_clock", "_config", "_decoder", "_filter", "_signer")

    def __init__(  # noqa: PLR0917 (the engine's parts, in one place)
        self,
        config: SessionConfig,
        clock: Clock,
        decoder: RecordDecoder,
        signer: Signer | None,
        auditor: Auditor,
        session_filter: Callable[[SessionRecord], bool] | None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._decoder = decoder
        self._signer = signer
        self._auditor = auditor
        self._filter = session_filter

    def decode_cookie(self, value: str) -> tuple[str | None, str]:
        """``(session ID, "")``, ``(pre-session value, "presession")`` or ``(None, reason)``."""
        signer = self._signer
        if signer is None:
            if value.startswith(PRESESSION_PREFIX) and is_session_id(value[2:]):
                return value[2:], "presession"
            return (value, "") if is_session_id(value) else (None, "malformed")
        result = signer.verify(value)
        if result.value is None:
            return None, "bad_signature" if result.status == "bad_signature" else "malformed"
        try:
            text = result.value.decode("ascii")
        except UnicodeDecodeError:
            return None, "malformed"
        if text.startswith(PRESESSION_PREFIX) and is_session_id(text[2:]):
            return text[2:], "presession"
        return (text, "") if is_session_id(text) else (None, "malformed")

    def key(self, session: Session) -> tuple[str, str] | None:
        """A load's first step, without I/O: ``(session ID, store key)`` to read, or ``None``
        when the session is settled already (loaded, no cookie, or a rejected cookie)."""
        st = session._state
        st.accessed = True
        if st.loaded:
            return None
        value = st.cookie_value
        if value is None:
            st.start_fresh(None)
            return None
        session_id, reason = self.decode_cookie(value)
        if reason == "presession":
            # No stored session yet: nothing to read, nothing to reject.
            st.start_fresh(None)
            st.presession = session_id
            return None
        if session_id is None:
            self.reject(session, reason, EventName.INPUT_VALIDATION_FAIL)
            return None
        return session_id, record_key(session_handle(session_id))

    def found(
        self, session: Session, session_id: str, key: str, raw: bytes | None, *, follower: bool
    ) -> str | None:
        """A load's second step: judge what ``key`` held. Adopts the record or starts a fresh
        session; returns the successor's key when ``raw`` is a renewal tombstone still within
        its grace window (read it and call again with ``follower=True``)."""
        if raw is None:
            self.reject(session, "unknown", EventName.SESSION_USE_AFTER_EXPIRE)
            return None
        try:
            found: SessionRecord | Tombstone | None = self._decoder.decode(raw)
        except BadData:
            found = None
        now = self._clock.now()
        if isinstance(found, Tombstone) and not follower:
            if found.successor is None or now >= found.until:
                self.reject(session, "rotated", EventName.SESSION_USE_AFTER_EXPIRE)
                return None
            return record_key(found.successor)
        if not isinstance(found, SessionRecord):
            self.reject(session, "unknown", EventName.SESSION_USE_AFTER_EXPIRE)
            return None
        state = liveness(found, now, self._config)
        refused: str | None = None
        if state is not LIVE:
            refused = state.value
        elif self._filter is not None and not self._filter(found):
            refused = "filtered"  # the app's session_filter ended it (a disabled user)
        if refused is not None:
            self.reject(session, refused, EventName.SESSION_EXPIRED, user=found.user_id)
            return None
        session._state.adopt(session_id, key, raw, found, follower=follower)
        return None

    def checked(self, session: Session, raw_epoch: bytes | None) -> None:
        """A load's last step for a logged-in session: refuse it when the user's sessions were
        revoked after its login (its epoch is lower than the user's; an unreadable epoch
        record refuses too, rather than guess)."""
        record = session._state.record
        if record is None or record.user_id is None:  # pragma: no cover - see bound_user
            return
        try:
            current = decode_epoch(raw_epoch).number
        except BadData:
            current = None
        if current is None or record.epoch < current:
            self.reject(session, "revoked", EventName.SESSION_USE_AFTER_EXPIRE, user=record.user_id)

    def reject(
        self, session: Session, reason: str, name: EventName, *, user: str | None = None
    ) -> None:
        session._state.start_fresh(reason)
        self._auditor.emit(
            name,
            outcome=Outcome.FAILURE,
            user=user,
            client_ip=session.client_ip,
            details={"reason": reason, "action": "fresh_session_issued"},
        )


def bound_user(session: Session) -> str | None:
    """The user of the record a load has just adopted (``None``: anonymous, or not adopted)."""
    st = session._state
    record = st.record
    return None if record is None or st.key is None else record.user_id
