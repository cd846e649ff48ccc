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
    │   └── PasswordRejected      a password is refused before hashing (too long, not text)
    ├── RateLimitExceeded         a rate limit refused the request (carries Retry-After)
    └── StoreError                the store refused or failed an operation
        └── StoreUnavailable      the store cannot be reached (connection refused, timeout)
            ├── StoreFull         a bounded store refuses a write rather than evict security state
            └── StoreBusy         a compare-and-set kept losing races after its backoff ran out

This module imports nothing from bastion (it is the bottom layer).
"""

from __future__ import annotations

__all__ = [
    "BadData",
    "BadSignature",
    "BadToken",
    "BastionError",
    "ConfigurationError",
    "CookieError",
    "CookieTooLarge",
    "PasswordRejected",
    "RateLimitExceeded",
    "SessionDataError",
    "SessionStateError",
    "SignatureExpired",
    "StoreBusy",
    "StoreError",
    "StoreFull",
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
    """The store refused or failed an operation (bad key, bad TTL, unexpected reply)."""


class StoreUnavailable(StoreError):
    """The store cannot be reached: connection refused, reset, or timed out.

    Raised within a bounded time (the store's timeout), never after an unbounded hang. The
    engine turns it into the configured failure behaviour (fail closed with 503, or fail open
    with an audit event).
    """


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


class StoreFull(StoreUnavailable):
    """A bounded store refuses a write because it is full of entries it must not evict.

    The in-memory store never evicts security state (accounts, throttle counters, TOTP steps,
    API keys) to make room; for the request, a full store is as unavailable as an unreachable
    one (the adapters answer 503).
    """


class StoreBusy(StoreUnavailable):
    """A compare-and-set loop kept losing races to concurrent writers of the same record, after
    backing off between attempts. Nothing was written by the call that raises it; for the
    request, the store is momentarily unavailable (the adapters answer 503 with
    ``Retry-After``), so the client retries instead of believing a change was kept.
    """
