"""The one exception tree of bastion.

Every error bastion raises on purpose is a :class:`BastionError`. Messages name the setting or
value at fault and say what was expected, so that a start-up failure can be fixed from the
message alone. No message ever contains a secret: values that could be secret are described
(by length or kind), never echoed.

::

    BastionError
    ├── ConfigurationError        a setting is missing, malformed or unsafe (raised at start-up)
    ├── CookieError               a cookie cannot be written as asked
    │   └── CookieTooLarge        a Set-Cookie line would exceed the 4096-byte budget
    ├── SessionDataError          a session value is not JSON, or the session is over its cap
    ├── SessionStateError         a session call that cannot take effect where it was made
    ├── BadData                   untrusted input failed a check (typed, never a 500)
    │   ├── BadSignature          a signed value is malformed, or its signature does not verify
    │   │   └── SignatureExpired  a timestamped value verified but is older than max_age
    │   ├── BadToken              a token (cookie value, header token) is malformed or unknown
    │   ├── PasswordRejected      a password is refused before hashing (too long, not text)
    │   └── AuthzInputError       a subject or resource handed to authorization is malformed
    ├── Forbidden                 authorization denied an action (carries the decision)
    │   └── SelfGrantRefused      a user tried to change their own roles or grants
    ├── RateLimitExceeded         a rate limit refused the request (carries Retry-After)
    └── StoreError                the store refused an operation (bad key, TTL or value: a bug)
        └── StoreUnavailable      the store cannot serve now: 503 with Retry-After, or the policy
            ├── StoreTimeout          no whole answer within the store's timeout (a deadline)
            ├── StoreBusy             contention: locked past the timeout, CAS retries ran out
            ├── StoreReadOnly         the store refuses writes (read-only file, Redis replica)
            ├── StoreFull             out of space (disk full, page limit, Redis maxmemory, a memory
            │                         store full of security state it will not evict)
            ├── StoreIOError          the disk failed, or the file cannot be opened
            ├── StoreConnectionError  connection refused, reset or closed; login refused
            └── StoreCorrupt          a corrupt file, a malformed or oversized reply

This module imports nothing from bastion (it is the bottom layer).
"""

from __future__ import annotations

__all__ = [
    "AuditUnavailable",
    "AuthzInputError",
    "BadData",
    "BadSignature",
    "BadToken",
    "BastionError",
    "ConfigurationError",
    "CookieError",
    "CookieTooLarge",
    "Forbidden",
    "PasswordRejected",
    "RateLimitExceeded",
    "SelfGrantRefused",
    "SessionDataError",
    "SessionStateError",
    "SignatureExpired",
    "StoreBusy",
    "StoreConnectionError",
    "StoreCorrupt",
    "StoreError",
    "StoreFull",
    "StoreIOError",
    "StoreReadOnly",
    "StoreTimeout",
    "StoreUnavailable",
]


class BastionError(Exception):
    """Root of every exception bastion raises on purpose."""


class ConfigurationError(BastionError, ValueError):
    """A setting is missing, malformed or unsafe.

    Raised at start-up (when a configuration object is built), never on the request path.
    ``setting`` names the offending setting so tools can point at it.
    """

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class CookieError(BastionError, ValueError):
    """A cookie cannot be serialized as asked (unsafe name, value or attribute)."""


class CookieTooLarge(CookieError):
    """The serialized cookie would exceed the byte budget browsers are required to accept."""

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class BadData(BastionError, ValueError):
    """Untrusted input failed a check. Callers map it to a 4xx, never a 500."""


class BadSignature(BadData):
    """A signed value is malformed, was signed for another purpose, or was tampered with."""


class SignatureExpired(BadSignature):
    """The signature is valid but the value is older than the allowed age.

    ``signed_at`` is the Unix time the value was signed at, for audit events.
    """

    def __init__(self, message: str, *, signed_at: float) -> None:
        super().__init__(message)
        self.signed_at = signed_at


class BadToken(BadData):
    """A token (session ID, CSRF token, API key) is malformed or unknown."""


class PasswordRejected(BadData):
    """A password is refused before any hashing work: not text, or longer than the cap.

    ``reasons`` holds stable reason codes (``"too_long"``, ``"invalid_characters"``) for the
    caller to turn into a user-facing message. The password itself is never in the message.
    """

    def __init__(self, message: str, *, reasons: tuple[str, ...]) -> None:
        super().__init__(message)
        self.reasons = reasons


