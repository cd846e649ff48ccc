"""Group ``fullstack``: bastion's whole stack, built only through the front door, beside the
peer stack, on one Starlette app, per request kind.

bastion: ``bastion.asgi.protect(app, bastion.Bastion(store=..., keyring=...,
rate_limits=(Rule("pages", "600/minute"),), environment="production"))``: strict headers, one
token-bucket rule per client address, server-side sessions, CSRF with the token in the session
(the defaults). The peer stack: secure.py's ``SecureASGIMiddleware`` (its default headers)
outside starsessions (``SessionMiddleware`` + ``SessionAutoloadMiddleware``) outside
starlette-csrf (signed double-submit cookie and ``x-csrftoken`` header), in that order around
the same app. The peer stack has no rate limiter, so bastion is also shown without its rule.

Every request is a returning browser: it carries its session cookie (and, for the peer stack,
its ``csrftoken`` cookie). The request kinds:

* ``GET untouched``: ``GET /`` never touches the session;
* ``GET read``: ``GET /read`` returns ``session["n"]``;
* ``GET modify``: ``GET /modify`` increments ``session["n"]`` and returns it;
* ``POST token``: ``POST /transfer`` with no Fetch Metadata and no ``Origin`` (an old browser,
  ``curl``): bastion checks the masked session token in ``X-CSRF-Token``, starlette-csrf its
  cookie against its header;
* ``POST fetch-metadata``: the same POST with ``Sec-Fetch-Site: same-origin`` and, for bastion,
  no token (the headers decide); starlette-csrf has no such path and checks its token.

All five on memory stores (bastion ``memory://``, starsessions ``InMemoryStore``); untouched,
read and modify also on a real Redis (bastion ``store="redis://...?prefix=..."``, so sessions and
the rule's counters both live in Redis; starsessions' ``RedisStore``), beside the I/O floor: the
bare app whose handler does one redis-py ``GET`` and one ``SET``.

Each request comes from one of :data:`CLIENTS` client addresses in turn, for every case alike,
so that the 600/minute rule admits every request of a run; every timed request is checked to
answer 200 (a refused request would otherwise be a fast figure). Before anything is timed, each
case proves once that it does what its name says: the status and the security headers, the
stored value read (``/read``), the value written and read back (``/modify`` twice), the token
path taken (the same POST without the token, or with a forged one, is refused 403), the Fetch
Metadata path taken (no token sent; ``cross-site`` is refused 403), and the rule applied or not
(``RateLimit`` header). bastion's store round trips per kind are proved on a counted store.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from redis.asyncio import Redis
from secure.middleware.asgi import SecureASGIMiddleware
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette_csrf import CSRFMiddleware as StarletteCSRF
from starsessions import InMemoryStore, SessionAutoloadMiddleware
from starsessions import SessionMiddleware as StarSessionMiddleware
from starsessions.stores.redis import RedisStore as StarRedisStore

import bastion
import bastion.asgi
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.testing.redis_server import RedisServer
from bastion.testing.sync_store import CountingStore
from bench.driver import call_asgi, http_scope
from bench.group import Group
from bench.measure import async_case

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from starlette.requests import Request

    from bastion.stores.base import Store
    from bench.driver import ASGIApp, Headers, Receive, Scope, Send
    from bench.group import Options
    from bench.measure import Case

__all__ = [
    "CLIENTS",
    "GROUP",
    "KINDS",
    "NO_RULE",
    "OURS",
    "PEER",
    "REDIS_KINDS",
    "RULE",
    "Browser",
    "PassThrough",
    "RotatingClient",
    "bastion_stack",
    "browser_for",
    "csrf_only_case",
    "fullstack_cases",
    "instruction_case",
    "make_app",
    "ok_request",
    "peer_stack",
    "prove",
    "prove_round_trips",
    "request_for",
]

PREFIX: Final = "bastion-bench-full:"
RULE: Final = bastion.Rule("pages", "600/minute")
CLIENTS: Final = 256
"""Client addresses the requests rotate through: 600/minute each (a burst of 153,600 requests,
then 2,560 a second) is more than a run spends, and the rule's keys are reused, as with
returning clients (a refused request stops the run, so an exhausted rule cannot go unseen)."""
KINDS: Final = ("GET untouched", "GET read", "GET modify", "POST token", "POST fetch-metadata")
REDIS_KINDS: Final = KINDS[:3]
PEER: Final = "peer stack"
OURS: Final = "bastion"
NO_RULE: Final = "bastion, no rate-limit rule"
_PEER_SECRET: Final = "bench-peer-secret-" + "x" * 40
_BASE_HEADERS: Final[Headers] = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"bastion-bench/1"),
    (b"accept", b"*/*"),
]


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(f"fullstack bench set-up check failed: {what}")


@contextmanager
def _quiet_audit() -> Iterator[None]:
    """The refusals the proofs provoke are audited; keep them off the bench's output."""
    audit = logging.getLogger("bastion.audit")
    was = audit.disabled
    audit.disabled = True
    try:
        yield
    finally:
        audit.disabled = was


