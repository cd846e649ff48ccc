"""``Runtime``: a :class:`~bastion.config.Bastion` built once, shared by every adapter.

The runtime opens the store, draws or takes the key ring, makes the one auditor and the one
client-address reader (:class:`~bastion.core.client.TrustedProxies`), builds the engines, and
knows the one order of the layers::

    SecurityHeadersMiddleware      outermost: every response carries the headers, including
      CORSMiddleware               bastion's own 403 / 429 / 503 refusals (when cors= is set)
        RateLimitMiddleware        (when rate_limits= are set)
          BearerMiddleware         access tokens (when tokens= names protected paths)
            SessionMiddleware      (when a store is configured)
              CSRFMiddleware       reads the session's CSRF secret; passes token-authenticated
                                   requests (a browser never attaches a bearer token itself)
                AuthzMiddleware    the route table (when authz= has routes); without routes it
                  app              only hands the authorizer to the dependencies and decorators

Why this order: the headers layer must see every response, so it is outermost. CORS answers
preflights before anything costs store I/O, and its headers reach the rate limiter's 429 too
(a page may read why it was refused). Rate limiting comes before any store read the session
would do, so a flood is refused cheaply. Access tokens are checked before the session is
touched: an API request with a token costs no session read. The session
must exist before CSRF checks a synchronizer token, and a CSRF refusal still passes through the
session layer (which then writes nothing). Authorization is innermost: it needs to know who is
signed in (the bearer principal or the session), and a forged cross-site request is refused by
CSRF before any role is read.

The adapters (``bastion.asgi.protect``, ``bastion.wsgi.protect``, ``bastion.flask.protect``)
pass their middleware classes in a :class:`Layers`; :meth:`Runtime.compose` decides which to
build and in which order. :meth:`Runtime.close` / :meth:`Runtime.aclose` flush the auditor and
close the store when the runtime opened it from a URL.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from bastion.core.audit import Auditor
from bastion.core.clock import system_clock
from bastion.core.csrf import TokenSource
from bastion.core.environment import is_production
from bastion.core.keys import MIN_SECRET_BYTES, KeyRing
from bastion.core.login_monitor import LoginMonitor
from bastion.core.sessions import SessionConfig
from bastion.engine.sessions import SessionEngine
from bastion.engine.tokens.revocation import min_epoch_ttl
from bastion.errors import ConfigurationError
from bastion.stores.url import open_store

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.audit import AuditTrail
    from bastion.authz.service import Authorizer
    from bastion.config import Bastion
    from bastion.core.client import TrustedProxies
    from bastion.core.clock import Clock
    from bastion.core.keys import SecretKey
    from bastion.core.sessions import SessionRecord
    from bastion.crypto.service import EncryptionService
    from bastion.engine.apikeys import APIKeyManager
    from bastion.engine.ratelimit import RateLimiter
    from bastion.engine.throttle import LoginThrottle
    from bastion.engine.totp import TOTPManager
    from bastion.oidc.service import OIDC
    from bastion.stores.base import Store
    from bastion.tokens.service import Tokens

__all__ = ["Layers", "Runtime", "as_runtime", "session_engine"]

App = TypeVar("App")

logger = logging.getLogger("bastion.security.protect")


@dataclass(frozen=True, slots=True)
class Layers(Generic[App]):
    """One adapter family's middleware classes (ASGI or WSGI: the constructors take the same
    arguments). ``cors`` and ``rate_limit`` are loaders: those layers are optional and their
    modules are imported only when a configuration asks for them. ``None`` leaves a layer to
    the caller (the Flask adapter serves sessions and CSRF through Flask itself)."""

    headers: Callable[..., App]
    cors: Callable[[], Callable[..., App]]
    rate_limit: Callable[[], Callable[..., App]]
    sessions: Callable[..., App] | None
    csrf: Callable[..., App] | None
    bearer: Callable[[], Callable[..., App]] | None = None
    authz: Callable[[], Callable[..., App]] | None = None


class Runtime:
    """What a :class:`~bastion.config.Bastion` builds (see the module docstring).

    Attributes: ``config``, ``production``, ``keyring``, ``auditor``, ``proxies``, ``store``
    (``None`` without one) and ``sessions`` (the :class:`~bastion.engine.sessions.SessionEngine`,
    ``None`` without a store). ``limiter``, ``throttle``, ``api_keys`` and ``totp`` are built
    on first use, on the same store, ring and auditor.
    """

    __slots__ = (
        "_api_keys",
        "_audit",
        "_authz",
        "_crypto",
        "_limiter",
        "_oidc",
        "_own_limiter_store",
        "_owns_store",
        "_throttle",
        "_tokens",
        "_totp",
        "auditor",
        "config",
        "keyring",
        "login_monitor",
        "production",
        "proxies",
        "sessions",
        "store",
    )

    def __init__(self, config: Bastion) -> None:
        self.config = config
        self.production = production = config.production
        self.proxies = config.proxies
        if config.keyring is None:
            if production:
                raise ConfigurationError(
                    "Bastion(keyring=None) under ENV=production: a generated key ring changes "
                    "on every restart and differs between workers, so signed cookies and "
                    "hashed audit identifiers would not survive them. Pass "
                    "keyring=KeyRing.from_secrets([secret]) or set BASTION_SECRET_KEY "
                    "(Bastion.from_env())",
                    setting="keyring",
                )
            logger.warning(
                "bastion: no key ring configured; a throwaway one is used (signed cookies "
                "and audit hashes change on restart). Pass keyring= or set BASTION_SECRET_KEY"
            )
            self.keyring = KeyRing.generate()
        else:
            if production:
                _check_production_ring(config.keyring)
            self.keyring = config.keyring
        if config.tokens is not None:
            config.tokens.check_environment(production=production)
        # Every refusal comes before the store is opened: a refused configuration leaves no
        # connection, pool or worker thread behind.
        _check_opt_outs(config, production=production)
        csrf = config.csrf
        session_tokens = csrf is not None and csrf.token_source is TokenSource.SESSION
        if session_tokens and config.store is None:
            raise ConfigurationError(
                "Bastion: CSRF tokens live in the session by default, so pass store= "
                "(for example store='sqlite:///app.db'), or csrf=CSRFConfig(token_source="
                "TokenSource.DOUBLE_SUBMIT), or csrf=None to turn CSRF off",
                setting="store",
            )
        sessions = config.sessions if config.sessions is not None else SessionConfig()
        if config.store is not None:
            sessions.check_environment(production=production)
        self._crypto: EncryptionService | None = None
        self._audit, self.auditor, self.login_monitor = _auditing(config, self.keyring)
        store = config.store
        self._owns_store = isinstance(store, str)
        try:
            self.store: Store | None = (
                open_store(store, clock=config.clock) if isinstance(store, str) else store
            )
        except BaseException:
            if self._audit is not None:  # a refused store URL leaves no writer thread behind
                self._audit.close()
            raise
        self.sessions: SessionEngine | None = None
        if self.store is not None:
            self.sessions = SessionEngine(
                self.store,
                config=sessions,
                keyring=self.keyring,
                auditor=self.auditor,
                clock=config.clock,
                user_loader=config.user_loader,
                session_filter=config.session_filter,
                # The user epoch is shared with tokens: it must outlive every refresh family.
                min_epoch_ttl=(
                    0.0 if config.tokens is None else min_epoch_ttl(config.tokens.longest_lifetime)
                ),
            )
        self._limiter: RateLimiter | None = None
        self._own_limiter_store: Store | None = None
        self._throttle: LoginThrottle | None = None
        self._api_keys: APIKeyManager | None = None
        self._totp: TOTPManager | None = None
        self._tokens: Tokens | None = None
        self._authz: Authorizer | None = None
        self._oidc: OIDC | None = None

    @property
    def limiter(self) -> RateLimiter:
        """The :class:`~bastion.engine.ratelimit.RateLimiter` on the store (built on first
        use; a per-process memory store when none is configured): the rate-limit layer's, and
        the one decorators and dependencies take."""
        if self._limiter is None:
            from bastion.engine.ratelimit import RateLimiter  # noqa: PLC0415 (optional layer)
            from bastion.stores.base import require_rate_limit  # noqa: PLC0415

            store = self.store
            if store is None:  # no store configured: counters in this process only
                from bastion.stores.memory import MemoryStore  # noqa: PLC0415

                store = self._own_limiter_store = MemoryStore(clock=self.config.clock)
            self._limiter = RateLimiter(require_rate_limit(store), auditor=self.auditor)
        return self._limiter

    def _require_store(self, what: str) -> Store:
        if self.store is None:
            raise ConfigurationError(
                f"runtime.{what} needs a store; pass Bastion(store='sqlite:///app.db')",
                setting="store",
            )
        return self.store

    @property
    def throttle(self) -> LoginThrottle:
        """The login throttle (:class:`~bastion.engine.throttle.LoginThrottle`)."""
        if self._throttle is None:
            from bastion.engine.throttle import LoginThrottle  # noqa: PLC0415

            self._throttle = LoginThrottle(
                self._require_store("throttle"),
                self.keyring,
                policy=self.config.throttle,
                clock=self.config.clock,
                auditor=self.auditor,
                production=self.production,
            )
        return self._throttle

    @property
    def api_keys(self) -> APIKeyManager:
        """API keys (:class:`~bastion.engine.apikeys.APIKeyManager`)."""
        if self._api_keys is None:
            from bastion.engine.apikeys import APIKeyManager  # noqa: PLC0415

            self._api_keys = APIKeyManager(
                self._require_store("api_keys"),
                self.keyring,
                clock=self.config.clock,
                auditor=self.auditor,
            )
        return self._api_keys

    @property
    def tokens(self) -> Tokens:
        """Access tokens, refresh families, revocation and DPoP
        (:class:`~bastion.tokens.service.Tokens`); needs ``Bastion(tokens=TokenPolicy(...))``
        and the ``jwt`` extra. "Log out everywhere" of the session engine ends tokens too."""
        if self._tokens is None:
            policy = self.config.tokens
            if policy is None:
                raise ConfigurationError(
                    "runtime.tokens needs Bastion(tokens=TokenPolicy(issuer='https://app."
                    "example'))",
                    setting="tokens",
                )
            try:
                from bastion.tokens.service import Tokens  # noqa: PLC0415 (the jwt extra)
            except ImportError as error:  # pragma: no cover (the dev environment has it)
                raise ImportError(
                    "runtime.tokens needs the 'jwt' extra: pip install 'bastion[jwt]'"
                ) from error
            self._tokens = Tokens(
                policy,
                store=self._require_store("tokens"),
                keyring=self.keyring,
                clock=self.config.clock,
                auditor=self.auditor,
                production=self.production,
                sessions=self.sessions,
                permission_versions=(None if self.config.authz is None else self.authz.assignments),
            )
        return self._tokens

    @property
    def authz(self) -> Authorizer:
        """Authorization (:class:`~bastion.authz.service.Authorizer`): decisions, the route
        table, query filters and the users' role assignments; needs
        ``Bastion(authz=AuthzPolicy(...))``. A policy file is read here, once."""
        if self._authz is None:
            policy = self.config.authz
            if policy is None:
                raise ConfigurationError(
                    "runtime.authz needs Bastion(authz=AuthzPolicy(policy=...))", setting="authz"
                )
            from bastion.authz.service import Authorizer  # noqa: PLC0415

            self._authz = Authorizer(
                policy,
                store=self.store if policy.roles_in_store else None,
                auditor=self.auditor,
                clock=self.config.clock,
            )
        return self._authz

    @property
    def oidc(self) -> OIDC:
        """Sign-in with OpenID Connect providers (:class:`~bastion.oidc.service.OIDC`); needs
        ``Bastion(oidc=OIDCPolicy(...))`` and the ``oidc`` extra."""
        if self._oidc is None:
            policy = self.config.oidc
            if policy is None:
                raise ConfigurationError(
                    "runtime.oidc needs Bastion(oidc=OIDCPolicy(providers=(...)))", setting="oidc"
                )
            try:
                from bastion.oidc.service import OIDC  # noqa: PLC0415 (the oidc extra)
            except ImportError as error:  # pragma: no cover (the dev environment has it)
                raise ImportError(
                    "runtime.oidc needs the 'oidc' extra: pip install 'bastion[oidc]'"
                ) from error
            from bastion.oidc.policy import OIDCLogin  # noqa: PLC0415 (the oidc extra)

            self._oidc = OIDC(
                policy,
                store=self._require_store("oidc"),
                auditor=self.auditor,
                clock=self.config.clock,
                tokens=self.tokens if policy.login is OIDCLogin.TOKENS else None,
                # With field encryption the ID token is kept sealed for id_token_hint;
                # without it none is kept (bastion.oidc.logout_hint).
                crypto=self.crypto if self.config.crypto is not None else None,
            )
        return self._oidc

    @property
    def crypto(self) -> EncryptionService:
        """Field encryption (:class:`~bastion.crypto.EncryptionService`); needs
        ``Bastion(crypto=CryptoPolicy(keys=...))`` and the ``crypto`` extra."""
        if self._crypto is None:
            policy = self.config.crypto
            if policy is None:
                raise ConfigurationError(
                    "runtime.crypto needs Bastion(crypto=CryptoPolicy(keys=...))",
                    setting="crypto",
                )
            from bastion.crypto.service import EncryptionService  # noqa: PLC0415 (the extra)

            self._crypto = EncryptionService(policy, auditor=self.auditor)
        return self._crypto

    @property
    def audit(self) -> AuditTrail:
        """The stored audit trail (:class:`~bastion.audit.AuditTrail`: query, verify, purge);
        needs ``Bastion(audit=AuditPolicy(...))``. ``runtime.auditor`` writes to it."""
        if self._audit is None:
            raise ConfigurationError(
                "runtime.audit needs Bastion(audit=AuditPolicy(store='sqlite:///audit.db'))",
                setting="audit",
            )
        return self._audit

    @property
    def totp(self) -> TOTPManager:
        """TOTP second factors (:class:`~bastion.engine.totp.TOTPManager`); needs
        ``Bastion(totp_issuer=...)`` and the ``totp`` extra."""
        if self._totp is None:
            if self.config.totp_issuer is None:
                raise ConfigurationError(
                    "runtime.totp needs Bastion(totp_issuer='Example'): the site name shown "
                    "in authenticator apps",
                    setting="totp_issuer",
                )
            from bastion.engine.totp import TOTPManager  # noqa: PLC0415

            self._totp = TOTPManager(
                self._require_store("totp"),
                self.keyring,
                issuer=self.config.totp_issuer,
                clock=self.config.clock,
            )
        return self._totp

    def compose(self, app: App, layers: Layers[App]) -> App:
        """Wrap ``app`` in the configured layers, in the order of the module docstring."""
        config = self.config
        clock, production = config.clock, self.production
        wrapped = app
        if config.authz is not None and layers.authz is not None:
            wrapped = layers.authz()(wrapped, self.authz, proxies=self.proxies)
        if config.csrf is not None and layers.csrf is not None:
            wrapped = layers.csrf(
                wrapped,
                config=config.csrf,
                keyring=self.keyring,
                identity=config.csrf_identity,
                auditor=self.auditor,
                proxies=self.proxies,
                clock=clock,
                production=production,
            )
        if self.sessions is not None and layers.sessions is not None:
            wrapped = layers.sessions(wrapped, bastion=self)
        tokens = config.tokens
        if tokens is not None and (tokens.protect or tokens.optional) and layers.bearer:
            wrapped = layers.bearer()(
                wrapped,
                self.tokens,
                protected=tokens.protect,
                optional=tokens.optional,
                challenge=self.tokens.challenge,
                proxies=self.proxies,
                max_header_bytes=tokens.max_bytes,
                auditor=self.auditor,
            )
        if config.rate_limits:
            from bastion.core.ratelimit.keys import client_ip_key  # noqa: PLC0415

            wrapped = layers.rate_limit()(
                wrapped, self.limiter, config.rate_limits, key=client_ip_key(self.proxies)
            )
        if config.cors is not None:
            wrapped = layers.cors()(
                wrapped,
                config.cors,
                auditor=self.auditor,
                proxies=self.proxies,
                clock=clock,
                production=production,
            )
        if config.headers is not None:
            wrapped = layers.headers(
                wrapped,
                config.headers,
                overrides=dict(config.header_routes) or None,
                auditor=self.auditor,
                proxies=self.proxies,
                clock=clock,
                production=production,
            )
        return wrapped

    def close(self) -> None:
        """Flush the auditor's aggregated events and, when this runtime opened the store,
        release the calling thread's synchronous connections (the WSGI side)."""
        try:
            self.auditor.flush()  # an app's sink may fail here: the store is released anyway
            if self._oidc is not None:
                self._oidc.close()
            if self._audit is not None:
                self._audit.close()  # writes what is queued, seals the open segment
        finally:
            if self._owns_store and self.store is not None:
                sync = getattr(self.store, "sync", None)
                if sync is not None:
                    sync.close()

    async def aclose(self) -> None:
        """Flush the auditor and close the store if this runtime opened it (the store is
        unusable afterwards). ``bastion.asgi.protect`` calls this at lifespan shutdown."""
        try:
            self.auditor.flush()  # an app's sink may fail here: the stores are closed anyway
        finally:
            try:
                if self._audit is not None:
                    await asyncio.to_thread(self._audit.close)
                if self._oidc is not None:
                    await self._oidc.aclose()
                if self._limiter is not None:
                    await self._limiter.aclose()
                if self._own_limiter_store is not None:
                    await self._own_limiter_store.aclose()
            finally:
                if self._owns_store and self.store is not None:
                    await self.store.aclose()

    def __repr__(self) -> str:
        return f"Runtime({self.config!r})"


