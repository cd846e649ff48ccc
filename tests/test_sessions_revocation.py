"""Revocation that no session escapes, on memory, SQLite and Redis.

"Revoke all" raises the user's epoch, so it reaches sessions the registry does not list; the
registry never drops a live session (what falls out of its bound is destroyed); and "log out
other devices" neither revokes the caller's own renewed session nor lets a session renewed
meanwhile survive. The interleavings are forced with a real store wrapped to pause one write.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from bastion.core.clock import FrozenClock
from bastion.core.sessions import MAX_SESSIONS_PER_USER, SessionConfig
from bastion.engine.sessions import SessionEngine, index_key
from session_flows import COOKIE, cookie_value, login, request

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.stores.base import Store

CONFIG = SessionConfig(renew_every=600, renew_grace=30)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


class PausingStore:
    """A real store whose one chosen write waits until the test lets it go.

    ``pause(match)`` arms it: the first ``delete`` or ``compare_and_set`` whose
    ``(operation, key)`` satisfies ``match`` sets ``reached`` and waits for ``release``.
    No ``sync`` side, so the engine drives every flow through these coroutines.
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.reached = asyncio.Event()
        self.release = asyncio.Event()
        self._match: Callable[[str, str], bool] | None = None

    def pause(self, match: Callable[[str, str], bool]) -> None:
        self._match = match
        self.reached.clear()
        self.release.clear()

    async def _maybe_wait(self, operation: str, key: str) -> None:
        match = self._match
        if match is not None and match(operation, key):
            self._match = None
            self.reached.set()
            await self.release.wait()

    async def get(self, key: str) -> bytes | None:
        return await self.inner.get(key)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self.inner.set(key, value, ttl)

    async def delete(self, key: str) -> bool:
        await self._maybe_wait("delete", key)
        return await self.inner.delete(key)

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        await self._maybe_wait("compare_and_set", key)
        return await self.inner.compare_and_set(key, expected, value, ttl)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def logged_in_as(engine: SessionEngine, cookie: str) -> str | None:
    return (await request(engine, cookie)).user_id


@pytest.mark.asyncio
async def test_revoke_all_ends_sessions_past_the_registry_cap(
    any_store: Store, clock: FrozenClock
) -> None:
    engine = SessionEngine(any_store, config=CONFIG, clock=clock)
    first = await login(engine, "alice")
    later = [await login(engine, "alice") for _ in range(MAX_SESSIONS_PER_USER)]
    listed = {info.handle for info in await engine.list_sessions("alice")}
    live = [c for c in [first, *later] if await logged_in_as(engine, c) == "alice"]
    # The registry shows every live session: none is live and missing from the list.
    assert len(live) == len(listed) == MAX_SESSIONS_PER_USER
    await engine.revoke_all("alice")
    assert [c for c in [first, *later] if await logged_in_as(engine, c) is not None] == []
    assert await engine.list_sessions("alice") == []


@pytest.mark.asyncio
async def test_revoke_all_does_not_depend_on_the_registry(
    any_store: Store, clock: FrozenClock
) -> None:
    engine = SessionEngine(any_store, config=CONFIG, clock=clock)
    cookies = [await login(engine, "alice") for _ in range(3)]
    bob = await login(engine, "bob")
    await any_store.delete(index_key("alice"))  # the registry lost (or never had) them
    await engine.revoke_all("alice")
    assert [await logged_in_as(engine, c) for c in cookies] == [None, None, None]
    assert await logged_in_as(engine, bob) == "bob"
    again = await login(engine, "alice")  # a login after the revocation lives
    assert await logged_in_as(engine, again) == "alice"


@pytest.mark.asyncio
async def test_revoke_others_keeps_the_caller_and_ends_unlisted_sessions(
    any_store: Store, clock: FrozenClock
) -> None:
    engine = SessionEngine(any_store, config=CONFIG, clock=clock)
    mine = await login(engine, "alice")
    others = [await login(engine, "alice") for _ in range(2)]
    await any_store.delete(index_key("alice"))
    caller = await request(engine, mine)
    await engine.revoke_others("alice", caller.handle)
    assert await logged_in_as(engine, mine) == "alice"
    assert [await logged_in_as(engine, c) for c in others] == [None, None]


@pytest.mark.asyncio
async def test_log_out_others_from_a_grace_cookie_keeps_the_renewed_session(
    any_store: Store, clock: FrozenClock
) -> None:
    engine = SessionEngine(any_store, config=CONFIG, clock=clock)
    old = await login(engine, "alice")
    other = await login(engine, "alice")
    clock.advance(601)
    renewing = await request(engine, old)
    renewing["seen"] = True
    renewed = cookie_value(await engine.save(renewing))
    assert renewed != old
    late = await request(engine, old)  # a parallel request still sending the old cookie
    assert late.user_id == "alice"
    await engine.revoke_others("alice", late.handle)
    assert await logged_in_as(engine, renewed) == "alice"
    assert await logged_in_as(engine, old) == "alice"  # still within the grace window
    assert await logged_in_as(engine, other) is None


