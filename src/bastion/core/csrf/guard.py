"""The framework-free half of CSRF protection, shared by the ASGI and WSGI middlewares.

:class:`CSRFGuard` holds what a middleware is configured with (the checked config, the
:class:`~bastion.core.csrf.checks.CSRFChecker`, the double-submit signer and cookie, the trusted
proxies, the auditor) and does what does not depend on how a request arrives: judging a token,
reporting a refusal. :class:`TokenState` is the double-submit side of one request: the verified
cookie secret, and the masked tokens handed to templates.

The guard never sees a session: where the secret lives is the adapter's business. It asks for
it through a callable, only when a token has to be made or checked (``secret`` returns the
session's secret, creating it if needed; ``known_secret`` returns the secret a submitted token
is checked against, or ``None``, without creating one). A request with a safe method needs
neither, and the adapters decide it before reading anything else (the cookie, the identity,
the other headers), so a page view pays for no check it does not need.

The adapters (:mod:`bastion.asgi.csrf`, :mod:`bastion.wsgi.csrf`) read the request (headers
into :class:`~bastion.core.csrf.checks.Facts`, the body for a form token) and answer it;
everything between is here, once.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from bastion.core.audit import Auditor, EventName, Outcome, redact_credentials
from bastion.core.clock import Clock, system_clock
from bastion.core.csrf.checks import CSRFChecker, CSRFReason
from bastion.core.csrf.config import CSRFConfig, logger
from bastion.core.csrf.tokens import check_token, double_submit_setup, mask_secret, secret_from_text
from bastion.core.environment import is_production
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from bastion.core.client import TrustedProxies
    from bastion.core.cookies import Cookie
    from bastion.core.csrf.checks import Facts
    from bastion.core.csrf.tokens import DoubleSubmit
    from bastion.core.keys import KeyRing, SecretKey

__all__ = ["CSRFGuard", "TokenState"]


class CSRFGuard:
    """A CSRF middleware's configuration and its request-independent decisions.

    ``config`` defaults to :class:`~bastion.core.csrf.config.CSRFConfig` ``()`` and is checked
    against the environment (``production`` overrides ``ENV``/``BASTION_ENV``). ``keyring`` is
    required for ``TokenSource.DOUBLE_SUBMIT``; ``auditor`` defaults to JSON lines on
    ``bastion.audit``. ``proxies`` is the app's one
    :class:`~bastion.core.client.TrustedProxies`: only a peer it trusts may report the scheme
    and host (:meth:`~bastion.core.client.TrustedProxies.forwarded_origin`), and audit events
    record the client it resolves.
    """

    __slots__ = ("_auditor", "checker", "config", "cookie", "double_submit", "proxies")

    def __init__(
        self,
        config: CSRFConfig | None = None,
        *,
        keyring: KeyRing | SecretKey | None = None,
        auditor: Auditor | None = None,
        clock: Clock = system_clock,
        production: bool | None = None,
        proxies: TrustedProxies | None = None,
    ) -> None:
        config = CSRFConfig() if config is None else config
        if not isinstance(config, CSRFConfig):
            raise ConfigurationError("config must be a CSRFConfig", setting="config")
        self.checker = CSRFChecker(config, proxies=proxies)
        self.proxies = self.checker.proxies
        config.check_environment(production=is_production() if production is None else production)
        self.config = config
        parts = double_submit_setup(config, keyring)
        self.double_submit: DoubleSubmit | None = parts[0] if parts else None
        self.cookie: Cookie | None = parts[1] if parts else None
        self._auditor = auditor if auditor is not None else Auditor.default(keyring, clock)

    def begin(self, cookie_value: str | None, identity: str) -> TokenState:
        """The double-submit state of a request that sent ``cookie_value`` as the cookie
        (``None``: none sent) for ``identity`` (``""``: not bound to a user). The cookie is
        verified here: call it only once a token is needed."""
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
        state: Callable[[], TokenState],
        known_secret: Callable[[], str | None],
    ) -> CSRFReason | None:
        """Why ``token`` fails (``None``: it passes).

        ``known_secret`` gives the session's secret for ``TokenSource.SESSION``: the stored
        session's, or a session-less visitor's pre-session one, never one issued now (that
        would be a store write for a token that cannot pass). ``state`` gives the request's
        :class:`TokenState` for ``DOUBLE_SUBMIT``. Each is called only in its mode, and only
        when there is a token to check.
        """
        if token is None:
            return self.checker.missing_reason(facts)
        if self.double_submit is None:
            known = known_secret()
            if known is None:
                return CSRFReason.NO_SESSION
            return check_token(token, secret_from_text(known))
        current = state()
        secret, cookie_value = current.secret, current.cookie_value
        if secret is None or cookie_value is None:
            return CSRFReason.NO_SESSION
        raw = token.encode("utf-8", "replace") if isinstance(token, str) else token
        if b"." in raw:  # the cookie value itself, copied by JavaScript (classic double submit)
            expected = cookie_value.encode("utf-8", "replace")
            return (
                None if hmac.compare_digest(raw.strip(), expected) else CSRFReason.TOKEN_INCORRECT
            )
        return check_token(token, secret)

    def client(self, facts: Facts, forwarded: Sequence[str] = ()) -> str | None:
        """The client's address for an audit event: the peer, or behind a trusted proxy the
        address it forwarded (``forwarded``: the values of the proxies' forwarding header)."""
        peer = facts.client
        if not forwarded or not self.proxies.trusts_any:
            return peer
        address = self.proxies.client(peer, forwarded)
        return peer if address is None else str(address)

    def audit(self, reason: CSRFReason, facts: Facts, forwarded: Sequence[str] = ()) -> None:
        """Report a refusal (or, in log-only mode, a request that would have been refused).
        ``forwarded`` are the values of the trusted proxies' forwarding header
        (:attr:`TrustedProxies.header <bastion.core.client.TrustedProxies.header>`)."""
        log_only = self.config.log_only
        self._auditor.emit(
            EventName.MALICIOUS_CSRF,
            outcome=Outcome.FAILURE if log_only else Outcome.BLOCKED,
            client_ip=self.client(facts, forwarded),
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
                redact_credentials(facts.path),
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

    def token(self, secret: Callable[[], str]) -> str:
        """A masked token: of the session's secret (``TokenSource.SESSION``; ``secret`` returns
        it, creating it if needed), else of the double-submit secret, issued now if the request
        brought none (the response then sets the cookie: :meth:`set_cookie`)."""
        double = self._guard.double_submit
        if double is None:
            return mask_secret(secret_from_text(secret()))
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
