"""The demo's user accounts: one JSON record per user in the bastion store.

A record lives under ``demo:user:<name>`` (the name already normalised by
:func:`~bastion.core.throttle.normalize_username`) and is only ever changed by
``compare_and_set`` against the bytes that were read, so two concurrent changes to one account
never silently overwrite each other: the loser reads again and re-applies its change.

The record keeps the Argon2id hash, never the password, and the TOTP secret once the user has
confirmed a code. Danger: a real app should encrypt the TOTP secret at rest; the demo keeps it
in the clear to stay small.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Final

from bastion.errors import StoreBusy

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.stores import Store

__all__ = ["USERNAME_RULE", "User", "UserStore", "valid_username"]

USERNAME_RULE: Final = "3 to 32 characters: letters, digits, '.', '_' or '-'"
_USERNAME = re.compile(r"[a-z0-9._-]{3,32}", re.ASCII)
_CAS_ATTEMPTS: Final = 16
_PREFIX: Final = "demo:user:"
_INDEX: Final = "demo:users"
"""One record listing every account name (the admin's roles page lists users; a store has no
key scan)."""


def valid_username(name: str) -> bool:
    """Whether a normalised user name is acceptable for a new account."""
    return _USERNAME.fullmatch(name) is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    """One account. ``role`` is ``"user"`` or ``"admin"``."""

    username: str
    password_hash: str
    role: str = "user"
    totp_secret: str | None = None
    created_at: float = 0.0

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def has_totp(self) -> bool:
        return self.totp_secret is not None

    def __repr__(self) -> str:  # the hash and the TOTP secret stay out of logs
        return f"User(username={self.username!r}, role={self.role!r}, totp={self.has_totp})"

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode("utf-8")

    @classmethod
    def decode(cls, raw: bytes) -> User | None:
        """The record, or ``None`` when it is damaged (never raises)."""
        try:
            data: Any = json.loads(raw)
            return cls(
                username=str(data["username"]),
                password_hash=str(data["password_hash"]),
                role=str(data.get("role", "user")),
                totp_secret=data.get("totp_secret"),
                created_at=float(data.get("created_at", 0.0)),
            )
        except (ValueError, TypeError, KeyError):
            return None


def _names(raw: bytes) -> list[str]:
    try:
        data: Any = json.loads(raw)
    except ValueError:
        return []
    return sorted(name for name in data if isinstance(name, str)) if isinstance(data, list) else []


class UserStore:
    """Accounts in ``store``: create-if-absent, read, and compare-and-set updates."""

    __slots__ = ("_store",)

    def __init__(self, store: Store) -> None:
        self._store = store

    async def get(self, username: str) -> User | None:
        raw = await self._store.get(_PREFIX + username)
        return None if raw is None else User.decode(raw)

    async def create(self, user: User) -> bool:
        """Store a new account; ``False`` when the name is taken (atomically)."""
        created = await self._store.compare_and_set(_PREFIX + user.username, None, user.encode())
        if created:
            await self._index(user.username)
        return created

    async def put(self, user: User) -> None:
        """Create or replace an account (used to seed the demo accounts at start)."""
        await self._store.set(_PREFIX + user.username, user.encode())
        await self._index(user.username)

    async def names(self) -> list[str]:
        """Every account name, sorted."""
        raw = await self._store.get(_INDEX)
        return [] if raw is None else _names(raw)

    async def delete(self, username: str) -> bool:
        """Remove an account and its name from the index; ``False`` when it did not exist."""
        deleted = await self._store.delete(_PREFIX + username)
        await self._index(username, present=False)
        return deleted

    async def _index(self, username: str, *, present: bool = True) -> None:
        for _ in range(_CAS_ATTEMPTS):
            raw = await self._store.get(_INDEX)
            names = [] if raw is None else _names(raw)
            if (username in names) is present:
                return
            kept = [*names, username] if present else [n for n in names if n != username]
            encoded = json.dumps(sorted(kept)).encode("utf-8")
            if await self._store.compare_and_set(_INDEX, raw, encoded):
                return
        raise StoreBusy("the account index kept changing; gave up (503)")

    async def update(self, username: str, change: Callable[[User], User]) -> User | None:
        """Apply ``change`` to the current record and store it by compare-and-set; ``None``
        when the account does not exist."""
        key = _PREFIX + username
        for _ in range(_CAS_ATTEMPTS):
            raw = await self._store.get(key)
            current = None if raw is None else User.decode(raw)
            if raw is None or current is None:
                return None
            updated = change(current)
            if await self._store.compare_and_set(key, raw, updated.encode()):
                return updated
        raise StoreBusy(f"account record {username!r} kept changing; gave up (503)")

    async def set_password_hash(self, username: str, password_hash: str) -> User | None:
        return await self.update(username, lambda u: replace(u, password_hash=password_hash))

    async def set_totp_secret(self, username: str, secret: str | None) -> User | None:
        return await self.update(username, lambda u: replace(u, totp_secret=secret))
