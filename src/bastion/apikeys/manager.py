"""Issue, verify, revoke and rotate API keys over any :class:`~bastion.stores.base.Store`.

Store layout (``prefix`` defaults to ``apikeys:``)::

    apikeys:key:<hex HMAC of the key>   the ApiKeyRecord as JSON   (found by the presented key)
    apikeys:id:<key id>                 the hex HMAC               (found by revoke and rotate)

Verification costs one HMAC and one ``get`` (one more per older server key while the key ring
is being rotated). A key that fails the format or checksum test is refused before any store
call, so random garbage and scanners' guesses never load the store. Record updates (revoke,
rotate, last-used time) are compare-and-set loops, so concurrent updates never lose each other.

Every create and revoke, and every failed use, is an audit event when an
:class:`~bastion.core.audit.Auditor` is given: ``authn_token_created``, ``authn_token_revoked``,
``authn_login_fail`` (details ``method=api_key``, ``reason=<status>``) and ``authz_fail`` for a
missing scope. The key itself is never logged; the record's ``key_id`` is.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from bastion.core.apikeys import (
    ApiKeyRecord,
    ApiKeyStatus,
    RateLimitSetting,
    generate_api_key,
    is_well_formed,
    validate_scopes,
)
from bastion.core.audit import EventName, Outcome
from bastion.core.clock import system_clock
from bastion.core.keys import KeyRing
from bastion.errors import BadToken, ConfigurationError, StoreError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from bastion.core.audit import Auditor
    from bastion.core.clock import Clock
    from bastion.core.keys import SecretKey
    from bastion.stores.base import Store

__all__ = ["ApiKeyManager", "ApiKeyResult", "CreatedApiKey"]

LAST_USED_RESOLUTION: Final = 60.0
"""The last-used time is written at most once per this many seconds per key."""

RETENTION: Final = 30 * 24 * 3600.0
"""How long an expired or revoked record is kept (so its use is reported as expired or revoked,
not unknown) before the store drops it."""

_CAS_ATTEMPTS: Final = 16


@dataclass(frozen=True, slots=True)
class CreatedApiKey:
    """A new key. ``token`` is shown to its owner once and never again: only its HMAC is kept."""

    token: str
    record: ApiKeyRecord

    def __repr__(self) -> str:
        return f"CreatedApiKey(token='bst_**********', record={self.record!r})"


@dataclass(frozen=True, slots=True)
class ApiKeyResult:
    """The verdict on a presented key; ``record`` is set for known keys."""

    status: ApiKeyStatus
    record: ApiKeyRecord | None = None

    @property
    def ok(self) -> bool:
        return self.status is ApiKeyStatus.VALID

    @property
    def http_status(self) -> int:
        """200, 401 (missing, malformed, unknown, expired, revoked) or 403 (scope)."""
        return self.status.http_status

    @property
    def rate_limit(self) -> RateLimitSetting | None:
        """The key's own rate limit, for the rate limiter to apply."""
        return None if self.record is None else self.record.rate_limit


