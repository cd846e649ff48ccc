"""Access tokens in Starlette, Litestar and Quart handlers.

The route-level protection is :class:`bastion.asgi.bearer.BearerMiddleware` (fail closed on
path patterns, scope rules per pattern); it works under every ASGI framework. In a handler:

* :func:`principal` (any framework): the :class:`~bastion.core.tokens.principal.Principal`
  the middleware attached, from a Starlette ``Request``/``WebSocket``, a Litestar ``Request``,
  ``quart.request``/``quart.websocket`` or a bare scope; ``None`` on an optional path without a
  token; :class:`~bastion.errors.ConfigurationError` when no middleware covered the request
  (a missing middleware never reads as an anonymous request).
* :func:`requires_token` (Starlette endpoints): a decorator that runs the endpoint only with a
  valid token granting the listed scopes, answering otherwise with the middleware's exact
  refusal (status, ``WWW-Authenticate``, JSON or text body; ``503`` with ``Retry-After`` in an
  outage; a WebSocket refused before ``accept``, by a denial response where the server offers
  one, else a close with code 1008). It reuses the middleware's principal when there is one and
  otherwise verifies with its own ``verifier=``.

Litestar and Quart handlers do not return Starlette responses, so there the scope checks belong
in the middleware: ``BearerMiddleware(app, verifier, scopes={"/api/admin/*": ("admin",)})``.

Authorization: :func:`requires_permission` decorates a Starlette endpoint, a Litestar handler
(taking its ``request``) or a Quart view (reading ``quart.request``) so it runs only for a
signed-in user holding every listed permission (:mod:`bastion.authz`); otherwise it answers the
framework's own response: ``401 unauthenticated``, ``403 <reason>``, ``503
authz_store_unavailable``, bodies by :mod:`bastion.core.refusal`. The user is the bearer
principal, else the bastion session's user, read from the ASGI scope; the authorizer is
``authorizer=`` or the one in ``scope["state"]["bastion.authz"]``. Route-wide checks belong in
:class:`bastion.asgi.authz.AuthzMiddleware`, which is plain ASGI and works under every framework.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, ParamSpec

from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.websockets import WebSocket

from bastion.asgi.authz import (
    authorizer_of,
    remember,
    request_subject,
    request_user,
    store_verdict,
)
from bastion.asgi.bearer import (
    ABSENT,
    attach,
    attached,
    authenticate_scope,
    client_address,
    principal,
    retry_after_value,
)
from bastion.core.authz.permission import Permission
from bastion.core.refusal import refusal_body
from bastion.core.request import asgi_path
from bastion.core.tokens.bearer import (
    MAX_AUTHORIZATION_BYTES,
    OUTAGE,
    BearerChallenge,
    BearerRefused,
    BearerRules,
    Route,
    check_scopes,
)
from bastion.core.tokens.principal import Principal
from bastion.core.tokens.reasons import TokenReason
from bastion.errors import AuditUnavailable, ConfigurationError, StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from bastion.authz.service import Authorizer
    from bastion.core.audit import Auditor
    from bastion.core.client import TrustedProxies
    from bastion.core.refusal import Refusal
    from bastion.core.tokens.principal import BearerVerifier

__all__ = ["principal", "requires_permission", "requires_token"]

P = ParamSpec("P")

_WS_EXTENSION: Final = "websocket.http.response"


def requires_token(
    *scopes: str,
    verifier: BearerVerifier | None = None,
    challenge: BearerChallenge | None = None,
    proxies: TrustedProxies | None = None,
    max_header_bytes: int = MAX_AUTHORIZATION_BYTES,
    retry_after: int = 5,
    auditor: Auditor | None = None,
) -> Callable[[Callable[P, Awaitable[Any]]], Callable[P, Awaitable[Any]]]:
    """Decorate a Starlette endpoint (``async def endpoint(request)``, a WebSocket endpoint,
    or an ``HTTPEndpoint`` method) so it runs only with a valid token granting ``scopes``.

    ``auditor`` receives the events of :class:`~bastion.core.tokens.bearer.BearerRules`.
    ``verifier=None`` relies on :class:`~bastion.asgi.bearer.BearerMiddleware` covering the
    endpoint's path; without either the call raises
    :class:`~bastion.errors.ConfigurationError`. The scopes are checked now.
    """
    route = Route(required=True, scopes=check_scopes(scopes))
    rules = BearerRules(
        protected=(),
        optional=(),
        challenge=challenge,
        max_header_bytes=max_header_bytes,
        auditor=auditor,
    )
    outage_after = retry_after_value(retry_after).decode("ascii")

    def decorate(endpoint: Callable[P, Awaitable[Any]]) -> Callable[P, Awaitable[Any]]:
        @functools.wraps(endpoint)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
            connection = _connection(args, kwargs)
            try:
                found = await _principal_for(connection, verifier, rules, route, proxies)
                rules.admit(route, found)
            except BearerRefused as refused:
                if auditor is not None:
                    scope = connection.scope
                    path = asgi_path(scope.get("path") or "/", scope.get("root_path") or "")
                    client = client_address(scope, proxies)
                    rules.audit(refused, path=path, client_ip=client)
                status, header, body = rules.answer(refused)
                headers = {"WWW-Authenticate": header, **dict(rules.extra_headers(refused))}
                return await _refuse(connection, status, body, headers)
            except AuditUnavailable:
                raise  # fail-closed auditing: answered 503 further out
            except StoreUnavailable:
                return await _refuse(connection, 503, OUTAGE, {"Retry-After": outage_after})
            return await endpoint(*args, **kwargs)

        return guarded

    return decorate


def _connection(args: tuple[Any, ...], kwargs: dict[str, Any]) -> HTTPConnection:
    for value in (*args, *kwargs.values()):
        if isinstance(value, HTTPConnection):
            return value
    raise ConfigurationError(
        "requires_token decorates a Starlette endpoint taking the request (or websocket)",
        setting="requires_token",
    )


async def _principal_for(
    connection: HTTPConnection,
    verifier: BearerVerifier | None,
    rules: BearerRules,
    route: Route,
    proxies: TrustedProxies | None,
) -> Principal:
    scope = connection.scope
    found: Any = attached(scope, verifier)
    if found is ABSENT:
        if verifier is None:
            raise ConfigurationError(
                "requires_token() without a verifier needs bastion.asgi.bearer.BearerMiddleware "
                "covering this path; or pass requires_token(..., verifier=verifier)",
                setting="verifier",
            )
        found = await authenticate_scope(scope, verifier, rules, route, proxies)
        attach(scope, found, by=verifier)
    if not isinstance(found, Principal):
        raise BearerRefused(TokenReason.MISSING, scopes=route.scopes)
    return found


async def _refuse(
    connection: HTTPConnection, status: int, body_of: Refusal, headers: dict[str, str]
) -> Response | None:
    content_type, body = refusal_body(
        body_of,
        accept=connection.headers.get("accept"),
        content_type=connection.headers.get("content-type"),
    )
    response = Response(
        body,
        status_code=status,
        headers={**headers, "Cache-Control": "no-store"},
        media_type=content_type.decode("ascii"),
    )
    if not isinstance(connection, WebSocket):
        return response
    if _WS_EXTENSION in (connection.scope.get("extensions") or {}):
        await connection.send_denial_response(response)
    else:
        await connection.close(code=1013 if status == 503 else 1008)
    return None


def requires_permission(
    *permissions: str, authorizer: Authorizer | None = None
) -> Callable[[Callable[P, Awaitable[Any]]], Callable[P, Awaitable[Any]]]:
    """Decorate an async endpoint so it runs only for a user holding every one of
    ``permissions`` (see the module docstring; checked now)."""
    wanted = tuple(str(Permission.parse(p, setting="requires_permission")) for p in permissions)
    if not wanted:
        raise ConfigurationError(
            "requires_permission() needs at least one permission", setting="requires_permission"
        )

    def decorate(endpoint: Callable[P, Awaitable[Any]]) -> Callable[P, Awaitable[Any]]:
        @functools.wraps(endpoint)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
            connection = _scoped(args, kwargs)
            scope = connection.scope
            found = authorizer_of(scope, authorizer, setting="requires_permission")
            client = scope.get("client")
            try:
                verdict = await found.gate(
                    request_user(scope),
                    wanted,
                    context={"method": scope.get("method") or "GET", "path": scope.get("path")},
                    subject=request_subject(scope),
                    client_ip=str(client[0]) if client else None,
                )
            except AuditUnavailable:
                raise  # fail-closed auditing: answered 503 further out
            except StoreUnavailable:
                status, body_of, _ = store_verdict()
                return await _framework_refusal(connection, status, body_of, {"Retry-After": "5"})
            if verdict.refusal is not None:
                return await _framework_refusal(connection, verdict.status, verdict.refusal, {})
            remember(scope, verdict)
            return await endpoint(*args, **kwargs)

        return guarded

    return decorate


def _scoped(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The request: an argument with an ASGI ``scope`` (Starlette, Litestar), else
    ``quart.request`` inside a Quart request."""
    for value in (*args, *kwargs.values()):
        if isinstance(getattr(value, "scope", None), Mapping):
            return value
    quart = sys.modules.get("quart")
    if quart is not None and quart.has_request_context():
        return quart.request
    raise ConfigurationError(
        "requires_permission decorates a Starlette endpoint or a Litestar handler taking the "
        "request, or a Quart view",
        setting="requires_permission",
    )


async def _framework_refusal(
    connection: Any,
    status: int,
    body_of: Refusal,
    headers: dict[str, str],
) -> Any:
    """The refusal as the framework's own response."""
    if isinstance(connection, HTTPConnection):
        return await _refuse(connection, status, body_of, headers)
    content_type, body = refusal_body(
        body_of,
        accept=connection.headers.get("accept"),
        content_type=connection.headers.get("content-type"),
    )
    headers = {**headers, "Cache-Control": "no-store"}
    media = content_type.decode("ascii")
    if type(connection).__module__.startswith("litestar"):
        from litestar import Response as LitestarResponse  # noqa: PLC0415 (only under Litestar)

        return LitestarResponse(body, status_code=status, headers=headers, media_type=media)
    return body, status, {**headers, "Content-Type": media}  # Quart's (body, status, headers)
