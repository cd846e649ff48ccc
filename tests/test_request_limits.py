"""Request limits: the policy and its route table (core), and the ASGI layer driven message by
message, so that what it reads of a body and when it refuses is observed exactly.

The timeouts run on the event loop's clock; the few tests of them use deadlines of tens of
milliseconds and wait on the layer, never on a fixed sleep of the test's own.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import pytest

from bastion.asgi.limits import RequestLimitsMiddleware
from bastion.config import Bastion
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing
from bastion.core.request_limits import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HANDLER_TIMEOUT,
    DEFAULT_MAX_BODY_BYTES,
    INHERIT,
    LimitReason,
    Limits,
    LimitTable,
    RequestLimitExceeded,
    RequestLimits,
    RouteLimits,
    declared_length,
)
from bastion.errors import BastionError, ConfigurationError
from bastion.testing.audit import RecordingAuditSink

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from bastion.asgi.types import Message, Receive, Scope, Send


# -- the policy ---------------------------------------------------------------------------


def test_defaults_are_on_and_documented() -> None:
    limits = RequestLimits()
    assert limits.max_body_bytes == DEFAULT_MAX_BODY_BYTES == 1024 * 1024
    assert limits.body_timeout == DEFAULT_BODY_TIMEOUT == 30.0
    assert limits.handler_timeout == DEFAULT_HANDLER_TIMEOUT == 30.0
    assert limits.retry_after == 5
    assert dict(limits.routes) == {}
    assert Bastion().limits == limits  # on by default, through the front door


@pytest.mark.parametrize(
    ("settings", "setting"),
    [
        ({"max_body_bytes": -1}, "max_body_bytes"),
        ({"max_body_bytes": True}, "max_body_bytes"),
        ({"max_body_bytes": 1.5}, "max_body_bytes"),
        ({"body_timeout": 0}, "body_timeout"),
        ({"body_timeout": float("nan")}, "body_timeout"),
        ({"body_timeout": "30"}, "body_timeout"),
        ({"handler_timeout": -1.0}, "handler_timeout"),
        ({"handler_timeout": 86_401}, "handler_timeout"),
        ({"retry_after": 0}, "retry_after"),
        ({"routes": ["/upload"]}, "routes"),
        ({"routes": {"upload": RouteLimits()}}, "routes['upload']"),
        ({"routes": {"/up*": RouteLimits()}}, "routes['/up*']"),
        ({"routes": {"/upload": {"max_body_bytes": 5}}}, "routes['/upload']"),
    ],
)
def test_malformed_settings_are_refused_by_name(settings: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RequestLimits(**settings)
    assert caught.value.setting == setting


def test_route_limits_validate_what_they_change() -> None:
    with pytest.raises(ConfigurationError) as caught:
        RouteLimits(max_body_bytes=-5)
    assert caught.value.setting == "max_body_bytes"
    with pytest.raises(ConfigurationError) as caught:
        RouteLimits(body_timeout=0)
    assert caught.value.setting == "body_timeout"
    route = RouteLimits(max_body_bytes=10, handler_timeout=None)
    assert route.body_timeout is INHERIT
    assert route.over(Limits(100, 3.0, 4.0)) == Limits(10, 3.0, None)
    assert repr(INHERIT) == "INHERIT"


def test_every_limit_can_be_turned_off() -> None:
    table = LimitTable(RequestLimits(max_body_bytes=None, body_timeout=None, handler_timeout=None))
    assert table.off
    assert table.resolve("/x") == (None, None, None)
    assert not LimitTable(RequestLimits()).off


def test_bastion_checks_the_slice_and_keeps_repr_short() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Bastion(limits={"max_body_bytes": 10})  # type: ignore[arg-type]
    assert caught.value.setting == "limits"
    assert "limits" not in repr(Bastion())
    assert "limits=RequestLimits(max_body_bytes=10" in repr(
        Bastion(limits=RequestLimits(max_body_bytes=10))
    )
    assert Bastion(limits=None).limits is None


def test_the_refused_body_error_is_not_a_value_error() -> None:
    """werkzeug's silent form parser swallows ValueError: a cut body must not become a form."""
    error = RequestLimitExceeded(LimitReason.BODY_TOO_LARGE)
    assert isinstance(error, BastionError)
    assert not isinstance(error, ValueError | OSError)
    assert error.reason is LimitReason.BODY_TOO_LARGE


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("12", 12),
        (b"12", 12),
        (" 7\t", 7),
        ("0", 0),
        ("", None),
        ("-1", None),
        ("+5", None),
        ("1e3", None),
        ("12, 12", None),
        ("\u0663", None),  # ARABIC-INDIC DIGIT THREE: isdigit() but not HTTP
        ("9" * 25, 2**63),
    ],
)
def test_declared_length_reads_only_plain_decimals(
    value: str | bytes | None, expected: int | None
) -> None:
    assert declared_length(value) == expected


