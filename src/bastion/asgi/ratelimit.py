"""``RateLimitMiddleware``: route rules over a :class:`~bastion.engine.ratelimit.RateLimiter`.

Plain ASGI, one concern. For each HTTP request it applies every matching
:class:`~bastion.engine.ratelimit.Route` (one backend round trip each), then:

* refused: ``429 Too Many Requests`` with ``Retry-After`` and the rate-limit headers, computed
  with the decision; the app is not called;
* a fail-closed limit's backend is down: ``503 Service Unavailable``;
* either refusal has a short text body, or ``{"error": ..., "detail": ...}`` for a client whose
  ``Accept`` asks for JSON (:mod:`bastion.core.refusal`);
* admitted: the app runs and the rate-limit headers are appended to its response (headers the
  app set itself are left alone).

WebSocket handshakes are limited too (``websockets=True``, the default), so a connection flood
on a WebSocket route is counted like a request flood. A handshake is an HTTP ``GET``: it is
matched against the same routes as ``GET`` of its path, keyed and charged by the same key and
cost functions (which see the ``websocket`` scope with ``"method": "GET"`` added), and the
engine's failure policies, shadow mode and audit events apply unchanged. Then:

* admitted: the app runs unchanged (no headers are added to the ``101`` response);
* refused: the app is not called. When the server supports the ASGI ``websocket.http.response``
  extension the client gets a real ``429`` with ``Retry-After`` and the rate-limit headers (a
  ``503`` when a fail-closed backend is down); without it the handshake is closed before
  accept with code ``1008`` (policy violation), reason ``"rate limited"`` (``1013``, try again
  later, for the outage), and the client learns no retry time.

Only the handshake is counted: this bounds the rate of new connections, not how many stay
open, and messages on an open connection are not counted. ``websockets=False`` lets WebSocket
scopes through unlimited, as before; it leaves WebSocket routes open to connection floods, so
limit them elsewhere (the proxy, or the app's own accept logic) when choosing it (a warning is
logged at start-up). Lifespan traffic always passes through.

Keys: :func:`client_ip_key` (the default) uses the connection's peer, and ``X-Forwarded-For`` /
``Forwarded`` only from the configured trusted proxies; :func:`header_key` keys by a header
(an API key, hashed); :func:`user_key` by ``scope["user"]`` (Starlette's authentication);
:func:`path_key` by route, shared by every client. Any callable of the scope works. A key
function returning ``None`` exempts the request (or the handshake).
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from bastion.core.ratelimit import ClientIP
from bastion.core.refusal import RATE_LIMIT_STORE_UNAVAILABLE, RATE_LIMITED, refusal_body
from bastion.core.request import (
    OVERRIDE_HEADERS,
    asgi_path,
    body_methods,
    has_body,
    match_forms,
    normalize_method,
    override_methods,
)
from bastion.engine.ratelimit import header_bytes, routes_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, MutableMapping

    from bastion.engine.ratelimit import RateLimiter, RateLimitResult, Route, Rule

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    # Any ASGI callable: frameworks type scopes and messages their own way (Litestar and Quart
    # with TypedDicts), so the app is not held to this module's Scope alias.
    ASGIApp = Callable[..., Awaitable[None]]
    KeyFunc = Callable[[Scope], str | None]

__all__ = ["RateLimitMiddleware", "client_ip_key", "header_key", "path_key", "user_key"]

logger = logging.getLogger("bastion.security.ratelimit")

_ERRORS: Final = {429: RATE_LIMITED, 503: RATE_LIMIT_STORE_UNAVAILABLE}
_WS_START: Final = "websocket.http.response.start"
_WS_BODY: Final = "websocket.http.response.body"
_WS_EXTENSION: Final = "websocket.http.response"

_OURS: Final = frozenset(
    {
        b"ratelimit",
        b"ratelimit-policy",
        b"x-ratelimit-limit",
        b"x-ratelimit-remaining",
        b"x-ratelimit-reset",
    }
)


class _Refusal(NamedTuple):
    """How a refused handshake is answered: the denial response's status, or the close (code
    and reason) when the server offers no denial response."""

    status: int
    close_code: int
    reason: str


_WS_LIMITED: Final = _Refusal(429, 1008, "rate limited")  # 1008: policy violation
_WS_UNAVAILABLE: Final = _Refusal(503, 1013, "service unavailable")  # 1013: try again later


def client_ip_key(resolver: ClientIP | None = None) -> KeyFunc:
    """Key by client address (see :class:`~bastion.core.ratelimit.ClientIP`)."""
    ip = resolver if resolver is not None else ClientIP()
    header = ip.header.encode("latin-1")
    plain_ipv4 = not ip.trusts_any and ip.ipv4_prefix == 32

    def key(scope: Scope) -> str | None:
        client = scope.get("client")
        peer = client[0] if client else None
        if plain_ipv4 and peer is not None and ":" not in peer and peer[-1:].isdigit():
            # The server wrote the peer address: IPv4 needs no parsing (IPv6 is grouped).
            return str(peer)
        values = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == header]
        found = ip.key(peer, values)
        if found is None:
            # Not an IP peer (a Unix socket, a test client): one shared key, never exempt.
            return f"peer:{peer}" if peer else "peer:unknown"
        return found

    return key


def header_key(name: str, *, hash_value: bool = True) -> KeyFunc:
    """Key by a request header (``None`` without it: exempt). The value is hashed by default,
    so API keys never reach the store or its logs."""
    if not hash_value:
        logger.warning(
            "bastion rate limits: header_key(%r, hash_value=False) keeps the header's value as "
            "given in the store and its logs; hash it unless it is no secret",
            name,
        )
    raw = name.lower().encode("latin-1")

    def key(scope: Scope) -> str | None:
        for k, v in scope.get("headers", ()):
            if k == raw and v:
                if hash_value:
                    return hashlib.sha256(v).hexdigest()[:32]
                return str(v.decode("latin-1"))
        return None

    return key


def user_key(scope: Scope) -> str | None:
    """Key by the authenticated user in ``scope["user"]`` (``identity`` or
    ``display_name``); anonymous requests return ``None`` (pair with an IP route)."""
    user = scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    ident = getattr(user, "identity", None) or getattr(user, "display_name", None)
    return None if not ident else f"user:{ident}"


def path_key(scope: Scope) -> str | None:
    """Key by the request path: one counter per route for all clients together (a global
    budget for an expensive endpoint). The path is the full one in normal form, lower case
    (:func:`~bastion.core.request.match_forms`), so ``//x``, ``/x/`` and ``/X`` share the
    counter of ``/x`` instead of each opening a fresh one."""
    path = asgi_path(scope.get("path") or "/", scope.get("root_path", ""))
    return f"path:{match_forms(path)[-1]}"


class RateLimitMiddleware:
    """Apply ``rules`` (a Rule, a Route, or several) with ``limiter``. See the module doc.

    ``key`` is the default key function for routes without their own. ``ietf_headers`` sends
    ``RateLimit-Policy`` and ``RateLimit``; ``legacy_headers`` sends ``X-RateLimit-*``.
    ``websockets`` (default ``True``) limits WebSocket handshakes as ``GET`` requests of their
    path: refused with a ``429``/``503`` denial response where the server supports it, else
    closed before accept with code ``1008``/``1013``. ``False`` lets them through unlimited,
    which leaves WebSocket routes open to connection floods.
    """

    __slots__ = (
        "_app",
        "_by_method",
        "_conditional",
        "_ietf",
        "_key",
        "_legacy",
        "_limiter",
        "_routes",
        "_websockets",
    )

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        rules: Route | Rule | Iterable[Route | Rule],
        *,
        key: KeyFunc | None = None,
        ietf_headers: bool = True,
        legacy_headers: bool = False,
        websockets: bool = True,
    ) -> None:
        self._app = app
        self._limiter = limiter
        self._routes = tuple((route, route.everywhere) for route in routes_of(rules))
        self._conditional = not all(everywhere for _, everywhere in self._routes)
        self._by_method = any(route.methods is not None for route, _ in self._routes)
        self._key = key if key is not None else client_ip_key()
        self._ietf = bool(ietf_headers)
        self._legacy = bool(legacy_headers)
        self._websockets = bool(websockets)
        if not self._websockets:
            logger.warning(
                "bastion rate limits: RateLimitMiddleware(websockets=False); WebSocket "
                "handshakes are not limited, so WebSocket routes are open to connection floods"
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._not_http(scope, receive, send)
            return
        client = scope.get("client")
        peer = client[0] if client else None
        results: list[RateLimitResult] = []
        # Method and path are read once, and only when a route looks at them.
        methods, forms = _request_of(scope, self._by_method) if self._conditional else _ANYWHERE
        for route, everywhere in self._routes:
            if not everywhere and not route.matches_forms(methods, forms):
                continue
            key = (route.key or self._key)(scope)
            if key is None:
                continue
            cost = route.cost_of(scope)
            limiter = self._limiter
            if limiter.nonblocking:  # memory: decide inline, no coroutine per request
                results.append(limiter.hit_sync(route.rule, key, cost=cost, client_ip=peer))
            else:
                results.append(await limiter.hit(route.rule, key, cost=cost, client_ip=peer))
        if not results:
            await self._app(scope, receive, send)
            return
        for result in results:
            if result.unavailable:
                await _answer(scope, send, 503, [])
                return
        headers = header_bytes(results, ietf=self._ietf, legacy=self._legacy)
        for result in results:
            if not result.allowed:
                await _answer(scope, send, 429, headers)
                return
        if not headers:
            await self._app(scope, receive, send)
            return

        # A plain function returning send's awaitable: no coroutine of our own per message.
        def send_with_headers(
            message: Message, send: Send = send, headers: list[tuple[bytes, bytes]] = headers
        ) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                existing = message.get("headers") or ()
                extra = headers
                for name, _ in existing:
                    # Names are lowercase in ASGI practice; lower() only the odd one out.
                    if name in _OURS or (not name.islower() and name.lower() in _OURS):
                        taken = {n.lower() for n, _ in existing}  # the app set one: keep its
                        extra = [h for h in headers if h[0] not in taken]
                        break
                # A new dict: an app may reuse its message objects, and a header added to its
                # dict in place would leak into every later response.
                message = {**message, "headers": [*existing, *extra]}
            return send(message)

        await self._app(scope, receive, send_with_headers)

    async def _not_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and self._websockets:
            await self._websocket(scope, receive, send)
            return
        await self._app(scope, receive, send)  # lifespan, or WebSockets opted out

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A handshake, decided as a ``GET`` of its path. Kept apart from the HTTP path in
        ``__call__`` (which is tuned and stays free of WebSocket checks); the route matching,
        keying and deciding are the same calls."""
        forms = match_forms(asgi_path(scope["path"], scope.get("root_path", "")))
        # Key and cost functions written for HTTP may read scope["method"]: a handshake is a
        # GET. A shallow copy, so the app still sees the server's scope unchanged.
        request = scope if "method" in scope else {**scope, "method": "GET"}
        client = scope.get("client")
        peer = client[0] if client else None
        results: list[RateLimitResult] = []
        for route, everywhere in self._routes:
            if not everywhere and not route.matches_forms(("GET",), forms):
                continue
            key = (route.key or self._key)(request)
            if key is None:
                continue
            cost = route.cost_of(request)
            results.append(await self._limiter.hit(route.rule, key, cost=cost, client_ip=peer))
        for result in results:
            if result.unavailable:
                await _deny(scope, receive, send, _WS_UNAVAILABLE, [])
                return
        for result in results:
            if not result.allowed:
                headers = header_bytes(results, ietf=self._ietf, legacy=self._legacy)
                await _deny(scope, receive, send, _WS_LIMITED, headers)
                return
        await self._app(scope, receive, send)


