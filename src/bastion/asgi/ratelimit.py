"""``RateLimitMiddleware``: route rules over a :class:`~bastion.engine.ratelimit.RateLimiter`.

Plain ASGI, one concern. For each HTTP request it applies every matching
:class:`~bastion.engine.ratelimit.Route` (one backend round trip each), then:

* refused: ``429 Too Many Requests`` with ``Retry-After`` and the rate-limit headers, computed
  with the decision; the app is not called;
* a fail-closed limit's backend is down: ``503 Service Unavailable``;
* admitted: the app runs and the rate-limit headers are appended to its response (headers the
  app set itself are left alone).

Keys: :func:`client_ip_key` (the default) uses the connection's peer, and ``X-Forwarded-For`` /
``Forwarded`` only from the configured trusted proxies; :func:`header_key` keys by a header
(an API key, hashed); :func:`user_key` by ``scope["user"]`` (Starlette's authentication);
:func:`path_key` by route, shared by every client. Any callable of the scope works. A key
function returning ``None`` exempts the request. WebSocket and lifespan traffic pass through.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Final

from bastion.core.ratelimit import ClientIP
from bastion.engine.ratelimit import header_bytes, routes_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, MutableMapping

    from bastion.engine.ratelimit import RateLimiter, RateLimitResult, Route, Rule

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
    KeyFunc = Callable[[Scope], str | None]

__all__ = ["RateLimitMiddleware", "client_ip_key", "header_key", "path_key", "user_key"]

_TEXT: Final = (b"content-type", b"text/plain; charset=utf-8")
_TOO_MANY: Final = b"Too Many Requests"
_UNAVAILABLE: Final = b"Service Unavailable"
_OURS: Final = frozenset(
    {
        b"ratelimit",
        b"ratelimit-policy",
        b"x-ratelimit-limit",
        b"x-ratelimit-remaining",
        b"x-ratelimit-reset",
    }
)


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
    budget for an expensive endpoint)."""
    return f"path:{scope.get('path') or '/'}"


class RateLimitMiddleware:
    """Apply ``rules`` (a Rule, a Route, or several) with ``limiter``. See the module doc.

    ``key`` is the default key function for routes without their own. ``ietf_headers`` sends
    ``RateLimit-Policy`` and ``RateLimit``; ``legacy_headers`` sends ``X-RateLimit-*``.
    """

    __slots__ = ("_app", "_ietf", "_key", "_legacy", "_limiter", "_routes")

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        rules: Route | Rule | Iterable[Route | Rule],
        *,
        key: KeyFunc | None = None,
        ietf_headers: bool = True,
        legacy_headers: bool = False,
    ) -> None:
        self._app = app
        self._limiter = limiter
        self._routes = tuple((route, route.everywhere) for route in routes_of(rules))
        self._key = key if key is not None else client_ip_key()
        self._ietf = bool(ietf_headers)
        self._legacy = bool(legacy_headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        client = scope.get("client")
        peer = client[0] if client else None
        results: list[RateLimitResult] = []
        for route, everywhere in self._routes:
            if not everywhere and not route.matches(method, path):
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
                await _answer(send, 503, _UNAVAILABLE, [])
                return
        headers = header_bytes(results, ietf=self._ietf, legacy=self._legacy)
        for result in results:
            if not result.allowed:
                await _answer(send, 429, _TOO_MANY, headers)
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


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                _TEXT,
                (b"content-length", str(len(body)).encode("ascii")),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