def as_runtime(value: object) -> Runtime:
    """``value`` if it is a :class:`Runtime`, else the runtime a :class:`Bastion` builds.

    A middleware given a ``Bastion`` builds its own runtime (its own store connections); pass
    one ``config.build()`` to several middlewares to share them.
    """
    if isinstance(value, Runtime):
        return value
    from bastion.config import Bastion  # noqa: PLC0415 (config imports this module lazily)

    if isinstance(value, Bastion):
        return value.build()
    raise ConfigurationError(
        f"expected a Bastion configuration or its Runtime, got {type(value).__name__}",
        setting="bastion",
    )


def session_engine(
    bastion: Bastion | Runtime | None,
    *,
    store: Store | str | None,
    config: SessionConfig | None,
    keyring: KeyRing | SecretKey | None,
    auditor: Auditor | None,
    clock: Clock,
    production: bool | None,
    user_loader: Callable[[str], Any] | None,
    session_filter: Callable[[SessionRecord], bool] | None,
    proxies: TrustedProxies | None,
) -> tuple[SessionEngine, TrustedProxies | None]:
    """The engine a session middleware serves and the proxies it reads, from ``bastion=`` (its
    runtime's engine) or from the middleware's own arguments. Written once for the ASGI and the
    WSGI middleware; a proxies value that trusts nothing comes back as ``None``."""
    if bastion is not None:
        if store is not None or config is not None or keyring is not None:
            raise ConfigurationError(
                "SessionMiddleware(bastion=...) takes the store, sessions and key ring from the "
                "Bastion configuration; do not pass them again",
                setting="bastion",
            )
        # The runtime's engine is served as built: a hook, proxies or auditor passed beside
        # bastion= would be dropped without a word (a session_filter refusing revoked sessions
        # among them), so each is refused by name.
        ignored = {
            "auditor": auditor is not None,
            "clock": clock is not system_clock,
            "production": production is not None,
            "user_loader": user_loader is not None,
            "session_filter": session_filter is not None,
            "proxies": proxies is not None,
        }
        for name, given in ignored.items():
            if given:
                field = "environment" if name == "production" else name
                raise ConfigurationError(
                    f"SessionMiddleware(bastion=...) takes {name} from the Bastion "
                    f"configuration; pass Bastion({field}=...) instead of {name}= here",
                    setting=name,
                )
        runtime = as_runtime(bastion)
        if runtime.sessions is None:
            raise ConfigurationError(
                "SessionMiddleware(bastion=...) needs Bastion(store=...)", setting="store"
            )
        engine, proxies = runtime.sessions, runtime.proxies
    else:
        if store is None:
            raise ConfigurationError(
                "SessionMiddleware needs store= (a Store or a URL) or bastion=", setting="store"
            )
        config = SessionConfig() if config is None else config
        if not isinstance(config, SessionConfig):
            raise ConfigurationError("config must be a SessionConfig", setting="config")
        config.check_environment(production=is_production() if production is None else production)
        engine = SessionEngine(
            open_store(store, clock=clock) if isinstance(store, str) else store,
            config=config,
            keyring=keyring,
            auditor=auditor,
            clock=clock,
            user_loader=user_loader,
            session_filter=session_filter,
        )
    return engine, proxies if proxies is not None and proxies.trusts_any else None


