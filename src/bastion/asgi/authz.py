"""``AuthzMiddleware``: the route table of :mod:`bastion.core.authz.routes` on an ASGI app.

::

    app = AuthzMiddleware(app, authorizer)        # runtime.authz, or an Authorizer you built

Every HTTP request and WebSocket handshake is decided by the authorizer's route table before
the app sees it: ``400 authz_bad_path`` (a path not in normal form), ``400
authz_method_override``, ``403 no_route_rule`` (no rule covers it: the table fails closed),
``401 unauthenticated`` (a protective rule and nobody signed in), ``403 <reason>`` (the
:class:`~bastion.core.authz.decision.AuthzReason` of the first denied permission), ``503
authz_store_unavailable`` with ``Retry-After`` when the roles cannot be read. Refusals are
JSON or text by :mod:`bastion.core.refusal` and carry ``Cache-Control: no-store``; a
WebSocket handshake gets the same response where the server offers the denial extension, else
a close (1008; 1013 for the outage).

Who is signed in (:func:`request_user`): the bearer principal
(``scope["state"]["bastion.principal"]``, put there by
:class:`~bastion.asgi.bearer.BearerMiddleware`, with its ``pv`` claim) first, else the bastion
session (``scope["session"].user_id``, with ``session["_authz_v"]``). So this middleware sits
inside the bearer and session middlewares.

The middleware puts the authorizer in ``scope["state"]["bastion.authz"]`` and the loaded subject
beside it (``"bastion.authz.subject"``), where the FastAPI dependencies and the Starlette
decorator find them.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from bastion.asgi._http import WS_RESPONSE_EXTENSION, send_refusal
from bastion.authz.service import (
    AUTHZ_KEY,
    SESSION_VERSION_KEY,
    STORE_UNAVAILABLE,
    SUBJECT_KEY,
    RequestUser,
)
from bastion.core.authz.routes import FORM_METHOD_FIELD, FORM_SCAN_BYTES, RouteKind
from bastion.core.csrf.forms import FormTokenScanner, ScanStatus
from bastion.core.refusal import refusal_body
from bastion.core.request import OVERRIDE_HEADERS, asgi_path
from bastion.core.tokens.principal import Principal
from bastion.engine.sessions import Session
from bastion.errors import AuditUnavailable, ConfigurationError, StoreUnavailable

if TYPE_CHECKING:
    from bastion.asgi.types import ASGIApp, Message, Receive, Scope, Send
    from bastion.authz.service import Authorizer, Verdict
    from bastion.core.authz.subjects import Subject
    from bastion.core.client import TrustedProxies
    from bastion.core.refusal import Refusal

__all__ = [
    "AuthzMiddleware",
    "ShareAuthorizer",
    "authorizer_of",
    "carried_version",
    "form_override",
    "refuse",
    "request_subject",
    "request_user",
    "store_verdict",
]

PRINCIPAL_KEY: Final = "bastion.principal"
RETRY_AFTER: Final = b"5"
_OVERRIDES: Final = tuple(name.encode("ascii") for name in OVERRIDE_HEADERS)


def carried_version(value: object) -> int | None:
    """A carried permission version as the store reads it (a whole number >= 0), or
    ``None``: a missing or malformed one is no version, and the roles are read anyway."""
    return value if type(value) is int and value >= 0 else None


def request_user(scope: Scope) -> RequestUser | None:
    """Who is signed in on this request (see the module docstring), or ``None``."""
    state = scope.get("state")
    if type(state) is dict or isinstance(state, Mapping):  # a dict first: no ABC check
        found = state.get(PRINCIPAL_KEY)
        if type(found) is Principal or isinstance(found, Principal):
            return RequestUser(found.subject, carried_version(found.claims.get("pv")))
    session = scope.get("session")
    if isinstance(session, Session):
        user_id = session.user_id
        if user_id is not None:
            return RequestUser(user_id, carried_version(session.get(SESSION_VERSION_KEY)))
    return None


def _state(scope: Scope) -> MutableMapping[str, Any]:
    state = scope.get("state")
    if type(state) is dict:  # what servers put there: no ABC check on every request
        return state
    if not isinstance(state, MutableMapping):
        state = scope["state"] = {}
    return state


def authorizer_of(scope: Scope, given: Authorizer | None, *, setting: str) -> Authorizer:
    """``given``, else the authorizer the stack put in the scope; none is a
    :class:`~bastion.errors.ConfigurationError` (a 500, never an unchecked route)."""
    if given is not None:
        return given
    state = scope.get("state")
    found = state.get(AUTHZ_KEY) if isinstance(state, Mapping) else None
    if found is None:
        raise ConfigurationError(
            f"{setting} found no authorizer: pass authorizer=..., or put AuthzMiddleware (or "
            "Bastion(authz=...)'s stack) around the app",
            setting=setting,
        )
    return found  # type: ignore[no-any-return]  # put there by AuthzMiddleware or the stack


def request_subject(scope: Scope) -> Subject | None:
    """The subject already loaded for this request, if any."""
    state = scope.get("state")
    return state.get(SUBJECT_KEY) if isinstance(state, Mapping) else None


def remember(scope: Scope, verdict: Verdict) -> None:
    """Keep the verdict's subject for later checks of the same request."""
    if verdict.subject is not None:
        _state(scope)[SUBJECT_KEY] = verdict.subject


