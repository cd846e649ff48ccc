"""Passwords: Argon2id hashing, the NIST SP 800-63B-4 policy with the shipped blocklist, and
the optional breached-password check.

The decisions live in :mod:`bastion.core.passwords`; this package adds what needs threads, files
or awaiting: the hasher's async variants, the blocklist file, the breached-password hook. Second
factors are in :mod:`bastion.engine.totp` (needs the ``totp`` extra).

A typical sign-up and login::

    hasher = PasswordHasher()
    policy = default_policy(site_words=("example",))
    result = await check_new_password(policy, password, user_inputs=(username, email))
    if not result.ok:
        return show(result.messages)
    stored = await hasher.ahash(password)
    ...
    outcome = await hasher.averify_and_update(user.password_hash if user else None, password)
    if outcome.new_hash:
        save(user, outcome.new_hash)
"""

from __future__ import annotations

import importlib.resources
from typing import TYPE_CHECKING, Any

from bastion.core.passwords import (
    Blocklist,
    CompositionRules,
    PasswordPolicy,
    PasswordReason,
    PasswordReasonCode,
    PolicyResult,
    generate_password,
    normalize_password,
)
from bastion.passwords.breach import BreachChecker, OfflineRangeSource, RangeSource
from bastion.passwords.hasher import (
    OWASP_PROFILE,
    TEST_ONLY_PROFILE,
    Argon2Profile,
    PasswordHasher,
    VerifyResult,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "OWASP_PROFILE",
    "TEST_ONLY_PROFILE",
    "Argon2Profile",
    "Blocklist",
    "BreachChecker",
    "CompositionRules",
    "OfflineRangeSource",
    "PasswordHasher",
    "PasswordPolicy",
    "PasswordReason",
    "PasswordReasonCode",
    "PolicyResult",
    "RangeSource",
    "VerifyResult",
    "check_new_password",
    "default_blocklist",
    "default_policy",
    "generate_password",
    "normalize_password",
]


def default_blocklist() -> Blocklist:
    """The shipped blocklist (386 703 common and breached passwords; see ``data/NOTICE``).

    Reads and decodes the 2 MB file on every call (about 15 ms): call it once at start-up and
    keep the result, which is immutable and safe to share between threads.
    """
    data = (importlib.resources.files("bastion.passwords") / "data" / "blocklist.bin").read_bytes()
    return Blocklist.from_bytes(data)


def default_policy(**settings: Any) -> PasswordPolicy:
    """A :class:`PasswordPolicy` with the shipped blocklist; ``settings`` override the rest."""
    settings.setdefault("blocklist", default_blocklist())
    return PasswordPolicy(**settings)


async def check_new_password(
    policy: PasswordPolicy,
    password: str,
    *,
    user_inputs: Iterable[str | None] = (),
    has_second_factor: bool = False,
    breach: BreachChecker | None = None,
) -> PolicyResult:
    """:meth:`PasswordPolicy.check`, then the breached-password check when ``breach`` is set
    and the password passed everything else (so a refused password never leaves the process,
    even as a hash prefix)."""
    result = policy.check(password, user_inputs=user_inputs, has_second_factor=has_second_factor)
    if not result.ok or breach is None:
        return result
    if await breach.is_breached(password):
        return PolicyResult(
            (
                PasswordReason(
                    PasswordReasonCode.BREACHED,
                    "This password has appeared in a data breach, so attackers will try it. "
                    "Choose another.",
                ),
            )
        )
    return result
