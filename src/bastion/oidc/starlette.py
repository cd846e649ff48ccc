"""The sign-in routes for Starlette and FastAPI: ``/auth/{provider}/login``, ``/callback`` and
``/logout``.

::

    from bastion.oidc.starlette import oidc_router

    def on_identity(identity):                      # the app's account hook
        user = users.by_subject(identity.issuer, identity.subject)
        return None if user is None else user.id    # None: 403, nobody is logged in

    app = Starlette(routes=[..., Mount("/auth", oidc_router(oidc, on_identity=on_identity))])
    app = bastion.asgi.protect(app, config)          # bastion sessions in front

    # FastAPI: app.mount("/auth", oidc_router(oidc, on_identity=on_identity))

``GET /auth/{provider}/login?next=/account`` stores the login state (bound to the browser's
session: a visitor without one gets an anonymous pre-session cookie) and answers ``302`` to
the provider. ``GET /auth/{provider}/callback`` checks everything, asks ``on_identity`` (a
function or a coroutine function of the :class:`~bastion.oidc.service.Identity`) for the
app's user id, calls ``session.login(user_id)`` and answers ``303`` to the checked ``next``.
Every refusal is a page (or JSON for a program, :mod:`bastion.core.refusal`) with the
reason's status: 400 for what the browser brought, 403 for an unverified e-mail or no
account, 404 for an unknown provider, 429 (with ``Retry-After``) for a client address that
started too many logins (``OIDCPolicy.max_pending_per_client``), 502 for a provider's garbage,
503 when the provider or the store is down; never a 500. Each is audited as ``authn_login_fail``.

With ``OIDCPolicy(login="tokens")`` the callback logs no session in: it answers ``200`` with
bastion's access (and refresh) token as JSON (``Cache-Control: no-store``).

``POST /auth/{provider}/logout`` (RP-initiated logout) ends the bastion session, then answers
``303`` to the provider's ``end_session_endpoint`` (with ``client_id``, the session's ID token
as ``id_token_hint`` when the service has field encryption, and the provider's
``post_logout_redirect_uri``), or to that URI (else ``/``)
when the provider has none. A POST, so bastion's CSRF check guards it: a page elsewhere cannot
sign the user out. A provider that cannot be reached then is a 503 page (the session has ended).

The routes need bastion's session middleware in front (``bastion.asgi.protect`` with
``Bastion(store=...)``, or ``SessionMiddleware``).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, cast

from starlette.responses import Response
from starlette.routing import Route, Router

from bastion.core.oidc.reasons import OIDCReason, OIDCRejected
from bastion.core.refusal import refusal_body
from bastion.engine.sessions import Session
from bastion.errors import ConfigurationError, StoreUnavailable
from bastion.oidc.policy import OIDCLogin
from bastion.oidc.refusals import (
    BAD_HOST,
    LOGIN_STORE_UNAVAILABLE,
    NO_ACCOUNT,
    UNKNOWN_PROVIDER,
    refusal_for,
)
from bastion.oidc.service import usable_callback

if TYPE_CHECKING:
    from starlette.requests import Request

    from bastion.oidc.service import OIDC, Identity

__all__ = ["AccountHook", "oidc_router", "oidc_routes"]

AccountHook = Callable[["Identity"], "str | int | Awaitable[str | int | None] | None"]
"""The app's account hook: the signed-in :class:`Identity` to the app's user id, or ``None``
to refuse the login (403). It may raise :class:`OIDCRejected` (for instance from
``oidc.linkable_email(identity)``)."""

_NO_STORE: Final = {"cache-control": "no-store"}
_TOKENS_HEADERS: Final = {"cache-control": "no-store", "pragma": "no-cache"}


def oidc_routes(oidc: OIDC, *, on_identity: AccountHook) -> list[Route]:
    """The routes, relative to where they are mounted (``/{provider}/login``,
    ``/{provider}/callback``, ``/{provider}/logout``)."""
    if not callable(on_identity):
        raise ConfigurationError(
            "on_identity must be a function of the Identity returning the user id",
            setting="on_identity",
        )
    handlers = _Handlers(oidc, on_identity)
    return [
        Route("/{provider}/login", handlers.login, methods=["GET"], name="oidc_login"),
        Route("/{provider}/callback", handlers.callback, methods=["GET"], name="oidc_callback"),
        Route("/{provider}/logout", handlers.logout, methods=["POST"], name="oidc_logout"),
    ]


def oidc_router(oidc: OIDC, *, on_identity: AccountHook) -> Router:
    """:func:`oidc_routes` as a ``Router`` to mount (``Mount("/auth", oidc_router(...))``)."""
    return Router(routes=oidc_routes(oidc, on_identity=on_identity))


def _awaited(hook: AccountHook) -> Callable[[Identity], Awaitable[str | int | None]]:
    """``hook`` as a coroutine function, decided once when the routes are built: a coroutine
    function (or an object whose ``__call__`` is one) as it is, anything else wrapped."""
    method = getattr(hook, "__call__", None)  # noqa: B004 (the method itself, to inspect it)
    if inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(method):
        return cast("Callable[[Identity], Awaitable[str | int | None]]", hook)
    plain = cast("Callable[[Identity], str | int | None]", hook)

    async def call(identity: Identity) -> str | int | None:
        return plain(identity)

    return call


class _Handlers:
    __slots__ = ("hook", "oidc")

    def __init__(self, oidc: OIDC, hook: AccountHook) -> None:
        self.oidc = oidc
        self.hook = _awaited(hook)

    def _unknown(self, request: Request, name: str) -> Response:
        """404 for a provider the policy does not have, audited (someone probing the routes);
        the session is only read for the client address, not loaded from the store."""
        session = request.scope.get("session")
        self.oidc.audit_refusal(
            session if isinstance(session, Session) else None, name, UNKNOWN_PROVIDER
        )
        return _refuse(request, UNKNOWN_PROVIDER)

    async def login(self, request: Request) -> Response:
        name = request.path_params["provider"]
        provider = self.oidc.provider(name)
        if provider is None:
            return self._unknown(request, name)
        session = await _session(request)
        nexts = request.query_params.getlist("next")
        if len(nexts) > 1:
            self.oidc.audit_refusal(session, name, OIDCReason.NEXT_REFUSED, "repeated")
            return _refuse(request, OIDCReason.NEXT_REFUSED)
        callback = provider.redirect_uri or usable_callback(_callback_url(request))
        if callback is None:
            self.oidc.audit_refusal(session, name, BAD_HOST)
            return _refuse(request, BAD_HOST)
        try:
            url = await self.oidc.begin(
                name, session, redirect_uri=callback, next=nexts[0] if nexts else None
            )
        except OIDCRejected as error:
            return _refuse(request, error.reason, retry_after=error.retry_after)
        except StoreUnavailable:
            self.oidc.audit_refusal(session, name, LOGIN_STORE_UNAVAILABLE)
            return _refuse(request, LOGIN_STORE_UNAVAILABLE)
        return Response(status_code=302, headers={"location": url, **_NO_STORE})

    async def callback(self, request: Request) -> Response:  # noqa: PLR0911 (one per refusal)
        name = request.path_params["provider"]
        if self.oidc.provider(name) is None:
            return self._unknown(request, name)
        session = await _session(request)
        params: dict[str, str] = {}
        for key, value in request.query_params.multi_items():
            if key in params:
                # Two states or two codes: a polluted callback, never one to pick from.
                self.oidc.audit_refusal(session, name, OIDCReason.STATE_UNKNOWN, "repeated")
                return _refuse(request, OIDCReason.STATE_UNKNOWN)
            params[key] = value
        try:
            done = await self.oidc.complete(name, session, params)
        except OIDCRejected as error:
            return _refuse(request, error.reason)
        except StoreUnavailable:
            self.oidc.audit_refusal(session, name, LOGIN_STORE_UNAVAILABLE)
            return _refuse(request, LOGIN_STORE_UNAVAILABLE)
        try:
            user_id = await self.hook(done.identity)
        except OIDCRejected as error:
            self.oidc.audit_refusal(session, name, error.reason, error.detail)
            return _refuse(request, error.reason)
        if user_id is None:
            self.oidc.audit_refusal(session, name, NO_ACCOUNT)
            return _refuse(request, NO_ACCOUNT)
        if self.oidc.policy.login is OIDCLogin.TOKENS:
            try:
                tokens = await self.oidc.issue_tokens(done.identity, user_id)
            except StoreUnavailable:
                self.oidc.audit_refusal(session, name, LOGIN_STORE_UNAVAILABLE)
                return _refuse(request, LOGIN_STORE_UNAVAILABLE)
            return Response(
                tokens.to_json(), headers=_TOKENS_HEADERS, media_type="application/json"
            )
        self.oidc.logged_in(session, done.identity, user_id, id_token=done.id_token)
        return Response(status_code=303, headers={"location": done.next, **_NO_STORE})

    async def logout(self, request: Request) -> Response:
        name = request.path_params["provider"]
        if self.oidc.provider(name) is None:
            return self._unknown(request, name)
        session = await _session(request)
        try:
            url = await self.oidc.logout(name, session)
        except OIDCRejected as error:
            return _refuse(request, error.reason)
        return Response(status_code=303, headers={"location": url, **_NO_STORE})


async def _session(request: Request) -> Session:
    """The request's bastion session, loaded with an awaited read."""
    session = request.scope.get("session")
    if not isinstance(session, Session):
        raise ConfigurationError(
            "the OpenID Connect routes need bastion's sessions in front: "
            "bastion.asgi.protect(app, Bastion(store=...)) or SessionMiddleware",
            setting="middleware",
        )
    await session.engine.load(session)
    return session


def _callback_url(request: Request) -> str:
    """The callback route's absolute URL, from the login route's own (same mount, same
    provider): ``.../login`` becomes ``.../callback``, without the query."""
    url = request.url
    path = url.path.removesuffix("/login") + "/callback"
    return str(url.replace(path=path, query="", fragment=""))


def _refuse(
    request: Request, reason: OIDCReason | str, *, retry_after: int | None = None
) -> Response:
    """The refusal page of ``reason``; a 503 asks for a retry in 5 s, a 429 (a spent login
    budget) when ``retry_after`` says."""
    status, refusal = refusal_for(reason)
    content_type, body = refusal_body(
        refusal,
        accept=request.headers.get("accept"),
        content_type=request.headers.get("content-type"),
    )
    headers = dict(_NO_STORE)
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    elif status == 503:
        headers["retry-after"] = "5"
    return Response(body, status_code=status, headers=headers, media_type=content_type.decode())
