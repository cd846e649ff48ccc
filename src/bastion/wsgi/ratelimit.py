"""``RateLimitMiddleware`` for WSGI: the twin of :mod:`bastion.asgi.ratelimit`, synchronous.

It calls :meth:`~bastion.engine.ratelimit.RateLimiter.hit_sync`, so the backend's sync API
answers on the request thread: no event loop, no thread hop. Same behaviour as the ASGI
middleware: 429 with ``Retry-After`` and the rate-limit headers, 503 when a fail-closed limit's
backend is down (text bodies, JSON for a client whose ``Accept`` asks for it), headers appended
to admitted responses (the app's own are left alone).

Key functions take the WSGI environ: :func:`client_ip_key` (the default; ``REMOTE_ADDR``, and
the forwarding header only from trusted proxies), :func:`header_key` (hashed by default) and
:func:`remote_user_key` (``REMOTE_USER``), :func:`path_key` (per route, all clients). ``None``
exempts a request.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any, Final

from bastion.core.ratelimit import ClientIP
from bastion.core.refusal import RATE_LIMIT_STORE_UNAVAILABLE, RATE_LIMITED, refusal_body
from bastion.core.request import (
    OVERRIDE_HEADERS,
    body_methods,
    has_body,
    match_forms,
    override_methods,
    wsgi_path,
)
from bastion.engine.ratelimit import render_headers, routes_of

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from bastion.engine.ratelimit import RateLimiter, RateLimitResult, Route, Rule

    Environ = dict[str, Any]
    StartResponse = Callable[..., Any]
    WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
    KeyFunc = Callable[[Environ], str | None]

__all__ = ["RateLimitMiddleware", "client_ip_key", "header_key", "path_key", "remote_user_key"]

logger = logging.getLogger("bastion.security.ratelimit")

_OVERRIDE_VARIABLES: Final = tuple("HTTP_" + h.upper().replace("-", "_") for h in OVERRIDE_HEADERS)
_STATUS: Final = {429: "429 Too Many Requests", 503: "503 Service Unavailable"}
_ERRORS: Final = {429: RATE_LIMITED, 503: RATE_LIMIT_STORE_UNAVAILABLE}


def client_ip_key(resolver: ClientIP | None = None) -> KeyFunc:
    """Key by client address (see :class:`~bastion.core.ratelimit.ClientIP`)."""
    ip = resolver if resolver is not None else ClientIP()
    variable = "HTTP_" + ip.header.upper().replace("-", "_")

    def key(environ: Environ) -> str | None:
        peer = environ.get("REMOTE_ADDR") or None
        value = environ.get(variable)
        found = ip.key(peer, [value] if value and ip.trusts_any else [])
        if found is None:
            # Not an IP peer (a Unix socket, a test client): one shared key, never exempt.
            return f"peer:{peer}" if peer else "peer:unknown"
        return found

    return key


def header_key(name: str, *, hash_value: bool = True) -> KeyFunc:
    """Key by a request header; hashed by default so API keys never reach the store."""
    if not hash_value:
        logger.warning(
            "bastion rate limits: header_key(%r, hash_value=False) keeps the header's value as "
            "given in the store and its logs; hash it unless it is no secret",
            name,
        )
    variable = "HTTP_" + name.upper().replace("-", "_")

    def key(environ: Environ) -> str | None:
        value = environ.get(variable)
        if not value:
            return None
        if hash_value:
            return hashlib.sha256(str(value).encode("latin-1", "replace")).hexdigest()[:32]
        return str(value)

    return key


def remote_user_key(environ: Environ) -> str | None:
    """Key by ``REMOTE_USER`` (set by the server or an auth middleware); anonymous: ``None``."""
    user = environ.get("REMOTE_USER")
    return f"user:{user}" if user else None


def path_key(environ: Environ) -> str | None:
    """Key by the request path: one counter per route for all clients together. The full path
    (``SCRIPT_NAME`` included) in normal form, lower case, as in the ASGI twin."""
    path = wsgi_path(environ.get("SCRIPT_NAME", ""), environ.get("PATH_INFO", ""))
    return f"path:{match_forms(path)[-1]}"


class RateLimitMiddleware:
    """Apply ``rules`` (a Rule, a Route, or several) with ``limiter``. See the module doc."""

    __slots__ = ("_app", "_ietf", "_key", "_legacy", "_limiter", "_routes")

    def __init__(
        self,
        app: WSGIApp,
        limiter: RateLimiter,
        rules: Route | Rule | Iterable[Route | Rule],
        *,
        key: KeyFunc | None = None,
        ietf_headers: bool = True,
        legacy_headers: bool = False,
    ) -> None:
        self._app = app
        self._limiter = limiter
        self._routes = routes_of(rules)
        self._key = key if key is not None else client_ip_key()
        self._ietf = bool(ietf_headers)
        self._legacy = bool(legacy_headers)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        body = has_body(environ.get("CONTENT_LENGTH"), environ.get("HTTP_TRANSFER_ENCODING"))
        methods = (
            *body_methods(environ.get("REQUEST_METHOD", "GET"), body=body),
            *override_methods(
                [environ.get(name) for name in _OVERRIDE_VARIABLES], environ.get("QUERY_STRING", "")
            ),
        )
        forms = match_forms(wsgi_path(environ.get("SCRIPT_NAME", ""), environ.get("PATH_INFO", "")))
        results: list[RateLimitResult] = []
        for route in self._routes:
            if not route.matches_forms(methods, forms):
                continue
            key = (route.key or self._key)(environ)
            if key is None:
                continue
            results.append(
                self._limiter.hit_sync(
                    route.rule,
                    key,
                    cost=route.cost_of(environ),
                    client_ip=environ.get("REMOTE_ADDR") or None,
                )
            )
        if not results:
            return self._app(environ, start_response)
        if any(result.unavailable for result in results):
            return _answer(environ, start_response, 503, [])
        headers = render_headers(results, ietf=self._ietf, legacy=self._legacy)
        if any(not result.allowed for result in results):
            return _answer(environ, start_response, 429, headers)
        if not headers:
            return self._app(environ, start_response)
        names = {name for name, _ in headers}

        def start_with_headers(
            status: str, response_headers: list[tuple[str, str]], *exc: Any
        ) -> Any:
            present = {name.lower() for name, _ in response_headers} & names
            extra = [h for h in headers if h[0] not in present]
            return start_response(status, [*response_headers, *extra], *exc)

        return self._app(environ, start_with_headers)


def _answer(
    environ: Environ, start_response: StartResponse, status: int, headers: list[tuple[str, str]]
) -> list[bytes]:
    """The 429 or 503, as text or (for a client asking for JSON) JSON."""
    content_type, body = refusal_body(
        _ERRORS[status],
        accept=environ.get("HTTP_ACCEPT"),
        content_type=environ.get("CONTENT_TYPE"),
    )
    start_response(
        _STATUS[status],
        [
            ("Content-Type", content_type.decode("ascii")),
            ("Content-Length", str(len(body))),
            *headers,
        ],
    )
    return [body]
