"""Store-backed role and grant assignments, and the per-user permission version, on memory,
SQLite files and real Redis: changes by compare-and-set (parallel changes never lose one),
audit events, self-grant and non-admin refusals, keys no user id can collide through, damaged
records. The permission version per request: test_authz_permission_version.py."""

from __future__ import annotations

import asyncio
import json
import threading
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.authz.permission import Permission
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing
from bastion.engine.authz import MAX_ENTRIES, Assignment, Assignments, ChangeKind, assignment_key
from bastion.engine.authz.record import decode_assignment, encode_assignment
from bastion.engine.flows import CAS_ATTEMPTS
from bastion.engine.sessions.registry import epoch_key
from bastion.errors import (
    AuthzInputError,
    ConfigurationError,
    Forbidden,
    SelfGrantRefused,
    StoreBusy,
    StoreCorrupt,
)
from bastion.stores.base import MAX_KEY_BYTES
from bastion.stores.keyspace import key_slot
from bastion.stores.memory import MemoryStore
from bastion.testing.audit import RecordingAuditSink
from bastion.testing.sync_store import CountingStore

if TYPE_CHECKING:
    from bastion.stores.base import Store

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


def texts(permissions: tuple[Permission, ...]) -> list[str]:
    return [str(p) for p in permissions]


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


@pytest.mark.asyncio
async def test_an_unknown_user_has_an_empty_assignment_at_version_0(
    assignments: Assignments,
) -> None:
    assert await assignments.load("nobody") == Assignment()
    assert await assignments.version("nobody") == 0
    assert await asyncio.to_thread(assignments.load_sync, "nobody") == Assignment()
    assert (await assignments.load("nobody")).roles_in("tenant-a") == frozenset()


@pytest.mark.asyncio
async def test_each_change_bumps_the_version_and_is_audited(
    assignments: Assignments, clock: FrozenClock, hasher: IdentifierHasher, sink: RecordingAuditSink
) -> None:
    a = await assignments.assign_role(ADMIN, "alice", "editor", may_administer=True)
    assert (a.version, a.roles, a.changed_at) == (1, frozenset({"editor"}), clock.now())
    a = await assignments.assign_role(ADMIN, "alice", "moderator", may_administer=True)
    a = await assignments.set_role(ADMIN, "alice", "user", may_administer=True)
    assert (a.version, a.roles) == (3, frozenset({"user"}))
    a = await assignments.assign_role(ADMIN, "alice", "admin", tenant="t1", may_administer=True)
    assert a.roles_in("t1") == {"user", "admin"}
    assert a.roles_in("t2") == {"user"}
    a = await assignments.grant(ADMIN, "alice", "posts:write:own", may_administer=True)
    a = await assignments.deny(ADMIN, "alice", "billing:*", may_administer=True)
    assert (texts(a.grants), texts(a.denies), a.version) == (["posts:write:own"], ["billing:*"], 6)
    a = await assignments.revoke_role(ADMIN, "alice", "admin", tenant="t1", may_administer=True)
    a = await assignments.revoke_grant(ADMIN, "alice", "posts:write:own", may_administer=True)
    a = await assignments.revoke_deny(ADMIN, "alice", "billing:*", may_administer=True)
    a = await assignments.set_roles(ADMIN, "alice", ["b", "a"], may_administer=True)
    assert a == await assignments.load("alice")
    assert (a.version, a.roles, dict(a.tenant_roles), a.grants, a.denies) == (
        10,
        frozenset({"a", "b"}),
        {},
        (),
        (),
    )
    assert sink.names() == ["authz_change"] * 10
    first, third, fourth = sink.events[0], sink.events[2], sink.events[3]
    assert first.user == hasher.hash(ADMIN)
    assert dict(first.details) == {
        "target": hasher.hash("alice").digest,
        "change": "assign_role",
        "value": "editor",
        "tenant": None,
        "old_version": 0,
        "new_version": 1,
        "roles_before": "",
        "roles_after": "editor",
    }
    assert third.details["change"] == "set_roles"
    assert (third.details["roles_before"], third.details["roles_after"]) == (
        "editor moderator",
        "user",
    )
    assert (fourth.details["tenant"], fourth.details["roles_after"]) == ("t1", "admin")
    assert "alice" not in json.dumps([e.to_dict() for e in sink.events])