class SessionDataError(BastionError, TypeError):
    """A session value cannot be stored: not JSON-representable, or the session is too large.

    A programming error in the app, raised at ``session[key] = value`` (or at save for the size
    cap); the message names the key.
    """


class SessionStateError(BastionError, RuntimeError):
    """A session lifecycle call cannot take effect where it was made.

    For example ``logout()`` inside a WebSocket handler: there is no response to carry the
    expired cookie, so the call is refused loudly instead of being silently ignored; the
    message names the call that works there.
    """


class StoreError(BastionError):
    """The store refused an operation it was given: a bad key, TTL or value, a closed store.

    A plain ``StoreError`` is a programming error in the caller. A fault of the store itself
    (its file, its server, the network) is always a :class:`StoreUnavailable`.
    """


class StoreUnavailable(StoreError):
    """The store cannot serve the operation now.

    Raised within a bounded time (the store's timeout), never after an unbounded hang. The
    engine turns it into the configured failure behaviour (fail closed with 503 and
    ``Retry-After``, or fail open with an audit event). Every backend (memory, SQLite, Redis;
    key-value and rate-limit stores) raises one of the subclasses below for the same kind of
    fault, so callers may tell them apart without knowing the backend.
    """


class AuditUnavailable(StoreUnavailable):
    """The audit trail cannot take the event now: its queue is full past the wait, or its
    store is failing, in the fail-closed mode (``AuditPolicy(fail_closed=True)``). It is a
    :class:`StoreUnavailable` raised where the event is emitted, so the action that would have
    gone unaudited does not complete. bastion's layers answer it as ``503 audit_unavailable``
    with ``Retry-After`` (the security-headers layer when it is on, the Flask, Starlette and
    FastAPI integrations inside the app), never as a 500."""


class StoreTimeout(StoreUnavailable):
    """No whole answer within the store's timeout, which bounds the whole operation."""


class StoreBusy(StoreUnavailable):
    """Contention outlasted the store's bound: another writer held the lock for longer than
    the timeout (SQLite busy/locked, a Redis script still running), or a bounded
    compare-and-set retry ran out after backing off between attempts. Nothing was written by
    the call that raises it, so the client retries (503 with ``Retry-After``) instead of
    believing a change was kept."""


class StoreReadOnly(StoreUnavailable):
    """The store refuses writes: a read-only file or file system, a Redis replica."""


class StoreFull(StoreUnavailable):
    """The store is out of space: a full disk, SQLite's page limit, Redis ``maxmemory``, or
    the in-memory store full of entries it must not evict (it never evicts security state:
    accounts, throttle counters, TOTP steps, API keys, to make room for sessions)."""


class StoreIOError(StoreUnavailable):
    """The storage failed: a disk I/O error, a file that cannot be opened, Redis unable to
    persist (``MISCONF``)."""


class StoreConnectionError(StoreUnavailable):
    """The connection was refused, reset or closed, or the server refused authentication."""


class StoreCorrupt(StoreUnavailable):
    """The data cannot be read: a corrupt database file, a reply that breaks the protocol or
    exceeds the configured size cap."""


class AuthzInputError(BadData):
    """A subject, resource or context handed to authorization is malformed (a wrong type, an
    id that is not text). The check denies; it never guesses what was meant."""


class Forbidden(BastionError):
    """Authorization denied an action. Adapters answer 403 (401 when nobody is signed in).

    ``decision`` is the :class:`~bastion.core.authz.decision.Decision` that denied, whose
    ``explain()`` says which rule, grant or condition decided. Typed as ``object`` here
    because this module imports nothing from bastion.
    """

    def __init__(self, message: str, *, decision: object) -> None:
        super().__init__(message)
        self.decision = decision


class SelfGrantRefused(Forbidden):
    """A user tried to change their own roles, grants or denies through bastion's API."""


class RateLimitExceeded(BastionError):
    """A rate limit refused the request. Adapters answer 429 with ``headers``.

    ``retry_after`` is in seconds; ``headers`` are the ``Retry-After`` and rate-limit headers
    (lower-case names) computed with the decision. ``rule`` names the refusing rule.
    """

    def __init__(
        self,
        message: str,
        *,
        rule: str,
        retry_after: float,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.rule = rule
        self.retry_after = retry_after
        self.headers = headers
