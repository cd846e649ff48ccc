"""FastAPI's ``Depends(require(...))`` answering a repeat check from the verdict kept beside
the user's record (``Authorizer.kept``), on a real FastAPI app behind BearerMiddleware with a
real MemoryStore: the record is still read on every request, so a demotion, a deny or a
promotion counts on the next request; a malformed user id and a store that lost writes still
get their own answers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest
import pytest_asyncio
from fastapi import Depends, FastAPI
from tests.authz_http_support import World

from bastion.asgi.bearer import BearerMiddleware
from bastion.authz.service import RequestUser
from bastion.core.authz.subjects import Subject  # noqa: TC001 (FastAPI reads the annotation at run time)
from bastion.errors import StoreCorrupt
from bastion.fastapi import require

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def _client(world: World) -> httpx.AsyncClient:
    app = FastAPI()
    guard = require("posts:delete", authorizer=world.authorizer)

    @app.post("/posts")
    async def delete(subject: Subject = Depends(guard)) -> dict[str, Any]:  # noqa: B008 (a local dependency)
        return {"id": subject.id, "roles": sorted(subject.roles)}

    stack = BearerMiddleware(app, world.verifier, protected=(), optional=("/*",))
    transport = httpx.ASGITransport(app=stack)
    return httpx.AsyncClient(transport=transport, base_url="http://app.test")


@pytest_asyncio.fixture
async def client_and_world() -> AsyncIterator[tuple[httpx.AsyncClient, World]]:
    world = World()
    async with _client(world) as client:
        yield client, world


@pytest.mark.asyncio
async def test_a_kept_verdict_never_outlives_the_record(
    client_and_world: tuple[httpx.AsyncClient, World],
) -> None:
    client, world = client_and_world
    for _ in range(3):  # the first decides, the others reuse the kept verdict
        answer = await client.post("/posts", headers=world.auth("mona"))
        assert answer.json() == {"id": "mona", "roles": ["moderator"]}
    assert world.authorizer.kept(RequestUser("mona"), ("posts:delete",)) is not None

    world.set_role("mona", "user")  # a demotion: the next request is refused
    demoted = await client.post("/posts", headers=world.auth("mona"))
    assert (demoted.status_code, demoted.json()["detail"]["error"]) == (403, "no_match")
    assert demoted.headers["cache-control"] == "no-store"
    world.set_role("mona", "moderator")
    assert (await client.post("/posts", headers=world.auth("mona"))).status_code == 200
    world.assignments().deny_sync("seed", "mona", "posts:delete", may_administer=True)
    denied = await client.post("/posts", headers=world.auth("mona"))
    assert (denied.status_code, denied.json()["detail"]["error"]) == (403, "denied_by_grant")
    denied_again = await client.post("/posts", headers=world.auth("mona"))
    assert denied_again.status_code == 403
    reasons = [f["reason"] for f in world.fails()]
    assert reasons == ["no_match", "denied_by_grant", "denied_by_grant"]  # each one audited

    long_id = "x" * 600  # longer than any user id: refused by the gate, never kept
    odd = await client.post("/posts", headers=world.auth(long_id))
    assert (odd.status_code, odd.json()["detail"]["error"]) == (403, "authz_bad_input")


def test_a_carried_version_above_the_records_is_refused_even_when_kept() -> None:
    world = World()
    authz = world.authorizer
    version = authz.subject_for_sync("mona").version
    assert version is not None
    verdict = authz.gate_sync(RequestUser("mona", version), ("posts:delete",))
    assert verdict.status == 0
    assert authz.kept(RequestUser("mona", version), ("posts:delete",)) is verdict
    with pytest.raises(StoreCorrupt):
        authz.kept(RequestUser("mona", version + 1), ("posts:delete",))
    assert authz.kept(None, ("posts:delete",)) is None
    assert authz.kept(RequestUser("mona"), ("posts:read",)) is None  # not checked yet