# -- the app and the two stacks -----------------------------------------------------------------


async def _untouched(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def _read(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(request.session.get("n", 0)))


async def _modify(request: Request) -> PlainTextResponse:
    n = request.session.get("n", 0) + 1
    request.session["n"] = n
    return PlainTextResponse(str(n))


async def _token(request: Request) -> PlainTextResponse:
    """Set-up only: bastion's masked CSRF token for this session (stored in the session)."""
    return PlainTextResponse(bastion.asgi.csrf_token(request))


def make_app() -> Starlette:
    """The one app every stack wraps (no middleware of its own)."""
    return Starlette(
        routes=[
            Route("/", _untouched),
            Route("/read", _read),
            Route("/modify", _modify),
            Route("/token", _token),
            Route("/transfer", _untouched, methods=["POST"]),
        ]
    )


def bastion_stack(
    app: ASGIApp, store: Store | str, *, rule: bool = True, keyring: bastion.KeyRing | None = None
) -> ASGIApp:
    """bastion through the front door: headers strict, sessions, CSRF, and ``RULE`` if ``rule``."""
    config = bastion.Bastion(
        store=store,
        keyring=keyring or bastion.KeyRing.generate(),
        rate_limits=(RULE,) if rule else (),
        environment=bastion.Environment.PRODUCTION,
    )
    return bastion.asgi.protect(app, config)


def peer_stack(app: ASGIApp, store: Any) -> ASGIApp:
    """secure.py outside starsessions (with autoload) outside starlette-csrf, around ``app``."""
    inner = StarletteCSRF(app, _PEER_SECRET)
    loaded = SessionAutoloadMiddleware(inner)
    sessions = StarSessionMiddleware(loaded, store=store)
    return SecureASGIMiddleware(sessions)


async def aclose_stack(stack: ASGIApp) -> None:
    """Close what ``protect()`` opened from a store URL (the one store: sessions and the
    rule's counters)."""
    runtime = getattr(stack, "runtime", None)
    if isinstance(runtime, bastion.Runtime):
        await runtime.aclose()


class RotatingClient:
    """Gives each request the next of :data:`CLIENTS` client addresses (the rule counts per
    address). Wraps every case alike, peer and floor included, so its cost cancels out."""

    __slots__ = ("_addresses", "_next", "app")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._addresses = [(f"10.{i >> 8}.{i & 255}.1", 50000) for i in range(CLIENTS)]
        self._next = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        index = self._next
        self._next = (index + 1) % CLIENTS
        scope["client"] = self._addresses[index]
        await self.app(scope, receive, send)


# -- browsers and requests ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Browser:
    """A returning browser of one stack: its cookie header and its CSRF header."""

    cookie: bytes
    token_header: tuple[bytes, bytes]


def _cookies(headers: Headers) -> dict[bytes, bytes]:
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        if name.lower() == b"set-cookie":
            pair = value.split(b";", 1)[0]
            key, _, val = pair.partition(b"=")
            found[key.strip()] = val.strip()
    return found


async def browser_for(app: ASGIApp, *, ours: bool) -> Browser:
    """Visit ``/modify`` once (the session holds ``n = 1``) and, for bastion, ``/token``."""
    status, headers, body = await call_asgi(
        app, http_scope("GET", "/modify", headers=_BASE_HEADERS)
    )
    _expect((status, body) == (200, b"1"), f"first visit answered {status} {body[:80]!r}")
    jar = _cookies(headers)
    cookie = b"; ".join(k + b"=" + v for k, v in jar.items())
    if not ours:
        _expect(set(jar) == {b"session", b"csrftoken"}, f"peer set cookies {sorted(jar)}")
        return Browser(cookie, (b"x-csrftoken", jar[b"csrftoken"]))
    _expect(len(jar) == 1, f"bastion set cookies {sorted(jar)}")
    template = http_scope("GET", "/token", headers=[*_BASE_HEADERS, (b"cookie", cookie)])
    status, headers, token = await call_asgi(app, template)
    _expect(status == 200 and len(token) > 20, f"/token answered {status} {token[:80]!r}")
    jar.update(_cookies(headers))
    cookie = b"; ".join(k + b"=" + v for k, v in jar.items())
    return Browser(cookie, (b"x-csrf-token", token))


def request_for(kind: str, browser: Browser, *, token: bool = True) -> Scope:
    """The request template of ``kind`` from ``browser`` (``token=False`` leaves out the CSRF
    header of a ``POST token``: the proof that the token decides)."""
    headers = [*_BASE_HEADERS, (b"cookie", browser.cookie)]
    if kind == "GET untouched":
        return http_scope("GET", "/", headers=headers)
    if kind == "GET read":
        return http_scope("GET", "/read", headers=headers)
    if kind == "GET modify":
        return http_scope("GET", "/modify", headers=headers)
    headers.append((b"content-length", b"0"))
    if kind == "POST token":
        if token:
            headers.append(browser.token_header)
        return http_scope("POST", "/transfer", headers=headers)
    if kind == "POST fetch-metadata":
        headers.append((b"sec-fetch-site", b"same-origin"))
        if browser.token_header[0] == b"x-csrftoken":  # starlette-csrf has no other path
            headers.append(browser.token_header)
        return http_scope("POST", "/transfer", headers=headers)
    raise ValueError(f"unknown request kind {kind!r}")


def _with_header(template: Scope, name: bytes, value: bytes | None) -> Scope:
    """``template`` with header ``name`` replaced by ``value`` (removed for ``None``)."""
    headers = [(k, v) for k, v in template["headers"] if k != name]
    if value is not None:
        headers.append((name, value))
    return {**template, "headers": headers}


async def ok_request(app: ASGIApp, template: Scope) -> None:
    """One timed request; anything but 200 stops the run instead of timing a refusal."""
    status, _headers, _body = await call_asgi(app, template)
    if status != 200:
        raise RuntimeError(f"fullstack bench: {template['method']} {template['path']} -> {status}")


# -- the proofs ---------------------------------------------------------------------------------


async def prove(
    name: str, kind: str, app: ASGIApp, template: Scope, *, headers: bool, rule: bool
) -> None:
    """Prove once that ``app`` answering ``template`` does what ``kind`` says (module docstring).

    ``headers``: security headers expected (every stack but the floor); ``rule``: a
    ``RateLimit`` header expected (bastion with its rule), or absent.
    """
    label = f"{name} ({kind})"
    status, sent, body = await call_asgi(app, template)
    _expect(status == 200, f"{label} answered {status} {body[:120]!r}")
    names = {k.lower() for k, _ in sent}
    if headers:
        _expect(b"x-content-type-options" in names, f"{label} sent no security headers")
    _expect((b"ratelimit" in names) == rule, f"{label}: RateLimit header present is not {rule}")
    if kind in {"GET untouched", "POST token", "POST fetch-metadata"}:
        _expect(body == b"ok", f"{label} answered {body[:80]!r}")
    if kind == "GET read":
        _expect(body.isdigit() and int(body) >= 1, f"{label} read {body[:80]!r}, not n >= 1")
        again = (await call_asgi(app, template))[2]
        _expect(again == body, f"{label}: a read changed n from {body!r} to {again!r}")
    if kind == "GET modify":
        _expect(body.isdigit(), f"{label} answered {body[:80]!r}")
        again = (await call_asgi(app, template))[2]
        _expect(again == str(int(body) + 1).encode(), f"{label}: n {body!r} then {again!r}")
    if kind.startswith("POST"):
        refusals = []
        sent_names = {k for k, _ in template["headers"]}
        for token_name in (b"x-csrf-token", b"x-csrftoken"):
            if token_name in sent_names:  # the token decides: without it, or forged, refused
                refusals += [
                    _with_header(template, token_name, None),
                    _with_header(template, token_name, b"forged"),
                ]
        if kind == "POST fetch-metadata" and not refusals:
            # bastion: no token sent, so Fetch Metadata decides: cross-site or absent, refused
            refusals += [
                _with_header(template, b"sec-fetch-site", b"cross-site"),
                _with_header(template, b"sec-fetch-site", None),
            ]
        _expect(bool(refusals), f"{label}: no CSRF check to prove")
        with _quiet_audit():
            for refused in refusals:
                got = (await call_asgi(app, refused))[0]
                _expect(got == 403, f"{label}: a request it should refuse answered {got}")


async def prove_round_trips(store: CountingStore) -> None:
    """bastion's session store traffic per kind, through the front door on ``store``: an
    untouched request and a read write nothing, a read reads, a modification writes."""
    stack = RotatingClient(bastion_stack(make_app(), store))
    browser = await browser_for(stack, ours=True)
    for kind in KINDS:
        store.reset()
        await ok_request(stack, request_for(kind, browser))
        calls = store.calls
        writes = calls["set"] + calls["compare_and_set"] + calls["delete"]
        where = f"bastion on {type(store.inner).__name__}, {kind}: store calls {dict(calls)}"
        if kind == "GET modify":
            _expect(calls["get"] >= 1 and writes >= 1, where)
        else:
            _expect(writes == 0, where)
        if kind in {"GET read", "POST token"}:
            _expect(calls["get"] >= 1, where)


# -- the cases ----------------------------------------------------------------------------------


async def _stack_cases(
    where: str, stacks: dict[str, ASGIApp], kinds: tuple[str, ...], floor: str | None
) -> list[Case]:
    """For each kind: the peer stack (the baseline), bastion and bastion without its rule;
    on Redis, the two bastion modify rows again against the I/O floor ``floor``."""
    browsers = {label: await browser_for(app, ours=label != PEER) for label, app in stacks.items()}
    cases: list[Case] = []
    for kind in kinds:
        base = f"{where} {kind}: {PEER}"
        for label, app in stacks.items():
            template = request_for(kind, browsers[label])
            name = base if label == PEER else f"{where} {kind}: {label}"
            await prove(name, kind, app, template, headers=True, rule=label == OURS)
            op = _op(app, template)
            cases.append(async_case(name, op, baseline=None if label == PEER else base))
            if floor is not None and kind == "GET modify" and label != PEER:
                cases.append(async_case(f"{name} (vs floor)", op, baseline=floor))
    return cases


def _op(app: ASGIApp, template: Scope) -> Callable[[], Awaitable[None]]:
    return partial(ok_request, app, template)


def _floor_app(client: Redis) -> ASGIApp:
    async def modify(_request: Request) -> PlainTextResponse:
        raw = await client.get(PREFIX + "floor")
        await client.set(PREFIX + "floor", raw or b"{}", px=3_600_000)
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/modify", modify)])


def _redis_url(url: str) -> str:
    return url + ("&" if "?" in url else "?") + "prefix=" + PREFIX


@asynccontextmanager
async def fullstack_cases(options: Options) -> AsyncIterator[list[Case]]:
    async with AsyncExitStack() as stack:
        if options.redis_url is None:
            server = stack.enter_context(RedisServer())
            url = server.url
            admin = Redis.from_url(url)
            await admin.config_set("appendfsync", "everysec")
            await admin.aclose()
        else:
            url = options.redis_url
        await prove_round_trips(CountingStore(MemoryStore()))
        counted = CountingStore(RedisStore.from_url(url, prefix=PREFIX + "counted:"))
        await prove_round_trips(counted)
        await counted.aclose()

        app = make_app()
        memory = {
            PEER: RotatingClient(peer_stack(app, InMemoryStore())),
            OURS: RotatingClient(bastion_stack(app, "memory://")),
            NO_RULE: RotatingClient(bastion_stack(app, "memory://", rule=False)),
        }
        star_client = Redis.from_url(url)
        stack.push_async_callback(star_client.aclose)
        redis_stacks = {
            PEER: peer_stack(app, StarRedisStore(connection=star_client, prefix=PREFIX + "star:")),
            OURS: bastion_stack(app, _redis_url(url)),
            NO_RULE: bastion_stack(app, _redis_url(url), rule=False),
        }
        redis = {label: RotatingClient(built) for label, built in redis_stacks.items()}
        for rotating in (*memory.values(), *redis.values()):
            stack.push_async_callback(aclose_stack, rotating.app)
        client = Redis.from_url(url)
        stack.push_async_callback(client.aclose)
        floor_name = "redis GET modify: floor GET+SET (bare app, no middleware)"
        floor = RotatingClient(_floor_app(client))
        floor_template = http_scope("GET", "/modify", headers=_BASE_HEADERS)
        await prove(floor_name, "GET untouched", floor, floor_template, headers=False, rule=False)
        _expect(await client.get(PREFIX + "floor") == b"{}", "the floor wrote nothing")

        cases = await _stack_cases("memory", memory, KINDS, None)
        cases.append(async_case(floor_name, _op(floor, floor_template)))
        held = len(await client.keys(PREFIX + "*"))
        cases += await _stack_cases("redis", redis, REDIS_KINDS, floor_name)
        sessions = await client.keys(PREFIX + "session:*")
        _expect(len(sessions) >= 2, f"bastion's Redis sessions are not in Redis: {sessions}")
        _expect(
            len(await client.keys(PREFIX + "*")) > held + len(sessions),
            "bastion's rule keeps no counters in Redis",
        )
        yield cases
        await client.delete(PREFIX + "floor")


# -- for bench.instructions ---------------------------------------------------------------------


def instruction_case(kind: str, label: str) -> tuple[ASGIApp, Scope]:
    """``bench.instructions``' build: the memory stack ``label`` (:data:`PEER`, :data:`OURS`,
    :data:`NO_RULE`) and its request of ``kind``, proved once (in an event loop of its own)."""
    app = make_app()
    if label == PEER:
        built = peer_stack(app, InMemoryStore())
    else:
        built = bastion_stack(app, "memory://", rule=label == OURS)
    stack = RotatingClient(built)

    async def set_up() -> Scope:
        template = request_for(kind, await browser_for(stack, ours=label != PEER))
        await prove(label, kind, stack, template, headers=True, rule=label == OURS)
        return template

    return stack, asyncio.run(set_up())


CSRF_ONLY_COOKIE: Final = b"__Host-session=" + b"s" * 43


def csrf_only_case(*, with_csrf: bool) -> tuple[ASGIApp, Scope]:
    """``GET /`` from a returning browser through bastion's CSRF layer alone, built with the
    arguments ``protect()`` gives it, or through a pass-through layer (``with_csrf=False``)."""
    app = make_app()
    if with_csrf:
        runtime = bastion.Bastion(
            store="memory://",
            keyring=bastion.KeyRing.generate(),
            environment=bastion.Environment.PRODUCTION,
        ).build()
        layer: ASGIApp = bastion.asgi.CSRFMiddleware(
            app,
            config=runtime.config.csrf,
            keyring=runtime.keyring,
            auditor=runtime.auditor,
            proxies=runtime.proxies,
            clock=runtime.config.clock,
            production=runtime.production,
        )
    else:
        layer = PassThrough(app)
    return layer, http_scope("GET", "/", headers=[*_BASE_HEADERS, (b"cookie", CSRF_ONLY_COOKIE)])


class PassThrough:
    """An ASGI layer that only awaits the app: the baseline of the CSRF-only row."""

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


GROUP = Group(
    name="fullstack",
    title=(
        "The whole stack on one Starlette app, per request kind (in-process ASGI driver, a "
        "returning browser's cookies): bastion through `protect(app, Bastion(...))` (strict "
        "headers, one 600/minute rule, sessions, CSRF), and without its rule, against "
        "starsessions + starlette-csrf + secure.py; memory and Redis stores; on Redis also a "
        "bare app doing one redis-py GET and one SET (the I/O floor)."
    ),
    iterations=300,
    cases=fullstack_cases,
)