# -- the route table ----------------------------------------------------------------------


def _table() -> LimitTable:
    return LimitTable(
        RequestLimits(
            max_body_bytes=1000,
            routes={
                "/api/*": RouteLimits(max_body_bytes=100),  # tightens
                "/api/upload": RouteLimits(max_body_bytes=50_000, body_timeout=None),  # loosens
                "/api/v2/*": RouteLimits(handler_timeout=5.0),  # tightens
            },
        )
    )


def test_the_most_specific_route_wins() -> None:
    table = _table()
    assert table.resolve("/api/upload").max_body_bytes == 50_000
    assert table.resolve("/api/upload").body_timeout is None
    assert table.resolve("/api/other").max_body_bytes == 100
    assert table.resolve("/api/v2/x") == Limits(1000, 30.0, 5.0)  # fields from the defaults
    assert table.resolve("/elsewhere") == table.default == Limits(1000, 30.0, 30.0)


@pytest.mark.parametrize("path", ["/API/UPLOAD", "/api/upload/", "//api/upload", "/api/./upload"])
def test_a_loosening_route_needs_its_exact_normal_path(path: str) -> None:
    """A spelling the app may route to the upload view gets the tighter ``/api/*`` cap, never
    the upload route's larger one."""
    assert _table().resolve(path).max_body_bytes == 100


@pytest.mark.parametrize("path", ["/API/x", "/api//x", "/Api/"])
def test_a_tightening_route_covers_every_spelling(path: str) -> None:
    assert _table().resolve(path).max_body_bytes == 100


# -- the ASGI layer, message by message -----------------------------------------------------


class Exchange:
    """One request sent to an ASGI app from scripted body chunks; what it sent back and how
    many times it awaited ``receive``."""

    def __init__(
        self,
        chunks: Sequence[bytes] = (b"",),
        *,
        headers: Sequence[tuple[bytes, bytes]] = (),
        path: str = "/",
        method: str = "POST",
        stall_after: int | None = None,
        kind: str = "http",
    ) -> None:
        self.chunks = list(chunks)
        self.stall_after = stall_after
        self.receives = 0
        self.sent: list[Message] = []
        self.scope: Scope = {
            "type": kind,
            "method": method,
            "path": path,
            "root_path": "",
            "headers": [(b"accept", b"application/json"), *headers],
            "client": ("203.0.113.9", 4000),
        }

    async def receive(self) -> Message:
        self.receives += 1
        index = self.receives - 1
        if self.stall_after is not None and index >= self.stall_after:
            await asyncio.Event().wait()  # a client that sends nothing more
        if index < len(self.chunks):
            more = index < len(self.chunks) - 1
            return {"type": "http.request", "body": self.chunks[index], "more_body": more}
        await asyncio.Event().wait()  # waiting for a disconnect that never comes
        raise AssertionError("unreachable")

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    async def run(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        await app(self.scope, self.receive, self.send)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])

    def error(self) -> str:
        return str(json.loads(self.body)["error"])


class ReadingApp:
    """Reads the whole body, then answers ``200`` with its length. ``answer_errors`` makes it
    catch everything and answer ``400`` (an app that hides errors)."""

    def __init__(self, *, answer_errors: bool = False) -> None:
        self.seen = 0
        self.called = False
        self.answer_errors = answer_errors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.called = True
        try:
            while True:
                message = await receive()
                self.seen += len(message.get("body", b""))
                if not message.get("more_body"):
                    break
        except Exception:
            if not self.answer_errors:
                raise
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b"app's own answer"})
            return
        body = str(self.seen).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


def layer(
    app: Any, sink: RecordingAuditSink | None = None, **limits: Any
) -> RequestLimitsMiddleware:
    auditor = Auditor(
        IdentifierHasher(KeyRing.generate()), FrozenClock(), sink or RecordingAuditSink()
    )
    return RequestLimitsMiddleware(app, RequestLimits(**limits), auditor=auditor)


@pytest.mark.asyncio
async def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    sink = RecordingAuditSink()
    app = ReadingApp()
    exchange = Exchange([b"x" * 10], headers=[(b"content-length", b"5000")], path="/up")
    await exchange.run(layer(app, sink, max_body_bytes=1000))
    assert exchange.status == 413
    assert exchange.error() == "body_too_large"
    assert exchange.receives == 0  # not one byte read, no 100 Continue
    assert not app.called
    assert exchange.headers[b"connection"] == b"close"
    assert exchange.headers[b"cache-control"] == b"no-store"
    assert exchange.headers[b"content-type"] == b"application/json"
    [event] = sink.events
    assert event.name == "input_validation_fail"
    assert event.outcome == "blocked"
    assert event.client_ip is not None
    assert dict(event.details) == {
        "reason": "body_too_large",
        "method": "POST",
        "path": "/up",
        "limit": 1000,
        "declared_bytes": 5000,
    }


