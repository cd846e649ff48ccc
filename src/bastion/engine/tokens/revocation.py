"""Revoked access tokens: a deny-list keyed on the verified ``(iss, jti)``, and the user epoch.

An access token is refused as :attr:`~bastion.core.tokens.reasons.TokenReason.REVOKED` when

* its ``(iss, jti)`` is on the deny-list (:meth:`Revocations.revoke_jti`, e.g. RFC 7009
  revocation or a logout of one client), or
* it was made under user epoch ``N`` and the user's epoch is now greater than ``N``: the epoch
  is the one record sessions' "revoke all" raises (``epoch_key`` of
  :mod:`bastion.engine.sessions.registry`, read with
  :func:`~bastion.core.sessions.index.decode_epoch`), so "log out everywhere" and a password
  change end every older access token too. An epoch record that
  cannot be read refuses the token (as it refuses the user's sessions): a damaged record must
  not reopen what it closed.

Store layout::

    token-deny:{<subject>}:<32 hex>    {"v":1,"exp":<token exp>}   TTL: until exp + slack
    session-epoch:{<subject>}          the user's epoch (written by sessions, read here)
    token-fam-off:{<subject>}:<family> {"v":1}   TTL: the longest access lifetime + slack

The last is a revoked refresh family's marker (written by
:mod:`bastion.engine.tokens.refresh` when a family is revoked for reuse or by a revocation):
an access token minted from a family carries its id (claim ``fid``), and the bearer check
reads the marker in the same ``MGET``, so a revoked family's access tokens stop at once
instead of living out their lifetime. All three keys carry the subject's hash tag: one slot
on Redis Cluster, one command.

The 32 hex characters are a SHA-256 digest of the issuer and the ``jti`` (length-prefixed, so no
two pairs share one; any text is safe in a key, and a long ``jti`` makes no long key). The
entry is keyed on the VERIFIED claims, never on the token's bytes: a revoked token presented
again in another encoding (other base64 of the same JSON, members in another order, re-signed)
has the same claims, hence the same entry, and is refused too. Each entry lives until the
token's ``exp`` plus ``slack`` (by default the largest leeway a codec accepts plus a margin), so
the deny-list never outgrows the set of tokens that could still be accepted, and re-revoking
is idempotent (the later expiry wins; an entry is never shortened).

Why the subject is the hash tag. :meth:`Revocations.check` reads the deny entry and the epoch
in ONE store command (:class:`~bastion.engine.flows.GetMany`: one ``MGET`` on Redis), so the
epoch check costs no more than the deny-list lookup. Redis Cluster serves a multi-key command
(and a script) only when every key is in one hash slot, so the deny entry is tagged with the
subject, the same tag as the epoch key (:func:`deny_key`; a test checks the slots). A script
would not lift that rule, and two commands would double the round trips. The price:
revoking or looking up a ``jti`` needs the token's subject as well, which every verified
access token carries (``sub`` is required by default).

One more key may ride in the same command: :meth:`Revocations.check_and_read` also returns
the value of a key the caller names (the user's authorization record, whose key is tagged with
the same subject), so a bearer request learns its permission version and roles at no extra
round trip.

Round trips per :meth:`Revocations.check`: one ``get_many`` (memory: two or three dictionary
reads under one lock; SQLite: one ``SELECT``; Redis: one ``MGET``) of the deny entry, the epoch
and, for a token naming a refresh family, the family marker; one ``get`` when the token carries
neither an epoch nor a family. On a store without ``get_many`` the flow driver reads the keys
one after the other. :meth:`~Revocations.revoke_jti` costs a read and a compare-and-set.

Audit: a revocation that adds an entry emits ``authn_token_revoked`` (user, ``token_id`` =
the ``jti``); :meth:`~Revocations.check` emits nothing (the caller that refuses the request
reports it once). No token, signature or claim other than the ``jti`` is ever logged.
"""

from __future__ import annotations

import hashlib
import json
import math
import string
from typing import TYPE_CHECKING, Final, TypeVar

from bastion.core.audit import EventName, Outcome
from bastion.core.clock import system_clock
from bastion.core.sessions.index import decode_epoch
from bastion.core.tokens.reasons import TokenReason, TokenRejected
from bastion.engine.flows import Done, Get, GetMany, Write, drive, drive_sync, update
from bastion.engine.sessions.registry import check_min_epoch_ttl, epoch_key
from bastion.errors import BadData, ConfigurationError
from bastion.stores.base import MAX_KEY_BYTES, inline_side, require_sync, sync_side
from bastion.stores.keyspace import hash_tag