@pytest.mark.asyncio
async def test_a_change_that_changes_nothing_writes_nothing(
    clock: FrozenClock, hasher: IdentifierHasher, sink: RecordingAuditSink
) -> None:
    counting = CountingStore(MemoryStore(clock=clock))
    assignments = make(counting, clock, hasher, sink)
    await assignments.assign_role(ADMIN, "alice", "editor", may_administer=True)
    counting.reset()
    sink.clear()
    again = await assignments.assign_role(ADMIN, "alice", "editor", may_administer=True)
    gone = await assignments.revoke_role(ADMIN, "alice", "ghost", may_administer=True)
    assert again.version == gone.version == 1
    assert dict(counting.calls) == {"get": 2}
    assert sink.names() == []


@pytest.mark.asyncio
async def test_the_sync_twins_share_the_records(assignments: Assignments) -> None:
    def run() -> Assignment:
        assignments.assign_role_sync(ADMIN, "bob", "editor", may_administer=True)
        assignments.grant_sync(ADMIN, "bob", "posts:read", may_administer=True)
        assignments.deny_sync(ADMIN, "bob", "posts:delete", may_administer=True)
        assignments.set_roles_sync(ADMIN, "bob", ["x", "y"], may_administer=True)
        assignments.set_role_sync(ADMIN, "bob", "x", may_administer=True)
        assignments.revoke_role_sync(ADMIN, "bob", "x", may_administer=True)
        assignments.revoke_grant_sync(ADMIN, "bob", "posts:read", may_administer=True)
        assignments.revoke_deny_sync(ADMIN, "bob", "posts:delete", may_administer=True)
        assignments.change_sync(ADMIN, "bob", ChangeKind.GRANT, ["*"], may_administer=True)
        assert assignments.version_sync("bob") == 9
        return assignments.current_sync("bob", 3)

    done = await asyncio.to_thread(run)
    assert done == await assignments.load("bob")
    assert (done.roles, texts(done.grants), done.version) == (frozenset(), ["*"], 9)


@pytest.mark.asyncio
async def test_many_users_load_in_few_store_calls(
    any_store: Store, clock: FrozenClock, hasher: IdentifierHasher, sink: RecordingAuditSink
) -> None:
    counting = CountingStore(any_store)
    assignments = make(counting, clock, hasher, sink)
    users = [f"user-{n}" for n in range(100)]
    for user in users[::7]:
        await assignments.set_role(ADMIN, user, "editor", may_administer=True)
    counting.reset()
    found = await assignments.load_many(users)
    assert dict(counting.calls) == {"get_many": 2}
    assert [user for user, a in zip(users, found, strict=True) if a.roles] == users[::7]
    assert await asyncio.to_thread(assignments.load_many_sync, users[:3]) == found[:3]
    assert await assignments.load_many([]) == []


# -- who may change ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_nobody_changes_their_own_assignment(
    clock: FrozenClock, hasher: IdentifierHasher, sink: RecordingAuditSink
) -> None:
    counting = CountingStore(MemoryStore(clock=clock))
    assignments = make(counting, clock, hasher, sink)
    for kind, value in [
        (ChangeKind.ASSIGN_ROLE, "admin"),
        (ChangeKind.SET_ROLES, "super_admin"),
        (ChangeKind.GRANT, "*"),
        (ChangeKind.REVOKE_DENY, "users:delete"),
    ]:
        with pytest.raises(SelfGrantRefused, match="their own") as caught:
            await assignments.change(ADMIN, ADMIN, kind, [value], may_administer=True)
        assert caught.value.decision is None
    with pytest.raises(SelfGrantRefused):
        assignments.assign_role_sync("mallory", "mallory", "admin", may_administer=False)
    assert counting.total == 0
    assert sink.names() == ["authz_fail"] * 5
    event = sink.events[0]
    assert event.user == hasher.hash(ADMIN)
    assert dict(event.details) == {
        "reason": "self_grant",
        "change": "assign_role",
        "target": hasher.hash(ADMIN).digest,
    }
    assert await assignments.version(ADMIN) == 0


@pytest.mark.asyncio
async def test_a_non_administrator_is_forbidden(
    clock: FrozenClock, hasher: IdentifierHasher, sink: RecordingAuditSink
) -> None:
    counting = CountingStore(MemoryStore(clock=clock))
    assignments = make(counting, clock, hasher, sink)
    with pytest.raises(Forbidden, match="may not change") as caught:
        await assignments.assign_role("mallory", "alice", "admin", may_administer=False)
    assert type(caught.value) is Forbidden
    with pytest.raises(Forbidden):
        assignments.grant_sync("mallory", "alice", "*", may_administer=False)
    assert counting.total == 0
    assert [e.details["reason"] for e in sink.events] == ["not_administrator"] * 2
    assert sink.events[0].details["target"] == hasher.hash("alice").digest
    for truthy in (1, "yes", None):
        with pytest.raises(ConfigurationError, match="may_administer"):
            await assignments.assign_role(ADMIN, "alice", "admin", may_administer=truthy)  # type: ignore[arg-type]
    assert counting.total == 0


