"""Request limits: how large a request body may be, and how long its body and its handler may
take. Sans-I/O: the policy, the per-route table, and the refusals; the adapters
(:mod:`bastion.asgi.limits`, :mod:`bastion.wsgi.limits`) count bytes and keep time.

Three limits, each ``None`` to turn it off:

* ``max_body_bytes``: a request whose ``Content-Length`` is over the cap is refused with
  ``413`` before one byte of its body is read; a body without a length (chunked, HTTP/2
  streams) is counted as the app reads it, and refused the moment it passes the cap, without
  reading further (``body_too_large``);
* ``body_timeout``: the whole body must have arrived this many seconds after the request
  reached the layer; a client that sends it slower (a slow-body, "slow POST" attack holding a
  connection and a buffer open) gets ``408`` (``body_timeout``);
* ``handler_timeout``: the app must start its response this many seconds after the request
  reached the layer, not counting the time it spent waiting for the body (that is
  ``body_timeout``'s); past it the app is cancelled and the client gets ``503`` with
  ``Retry-After`` (``handler_timeout``). A response that has started (a stream, a server-sent
  event feed) is never cut by this limit: its status is already on the wire.

Routes. ``routes`` maps path patterns (:mod:`bastion.core.paths`) to :class:`RouteLimits`,
which change some of the limits and keep the others (:data:`INHERIT`). The most specific
pattern that matches wins (an exact path before a prefix, a longer prefix before a shorter
one). A route that loosens a limit (a larger cap, a longer or no timeout) applies only to a
path in normal form that matches it exactly, case and trailing slash included, as a CSRF
exemption does; a route that only tightens applies to any reading of the path, as a rate limit
does. So ``/Upload/`` or ``//upload`` never reach an upload route's larger cap.

Refusals are ``{"error": reason, "detail": ...}`` JSON or text (:mod:`bastion.core.refusal`),
with ``Cache-Control: no-store``; ``413`` and ``408`` add ``Connection: close``, since the
rest of the body is never read and the connection cannot carry another request.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, NamedTuple

from bastion.core import _check
from bastion.core.audit import EventName
from bastion.core.paths import PathPattern
from bastion.core.refusal import Refusal
from bastion.core.request import match_forms
from bastion.errors import BastionError, ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from bastion.core.audit import DetailValue

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_HANDLER_TIMEOUT",
    "DEFAULT_MAX_BODY_BYTES",
    "INHERIT",
    "Inherit",
    "LimitReason",
    "LimitTable",
    "Limits",
    "RequestLimitExceeded",
    "RequestLimits",
    "RouteLimits",
    "audit_details",
    "declared_length",
]

DEFAULT_MAX_BODY_BYTES: Final = 1024 * 1024
"""1 MiB: nginx's default ``client_max_body_size``, and the CSRF layer's form cap. A form or a
JSON document fits; an upload route says how large its files may be."""
DEFAULT_BODY_TIMEOUT: Final = 30.0
"""30 seconds for the whole body: a 1 MiB body at 35 KB/s (a poor mobile link) still fits."""
DEFAULT_HANDLER_TIMEOUT: Final = 30.0
"""30 seconds to the start of the response: gunicorn's worker timeout and Heroku's router
timeout. A route that renders a long report says so (or streams its response)."""
_DEFAULT_RETRY_AFTER: Final = 5


class LimitReason(enum.StrEnum):
    """Why a request was refused: the ``error`` of the refusal and the audit event's
    ``reason``."""

    BODY_TOO_LARGE = "body_too_large"
    BODY_TIMEOUT = "body_timeout"
    HANDLER_TIMEOUT = "handler_timeout"

    @property
    def status(self) -> int:
        """``413``, ``408`` or ``503``."""
        return _STATUS[self]

    @property
    def refusal(self) -> Refusal:
        """The refusal sent for this reason (:func:`~bastion.core.refusal.refusal_body`)."""
        return _REFUSALS[self]

    @property
    def event(self) -> str:
        """The audit event: ``input_validation_fail`` for a body over its cap or its time (the
        client's doing, aggregated in a flood), ``handler_timeout`` for an app too slow."""
        if self is LimitReason.HANDLER_TIMEOUT:
            return "handler_timeout"
        return EventName.INPUT_VALIDATION_FAIL

    @property
    def closes(self) -> bool:
        """Whether the refusal ends the connection: the body was not read to its end."""
        return self is not LimitReason.HANDLER_TIMEOUT


_STATUS: Final = {
    LimitReason.BODY_TOO_LARGE: 413,
    LimitReason.BODY_TIMEOUT: 408,
    LimitReason.HANDLER_TIMEOUT: 503,
}
_REFUSALS: Final = {
    LimitReason.BODY_TOO_LARGE: Refusal(
        "body_too_large", "Content too large: the request body is over this route's limit.\n"
    ),
    LimitReason.BODY_TIMEOUT: Refusal(
        "body_timeout", "Request timeout: the request body did not arrive in time.\n"
    ),
    LimitReason.HANDLER_TIMEOUT: Refusal(
        "handler_timeout",
        "Service unavailable: the request took too long to answer. Please try again shortly.\n",
    ),
}


class RequestLimitExceeded(BastionError):
    """Raised to the app by the body it is reading (``receive()`` under ASGI, ``wsgi.input``
    under WSGI) when the body passes its cap or its time: the app stops, and the limits layer
    answers ``413`` or ``408`` in its place. Not a ``ValueError`` or an ``OSError``, so a
    form parser that swallows those (werkzeug's, in its silent mode) cannot turn a cut body
    into an empty form. An app that catches it anyway changes nothing: the layer still
    refuses the request and drops the app's own answer."""

    def __init__(self, reason: LimitReason) -> None:
        super().__init__(f"request refused by the limits layer: {reason.value}")
        self.reason = reason


class Inherit(enum.Enum):
    """The type of :data:`INHERIT`."""

    INHERIT = "inherit"

    def __repr__(self) -> str:
        return "INHERIT"


INHERIT: Final = Inherit.INHERIT
"""A :class:`RouteLimits` field left as this keeps the default's value (``None`` removes the
limit on the route)."""


class Limits(NamedTuple):
    """The limits that apply to one request, resolved from the defaults and its route."""

    max_body_bytes: int | None
    body_timeout: float | None
    handler_timeout: float | None


def _bytes(name: str, value: object) -> int | None:
    if value is None:
        return None
    return _check.whole_number(name, value, low=0, unit="bytes", hint="or None for no cap")


def _timeout(name: str, value: object) -> float | None:
    if value is None:
        return None
    return _check.seconds(name, value, high=86_400.0, hint="or None for no limit")


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteLimits:
    """The limits of the routes a pattern names, in :attr:`RequestLimits.routes`: each field
    is a new value, ``None`` (no limit on these routes) or :data:`INHERIT` (the default's)."""

    max_body_bytes: int | Inherit | None = INHERIT
    body_timeout: float | Inherit | None = INHERIT
    handler_timeout: float | Inherit | None = INHERIT

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.max_body_bytes is not INHERIT:
            set_(self, "max_body_bytes", _bytes("max_body_bytes", self.max_body_bytes))
        for name in ("body_timeout", "handler_timeout"):
            value = getattr(self, name)
            if value is not INHERIT:
                set_(self, name, _timeout(name, value))

    def over(self, default: Limits) -> Limits:
        """These limits with :data:`INHERIT` fields taken from ``default``."""
        size, body, handler = self.max_body_bytes, self.body_timeout, self.handler_timeout
        return Limits(
            default.max_body_bytes if size is INHERIT else size,
            default.body_timeout if body is INHERIT else body,
            default.handler_timeout if handler is INHERIT else handler,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestLimits:
    """The request-limits policy (the module docstring has the rules).

    * ``max_body_bytes``: the body cap in bytes (default 1 MiB; ``0`` allows no body);
    * ``body_timeout``: seconds for the whole body to arrive (default 30);
    * ``handler_timeout``: seconds for the app to start its response, time spent waiting for
      the body excluded (default 30; ASGI only: a WSGI server's worker timeout does this);
    * ``routes``: path patterns mapped to :class:`RouteLimits`;
    * ``retry_after``: the ``Retry-After`` of the ``503`` (whole seconds, default 5).

    ``None`` turns a limit off; ``Bastion(limits=None)`` turns the layer off.
    """

    max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES
    body_timeout: float | None = DEFAULT_BODY_TIMEOUT
    handler_timeout: float | None = DEFAULT_HANDLER_TIMEOUT
    routes: Mapping[str, RouteLimits] = field(default_factory=dict)
    retry_after: int = _DEFAULT_RETRY_AFTER

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "max_body_bytes", _bytes("max_body_bytes", self.max_body_bytes))
        set_(self, "body_timeout", _timeout("body_timeout", self.body_timeout))
        set_(self, "handler_timeout", _timeout("handler_timeout", self.handler_timeout))
        if not hasattr(self.routes, "items"):
            raise ConfigurationError(
                "routes must map path patterns to RouteLimits "
                "({'/upload': RouteLimits(max_body_bytes=50_000_000)})",
                setting="routes",
            )
        routes: dict[str, RouteLimits] = {}
        for text, route in self.routes.items():
            setting = f"routes[{text!r}]"
            pattern = PathPattern.parse(text, setting=setting)
            if not isinstance(route, RouteLimits):
                raise ConfigurationError(
                    f"{setting} must be a RouteLimits, got {type(route).__name__}",
                    setting=setting,
                )
            routes[pattern.text] = route
        set_(self, "routes", MappingProxyType(routes))
        _check.whole_number("retry_after", self.retry_after, low=1, high=86_400, unit="seconds")

    @property
    def default(self) -> Limits:
        """The limits of a request no route names."""
        return Limits(self.max_body_bytes, self.body_timeout, self.handler_timeout)


def _loosens(limits: Limits, default: Limits) -> bool:
    """Whether any of ``limits`` is weaker than the default's (larger, or off where it is on)."""
    for mine, theirs in zip(limits, default, strict=True):
        if theirs is not None and (mine is None or mine > theirs):
            return True
    return False


class _Route(NamedTuple):
    pattern: PathPattern
    limits: Limits
    loosens: bool


class LimitTable:
    """:class:`RequestLimits` compiled once: :meth:`resolve` gives a request's :class:`Limits`."""

    __slots__ = ("_default", "_routes", "policy")

    def __init__(self, policy: RequestLimits) -> None:
        if not isinstance(policy, RequestLimits):
            raise ConfigurationError(
                "limits must be a RequestLimits (RequestLimits(max_body_bytes=...))",
                setting="limits",
            )
        self.policy = policy
        self._default = default = policy.default
        routes = []
        for text, route in policy.routes.items():
            pattern = PathPattern.parse(text, setting=f"routes[{text!r}]")
            limits = route.over(default)
            routes.append(_Route(pattern, limits, _loosens(limits, default)))
        # Most specific first: exact paths, then prefixes, each longest first.
        routes.sort(key=lambda r: (r.pattern.prefix, -len(r.pattern.base)))
        self._routes = tuple(routes)

    @property
    def default(self) -> Limits:
        """The limits of a request no route names."""
        return self._default

    @property
    def off(self) -> bool:
        """Whether no request is limited at all (every limit off, on every route)."""
        return all(value is None for value in self._default) and all(
            value is None for route in self._routes for value in route.limits
        )

    def resolve(self, path: str) -> Limits:
        """The limits of a request for ``path`` (the full path, mount prefix included)."""
        if not self._routes:
            return self._default
        forms = match_forms(path)
        for route in self._routes:
            pattern = route.pattern
            if pattern.exempts(path) if route.loosens else pattern.covers(forms):
                return route.limits
        return self._default

    def __repr__(self) -> str:
        return f"LimitTable({self.policy!r})"


def declared_length(value: str | bytes | None) -> int | None:
    """The body length a ``Content-Length`` value declares; ``None`` when it is absent or not
    a plain decimal number (the server refuses such framing; the body is then counted as it
    is read). Bounded: a value of more than 19 digits (leading zeros aside) reads as larger
    than any cap."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip(" \t")
    if not text.isascii() or not text.isdigit():
        return None
    text = text.lstrip("0") or "0"  # 1*DIGIT: leading zeros name the same length
    if len(text) > 19:
        return 2**63
    return int(text)


def audit_details(
    reason: LimitReason,
    limits: Limits,
    *,
    method: str,
    path: str,
    declared: int | None = None,
    received: int | None = None,
) -> dict[str, DetailValue]:
    """The details of the audit event of a refusal: the reason, the request's method and path,
    the limit it passed, and the body length it declared or the bytes read of it."""
    if reason is LimitReason.BODY_TOO_LARGE:
        limit: DetailValue = limits.max_body_bytes
    elif reason is LimitReason.BODY_TIMEOUT:
        limit = limits.body_timeout
    else:
        limit = limits.handler_timeout
    details: dict[str, DetailValue] = {
        "reason": reason.value,
        "method": method,
        "path": path,
        "limit": limit,
    }
    if declared is not None:
        details["declared_bytes"] = declared
    if received is not None:
        details["received_bytes"] = received
    return details
