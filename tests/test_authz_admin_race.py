"""Two administrators demoting each other at once, over real concurrent HTTP requests to a
real uvicorn server, with the roles in a real SQLite file. The rule (``Assignments.change_flow``):
a change stands only if its actor still holds the right to it once it has landed; the engine
reads the actor's record after its write and undoes a change whose actor lost that right
meanwhile (``authz_fail`` reason ``changed_meanwhile``). So crossing demotions never both
stand, and never leave the app without an administrator.

A thin store wrapper (a real store underneath, no mock) holds the writes back so that the
interleaving each test names happens every time, instead of once in a thousand runs."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from tests.authz_http_support import World
from tests.servers import uvicorn_thread

from bastion.asgi.authz import request_user
from bastion.asgi.bearer import BearerMiddleware
from bastion.engine.authz.record import ChangeKind
from bastion.errors import Forbidden
from bastion.stores.sqlite import SQLiteStore

if TYPE_CHECKING:
    from pathlib import Path

    from starlette.requests import Request

    from bastion.stores.base import SyncStore

_ROLE_KEYS = "authz:u"


class Interleave:
    """A SQLite store whose first role write of each of two requests waits for the other.

    ``cross``: both requests have made their checks before either writes (the worst case).
    ``serial``: then the first request's whole change (its write and its read after it)
    lands before the second writes: the second's check was made before the first changed it.
    """

    def __init__(self, inner: SQLiteStore, mode: str) -> None:
        self._inner, self._mode = inner, mode
        self.armed = False
        self._arrived: list[asyncio.Task[Any] | None] = []
        self._both: asyncio.Event | None = None
        self._first_done: asyncio.Event | None = None
        self._first_wrote = False
        self._wrote: list[asyncio.Task[Any] | None] = []
        self._both_wrote: asyncio.Event | None = None

    @property
    def sync(self) -> SyncStore:
        return self._inner.sync

    async def get(self, key: str) -> bytes | None:
        task = asyncio.current_task()
        if self._mode == "cross" and task in self._wrote and self._both_wrote is not None:
            await asyncio.wait_for(self._both_wrote.wait(), 10)  # reads after both writes
        found = await self._inner.get(key)
        if self._first_wrote and self._first_done is not None and self._is_first():
            self._first_done.set()  # the first request's read after its write
        return found

    def _is_first(self) -> bool:
        return bool(self._arrived) and self._arrived[0] is asyncio.current_task()

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self._inner.set(key, value, ttl)

    async def delete(self, key: str) -> bool:
        return await self._inner.delete(key)

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        task = asyncio.current_task()
        if self.armed and key.startswith(_ROLE_KEYS) and task not in self._arrived:
            if self._both is None:
                self._both, self._first_done = asyncio.Event(), asyncio.Event()
                self._both_wrote = asyncio.Event()
            self._arrived.append(task)
            if len(self._arrived) == 2:
                self._both.set()
            await asyncio.wait_for(self._both.wait(), 10)
            assert self._first_done is not None
            assert self._both_wrote is not None
            if self._mode == "serial" and not self._is_first():
                await asyncio.wait_for(self._first_done.wait(), 10)
            won = await self._inner.compare_and_set(key, expected, value, ttl)
            if self._is_first():
                self._first_wrote = True
            self._wrote.append(task)
            if len(self._wrote) == 2:
                self._both_wrote.set()
            return won
        return await self._inner.compare_and_set(key, expected, value, ttl)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _app(world: World) -> Any:
    async def demote(request: Request) -> JSONResponse:
        user = request_user(request.scope)
        assert user is not None
        try:
            await world.authorizer.set_role(user.id, request.path_params["name"], "user")
        except Forbidden as refused:
            return JSONResponse({"error": str(refused)}, status_code=403)
        return JSONResponse({"demoted": request.path_params["name"]})

    app = Starlette(routes=[Route("/demote/{name}", demote, methods=["POST"])])
    return BearerMiddleware(app, world.verifier, protected=("/*",))


def _world(tmp_path: Path, mode: str) -> tuple[World, Interleave, SQLiteStore]:
    inner = SQLiteStore(tmp_path / "roles.db")
    store = Interleave(inner, mode)
    world = World(roles_store=store)  # a Store by its methods
    world.set_role("bob", "admin")
    world.sink.clear()
    return world, store, inner


async def _cross(port: int, world: World) -> tuple[httpx.Response, httpx.Response]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as client:
        return await asyncio.gather(
            client.post("/demote/bob", headers=world.auth("alice")),
            client.post("/demote/alice", headers=world.auth("bob")),
        )


def _roles(world: World, name: str) -> frozenset[str]:
    return world.authorizer.subject_for_sync(name).roles


def _meanwhile(world: World) -> list[object]:
    return [f.get("undone") for f in world.fails() if f.get("reason") == "changed_meanwhile"]


def test_both_checked_before_either_writes_neither_stands(tmp_path: Path) -> None:
    world, store, inner = _world(tmp_path, "cross")
    store.armed = True
    with uvicorn_thread(_app(world)) as port:
        answers = asyncio.run(_cross(port, world))
    assert [a.status_code for a in answers] == [403, 403]
    assert all("no longer allow it; it was undone" in a.json()["error"] for a in answers)
    assert _roles(world, "alice") == _roles(world, "bob") == frozenset({"admin"})
    assert _meanwhile(world) == ["yes", "yes"]
    assert not [e for e in world.sink.events if e.name == "authz_change"]
    # Retried one at a time, the first demotion stands and the second is refused up front.
    store.armed = False
    with uvicorn_thread(_app(world)) as port:

        async def retry() -> list[int]:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                first = await client.post("/demote/bob", headers=world.auth("alice"))
                second = await client.post("/demote/alice", headers=world.auth("bob"))
                return [first.status_code, second.status_code]

        assert asyncio.run(retry()) == [200, 403]
    assert (_roles(world, "alice"), _roles(world, "bob")) == (
        frozenset({"admin"}),
        frozenset({"user"}),
    )
    asyncio.run(inner.aclose())


def test_a_check_made_before_the_other_change_landed_is_undone(tmp_path: Path) -> None:
    world, store, inner = _world(tmp_path, "serial")
    store.armed = True
    with uvicorn_thread(_app(world)) as port:
        first, second = asyncio.run(_cross(port, world))
    statuses = sorted([first.status_code, second.status_code])
    assert statuses == [200, 403]  # exactly one stands
    winner, loser = ("alice", "bob") if first.status_code == 200 else ("bob", "alice")
    assert _roles(world, winner) == frozenset({"admin"})
    assert _roles(world, loser) == frozenset({"user"})
    assert _meanwhile(world) == ["yes"]
    changes = [e for e in world.sink.events if e.name == "authz_change"]
    assert len(changes) == 1
    asyncio.run(inner.aclose())


def test_unforced_crossing_demotions_never_both_stand(tmp_path: Path) -> None:
    world, _unarmed, inner = _world(tmp_path, "cross")  # not armed: the real timing
    with uvicorn_thread(_app(world)) as port:
        for _ in range(10):
            world.set_role("alice", "admin")
            world.set_role("bob", "admin")
            answers = asyncio.run(_cross(port, world))
            passed = [a.status_code for a in answers].count(200)
            assert passed <= 1
            admins = [n for n in ("alice", "bob") if "admin" in _roles(world, n)]
            assert len(admins) == 2 - passed >= 1
    asyncio.run(inner.aclose())


@pytest.mark.asyncio
async def test_the_undo_leaves_a_later_change_standing(tmp_path: Path) -> None:
    """When another change came after the one to undo, that change stands (its actor's check
    passed later) and the refusal says nothing was undone."""
    world = World(roles_store=SQLiteStore(tmp_path / "roles.db"))
    assignments = world.assignments()
    world.set_role("bob", "admin")
    world.sink.clear()

    def lost_meanwhile(actor_now: object, target_before: object) -> bool:
        # What a third administrator's change between the write and the undo looks like.
        assignments.set_role_sync("seed", "mona", "admin", may_administer=True)
        return False

    with pytest.raises(Forbidden):
        await assignments.change(
            "alice",
            "mona",
            ChangeKind.SET_ROLES,
            ("user",),
            may_administer=True,
            still_allowed=lost_meanwhile,
        )
    assert _roles(world, "mona") == frozenset({"admin"})
    assert _meanwhile(world) == ["no: changed again since"]