# -- input -------------------------------------------------------------------------------------


BAD_ROLES = ["Admin", "a b", "", "a:b", "*", "-x", "x" * 257, "é", "admin\n", 7, None]
GOOD_PERMISSIONS = ["posts:write", "posts:*:own", "*", "*:read", "posts:*", "a.b-c_d:e:f"]
BAD_PERMISSIONS = ["posts", "posts:**", "post*:read", "a:b:c:d", "Posts:read", "posts::read", ""]


@pytest.mark.asyncio
async def test_role_names_and_permissions_follow_the_grammar(
    clock: FrozenClock, hasher: IdentifierHasher, sink: RecordingAuditSink
) -> None:
    counting = CountingStore(MemoryStore(clock=clock))
    assignments = make(counting, clock, hasher, sink)
    for role in BAD_ROLES:
        with pytest.raises(AuthzInputError, match="role name"):
            await assignments.assign_role(ADMIN, "alice", role, may_administer=True)  # type: ignore[arg-type]
    for permission in BAD_PERMISSIONS:
        with pytest.raises(AuthzInputError, match="permission"):
            await assignments.grant(ADMIN, "alice", permission, may_administer=True)
    for tenant in ["", "a\nb", "x" * 513, 3]:
        with pytest.raises(AuthzInputError, match="tenant"):
            await assignments.assign_role(ADMIN, "alice", "r", tenant=tenant, may_administer=True)  # type: ignore[arg-type]
    with pytest.raises(AuthzInputError, match="one string"):
        await assignments.set_roles(ADMIN, "alice", "admin", may_administer=True)
    with pytest.raises(AuthzInputError, match="no tenant"):
        await assignments.change(
            ADMIN, "a", ChangeKind.DENY, ["*"], tenant="t", may_administer=True
        )
    for user in ["", 42, None, "\udc80"]:
        with pytest.raises(AuthzInputError, match="user_id"):
            await assignments.load(user)  # type: ignore[arg-type]
        with pytest.raises(AuthzInputError, match="actor"):
            await assignments.assign_role(user, "alice", "r", may_administer=True)  # type: ignore[arg-type]
    with pytest.raises(AuthzInputError, match="user_id is 513 characters"):
        await assignments.load("x" * 513)
    assert counting.total == 0
    for permission in GOOD_PERMISSIONS:
        await assignments.grant(ADMIN, "alice", permission, may_administer=True)
    assert texts((await assignments.load("alice")).grants) == sorted(GOOD_PERMISSIONS)
    assert sink.names() == ["authz_change"] * len(GOOD_PERMISSIONS)


@pytest.mark.asyncio
async def test_known_roles_refuse_a_typo(
    clock: FrozenClock, hasher: IdentifierHasher, sink: RecordingAuditSink
) -> None:
    assignments = make(MemoryStore(clock=clock), clock, hasher, sink, known_roles=["admin", "user"])
    await assignments.set_role(ADMIN, "alice", "admin", may_administer=True)
    with pytest.raises(AuthzInputError, match="'amdin' is not a role of the policy"):
        await assignments.set_role(ADMIN, "alice", "amdin", may_administer=True)
    assert (await assignments.load("alice")).roles == {"admin"}
    for bad in ["admin", ["Admin"]]:
        with pytest.raises(ConfigurationError) as caught:
            make(MemoryStore(clock=clock), clock, hasher, sink, known_roles=bad)
        assert caught.value.setting == "known_roles"


@pytest.mark.asyncio
async def test_a_user_holds_a_bounded_number_of_entries(assignments: Assignments) -> None:
    roles = [f"r{i}" for i in range(MAX_ENTRIES)]
    await assignments.set_roles(ADMIN, "alice", roles, may_administer=True)
    with pytest.raises(AuthzInputError, match=f"at most {MAX_ENTRIES}"):
        await assignments.assign_role(ADMIN, "alice", "one-more", may_administer=True)
    assert len((await assignments.load("alice")).roles) == MAX_ENTRIES


# -- keys --------------------------------------------------------------------------------------