@pytest.mark.asyncio
async def test_a_renewal_paused_at_its_registry_update_does_not_survive_log_out_others(
    any_store: Store, clock: FrozenClock
) -> None:
    store = PausingStore(any_store)
    engine = SessionEngine(store, config=CONFIG, clock=clock)  # type: ignore[arg-type]
    mine = await login(engine, "alice")
    victim = await login(engine, "alice")
    clock.advance(601)
    renewing = await request(engine, victim)
    # The renewal stops at its registry update (the new record exists, the list names the
    # old handle): a revocation that walks the list runs in that window.
    registry = index_key("alice")
    store.pause(lambda op, key: op == "compare_and_set" and key == registry)
    renewal = asyncio.create_task(engine.save(renewing))
    await store.reached.wait()
    caller = await request(engine, mine)
    await engine.revoke_others("alice", caller.handle)
    store.release.set()
    result = await renewal
    for cookie in {victim, *([cookie_value(result)] if result.set_cookie else [])}:
        assert await logged_in_as(engine, cookie) is None
    assert await logged_in_as(engine, mine) == "alice"
    assert {i.handle for i in await engine.list_sessions("alice")} == {caller.handle}


@pytest.mark.asyncio
async def test_a_renewal_while_log_out_others_deletes_does_not_survive(
    any_store: Store, clock: FrozenClock
) -> None:
    store = PausingStore(any_store)
    engine = SessionEngine(store, config=CONFIG, clock=clock)  # type: ignore[arg-type]
    mine = await login(engine, "alice")
    victim = await login(engine, "alice")
    clock.advance(601)
    renewing = await request(engine, victim)  # loaded before the revocation starts
    victim_key = "session:" + renewing.handle  # type: ignore[operator]
    caller = await request(engine, mine)
    # The revocation stops just before it deletes the victim's listed record.
    store.pause(lambda op, key: op == "delete" and key == victim_key)
    revocation = asyncio.create_task(engine.revoke_others("alice", caller.handle))
    await store.reached.wait()
    renewing["cart"] = ["book"]
    renewed = cookie_value(await engine.save(renewing))
    store.release.set()
    await revocation
    assert await logged_in_as(engine, renewed) is None
    assert await logged_in_as(engine, victim) is None
    assert await logged_in_as(engine, mine) == "alice"
    assert {i.handle for i in await engine.list_sessions("alice")} == {caller.handle}


@pytest.mark.asyncio
async def test_a_login_authenticated_before_revoke_all_does_not_live(
    any_store: Store, clock: FrozenClock
) -> None:
    engine = SessionEngine(any_store, config=CONFIG, clock=clock)
    slow = await request(engine, None)
    slow.login("alice")  # the password was checked now ...
    clock.advance(1)
    await engine.revoke_all("alice")  # ... and changed before the login was saved
    result = await engine.save(slow)
    assert result.set_cookie is not None
    assert result.set_cookie.startswith(f"{COOKIE}=; Max-Age=0")
    assert await engine.list_sessions("alice") == []


def test_http_log_out_other_devices_from_a_grace_cookie_keeps_the_caller() -> None:
    import warnings  # noqa: PLC0415 (this test only)

    from starlette.applications import Starlette  # noqa: PLC0415
    from starlette.exceptions import StarletteDeprecationWarning  # noqa: PLC0415
    from starlette.middleware import Middleware  # noqa: PLC0415
    from starlette.requests import Request  # noqa: PLC0415, TC002
    from starlette.responses import JSONResponse  # noqa: PLC0415
    from starlette.routing import Route  # noqa: PLC0415

    from bastion.asgi.sessions import (  # noqa: PLC0415
        SessionMiddleware,
        get_session,
        revoke_other_sessions,
    )
    from bastion.stores.memory import MemoryStore  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StarletteDeprecationWarning)
        from starlette.testclient import TestClient  # noqa: PLC0415

    async def do_login(request: Request) -> JSONResponse:
        get_session(request).login("alice")
        return JSONResponse({})

    async def touch(request: Request) -> JSONResponse:
        request.session["n"] = request.session.get("n", 0) + 1
        return JSONResponse({"user": request.session.user_id})  # type: ignore[attr-defined]

    async def others_out(request: Request) -> JSONResponse:
        return JSONResponse({"revoked": await revoke_other_sessions(request)})

    clock = FrozenClock()
    app = Starlette(
        routes=[
            Route("/login", do_login, methods=["POST"]),
            Route("/touch", touch, methods=["POST"]),
            Route("/others-out", others_out, methods=["POST"]),
        ],
        middleware=[
            Middleware(
                SessionMiddleware, store=MemoryStore(clock=clock), config=CONFIG, clock=clock
            )
        ],
    )
    base = "https://localhost"
    with TestClient(app, base_url=base) as mine, TestClient(app, base_url=base) as other:
        mine.post("/login")
        other.post("/login")
        old = mine.cookies[COOKIE]
        clock.advance(601)
        mine.post("/touch")  # renewed: the browser now holds the new cookie
        renewed = mine.cookies[COOKIE]
        assert renewed != old
        # A request of the same browser still in flight with the old cookie asks for it.
        mine.cookies.clear()
        answer = mine.post("/others-out", headers={"cookie": f"{COOKIE}={old}"})
        assert answer.json() == {"revoked": 1}
        mine.cookies.clear()
        assert mine.post("/touch", headers={"cookie": f"{COOKIE}={renewed}"}).json() == {
            "user": "alice"
        }
        assert other.post("/touch").json() == {"user": None}
