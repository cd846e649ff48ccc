"""Server-side sessions, sans I/O: IDs, their storage keys, the record format and deadlines.

The package holds one concern per module: :mod:`~bastion.core.sessions.ids` (IDs, handles,
store keys), :mod:`~bastion.core.sessions.config` (:class:`SessionConfig`),
:mod:`~bastion.core.sessions.record` (the record and tombstone codec, which owns the byte
layout), :mod:`~bastion.core.sessions.index` (the per-user index and revocation epoch) and
:mod:`~bastion.core.sessions.state` (a request's :class:`SessionState`),
:mod:`~bastion.core.sessions.planning` (the pure save decisions) and
:mod:`~bastion.core.sessions.deadlines` (alive, touch, renewal, TTL). The names below are
re-exported here.

What the cookie carries is a session ID: 256 random bits as 43 base64url characters, or that ID
signed with a :class:`~bastion.core.signing.Signer` (purpose ``"session"``) when the app gives a
key ring. The store never sees the ID: a record lives under ``session:`` + the session's
*handle*, the base64url SHA-256 of the ID. A leaked store therefore names no live session. A
256-bit random ID needs no slow hash: nobody can search that space.

Records are JSON, never pickle. Values are checked when they are assigned
(:func:`check_session_value`): only ``dict`` with ``str`` keys, ``list``, ``str``, ``int``,
finite ``float``, ``bool`` and ``None`` are accepted, so what a handler reads back is exactly
what it wrote (a tuple would come back as a list, so it is refused). The encoded record is
capped at :attr:`SessionConfig.max_bytes`.

Deadlines, all enforced by the server from the record, never by the cookie:

* **idle timeout**: the session dies when ``last_seen + idle_timeout`` has passed. ``last_seen``
  is pushed forward at most once per ``touch_interval``, so a read-only request usually writes
  nothing.
* **absolute lifetime**: the session dies ``absolute_lifetime`` after it was created, however
  busy it is.
* **renewal**: every ``renew_every`` seconds the ID is replaced. The previous ID stays usable
  for ``renew_grace`` seconds (a *moved* tombstone that points at the new handle), so parallel
  requests sent with the old cookie are not logged out. A rotation for a privilege change
  (login, regenerate) leaves a *dead* tombstone instead: a fixated pre-login ID never reaches
  the authenticated session, not even during a grace window.

The store TTL of a record is its remaining life, so expired records disappear by themselves.
"""

from __future__ import annotations

from bastion.core.sessions.config import SessionConfig
from bastion.core.sessions.ids import (
    DEFAULT_COOKIE_NAME,
    DEVELOPMENT_COOKIE_NAME,
    PRESESSION_PREFIX,
    SESSION_ID_CHARS,
    handle_of,
    is_session_id,
    new_csrf_secret,
    new_session_id,
    presession_csrf_secret,
    record_key,
    session_handle,
)
from bastion.core.sessions.index import (
    MAX_SESSIONS_PER_USER,
    Epoch,
    SessionIndex,
    decode_epoch,
    decode_index,
    encode_epoch,
    encode_index,
)
from bastion.core.sessions.record import (
    RecordDecoder,
    SessionRecord,
    Tombstone,
    check_session_value,
    data_slice,
    decode_record,
    encode_data,
    encode_record,
    encode_tombstone,
    replace_data,
    stored_data,
)
from bastion.core.sessions.state import (
    EXPIRY_SLACK,
    Liveness,
    Plan,
    SessionState,
    cookie_max_age,
    diff,
    liveness,
    merge,
    needs_renewal,
    needs_touch,
    plan_save,
    record_ttl,
    renewal_due,
    resolve,
    rotated_record,
    tombstone_for,
)

__all__ = [
    "DEFAULT_COOKIE_NAME",
    "DEVELOPMENT_COOKIE_NAME",
    "EXPIRY_SLACK",
    "MAX_SESSIONS_PER_USER",
    "PRESESSION_PREFIX",
    "SESSION_ID_CHARS",
    "Epoch",
    "Liveness",
    "Plan",
    "RecordDecoder",
    "SessionConfig",
    "SessionIndex",
    "SessionRecord",
    "SessionState",
    "Tombstone",
    "check_session_value",
    "cookie_max_age",
    "data_slice",
    "decode_epoch",
    "decode_index",
    "decode_record",
    "diff",
    "encode_data",
    "encode_epoch",
    "encode_index",
    "encode_record",
    "encode_tombstone",
    "handle_of",
    "is_session_id",
    "liveness",
    "merge",
    "needs_renewal",
    "needs_touch",
    "new_csrf_secret",
    "new_session_id",
    "plan_save",
    "presession_csrf_secret",
    "record_key",
    "record_ttl",
    "renewal_due",
    "replace_data",
    "resolve",
    "rotated_record",
    "session_handle",
    "stored_data",
    "tombstone_for",
]
