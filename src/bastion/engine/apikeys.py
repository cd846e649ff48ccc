"""Issue, verify, list, revoke and rotate API keys over any :class:`~bastion.stores.base.Store`.

Store layout (``prefix`` defaults to ``apikeys:``)::

    apikeys:key:<hex HMAC of the key>   the APIKeyRecord as JSON   (found by the presented key)
    apikeys:id:<key id>                 the hex HMAC               (found by revoke and rotate)
    apikeys:owner:{<owner>}             JSON index {key id: hex HMAC} of the owner's keys

The owner index key is built with :func:`~bastion.stores.keyspace.hash_tag`, so on Redis
Cluster it shares a slot with the owner's other per-user records (sessions index, throttle).
It is updated by compare-and-set, so concurrent creations for one owner all land; entries
whose record has gone from the store (after :data:`RETENTION`) are pruned when the index is
listed.

Verification costs one HMAC and one ``get`` (one more per older server key while the key ring
is being rotated: the HMAC is a name under every key of the ring, current first, see
:meth:`~bastion.core.keys.KeyRing.lookup`). A key made before a rotation keeps its record,
found under its old name, and works while its server key stays in the ring's ``previous``;
:meth:`APIKeyManager.rotate` issues a successor under the current key, so drop an old server
key once the keys made under it have expired or been rotated.

A key that fails the format or checksum test is refused before any store call, so random
garbage and scanners' guesses never load the store. Record updates (revoke, rotate, last-used
time) are compare-and-set loops, so concurrent updates never lose each other.

The store logic is written once, as generator flows (:mod:`bastion.engine.flows`). Every async
method has a blocking ``*_sync`` twin that runs the same flow on the store's synchronous side
(``store.sync``), for WSGI apps (Flask) without an event loop.

Every create and revoke, and every failed use, is an audit event when an
:class:`~bastion.core.audit.Auditor` is given: ``authn_token_created``, ``authn_token_revoked``,
``authn_login_fail`` (details ``method=api_key``, ``reason=<status>``) and ``authz_fail`` for a
missing scope. The key itself is never logged; the record's ``key_id`` is.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeVar

from bastion.core.apikeys import (
    APIKeyRecord,
    APIKeyStatus,
    RateLimitSetting,
    generate_api_key,
    is_well_formed,
    validate_scopes,
)
from bastion.core.audit import EventName, Outcome
from bastion.core.clock import system_clock
from bastion.core.keys import KeyRing
from bastion.engine.flows import (
    CompareAndSet,
    Done,
    Get,
    Set,
    Write,
    drive_async,
    drive_sync,
    update,
)
from bastion.errors import BadToken, ConfigurationError
from bastion.stores.base import require_sync, sync_side
from bastion.stores.keyspace import hash_tag

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from bastion.core.audit import Auditor
    from bastion.core.clock import Clock
    from bastion.core.keys import SecretKey
    from bastion.engine.flows import Flow
    from bastion.stores.base import Store, SyncStore

__all__ = ["APIKeyManager", "APIKeyResult", "CreatedAPIKey"]

LAST_USED_RESOLUTION: Final = 60.0
"""The last-used time is written at most once per this many seconds per key."""

RETENTION: Final = 30 * 24 * 3600.0
"""How long an expired or revoked record is kept (so its use is reported as expired or revoked,
not unknown) before the store drops it."""

_INDEX_VERSION: Final = 1
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class CreatedAPIKey:
    """A new key. ``token`` is shown to its owner once and never again: only its HMAC is kept."""

    token: str
    record: APIKeyRecord

    def __repr__(self) -> str:
        return f"CreatedAPIKey(token='bst_**********', record={self.record!r})"


@dataclass(frozen=True, slots=True)
class APIKeyResult:
    """The verdict on a presented key; ``record`` is set for known keys."""

    status: APIKeyStatus
    record: APIKeyRecord | None = None

    @property
    def ok(self) -> bool:
        return self.status is APIKeyStatus.VALID

    @property
    def http_status(self) -> int:
        """200, 401 (missing, malformed, unknown, expired, revoked) or 403 (scope)."""
        return self.status.http_status

    @property
    def rate_limit(self) -> RateLimitSetting | None:
        """The key's own rate limit, for the rate limiter to apply."""
        return None if self.record is None else self.record.rate_limit


