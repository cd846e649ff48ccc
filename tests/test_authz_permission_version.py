"""The per-user permission version on its way through a request, on memory, SQLite files and
real Redis: the store's roles always win over the version a session or token carries (a
demotion counts on the next request), a carried version above the store's refuses, and for a
bearer request the record rides in the deny-list check's one ``MGET``; the Subject the policy
then decides for."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from redis import Redis as SyncRedis

from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.authz import AuthzReason, Policy, Resource, Role
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing
from bastion.core.tokens.reasons import TokenReason
from bastion.engine.authz import Assignment, Assignments, assignment_key
from bastion.engine.tokens.revocation import Revocations
from bastion.errors import (
    AuthzInputError,
    StoreCorrupt,
)
from bastion.stores.redis import RedisStore
from bastion.stores.sqlite import SQLiteStore
from bastion.testing.audit import RecordingAuditSink
from bastion.testing.sync_store import CountingStore

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from bastion.stores.base import Store
    from bastion.testing.redis_server import RedisServer

ISS = "https://auth.example"
ADMIN = "root"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def hasher() -> IdentifierHasher:
    return IdentifierHasher(KeyRing.generate())


@pytest.fixture
def sink() -> RecordingAuditSink:
    return RecordingAuditSink()


def make(
    store: Store,
    clock: FrozenClock,
    hasher: IdentifierHasher,
    sink: RecordingAuditSink,
    **options: Any,
) -> Assignments:
    auditor = Auditor(hasher, clock, sink, aggregation=None)
    return Assignments(store, auditor=auditor, clock=clock, **options)


@pytest.fixture
def assignments(
    any_store: Store, clock: FrozenClock, hasher: IdentifierHasher, sink: RecordingAuditSink
) -> Assignments:
    return make(any_store, clock, hasher, sink)


# -- reading and changing --------------------------------------------------------------------
POLICY = Policy(
    roles=(
        Role(name="admin", permissions=("users:*",), inherits=("moderator",)),
        Role(name="moderator", permissions=("posts:delete",), inherits=("user",)),
        Role(name="user", permissions=("posts:read", "posts:write:own")),
    )
)


@pytest.mark.asyncio
async def test_the_subject_the_policy_decides_for(assignments: Assignments) -> None:
    """Roles, tenant roles, per-user grants and denies from the store reach the policy; a
    demotion is the next request's subject; a user named like a role holds nothing."""
    await assignments.set_role(ADMIN, "alice", "admin", may_administer=True)
    await assignments.deny(ADMIN, "alice", "users:delete", may_administer=True)
    await assignments.assign_role(ADMIN, "bob", "moderator", tenant="t1", may_administer=True)
    await assignments.grant(ADMIN, "bob", "reports:read", may_administer=True)
    alice = (await assignments.current("alice", 0)).subject("alice", team="blue")
    assert (alice.id, alice.version, alice.attributes["team"]) == ("alice", 2, "blue")
    assert POLICY.allows(alice, None, "posts:delete")
    assert POLICY.allows(alice, None, "users:create")
    denied = POLICY.evaluate(alice, None, "users:delete")
    assert (denied.allowed, denied.reason) == (False, AuthzReason.DENIED_BY_GRANT)
    bob = (await assignments.load("bob")).subject("bob")
    in_t1 = Resource(type="posts", id="p1", tenant="t1")
    in_t2 = Resource(type="posts", id="p2", tenant="t2")
    assert POLICY.allows(bob, in_t1, "delete")
    assert not POLICY.allows(bob, in_t2, "delete")
    assert POLICY.allows(bob, None, "reports:read")
    await assignments.set_role(ADMIN, "alice", "user", may_administer=True)
    demoted = (await assignments.current("alice", alice.version)).subject("alice")
    assert not POLICY.allows(demoted, None, "posts:delete")
    assert POLICY.allows(demoted, None, "posts:read")
    nobody = (await assignments.load("admin")).subject("admin")
    assert not POLICY.allows(nobody, None, "posts:read")


# -- the permission version per request ------------------------------------------------------


@pytest.mark.asyncio
async def test_a_demotion_counts_on_the_next_request(assignments: Assignments) -> None:
    """The session (or token) carries version 1 from login; after the demotion the store is at
    2 and the next request gets the demoted roles, never the carried ones."""
    await assignments.set_role(ADMIN, "alice", "admin", may_administer=True)
    carried = await assignments.version("alice")
    assert (await assignments.current("alice", carried)).roles == {"admin"}
    await assignments.set_role(ADMIN, "alice", "user", may_administer=True)
    now = await assignments.current("alice", carried)
    assert (now.roles, now.version) == (frozenset({"user"}), carried + 1)
    assert (await asyncio.to_thread(assignments.current_sync, "alice", carried)).roles == {"user"}
    assert (await assignments.current("alice", None)).roles == {"user"}


