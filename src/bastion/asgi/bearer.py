"""``BearerMiddleware``: access tokens on ASGI routes, failing closed where they are required.

Each request's path is matched (:meth:`~bastion.core.paths.PathPattern.covers`, every reading
of the path) against three sets of patterns:

* ``protected`` (default ``"/*"``, everything): a request needs a valid access token. Without
  one the app is not called: ``401`` with ``WWW-Authenticate: Bearer realm="..."`` and no
  error code; a malformed ``Authorization`` header (two tokens, another scheme, characters
  outside token68, over the 8 KiB cap checked before any parsing, two ``Authorization``
  headers) is ``400 invalid_request``; a token the verifier refuses is ``401 invalid_token``
  (``invalid_dpop_proof`` for a bad proof).
* ``scopes`` (``{"/api/admin/*": ("admin",)}``): protected too, and the token must also grant
  every listed scope, else ``403 insufficient_scope`` with ``scope="..."`` in the challenge.
* ``optional`` (default ``"/*"``; only paths that are not protected): a valid token is
  attached, a request without one passes with no principal. A Bearer or DPoP token that is
  **invalid is refused** there too, exactly as on a protected path. Ignoring it would turn an
  expired, revoked or forged token into an anonymous request without a word: the client never
  learns its token is dead, a replayed revoked token leaves no refusal behind, and a route
  that shows more to signed-in users silently shows less, which is how a broken token hides.
  A header of another scheme (``Basic``, an API key scheme) is not ours on an optional path
  and is left to the app.

Paths in none of the three are not touched. The verified
:class:`~bastion.core.tokens.principal.Principal` is put in ``scope["state"]["bastion.principal"]``
(``None`` on an optional path without a token), which :func:`principal` and the FastAPI and
Starlette helpers read (``request.state`` in Starlette shows the same dict).

The verifier (a :class:`~bastion.core.tokens.principal.BearerVerifier`) does the token work.
Its :class:`~bastion.core.tokens.reasons.TokenRejected` is always a 4xx, never a 500; its
:class:`~bastion.errors.StoreUnavailable` is a ``503`` with ``Retry-After``, never a 401 (a
client must not throw a good token away because the store is down); any other exception is a
bug and propagates. Refusal bodies come from :mod:`bastion.core.refusal` (JSON for programs,
text for people) and, like the headers, never contain the token.

WebSocket handshakes are checked the same way before ``accept``: the same refusal as an HTTP
response where the server offers the ASGI ``websocket.http.response`` extension, else a close
with code ``1008`` (``1013`` for the outage), which the server answers with a 403.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from bastion.asgi._http import client_address
from bastion.core.paths import EVERYWHERE, PathPattern
from bastion.core.refusal import Refusal, refusal_body
from bastion.core.request import asgi_path
from bastion.core.tokens.bearer import (
    MAX_AUTHORIZATION_BYTES,
    OUTAGE,
    BearerChallenge,
    BearerRefused,
    BearerRules,
    public_url,
    quote_path,
)
from bastion.core.tokens.principal import BearerRequest, Principal
from bastion.core.tokens.reasons import TokenRejected
from bastion.errors import ConfigurationError, StoreUnavailable

if TYPE_CHECKING:
    from bastion.asgi.types import ASGIApp, Receive, Scope, Send
    from bastion.core.audit import Auditor
    from bastion.core.client import TrustedProxies
    from bastion.core.tokens.bearer import Route
    from bastion.core.tokens.principal import BearerVerifier

__all__ = [
    "PRINCIPAL_KEY",
    "VERIFIED_BY_KEY",
    "BearerMiddleware",
    "attach",
    "attached",
    "authenticate_scope",
    "client_address",
    "principal",
    "retry_after_value",
    "scope_url",
    "wanted_headers",
]

PRINCIPAL_KEY: Final = "bastion.principal"
"""The key of the principal in ``scope["state"]`` (and in a WSGI environ)."""

VERIFIED_BY_KEY: Final = "bastion.principal.verifier"
"""Beside the principal in ``scope["state"]``: the verifier of the dependency or decorator that
verified it (absent when the middleware did). A helper with another verifier verifies again
(:func:`attached`) rather than trust a principal its own verifier never saw."""

_WS_EXTENSION: Final = "websocket.http.response"
_WANTED: Final = frozenset(
    {b"authorization", b"dpop", b"accept", b"content-type", b"host"}
    | {b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-for"}
)


class BearerMiddleware:
    """Access tokens for one ASGI app (see the module docstring).

    ``verifier`` checks the tokens. ``protected``, ``optional`` and ``scopes`` are path
    patterns (:mod:`bastion.core.paths`; :class:`~bastion.core.tokens.bearer.BearerRules`).
    ``challenge`` sets the realm and the DPoP algorithms announced. ``proxies`` (the stack's
    :class:`~bastion.core.client.TrustedProxies`) says whose ``X-Forwarded-Proto`` and
    ``X-Forwarded-Host`` build the URL a DPoP proof is checked against. ``max_header_bytes``
    caps the raw ``Authorization`` and ``DPoP`` headers; ``retry_after`` is the outage's
    ``Retry-After`` in seconds. ``auditor`` receives the events of
    :class:`~bastion.core.tokens.bearer.BearerRules` (malformed headers, missing scopes).
    """

    __slots__ = ("_app", "_proxies", "_retry_after", "_verifier", "rules")

    def __init__(
        self,
        app: ASGIApp,
        verifier: BearerVerifier,
        *,
        protected: str | Iterable[str | PathPattern] = (EVERYWHERE,),
        optional: str | Iterable[str | PathPattern] = (EVERYWHERE,),
        scopes: Mapping[str, Iterable[str]] | None = None,
        challenge: BearerChallenge | None = None,
        proxies: TrustedProxies | None = None,
        max_header_bytes: int = MAX_AUTHORIZATION_BYTES,
        retry_after: int = 5,
        auditor: Auditor | None = None,
    ) -> None:
        self._app = app
        self._verifier = verifier
        self.rules = BearerRules(
            protected=protected,
            optional=optional,
            scopes=scopes,
            challenge=challenge,
            max_header_bytes=max_header_bytes,
            auditor=auditor,
        )
        self._proxies = proxies
        self._retry_after = retry_after_value(retry_after)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in {"http", "websocket"}:
            await self._app(scope, receive, send)
            return
        root = scope.get("root_path")
        path = scope.get("path") or "/"
        if root:
            path = asgi_path(path, root)
        route = self.rules.route(path)
        if route is None:
            await self._app(scope, receive, send)
            return
        headers = wanted_headers(scope)
        try:
            found = await authenticate_scope(
                scope, self._verifier, self.rules, route, self._proxies, headers
            )
        except BearerRefused as refused:
            if self.rules.auditor is not None:
                self.rules.audit(refused, path=path, client_ip=client_address(scope, self._proxies))
            status, challenge, body = self.rules.answer(refused)
            extra = [(b"www-authenticate", challenge.encode("ascii"))]
            extra += [
                (name.lower().encode("ascii"), value.encode("ascii"))
                for name, value in self.rules.extra_headers(refused)
            ]
            await _answer(scope, receive, send, headers, status, body, extra, close_code=1008)
            return
        except StoreUnavailable:
            extra = [(b"retry-after", self._retry_after)]
            await _answer(scope, receive, send, headers, 503, OUTAGE, extra, close_code=1013)
            return
        attach(scope, found)
        await self._app(scope, receive, send)

    def __repr__(self) -> str:
        protected = [str(p) for p in self.rules.protected]
        return f"BearerMiddleware(protected={protected!r}, realm={self.rules.challenge.realm!r})"


def wanted_headers(scope: Scope) -> dict[bytes, list[bytes]]:
    """The header values the bearer checks read, by lower-case name, every value kept (two
    ``Authorization`` headers must be seen as two)."""
    headers: dict[bytes, list[bytes]] = {}
    for name, value in scope.get("headers") or ():
        lowered = name.lower()
        if lowered in _WANTED:
            headers.setdefault(lowered, []).append(value)
    return headers


def attach(scope: Scope, found: Principal | None, *, by: BearerVerifier | None = None) -> None:
    """Put ``found`` in ``scope["state"]["bastion.principal"]``; ``by`` is the verifier of the
    helper that verified it (``None``: the middleware)."""
    state = scope.get("state")
    if not isinstance(state, MutableMapping):
        state = scope["state"] = {}
    state[PRINCIPAL_KEY] = found
    if by is None:
        state.pop(VERIFIED_BY_KEY, None)
    else:
        state[VERIFIED_BY_KEY] = by


def attached(scope: Scope, verifier: BearerVerifier | None) -> object:
    """The principal (or ``None``) already attached to this request that a helper verifying
    with ``verifier`` may use: the middleware's, or one verified with this same ``verifier``
    (or any, for a helper without a verifier, which relies on what ran before it). Else
    :data:`ABSENT`: the helper verifies the request itself."""
    state = scope.get("state")
    if not isinstance(state, Mapping):
        return ABSENT
    found = state.get(PRINCIPAL_KEY, ABSENT)
    by = state.get(VERIFIED_BY_KEY)
    if found is not ABSENT and verifier is not None and by is not None and by is not verifier:
        return ABSENT
    return found


async def authenticate_scope(  # noqa: PLR0917 (the request, the rules, the verifier)
    scope: Scope,
    verifier: BearerVerifier,
    rules: BearerRules,
    route: Route,
    proxies: TrustedProxies | None = None,
    headers: dict[bytes, list[bytes]] | None = None,
) -> Principal | None:
    """The principal of an ASGI request on ``route`` (``None``: optional and no token of
    ours); raises :class:`~bastion.core.tokens.bearer.BearerRefused` or
    :class:`~bastion.errors.StoreUnavailable`. Shared with :mod:`bastion.fastapi` and
    :mod:`bastion.starlette`."""
    if headers is None:
        headers = wanted_headers(scope)
    presented = rules.present(
        route, headers.get(b"authorization") or (), headers.get(b"dpop") or ()
    )
    if presented is None:
        return None
    request = BearerRequest(
        presented.authorization,
        presented.dpop,
        "GET" if scope["type"] == "websocket" else scope.get("method") or "GET",
        scope_url(scope, headers, proxies),
    )
    try:
        found = await verifier.authenticate(request)
    except TokenRejected as rejected:
        raise rules.rejected(route, presented, rejected) from None
    return rules.admit(route, found, presented.scheme)


def scope_url(
    scope: Scope, headers: dict[bytes, list[bytes]], proxies: TrustedProxies | None
) -> str:
    """``scheme://host/path`` of the request for DPoP's ``htu`` (see
    :func:`~bastion.core.tokens.bearer.public_url`); the path as sent (``raw_path``)."""
    raw = scope.get("raw_path")
    if isinstance(raw, bytes) and raw:
        path = quote_path(raw.split(b"?", 1)[0], encoded=True)
    else:
        root = scope.get("root_path")
        path = quote_path(asgi_path(scope.get("path") or "/", root) if root else scope["path"])
    client = scope.get("client")

    def first(name: bytes) -> str | None:
        found = headers.get(name)
        return found[0].decode("latin-1") if found else None

    def joined(name: bytes) -> str | None:  # a forwarding header's lines are one list
        found = headers.get(name)
        return b",".join(found).decode("latin-1") if found else None

    return public_url(
        scope.get("scheme") or "http",
        first(b"host"),
        path,
        peer=client[0] if client else None,
        forwarded_proto=joined(b"x-forwarded-proto"),
        forwarded_host=joined(b"x-forwarded-host"),
        forwarded_for=[v.decode("latin-1") for v in headers.get(b"x-forwarded-for", ())],
        proxies=proxies,
    )


def retry_after_value(seconds: object) -> bytes:
    """``Retry-After`` of the outage answer, checked (1 to 3600 seconds)."""
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= 3600:
        raise ConfigurationError(
            f"retry_after must be a whole number of seconds from 1 to 3600, got {seconds!r}",
            setting="retry_after",
        )
    return str(seconds).encode("ascii")


async def _answer(  # noqa: PLR0917 (the ASGI triple, the headers read, and the refusal)
    scope: Scope,
    receive: Receive,
    send: Send,
    headers: dict[bytes, list[bytes]],
    status: int,
    body_of: Refusal,
    extra: list[tuple[bytes, bytes]],
    *,
    close_code: int,
) -> None:
    """Send the refusal: an HTTP response, or for a WebSocket handshake the denial response
    (with the extension) or a close before accept."""
    accept = headers.get(b"accept")
    sent_type = headers.get(b"content-type")
    content_type, body = refusal_body(
        body_of,
        accept=accept[0].decode("latin-1") if accept else None,
        content_type=sent_type[0].decode("latin-1") if sent_type else None,
    )
    response_headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"cache-control", b"no-store"),
        *extra,
    ]
    if scope["type"] == "websocket":
        message = await receive()
        if message.get("type") != "websocket.connect":
            return  # the client has gone
        if _WS_EXTENSION not in (scope.get("extensions") or {}):
            await send({"type": "websocket.close", "code": close_code, "reason": ""})
            return
        start, body_type = "websocket.http.response.start", "websocket.http.response.body"
    else:
        start, body_type = "http.response.start", "http.response.body"
    await send({"type": start, "status": status, "headers": response_headers})
    await send({"type": body_type, "body": body})


ABSENT: Final = object()
"""What :func:`attached` returns when no usable principal is attached."""
_ABSENT: Final = ABSENT


def principal(connection: Any) -> Principal | None:
    """The principal :class:`BearerMiddleware` attached to this request (a Starlette,
    Litestar or Quart request or websocket, or a scope), or ``None`` when it attached none.

    Raises :class:`~bastion.errors.ConfigurationError` when no ``BearerMiddleware`` ran for
    the request, so a missing middleware cannot pass for an anonymous request.
    """
    scope = getattr(connection, "scope", connection)
    state = scope.get("state") if isinstance(scope, Mapping) else None
    found = state.get(PRINCIPAL_KEY, _ABSENT) if isinstance(state, Mapping) else _ABSENT
    if found is _ABSENT:
        raise ConfigurationError(
            "no BearerMiddleware covered this request; add "
            "bastion.asgi.bearer.BearerMiddleware(app, verifier, ...) with this path in "
            "protected= or optional=",
            setting="middleware",
        )
    return found if isinstance(found, Principal) else None