if TYPE_CHECKING:
    from collections.abc import Sequence

    from bastion.core.audit import Auditor
    from bastion.core.clock import Clock
    from bastion.engine.flows import Flow
    from bastion.stores.base import Store, SyncStore

__all__ = [
    "DEFAULT_SLACK",
    "DENY_NAMESPACE",
    "FAMILY_MARKER",
    "FAMILY_NAMESPACE",
    "MAX_FAMILY_MARKER_TTL",
    "Revocations",
    "check_family_id",
    "deny_key",
    "family_marker_key",
    "min_epoch_ttl",
]

DENY_NAMESPACE: Final = "token-deny"
FAMILY_NAMESPACE: Final = "token-fam-off"
FAMILY_MARKER: Final = b'{"v":1}'
"""The value of a revoked family's marker: its presence is the verdict."""

DEFAULT_SLACK: Final = 360.0
"""Seconds a deny-list entry outlives its token's ``exp``: the largest leeway a JWT codec
accepts (300 s) and a minute for clock skew between hosts."""

_MAX_SLACK: Final = 86_400.0
MAX_FAMILY_MARKER_TTL: Final = 86_400.0 + DEFAULT_SLACK
"""A family marker's TTL when the access lifetime is not known: a day (the longest access
lifetime a ``TokenPolicy`` allows) plus the slack."""
_MAX_FAMILY_ID: Final = 64
_ID_CHARS: Final = frozenset(string.ascii_letters + string.digits + "-_")
"""The characters of a family id (URL-safe base64): no brace, colon or byte outside ASCII."""
_EPOCH_CACHE: Final = 4096
"""Parsed epoch records kept per :class:`Revocations` (a few hundred KiB at most)."""
_VERSION: Final = 1
_T = TypeVar("_T")


def _text(value: object, claim: str) -> str:
    if type(value) is not str or not value:
        raise TokenRejected(TokenReason.BAD_CLAIM, f"the {claim} claim must be non-empty text")
    return value


def deny_key(issuer: str, jti: str, subject: str) -> str:
    """The store key of the deny-list entry of ``(issuer, jti)``, tagged with ``subject``.

    It shares its Redis Cluster slot with the subject's epoch key, so both are read in one
    command. Raises :class:`TokenRejected` (``BAD_CLAIM``) for an empty or non-text value, text
    that is not valid UTF-8, or a subject too long for a store key."""
    _text(issuer, "iss")
    _text(jti, "jti")
    _text(subject, "sub")
    try:
        joined = f"{len(issuer)}:{issuer}{jti}".encode()
        key = f"{hash_tag(DENY_NAMESPACE, subject)}:{hashlib.sha256(joined).hexdigest()[:32]}"
        size = len(key.encode())
    except UnicodeEncodeError:  # a lone surrogate, which JSON allows and keys do not
        raise TokenRejected(TokenReason.BAD_CLAIM, "a token claim is not valid text") from None
    if size > MAX_KEY_BYTES:
        raise TokenRejected(TokenReason.BAD_CLAIM, "the sub claim is too long")
    return key


def check_family_id(value: object) -> str:
    """``value`` if it is a family id (1 to 64 URL-safe characters), else
    :class:`TokenRejected` (``BAD_CLAIM``): the ``fid`` claim of an access token."""
    if (
        type(value) is not str
        or not 0 < len(value) <= _MAX_FAMILY_ID
        or not _ID_CHARS.issuperset(value)
    ):
        raise TokenRejected(TokenReason.BAD_CLAIM, "the fid claim is malformed")
    return value


def family_marker_key(subject: str, family_id: str) -> str:
    """The store key of the marker of ``subject``'s revoked refresh family ``family_id``,
    tagged with ``subject`` like :func:`deny_key` (one Redis Cluster slot, one ``MGET``).
    Raises :class:`TokenRejected` (``BAD_CLAIM``) for a family id that is not 1 to 64
    URL-safe characters (as :func:`~bastion.core.tokens.refresh.new_family_id` makes)."""
    _text(subject, "sub")
    check_family_id(family_id)
    try:
        key = f"{hash_tag(FAMILY_NAMESPACE, subject)}:{family_id}"
        size = len(key.encode())
    except UnicodeEncodeError:
        raise TokenRejected(TokenReason.BAD_CLAIM, "a token claim is not valid text") from None
    if size > MAX_KEY_BYTES:
        raise TokenRejected(TokenReason.BAD_CLAIM, "the sub claim is too long")
    return key


