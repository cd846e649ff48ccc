"""``/account/profile``: a phone number kept encrypted at rest and a bio kept sanitized.

The profile lives in a small SQLite table of its own (beside a SQLite store's file:
``bastion-demo.db`` -> ``bastion-demo.profiles.db``; in memory for the other stores), so that
what the database holds can be looked at with ``sqlite3``: the ``phone`` column is a
ciphertext from ``runtime.crypto.encrypt_field`` bound to ``(profiles, <username>, phone)``,
so a value copied into another user's row does not decrypt there. The bio is reduced by
:func:`bastion.sanitize.sanitize_html` before it is stored, so the page can show it as HTML.

The table is written from the request path with plain ``sqlite3`` calls: one small row per
save, on a local file, which is what a demo needs; an app would use its own database layer
(the ``EncryptedString`` SQLAlchemy type does the same binding).
"""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Final

from starlette.responses import RedirectResponse, Response

from bastion.core.audit import EventName, Outcome
from bastion.crypto import DecryptionFailed, MalformedCiphertext, UnknownKey
from bastion.demo.support import read_form
from bastion.sanitize import sanitize_html
from bastion.stores.url import parse_store_url

if TYPE_CHECKING:
    from starlette.requests import Request

    from bastion.demo.app import DemoApp

__all__ = ["BIO_LIMIT", "PHONE_PATTERN", "TABLE", "ProfileRoutes", "ProfileTable", "profiles_path"]

TABLE: Final = "profiles"
"""The table name, also the ``table=`` bound into every phone ciphertext."""
PHONE_PATTERN: Final = re.compile(r"\+?[0-9][0-9 ().-]{2,30}", re.ASCII)
"""What the form accepts as a phone number (empty clears it)."""
BIO_LIMIT: Final = 2000
"""Characters of bio accepted before sanitizing."""
_SCHEMA: Final = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    "username TEXT PRIMARY KEY, phone TEXT, bio TEXT NOT NULL, updated_at REAL NOT NULL)"
)


def profiles_path(store_url: str) -> str | None:
    """Where the profile table is kept for ``store_url``: a file beside a SQLite store's file,
    ``None`` (in memory) for the other stores."""
    parsed = parse_store_url(store_url, {})
    if parsed.scheme != "sqlite" or parsed.path is None:
        return None
    path = Path(parsed.path)
    return str(path.with_name(path.stem + ".profiles.db"))


class ProfileTable:
    """The ``profiles`` table in the SQLite file ``path`` (``None``: in memory)."""

    __slots__ = ("_db", "_lock", "path")

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        """Open the file (creating the table); a second call does nothing."""
        self._connection()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _connection(self) -> sqlite3.Connection:
        db = self._db
        if db is None:
            db = sqlite3.connect(self.path or ":memory:", check_same_thread=False)
            db.execute(_SCHEMA)
            db.commit()
            self._db = db
        return db

    def get(self, username: str) -> tuple[str | None, str] | None:
        """``(phone ciphertext, sanitized bio)`` of ``username``, or ``None``."""
        with self._lock:
            row = (
                self._connection()
                .execute(f"SELECT phone, bio FROM {TABLE} WHERE username = ?", (username,))  # noqa: S608 (a constant name)
                .fetchone()
            )
        return None if row is None else (row[0], row[1])

    def put(self, username: str, phone: str | None, bio: str, now: float) -> None:
        with self._lock:
            db = self._connection()
            db.execute(
                f"INSERT INTO {TABLE} (username, phone, bio, updated_at) VALUES (?, ?, ?, ?) "  # noqa: S608 (a constant name)
                "ON CONFLICT (username) DO UPDATE SET phone = excluded.phone, "
                "bio = excluded.bio, updated_at = excluded.updated_at",
                (username, phone, bio, now),
            )
            db.commit()

    def delete(self, username: str) -> None:
        """Remove ``username``'s row (the account is being deleted); none is fine."""
        with self._lock:
            db = self._connection()
            db.execute(f"DELETE FROM {TABLE} WHERE username = ?", (username,))  # noqa: S608 (a constant name)
            db.commit()

    def __repr__(self) -> str:
        return f"ProfileTable({self.path or ':memory:'})"


class ProfileRoutes:
    """``GET`` and ``POST /account/profile`` of ``demo`` (CSRF is checked by the demo's stack
    before the handler runs, like every form of the demo)."""

    __slots__ = ("demo", "table")

    def __init__(self, demo: DemoApp, table: ProfileTable) -> None:
        self.demo = demo
        self.table = table

    def phone_of(self, username: str, token: str | None) -> tuple[str, str | None]:
        """``(phone text, note)``: the decrypted number, or ``""`` and why it cannot be shown
        (a value written under an earlier run's data key, or moved from another row)."""
        if token is None:
            return "", None
        try:
            phone = self.demo.runtime.crypto.decrypt_field(
                token, table=TABLE, row=username, column="phone"
            )
        except (DecryptionFailed, MalformedCiphertext, UnknownKey):
            return "", "The stored phone number cannot be decrypted with this run's data key."
        return phone or "", None

    async def profile(self, request: Request) -> Response:
        demo = self.demo
        user = await demo.current_user(request)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        name = user.username
        if request.method != "POST":
            stored = self.table.get(name)
            token, bio = (None, "") if stored is None else stored
            phone, note = self.phone_of(name, token)
            return demo.page(
                request, "profile.html", user, phone=phone, bio=bio, note=note, saved=False
            )
        form = await read_form(request)
        phone = str(form.get("phone", "")).strip()
        raw_bio = str(form.get("bio", ""))
        errors: list[str] = []
        if phone and PHONE_PATTERN.fullmatch(phone) is None:
            errors.append("Phone: digits, spaces and + ( ) - . only, 3 to 32 characters.")
        if len(raw_bio) > BIO_LIMIT:
            errors.append(f"Bio: at most {BIO_LIMIT} characters.")
        if errors:
            stored = self.table.get(name)
            return demo.page(
                request,
                "profile.html",
                user,
                400,
                errors=errors,
                phone=phone[:32],
                bio="" if stored is None else stored[1],
                note=None,
                saved=False,
            )
        bio = sanitize_html(raw_bio)
        token = demo.runtime.crypto.encrypt_field(
            phone or None, table=TABLE, row=name, column="phone"
        )
        self.table.put(name, token, bio, demo.clock.now())
        demo.audit_event(
            request,
            EventName.USER_UPDATED,
            Outcome.SUCCESS,
            name,
            fields="phone,bio",
            bio_changed=bio != raw_bio,
        )
        return demo.page(request, "profile.html", user, phone=phone, bio=bio, note=None, saved=True)