class ApiKeyManager:
    """API keys in ``store``, hashed under subkeys of ``keyring`` (purpose ``apikey:lookup``).

    ``auditor`` receives the audit events (none when omitted). ``counts`` tallies verdicts in
    this process, including refusals that never reach the store (approximate under threads).
    """

    __slots__ = ("_auditor", "_clock", "_counts", "_keys", "_prefix", "_store")

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
        ring = KeyRing.coerce(keyring).derive("apikey:lookup")
        self._keys = tuple(key.reveal() for key in ring.keys)
        self._store = store
        self._clock = clock
        self._auditor = auditor
        self._prefix = prefix
        self._counts: Counter[ApiKeyStatus] = Counter()

    @property
    def counts(self) -> Mapping[ApiKeyStatus, int]:
        """Verdicts given by this manager so far, by status."""
        return dict(self._counts)

    def _digest(self, token: str, key: bytes) -> str:
        return hmac.digest(key, token.encode("ascii"), hashlib.sha256).hex()

    def _record_key(self, digest: str) -> str:
        return f"{self._prefix}key:{digest}"

    def _id_key(self, key_id: str) -> str:
        return f"{self._prefix}id:{key_id}"

    def _ttl(self, record: ApiKeyRecord, now: float) -> float | None:
        if record.expires_at is None:
            return None
        return max(record.expires_at - now, 0.0) + RETENTION

    async def create(
        self,
        owner: str,
        *,
        name: str = "",
        scopes: Iterable[str] = (),
        expires_in: float | None = None,
        rate_limit: RateLimitSetting | None = None,
        client_ip: str | None = None,
    ) -> CreatedApiKey:
        """Issue a key for ``owner`` (a user or service id). ``expires_in`` is seconds."""
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
        record = ApiKeyRecord(
            key_id=secrets.token_hex(8),
            owner=owner,
            name=name,
            scopes=validate_scopes(scopes),
            digest=self._digest(token, self._keys[0]),
            created_at=now,
            expires_at=None if expires_in is None else now + float(expires_in),
            rate_limit=rate_limit,
        )
        ttl = self._ttl(record, now)
        await self._store.set(self._record_key(record.digest), record.to_bytes(), ttl)
        await self._store.set(self._id_key(record.key_id), record.digest.encode("ascii"), ttl)
        self._audit(EventName.AUTHN_TOKEN_CREATED, Outcome.SUCCESS, record, client_ip, None)
        return CreatedApiKey(token, record)

    async def verify(
        self,
        token: str | None,
        *,
        required_scope: str | None = None,
        client_ip: str | None = None,
    ) -> ApiKeyResult:
        """The verdict on ``token`` (from :func:`~bastion.core.apikeys.api_key_from_headers`).

        Never raises for any presented value. A malformed key is refused without a store call.
        """
        if token is None:
            return self._finish(ApiKeyStatus.MISSING, None, client_ip)
        if not is_well_formed(token):
            return self._finish(ApiKeyStatus.MALFORMED, None, client_ip)
        found = await self._lookup(token)
        if found is None:
            return self._finish(ApiKeyStatus.UNKNOWN, None, client_ip)
        raw, record = found
        now = self._clock.now()
        status = record.status_at(now)
        scoped = required_scope is None or record.allows(required_scope)
        if status is ApiKeyStatus.VALID and not scoped:
            status = ApiKeyStatus.INSUFFICIENT_SCOPE
        if status is ApiKeyStatus.VALID:
            record = await self._touch(raw, record, now)
        return self._finish(status, record, client_ip)

    async def _lookup(self, token: str) -> tuple[bytes, ApiKeyRecord] | None:
        for key in self._keys:
            digest = self._digest(token, key)
            raw = await self._store.get(self._record_key(digest))
            if raw is None:
                continue
            try:
                record = ApiKeyRecord.from_bytes(raw)
            except BadToken:
                return None
            if hmac.compare_digest(record.digest, digest):
                return raw, record
        return None

    async def _touch(self, raw: bytes, record: ApiKeyRecord, now: float) -> ApiKeyRecord:
        last = record.last_used_at
        if last is not None and now - last < LAST_USED_RESOLUTION:
            return record
        updated = record.with_changes(last_used_at=now)
        # One attempt: losing the race means another request just wrote a fresh time.
        await self._store.compare_and_set(
            self._record_key(record.digest), raw, updated.to_bytes(), self._ttl(updated, now)
        )
        return updated

    def _finish(
        self, status: ApiKeyStatus, record: ApiKeyRecord | None, client_ip: str | None
    ) -> ApiKeyResult:
        self._counts[status] += 1
        if status is ApiKeyStatus.INSUFFICIENT_SCOPE:
            self._audit(EventName.AUTHZ_FAIL, Outcome.BLOCKED, record, client_ip, status)
        elif status not in (ApiKeyStatus.VALID, ApiKeyStatus.MISSING):
            self._audit(EventName.AUTHN_LOGIN_FAIL, Outcome.FAILURE, record, client_ip, status)
        return ApiKeyResult(status, record)

    def _audit(
        self,
        name: EventName,
        outcome: Outcome,
        record: ApiKeyRecord | None,
        client_ip: str | None,
        status: ApiKeyStatus | None,
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

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        """The record of ``key_id``, or ``None``."""
        found = await self._get_by_id(key_id)
        return None if found is None else found[2]

    async def _get_by_id(self, key_id: str) -> tuple[str, bytes, ApiKeyRecord] | None:
        digest = await self._store.get(self._id_key(key_id))
        if digest is None:
            return None
        record_key = self._record_key(digest.decode("ascii"))
        raw = await self._store.get(record_key)
        if raw is None:
            return None
        return record_key, raw, ApiKeyRecord.from_bytes(raw)

    async def _update(
        self, key_id: str, change: dict[str, object], *, only_if_live: bool = False
    ) -> ApiKeyRecord | None:
        for _ in range(_CAS_ATTEMPTS):
            found = await self._get_by_id(key_id)
            if found is None:
                return None
            record_key, raw, record = found
            if only_if_live and record.revoked_at is not None:
                return None
            updated = record.with_changes(**change)
            now = self._clock.now()
            if await self._store.compare_and_set(
                record_key, raw, updated.to_bytes(), self._ttl(updated, now)
            ):
                return updated
        raise StoreError(
            f"API key {key_id} changed {_CAS_ATTEMPTS} times during one update; try again"
        )

    async def revoke(self, key_id: str, *, client_ip: str | None = None) -> bool:
        """Revoke ``key_id`` at once. ``False`` when it is unknown or already revoked."""
        updated = await self._update(key_id, {"revoked_at": self._clock.now()}, only_if_live=True)
        if updated is None:
            return False
        self._audit(EventName.AUTHN_TOKEN_REVOKED, Outcome.SUCCESS, updated, client_ip, None)
        return True

    async def rotate(
        self, key_id: str, *, overlap: float = 24 * 3600.0, client_ip: str | None = None
    ) -> CreatedApiKey:
        """Issue a successor of ``key_id`` with the same owner, name, scopes and rate limit
        (and the same lifetime, counted from now); the old key keeps working for ``overlap``
        seconds (never past its own expiry), so clients can switch without an outage."""
        if isinstance(overlap, bool) or not isinstance(overlap, int | float) or overlap < 0:
            raise ConfigurationError(
                f"overlap must be seconds >= 0, got {overlap!r}", setting="overlap"
            )
        old = await self.get(key_id)
        if old is None or old.status_at(self._clock.now()) is not ApiKeyStatus.VALID:
            raise BadToken(f"API key {key_id} is unknown, expired or revoked: it cannot rotate")
        lifetime = None if old.expires_at is None else old.expires_at - old.created_at
        created = await self.create(
            old.owner,
            name=old.name,
            scopes=old.scopes,
            expires_in=lifetime,
            rate_limit=old.rate_limit,
            client_ip=client_ip,
        )
        end = self._clock.now() + float(overlap)
        if old.expires_at is not None:
            end = min(end, old.expires_at)
        await self._update(
            key_id, {"expires_at": end, "replaced_by": created.record.key_id}, only_if_live=True
        )
        return created

    def __repr__(self) -> str:
        return f"ApiKeyManager(store={self._store!r}, prefix={self._prefix!r})"