@pytest.mark.asyncio
async def test_a_version_above_the_stores_refuses(
    any_store: Store, assignments: Assignments
) -> None:
    """A store that lost writes (a restore, a lagging replica) may have undone a demotion."""
    await assignments.set_role(ADMIN, "alice", "admin", may_administer=True)
    backup = await any_store.get(assignment_key("alice"))
    await assignments.set_role(ADMIN, "alice", "user", may_administer=True)
    assert backup is not None
    await any_store.set(assignment_key("alice"), backup)  # the restore
    with pytest.raises(StoreCorrupt, match="carries version 2"):
        await assignments.current("alice", 2)
    with pytest.raises(StoreCorrupt):
        await assignments.current("ghost", 1)
    for bad in [-1, True, "2", 2.0]:
        with pytest.raises(AuthzInputError, match="carried permission version"):
            await assignments.current("alice", bad)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_the_version_rides_in_the_bearer_checks_one_store_call(
    any_store: Store, assignments: Assignments, clock: FrozenClock
) -> None:
    await assignments.set_role(ADMIN, "alice", "editor", may_administer=True)
    counting = CountingStore(any_store)
    revocations = Revocations(counting, clock=clock)
    key = assignment_key("alice")
    reason, raw = await revocations.check_and_read(ISS, "j", "alice", 0, key)
    assert reason is None
    assert dict(counting.calls) == {"get_many": 1}
    assert assignments.current_from(raw, 1).roles == {"editor"}
    await assignments.set_role(ADMIN, "alice", "user", may_administer=True)  # a demotion
    counting.reset()
    reason, raw = await revocations.check_and_read(ISS, "j", "alice", 0, key)
    assert assignments.current_from(raw, 1).roles == {"user"}  # the token still says pv=1
    assert dict(counting.calls) == {"get_many": 1}
    counting.reset()
    reason, raw = await asyncio.to_thread(revocations.check_and_read_sync, ISS, "j", "bob", 0, key)
    assert (reason, dict(counting.calls)) == (None, {"get_many": 1})
    counting.reset()
    reason, raw = await revocations.check_and_read(ISS, "j", "nobody", None, assignment_key("x"))
    assert (reason, raw, dict(counting.calls)) == (None, None, {"get_many": 1})
    assert assignments.current_from(raw, None) == Assignment()
    await revocations.revoke_jti(ISS, "j", subject="alice", expires_at=clock.now() + 60)
    reason, raw = await revocations.check_and_read(ISS, "j", "alice", 0, key)
    assert reason is TokenReason.REVOKED
    assert await revocations.check(ISS, "j", "alice", 0) is TokenReason.REVOKED


def _command_calls(admin: SyncRedis) -> dict[str, int]:
    stats: dict[str, Any] = admin.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


@pytest.mark.redis
@pytest.mark.asyncio
async def test_the_folded_read_is_one_mget_on_redis(
    start_redis_server: Callable[..., RedisServer],
    clock: FrozenClock,
    hasher: IdentifierHasher,
    sink: RecordingAuditSink,
) -> None:
    """Counted by the server: a bearer check plus the assignment is one MGET, async or sync,
    the same as the bearer check alone."""
    server = start_redis_server()
    store = RedisStore.from_url(server.url)
    assignments = make(store, clock, hasher, sink)
    revocations = Revocations(store, clock=clock)
    await assignments.set_role(ADMIN, "alice", "editor", may_administer=True)
    key = assignment_key("alice")
    try:
        with SyncRedis.from_url(server.url) as admin:
            await revocations.check_and_read(ISS, "k", "alice", 0, key)  # warm the connections
            revocations.check_and_read_sync(ISS, "k", "alice", 0, key)
            before = _command_calls(admin)
            for _ in range(5):
                _, raw = await revocations.check_and_read(ISS, "k", "alice", 0, key)
                assert assignments.current_from(raw, 1).roles == {"editor"}
                _, raw = revocations.check_and_read_sync(ISS, "k", "alice", 0, key)
                assert assignments.current_from(raw, 1).roles == {"editor"}
            after = _command_calls(admin)
        changed = {name: after[name] - before.get(name, 0) for name in after}
        changed = {name: count for name, count in changed.items() if count}
        changed.pop("info", None)
        assert changed == {"mget": 10}
    finally:
        await store.aclose()


@pytest.mark.asyncio
async def test_current_is_one_get(
    clock: FrozenClock, hasher: IdentifierHasher, sink: RecordingAuditSink, tmp_path: Path
) -> None:
    counting = CountingStore(SQLiteStore(tmp_path / "a.db", clock=clock))
    assignments = make(counting, clock, hasher, sink)
    await assignments.assign_role(ADMIN, "alice", "editor", may_administer=True)
    counting.reset()
    assert (await assignments.current("alice", 0)).roles == {"editor"}
    assert dict(counting.calls) == {"get": 1}
    await counting.aclose()