TRICKY_IDS = [
    "alice",
    ":",
    "a:b",
    "a/b",
    "/",
    "{alice}",
    "%7Balice%7D",
    "}{",
    "%",
    "é",
    "e\u0301",  # the same letter, decomposed: another id
    "🙂",
    "authz:u:{alice}",
    " alice",
    "x" * 512,  # the longest id a Subject takes
    "é" * 512,  # 1 KiB of UTF-8 in two-byte letters: the key just passes 1 KiB, so hashed
    "🙂" * 256,  # 1 KiB in four-byte characters
    "🙂" * 512,
]


def test_no_user_id_reaches_another_users_key() -> None:
    keys = [assignment_key(user) for user in TRICKY_IDS]
    assert len(set(keys)) == len(keys)
    for user, key in zip(TRICKY_IDS, keys, strict=True):
        assert len(key.encode()) <= MAX_KEY_BYTES
        if len(epoch_key(user).encode()) <= MAX_KEY_BYTES:  # the bearer check's one MGET
            assert key_slot(key) == key_slot(epoch_key(user))
            assert key.startswith("authz:u:{")
        else:
            assert key.startswith("authz:h:{")


# Ids built from the characters escaping works on, so that an escape that is not injective
# (``{`` and ``%7B`` meeting) would be found; and long ones, on both sides of the hashed form.
_IDS = st.text("%7Bb{}:/é", min_size=1, max_size=12) | st.builds(
    lambda tail, n: "é" * n + tail, st.text("%{}", max_size=4), st.integers(495, 508)
)


@given(_IDS, _IDS)
@settings(max_examples=200, deadline=None)
def test_two_ids_never_share_a_key(first: str, second: str) -> None:
    """Short ids are escaped (injective), long ones hashed under another namespace."""
    assume(first != second)
    assert assignment_key(first) != assignment_key(second)
    assert assignment_key(first) == assignment_key(first)


@pytest.mark.asyncio
async def test_tricky_ids_keep_their_own_records(assignments: Assignments) -> None:
    for n, user in enumerate(TRICKY_IDS):
        await assignments.assign_role(ADMIN, user, f"role-{n}", may_administer=True)
    for n, user in enumerate(TRICKY_IDS):
        held = await assignments.load(user)
        assert held.roles == {f"role-{n}"}, user
        assert held.subject(user).roles == {f"role-{n}"}
    assert await assignments.version("alice2") == 0


# -- damaged records -------------------------------------------------------------------------


def damaged(**changes: Any) -> bytes:
    """A valid record's JSON with ``changes`` (``None`` drops a field)."""
    data: dict[str, Any] = {
        "v": 1,
        "version": 1,
        "roles": [],
        "tenant_roles": {},
        "grants": [],
        "denies": [],
        "changed_at": 1,
    }
    data.update(changes)
    return json.dumps({k: v for k, v in data.items() if v is not None}).encode()


DAMAGED = [
    b"not json",
    b"\xff\xfe",
    b"[]",
    b"{}",
    b"[" * 100_000,
    damaged(v=2),
    damaged(version=0),
    damaged(version=True),
    damaged(version=1.0),
    damaged(roles=["Admin"]),
    damaged(roles=["b", "a"]),
    damaged(roles=["a", "a"]),
    damaged(roles="admin"),
    damaged(tenant_roles={"t": []}),
    damaged(tenant_roles={"": ["a"]}),
    damaged(tenant_roles=["a"]),
    damaged(denies=["posts"]),
    damaged(grants=[1]),
    damaged(changed_at=float("nan")),
    damaged(changed_at=None),
    damaged(extra=1),
    damaged(roles=[f"r{n:03}" for n in range(MAX_ENTRIES + 1)]),
]


@pytest.mark.asyncio
async def test_a_damaged_record_is_store_corrupt_never_no_roles(
    any_store: Store, assignments: Assignments, sink: RecordingAuditSink
) -> None:
    key = assignment_key("alice")
    for raw in DAMAGED:
        await any_store.set(key, raw)
        with pytest.raises(StoreCorrupt):
            await assignments.load("alice")
        with pytest.raises(StoreCorrupt):
            await assignments.current("alice", 0)
        with pytest.raises(StoreCorrupt):
            await assignments.assign_role(ADMIN, "alice", "user", may_administer=True)
        assert await any_store.get(key) == raw  # never overwritten
    assert sink.names() == []


