"""The Authorizer service without HTTP: changes through the API (self-granting, tenants),
conditions that raise, the sync twins, the guide API, and the AuthzPolicy checks."""

from __future__ import annotations

from typing import Any

import pytest
from tests.authz_http_support import POLICY, World

from bastion.authz.policy import AuthzPolicy, RouteRule
from bastion.authz.service import Authorizer
from bastion.core.authz.decision import AuthzReason
from bastion.core.authz.subjects import Resource
from bastion.errors import ConfigurationError, Forbidden, SelfGrantRefused


@pytest.fixture
def world() -> World:
    return World()


# -- the API: self-granting, tenants, conditions ---------------------------------------------


@pytest.mark.asyncio
async def test_self_granting_through_the_api_is_refused(world: World) -> None:
    authz = world.authorizer
    with pytest.raises(SelfGrantRefused):
        await authz.assign_role("mona", "mona", "admin")
    with pytest.raises(SelfGrantRefused):
        await authz.grant("alice", "alice", "billing:refund")
    with pytest.raises(Forbidden):  # not an administrator
        await authz.assign_role("mona", "uma", "moderator")
    assert (await authz.subject_for("mona")).roles == frozenset({"moderator"})
    assert (await authz.subject_for("uma")).roles == frozenset({"user"})
    await authz.set_role("alice", "uma", "moderator")  # an administrator, on someone else
    assert (await authz.subject_for("uma")).roles == frozenset({"moderator"})
    reasons = [dict(e.details).get("reason") for e in world.sink.events]
    assert reasons[:3] == ["self_grant", "self_grant", "not_administrator"]


@pytest.mark.asyncio
async def test_a_grant_across_tenants_is_refused(world: World) -> None:
    authz = world.authorizer  # tess administers tenant t1 only
    with pytest.raises(Forbidden):
        await authz.assign_role("tess", "uma", "moderator", tenant="t2")
    with pytest.raises(Forbidden):
        await authz.assign_role("tess", "uma", "moderator")  # a global role
    await authz.assign_role("tess", "uma", "moderator", tenant="t1")
    subject = await authz.subject_for("uma")
    assert subject.tenant_roles == {"t1": frozenset({"moderator"})}
    in_t1 = Resource(type="posts", id="p", tenant="t1")
    in_t2 = Resource(type="posts", id="p", tenant="t2")
    assert (await authz.check("uma", "delete", in_t1)).allowed
    denied = await authz.check("uma", "delete", in_t2)
    assert not denied.allowed


@pytest.mark.asyncio
async def test_a_condition_that_raises_denies_and_logs(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    broken = {"type": "posts", "id": "p-x", "owner_id": "uma"}  # no "locked" attribute
    with caplog.at_level("WARNING", logger="bastion.security.authz"):
        decision = await world.authorizer.check("uma", "update", broken)
    assert (decision.allowed, decision.reason) == (False, AuthzReason.CONDITION_ERROR)
    assert "resource.locked" in caplog.text
    assert world.fails()[-1]["reason"] == "condition_error"
    with pytest.raises(Forbidden) as caught:
        await world.authorizer.require("uma", "update", broken)
    assert caught.value.decision is not None


def test_sync_twins_and_the_guide(world: World) -> None:
    authz = world.authorizer
    assert authz.check_sync("alice", "admin:access").allowed
    with pytest.raises(Forbidden):
        authz.require_sync("uma", "admin:access")
    guide = authz.guide
    user = {"id": "admin", "roles": []}  # a user named like a role holds nothing
    assert not guide.has_permission(user, "admin:access")
    assert not guide.has_role(user, "admin")
    moderator = {"id": "m", "roles": ["moderator"]}
    assert guide.has_role(moderator, "user")
    assert guide.has_permission(moderator, "posts:delete")

    @guide.require_permission("posts:delete")
    def remove(post: str, *, user: dict[str, Any]) -> str:
        return f"removed {post}"

    assert remove("p1", user=moderator) == "removed p1"
    with pytest.raises(Forbidden):
        remove("p1", user={"id": "u", "roles": ["user"]})


# -- the configuration slice -----------------------------------------------------------------


def test_authz_policy_is_validated(world: World) -> None:
    with pytest.raises(ConfigurationError, match=r"authz\.policy"):
        AuthzPolicy(policy={"roles": {}})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"authz\.policy"):
        AuthzPolicy(policy=" ")
    with pytest.raises(ConfigurationError, match=r"authz\.roles"):
        AuthzPolicy(policy=POLICY, roles="database")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="Authz:Admin"):
        AuthzPolicy(policy=POLICY, admin_permission="Authz:Admin")
    with pytest.raises(ConfigurationError, match=r"authz\.routes"):
        AuthzPolicy(policy=POLICY, routes=("/x",))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="both public and protected"):
        AuthzPolicy(
            policy=POLICY,
            routes=(RouteRule(path="/x", public=True), RouteRule(path="/x", permission="a:b")),
        )
    with pytest.raises(ConfigurationError, match="no store"):
        Authorizer(AuthzPolicy(policy=POLICY), auditor=world.auditor)
    with pytest.raises(ConfigurationError, match="AuthzPolicy"):
        Authorizer(POLICY, auditor=world.auditor)  # type: ignore[arg-type]
    single = AuthzPolicy(policy=POLICY, routes=RouteRule(path="/x"))  # type: ignore[arg-type]
    assert single.routes == (RouteRule(path="/x"),)
    assert single.load() is POLICY


@pytest.mark.asyncio
async def test_the_guide_decorator_on_async_functions_and_without_a_user(world: World) -> None:
    guide = world.authorizer.guide

    @guide.require_permission("posts:delete")
    async def remove(current_user: dict[str, Any], post: str) -> str:
        return f"removed {post}"

    assert await remove({"id": "m", "roles": ["moderator"]}, "p1") == "removed p1"
    with pytest.raises(Forbidden) as caught:
        await remove(current_user={"id": "u", "roles": ["user"]}, post="p1")
    assert "posts:delete" in str(caught.value)
    assert world.fails()[-1]["reason"] == "no_match"  # audited through the authorizer

    @guide.require_permission("posts:delete")
    def nobody(post: str) -> str:
        return post

    with pytest.raises(ConfigurationError, match="found no user"):
        nobody("p1")
    with pytest.raises(ConfigurationError, match="Posts"):
        guide.require_permission("Posts:delete")
    evaluated = guide.evaluate({"id": "u", "roles": ["user"]}, None, "posts:read")
    assert evaluated.reason is AuthzReason.ALLOWED_BY_ROLE


def test_stamp_sync_writes_the_version(world: World) -> None:
    session: dict[str, Any] = {}
    world.authorizer.stamp_sync(session, "uma")
    assert session == {"_authz_v": 1}
    world.set_role("uma", "moderator")
    world.authorizer.stamp_sync(session, "uma")
    assert session == {"_authz_v": 2}
