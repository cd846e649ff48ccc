"""The demo app: Starlette + Jinja2 with every bastion protection on, through the public API only.

The stack, outermost first (see :func:`demo_config`)::

    FriendlyErrors              bastion's own 403/429/503 refusals as the demo's HTML page
      protect(app, config)      one Bastion configuration: SecurityHeaders (strict preset, CSP
                                nonces, report receiver at /csp-report) -> RateLimit ->
                                Session (development mode) -> CSRF
        Starlette routes        the pages below

Routes (a stable contract): ``/``, ``/healthz``, ``/register``, ``/login``, ``/logout``,
``/account``, ``/account/sessions``, ``/account/sessions/revoke-others``, ``/account/password``,
``/account/totp``, ``/account/api-keys``, ``/account/profile`` (:mod:`bastion.demo.profile`),
``/account/api-keys/{key_id}/revoke``, ``/account/export`` and ``/account/delete``
(:mod:`bastion.demo.account`), ``/api/me``, ``/admin``, ``/audit``; the token routes
of :mod:`bastion.demo.tokens`; ``/documents``, ``/documents/{id}`` and ``/admin/roles`` of
:mod:`bastion.demo.access` (authorization: roles ``user`` < ``moderator`` < ``admin``, kept in
bastion's store, and the document policy of ``policy.toml``). With a local OpenID provider
(``bastion demo --oidc-provider``): ``/auth/local/login`` and ``/auth/local/callback`` of
:mod:`bastion.demo.oidc`.

Development mode: the session cookie is sent without ``Secure`` so that plain HTTP on loopback
works (``SessionConfig(development=True, secure=False)``); bastion logs a warning at start and
refuses the setting outright when ``ENV=production``. With ``https=True`` (``bastion demo
--https``, served with a local development certificate) the demo runs with the production
session settings instead: a ``__Host-`` cookie with ``Secure``, and HSTS on every response.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import jinja2
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount
from starlette.routing import Route as StarletteRoute
from starlette.templating import Jinja2Templates

from bastion import (
    Bastion,
    ConfigurationError,
    ContentSecurityPolicy,
    CSRFConfig,
    Environment,
    HeaderPolicy,
    KeyRing,
    LoginOutcome,
    PasswordHasher,
    PasswordRejected,
    Rule,
    SessionConfig,
    StoreError,
    ThrottlePolicy,
    default_policy,
    normalize_username,
    system_clock,
)
from bastion.apikeys import api_key_from_headers
from bastion.asgi import add_jinja2_globals as add_nonce_global
from bastion.asgi import get_session, load_session, protect
from bastion.asgi.csrf import add_jinja2_globals as add_csrf_globals
from bastion.asgi.sessions import list_sessions, revoke_other_sessions
from bastion.audit import AuditPolicy
from bastion.authz import AuthzPolicy
from bastion.core.audit import Auditor, EventName, IdentifierHasher, LoggingAuditSink, Outcome
from bastion.core.login_monitor import LoginMonitorPolicy
from bastion.core.throttle import BackoffRule
from bastion.core.tokens.jwk import JWTKey, JWTKeySet
from bastion.crypto import CryptoPolicy, DataKey, DataKeyRing
from bastion.demo.access import AccessRoutes, role_of
from bastion.demo.account import AccountRoutes
from bastion.demo.audit_view import (
    AuditFilters,
    FilterError,
    memory_rows,
    since_for_display,
    stored_rows,
)
from bastion.demo.documents import DocumentTable
from bastion.demo.profile import ProfileRoutes, ProfileTable
from bastion.demo.support import FriendlyErrors, RecentEvents, mark_rendered, read_form
from bastion.demo.tokens import TokenRoutes
from bastion.demo.users import USERNAME_RULE, User, UserStore, valid_username
from bastion.engine.totp import TOTPResult
from bastion.oidc.policy import OIDCPolicy
from bastion.passwords import check_new_password, generate_password
from bastion.tokens import TokenPolicy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request

    from bastion import Clock, PasswordPolicy, Store
    from bastion.asgi.types import Receive, Scope, Send
    from bastion.engine.authz import Assignments
    from bastion.oidc import Provider

__all__ = ["API_SCOPE", "CSP_REPORT_PATH", "SEEDED_USERS", "DemoApp"]

CSP_REPORT_PATH: Final = "/csp-report"
API_SCOPE: Final = "profile:read"
"""The scope ``GET /api/me`` needs."""
SEEDED_USERS: Final = (("demo", "user"), ("admin", "admin"))
SEEDING_ACTOR: Final = "system:demo-seed"
"""The actor of the role changes the demo makes itself (seeding, a new account's ``user``
role); no account can have this name (``:`` is not allowed in one)."""
POLICY_FILE: Final = Path(__file__).with_name("policy.toml")
ISSUER: Final = "bastion demo"
API_KEY_LIFETIME: Final = 30 * 86400.0
LOGIN_POLICY: Final = ThrottlePolicy(
    # Five free attempts per (account, client); the sixth failure makes the next attempt wait
    # 30 s, then 60 s, 120 s ... up to 15 minutes. The account-wide, per-client and device
    # cookie counters keep bastion's defaults. An attacker spread over many addresses can trip
    # the account-wide counter, but not lock the user out: while it is tripped, a browser
    # holding the device cookie from an earlier login still tries its password.
    pair=BackoffRule(free_attempts=5, base_delay=30.0, max_delay=900.0),
)
_SCOPES_SPLIT = re.compile(r"[\s,]+")
_TITLES: Final = {
    400: "Bad request",
    403: "Forbidden",
    404: "Not found",
    413: "Too large",
    429: "Too many requests",
    503: "Service unavailable",
}


@dataclass(slots=True)
class CredentialCheck:
    """What :meth:`DemoApp.check_credentials` found. ``username`` is set when the sign-in
    succeeded; ``throttled`` holds the Retry-After seconds when the throttle refused it."""

    checked_at: float
    attempt: Any = None
    username: str | None = None
    throttled: str | None = None
    needs_code: bool = False
    locked: bool = False


@dataclass(slots=True)
class SeededAccount:
    """A seeded account and the password it was given at this start (shown in the banner)."""

    username: str
    role: str
    password: str = field(repr=False)


class DemoApp:
    """The demo as one ASGI app. Build it, ``await startup()`` (the lifespan does it), serve.

    ``store`` holds everything (sessions, rate limits, accounts, throttling, TOTP steps, API
    keys). ``seed_password`` sets the seeded accounts' password (``None``: a random one per
    start, printed). ``hasher`` lets tests use a cheap Argon2 profile. ``https`` says the demo
    is served over TLS: the session cookie then takes the production settings (``Secure``,
    ``__Host-``). ``production`` forces the environment (default: ``ENV`` / ``BASTION_ENV``).
    ``documents_url`` is the SQLAlchemy URL of the documents table (``None``: in memory).
    ``oidc_provider``: a provider named ``local`` (``bastion demo --oidc-provider``): the login
    page offers "Sign in with the local provider" and ``/auth/local/...`` is served
    (:mod:`bastion.demo.oidc`). ``audit_url``: the stored audit trail (``Bastion(audit=...)``,
    read by ``/audit``; ``None``: the in-memory ring of recent events). ``data_keys``: the
    data keys of field encryption (``None``: one drawn per start). ``profiles_path``: the
    SQLite file of the profile table (``None``: in memory).
    """

    def __init__(
        self,
        store: Store,
        *,
        keyring: KeyRing | None = None,
        clock: Clock = system_clock,
        seed_password: str | None = None,
        hasher: PasswordHasher | None = None,
        policy: PasswordPolicy | None = None,
        production: bool | None = None,
        store_label: str = "",
        https: bool = False,
        documents_url: str | None = None,
        oidc_provider: Provider | None = None,
        audit_url: str | None = None,
        data_keys: DataKeyRing | None = None,
        profiles_path: str | None = None,
    ) -> None:
        keyring = keyring if keyring is not None else KeyRing.generate()
        self.store = store
        self.store_label = store_label
        self.clock = clock
        self.events = RecentEvents(LoggingAuditSink())
        self.identifiers = IdentifierHasher(keyring)
        self.auditor = Auditor(self.identifiers, clock, self.events)
        self.users = UserStore(store)
        self.hasher = hasher if hasher is not None else PasswordHasher()
        self.policy = policy if policy is not None else default_policy(site_words=("bastion",))
        self.https = https
        self.api_scope = API_SCOPE
        self.token_routes = TokenRoutes(self)
        self.access = AccessRoutes(self)
        self.documents = DocumentTable(documents_url)
        if oidc_provider is not None and oidc_provider.name != "local":
            raise ConfigurationError(
                "the demo's provider must be named 'local' (its routes are /auth/local/...)",
                setting="oidc_provider",
            )
        self.oidc_provider = oidc_provider
        # Field encryption under a data key of the demo's configuration (one drawn per start
        # by default); the stored audit trail when audit_url is given (else the ring above).
        self.crypto_policy = CryptoPolicy(
            keys=data_keys if data_keys is not None else DataKeyRing(DataKey.generate(1))
        )
        self.audit_policy = None if audit_url is None else AuditPolicy(store=audit_url)
        self.config = demo_config(self, keyring=keyring, production=production)
        self.runtime = self.config.build()
        if self.audit_policy is not None:  # the demo's own events go to the trail too
            self.auditor = self.runtime.auditor
        self.profiles = ProfileRoutes(self, ProfileTable(profiles_path))
        self.account_routes = AccountRoutes(self)
        # Plain HTTP on loopback (like the session cookie): the device cookie is
        # ``bastion-device`` without ``Secure``, logged, refused when ENV=production. Over HTTPS
        # it is ``__Host-bastion-device`` with ``Secure``.
        self.throttle = self.runtime.throttle
        self.totp = self.runtime.totp
        self.api_keys = self.runtime.api_keys
        assignments = self.runtime.authz.assignments
        if assignments is None:  # pragma: no cover (demo_config keeps roles in the store)
            raise ConfigurationError("the demo keeps roles in its store", setting="authz")
        self.assignments: Assignments = assignments
        self.seeded = [
            SeededAccount(name, role, seed_password or generate_password(20))
            for name, role in SEEDED_USERS
        ]
        loader = jinja2.PackageLoader("bastion.demo", "templates")
        env = jinja2.Environment(loader=loader, autoescape=True)
        add_nonce_global(env)  # {{ csp_nonce() }}
        add_csrf_globals(env)  # {{ csrf_input() }}
        env.filters["when"] = _when
        env.globals["local_provider"] = oidc_provider is not None  # login.html's sign-in link
        self.templates = Jinja2Templates(env=env)
        self.starlette = Starlette(
            routes=self._routes(),
            lifespan=self._lifespan,
            exception_handlers={StoreError: self.store_down},
        )
        # The demo's HTML pages for bastion's own refusals, around the whole protected app.
        self._asgi = FriendlyErrors(
            protect(mark_rendered(self.starlette), self.runtime), self.render_refusal
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._asgi(scope, receive, send)

    def __repr__(self) -> str:
        return f"DemoApp(store={self.store_label or self.store!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    async def startup(self) -> None:
        """(Re)seed the demo accounts with this start's password (other accounts stay), then
        open the documents table."""
        for account in self.seeded:
            password_hash = await self.hasher.ahash(account.password)
            existing = await self.users.get(account.username)
            await self.users.put(
                User(
                    username=account.username,
                    password_hash=password_hash,
                    role=account.role,
                    totp_secret=None if existing is None else existing.totp_secret,
                    created_at=self.clock.now() if existing is None else existing.created_at,
                )
            )
            await self.assignments.set_role(
                SEEDING_ACTOR, account.username, account.role, may_administer=True
            )
        await self.documents.open()
        self.profiles.table.open()

    async def shutdown(self) -> None:
        await self.runtime.aclose()
        await self.store.aclose()
        self.documents.close()
        self.profiles.table.close()

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()

    def _routes(self) -> list[StarletteRoute | Mount]:
        r = StarletteRoute
        routes: list[StarletteRoute | Mount] = [
            r("/", self.home),
            r("/healthz", self.healthz),
            r("/register", self.register, methods=["GET", "POST"]),
            r("/login", self.login, methods=["GET", "POST"]),
            r("/logout", self.logout, methods=["POST"]),
            r("/account", self.account),
            r("/account/sessions", self.sessions),
            r("/account/sessions/revoke-others", self.revoke_others, methods=["POST"]),
            r("/account/password", self.password, methods=["POST"]),
            r("/account/profile", self.profiles.profile, methods=["GET", "POST"]),
            r("/account/totp", self.totp_page, methods=["GET", "POST"]),
            r("/account/api-keys", self.create_api_key, methods=["POST"]),
            r(
                "/account/api-keys/{key_id}/revoke",
                self.account_routes.revoke_key,
                methods=["POST"],
            ),
            r("/account/export", self.account_routes.export),
            r("/account/delete", self.account_routes.delete, methods=["POST"]),
            r("/api/me", self.api_me),
            r("/api/token", self.token_routes.token, methods=["POST"]),
            r("/api/token/refresh", self.token_routes.refresh, methods=["POST"]),
            r("/api/token/revoke", self.token_routes.revoke, methods=["POST"]),
            r("/.well-known/jwks.json", self.token_routes.jwks),
            r("/reset-password", self.token_routes.reset_request, methods=["GET", "POST"]),
            r("/reset-password/{token}", self.token_routes.reset_form, methods=["GET", "POST"]),
            r("/outbox", self.token_routes.outbox_page),
            r("/documents", self.access.documents, methods=["GET", "POST"]),
            r("/documents/{document_id}", self.access.document, methods=["GET", "POST"]),
            r("/admin", self.admin),
            r("/admin/roles", self.access.roles, methods=["GET", "POST"]),
            r("/audit", self.audit),
        ]
        if self.oidc_provider is not None:
            from bastion.demo.oidc import oidc_mount  # noqa: PLC0415 (only with a provider)

            routes.append(oidc_mount(self))  # /auth/local/login, /auth/local/callback
        return routes

    # -- helpers -----------------------------------------------------------------------------

    async def current_user(self, request: Request) -> User | None:
        """The logged-in user, loading the session with an awaited read first; ``role`` is
        the one bastion's store holds now (a demotion shows on the next request)."""
        session = await load_session(request)
        name = session.user_id
        user = None if name is None else await self.users.get(name)
        if user is None:
            return None
        assignment = await self.assignments.load(user.username)
        return replace(user, role=role_of(assignment.roles))

    def page(
        self, request: Request, name: str, user: User | None, status: int = 200, **context: Any
    ) -> Response:
        context.setdefault("flash", None)
        context.setdefault("errors", ())
        return self.templates.TemplateResponse(
            request, name, {"user": user, **context}, status_code=status
        )

    def error_page(
        self,
        request: Request,
        user: User | None,
        status: int,
        message: str,
        retry_after: str | None = None,
        *,
        reason: str | None = None,
    ) -> Response:
        response = self.page(
            request,
            "error.html",
            user,
            status,
            title=_TITLES.get(status, "Error"),
            message=message,
            retry_after=retry_after,
            reason=reason,
        )
        if retry_after is not None:
            response.headers["Retry-After"] = retry_after
        return response

    def render_refusal(
        self, scope: Scope, status: int, text: str, retry_after: str | None
    ) -> bytes:
        """The HTML for a refusal sent by a bastion middleware (see FriendlyErrors)."""
        template = self.templates.get_template("error.html")
        return template.render(
            request=scope,  # csp_nonce() reads the nonce from the scope
            user=None,
            flash=None,
            errors=(),
            title=_TITLES.get(status, "Error"),
            message=_refusal_message(status, text),
            retry_after=retry_after,
            refusal=True,
        ).encode("utf-8")

    def audit_event(
        self, request: Request, name: EventName | str, outcome: Outcome, user: str | None, **d: Any
    ) -> None:
        client = request.client
        self.auditor.emit(
            name,
            outcome=outcome,
            user=user,
            client_ip=client.host if client else None,
            details=d or None,
        )

    async def store_down(self, request: Request, exc: Exception) -> Response:
        """A store error inside a handler: the friendly 503 (never a traceback, never a
        silent logout). The session layer answers its own load and save failures the same way."""
        self.audit_event(
            request, "store_unavailable", Outcome.FAILURE, None, error=type(exc).__name__
        )
        return self.error_page(
            request,
            None,
            503,
            "The data store cannot be reached right now. Nothing was changed; please try "
            "again shortly.",
            retry_after="5",
        )

    # -- pages -------------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        user = await self.current_user(request)
        return self.page(request, "home.html", user, store=self.store_label)

    async def healthz(self, _request: Request) -> Response:
        return PlainTextResponse("ok")

    async def register(self, request: Request) -> Response:
        user = await self.current_user(request)
        if request.method != "POST":  # HEAD (and GET) show the page, never handle a form
            return self.page(request, "register.html", user, username="")
        form = await read_form(request)
        raw_name, password = str(form.get("username", "")), str(form.get("password", ""))
        name = normalize_username(raw_name)
        errors: list[str] = []
        if not valid_username(name):
            errors.append(f"User name: {USERNAME_RULE}.")
        try:
            result = await check_new_password(self.policy, password, user_inputs=(name, raw_name))
            errors += list(result.messages)
        except PasswordRejected as exc:
            errors.append(str(exc))
        if not errors:
            new_hash = await self.hasher.ahash(password)
            created = User(username=name, password_hash=new_hash, created_at=self.clock.now())
            if await self.users.create(created):
                await self.assignments.set_role(SEEDING_ACTOR, name, "user", may_administer=True)
                session = get_session(request)
                session.login(name)
                await self.runtime.authz.stamp(session, name)
                self.audit_event(request, EventName.USER_CREATED, Outcome.SUCCESS, name)
                return RedirectResponse("/account", status_code=303)
            errors.append("That user name is taken; choose another.")
        return self.page(request, "register.html", user, 400, errors=errors, username=raw_name[:64])

    async def check_credentials(
        self, raw_name: str, password: str, code: str, client: str, *, device: str | None
    ) -> CredentialCheck:
        """The password (and the TOTP code when the account has one) under the login throttle:
        the one sign-in check of ``/login`` and ``/api/token``. Raises ``PasswordRejected``
        for a password longer than any allowed one."""
        name = normalize_username(raw_name)
        check = CredentialCheck(checked_at=self.clock.now())

        async def verify() -> bool:
            account = await self.users.get(name) if name else None
            outcome = await self.hasher.averify_and_update(
                None if account is None else account.password_hash, password
            )
            if account is None or not outcome.valid:
                return False
            if outcome.new_hash is not None:
                await self.users.set_password_hash(name, outcome.new_hash)
            if account.totp_secret is None:
                return True
            if not code:
                check.needs_code = True
                return False
            verdict = await self.totp.verify(name, account.totp_secret, code)
            if verdict is TOTPResult.MALFORMED:
                return await self.totp.use_recovery_code(name, code)
            check.locked = verdict is TOTPResult.LOCKED
            return verdict is TOTPResult.ACCEPTED

        check.attempt = attempt = await self.throttle.attempt(
            raw_name, client, verify, device_cookie=device
        )
        if attempt.outcome is LoginOutcome.THROTTLED:
            check.throttled = attempt.decision.retry_after_header
        elif attempt.ok:
            check.username = name
        return check

    async def login(self, request: Request) -> Response:
        user = await self.current_user(request)
        if request.method != "POST":  # HEAD (and GET) show the page, never handle a form
            return self.page(request, "login.html", user, username="", need_totp=False)
        form = await read_form(request)
        raw_name, password = str(form.get("username", "")), str(form.get("password", ""))
        code = str(form.get("totp", "")).strip()
        client = request.client.host if request.client else "unknown"
        device = request.cookies.get(self.throttle.device_cookie_name(secure=self.https))
        try:
            check = await self.check_credentials(raw_name, password, code, client, device=device)
        except PasswordRejected:
            return self.page(
                request,
                "login.html",
                user,
                400,
                username=raw_name[:64],
                need_totp=bool(code),
                errors=["That password is longer than any password here can be."],
            )
        attempt = check.attempt
        needs_code, locked = check.needs_code, check.locked
        if attempt.outcome is LoginOutcome.THROTTLED:
            wait = attempt.decision.retry_after_header
            message = (
                "This account is receiving many failed logins from elsewhere, so only a "
                "browser that has signed in to it before can log in right now. "
                f"Try again in {wait} seconds."
                if attempt.challenge_required
                else "Too many failed logins for this account from your address. "
                f"Try again in {wait} seconds."
            )
            return self.error_page(request, user, 429, message, retry_after=wait)
        if not attempt.ok:
            if needs_code:
                message = (
                    "This account has two-factor authentication: enter the code from your "
                    "authenticator app (or a recovery code)."
                )
            elif locked:  # the code was not even compared (TOTPManager's wrong-code budget)
                message = (
                    "This account has had too many wrong codes lately: wait a few minutes, "
                    "or use one of your recovery codes."
                )
            else:
                message = "Wrong user name, password or code."
            return self.page(
                request,
                "login.html",
                user,
                401,
                username=raw_name[:64],
                need_totp=needs_code or bool(code),
                errors=[message],
            )
        session = get_session(request)
        session.login(normalize_username(raw_name))
        await self.runtime.authz.stamp(session, normalize_username(raw_name))
        response = RedirectResponse("/account", status_code=303)
        if attempt.device_cookie is not None:  # this browser is now a known device
            cookie = self.throttle.device_cookie(attempt.device_cookie, secure=self.https)
            response.headers.append("set-cookie", cookie.serialize())
        return response

    async def logout(self, request: Request) -> Response:
        await load_session(request)
        get_session(request).logout()
        return RedirectResponse("/", status_code=303)

    async def account(self, request: Request) -> Response:
        user = await self.current_user(request)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        session = await load_session(request)
        flash = session.pop("flash", None)
        keys = await self.api_keys.list_keys(user.username)
        return self.page(
            request,
            "account.html",
            user,
            flash=flash,
            keys=keys,
            api_scope=API_SCOPE,
            now=time.time(),
        )

    async def sessions(self, request: Request) -> Response:
        user = await self.current_user(request)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        session = await load_session(request)
        flash = session.pop("flash", None)
        found = await list_sessions(request)
        return self.page(request, "sessions.html", user, sessions=found, flash=flash)

    async def revoke_others(self, request: Request) -> Response:
        user = await self.current_user(request)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        count = await revoke_other_sessions(request)
        self.audit_event(
            request, "session_revoke_others", Outcome.SUCCESS, user.username, revoked=count
        )
        (await load_session(request))["flash"] = f"Logged out {count} other device(s)."
        return RedirectResponse("/account/sessions", status_code=303)

    async def password(self, request: Request) -> Response:
        user = await self.current_user(request)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        form = await read_form(request)
        current, new = str(form.get("current_password", "")), str(form.get("new_password", ""))
        errors: list[str] = []
        try:
            if not await self.hasher.averify(user.password_hash, current):
                errors.append("The current password is wrong.")
            else:
                result = await check_new_password(
                    self.policy, new, user_inputs=(user.username,), has_second_factor=user.has_totp
                )
                errors += list(result.messages)
        except PasswordRejected as exc:
            errors.append(str(exc))
        if errors:
            self.audit_event(
                request, EventName.AUTHN_PASSWORD_CHANGE_FAIL, Outcome.FAILURE, user.username
            )
            keys = await self.api_keys.list_keys(user.username)
            return self.page(
                request,
                "account.html",
                user,
                400,
                errors=errors,
                keys=keys,
                api_scope=API_SCOPE,
                now=time.time(),
            )
        await self.users.set_password_hash(user.username, await self.hasher.ahash(new))
        count = await revoke_other_sessions(request)
        get_session(request).regenerate()
        self.audit_event(
            request, EventName.AUTHN_PASSWORD_CHANGE, Outcome.SUCCESS, user.username, revoked=count
        )
        (await load_session(request))["flash"] = (
            f"Password changed. {count} other session(s) were logged out."
        )
        return RedirectResponse("/account", status_code=303)

    async def totp_page(self, request: Request) -> Response:
        user = await self.current_user(request)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        session = await load_session(request)
        if user.has_totp:
            remaining = await self.totp.remaining_recovery_codes(user.username)
            return self.page(request, "totp.html", user, enrolled=True, remaining=remaining)
        if request.method != "POST":  # HEAD (and GET) show the page, never handle a form
            enrollment = self.totp.enroll(user.username)
            session["totp_pending"] = enrollment.secret
            return self.page(
                request, "totp.html", user, enrolled=False, enrollment=enrollment, codes=None
            )
        form = await read_form(request)
        secret = session.get("totp_pending")
        code = str(form.get("code", ""))
        if not isinstance(secret, str):
            return self.error_page(request, user, 400, "Open the TOTP page again to start over.")
        verdict = await self.totp.verify(user.username, secret, code)
        if verdict is not TOTPResult.ACCEPTED:
            enrollment = self.totp.enroll(user.username)
            session["totp_pending"] = enrollment.secret
            return self.page(
                request,
                "totp.html",
                user,
                400,
                enrolled=False,
                enrollment=enrollment,
                codes=None,
                errors=[
                    (
                        f"That code was not accepted ({verdict.value}); scan the new "
                        "QR code and try again."
                    )
                ],
            )
        await self.users.set_totp_secret(user.username, secret)
        del session["totp_pending"]
        codes = await self.totp.new_recovery_codes(user.username)
        get_session(request).regenerate()  # a privilege change: new session ID
        self.audit_event(request, "totp_enabled", Outcome.SUCCESS, user.username)
        return self.page(request, "totp.html", user, enrolled=True, codes=codes, remaining=None)

    async def create_api_key(self, request: Request) -> Response:
        user = await self.current_user(request)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        form = await read_form(request)
        scopes = [s for s in _SCOPES_SPLIT.split(str(form.get("scopes", ""))) if s]
        client = request.client.host if request.client else None
        try:
            created = await self.api_keys.create(
                user.username,
                name="demo key",
                scopes=scopes,
                expires_in=API_KEY_LIFETIME,
                client_ip=client,
            )
        except ConfigurationError as exc:
            return self.error_page(request, user, 400, str(exc))
        return self.page(request, "api_key.html", user, created=created, api_scope=API_SCOPE)

    async def api_me(self, request: Request) -> Response:
        """The caller's name and scopes, for an API key (``X-API-Key`` or ``Authorization:
        Bearer bst_...``) or an access token from ``/api/token`` (``Authorization: Bearer``)."""
        authorization = request.headers.get("authorization")
        token = api_key_from_headers(
            x_api_key=request.headers.get("x-api-key"), authorization=authorization
        )
        if token is None and authorization is not None:
            found = await self.token_routes.bearer_user(request)
            if isinstance(found, str):
                return JSONResponse({"username": found, "scopes": [API_SCOPE]})
            reason = found.reason
            code = reason.error_code or "invalid_token"
            return JSONResponse(
                {"error": code},
                status_code=reason.status,
                headers={"WWW-Authenticate": f'Bearer realm="bastion demo", error="{code}"'},
            )
        client = request.client.host if request.client else None
        result = await self.api_keys.verify(token, required_scope=API_SCOPE, client_ip=client)
        if not result.ok or result.record is None:
            return JSONResponse(
                {"error": result.status.value},
                status_code=result.http_status,
                headers={"WWW-Authenticate": 'Bearer realm="bastion demo"'},
            )
        if await self.users.get(result.record.owner) is None:
            # A key its owner's deletion did not see (made by a request already under way):
            # the account is gone, so the key is as good as unknown.
            return JSONResponse(
                {"error": "unknown"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="bastion demo"'},
            )
        return JSONResponse({"username": result.record.owner, "scopes": result.record.scopes})

    async def admin(self, request: Request) -> Response:
        user = await self.current_user(request)
        client = request.client.host if request.client else None
        if user is None:
            self.auditor.emit(
                EventName.AUTHZ_FAIL,
                outcome=Outcome.BLOCKED,
                client_ip=client,
                details={"path": "/admin", "reason": "unauthenticated"},
            )
            return self.error_page(
                request, None, 403, "The admin page is for the admin account only."
            )
        decision = await self.runtime.authz.check(user.username, "admin:view", client_ip=client)
        if not decision:  # the authorizer emitted authz_fail with the explanation
            return self.error_page(
                request,
                user,
                403,
                "The admin page is for the admin account only.",
                reason=decision.reason.value,
            )
        self.audit_event(request, EventName.AUTHZ_ADMIN, Outcome.SUCCESS, user.username)
        if self.audit_policy is None:
            kept = f"{len(self.events)} audit events are kept in memory."
        else:
            trail = self.runtime.audit
            await asyncio.to_thread(trail.flush)
            stored = await asyncio.to_thread(trail.last_seq)
            kept = f"{stored} audit events are stored in the trail at {trail.backend.where}."
        return self.page(request, "admin.html", user, kept=kept)

    async def audit(self, request: Request) -> Response:
        """The caller's audit events, from the stored trail when the demo keeps one; filters
        ``?event=`` and ``?since=`` (:mod:`bastion.demo.audit_view`; a bad one is a 400)."""
        user = await self.current_user(request)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        try:
            filters = AuditFilters.parse(request.query_params, now=self.clock.now())
        except FilterError as exc:
            return self.error_page(request, user, 400, str(exc))
        client = request.client.host if request.client else None
        if self.audit_policy is not None:
            trail = self.runtime.audit
            rows = await asyncio.to_thread(
                stored_rows, trail, user.username, self.identifiers, client, filters
            )
        else:
            mine = self.identifiers.hash(user.username, kind="user")
            here = None if client is None else self.identifiers.hash(client, kind="client_ip")
            rows = memory_rows(self.events, mine, here, filters)
        return self.page(
            request,
            "audit.html",
            user,
            rows=rows,
            filters=filters,
            since_shown=since_for_display(filters),
            stored=self.audit_policy is not None,
        )


def demo_config(demo: DemoApp, *, keyring: KeyRing, production: bool | None) -> Bastion:
    """bastion's whole configuration for the demo: one value, as any app would write it."""
    # The strict preset. ``report_to`` turns on the report receiver at /csp-report. Pages get
    # the same policy with ``report-uri`` only: Chromium ignores ``report-uri`` when
    # ``report-to`` is present, and it did not deliver Reporting API reports for plain-HTTP
    # loopback pages in our browser tests, so in development ``report-uri`` is the channel
    # that works. Over HTTPS keep ``report_to=`` alone (both directives).
    receiver = HeaderPolicy.preset("strict", report_to=CSP_REPORT_PATH)
    strict_csp = HeaderPolicy.preset("strict").csp_policy
    if not isinstance(strict_csp, ContentSecurityPolicy):  # pragma: no cover (the preset has one)
        raise ConfigurationError("the strict preset has no CSP", setting="csp_policy")
    pages = HeaderPolicy.preset(
        "strict", csp_policy=strict_csp.with_directives(report_uri=CSP_REPORT_PATH)
    )
    environment = None
    if production is not None:
        environment = Environment.PRODUCTION if production else Environment.DEVELOPMENT
    return Bastion(
        store=demo.store,
        keyring=keyring,
        # Plain HTTP on loopback: an explicit, logged opt-in, refused when ENV=production.
        # Over HTTPS (a development certificate): the production defaults, Secure cookie.
        sessions=SessionConfig() if demo.https else SessionConfig(development=True, secure=False),
        headers=receiver,
        header_routes={"/*": pages},
        # The token endpoints serve clients without cookies (curl, apps): called that way they
        # need no CSRF token; the page's own script, which sends cookies, gets every check.
        csrf=CSRFConfig(cookieless=("/api/token/*",)),
        rate_limits=(
            Rule("pages", "600/minute"),
            Rule("auth", "30/minute", path="/login", methods={"POST"}),
            Rule("signup", "10/minute", path="/register", methods={"POST"}),
            Rule("api", "60/minute", path="/api/*"),
            Rule("reset", "5/minute", path="/reset-password", methods={"POST"}),
            # The password re-entered to delete the account: no oracle for a stolen session.
            Rule("reauth", "5/minute", path="/account/delete", methods={"POST"}),
            Rule("oidc", "30/minute", path="/auth/*"),
        ),
        throttle=LOGIN_POLICY,
        # Bursts of failed logins, credential stuffing and a new address for an account:
        # authn_login_suspicious (the guide's SUSPICIOUS_ACTIVITY) on the trail.
        login_monitor=LoginMonitorPolicy(),
        totp_issuer=ISSUER,
        # Roles and grants in the store; the document policy from a file, read once at start.
        authz=AuthzPolicy(policy=POLICY_FILE),
        # Access tokens signed with a key drawn at start (tokens end with the process, like
        # the demo's seeded passwords); an app keeps its keys in a file (docs/tokens.md).
        tokens=TokenPolicy(
            issuer="bastion-demo", keys=JWTKeySet(JWTKey.generate("EdDSA", kid="demo-1"))
        ),
        # Sign in with the local provider (--oidc-provider): back to /account afterwards.
        oidc=None
        if demo.oidc_provider is None
        else OIDCPolicy(providers=(demo.oidc_provider,), default_next="/account"),
        # Not both: with a stored trail, runtime.auditor writes to it (and to the log).
        auditor=demo.auditor if demo.audit_policy is None else None,
        audit=demo.audit_policy,
        crypto=demo.crypto_policy,
        clock=demo.clock,
        environment=environment,
    )


def _refusal_message(status: int, text: str) -> str:
    if status == 429:
        return "You are sending requests too quickly. Please slow down."
    if status == 503:
        return "A service this site depends on cannot be reached right now. Please try again."
    if status == 403:
        return f"This request was refused by bastion's CSRF protection. {text}"
    return text


def _when(value: float | None) -> str:
    """Jinja filter: a Unix time as ``YYYY-MM-DD HH:MM:SS UTC``."""
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
