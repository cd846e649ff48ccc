"""Login-state records in bastion's store: one per login attempt, single-use, short-lived.

``LoginStates(store, clock=..., ttl=600)``::

    record = new_login_state(provider="local", redirect_uri=..., next_url="/",
                             session_binding=handle, now=clock.now())
    await states.put(record)                  # create-if-absent, ttl seconds
    ...
    record = await states.take(state, handle)  # exactly once

The key is ``oidc-state:{<sha256 of state>}``: the state value itself is not a store key, so a
store dump does not list live states. :meth:`LoginStates.take` refuses (``OIDCRejected``):

* ``state_unknown``: no record (never issued, expired, consumed, or not a record bastion
  wrote), past its ``ttl`` by the injected clock, or a parallel take that lost the race;
* ``state_mismatch``: the record is bound to another pre-login session (login CSRF: the
  attacker's own ``state`` and ``code`` planted in the victim's browser). The record is NOT
  consumed, so a forged callback cannot burn a victim's pending login.

Single use: the take reads the record and compare-and-sets it to a tombstone; of any number of
parallel takes exactly one compare-and-set lands (two store round trips). The ``*_sync``
methods run the same flows on ``store.sync`` (WSGI).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Final, TypeVar

from bastion.core.clock import system_clock
from bastion.core.oidc.reasons import OIDCReason, OIDCRejected
from bastion.core.oidc.state import decode_state, encode_state, matches_binding
from bastion.engine.flows import CompareAndSet, Get, drive, drive_sync
from bastion.errors import BadData, ConfigurationError, StoreError
from bastion.stores.base import inline_side, require_sync, sync_side
from bastion.stores.keyspace import hash_tag

if TYPE_CHECKING:
    from bastion.core.clock import Clock
    from bastion.core.oidc.state import LoginState
    from bastion.engine.flows import Flow
    from bastion.stores.base import Store, SyncStore

__all__ = ["DEFAULT_STATE_TTL", "MAX_STATE_TTL", "LoginStates", "state_key"]

DEFAULT_STATE_TTL: Final = 600.0
MAX_STATE_TTL: Final = 3600.0
_NAMESPACE: Final = "oidc-state"
_SPENT: Final = b"\x00spent"
_T = TypeVar("_T")


def state_key(state: str) -> str:
    """The store key of the login-state record for ``state``."""
    return hash_tag(_NAMESPACE, hashlib.sha256(state.encode("utf-8")).hexdigest())


class LoginStates:
    """Login-state records in ``store`` (see the module docstring)."""

    __slots__ = ("_clock", "_inline", "_store", "_sync", "_ttl")

    def __init__(
        self, store: Store, *, clock: Clock = system_clock, ttl: float = DEFAULT_STATE_TTL
    ) -> None:
        if (
            isinstance(ttl, bool)
            or not isinstance(ttl, int | float)
            or not 0 < ttl <= MAX_STATE_TTL
        ):
            raise ConfigurationError(
                f"state_ttl must be 0 to {MAX_STATE_TTL:g} seconds, got {ttl!r}",
                setting="state_ttl",
            )
        self._ttl = float(ttl)
        self._store = store
        self._sync: SyncStore | None = sync_side(store)
        self._inline = inline_side(store)
        self._clock = clock

    def __repr__(self) -> str:
        return f"LoginStates(store={self._store!r}, ttl={self._ttl:g})"

    @property
    def ttl(self) -> float:
        return self._ttl

    # -- flows ---------------------------------------------------------------------------------

    def put_flow(self, record: LoginState) -> Flow[None]:
        """Store ``record`` (create-if-absent: a 256-bit clash is a store fault, not a merge)."""
        created = yield CompareAndSet(
            state_key(record.state), None, encode_state(record), self._ttl
        )
        if not created:
            raise StoreError("the store refused a new login-state record; check the store")

    def take_flow(self, state: str, session_binding: str) -> Flow[LoginState]:
        """Consume the record of ``state`` for the browser holding ``session_binding``."""
        key = state_key(state)
        raw = yield Get(key)
        if raw is None or raw == _SPENT:
            raise OIDCRejected(OIDCReason.STATE_UNKNOWN, "login state unknown or already used")
        try:
            record = decode_state(raw)
        except BadData as exc:
            raise OIDCRejected(OIDCReason.STATE_UNKNOWN, "login state unreadable") from exc
        if record.state != state:
            raise OIDCRejected(OIDCReason.STATE_UNKNOWN, "login state unknown")
        remaining = record.created_at + self._ttl - self._clock.now()
        if remaining <= 0:
            raise OIDCRejected(OIDCReason.STATE_UNKNOWN, "login state expired")
        if not matches_binding(record, session_binding):
            raise OIDCRejected(
                OIDCReason.STATE_MISMATCH, "login state bound to another browser session"
            )
        won = yield CompareAndSet(key, raw, _SPENT, remaining)
        if not won:
            raise OIDCRejected(OIDCReason.STATE_UNKNOWN, "login state already used")
        return record

    # -- drivers -------------------------------------------------------------------------------

    async def _run(self, flow: Flow[_T]) -> _T:
        return await drive(flow, self._store, self._inline)

    def _run_sync(self, flow: Flow[_T]) -> _T:
        return drive_sync(flow, require_sync(self._sync, self._store))

    async def put(self, record: LoginState) -> None:
        """Store ``record`` for :attr:`ttl` seconds."""
        await self._run(self.put_flow(record))

    async def take(self, state: str, session_binding: str) -> LoginState:
        """The record of ``state``, used up; raises ``OIDCRejected`` (module docstring)."""
        return await self._run(self.take_flow(state, session_binding))

    def put_sync(self, record: LoginState) -> None:
        """:meth:`put` on the store's synchronous side."""
        self._run_sync(self.put_flow(record))

    def take_sync(self, state: str, session_binding: str) -> LoginState:
        """:meth:`take` on the store's synchronous side."""
        return self._run_sync(self.take_flow(state, session_binding))