def min_epoch_ttl(*lifetimes: float, slack: float = DEFAULT_SLACK) -> float:
    """How long a user's epoch record must live after a bump so that no token made before the
    bump outlives it: the longest of ``lifetimes`` (the refresh-family lifetime, the access
    token lifetime, ...) plus ``slack``. Pass it to the session engine's ``min_epoch_ttl``."""
    checked = [check_min_epoch_ttl(lifetime) for lifetime in lifetimes]
    return check_min_epoch_ttl(max(checked, default=0.0) + check_min_epoch_ttl(slack))


def _entry_expiry(raw: bytes) -> float:
    """The token expiry an entry was written for; ``-inf`` for a damaged entry (rewritten)."""
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return -math.inf
    exp = payload.get("exp") if type(payload) is dict else None
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        return -math.inf
    return float(exp)


class Revocations:
    """The deny-list and epoch check over ``store`` (see the module docstring).

    ``slack`` (seconds, 0 to a day) is how long an entry outlives its token's ``exp``; it must
    be at least the verifier's leeway. ``auditor`` receives ``authn_token_revoked`` events.
    The ``*_sync`` methods run the same flows on ``store.sync`` (WSGI apps); on a store whose
    sync side never blocks (memory) the async methods run them inline too.
    """

    __slots__ = ("_auditor", "_clock", "_epochs", "_inline", "_slack", "_store", "_sync")

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock = system_clock,
        auditor: Auditor | None = None,
        slack: float = DEFAULT_SLACK,
    ) -> None:
        if (
            isinstance(slack, bool)
            or not isinstance(slack, int | float)
            or not 0 <= slack <= _MAX_SLACK
        ):
            raise ConfigurationError(
                f"slack must be seconds from 0 to {_MAX_SLACK:.0f} (at least the verifier's "
                f"leeway), got {slack!r}",
                setting="slack",
            )
        self._store = store
        self._sync: SyncStore | None = sync_side(store)
        self._inline = inline_side(store)
        self._clock = clock
        self._auditor = auditor
        self._slack = float(slack)
        # The last epoch records read, parsed: the same bytes always parse to the same number,
        # and parsing is the larger half of a check. Bounded; cleared when full.
        self._epochs: dict[bytes, int] = {}

    def __repr__(self) -> str:
        return f"Revocations(store={self._store!r})"

    # -- flows ---------------------------------------------------------------------------------

    def revoke_flow(
        self,
        issuer: str,
        jti: str,
        *,
        subject: str,
        expires_at: float,
        client_ip: str | None = None,
    ) -> Flow[bool]:
        """Put ``(issuer, jti)`` on the deny-list until ``expires_at`` plus the slack. Says
        whether this call added (or lengthened) the entry; ``False`` when it was there already
        or the token is past any leeway (nothing to deny)."""
        key = deny_key(issuer, jti, subject)
        if (
            isinstance(expires_at, bool)
            or not isinstance(expires_at, int | float)
            or not math.isfinite(expires_at)
        ):
            raise TokenRejected(TokenReason.BAD_CLAIM, "the exp claim must be a finite number")
        exp = float(expires_at)
        now = self._clock.now()
        remaining = exp + self._slack - now
        if remaining <= 0:
            return False
        value = json.dumps({"v": _VERSION, "exp": exp}, separators=(",", ":")).encode("ascii")

        def step(_key: str, raw: bytes | None) -> Write[bool] | Done[bool]:
            if raw is not None and _entry_expiry(raw) >= exp:
                return Done(result=False)
            return Write(value, result=True, ttl=remaining)

        added = yield from update(key, step, what="a token deny-list entry")
        if added and self._auditor is not None:
            self._auditor.emit(
                EventName.AUTHN_TOKEN_REVOKED,
                outcome=Outcome.SUCCESS,
                user=subject,
                client_ip=client_ip,
                details={"method": "jti", "token_id": jti},
            )
        return added

    def is_revoked_flow(self, issuer: str, jti: str, *, subject: str) -> Flow[bool]:
        """Whether ``(issuer, jti)`` is on the deny-list (one read; the epoch is not consulted)."""
        return (yield Get(deny_key(issuer, jti, subject))) is not None

    def check_flow(
        self,
        issuer: str,
        jti: str,
        subject: str,
        epoch: int | None,
        *,
        family_id: str | None = None,
    ) -> Flow[TokenReason | None]:
        """``REVOKED`` when the token is on the deny-list, its ``epoch`` is below the
        subject's, or its refresh family ``family_id`` (claim ``fid``) was revoked, else
        ``None``: one store command. ``epoch=None`` (a token that carries no epoch, such as a
        client-credentials token) skips the epoch; ``family_id=None`` (a token minted without
        a family) skips the family marker."""
        key = deny_key(issuer, jti, subject)
        if family_id is None:  # the paths of a token without a family, spelt out (hot)
            if epoch is None:
                return TokenReason.REVOKED if (yield Get(key)) is not None else None
            if type(epoch) is not int or epoch < 0:
                raise TokenRejected(TokenReason.BAD_CLAIM, "the token's epoch must be an int >= 0")
            denied, raw_epoch = yield GetMany((key, epoch_key(subject)))
            return self._verdict(denied, raw_epoch, epoch)
        if type(epoch) is int and epoch >= 0:  # an access token minted with a family (hot)
            marker = family_marker_key(subject, family_id)
            denied, raw_epoch, marked = yield GetMany((key, epoch_key(subject), marker))
            if marked is not None:
                return TokenReason.REVOKED  # its refresh family was revoked
            return self._verdict(denied, raw_epoch, epoch)
        keys = self._keys(key, subject, epoch, family_id)
        values = yield GetMany(keys)
        return self._decide(values, epoch, family_id)

    def check_and_read_flow(
        self,
        issuer: str,
        jti: str,
        subject: str,
        epoch: int | None,
        read: str,
        *,
        family_id: str | None = None,
    ) -> Flow[tuple[TokenReason | None, bytes | None]]:
        """:meth:`check_flow`, and the value of one more key ``read`` in the SAME store
        command (one ``MGET``): the request's other per-user record, such as its
        authorization assignment (:func:`bastion.engine.authz.assignment_key`), at no extra
        round trip. Returns the verdict and the value read (``None`` when absent). On Redis
        Cluster ``read`` must share the subject's hash slot (``hash_tag(..., subject)``)."""
        keys = self._keys(deny_key(issuer, jti, subject), subject, epoch, family_id)
        values = yield GetMany((*keys, read))
        return self._decide(values[:-1], epoch, family_id), values[-1]

    @staticmethod
    def _keys(deny: str, subject: str, epoch: int | None, family_id: str | None) -> tuple[str, ...]:
        """The keys one check reads: the deny-list entry, the epoch (when the token has one),
        the family marker (when it has a family), in that order."""
        keys = [deny]
        if epoch is not None:
            if type(epoch) is not int or epoch < 0:
                raise TokenRejected(TokenReason.BAD_CLAIM, "the token's epoch must be an int >= 0")
            keys.append(epoch_key(subject))
        if family_id is not None:
            keys.append(family_marker_key(subject, family_id))
        return tuple(keys)

    def _decide(
        self, values: Sequence[bytes | None], epoch: int | None, family_id: str | None
    ) -> TokenReason | None:
        if family_id is not None and values[-1] is not None:
            return TokenReason.REVOKED  # its refresh family was revoked
        if epoch is None:
            return TokenReason.REVOKED if values[0] is not None else None
        return self._verdict(values[0], values[1], epoch)

    def _verdict(
        self, denied: bytes | None, raw_epoch: bytes | None, epoch: int
    ) -> TokenReason | None:
        if denied is not None:
            return TokenReason.REVOKED
        if raw_epoch is None:
            return None  # no epoch record: epoch 0, which no token is below
        current = self._epochs.get(raw_epoch)
        if current is None:
            try:
                current = decode_epoch(raw_epoch).number
            except BadData:
                return TokenReason.REVOKED  # unreadable: refuse rather than reopen
            if len(self._epochs) >= _EPOCH_CACHE:
                self._epochs.clear()
            self._epochs[raw_epoch] = current
        return TokenReason.REVOKED if current > epoch else None

    def epoch_flow(self, subject: str, *, authenticated_at: float | None = None) -> Flow[int]:
        """The epoch a new token of ``subject`` is made under (its ``epoch`` claim, a refresh
        family's epoch): the subject's current one. Raises :class:`TokenRejected`
        (``REVOKED``) when the epoch record cannot be read, or when the subject's tokens were
        revoked after ``authenticated_at`` (a password change while the old password was being
        checked: the token must not be issued), as sessions do for a login."""
        _text(subject, "sub")
        raw = yield Get(epoch_key(subject))
        try:
            epoch = decode_epoch(raw)
        except BadData:
            raise TokenRejected(TokenReason.REVOKED, "the user's epoch is unreadable") from None
        if authenticated_at is not None and epoch.since > authenticated_at:
            raise TokenRejected(TokenReason.REVOKED, "revoked after the user authenticated")
        return epoch.number

    # -- async API -----------------------------------------------------------------------------

    async def _run(self, flow: Flow[_T]) -> _T:
        return await drive(flow, self._store, self._inline)

    def _run_sync(self, flow: Flow[_T]) -> _T:
        return drive_sync(flow, require_sync(self._sync, self._store))

    async def revoke_jti(
        self,
        issuer: str,
        jti: str,
        *,
        subject: str,
        expires_at: float,
        client_ip: str | None = None,
    ) -> bool:
        """Deny the access token ``(issuer, jti)`` of ``subject`` until it expires (its
        ``exp``); idempotent. See :meth:`revoke_flow`."""
        flow = self.revoke_flow(
            issuer, jti, subject=subject, expires_at=expires_at, client_ip=client_ip
        )
        return await self._run(flow)

    async def is_revoked(self, issuer: str, jti: str, *, subject: str) -> bool:
        """Whether ``(issuer, jti)`` of ``subject`` is on the deny-list."""
        return await self._run(self.is_revoked_flow(issuer, jti, subject=subject))

    async def check(
        self,
        issuer: str,
        jti: str,
        subject: str,
        epoch: int | None,
        *,
        family_id: str | None = None,
    ) -> TokenReason | None:
        """The revocation verdict on a verified access token (see :meth:`check_flow`)."""
        return await self._run(self.check_flow(issuer, jti, subject, epoch, family_id=family_id))

    async def check_and_read(
        self,
        issuer: str,
        jti: str,
        subject: str,
        epoch: int | None,
        read: str,
        *,
        family_id: str | None = None,
    ) -> tuple[TokenReason | None, bytes | None]:
        """The verdict and one more key's value, in one store command (see
        :meth:`check_and_read_flow`)."""
        flow = self.check_and_read_flow(issuer, jti, subject, epoch, read, family_id=family_id)
        return await self._run(flow)

    async def current_epoch(self, subject: str, *, authenticated_at: float | None = None) -> int:
        """The epoch to put in a new token of ``subject`` (see :meth:`epoch_flow`)."""
        return await self._run(self.epoch_flow(subject, authenticated_at=authenticated_at))

    # -- sync API (WSGI) -----------------------------------------------------------------------

    def revoke_jti_sync(
        self,
        issuer: str,
        jti: str,
        *,
        subject: str,
        expires_at: float,
        client_ip: str | None = None,
    ) -> bool:
        """:meth:`revoke_jti` on the store's synchronous side."""
        flow = self.revoke_flow(
            issuer, jti, subject=subject, expires_at=expires_at, client_ip=client_ip
        )
        return self._run_sync(flow)

    def is_revoked_sync(self, issuer: str, jti: str, *, subject: str) -> bool:
        """:meth:`is_revoked` on the store's synchronous side."""
        return self._run_sync(self.is_revoked_flow(issuer, jti, subject=subject))

    def check_sync(
        self,
        issuer: str,
        jti: str,
        subject: str,
        epoch: int | None,
        *,
        family_id: str | None = None,
    ) -> TokenReason | None:
        """:meth:`check` on the store's synchronous side."""
        return self._run_sync(self.check_flow(issuer, jti, subject, epoch, family_id=family_id))

    def check_and_read_sync(
        self,
        issuer: str,
        jti: str,
        subject: str,
        epoch: int | None,
        read: str,
        *,
        family_id: str | None = None,
    ) -> tuple[TokenReason | None, bytes | None]:
        """:meth:`check_and_read` on the store's synchronous side."""
        flow = self.check_and_read_flow(issuer, jti, subject, epoch, read, family_id=family_id)
        return self._run_sync(flow)

    def current_epoch_sync(self, subject: str, *, authenticated_at: float | None = None) -> int:
        """:meth:`current_epoch` on the store's synchronous side."""
        return self._run_sync(self.epoch_flow(subject, authenticated_at=authenticated_at))