def store_verdict() -> tuple[int, Refusal, list[tuple[bytes, bytes]]]:
    """The outage answer: 503, its body, ``Retry-After``."""
    return 503, STORE_UNAVAILABLE, [(b"retry-after", RETRY_AFTER)]


async def refuse_outage(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer the outage (503 with ``Retry-After``)."""
    status, refusal, extra = store_verdict()
    await refuse(scope, receive, send, status, refusal, extra=extra)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


async def refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    refusal: Refusal,
    *,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answer ``refusal`` through the adapters' one refusal sender."""
    content_type, body = refusal_body(
        refusal,
        accept=_header(scope, b"accept"),
        content_type=_header(scope, b"content-type"),
    )
    headers = [(b"cache-control", b"no-store"), *(extra or ())]
    if scope["type"] == "websocket":
        message = await receive()
        if message.get("type") != "websocket.connect":
            return  # the client has gone
        if WS_RESPONSE_EXTENSION not in (scope.get("extensions") or {}):
            code = 1013 if status == 503 else 1008
            await send({"type": "websocket.close", "code": code, "reason": ""})
            return
        await send_refusal(send, status, content_type, body, headers, websocket=True)
        return
    await send_refusal(send, status, content_type, body, headers)


async def form_override(scope: Scope, receive: Receive) -> tuple[str | None, Receive] | None:
    """The ``_method`` field of a urlencoded or multipart body (the method an app's override
    middleware would read from a form), and the ``receive`` to give the app: it replays what
    was read, byte for byte. ``(None, receive)`` for a body of another type (nothing read),
    one without the field, or one whose first :data:`FORM_SCAN_BYTES` hold none; ``None``
    when the client went away mid-body."""
    scanner = FormTokenScanner.for_content_type(
        _header(scope, b"content-type"), field=FORM_METHOD_FIELD, max_bytes=FORM_SCAN_BYTES
    )
    if not isinstance(scanner, FormTokenScanner):
        return None, receive  # not a form, or a multipart the app's parser will refuse
    chunks: list[bytes] = []
    more = True
    status = ScanStatus.MORE
    while status is ScanStatus.MORE:
        message = await receive()
        if message["type"] != "http.request":
            return None
        body = message.get("body", b"")
        more = bool(message.get("more_body", False))
        chunks.append(body)
        status = scanner.feed(body, more=more)
    pending = [b"".join(chunks)]

    async def replay() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": more}
        return await receive()

    found = scanner.token if status is ScanStatus.FOUND else None
    return (None if found is None else found.decode("utf-8", "replace")), replay


def client_of(scope: Scope, proxies: TrustedProxies | None) -> str | None:
    """The client's address for an audit event (through the trusted proxies)."""
    client = scope.get("client")
    peer = str(client[0]) if client else None
    if proxies is None or not proxies.trusts_any:
        return peer
    wanted = proxies.header.lower().encode("ascii")
    values = [v.decode("latin-1") for n, v in scope.get("headers") or () if n.lower() == wanted]
    address = proxies.client(peer, values)
    return None if address is None else str(address)


class AuthzMiddleware:
    """The route table of ``authorizer`` (its ``AuthzPolicy.routes``) on one ASGI app (see
    the module docstring). ``proxies`` says whose forwarding header gives the client address
    in audit events."""

    __slots__ = ("_app", "_proxies", "authorizer")

    def __init__(
        self, app: ASGIApp, authorizer: Authorizer, *, proxies: TrustedProxies | None = None
    ) -> None:
        self._app = app
        self.authorizer = authorizer
        self._proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in {"http", "websocket"}:
            await self._app(scope, receive, send)
            return
        authorizer = self.authorizer
        _state(scope)[AUTHZ_KEY] = authorizer
        path = asgi_path(scope.get("path") or "/", scope.get("root_path") or "")
        raw = scope.get("raw_path")
        method = (scope.get("method") or "GET") if kind == "http" else "GET"
        overrides = [_header(scope, name) for name in _OVERRIDES]
        if kind == "http":
            read = await form_override(scope, receive)
            if read is None:
                return  # the client went away in the middle of its body
            form_method, receive = read
            overrides.append(form_method)
        outcome = authorizer.routes.decide(
            method,
            path,
            raw_path=raw.decode("latin-1") if isinstance(raw, bytes) else None,
            override_headers=overrides,
            query=(scope.get("query_string") or b"").decode("latin-1"),
        )
        if outcome.kind is RouteKind.PUBLIC:
            await self._app(scope, receive, send)
            return
        client = client_of(scope, self._proxies)
        if outcome.refusal is not None:  # audited with the bearer user only: no session read
            found = _state(scope).get(PRINCIPAL_KEY)
            user = RequestUser(found.subject) if isinstance(found, Principal) else None
            authorizer.audit_route(outcome, method=method, path=path, user=user, client_ip=client)
            await refuse(scope, receive, send, outcome.status, outcome.refusal)
            return
        try:
            verdict = await authorizer.gate(
                request_user(scope),
                outcome.permissions,
                context={"method": method, "path": path},
                client_ip=client,
            )
        except AuditUnavailable:
            raise  # fail-closed auditing: answered 503 further out
        except StoreUnavailable:
            await refuse_outage(scope, receive, send)
            return
        if verdict.refusal is not None:
            await refuse(scope, receive, send, verdict.status, verdict.refusal)
            return
        remember(scope, verdict)
        await self._app(scope, receive, send)

    def __repr__(self) -> str:
        return f"AuthzMiddleware(authorizer={self.authorizer!r})"


class ShareAuthorizer:
    """Hands ``authorizer`` to the dependencies and decorators of one app
    (``scope["state"]["bastion.authz"]``) and enforces nothing itself: what ``protect()``
    adds for ``Bastion(authz=...)`` without a route table."""

    __slots__ = ("_app", "authorizer")

    def __init__(self, app: ASGIApp, authorizer: Authorizer) -> None:
        self._app = app
        self.authorizer = authorizer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in {"http", "websocket"}:
            _state(scope)[AUTHZ_KEY] = self.authorizer
        await self._app(scope, receive, send)

    def __repr__(self) -> str:
        return f"ShareAuthorizer(authorizer={self.authorizer!r})"
