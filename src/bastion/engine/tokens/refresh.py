"""Refresh-token families on a store: issue, rotate, inspect, revoke (flows, written once).

The decisions are :func:`bastion.core.tokens.refresh.decide`; this module reads and writes the
family record (``hash_tag("token-family", family id)``) and the user's revocation epoch (the
sessions' :func:`~bastion.engine.sessions.registry.epoch_key`, raised by "revoke all"; no second
epoch is kept).

Round trips of one rotation. The flow reads the family (one ``Get``), decides, then writes the
successor and reads the user's epoch in one :class:`~bastion.engine.flows.CompareAndSetRead`:

* Redis: 2 round trips (``GET``, then one script: compare-and-set + epoch ``GET``).
* SQLite: the whole flow runs in ONE ``BEGIN IMMEDIATE`` transaction
  (:class:`~bastion.stores.base.SupportsTransaction`), so the compare-and-set never loses.
* Other stores: the same flow, driven plainly (a store without ``compare_and_set_read`` gets a
  compare-and-set then two gets).

The epoch is read after the successor is written, in the same atomic step on Redis. That is as
strict as reading it first: the epoch only rises, and a family's epoch is fixed at its login, so
a family written under a risen epoch is refused at this and every later use (and the refusal
writes a tombstone, so that an expired epoch record cannot revive it).

A family revoked for reuse or by :meth:`RefreshTokens.revoke` also gets a marker
(:func:`~bastion.engine.tokens.revocation.family_marker_key`, TTL ``marker_ttl``: the longest
access lifetime plus slack) that the bearer check reads in its one ``MGET``, so the access
tokens minted from the family (claim ``fid``) are refused too. The marker is written in the
same flow as the family's tombstone, right after it: on SQLite in the same transaction, on
Redis as the next command (the marker lives in the user's hash slot, the family in its own).
A failed marker write raises :class:`~bastion.errors.StoreUnavailable` (the reuse is not
reported as a plain refusal), and every later use of a token of that family writes the marker
again, so a retry heals it.

Danger: the epoch record's TTL is set by the sessions registry (twice the longest session
lifetime plus slack); a family made under epoch 0 that is never presented while a raised epoch
record lives, and outlives that record, is accepted again. Keep the refresh lifetime within the
epoch TTL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final, TypeVar

from bastion.core.audit import EventName, Outcome
from bastion.core.clock import system_clock
from bastion.core.sessions.index import decode_epoch
from bastion.core.tokens.reasons import TokenReason, TokenRejected
from bastion.core.tokens.refresh import (
    FamilyRecord,
    FamilySecrets,
    ParsedToken,
    Refuse,
    Replay,
    Reuse,
    Rotate,
    decide,
    decode_record,
    encode_record,
    format_token,
    is_known,
    new_family_id,
    new_secret,
    parse_token,
)
from bastion.engine.flows import (
    CAS_ATTEMPTS,
    CompareAndSet,
    CompareAndSetRead,
    Flow,
    Get,
    Set,
    backoff,
    drive_async,
    drive_sync,
)
from bastion.engine.sessions.registry import epoch_key
from bastion.engine.tokens.revocation import (
    FAMILY_MARKER,
    MAX_FAMILY_MARKER_TTL,
    check_family_id,
    family_marker_key,
)
from bastion.errors import BadData, ConfigurationError, StoreBusy
from bastion.stores.base import SupportsTransaction, require_sync, sync_side
from bastion.stores.keyspace import hash_tag

if TYPE_CHECKING:
    from collections.abc import Sequence

    from bastion.core.audit import Auditor
    from bastion.core.clock import Clock
    from bastion.core.keys import KeyRing
    from bastion.stores.base import Store, SyncStore

__all__ = ["FamilyInfo", "RefreshPolicy", "RefreshTokens", "Rotation", "family_key"]

DAY: Final = 86400.0
TOMBSTONE_SLACK: Final = 3600.0
"""How long a family record outlives its absolute expiry in the store, so that a late use is
refused ``EXPIRED`` (not ``UNKNOWN``) and hosts with skewed clocks agree."""
MAX_GRACE: Final = 60.0


def family_key(family_id: str) -> str:
    """The store key of a refresh family."""
    return hash_tag("token-family", family_id)


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    """How long families live. ``lifetime`` is absolute from the login and never extended by
    rotation; ``idle`` (optional) ends a family unused for that long; ``grace`` (0 to 60 s) is
    how long the previous token may be retried for the same successor; ``prefix`` starts
    every token."""

    lifetime: float = 30 * DAY
    idle: float | None = None
    grace: float = 10.0
    prefix: str = "brt_"

    def __post_init__(self) -> None:
        if not _seconds(self.lifetime) or self.lifetime > 400 * DAY:
            raise ConfigurationError(
                f"lifetime must be seconds greater than 0 and at most 400 days; got "
                f"{self.lifetime!r} (the default is 30 days)",
                setting="lifetime",
            )
        if self.idle is not None and (not _seconds(self.idle) or self.idle > self.lifetime):
            raise ConfigurationError(
                f"idle must be None or seconds greater than 0 and at most lifetime; got "
                f"{self.idle!r} (for example 14 days)",
                setting="idle",
            )
        grace = self.grace
        if (
            isinstance(grace, bool)
            or not isinstance(grace, int | float)
            or not (0 <= grace <= MAX_GRACE)
        ):
            raise ConfigurationError(
                f"grace must be 0 to {MAX_GRACE:g} seconds; got {grace!r} (the default is 10)",
                setting="grace",
            )
        if (
            not isinstance(self.prefix, str)
            or not 1 <= len(self.prefix) <= 16
            or not self.prefix.isascii()
            or "." in self.prefix
            or any(not (c.isalnum() or c == "_") for c in self.prefix)
        ):
            raise ConfigurationError(
                f"prefix must be 1-16 ASCII letters, digits or '_'; got {self.prefix!r}",
                setting="prefix",
            )


def _family_id(value: object) -> bool:
    """Whether ``value`` can name a family (and its marker key): 16 to 64 URL-safe characters."""
    try:
        check_family_id(value)
    except TokenRejected:
        return False
    return isinstance(value, str) and len(value) >= 16


def _seconds(value: object) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and value > 0
    )


@dataclass(frozen=True, slots=True)
class FamilyInfo:
    """What a family says about its login (no secret, no hash)."""

    family_id: str
    user_id: str
    client_id: str
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float
    epoch: int
    cnf_jkt: str | None
    generation: int


@dataclass(frozen=True, slots=True)
class Rotation:
    """A successful rotation: the new refresh token, its family, and whether this was a
    grace-window retry that got the successor handed out before (``replayed``)."""

    token: str
    family: FamilyInfo
    replayed: bool

    def __repr__(self) -> str:
        return f"Rotation(token='**********', family={self.family!r}, replayed={self.replayed})"


def _info(family_id: str, record: FamilyRecord) -> FamilyInfo:
    return FamilyInfo(
        family_id,
        record.user_id,
        record.client_id,
        record.scopes,
        record.created_at,
        record.expires_at,
        record.epoch,
        record.cnf_jkt,
        record.generation,
    )


def _decode(raw: bytes | None) -> FamilyRecord | None:
    if raw is None:
        return None
    try:
        return decode_record(raw)
    except BadData:
        raise TokenRejected(TokenReason.REVOKED, "refresh family record is unreadable") from None


def _epoch(raw: bytes | None) -> tuple[int | None, bool]:
    try:
        return decode_epoch(raw).number, raw is not None
    except BadData:
        return None, True  # unreadable: refuse rather than guess


_MARKED: Final = frozenset({"reused", "revoked"})
"""Tombstones whose family has a marker (an epoch tombstone needs none: the epoch refuses the
family's access tokens already)."""

_Result = Rotation | TokenRejected
_T = TypeVar("_T")


class RefreshTokens:
    """Refresh-token families over ``store`` (see the module docstring).

    ``keyring`` keys the secret hashes and successor derivation (the family survives a ring
    rotation: every key of the ring verifies). ``auditor`` receives ``authn_token_reuse`` (with
    ``kind=refresh``, the family id and the user; never a token or hash) when a rotated token is
    presented again and its family is revoked. ``marker_ttl`` is how long a revoked family's
    marker lives: at least the longest access-token lifetime plus the verifier's leeway
    (default: a day plus :data:`~bastion.engine.tokens.revocation.DEFAULT_SLACK`).
    """

    __slots__ = ("_auditor", "_clock", "_marker_ttl", "_policy", "_secrets", "_store", "_sync")

    def __init__(
        self,
        store: Store,
        keyring: KeyRing,
        *,
        policy: RefreshPolicy | None = None,
        clock: Clock = system_clock,
        auditor: Auditor | None = None,
        marker_ttl: float = MAX_FAMILY_MARKER_TTL,
    ) -> None:
        if not _seconds(marker_ttl) or marker_ttl > 400 * DAY:
            raise ConfigurationError(
                f"marker_ttl must be seconds greater than 0 (the longest access lifetime plus "
                f"slack); got {marker_ttl!r}",
                setting="marker_ttl",
            )
        self._marker_ttl = float(marker_ttl)
        self._store = store
        self._sync = sync_side(store)
        self._secrets = FamilySecrets(keyring)
        self._policy = RefreshPolicy() if policy is None else policy
        self._clock = clock
        self._auditor = auditor

    @property
    def policy(self) -> RefreshPolicy:
        return self._policy

    # -- flows ---------------------------------------------------------------------------------

    def _issue_flow(
        self,
        user_id: str,
        client_id: str,
        scopes: Sequence[str],
        epoch: int,
        cnf_jkt: str | None,
        *,
        family_id: str | None = None,
    ) -> Flow[tuple[str, FamilyInfo]]:
        if not isinstance(user_id, str) or not user_id:
            raise ConfigurationError("user_id must be non-empty text", setting="user_id")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ConfigurationError("epoch must be an int >= 0", setting="epoch")
        if isinstance(scopes, str) or not all(isinstance(s, str) for s in scopes):
            raise ConfigurationError("scopes must be a sequence of str", setting="scopes")
        if not isinstance(client_id, str) or not (cnf_jkt is None or isinstance(cnf_jkt, str)):
            raise ConfigurationError(
                "client_id must be text and cnf_jkt text or None", setting="cnf_jkt"
            )
        if family_id is not None and not _family_id(family_id):
            raise ConfigurationError(
                "family_id must be None or 16-64 URL-safe characters (new_family_id())",
                setting="family_id",
            )
        now = self._clock.now()
        secret = new_secret()
        # A 128-bit id collides never in practice; stay bounded anyway. A given id (the
        # caller minted an access token naming it) gets one attempt.
        ids = [family_id] if family_id is not None else [new_family_id() for _ in range(4)]
        for fid in ids:
            record = FamilyRecord(
                user_id=user_id,
                client_id=client_id,
                scopes=tuple(scopes),
                created_at=now,
                expires_at=now + self._policy.lifetime,
                epoch=epoch,
                cnf_jkt=cnf_jkt,
                generation=0,
                current=self._secrets.hash(fid, secret),
                last_used=now,
            )
            created = yield CompareAndSet(
                family_key(fid),
                None,
                encode_record(record),
                self._policy.lifetime + TOMBSTONE_SLACK,
            )
            if created:
                token = format_token(self._policy.prefix, fid, secret)
                return token, _info(fid, record)
        raise StoreBusy("could not create a refresh family under a fresh id")

    def _rotate_flow(  # noqa: PLR0912 (one decision table)
        self, token: ParsedToken, cnf_jkt: str | None, floor: int | None
    ) -> Flow[_Result]:
        key = family_key(token.family_id)
        policy = self._policy
        raw = yield Get(key)
        epoch_raw: bytes | None = None
        epoch_read = False
        for attempt in range(CAS_ATTEMPTS):
            record = _decode(raw)
            now = self._clock.now()
            if epoch_read:
                user_epoch, epoch_known = _epoch(epoch_raw)
            else:  # decided before the epoch is read: checked after the write below
                user_epoch, epoch_known = (record.epoch if record else 0), True
            if floor is not None and user_epoch is not None:
                user_epoch = max(user_epoch, floor)
            outcome = decide(
                record,
                token,
                now=now,
                secrets_=self._secrets,
                grace=policy.grace,
                idle=policy.idle,
                user_epoch=user_epoch,
                epoch_known=epoch_known,
                cnf_jkt=cnf_jkt,
            )
            if isinstance(outcome, Refuse):
                if outcome.reason is TokenReason.REVOKED and record and record.revoked is None:
                    # The epoch ended it: leave a tombstone so no later state revives it.
                    yield from self._tombstone(key, raw, record, "epoch")
                elif (
                    outcome.reason is TokenReason.REVOKED
                    and record is not None
                    and record.revoked in _MARKED
                ):
                    # Written again: heals a marker lost to an outage after the tombstone.
                    yield from self._mark(token.family_id, record)
                return TokenRejected(outcome.reason)
            found: FamilyRecord = outcome.record  # decide() refuses a missing record
            if isinstance(outcome, Replay):
                if not epoch_read:
                    epoch_raw, epoch_read = (yield Get(epoch_key(found.user_id))), True
                    continue  # decide again with the epoch known
                return Rotation(
                    format_token(policy.prefix, token.family_id, outcome.secret),
                    _info(token.family_id, outcome.record),
                    replayed=True,
                )
            new = outcome.record  # Rotate or Reuse
            ttl = new.expires_at - now + TOMBSTONE_SLACK
            won, current, epoch_raw = yield CompareAndSetRead(
                key, raw, encode_record(new), ttl, epoch_key(found.user_id)
            )
            epoch_read = True
            if not won:
                raw = current
                yield backoff(attempt + 1)
                continue
            if isinstance(outcome, Reuse):
                self._audit_reuse(token.family_id, new)  # the family is revoked: say so
                yield from self._mark(token.family_id, new)  # StoreUnavailable propagates
                return TokenRejected(TokenReason.REUSED)
            user_epoch, epoch_known = _epoch(epoch_raw)
            if floor is not None and user_epoch is not None:
                user_epoch = max(user_epoch, floor)
            if user_epoch is None or new.epoch < user_epoch or (new.epoch and not epoch_known):
                yield from self._tombstone(key, encode_record(new), new, "epoch")
                return TokenRejected(TokenReason.REVOKED)
            if isinstance(outcome, Rotate):
                return Rotation(
                    format_token(policy.prefix, token.family_id, outcome.secret),
                    _info(token.family_id, new),
                    replayed=False,
                )
        raise StoreBusy(
            f"a refresh family changed during each of {CAS_ATTEMPTS} compare-and-set "
            "attempts; try again"
        )

    def _tombstone(self, key: str, raw: bytes | None, record: FamilyRecord, why: str) -> Flow[None]:
        """Mark ``record`` revoked (best effort: one compare-and-set; a lost race means another
        writer moved it, and every later use decides again)."""
        ttl = record.expires_at - self._clock.now() + TOMBSTONE_SLACK
        if ttl > 0:
            yield CompareAndSet(key, raw, encode_record(replace(record, revoked=why)), ttl)

    def _mark(self, family_id: str, record: FamilyRecord) -> Flow[None]:
        """Write the revoked family's marker: the access tokens it minted are refused."""
        yield Set(family_marker_key(record.user_id, family_id), FAMILY_MARKER, self._marker_ttl)

    def _inspect_flow(self, token: ParsedToken) -> Flow[FamilyInfo]:
        record = _decode((yield Get(family_key(token.family_id))))
        user_epoch: int | None = 0
        known = True
        if record is not None and is_known(record, token, self._secrets):
            user_epoch, known = _epoch((yield Get(epoch_key(record.user_id))))
        outcome = decide(
            record,
            token,
            now=self._clock.now(),
            secrets_=self._secrets,
            grace=self._policy.grace,
            idle=self._policy.idle,
            user_epoch=user_epoch,
            epoch_known=known,
            cnf_jkt=None if record is None else record.cnf_jkt,
        )
        if isinstance(outcome, Refuse):
            raise TokenRejected(outcome.reason)
        if not isinstance(outcome, Rotate) or record is None:
            raise TokenRejected(TokenReason.UNKNOWN)  # a rotated token: not the current one
        return _info(token.family_id, record)

    def _revoke_flow(self, family_id: str, token: ParsedToken | None) -> Flow[bool]:
        key = family_key(family_id)
        raw = yield Get(key)
        for attempt in range(CAS_ATTEMPTS):
            try:
                record = _decode(raw)
            except TokenRejected:
                record = None
            if record is None:
                return False
            if token is not None and not is_known(record, token, self._secrets):
                return False  # a token of this family id, but not one it issued
            if record.revoked is not None:
                if record.revoked in _MARKED:
                    yield from self._mark(family_id, record)  # heals a lost marker
                return False
            ttl = record.expires_at - self._clock.now() + TOMBSTONE_SLACK
            if ttl <= 0:
                return False
            new = encode_record(replace(record, revoked="revoked"))
            won, current, _ = yield CompareAndSetRead(key, raw, new, ttl, key)
            if won:
                yield from self._mark(family_id, record)
                return True
            raw = current
            yield backoff(attempt + 1)
        raise StoreBusy("a refresh family changed during every revocation attempt; try again")

    def _target(self, token_or_family_id: str) -> tuple[str, ParsedToken | None]:
        if isinstance(token_or_family_id, str) and token_or_family_id.startswith(
            self._policy.prefix
        ):
            parsed = parse_token(token_or_family_id, self._policy.prefix)
            return parsed.family_id, parsed
        if not isinstance(token_or_family_id, str) or not 1 <= len(token_or_family_id) <= 64:
            raise TokenRejected(TokenReason.MALFORMED)
        return token_or_family_id, None

    def _audit_reuse(self, family_id: str, record: FamilyRecord) -> None:
        if self._auditor is None:
            return
        self._auditor.emit(
            EventName.AUTHN_TOKEN_REUSE,
            outcome=Outcome.BLOCKED,
            user=record.user_id,
            details={
                "kind": "refresh",
                "family_id": family_id,
                "client_id": record.client_id,
                "generation": record.generation,
            },
        )

    # -- running ---------------------------------------------------------------------------------

    async def _run(self, flow: Flow[_T]) -> _T:
        store = self._store
        if isinstance(store, SupportsTransaction):
            return await store.transaction(lambda tx: drive_sync(flow, tx))
        return await drive_async(flow, store)

    def _run_sync(self, flow: Flow[_T]) -> _T:
        store = self._store
        if isinstance(store, SupportsTransaction):
            return store.transaction_sync(lambda tx: drive_sync(flow, tx))
        return drive_sync(flow, self._sync_store())

    def _sync_store(self) -> SyncStore:
        return require_sync(self._sync, self._store)

    # -- the public methods ------------------------------------------------------------------------

    async def issue(
        self,
        user_id: str,
        *,
        client_id: str = "",
        scopes: Sequence[str] = (),
        epoch: int,
        cnf_jkt: str | None = None,
        family_id: str | None = None,
    ) -> tuple[str, FamilyInfo]:
        """Start a family for a login made under the user's ``epoch``; return its first token.
        ``family_id`` (from :func:`~bastion.core.tokens.refresh.new_family_id`) is for a caller
        that named the family in an access token first; a collision raises ``StoreBusy``."""
        return await drive_async(
            self._issue_flow(user_id, client_id, scopes, epoch, cnf_jkt, family_id=family_id),
            self._store,
        )

    def issue_sync(
        self,
        user_id: str,
        *,
        client_id: str = "",
        scopes: Sequence[str] = (),
        epoch: int,
        cnf_jkt: str | None = None,
        family_id: str | None = None,
    ) -> tuple[str, FamilyInfo]:
        flow = self._issue_flow(user_id, client_id, scopes, epoch, cnf_jkt, family_id=family_id)
        return drive_sync(flow, self._sync_store())

    async def rotate(
        self, token: str | bytes, *, current_epoch: int | None = None, cnf_jkt: str | None = None
    ) -> Rotation:
        """Use ``token``: the successor, or ``TokenRejected`` (``MALFORMED``, ``TOO_LARGE``,
        ``UNKNOWN``, ``EXPIRED``, ``REUSED``, ``REVOKED``, ``DPOP_MISMATCH``). The user's epoch
        is read in the same flow; ``current_epoch`` (optional) is a floor the caller knows."""
        parsed = parse_token(token, self._policy.prefix)
        result = await self._run(self._rotate_flow(parsed, cnf_jkt, current_epoch))
        if isinstance(result, TokenRejected):
            raise result
        return result

    def rotate_sync(
        self, token: str | bytes, *, current_epoch: int | None = None, cnf_jkt: str | None = None
    ) -> Rotation:
        parsed = parse_token(token, self._policy.prefix)
        result = self._run_sync(self._rotate_flow(parsed, cnf_jkt, current_epoch))
        if isinstance(result, TokenRejected):
            raise result
        return result

    async def inspect(self, token: str | bytes) -> FamilyInfo:
        """The family of ``token`` if it is its live current token (no rotation)."""
        parsed = parse_token(token, self._policy.prefix)
        return await drive_async(self._inspect_flow(parsed), self._store)

    def inspect_sync(self, token: str | bytes) -> FamilyInfo:
        parsed = parse_token(token, self._policy.prefix)
        return drive_sync(self._inspect_flow(parsed), self._sync_store())

    async def revoke(self, token_or_family_id: str) -> bool:
        """Revoke a family by one of its tokens or its id; ``False`` if it was not live. A
        token must be one the family issued (its current or a remembered rotated one: a
        revocation endpoint takes the client's token, RFC 7009), so knowing a family id from a
        log is not enough to end it through a token; a bare family id (an administrative call,
        never a client's input) ends the family outright."""
        return await self._run(self._revoke_flow(*self._target(token_or_family_id)))

    def revoke_sync(self, token_or_family_id: str) -> bool:
        return self._run_sync(self._revoke_flow(*self._target(token_or_family_id)))

    def __repr__(self) -> str:
        return f"RefreshTokens(store={self._store!r}, prefix={self._policy.prefix!r})"
