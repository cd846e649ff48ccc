"""``RequestLimitsMiddleware`` for WSGI apps (Flask): what of :mod:`bastion.asgi.limits` a
WSGI middleware can do.

What it does, per request, with the limits of its route
(:mod:`bastion.core.request_limits`):

* a ``CONTENT_LENGTH`` over the cap is refused with ``413`` at once: the app is not called and
  ``wsgi.input`` is not read;
* otherwise ``wsgi.input`` is wrapped. A read never asks the server's stream for more than one
  byte past the cap, and the read that passes it raises
  :class:`~bastion.core.request_limits.RequestLimitExceeded` in the app instead of returning
  its bytes: a chunked upload (``wsgi.input_terminated``) is stopped at the cap, unread beyond
  it. Every later read raises again;
* a read that returns after the body's deadline (``clock`` time since the request reached the
  layer) raises the same error, refused with ``408``;
* the refusal replaces the app's answer when the app raised the error, or caught it and
  answered: its response is closed and dropped (``start_response`` is called again with the
  error, as PEP 3333 allows before the headers are sent).

What it cannot do:

* **interrupt a read.** ``wsgi.input.read()`` blocks its thread until the server's socket gives
  data; a client that stops sending altogether is noticed only when a read returns. The bound
  on a silent client is the server's: gunicorn's ``--timeout`` (sync workers) or the socket
  timeout of its threads, waitress's ``channel_timeout``, uWSGI's ``socket-timeout``. Servers
  that buffer the whole body before calling the app (waitress) have read it already: set their
  own cap too (``max_request_body_size``);
* **the handler timeout.** A thread cannot be cancelled from outside in Python, so
  ``handler_timeout`` is not enforced here (a message says so at start-up); bound a view with
  the server's worker timeout (gunicorn ``--timeout``, uWSGI ``harakiri``);
* **a body read while the response is streamed.** A read from inside the response iterable
  (after the app returned) raises the same error, but the status is already chosen: the error
  reaches the server, which ends the response.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from bastion.core.audit import Auditor, Outcome
from bastion.core.clock import Clock, system_clock
from bastion.core.refusal import refusal_body
from bastion.core.request import wsgi_path
from bastion.core.request_limits import (
    LimitReason,
    RequestLimitExceeded,
    RequestLimits,
    audit_details,
    declared_length,
)
from bastion.errors import AuditUnavailable
from bastion.slices import limits_arguments
from bastion.wsgi._http import refusal_headers, send_response

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from bastion.config import Bastion
    from bastion.core.client import TrustedProxies
    from bastion.core.request_limits import Limits
    from bastion.runtime import Runtime
    from bastion.wsgi.types import Environ, StartResponse, WSGIApp

__all__ = ["RequestLimitsMiddleware"]

logger = logging.getLogger("bastion.security.limits")

# No Connection: close here: hop-by-hop headers are the server's (PEP 3333); a server that
# sees the body unread closes the connection itself.
_NO_STORE: Final = (("Cache-Control", "no-store"),)


class RequestLimitsMiddleware:
    """Apply ``limits`` (default: the documented defaults) to every request of a WSGI app;
    settings as in the ASGI twin. ``clock`` also keeps the body's deadline (a
    :class:`~bastion.core.clock.FrozenClock` in tests)."""

    __slots__ = ("_app", "_auditor", "_clock", "_forwarded", "_proxies", "_table")

    def __init__(
        self,
        app: WSGIApp,
        limits: RequestLimits | None = None,
        *,
        bastion: Bastion | Runtime | None = None,
        auditor: Auditor | None = None,
        proxies: TrustedProxies | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self._app = app
        self._table, self._auditor, self._proxies, clock = limits_arguments(
            limits, bastion=bastion, auditor=auditor, proxies=proxies, clock=clock
        )
        table = self._table
        self._forwarded = "HTTP_" + self._proxies.header.upper().replace("-", "_")
        self._clock = clock
        default = table.default
        if default.handler_timeout is not None or any(
            route.handler_timeout is not None for route in table.policy.routes.values()
        ):
            logger.info(
                "bastion request limits: handler_timeout is not enforced under WSGI (a thread "
                "cannot be cancelled); use the server's worker timeout (gunicorn --timeout, "
                "uWSGI harakiri)"
            )

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        limits = self._table.resolve(
            wsgi_path(environ.get("SCRIPT_NAME", ""), environ.get("PATH_INFO", ""))
        )
        cap = limits.max_body_bytes
        declared = declared_length(environ.get("CONTENT_LENGTH"))
        if cap is not None and declared is not None and declared > cap:
            self.audit(environ, LimitReason.BODY_TOO_LARGE, limits, declared=declared)
            return self.refuse(environ, start_response, LimitReason.BODY_TOO_LARGE)
        if cap is None and limits.body_timeout is None:
            return self._app(environ, start_response)
        return _Exchange(self, environ, start_response, limits, declared).run()

    def refuse(
        self,
        environ: Environ,
        start_response: StartResponse,
        reason: LimitReason,
        exc_info: object = None,
    ) -> list[bytes]:
        """The refusal for ``reason`` through the one sender, in the format the request asks
        for; ``exc_info`` replaces a response the app had started (PEP 3333)."""
        kind, body = refusal_body(
            reason.refusal,
            accept=environ.get("HTTP_ACCEPT"),
            content_type=environ.get("CONTENT_TYPE"),
        )
        headers = refusal_headers(kind, body, _NO_STORE)
        return send_response(start_response, reason.status, headers, body, exc_info)

    def audit(
        self,
        environ: Environ,
        reason: LimitReason,
        limits: Limits,
        *,
        declared: int | None = None,
        received: int | None = None,
    ) -> None:
        """Audit a refusal (sent or, once the response was under way, not)."""
        forwarded = environ.get(self._forwarded)
        address = self._proxies.client(environ.get("REMOTE_ADDR"), [forwarded] if forwarded else [])
        self._auditor.emit(
            reason.event,
            outcome=Outcome.BLOCKED,
            client_ip=None if address is None else str(address),
            details=audit_details(
                reason,
                limits,
                method=environ.get("REQUEST_METHOD", "GET"),
                path=wsgi_path(environ.get("SCRIPT_NAME", ""), environ.get("PATH_INFO", "")),
                declared=declared,
                received=received,
            ),
        )

    def __repr__(self) -> str:
        return f"RequestLimitsMiddleware({self._table.policy!r})"


def _discard(_data: bytes) -> None:
    """The ``write`` handed to an app answering a refused request: its bytes go nowhere."""


class _Exchange:
    """One request under its limits: the counted ``wsgi.input`` and the watched
    ``start_response``."""

    __slots__ = (
        "_layer",
        "_start_response",
        "audit_failure",
        "deadline",
        "declared",
        "done",
        "environ",
        "error",
        "limits",
        "received",
        "started",
    )

    def __init__(
        self,
        layer: RequestLimitsMiddleware,
        environ: Environ,
        start_response: StartResponse,
        limits: Limits,
        declared: int | None,
    ) -> None:
        self._layer = layer
        self._start_response = start_response
        self.environ = environ
        self.limits = limits
        self.declared = declared
        timeout = limits.body_timeout
        self.deadline = None if timeout is None else layer._clock.now() + timeout
        self.done = declared == 0
        self.received = 0
        self.error: RequestLimitExceeded | None = None
        self.audit_failure: AuditUnavailable | None = None
        self.started = False

    def run(self) -> Iterable[bytes]:
        environ = self.environ
        environ["wsgi.input"] = _LimitedInput(environ["wsgi.input"], self)
        try:
            result = self._layer._app(environ, self.start_response)
        except Exception:
            if self.error is None:
                raise
            self._raise_audit_failure()
            return self._refusal(self.error)
        if self.error is None:
            return result
        close = getattr(result, "close", None)
        if close is not None:
            close()
        self._raise_audit_failure()
        return self._refusal(self.error)

    def _raise_audit_failure(self) -> None:
        """A refusal the fail-closed trail could not record is not sent either: the error goes
        up to the security-headers layer, which answers 503 audit_unavailable."""
        if self.audit_failure is not None:
            raise self.audit_failure

    def _refusal(self, error: RequestLimitExceeded) -> list[bytes]:
        exc_info = (type(error), error, error.__traceback__) if self.started else None
        return self._layer.refuse(self.environ, self._start_response, error.reason, exc_info)

    def start_response(self, status: str, headers: Any, exc_info: Any = None) -> Callable[..., Any]:
        if self.error is not None:
            return _discard  # the app's answer to a refusal: the layer's own goes out instead
        self.started = True
        if exc_info is None:
            return self._start_response(status, headers)
        return self._start_response(status, headers, exc_info)

    def refuse(self, reason: LimitReason) -> RequestLimitExceeded:
        """Record and audit the refusal; the error the read raises."""
        error = self.error
        if error is None:
            self.error = error = RequestLimitExceeded(reason)
            try:
                self._layer.audit(self.environ, reason, self.limits, received=self.received)
            except AuditUnavailable as failure:  # fail-closed: kept, raised after the app
                self.audit_failure = failure
                raise
        return error

    def allowance(self, size: int | None) -> int | None:
        """How much one read may ask of the server's stream: ``size`` (``None``: all), never
        more than one byte past the cap."""
        if self.error is not None:
            raise RequestLimitExceeded(self.error.reason)  # never read past a refusal
        cap = self.limits.max_body_bytes
        if cap is None:
            return None if size is None or size < 0 else size
        room = cap - self.received + 1
        return room if size is None or size < 0 else min(size, room)

    def count(self, data: bytes, asked: int | None) -> bytes:
        """Count what a read returned; raise if it passed the cap, or if it came after the
        deadline while the body was still arriving (a read after its end is not timed).

        Every byte is counted, after the declared length too: under ``wsgi.input_terminated``
        the server ends the stream, not the ``Content-Length`` (werkzeug's server passes on
        ``Content-Length: 0`` beside a chunked body), so the header cannot end the count."""
        self.received += len(data)
        cap = self.limits.max_body_bytes
        if cap is not None and self.received > cap:
            raise self.refuse(LimitReason.BODY_TOO_LARGE)
        if self.done:
            return data
        deadline = self.deadline
        if deadline is not None and self._layer._clock.now() > deadline:
            raise self.refuse(LimitReason.BODY_TIMEOUT)
        if (not data and asked != 0) or (
            self.declared is not None and self.received >= self.declared
        ):
            self.done = True  # the end of the body
        return data


class _LimitedInput:
    """``wsgi.input`` under the limits: ``read``, ``readline``, ``readlines`` and iteration
    (PEP 3333), each counted by the exchange."""

    __slots__ = ("_exchange", "_stream")

    def __init__(self, stream: Any, exchange: _Exchange) -> None:
        self._stream = stream
        self._exchange = exchange

    def read(self, size: int | None = -1) -> bytes:
        exchange = self._exchange
        asked = exchange.allowance(size)
        data: bytes = self._stream.read() if asked is None else self._stream.read(asked)
        return exchange.count(data, asked)

    def readline(self, size: int | None = -1) -> bytes:
        exchange = self._exchange
        asked = exchange.allowance(size)
        data: bytes = self._stream.readline() if asked is None else self._stream.readline(asked)
        return exchange.count(data, asked)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line
