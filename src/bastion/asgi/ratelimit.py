"""``RateLimitMiddleware``: rules over a :class:`~bastion.engine.ratelimit.RateLimiter`.

Plain ASGI, one concern: it turns the scope into a :class:`~bastion.core.request.RequestView`
(:func:`request_view`), asks :meth:`~bastion.engine.ratelimit.RateLimiter.check` for the
verdict of every matching :class:`~bastion.core.ratelimit.rules.Rule` (one backend round trip
each), and answers with it:

* refused: ``429 Too Many Requests`` with ``Retry-After`` and the rate-limit headers, computed
  with the decision; the app is not called;
* a fail-closed limit's backend is down: ``503 Service Unavailable`` with ``Retry-After: 5``;
* a rule's key or cost function raises (or gives no valid key or cost): ``503`` without
  ``Retry-After``, the error logged with the rule's name and audited; the app is not called
  (:meth:`~bastion.engine.ratelimit.RateLimiter.check`);
* either refusal has a short text body, or ``{"error": ..., "detail": ...}`` for a client whose
  ``Accept`` asks for JSON (:mod:`bastion.core.refusal`);
* admitted: the app runs and the rate-limit headers are appended to its response (headers the
  app set itself are left alone).

WebSocket handshakes are limited too (``websockets=True``, the default), so a connection flood
on a WebSocket route is counted like a request flood. A handshake is an HTTP ``GET``: it is
matched against the same rules as ``GET`` of its path, keyed and charged by the same key and
cost functions (whose request view says ``"GET"``), and the
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

Keys are functions of the request view, the same under ASGI, WSGI and Flask
(:mod:`bastion.core.ratelimit.keys`, re-exported here): :func:`client_ip_key` (the default)
uses the connection's peer, and ``X-Forwarded-For`` / ``Forwarded`` only from the configured
trusted proxies; :func:`header_key` keys by a header (an API key, hashed); :func:`user_key` by
``scope["user"]`` (Starlette's authentication); :func:`path_key` by route, shared by every
client. A key function returning ``None`` exempts the request (or the handshake).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final, NamedTuple

from bastion.asgi._http import WS_RESPONSE_EXTENSION, send_refusal
from bastion.core.ratelimit.keys import client_ip_key, header_key, path_key, user_key
from bastion.core.ratelimit.rules import RuleSet
from bastion.core.refusal import Refusal, refusal_body
from bastion.core.request import RequestView, asgi_path
from bastion.slices import rate_limit_arguments

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterable

    from bastion.asgi.types import ASGIApp, Message, Receive, Scope, Send
    from bastion.config import Bastion
    from bastion.core.ratelimit.keys import KeyFunc
    from bastion.core.ratelimit.rules import Rule
    from bastion.engine.ratelimit import RateLimiter
    from bastion.runtime import Runtime

__all__ = [
    "RateLimitMiddleware",
    "client_ip_key",
    "header_key",
    "path_key",
    "request_view",
    "user_key",
]

logger = logging.getLogger("bastion.security.ratelimit")

_MAX_BODIES: Final = 64

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


def request_view(scope: Scope, method: str | None = None) -> RequestView:
    """The :class:`~bastion.core.request.RequestView` of an ASGI scope: what key and cost
    functions see (``method`` overrides the scope's, as ``"GET"`` for a WebSocket handshake).
    Nothing is decoded here: the headers stay the server's byte pairs until a function reads
    one."""
    client = scope.get("client")
    root = scope.get("root_path")
    path = scope["path"]
    query = scope.get("query_string")
    return _view(
        RequestView,
        (
            method or scope.get("method") or "GET",
            asgi_path(path, root) if root else path or "/",
            scope.get("scheme") or "http",
            query.decode("latin-1") if query else "",
            client[0] if client else None,
            scope.get("user"),
            scope.get("headers") or (),
            scope,
        ),
    )


_view: Final = tuple.__new__  # builds the view without NamedTuple's Python-level __new__


class RateLimitMiddleware:
    """Apply ``rules`` (a Rule, several, or a compiled RuleSet) with ``limiter``. See the module
    doc.

    ``key`` is the default key function for rules without their own. ``ietf_headers`` sends
    ``RateLimit-Policy`` and ``RateLimit``; ``legacy_headers`` sends ``X-RateLimit-*``.
    ``websockets`` (default ``True``) limits WebSocket handshakes as ``GET`` requests of their
    path: refused with a ``429``/``503`` denial response where the server supports it, else
    closed before accept with code ``1008``/``1013``. ``False`` lets them through unlimited,
    which leaves WebSocket routes open to connection floods.
    """

    __slots__ = ("_app", "_bodies", "_by_peer", "_inline", "_limiter", "_rules", "_websockets")

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter | None = None,
        rules: Rule | Iterable[Rule] | RuleSet | None = None,
        *,
        bastion: Bastion | Runtime | None = None,
        key: KeyFunc | None = None,
        ietf_headers: bool = True,
        legacy_headers: bool = False,
        websockets: bool = True,
    ) -> None:
        limiter, rules, key = rate_limit_arguments(bastion, limiter, rules, key)
        self._app = app
        self._limiter = limiter
        self._inline = limiter.nonblocking  # memory: decide inline, no coroutine per request
        self._bodies = _Bodies()
        self._rules = (
            rules
            if isinstance(rules, RuleSet)
            else RuleSet(rules, key=key, ietf_headers=ietf_headers, legacy_headers=legacy_headers)
        )
        self._by_peer = self._inline and self._rules.peer_keys is not None
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
        if self._by_peer:  # memory, and rules keyed by the peer alone: no request view
            client = scope.get("client")
            verdict = self._limiter.check_peer_sync(client[0] if client else None, self._rules)
        elif self._inline:
            verdict = self._limiter.check_sync(request_view(scope), self._rules)
        else:
            verdict = await self._limiter.check(request_view(scope), self._rules)
        if not verdict.results:
            await self._app(scope, receive, send)
            return
        if verdict.refusal is not None:
            content_type, body = self._bodies.of(scope, verdict.refusal)
            # send_refusal directly: a flood is all refusals, and each coroutine level costs
            await send_refusal(send, verdict.status, content_type, body, verdict.raw_headers())
            return
        headers = verdict.raw_headers()
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
        """A handshake, decided as a ``GET`` of its path by the same rules, keys and costs.
        Kept apart from the HTTP path in ``__call__``, which stays free of WebSocket checks."""
        verdict = await self._limiter.check(request_view(scope, "GET"), self._rules)
        if verdict.refusal is not None:
            how = _WS_UNAVAILABLE if verdict.status == 503 else _WS_LIMITED
            body = self._bodies.of(scope, verdict.refusal)
            await _deny(scope, receive, send, how, body=body, headers=verdict.raw_headers())
        else:
            await self._app(scope, receive, send)


async def _deny(
    scope: Scope,
    receive: Receive,
    send: Send,
    how: _Refusal,
    *,
    body: tuple[bytes, bytes],
    headers: list[tuple[bytes, bytes]],
) -> None:
    """Refuse a WebSocket handshake before accept: a denial response when the server offers
    the extension, else a close with the refusal's code. The ``websocket.connect`` message is
    read first, as the ASGI spec orders; a client that has already gone gets nothing."""
    message = await receive()
    if message.get("type") != "websocket.connect":
        return
    if WS_RESPONSE_EXTENSION in (scope.get("extensions") or {}):
        await send_refusal(send, how.status, *body, headers, websocket=True)
        return
    await send({"type": "websocket.close", "code": how.close_code, "reason": how.reason})


class _Bodies:
    """The refusal bodies of one middleware by ``(refusal, Accept, Content-Type)``: rendered
    once per distinct request kind, not per refused request (a flood is all refusals). Bounded:
    emptied when full, so attacker-chosen headers cannot grow it."""

    __slots__ = ("_bodies",)

    def __init__(self) -> None:
        self._bodies: dict[tuple[Refusal, bytes | None, bytes | None], tuple[bytes, bytes]] = {}

    def of(self, scope: Scope, refusal: Refusal) -> tuple[bytes, bytes]:
        accept = sent_type = None
        for name, value in scope["headers"]:
            if name == b"accept" and accept is None:
                accept = value
            elif name == b"content-type" and sent_type is None:
                sent_type = value
        key = (refusal, accept, sent_type)
        found = self._bodies.get(key)
        if found is None:
            found = refusal_body(
                refusal,
                accept=None if accept is None else accept.decode("latin-1"),
                content_type=None if sent_type is None else sent_type.decode("latin-1"),
            )
            if len(self._bodies) >= _MAX_BODIES:
                self._bodies.clear()
            self._bodies[key] = found
        return found
