"""Access tokens as FastAPI dependencies that also document themselves in OpenAPI.

::

    from typing import Annotated
    from fastapi import Depends, FastAPI
    from bastion.fastapi import BearerUser, RequireScopes
    from bastion.core.tokens.principal import Principal

    bearer = BearerUser(verifier)            # or BearerUser() behind BearerMiddleware

    @app.get("/me")
    async def me(user: Annotated[Principal, Depends(bearer)]): ...

    @app.delete("/posts/{id}")
    async def delete(user: Annotated[Principal, RequireScopes("posts:write", user=bearer)]): ...

:class:`BearerUser` is a :class:`fastapi.security.base.SecurityBase`, so every operation that
depends on it lists it in ``security`` and the document gains
``components.securitySchemes.BearerAuth = {"type": "http", "scheme": "bearer", "bearerFormat":
"JWT"}``. :func:`RequireScopes` is FastAPI's ``Security(bearer, scopes=[...])``: the scopes
appear in the operation's ``security`` entry (OpenAPI 3.1 lets a non-OAuth scheme list the
roles it needs) and are enforced: ``403 insufficient_scope`` naming them.

Where the principal comes from: when :class:`~bastion.asgi.bearer.BearerMiddleware` covered
the request, its principal is used as is (it has already refused every bad token); otherwise
the dependency verifies the request itself with the verifier given to :class:`BearerUser` (a
constructor argument: explicit and typed; no lookup in ``app.state``). With neither, the
dependency raises :class:`~bastion.errors.ConfigurationError`: a setup bug is a 500, never an
open route.

Authorization (:mod:`bastion.authz`)::

    from bastion.fastapi import require, require_owner

    @app.post("/posts", dependencies=[Depends(require("posts:write"))])
    async def create(...): ...

    async def load_post(post_id: str) -> Resource:      # the app's own row, owner included
        row = await db.get(post_id)
        return Resource(type="posts", id=row.id, owner=row.owner_id)

    @app.put("/posts/{post_id}")
    async def edit(post: Annotated[Resource, Depends(require_owner(load_post))]): ...

:func:`require` returns the request's :class:`~bastion.core.authz.subjects.Subject` when it
holds every permission; :func:`require_owner` returns what the loader loaded when the user may
do ``action`` on it (the owner comes from the loader, never from the request). The user is the
bearer principal, else the bastion session's user; the authorizer is ``authorizer=`` or the one
the stack put in ``scope["state"]["bastion.authz"]``. Refusals: ``401`` with ``{"detail":
{"error": "unauthenticated", ...}}``, ``403`` with ``{"detail": {"error": "<reason>", ...}}``
(the :class:`~bastion.core.authz.decision.AuthzReason`), ``503`` when the roles cannot be
read, each with ``Cache-Control: no-store``; ``404`` when the loader returns ``None``.

Token refusals are FastAPI's ``HTTPException``: the status (401, 400, 403; 503 with
``Retry-After`` when the verifier's store is down), ``WWW-Authenticate`` exactly as the
middleware sends it, and FastAPI's ``{"detail": "<fixed text>"}`` body, so the app's own
exception handlers apply. A WebSocket route gets a ``WebSocketException`` instead, closing the
handshake before ``accept`` (code 1008; 1013 during an outage). No token content is ever in either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from fastapi import Depends, HTTPException, Security, WebSocket, WebSocketException
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security import SecurityScopes  # noqa: TC002 (FastAPI reads the annotation at run time)
from fastapi.security.base import SecurityBase
from starlette.requests import HTTPConnection  # noqa: TC002 (FastAPI reads the annotation at run time)

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
    retry_after_value,
)
from bastion.core.authz.permission import Permission
from bastion.core.authz.subjects import Subject  # noqa: TC001 (FastAPI may read the dependencies' annotations at run time)
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

    from fastapi import params

    from bastion.authz.service import Authorizer, Verdict
    from bastion.core.audit import Auditor
    from bastion.core.client import TrustedProxies
    from bastion.core.tokens.principal import BearerVerifier

__all__ = ["BearerUser", "RequireScopes", "require", "require_owner"]


class BearerUser(SecurityBase):
    """A dependency returning the request's :class:`~bastion.core.tokens.principal.Principal`
    (401 without a valid token), documented as an HTTP bearer security scheme.

    ``verifier`` verifies requests the middleware did not cover (``None``: rely on
    :class:`~bastion.asgi.bearer.BearerMiddleware`). ``scheme_name`` names the scheme in
    ``components.securitySchemes``; ``bearer_format`` and ``description`` are documentation.
    ``challenge``, ``proxies``, ``max_header_bytes``, ``retry_after`` and ``auditor`` are as
    for the middleware.
    """

    def __init__(
        self,
        verifier: BearerVerifier | None = None,
        *,
        challenge: BearerChallenge | None = None,
        proxies: TrustedProxies | None = None,
        scheme_name: str = "BearerAuth",
        bearer_format: str | None = "JWT",
        description: str | None = None,
        max_header_bytes: int = MAX_AUTHORIZATION_BYTES,
        retry_after: int = 5,
        auditor: Auditor | None = None,
    ) -> None:
        self.model = HTTPBearerModel(bearerFormat=bearer_format, description=description)
        self.scheme_name = scheme_name
        self.verifier = verifier
        self.rules = BearerRules(
            protected=(),
            optional=(),
            challenge=challenge,
            max_header_bytes=max_header_bytes,
            auditor=auditor,
        )
        self.proxies = proxies
        self._retry_after = retry_after_value(retry_after).decode("ascii")

    async def __call__(
        self, connection: HTTPConnection, security_scopes: SecurityScopes
    ) -> Principal:
        route = Route(required=True, scopes=check_scopes(security_scopes.scopes))
        try:
            return self.rules.admit(route, await self._principal(connection, route))
        except BearerRefused as refused:
            if self.rules.auditor is not None:
                scope = connection.scope
                path = asgi_path(scope.get("path") or "/", scope.get("root_path") or "")
                client = client_address(scope, self.proxies)
                self.rules.audit(refused, path=path, client_ip=client)
            if isinstance(connection, WebSocket):  # refused before accept (the server: 403)
                raise WebSocketException(1008) from None
            status, challenge, body = self.rules.answer(refused)
            headers = {"WWW-Authenticate": challenge, **dict(self.rules.extra_headers(refused))}
            raise HTTPException(status, detail=body.detail, headers=headers) from None
        except AuditUnavailable:
            raise  # fail-closed auditing: answered 503 further out
        except StoreUnavailable:
            if isinstance(connection, WebSocket):
                raise WebSocketException(1013) from None
            raise HTTPException(
                503, detail=OUTAGE.detail.strip(), headers={"Retry-After": self._retry_after}
            ) from None

    async def _principal(self, connection: HTTPConnection, route: Route) -> Principal:
        scope = connection.scope
        found: Any = attached(scope, self.verifier)
        if found is ABSENT:
            if self.verifier is None:
                raise ConfigurationError(
                    "BearerUser() without a verifier needs bastion.asgi.bearer."
                    "BearerMiddleware covering this path; or pass the verifier: "
                    "BearerUser(verifier)",
                    setting="verifier",
                )
            found = await authenticate_scope(scope, self.verifier, self.rules, route, self.proxies)
            attach(scope, found, by=self.verifier)  # reused by a dependency with this verifier
        if not isinstance(found, Principal):
            raise BearerRefused(TokenReason.MISSING, scopes=route.scopes)
        return found

    def __repr__(self) -> str:
        return f"BearerUser(scheme_name={self.scheme_name!r}, verifier={self.verifier!r})"


_DEFAULT: Final = BearerUser()


def RequireScopes(*scopes: str, user: BearerUser | None = None) -> params.Security:  # noqa: N802 (used like a class, as FastAPI's own Security)
    """``Security(user, scopes=[...])``: the principal, refused with ``403
    insufficient_scope`` unless its token grants every one of ``scopes``; listed in the
    operation's OpenAPI ``security``. ``user`` is the :class:`BearerUser` to use (default: one
    without a verifier, behind :class:`~bastion.asgi.bearer.BearerMiddleware`). The scopes are
    checked now (RFC 6749 scope-tokens)."""
    found: params.Security = Security(user or _DEFAULT, scopes=list(check_scopes(scopes)))
    return found


def _authz_refusal(status: int, error: str, detail: str) -> HTTPException:
    return HTTPException(
        status,
        detail={"error": error, "detail": detail.strip()},
        headers={"Cache-Control": "no-store"},
    )


async def _verdict(
    connection: HTTPConnection,
    authorizer: Authorizer | None,
    permissions: tuple[str, ...],
    resource: object,
    setting: str,
) -> Verdict:
    scope = connection.scope
    found = authorizer or authorizer_of(scope, None, setting=setting)
    client = scope.get("client")  # what connection.client reads, without building an Address
    try:
        verdict = await found.gate(
            request_user(scope),
            permissions,
            resource=resource,
            context={"method": scope.get("method") or "GET", "path": scope.get("path") or "/"},
            subject=request_subject(scope),
            client_ip=str(client[0]) if client else None,
        )
    except AuditUnavailable:
        raise  # fail-closed auditing: answered 503 further out
    except StoreUnavailable:
        status, body, _ = store_verdict()
        raise HTTPException(
            status,
            detail={"error": body.error, "detail": body.detail.strip()},
            headers={"Retry-After": "5", "Cache-Control": "no-store"},
        ) from None
    if verdict.refusal is not None:
        raise _authz_refusal(verdict.status, verdict.refusal.error, verdict.refusal.detail)
    remember(scope, verdict)
    return verdict


def require(
    *permissions: str, authorizer: Authorizer | None = None
) -> Callable[[HTTPConnection], Awaitable[Subject]]:
    """A dependency: the request's subject, refused (401/403) unless it holds every one of
    ``permissions`` (checked now: a malformed permission fails at import)."""
    wanted = tuple(str(Permission.parse(p, setting="require")) for p in permissions)
    if not wanted:
        raise ConfigurationError("require() needs at least one permission", setting="require")

    async def dependency(connection: HTTPConnection) -> Subject:
        scope = connection.scope
        found = authorizer or authorizer_of(scope, None, setting="require")
        try:  # a repeat check on a memory store: no store await, nothing to audit
            kept = found.kept(request_user(scope), wanted)
        except AuditUnavailable:
            raise  # fail-closed auditing: answered 503 further out
        except StoreUnavailable:
            kept = None  # gate() reads again and answers the outage
        if kept is not None and kept.subject is not None:
            remember(scope, kept)
            return kept.subject
        subject = (await _verdict(connection, found, wanted, None, "require")).subject
        if subject is None:  # a passing verdict always has its subject
            raise _authz_refusal(401, "unauthenticated", "Unauthorized: please sign in.")
        return subject

    return dependency


def require_owner(
    loader: Callable[..., Any],
    *,
    action: str = "write",
    authorizer: Authorizer | None = None,
) -> Callable[..., Awaitable[Any]]:
    """A dependency: what ``loader`` (itself a FastAPI dependency: it gets the path
    parameters) loaded, refused (401/403) unless the user may ``action`` on it (a bare action
    means ``<resource type>:<action>``; ownership comes from the loaded resource). ``None``
    from the loader is a 404."""
    if not isinstance(action, str) or not action:
        raise ConfigurationError("require_owner(action=...) must be an action", setting="action")

    async def dependency(connection: HTTPConnection, loaded: Any = Depends(loader)) -> Any:  # noqa: B008 (FastAPI's idiom: the loader is a dependency)
        if loaded is None:
            raise HTTPException(404)
        # The check reads the guide's dict itself: a malformed row is a 403, never a 500.
        await _verdict(connection, authorizer, (action,), loaded, "require_owner")
        return loaded

    return dependency