def _decode_index(raw: bytes | None) -> dict[str, str]:
    """The owner index as {key id: digest}; empty when absent or damaged (never raises)."""
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(data, dict) or data.get("v") != _INDEX_VERSION:
        return {}
    keys = data.get("keys")
    if not isinstance(keys, dict):
        return {}
    return {k: v for k, v in keys.items() if isinstance(k, str) and isinstance(v, str)}


def _encode_index(entries: dict[str, str]) -> bytes:
    data = {"v": _INDEX_VERSION, "keys": entries}
    return json.dumps(data, separators=(",", ":")).encode("utf-8")  # keeps insertion order


class APIKeyManager:
    """API keys in ``store``, hashed under subkeys of ``keyring`` (purpose ``apikey:lookup``).

    ``auditor`` receives the audit events (none when omitted). ``counts`` tallies verdicts in
    this process, including refusals that never reach the store (approximate under threads).
    The ``*_sync`` methods need a store with a synchronous side (memory, SQLite and Redis have
    one); they raise :class:`~bastion.errors.ConfigurationError` otherwise.
    """

    __slots__ = ("_auditor", "_clock", "_counts", "_names", "_prefix", "_store", "_sync")

    def __init__(
        self,
        store: Store,
        keyring: KeyRing | SecretKey,
        *,
        clock: Clock = system_clock,
        auditor: Auditor | None = None,
        prefix: str = "apikeys:",
    ) -> None:
        if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
            raise ConfigurationError(
                f"prefix must be non-empty text without braces, got {prefix!r}", setting="prefix"
            )
        self._names = KeyRing.coerce(keyring).lookup("apikey:lookup", size=32)
        self._store = store
        self._sync: SyncStore | None = sync_side(store)
        self._clock = clock
        self._auditor = auditor
        self._prefix = prefix
        self._counts: Counter[APIKeyStatus] = Counter()

    @property
    def counts(self) -> Mapping[APIKeyStatus, int]:
        """Verdicts given by this manager so far, by status."""
        return dict(self._counts)

    def _run_sync(self, flow: Flow[_T]) -> _T:
        return drive_sync(flow, require_sync(self._sync, self._store))

    # -- keys ----------------------------------------------------------------------------------

    def _digests(self, token: str) -> tuple[str, ...]:
        """The key's HMAC under every server key, current first (see the module docstring)."""
        return self._names.names(token.encode("ascii"))

    def _record_key(self, digest: str) -> str:
        return f"{self._prefix}key:{digest}"

    def _id_key(self, key_id: str) -> str:
        return f"{self._prefix}id:{key_id}"

    def _owner_key(self, owner: str) -> str:
        return hash_tag(f"{self._prefix}owner", owner)

    def _ttl(self, record: APIKeyRecord, now: float) -> float | None:
        if record.expires_at is None:
            return None
        return max(record.expires_at - now, 0.0) + RETENTION

    # -- flows ---------------------------------------------------------------------------------

    def _new_record(
        self,
        owner: str,
        *,
        name: str,
        scopes: Iterable[str],
        expires_in: float | None,
        rate_limit: RateLimitSetting | None,
    ) -> tuple[str, APIKeyRecord]:
        """Validate the settings and build a key and its record (no I/O)."""
        if not isinstance(owner, str) or not owner:
            raise ConfigurationError(
                "owner must be a non-empty user or service id", setting="owner"
            )
        if expires_in is not None and (
            isinstance(expires_in, bool)
            or not isinstance(expires_in, int | float)
            or not expires_in > 0
        ):
            raise ConfigurationError(
                f"expires_in must be seconds > 0 or None (no expiry), got {expires_in!r}",
                setting="expires_in",
            )
        if rate_limit is not None and not isinstance(rate_limit, RateLimitSetting):
            raise ConfigurationError(
                "rate_limit must be a RateLimitSetting(limit=..., period=...) or None",
                setting="rate_limit",
            )
        now = self._clock.now()
        token = generate_api_key()
        record = APIKeyRecord(
            key_id=secrets.token_hex(8),
            owner=owner,
            name=name,
            scopes=validate_scopes(scopes),
            digest=self._names.name(token.encode("ascii")),
            created_at=now,
            expires_at=None if expires_in is None else now + float(expires_in),
            rate_limit=rate_limit,
        )
        return token, record

    def _create_flow(
        self, token: str, record: APIKeyRecord, client_ip: str | None
    ) -> Flow[CreatedAPIKey]:
        ttl = self._ttl(record, record.created_at)
        yield Set(self._record_key(record.digest), record.to_bytes(), ttl)
        yield Set(self._id_key(record.key_id), record.digest.encode("ascii"), ttl)
        yield from self._index_flow(
            record.owner, lambda entries: entries.update({record.key_id: record.digest})
        )
        self._audit(EventName.AUTHN_TOKEN_CREATED, Outcome.SUCCESS, record, client_ip, None)
        return CreatedAPIKey(token, record)

    def _index_flow(self, owner: str, change: Callable[[dict[str, str]], None]) -> Flow[None]:
        """Apply ``change`` to the owner index (one bounded compare-and-set update)."""

        def step(_key: str, raw: bytes | None) -> Write[None]:
            entries = _decode_index(raw)
            change(entries)
            return Write(_encode_index(entries), None)

        yield from update(self._owner_key(owner), step, what="the API key index of one owner")

    def _verify_flow(
        self, token: str | None, required_scope: str | None, client_ip: str | None
    ) -> Flow[APIKeyResult]:
        if token is None:
            return self._finish(APIKeyStatus.MISSING, None, client_ip)
        if not is_well_formed(token):
            return self._finish(APIKeyStatus.MALFORMED, None, client_ip)
        found = None
        for digest in self._digests(token):
            raw = yield Get(self._record_key(digest))
            if raw is None:
                continue
            try:
                record = APIKeyRecord.from_bytes(raw)
            except BadToken:
                break
            if hmac.compare_digest(record.digest, digest):
                found = raw, record
            break
        if found is None:
            return self._finish(APIKeyStatus.UNKNOWN, None, client_ip)
        raw, record = found
        now = self._clock.now()
        status = record.status_at(now)
        scoped = required_scope is None or record.allows(required_scope)
        if status is APIKeyStatus.VALID and not scoped:
            status = APIKeyStatus.INSUFFICIENT_SCOPE
        if status is APIKeyStatus.VALID:
            last = record.last_used_at
            if last is None or now - last >= LAST_USED_RESOLUTION:
                updated = record.with_changes(last_used_at=now)
                # One attempt: losing the race means another request just wrote a fresh time.
                yield CompareAndSet(
                    self._record_key(record.digest),
                    raw,
                    updated.to_bytes(),
                    self._ttl(updated, now),
                )
                record = updated
        return self._finish(status, record, client_ip)

    def _get_flow(self, key_id: str) -> Flow[tuple[str, bytes, APIKeyRecord] | None]:
        digest = yield Get(self._id_key(key_id))
        if digest is None or not digest.isascii():  # absent, or damaged in the store
            return None
        record_key = self._record_key(digest.decode("ascii"))
        raw = yield Get(record_key)
        if raw is None:
            return None
        return record_key, raw, APIKeyRecord.from_bytes(raw)

    def _record_flow(self, key_id: str) -> Flow[APIKeyRecord | None]:
        found = yield from self._get_flow(key_id)
        return None if found is None else found[2]

    def _update_flow(
        self, key_id: str, change: dict[str, object], *, only_if_live: bool = False
    ) -> Flow[APIKeyRecord | None]:
        digest = yield Get(self._id_key(key_id))
        if digest is None or not digest.isascii():  # absent, or damaged in the store
            return None
        record_key = self._record_key(digest.decode("ascii"))

        def step(
            _key: str, raw: bytes | None
        ) -> Write[APIKeyRecord | None] | Done[APIKeyRecord | None]:
            if raw is None:
                return Done(None)
            record = APIKeyRecord.from_bytes(raw)
            if only_if_live and record.revoked_at is not None:
                return Done(None)
            updated = record.with_changes(**change)
            return Write(updated.to_bytes(), updated, self._ttl(updated, self._clock.now()))

        return (yield from update(record_key, step, what=f"API key {key_id}"))

    def _revoke_flow(self, key_id: str, client_ip: str | None) -> Flow[bool]:
        change: dict[str, object] = {"revoked_at": self._clock.now()}
        updated = yield from self._update_flow(key_id, change, only_if_live=True)
        if updated is None:
            return False
        self._audit(EventName.AUTHN_TOKEN_REVOKED, Outcome.SUCCESS, updated, client_ip, None)
        return True

    def _rotate_flow(
        self, key_id: str, overlap: float, client_ip: str | None
    ) -> Flow[CreatedAPIKey]:
        if isinstance(overlap, bool) or not isinstance(overlap, int | float) or overlap < 0:
            raise ConfigurationError(
                f"overlap must be seconds >= 0, got {overlap!r}", setting="overlap"
            )
        old = yield from self._record_flow(key_id)
        if old is None or old.status_at(self._clock.now()) is not APIKeyStatus.VALID:
            raise BadToken(f"API key {key_id} is unknown, expired or revoked: it cannot rotate")
        lifetime = None if old.expires_at is None else old.expires_at - old.created_at
        token, record = self._new_record(
            old.owner,
            name=old.name,
            scopes=old.scopes,
            expires_in=lifetime,
            rate_limit=old.rate_limit,
        )
        created = yield from self._create_flow(token, record, client_ip)
        end = self._clock.now() + float(overlap)
        if old.expires_at is not None:
            end = min(end, old.expires_at)
        change: dict[str, object] = {"expires_at": end, "replaced_by": created.record.key_id}
        yield from self._update_flow(key_id, change, only_if_live=True)
        return created

    def _list_flow(self, owner: str) -> Flow[list[APIKeyRecord]]:
        if not isinstance(owner, str) or not owner:
            raise ConfigurationError(
                "owner must be a non-empty user or service id", setting="owner"
            )
        entries = _decode_index((yield Get(self._owner_key(owner))))
        records: list[APIKeyRecord] = []
        gone: list[str] = []
        for key_id, digest in entries.items():
            raw = yield Get(self._record_key(digest))
            try:
                record = None if raw is None else APIKeyRecord.from_bytes(raw)
            except BadToken:
                record = None
            if record is None or record.owner != owner or record.key_id != key_id:
                gone.append(key_id)
                continue
            records.append(record)
        if gone:

            def prune(index: dict[str, str]) -> None:
                for key_id in gone:
                    index.pop(key_id, None)

            yield from self._index_flow(owner, prune)
        records.sort(key=lambda record: record.created_at)  # stable: ties keep index order
        return records

    # -- async API -----------------------------------------------------------------------------

    async def create(
        self,
        owner: str,
        *,
        name: str = "",
        scopes: Iterable[str] = (),
        expires_in: float | None = None,
        rate_limit: RateLimitSetting | None = None,
        client_ip: str | None = None,
    ) -> CreatedAPIKey:
        """Issue a key for ``owner`` (a user or service id). ``expires_in`` is seconds."""
        token, record = self._new_record(
            owner, name=name, scopes=scopes, expires_in=expires_in, rate_limit=rate_limit
        )
        return await drive_async(self._create_flow(token, record, client_ip), self._store)

    async def verify(
        self,
        token: str | None,
        *,
        required_scope: str | None = None,
        client_ip: str | None = None,
    ) -> APIKeyResult:
        """The verdict on ``token`` (from :func:`~bastion.core.apikeys.api_key_from_headers`).

        Never raises for any presented value. A malformed key is refused without a store call.
        """
        return await drive_async(self._verify_flow(token, required_scope, client_ip), self._store)

    async def get(self, key_id: str) -> APIKeyRecord | None:
        """The record of ``key_id``, or ``None``."""
        return await drive_async(self._record_flow(key_id), self._store)

    async def list_keys(self, owner: str) -> list[APIKeyRecord]:
        """The records of ``owner``'s keys still in the store (live, expired or revoked within
        :data:`RETENTION`), oldest first: one read of the index and one per key."""
        return await drive_async(self._list_flow(owner), self._store)

    async def revoke(self, key_id: str, *, client_ip: str | None = None) -> bool:
        """Revoke ``key_id`` at once. ``False`` when it is unknown or already revoked."""
        return await drive_async(self._revoke_flow(key_id, client_ip), self._store)

    async def rotate(
        self, key_id: str, *, overlap: float = 24 * 3600.0, client_ip: str | None = None
    ) -> CreatedAPIKey:
        """Issue a successor of ``key_id`` with the same owner, name, scopes and rate limit
        (and the same lifetime, counted from now); the old key keeps working for ``overlap``
        seconds (never past its own expiry), so clients can switch without an outage."""
        return await drive_async(self._rotate_flow(key_id, overlap, client_ip), self._store)

    # -- sync API (WSGI) -----------------------------------------------------------------------

    def create_sync(
        self,
        owner: str,
        *,
        name: str = "",
        scopes: Iterable[str] = (),
        expires_in: float | None = None,
        rate_limit: RateLimitSetting | None = None,
        client_ip: str | None = None,
    ) -> CreatedAPIKey:
        """:meth:`create` on the store's synchronous side."""
        token, record = self._new_record(
            owner, name=name, scopes=scopes, expires_in=expires_in, rate_limit=rate_limit
        )
        return self._run_sync(self._create_flow(token, record, client_ip))

    def verify_sync(
        self,
        token: str | None,
        *,
        required_scope: str | None = None,
        client_ip: str | None = None,
    ) -> APIKeyResult:
        """:meth:`verify` on the store's synchronous side."""
        return self._run_sync(self._verify_flow(token, required_scope, client_ip))

    def get_sync(self, key_id: str) -> APIKeyRecord | None:
        """:meth:`get` on the store's synchronous side."""
        return self._run_sync(self._record_flow(key_id))

    def list_keys_sync(self, owner: str) -> list[APIKeyRecord]:
        """:meth:`list_keys` on the store's synchronous side."""
        return self._run_sync(self._list_flow(owner))

    def revoke_sync(self, key_id: str, *, client_ip: str | None = None) -> bool:
        """:meth:`revoke` on the store's synchronous side."""
        return self._run_sync(self._revoke_flow(key_id, client_ip))

    def rotate_sync(
        self, key_id: str, *, overlap: float = 24 * 3600.0, client_ip: str | None = None
    ) -> CreatedAPIKey:
        """:meth:`rotate` on the store's synchronous side."""
        return self._run_sync(self._rotate_flow(key_id, overlap, client_ip))

    # -- verdicts and audit --------------------------------------------------------------------

    def _finish(
        self, status: APIKeyStatus, record: APIKeyRecord | None, client_ip: str | None
    ) -> APIKeyResult:
        self._counts[status] += 1
        if status is APIKeyStatus.INSUFFICIENT_SCOPE:
            self._audit(EventName.AUTHZ_FAIL, Outcome.BLOCKED, record, client_ip, status)
        elif status not in (APIKeyStatus.VALID, APIKeyStatus.MISSING):
            self._audit(EventName.AUTHN_LOGIN_FAIL, Outcome.FAILURE, record, client_ip, status)
        return APIKeyResult(status, record)

    def _audit(
        self,
        name: EventName,
        outcome: Outcome,
        record: APIKeyRecord | None,
        client_ip: str | None,
        status: APIKeyStatus | None,
    ) -> None:
        if self._auditor is None:
            return
        details: dict[str, str | None] = {"method": "api_key"}
        if record is not None:
            details["key_id"] = record.key_id
        if status is not None:
            details["reason"] = status.value
        self._auditor.emit(
            name,
            outcome=outcome,
            user=None if record is None else record.owner,
            client_ip=client_ip,
            details=details,
        )

    def __repr__(self) -> str:
        return f"APIKeyManager(store={self._store!r}, prefix={self._prefix!r})"
