"""The one place the WSGI layers send a response of their own (a refusal, a preflight's
answer, a report receiver's status), so that every layer's answer is built the same way.

A refusal is ``Content-Type`` and ``Content-Length`` first, then the layer's own headers
(``Cache-Control``, ``Retry-After``, the ``RateLimit`` fields), then its body as the one item
of the response iterable.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, Final

from bastion.core.refusal import AUDIT_UNAVAILABLE, refusal_body

if TYPE_CHECKING:
    from collections.abc import Iterable

    from bastion.core.client import TrustedProxies
    from bastion.wsgi.types import Environ, StartResponse

__all__ = [
    "audit_unavailable",
    "client_address",
    "describe_client",
    "refusal_headers",
    "send_refusal",
    "send_response",
    "status_line",
]

# RFC 9110's names where Python's table still has the older ones (before 3.13).
_PHRASES: Final = {413: "Content Too Large", 422: "Unprocessable Content"}


def status_line(status: int) -> str:
    """``"403 Forbidden"``: the WSGI status text of ``status``."""
    phrase = _PHRASES.get(status)
    if phrase is None:
        phrase = HTTPStatus(status).phrase
    return f"{status} {phrase}"


def send_response(
    start_response: StartResponse,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes = b"",
    exc_info: object = None,
) -> list[bytes]:
    """Start a whole response with ``headers`` as given; the iterable that holds ``body``."""
    if exc_info is None:
        start_response(status_line(status), headers)
    else:
        start_response(status_line(status), headers, exc_info)
    return [body]


def refusal_headers(
    content_type: bytes, body: bytes, extra: Iterable[tuple[str, str]] = ()
) -> list[tuple[str, str]]:
    """The headers of a refusal whose body is ``body``: its type and length, then ``extra``."""
    return [
        ("Content-Type", content_type.decode("ascii")),
        ("Content-Length", str(len(body))),
        *extra,
    ]


def send_refusal(
    start_response: StartResponse,
    status: int,
    content_type: bytes,
    body: bytes,
    extra: Iterable[tuple[str, str]] = (),
) -> list[bytes]:
    """Send a refusal (:func:`refusal_headers`); the iterable that holds ``body``."""
    return send_response(start_response, status, refusal_headers(content_type, body, extra), body)


def client_address(environ: Environ, proxies: TrustedProxies | None) -> str | None:
    """The client's address: ``REMOTE_ADDR``, or what trusted ``proxies`` forwarded."""
    peer: str | None = environ.get("REMOTE_ADDR")
    if proxies is None:
        return peer
    name = "HTTP_X_FORWARDED_FOR" if proxies.header == "x-forwarded-for" else "HTTP_FORWARDED"
    forwarded = environ.get(name)
    if not forwarded:
        return peer
    address = proxies.client(peer, (forwarded,))
    return None if address is None else str(address)


def describe_client(
    environ: Environ, proxies: TrustedProxies | None
) -> tuple[str | None, str | None]:
    """``(user agent, client address)`` of a request, for its audit events."""
    return environ.get("HTTP_USER_AGENT"), client_address(environ, proxies)


def audit_unavailable(environ: Environ) -> tuple[list[tuple[str, str]], bytes]:
    """The headers and body of the ``503 audit_unavailable`` refusal (with ``Retry-After``)
    for a request whose action the fail-closed audit trail could not record."""
    kind, body = refusal_body(
        AUDIT_UNAVAILABLE,
        accept=environ.get("HTTP_ACCEPT"),
        content_type=environ.get("CONTENT_TYPE"),
    )
    return refusal_headers(kind, body, [("Retry-After", "1"), ("Cache-Control", "no-store")]), body
