"""``RateLimitMiddleware`` for WSGI: the twin of :mod:`bastion.asgi.ratelimit`, synchronous.

It turns the environ into a :class:`~bastion.core.request.RequestView` (:func:`request_view`)
and asks :meth:`~bastion.engine.ratelimit.RateLimiter.check_sync` for the verdict, so the
backend's sync API answers on the request thread: no event loop, no thread hop. Same behaviour
as the ASGI middleware: 429 with ``Retry-After`` and the rate-limit headers, 503 with
``Retry-After: 5`` when a fail-closed limit's backend is down, 503 without it when a rule's key
or cost function fails (text bodies, JSON for a client whose ``Accept`` asks for it), headers
appended to admitted responses (the app's own are left alone).

Key functions are the same as under ASGI (:mod:`bastion.core.ratelimit.keys`, re-exported
here): :func:`client_ip_key` (the default; ``REMOTE_ADDR``, and the forwarding header only from
trusted proxies), :func:`header_key` (hashed by default), :func:`user_key` (``REMOTE_USER``),
:func:`path_key` (per route, all clients). ``None`` exempts a request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from bastion.core.ratelimit.keys import client_ip_key, header_key, path_key, user_key
from bastion.core.ratelimit.rules import RuleSet
from bastion.core.refusal import refusal_body
from bastion.core.request import RequestView, wsgi_path
from bastion.slices import rate_limit_arguments
from bastion.wsgi._http import send_refusal

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from bastion.config import Bastion
    from bastion.core.ratelimit.keys import KeyFunc
    from bastion.core.ratelimit.rules import Rule, Verdict
    from bastion.core.refusal import Refusal
    from bastion.engine.ratelimit import RateLimiter
    from bastion.runtime import Runtime
    from bastion.wsgi.types import Environ, StartResponse, WSGIApp

__all__ = [
    "EnvironHeaders",
    "RateLimitMiddleware",
    "client_ip_key",
    "header_key",
    "path_key",
    "request_view",
    "user_key",
]


_PLAIN: Final = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}


class EnvironHeaders(Mapping[str, str]):
    """The headers of a WSGI environ as a read-only mapping by lower-case name, read from its
    ``HTTP_*`` variables (and ``CONTENT_TYPE``/``CONTENT_LENGTH``, which PEP 3333 gives
    without the prefix) when asked: nothing is copied per request."""

    __slots__ = ("_environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self._environ = environ

    @staticmethod
    def _variable(name: str) -> str:
        lowered = name.lower()
        return _PLAIN.get(lowered) or "HTTP_" + lowered.upper().replace("-", "_")

    def __getitem__(self, name: str) -> str:
        value = self._environ.get(self._variable(name))
        if value is None or (name.lower() in _PLAIN and not value):
            raise KeyError(name)
        return str(value)

    def get(self, name: str, default: Any = None) -> Any:  # no KeyError round trip
        value = self._environ.get(self._variable(name))
        if value is None or (not value and name.lower() in _PLAIN):
            return default
        return str(value)

    def _names(self) -> list[str]:
        names = [
            key[5:].lower().replace("_", "-") for key in self._environ if key.startswith("HTTP_")
        ]
        names += [name for name, key in _PLAIN.items() if self._environ.get(key)]
        return names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


def request_view(environ: Mapping[str, Any]) -> RequestView:
    """The :class:`~bastion.core.request.RequestView` of a WSGI environ (Flask's
    ``request.environ`` too): ``REMOTE_ADDR`` is the peer, ``REMOTE_USER`` the principal, the
    ``HTTP_*`` variables the headers (:class:`EnvironHeaders`, read when asked)."""
    return RequestView(
        environ.get("REQUEST_METHOD") or "GET",
        wsgi_path(environ.get("SCRIPT_NAME", ""), environ.get("PATH_INFO", "")),
        scheme=environ.get("wsgi.url_scheme") or "http",
        query=environ.get("QUERY_STRING") or "",
        peer=environ.get("REMOTE_ADDR") or None,
        principal=environ.get("REMOTE_USER") or None,
        raw_headers=EnvironHeaders(environ),
        source=environ,
    )


class RateLimitMiddleware:
    """Apply ``rules`` (a Rule, several, or a compiled RuleSet) with ``limiter``. See the
    module doc."""

    __slots__ = ("_app", "_by_peer", "_limiter", "_rules")

    def __init__(
        self,
        app: WSGIApp,
        limiter: RateLimiter | None = None,
        rules: Rule | Iterable[Rule] | RuleSet | None = None,
        *,
        bastion: Bastion | Runtime | None = None,
        key: KeyFunc | None = None,
        ietf_headers: bool = True,
        legacy_headers: bool = False,
    ) -> None:
        limiter, rules, key = rate_limit_arguments(bastion, limiter, rules, key)
        self._app = app
        self._limiter = limiter
        self._rules = (
            rules
            if isinstance(rules, RuleSet)
            else RuleSet(rules, key=key, ietf_headers=ietf_headers, legacy_headers=legacy_headers)
        )
        self._by_peer = self._rules.peer_keys is not None

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if self._by_peer:  # rules keyed by the peer alone: no request view
            verdict = self._limiter.check_peer_sync(environ.get("REMOTE_ADDR") or None, self._rules)
        else:
            verdict = self._limiter.check_sync(request_view(environ), self._rules)
        if not verdict.results:
            return self._app(environ, start_response)
        if verdict.refusal is not None:
            return _answer(environ, start_response, verdict, verdict.refusal)
        headers = verdict.headers
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
    environ: Mapping[str, Any], start_response: StartResponse, verdict: Verdict, refused: Refusal
) -> list[bytes]:
    """The 429 or 503 of ``verdict``, as text or (for a client asking for JSON) JSON."""
    content_type, body = refusal_body(
        refused, accept=environ.get("HTTP_ACCEPT"), content_type=environ.get("CONTENT_TYPE")
    )
    return send_refusal(start_response, verdict.status, content_type, body, verdict.headers)