@pytest.mark.asyncio
async def test_a_chunked_body_is_stopped_at_the_cap_without_reading_past_it() -> None:
    sink = RecordingAuditSink()
    app = ReadingApp()
    exchange = Exchange([b"a" * 600, b"b" * 600, b"c" * 600, b"d" * 600])
    await exchange.run(layer(app, sink, max_body_bytes=1000))
    assert exchange.status == 413
    assert exchange.error() == "body_too_large"
    assert exchange.receives == 2  # the chunk that crossed the cap, and nothing after it
    assert app.seen == 600  # the crossing chunk never reached the app
    assert [m["type"] for m in exchange.sent] == ["http.response.start", "http.response.body"]
    assert sink.events[0].details["received_bytes"] == 1200


@pytest.mark.asyncio
async def test_the_apps_own_answer_to_the_error_is_replaced() -> None:
    app = ReadingApp(answer_errors=True)
    exchange = Exchange([b"a" * 600, b"b" * 600])
    await exchange.run(layer(app, max_body_bytes=1000))
    assert exchange.status == 413
    assert b"app's own answer" not in exchange.body
    assert len([m for m in exchange.sent if m["type"] == "http.response.start"]) == 1


@pytest.mark.asyncio
async def test_a_receive_after_the_refusal_raises_without_reading() -> None:
    calls: list[str] = []

    async def stubborn(scope: Scope, receive: Receive, send: Send) -> None:
        for _ in range(3):
            try:
                await receive()
            except RequestLimitExceeded as error:
                calls.append(error.reason.value)

    exchange = Exchange([b"a" * 20, b"b", b"c"])
    await exchange.run(layer(stubborn, max_body_bytes=10))
    assert calls == ["body_too_large", "body_too_large", "body_too_large"]
    assert exchange.receives == 1
    assert exchange.status == 413


@pytest.mark.asyncio
@pytest.mark.parametrize(("size", "status"), [(1000, 200), (1001, 413)])
async def test_a_body_of_exactly_the_cap_passes(size: int, status: int) -> None:
    exchange = Exchange([b"x" * (size - 400), b"y" * 400])
    await exchange.run(layer(ReadingApp(), max_body_bytes=1000))
    assert exchange.status == status


@pytest.mark.asyncio
async def test_a_zero_cap_allows_only_an_empty_body() -> None:
    empty = Exchange([b""], headers=[(b"content-length", b"0")])
    await empty.run(layer(ReadingApp(), max_body_bytes=0))
    assert empty.status == 200
    one = Exchange([b"x"])
    await one.run(layer(ReadingApp(), max_body_bytes=0))
    assert one.status == 413


@pytest.mark.asyncio
async def test_a_body_that_stops_arriving_is_408() -> None:
    sink = RecordingAuditSink()
    app = ReadingApp()
    exchange = Exchange([b"a" * 10, b"b" * 10], stall_after=1)
    await exchange.run(layer(app, sink, body_timeout=0.05, handler_timeout=5.0))
    assert exchange.status == 408
    assert exchange.error() == "body_timeout"
    assert exchange.headers[b"connection"] == b"close"
    assert app.seen == 10
    [event] = sink.events
    assert event.name == "input_validation_fail"
    assert event.details["reason"] == "body_timeout"
    assert event.details["limit"] == 0.05
    assert event.details["received_bytes"] == 10


