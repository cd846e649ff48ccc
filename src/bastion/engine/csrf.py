"""The framework-free half of CSRF protection, shared by the ASGI and WSGI middlewares.

:class:`CSRFGuard` holds what a middleware is configured with (the checked config, the policy,
the double-submit signer and cookie, the auditor) and does what does not depend on how a
request arrives: judging a token, reporting a refusal. :class:`TokenState` is the CSRF side of
one request: the verified double-submit secret, and the masked tokens handed to templates.

The adapters (:mod:`bastion.asgi.csrf`, :mod:`bastion.wsgi.csrf`) read the request (headers
into :class:`~bastion.core.csrf.Facts`, the body for a form token) and answer it; everything
between is here, once.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from bastion.core.audit import Auditor, EventName, Outcome
from bastion.core.clock import Clock, system_clock
from bastion.core.csrf import (
    CSRFConfig,
    CSRFPolicy,
    DoubleSubmit,
    Reason,
    check_token,
    double_submit_setup,
    logger,
    mask_secret,
    secret_from_text,
)
from bastion.core.environment import is_production
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.core.cookies import Cookie
    from bastion.core.csrf import Facts
    from bastion.core.keys import KeyRing, SecretKey
    from bastion.engine.sessions import Session

__all__ = ["CSRFGuard", "TokenState"]


class CSRFGuard:
    """A CSRF middleware's configuration and its request-independent decisions.

    ``config`` defaults to :class:`~bastion.core.csrf.CSRFConfig` ``()`` and is checked against
    the environment (``production`` overrides ``ENV``/``BASTION_ENV``). ``keyring`` is required
    for ``TokenSource.DOUBLE_SUBMIT``; ``auditor`` defaults to JSON lines on ``bastion.audit``.
    """

    __slots__ = ("_auditor", "config", "cookie", "double_submit", "policy")

    def __init__(
        self,
        config: CSRFConfig | None = None,
        *,
        keyring: KeyRing | SecretKey | None = None,
        auditor: Auditor | None = None,
        clock: Clock = system_clock,
        production: bool | None = None,
    ) -> None:
        config = CSRFConfig() if config is None else config
        if not isinstance(config, CSRFConfig):
            raise ConfigurationError("config must be a CSRFConfig", setting="config")
        self.policy = CSRFPolicy(config)
        config.check_environment(production=is_production() if production is None else production)
        self.config = config
        parts = double_submit_setup(config, keyring)
        self.double_submit: DoubleSubmit | None = parts[0] if parts else None
        self.cookie: Cookie | None = parts[1] if parts else None
        self._auditor = auditor if auditor is not None else Auditor.default(keyring, clock)

    def begin(self, cookie_value: str | None, identity: str) -> TokenState:
        """The token state of a request that sent ``cookie_value`` as the double-submit cookie
        (``None``: none sent) for ``identity`` (``""``: not bound to a user)."""
        state = TokenState(self, identity)
        double = self.double_submit
        if double is not None:
            secret = double.verify(cookie_value, identity)
            if secret is not None:
                state.secret, state.cookie_value = secret, cookie_value
        return state

    def judge_token(
        self,
        token: str | bytes | None,
        facts: Facts,
        state: TokenState,
        session: Callable[[], Session],
    ) -> Reason | None:
        """Why ``token`` fails (``None``: it passes). ``session`` finds the request's session
        for ``TokenSource.SESSION``; it is called only then."""
        if token is None:
            return self.policy.missing_reason(facts)
        if self.double_submit is None:
            # The stored session's secret, or a session-less visitor's pre-session one; never
            # a secret issued now (that would be a store write for a token that cannot pass).
            known = session().verification_csrf_secret()
            if known is None:
                return Reason.NO_SESSION
            return check_token(token, secret_from_text(known))
        secret, cookie_value = state.secret, state.cookie_value
        if secret is None or cookie_value is None:
            return Reason.NO_SESSION
        raw = token.encode("utf-8", "replace") if isinstance(token, str) else token
        if b"." in raw:  # the cookie value itself, copied by JavaScript (classic double submit)
            expected = cookie_value.encode("utf-8", "replace")
            return None if hmac.compare_digest(raw.strip(), expected) else Reason.TOKEN_INCORRECT
        return check_token(token, secret)

    def audit(self, reason: Reason, facts: Facts) -> None:
        """Report a refusal (or, in log-only mode, a request that would have been refused)."""
        log_only = self.config.log_only
        self._auditor.emit(
            EventName.MALICIOUS_CSRF,
            outcome=Outcome.FAILURE if log_only else Outcome.BLOCKED,
            client_ip=facts.client,
            details={
                "reason": reason.value,
                "method": facts.method,
                "path": facts.path,
                "log_only": log_only,
            },
        )
        if log_only:
            logger.warning(
                "bastion CSRF (log only): would refuse %s %s: %s",
                facts.method,
                facts.path,
                reason.value,
            )


class TokenState:
    """The CSRF side of one request: its double-submit secret (verified from the cookie, or
    issued on first use) and masked tokens for pages and forms.

    Each :meth:`token` call returns new text (a fresh mask) for the same secret.
    """

    __slots__ = ("_guard", "cookie_value", "identity", "new_cookie", "secret")

    def __init__(self, guard: CSRFGuard, identity: str = "") -> None:
        self._guard = guard
        self.identity = identity
        self.secret: bytes | None = None
        self.cookie_value: str | None = None
        self.new_cookie = False

    def token(self, session: Callable[[], Session]) -> str:
        """A masked token: of the session's secret (``TokenSource.SESSION``; ``session`` finds
        the request's session), else of the double-submit secret, issued now if the request
        brought none (the response then sets the cookie: :meth:`set_cookie`)."""
        double = self._guard.double_submit
        if double is None:
            return mask_secret(secret_from_text(session().csrf_secret))
        if self.secret is None:
            self.cookie_value, self.secret = double.issue(self.identity)
            self.new_cookie = True
        return mask_secret(self.secret)

    def set_cookie(self) -> str | None:
        """The ``Set-Cookie`` value for a double-submit cookie issued during this request."""
        cookie = self._guard.cookie
        if not self.new_cookie or self.cookie_value is None or cookie is None:
            return None
        return cookie.with_value(self.cookie_value).serialize()
