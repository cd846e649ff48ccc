"""``RequestLimitsMiddleware``: the body cap, the body-read timeout and the handler timeout of
:mod:`bastion.core.request_limits`, under ASGI.

Plain ASGI, one concern. Per HTTP request, with the limits of its route:

* a ``Content-Length`` over the cap is refused with ``413`` at once: the app is not called and
  ``receive()`` is never awaited, so not one byte of the body is read (nor ``100 Continue``
  sent to a client that waits for it);
* otherwise the app's ``receive()`` counts the body. The message that passes the cap raises
  :class:`~bastion.core.request_limits.RequestLimitExceeded` in the app instead of reaching it,
  and ``receive()`` is not awaited again: the rest of a chunked upload is never read;
* while the body is incomplete each ``receive()`` waits only until the body's deadline; past
  it, the same error, and ``408``;
* the app runs under the handler deadline, paused while it waits for the body and stopped
  when its response starts; past it the app is cancelled and the client gets ``503`` with
  ``Retry-After``.

A refusal goes out only while the response has not started: the app's own answer to the error
(a framework's 500 page) is dropped, and the refusal is sent once the app has returned. After
the start, the error still stops the app and is audited, and the response is left cut short
(the server closes the connection). Every refusal is audited (``input_validation_fail`` for
the body, ``handler_timeout`` for the app) with the client address read through the trusted
proxies. WebSocket and lifespan scopes pass untouched.

The timeouts run on the asyncio loop (``loop.call_at`` and task cancellation): uvicorn,
hypercorn's asyncio worker, daphne, granian. Under trio they cannot run: set both to ``None``
there (the body cap alone needs no loop).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Final

from bastion.asgi._http import send_refusal
from bastion.core.audit import Auditor, Outcome
from bastion.core.clock import system_clock
from bastion.core.refusal import refusal_body
from bastion.core.request import asgi_path
from bastion.core.request_limits import (
    LimitReason,
    RequestLimitExceeded,
    RequestLimits,
    audit_details,
    declared_length,
)
from bastion.errors import AuditUnavailable
from bastion.slices import limits_arguments

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.asgi.types import ASGIApp, Message, Receive, Scope, Send
    from bastion.config import Bastion
    from bastion.core.client import TrustedProxies
    from bastion.core.clock import Clock
    from bastion.core.request_limits import Limits
    from bastion.runtime import Runtime

__all__ = ["RequestLimitsMiddleware"]

logger = logging.getLogger("bastion.security.limits")

_NO_STORE: Final = (b"cache-control", b"no-store")
_CLOSE: Final = (b"connection", b"close")


class RequestLimitsMiddleware:
    """Apply ``limits`` (a :class:`~bastion.core.request_limits.RequestLimits`; default: the
    documented defaults) to every HTTP request of ``app``. See the module docstring.

    ``auditor`` receives the refusals' events (default: JSON lines on ``bastion.audit``, timed
    by ``clock``), with the client address read through ``proxies``. The deadlines themselves
    run on the event loop's clock. ``bastion=`` takes these from a
    :class:`~bastion.config.Bastion` or its runtime (``Bastion(limits=...)``).
    """

    __slots__ = ("_app", "_auditor", "_forwarded", "_proxies", "_retry_after", "_table")

    def __init__(
        self,
        app: ASGIApp,
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
        self._forwarded = self._proxies.header.encode("ascii")
        self._retry_after = (b"retry-after", str(self._table.policy.retry_after).encode("ascii"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        root = scope.get("root_path")
        path = scope["path"]
        limits = self._table.resolve(asgi_path(path, root) if root else path or "/")
        if limits == _UNLIMITED:
            await self._app(scope, receive, send)
            return
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = declared_length(value)
                break
        cap = limits.max_body_bytes
        if cap is not None and declared is not None and declared > cap:
            self.audit(scope, LimitReason.BODY_TOO_LARGE, limits, declared=declared)
            await self.refuse(scope, send, LimitReason.BODY_TOO_LARGE)
            return
        # A declared length within the cap proves nothing about the body: with
        # "Transfer-Encoding: chunked" beside it, h11 reads the chunks and the scope still says
        # "content-length: 0". Every request's body is counted as it is read.
        await _Exchange(self, scope, receive, send, limits).run()

    async def refuse(self, scope: Scope, send: Send, reason: LimitReason) -> None:
        """Send the refusal for ``reason`` through the one sender, in the format the request
        asks for."""
        accept = content_type = None
        for name, value in scope["headers"]:
            if name == b"accept" and accept is None:
                accept = value.decode("latin-1")
            elif name == b"content-type" and content_type is None:
                content_type = value.decode("latin-1")
        kind, body = refusal_body(reason.refusal, accept=accept, content_type=content_type)
        extra = [_NO_STORE, _CLOSE] if reason.closes else [_NO_STORE, self._retry_after]
        await send_refusal(send, reason.status, kind, body, extra)

    def audit(
        self,
        scope: Scope,
        reason: LimitReason,
        limits: Limits,
        *,
        declared: int | None = None,
        received: int | None = None,
    ) -> None:
        """Audit a refusal (sent or, after the response started, not)."""
        forwarded = [v.decode("latin-1") for n, v in scope["headers"] if n == self._forwarded]
        client = scope.get("client")
        address = self._proxies.client(client[0] if client else None, forwarded)
        outcome = Outcome.FAILURE if reason is LimitReason.HANDLER_TIMEOUT else Outcome.BLOCKED
        self._auditor.emit(
            reason.event,
            outcome=outcome,
            client_ip=None if address is None else str(address),
            details=audit_details(
                reason,
                limits,
                method=scope.get("method", "GET"),
                path=asgi_path(scope.get("path", "/"), scope.get("root_path", "")),
                declared=declared,
                received=received,
            ),
        )

    def __repr__(self) -> str:
        return f"RequestLimitsMiddleware({self._table.policy!r})"


_UNLIMITED: Final = (None, None, None)


class _Exchange:
    """One request under its limits: the counting ``receive``, the ``send`` that notes the
    start of the response, and one timer per deadline.

    The timers are plain ``loop.call_at`` handles, armed once (the body's on the first read of
    it, so a request whose app never reads a body has none) and re-armed only when they find
    their deadline moved (a wait for the body pushes the handler's back): a request costs one
    or two timers, not a timer per message. A timer that fires cancels the task it bounds (the
    app's, or the one awaiting the body), and the cancellation is turned into the refusal only
    if it was the timer's own (``Task.uncancel``, as ``asyncio.timeout`` does).
    """

    __slots__ = (
        "_layer",
        "_loop",
        "_receive",
        "_send",
        "audit_failure",
        "body_deadline",
        "body_done",
        "body_due",
        "body_timer",
        "handler_deadline",
        "handler_due",
        "handler_timer",
        "limits",
        "paused_since",
        "received",
        "refused",
        "scope",
        "started",
        "task",
        "waiter",
    )

    def __init__(
        self,
        layer: RequestLimitsMiddleware,
        scope: Scope,
        receive: Receive,
        send: Send,
        limits: Limits,
    ) -> None:
        self._layer = layer
        body_timeout, handler_timeout = limits.body_timeout, limits.handler_timeout
        # Only a deadline needs the loop: the body cap alone runs under any event loop (trio).
        timed = body_timeout is not None or handler_timeout is not None
        self._loop = asyncio.get_running_loop() if timed else None
        self._receive = receive
        self._send = send
        self.scope = scope
        self.limits = limits
        now = self._time()
        self.body_deadline = None if body_timeout is None else now + body_timeout
        self.handler_deadline = None if handler_timeout is None else now + handler_timeout
        self.body_timer: asyncio.TimerHandle | None = None
        self.handler_timer: asyncio.TimerHandle | None = None
        self.body_due = self.handler_due = False  # the deadline passed (a refusal follows)
        self.body_done = False  # the last http.request message (or a disconnect) came
        self.paused_since: float | None = None
        self.received = 0
        self.refused: LimitReason | None = None
        self.audit_failure: AuditUnavailable | None = None
        self.started = False
        self.task: asyncio.Task[Any] | None = None
        self.waiter: asyncio.Task[Any] | None = None  # the task awaiting the body, if any

    async def run(self) -> None:
        app, scope = self._layer._app, self.scope
        deadline = self.handler_deadline
        task = cancelling = None
        if deadline is not None:
            self.task = task = asyncio.current_task()
            if task is not None:
                cancelling = task.cancelling()
                self.handler_timer = self._call_at(deadline, self._handler_expired)
        try:
            await app(scope, self.receive, self.send)
        except asyncio.CancelledError:
            if not self.handler_due or task is None or task.uncancel() > (cancelling or 0):
                raise  # not the handler's deadline (a server shutting down, a disconnect)
        except Exception:
            if self.refused is None:
                raise
            # The app's answer to the body's error (Starlette re-raises it after its 500
            # page, which was dropped): the refusal below replaces it.
        finally:
            for timer in (self.handler_timer, self.body_timer):
                if timer is not None:
                    timer.cancel()
        if self.handler_due and self.refused is None:
            self.refuse(LimitReason.HANDLER_TIMEOUT)
        if self.audit_failure is not None and not self.started:
            # The refusal could not be recorded: not sent either. The security-headers layer
            # answers 503 audit_unavailable, as for every event a fail-closed trail refuses.
            raise self.audit_failure
        if self.refused is not None and not self.started:
            self.started = True
            await self._layer.refuse(scope, self._send, self.refused)

    def _time(self) -> float:
        return 0.0 if self._loop is None else self._loop.time()

    def _call_at(self, when: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        if self._loop is None:  # pragma: no cover (a deadline implies the loop)
            raise RuntimeError("a request deadline without an event loop")
        return self._loop.call_at(when, callback)

    def _call_soon(self, callback: Callable[[], None]) -> asyncio.Handle:
        if self._loop is None:  # pragma: no cover (a deadline implies the loop)
            raise RuntimeError("a request deadline without an event loop")
        return self._loop.call_soon(callback)

    def _handler_expired(self) -> None:
        self.handler_timer = None
        if self.started or self.refused is not None or self.paused_since is not None:
            return  # answered, refused, or waiting for the body (its wait re-arms the timer)
        deadline = self.handler_deadline
        if deadline is not None and deadline > self._time():
            self.handler_timer = self._call_at(deadline, self._handler_expired)
            return  # pushed back by a wait for the body
        if self.task is not None:
            self.handler_due = True
            self.task.cancel()

    def _body_expired(self) -> None:
        self.body_timer = None
        if self.body_done or self.refused is not None:
            return
        self.body_due = True
        if self.waiter is not None:
            self.waiter.cancel()

    def refuse(self, reason: LimitReason) -> RequestLimitExceeded:
        """Record and audit the refusal; the error the app's ``receive()`` raises."""
        if self.refused is None:
            self.refused = reason
            received = None if reason is LimitReason.HANDLER_TIMEOUT else self.received
            try:
                self._layer.audit(self.scope, reason, self.limits, received=received)
            except AuditUnavailable as error:  # fail-closed: kept, raised once the app is out
                self.audit_failure = error
                raise
        return RequestLimitExceeded(self.refused)

    async def receive(self) -> Message:
        if self.refused is not None:
            raise RequestLimitExceeded(self.refused)  # never read past a refusal
        if self.body_done:
            return await self._receive()  # the body is whole: waiting for a disconnect
        deadline = self.body_deadline
        waiter = guard = None
        if deadline is not None:
            waiter = asyncio.current_task()
            if self.body_due:
                # Past the deadline: a message already waiting still comes through (the call
                # below returns without suspending); a wait for one is cut at once.
                guard = self._call_soon(self._body_expired)
            elif self.body_timer is None:
                self.body_timer = self._call_at(deadline, self._body_expired)
        cancelling = 0 if waiter is None else waiter.cancelling()
        self.waiter = waiter
        paused = self.handler_deadline is not None and not self.started
        if paused:
            self.paused_since = self._time()
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            if not self.body_due or waiter is None or waiter.uncancel() > cancelling:
                raise
            raise self.refuse(LimitReason.BODY_TIMEOUT) from None
        finally:
            self.waiter = None
            if guard is not None:
                guard.cancel()
            if paused:
                self._resume()
        return self._count(message)

    def _count(self, message: Message) -> Message:
        """Count a message of the body; raise if it passed the cap."""
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            cap = self.limits.max_body_bytes
            if cap is not None and self.received > cap:
                raise self.refuse(LimitReason.BODY_TOO_LARGE)
            if not message.get("more_body", False):
                self.body_done = True
        else:  # http.disconnect: nothing more will come
            self.body_done = True
        return message

    def _resume(self) -> None:
        """Push the handler's deadline back by the time spent waiting for the body; re-arm its
        timer if it fired during the wait."""
        since, self.paused_since = self.paused_since, None
        deadline = self.handler_deadline
        if since is None or deadline is None:
            return
        self.handler_deadline = deadline = deadline + (self._time() - since)
        if self.handler_timer is None and not self.handler_due and not self.started:
            self.handler_timer = self._call_at(deadline, self._handler_expired)

    async def send(self, message: Message) -> None:
        if self.refused is not None or self.handler_due:
            return  # the app's answer to a refusal: the layer's own goes out instead
        if message["type"] == "http.response.start":
            self.started = True  # the status is on its way: the handler's deadline is met
        await self._send(message)