@pytest.mark.asyncio
async def test_past_the_deadline_a_waiting_message_still_comes_through() -> None:
    """The app, not the client, was slow to read: a chunk already there is delivered; the next
    wait is cut at once (the client's body is late)."""
    seen: list[int] = []

    async def dawdling(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(len((await receive())["body"]))
        await asyncio.sleep(0.08)  # the app busy past the body's deadline
        seen.append(len((await receive())["body"]))  # already there: delivered
        await receive()  # the client has sent nothing more: refused now

    exchange = Exchange([b"a" * 3, b"b" * 4, b"c"], stall_after=2)
    await exchange.run(layer(dawdling, body_timeout=0.04, handler_timeout=5.0))
    assert seen == [3, 4]
    assert exchange.status == 408


@pytest.mark.asyncio
async def test_a_slow_handler_is_cancelled_with_503_and_retry_after() -> None:
    sink = RecordingAuditSink()
    state = {"cancelled": False}

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise

    exchange = Exchange(method="GET")
    await exchange.run(layer(slow, sink, handler_timeout=0.05, retry_after=7))
    assert exchange.status == 503
    assert exchange.error() == "handler_timeout"
    assert exchange.headers[b"retry-after"] == b"7"
    assert b"connection" not in exchange.headers  # the body was not the problem
    assert state["cancelled"]
    [event] = sink.events
    assert event.name == "handler_timeout"
    assert event.outcome == "failure"
    assert event.details["limit"] == 0.05


@pytest.mark.asyncio
async def test_a_started_response_is_never_cut_by_the_handler_timeout() -> None:
    async def streaming(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one ", b"two ", b"three"):
            await asyncio.sleep(0.03)  # the app streaming slowly, past the handler's deadline
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    sink = RecordingAuditSink()
    exchange = Exchange(method="GET")
    await exchange.run(layer(streaming, sink, handler_timeout=0.02))
    assert exchange.status == 200
    assert exchange.body == b"one two three"
    assert sink.events == []


@pytest.mark.asyncio
async def test_waiting_for_the_body_does_not_count_against_the_handler() -> None:
    """The body arrives after 0.1 s, twice the handler's 0.05 s: its wait is body_timeout's."""

    class LateBody(Exchange):
        async def receive(self) -> Message:
            await asyncio.sleep(0.1)  # the client's pace, not the app's
            return await super().receive()

    exchange = LateBody([b"late"])
    await exchange.run(layer(ReadingApp(), body_timeout=5.0, handler_timeout=0.05))
    assert exchange.status == 200
    assert exchange.body == b"4"


@pytest.mark.asyncio
async def test_the_apps_own_timeout_error_is_not_taken_for_the_handlers() -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise TimeoutError("the app's upstream")

    with pytest.raises(TimeoutError, match="upstream"):
        await Exchange(method="GET").run(layer(failing, handler_timeout=5.0))


@pytest.mark.asyncio
async def test_a_refusal_after_the_response_started_is_audited_and_sends_nothing() -> None:
    sink = RecordingAuditSink()

    async def early(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while (await receive()).get("more_body"):
            pass

    exchange = Exchange([b"a" * 20, b"b" * 20])
    await exchange.run(layer(early, sink, max_body_bytes=30))
    assert [m["type"] for m in exchange.sent] == ["http.response.start"]
    assert exchange.status == 200  # already on the wire: left cut short
    assert [e.details["reason"] for e in sink.events] == ["body_too_large"]


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["websocket", "lifespan"])
async def test_other_scopes_pass_untouched(kind: str) -> None:
    seen: list[Any] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope["type"], receive))

    exchange = Exchange(kind=kind)
    await exchange.run(layer(app, max_body_bytes=0, handler_timeout=0.01))
    assert seen == [(kind, exchange.receive)]


@pytest.mark.asyncio
async def test_a_text_refusal_for_a_browser() -> None:
    exchange = Exchange([b"x" * 50])
    exchange.scope["headers"] = [(b"accept", b"text/html"), (b"content-length", b"50")]
    await exchange.run(layer(ReadingApp(), max_body_bytes=10))
    assert exchange.status == 413
    assert exchange.headers[b"content-type"] == b"text/plain; charset=utf-8"
    assert exchange.body.startswith(b"Content too large")


def test_the_layer_alone_or_from_the_configuration() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:  # pragma: no cover
        pass

    assert "RequestLimits(" in repr(RequestLimitsMiddleware(app))  # the defaults
    with pytest.raises(ConfigurationError) as caught:
        RequestLimitsMiddleware(app, bastion=Bastion(limits=None))
    assert caught.value.setting == "limits"
    with pytest.raises(ConfigurationError) as caught:
        RequestLimitsMiddleware(app, RequestLimits(), bastion=Bastion())
    assert caught.value.setting == "limits"
    assert "pass Bastion(limits=...)" in str(caught.value)
    assert "max_body_bytes=5" in repr(
        RequestLimitsMiddleware(app, bastion=Bastion(limits=RequestLimits(max_body_bytes=5)))
    )


def test_a_limit_turned_off_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:  # pragma: no cover
        pass

    with caplog.at_level("WARNING", logger="bastion.security.limits"):
        RequestLimitsMiddleware(app, RequestLimits(max_body_bytes=None))
    assert "max_body_bytes=None" in caplog.text


def test_the_body_cap_alone_needs_no_asyncio_loop() -> None:
    """Driven by hand, outside any event loop (as trio would drive it): the cap still works."""
    exchange = Exchange([b"a" * 600, b"b" * 600])
    app = layer(ReadingApp(), max_body_bytes=1000, body_timeout=None, handler_timeout=None)
    coroutine = exchange.run(app)
    with pytest.raises(StopIteration):
        coroutine.send(None)  # nothing in the exchange suspends: it runs to its end at once
    assert exchange.status == 413