def _check_production_ring(keyring: KeyRing) -> None:
    """Refuse a ring holding a key shorter than ``MIN_SECRET_BYTES`` under production: the ring
    may have been built while the process did not yet know it runs in production (the length
    check of :class:`~bastion.core.keys.SecretKey` reads ``ENV`` when the key is made)."""
    for index, key in enumerate(keyring.keys):
        if len(key.reveal()) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"Bastion(keyring=...) key {index} is shorter than {MIN_SECRET_BYTES} bytes, "
                "refused under ENV=production; generate one with `bastion secret`",
                setting="keyring",
            )


def _auditing(
    config: Bastion, keyring: KeyRing
) -> tuple[AuditTrail | None, Auditor, LoginMonitor | None]:
    """The stored trail (``audit=``), the one auditor every layer shares, and the login
    monitor watching it (``login_monitor=``)."""
    trail: AuditTrail | None = None
    if config.audit is not None:
        from bastion.audit import AuditTrail  # noqa: PLC0415

        trail = AuditTrail(config.audit, keyring=keyring, clock=config.clock)
        auditor = trail.auditor()
    elif config.auditor is not None:
        auditor = config.auditor
    else:
        auditor = Auditor.default(keyring, config.clock)
    monitor: LoginMonitor | None = None
    if config.login_monitor is not None:
        monitor = LoginMonitor(config.login_monitor, hook=config.on_suspicion)
        monitor.attach(auditor)
    return trail, auditor, monitor


def _check_opt_outs(config: Bastion, *, production: bool) -> None:
    """Log each layer turned off; refuse cookie sessions without CSRF in production."""
    if config.csrf is None:
        if config.store is not None and production:
            raise ConfigurationError(
                "Bastion(csrf=None) with store= serves cookie sessions with no CSRF check, so "
                "a page on any site can post with the user's session; this is refused when "
                "ENV=production. Keep CSRF on (exempt= routes that authenticate otherwise, or "
                "CSRFConfig(skip_authenticated=True) for bearer-token APIs)",
                setting="csrf",
            )
        logger.warning(
            "bastion: csrf=None; no CSRF check on any request%s",
            " (cookie sessions are on: never use this in production)"
            if config.store is not None
            else "",
        )
    if config.headers is None:
        logger.warning(
            "bastion: headers=None; no security headers (CSP, HSTS, framing, nosniff) unless "
            "the app or a proxy sends them"
        )