_ANYWHERE: Final[tuple[tuple[str, ...], tuple[str, ...]]] = ((), ("/",))
_OVERRIDE_NAMES: Final = frozenset(name.encode("ascii") for name in OVERRIDE_HEADERS)


def _request_of(scope: Scope, by_method: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The normalized method, then (when ``by_method``: some route names methods) any a method
    override asks for, which an app's override middleware would run; and the path's match forms
    (:mod:`bastion.core.request`)."""
    path = asgi_path(scope["path"], scope.get("root_path", ""))
    if not by_method:
        return (normalize_method(scope["method"]),), match_forms(path)
    query = scope.get("query_string", b"")
    overrides: list[str] = []
    length: str | None = None
    encoding: str | None = None
    for name, value in scope["headers"]:
        if name in _OVERRIDE_NAMES:
            overrides.append(value.decode("latin-1"))
        elif name == b"content-length":
            length = value.decode("latin-1")
        elif name == b"transfer-encoding":
            encoding = value.decode("latin-1")
    methods = body_methods(scope["method"], body=has_body(length, encoding))
    if overrides or (query and (b"method" in query.lower() or b"%" in query)):
        asked = override_methods(overrides, query.decode("latin-1"))
        return (*methods, *asked), match_forms(path)
    return methods, match_forms(path)


async def _deny(
    scope: Scope, receive: Receive, send: Send, how: _Refusal, headers: list[tuple[bytes, bytes]]
) -> None:
    """Refuse a WebSocket handshake before accept: a denial response when the server offers
    the extension, else a close with the refusal's code. The ``websocket.connect`` message is
    read first, as the ASGI spec orders; a client that has already gone gets nothing."""
    message = await receive()
    if message.get("type") != "websocket.connect":
        return
    if _WS_EXTENSION in (scope.get("extensions") or {}):
        await _answer(scope, send, how.status, headers, start_type=_WS_START, body_type=_WS_BODY)
        return
    await send({"type": "websocket.close", "code": how.close_code, "reason": how.reason})


async def _answer(
    scope: Scope,
    send: Send,
    status: int,
    headers: list[tuple[bytes, bytes]],
    *,
    start_type: str = "http.response.start",
    body_type: str = "http.response.body",
) -> None:
    """The 429 or 503, as text or (for a client asking for JSON) JSON; for a WebSocket
    handshake, sent as the ``websocket.http.response`` messages."""
    accept = sent_type = None
    for name, value in scope["headers"]:
        if name == b"accept" and accept is None:
            accept = value.decode("latin-1")
        elif name == b"content-type" and sent_type is None:
            sent_type = value.decode("latin-1")
    content_type, body = refusal_body(_ERRORS[status], accept=accept, content_type=sent_type)
    await send(
        {
            "type": start_type,
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode("ascii")),
                *headers,
            ],
        }
    )
    await send({"type": body_type, "body": body})