def test_the_record_round_trips() -> None:
    a = Assignment(
        version=7,
        roles=frozenset({"b", "a"}),
        tenant_roles=MappingProxyType({"t\u00e9": frozenset({"x"})}),
        grants=(Permission.parse("p:q"),),
        denies=(Permission.parse("*"),),
        changed_at=5.5,
    )
    assert decode_assignment(encode_assignment(a)) == a
    with pytest.raises(ConfigurationError, match="version"):
        Assignment(version=-1)


# -- contention ------------------------------------------------------------------------------


WRITERS = 8


def _no_lost_write(results: list[object], final: Assignment, roles: list[str]) -> None:
    landed = {role for role, result in zip(roles, results, strict=True) if result == "ok"}
    busy = [result for result in results if result != "ok"]
    assert all(isinstance(b, StoreBusy) for b in busy), busy
    assert final.roles == landed
    assert final.version == len(landed)
    assert len(landed) >= 1


@pytest.mark.asyncio
async def test_parallel_tasks_never_lose_a_change(
    assignments: Assignments, sink: RecordingAuditSink
) -> None:
    roles = [f"r{n}" for n in range(WRITERS)]

    async def one(role: str) -> object:
        try:
            await assignments.assign_role(ADMIN, "alice", role, may_administer=True)
        except StoreBusy as exc:
            return exc
        return "ok"

    results = await asyncio.gather(*(one(role) for role in roles))
    final = await assignments.load("alice")
    _no_lost_write(list(results), final, roles)
    assert len(sink.events) == final.version
    assert {e.details["new_version"] for e in sink.events} == set(range(1, final.version + 1))


@pytest.mark.asyncio
async def test_parallel_threads_never_lose_a_change(
    assignments: Assignments, sink: RecordingAuditSink
) -> None:
    roles = [f"r{n}" for n in range(WRITERS)]
    results: list[object] = [None] * WRITERS
    barrier = threading.Barrier(WRITERS)

    def one(n: int) -> None:
        barrier.wait(timeout=10)
        try:
            assignments.assign_role_sync(ADMIN, "alice", roles[n], may_administer=True)
            results[n] = "ok"
        except StoreBusy as exc:
            results[n] = exc

    threads = [threading.Thread(target=one, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        await asyncio.to_thread(thread.join, 30)
    final = await assignments.load("alice")
    _no_lost_write(results, final, roles)
    assert len(sink.events) == final.version


class Yielding(MemoryStore):
    """A memory store whose reads give the event loop a turn, so that tasks interleave
    between a read and its compare-and-set (a plain memory store runs each flow inline)."""

    async def get(self, key: str) -> bytes | None:
        value = await super().get(key)
        await asyncio.sleep(0)
        return value


@pytest.mark.asyncio
async def test_interleaved_tasks_on_memory_never_lose_a_change(
    clock: FrozenClock, hasher: IdentifierHasher, sink: RecordingAuditSink
) -> None:
    counting = CountingStore(Yielding(clock=clock))  # not inline: the awaited path
    assignments = make(counting, clock, hasher, sink)
    roles = [f"r{n}" for n in range(WRITERS)]
    results = await asyncio.gather(
        *(assignments.assign_role(ADMIN, "alice", r, may_administer=True) for r in roles),
        return_exceptions=True,
    )
    final = await assignments.load("alice")
    _no_lost_write(["ok" if isinstance(r, Assignment) else r for r in results], final, roles)
    assert counting.calls["compare_and_set"] > WRITERS  # the races happened, and were lost


class Outbid(MemoryStore):
    """Every compare-and-set on an authz key finds it just rewritten by another writer."""

    rounds = 0

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        if key.startswith("authz:"):
            self.rounds += 1
            rival = Assignment(version=self.rounds, roles=frozenset({"rival"}), changed_at=1.0)
            await super().set(key, encode_assignment(rival), ttl)
        return await super().compare_and_set(key, expected, value, ttl)


@pytest.mark.asyncio
async def test_contention_past_the_bound_is_store_busy(
    clock: FrozenClock, hasher: IdentifierHasher, sink: RecordingAuditSink
) -> None:
    store = Outbid(clock=clock)
    counting = CountingStore(store)
    assignments = make(counting, clock, hasher, sink)
    with pytest.raises(StoreBusy, match="a user's role assignment"):
        await assignments.assign_role(ADMIN, "alice", "admin", may_administer=True)
    assert counting.calls["compare_and_set"] == CAS_ATTEMPTS
    assert (await assignments.load("alice")).roles == {"rival"}
    assert sink.names() == []
