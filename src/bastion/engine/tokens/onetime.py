"""One-time tokens over a store: issue, consume once, peek (see :mod:`bastion.core.tokens.onetime`).

A reset link, an e-mail verification link, a magic link::

    tokens = OneTimeTokens(store, keyring)
    link = await tokens.issue("password-reset", user.id, state=user.password_hash, ttl=1800)
    ...
    user_id = await tokens.owner(link, purpose="password-reset")       # whose link is it?
    user = load(user_id)
    await tokens.consume(link, purpose="password-reset", state=user.password_hash,
                         user_id=user_id)                             # exactly once

Refusals (:class:`~bastion.core.tokens.reasons.TokenRejected`), in the order checked:

* ``MALFORMED``: not ``bot_<id>.<secret>``; no store call.
* ``UNKNOWN``: never issued, already consumed (a parallel consume that lost the race gets this
  too), its store record gone, or a secret that does not match its record.
* ``EXPIRED``: past its ``ttl`` (the record is kept an hour longer so the answer is this
  rather than ``UNKNOWN``).
* ``WRONG_PURPOSE``: issued for another purpose, or (``user_id=``) for another user. The token
  is NOT consumed: presenting a link at the wrong form must not burn it.
* ``STATE_CHANGED``: the bound state changed (the password was changed since the reset link
  was sent). :meth:`OneTimeTokens.consume` burns the token: it can never succeed again.

Atomic single use: :meth:`~OneTimeTokens.consume` reads the record and compare-and-sets it to
a tombstone; of any number of parallel consumes (tasks, threads, processes on SQLite or Redis)
exactly one compare-and-set lands. Two round trips: a ``get`` and the compare-and-set
(:meth:`~OneTimeTokens.peek` and :meth:`~OneTimeTokens.owner` one ``get``; issue one
compare-and-set).

Audit (when an auditor is given; never the token, its secret or the state):
``authn_token_created`` on issue, ``onetime_token_consumed`` on a consume, ``authn_token_reuse``
(level ``warn``) when a consumed token is presented again, ``authn_login_fail`` (``method=onetime``,
``reason=<TokenReason>``) for every other refusal. ``token_id`` (the public id part) and the
purpose appear in details once a record is found.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, TypeVar

from bastion.core.audit import EventName, Level, Outcome
from bastion.core.clock import system_clock
from bastion.core.keys import KeyRing
from bastion.core.tokens.onetime import (
    DEFAULT_MAX_TTL,
    OneTimeRecord,
    Spent,
    check_max_ttl,
    check_purpose,
    check_state,
    check_ttl,
    check_user_id,
    decode_record,
    encode_record,
    encode_spent,
    matches,
    new_token,
    parse_token,
    state_message,
    token_message,
)
from bastion.core.tokens.reasons import TokenReason, TokenRejected
from bastion.engine.flows import CompareAndSet, Get, drive, drive_sync
from bastion.errors import BadData, StoreError
from bastion.stores.base import inline_side, require_sync, sync_side
from bastion.stores.keyspace import hash_tag

if TYPE_CHECKING:
    from bastion.core.audit import Auditor, DetailValue
    from bastion.core.clock import Clock
    from bastion.core.keys import SecretKey
    from bastion.engine.flows import Flow
    from bastion.stores.base import Store, SyncStore

__all__ = ["CONSUMED_EVENT", "RETENTION", "OneTimeTokens", "record_key"]

RETENTION: Final = 3600.0
"""Seconds a record (or a consumed token's tombstone) is kept past the token's expiry, so that
a late click reads ``EXPIRED`` and a replay is recognised as one."""

CONSUMED_EVENT: Final = "onetime_token_consumed"
_NAMESPACE: Final = "token-once"
_ISSUE_ATTEMPTS: Final = 3
_T = TypeVar("_T")


def record_key(token_id: str) -> str:
    """The store key of the one-time token whose public id is ``token_id``."""
    return hash_tag(_NAMESPACE, token_id)


class OneTimeTokens:
    """One-time tokens in ``store``, named under subkeys of ``keyring`` (see the module
    docstring). ``max_ttl`` bounds the ``ttl`` of :meth:`issue` (default one day, at most 30).

    The ``*_sync`` methods run the same flows on ``store.sync`` (WSGI apps); on a store whose
    sync side never blocks (memory) the async methods run them inline too.
    """

    __slots__ = (
        "_auditor",
        "_clock",
        "_inline",
        "_max_ttl",
        "_names",
        "_states",
        "_store",
        "_sync",
    )

    def __init__(
        self,
        store: Store,
        keyring: KeyRing | SecretKey,
        *,
        clock: Clock = system_clock,
        auditor: Auditor | None = None,
        max_ttl: float = DEFAULT_MAX_TTL,
    ) -> None:
        ring = KeyRing.coerce(keyring)
        self._names = ring.lookup("tokens:onetime", size=32)
        self._states = ring.lookup("tokens:onetime-state", size=32)
        self._max_ttl = check_max_ttl(max_ttl)
        self._store = store
        self._sync: SyncStore | None = sync_side(store)
        self._inline = inline_side(store)
        self._clock = clock
        self._auditor = auditor

    def __repr__(self) -> str:
        return f"OneTimeTokens(store={self._store!r})"

    # -- flows ---------------------------------------------------------------------------------

    def issue_flow(
        self,
        purpose: str,
        user_id: str,
        *,
        state: str | bytes,
        ttl: float,
        client_ip: str | None = None,
    ) -> Flow[str]:
        """Store a new token's record and return the token (shown once: only MACs are kept)."""
        purpose = check_purpose(purpose)
        user_id = check_user_id(user_id)
        bound = check_state(state)
        seconds = check_ttl(ttl, self._max_ttl)
        now = self._clock.now()
        expires = now + seconds
        for _ in range(_ISSUE_ATTEMPTS):
            token, token_id, secret = new_token()
            record = OneTimeRecord(
                purpose=purpose,
                user_id=user_id,
                issued_at=now,
                expires_at=expires,
                mac=self._names.name(token_message(token_id, secret, purpose, user_id, expires)),
                state_mac=self._states.name(state_message(token_id, purpose, user_id, bound)),
            )
            # Create-if-absent: a record is never overwritten, not even by a (2**-128) id clash.
            created = yield CompareAndSet(
                record_key(token_id), None, encode_record(record), seconds + RETENTION
            )
            if created:
                self._audit(
                    EventName.AUTHN_TOKEN_CREATED,
                    Outcome.SUCCESS,
                    user_id,
                    client_ip,
                    {"method": "onetime", "purpose": purpose, "token_id": token_id},
                )
                return token
        raise StoreError("the store refused every new one-time token record; check the store")

    def use_flow(
        self,
        token: str,
        *,
        purpose: str,
        state: str | bytes | None,
        user_id: str | None = None,
        consume: bool,
        client_ip: str | None = None,
    ) -> Flow[str]:
        """Check ``token`` for ``purpose`` (and ``user_id``, and ``state`` unless it is
        ``None``); with ``consume``, use it up. Returns the token's user id."""
        purpose = check_purpose(purpose)
        if user_id is not None:
            user_id = check_user_id(user_id)
        bound = None if state is None else check_state(state)
        try:
            token_id, secret = parse_token(token)
        except TokenRejected:
            self._refused(TokenReason.MALFORMED, None, client_ip, {})
            raise
        key = record_key(token_id)
        raw = yield Get(key)
        found: OneTimeRecord | Spent | None = None
        if raw is not None:
            try:
                found = decode_record(raw)
            except BadData:
                found = None
        details: dict[str, DetailValue] = {"token_id": token_id}
        if isinstance(found, Spent):
            # A warning, not the vocabulary's "critical": a user opening a used link again is
            # the usual cause (a replayed refresh token, by contrast, revokes its family).
            self._audit(
                EventName.AUTHN_TOKEN_REUSE,
                Outcome.FAILURE,
                found.user_id,
                client_ip,
                {"method": "onetime", "reason": TokenReason.UNKNOWN.value, **details},
                level=Level.WARN,
            )
            raise TokenRejected(TokenReason.UNKNOWN, "one-time token already used")
        record = found
        if record is None or not matches(
            self._names,
            token_message(token_id, secret, record.purpose, record.user_id, record.expires_at),
            record.mac,
        ):
            self._refused(TokenReason.UNKNOWN, None, client_ip, {})
            raise TokenRejected(TokenReason.UNKNOWN)
        owner = record.user_id
        details["purpose"] = record.purpose
        now = self._clock.now()
        if now >= record.expires_at:
            self._refused(TokenReason.EXPIRED, owner, client_ip, details)
            raise TokenRejected(TokenReason.EXPIRED)
        if record.purpose != purpose or (user_id is not None and user_id != owner):
            self._refused(TokenReason.WRONG_PURPOSE, owner, client_ip, details)
            raise TokenRejected(TokenReason.WRONG_PURPOSE)
        changed = bound is not None and not matches(
            self._states, state_message(token_id, record.purpose, owner, bound), record.state_mac
        )
        if consume:
            remaining = max(record.expires_at - now, 0.0) + RETENTION
            won = yield CompareAndSet(key, raw, encode_spent(Spent(now, owner)), remaining)
            if not won and not changed:  # a parallel consume used it first
                self._refused(TokenReason.UNKNOWN, owner, client_ip, details)
                raise TokenRejected(TokenReason.UNKNOWN, "one-time token already used")
        if changed:
            self._refused(TokenReason.STATE_CHANGED, owner, client_ip, details)
            raise TokenRejected(TokenReason.STATE_CHANGED)
        if consume:
            self._audit(
                CONSUMED_EVENT, Outcome.SUCCESS, owner, client_ip, {"method": "onetime", **details}
            )
        return owner

    # -- async API -----------------------------------------------------------------------------

    async def _run(self, flow: Flow[_T]) -> _T:
        return await drive(flow, self._store, self._inline)

    def _run_sync(self, flow: Flow[_T]) -> _T:
        return drive_sync(flow, require_sync(self._sync, self._store))

    async def issue(
        self,
        purpose: str,
        user_id: str,
        *,
        state: str | bytes,
        ttl: float,
        client_ip: str | None = None,
    ) -> str:
        """A new token for ``purpose`` and ``user_id``, bound to ``state``, valid for ``ttl``
        seconds (``0 < ttl <= max_ttl``, else :class:`~bastion.errors.ConfigurationError`)."""
        return await self._run(
            self.issue_flow(purpose, user_id, state=state, ttl=ttl, client_ip=client_ip)
        )

    async def consume(
        self,
        token: str,
        *,
        purpose: str,
        state: str | bytes,
        user_id: str | None = None,
        client_ip: str | None = None,
    ) -> str:
        """Use ``token`` up and return its user id; raises :class:`TokenRejected` (see the
        module docstring). Of parallel consumes of one token exactly one returns."""
        flow = self.use_flow(
            token, purpose=purpose, state=state, user_id=user_id, consume=True, client_ip=client_ip
        )
        return await self._run(flow)

    async def peek(
        self,
        token: str,
        *,
        purpose: str,
        state: str | bytes,
        user_id: str | None = None,
        client_ip: str | None = None,
    ) -> str:
        """Every check of :meth:`consume`, without using the token (to render the form a link
        opens, on GET). Returns the token's user id."""
        flow = self.use_flow(
            token, purpose=purpose, state=state, user_id=user_id, consume=False, client_ip=client_ip
        )
        return await self._run(flow)

    async def owner(self, token: str, *, purpose: str, client_ip: str | None = None) -> str:
        """The user id of a live ``token`` of ``purpose``, without checking the state or using
        it: to find whose state to load before :meth:`consume` (pass ``user_id=`` there)."""
        flow = self.use_flow(token, purpose=purpose, state=None, consume=False, client_ip=client_ip)
        return await self._run(flow)

    # -- sync API (WSGI) -----------------------------------------------------------------------

    def issue_sync(
        self,
        purpose: str,
        user_id: str,
        *,
        state: str | bytes,
        ttl: float,
        client_ip: str | None = None,
    ) -> str:
        """:meth:`issue` on the store's synchronous side."""
        return self._run_sync(
            self.issue_flow(purpose, user_id, state=state, ttl=ttl, client_ip=client_ip)
        )

    def consume_sync(
        self,
        token: str,
        *,
        purpose: str,
        state: str | bytes,
        user_id: str | None = None,
        client_ip: str | None = None,
    ) -> str:
        """:meth:`consume` on the store's synchronous side."""
        flow = self.use_flow(
            token, purpose=purpose, state=state, user_id=user_id, consume=True, client_ip=client_ip
        )
        return self._run_sync(flow)

    def peek_sync(
        self,
        token: str,
        *,
        purpose: str,
        state: str | bytes,
        user_id: str | None = None,
        client_ip: str | None = None,
    ) -> str:
        """:meth:`peek` on the store's synchronous side."""
        flow = self.use_flow(
            token, purpose=purpose, state=state, user_id=user_id, consume=False, client_ip=client_ip
        )
        return self._run_sync(flow)

    def owner_sync(self, token: str, *, purpose: str, client_ip: str | None = None) -> str:
        """:meth:`owner` on the store's synchronous side."""
        flow = self.use_flow(token, purpose=purpose, state=None, consume=False, client_ip=client_ip)
        return self._run_sync(flow)

    # -- audit ---------------------------------------------------------------------------------

    def _refused(
        self,
        reason: TokenReason,
        user_id: str | None,
        client_ip: str | None,
        details: dict[str, DetailValue],
    ) -> None:
        self._audit(
            EventName.AUTHN_LOGIN_FAIL,
            Outcome.FAILURE,
            user_id,
            client_ip,
            {"method": "onetime", "reason": reason.value, **details},
        )

    def _audit(
        self,
        name: EventName | str,
        outcome: Outcome,
        user_id: str | None,
        client_ip: str | None,
        details: dict[str, DetailValue],
        *,
        level: Level | None = None,
    ) -> None:
        if self._auditor is not None:
            self._auditor.emit(
                name,
                outcome=outcome,
                level=level,
                user=user_id,
                client_ip=client_ip,
                details=details,
            )
