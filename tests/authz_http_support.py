"""The policy, users and stack the authorization HTTP tests share.

Users live in a real MemoryStore through bastion's Assignments; requests carry real signed
test tokens (tests/bearer_support.py) verified by BearerMiddleware, so the user comes from the
bearer principal exactly as in production.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING

from tests.bearer_support import NOW, HMACVerifier, make_token

from bastion.authz.policy import AuthzPolicy, RouteRule
from bastion.authz.service import Authorizer
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.authz.conditions import Condition, Operator, Ref
from bastion.core.authz.policy import Effect, Policy, Rule
from bastion.core.authz.roles import Role
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing
from bastion.stores.memory import MemoryStore
from bastion.testing.audit import RecordingAuditSink

if TYPE_CHECKING:
    from bastion.engine.authz import Assignments
    from bastion.stores.base import Store

POLICY = Policy(
    roles=(
        Role("admin", ("authz:admin", "admin:access"), ("moderator",)),
        Role("moderator", ("posts:*",), ("user",)),
        Role("user", ("app:use", "posts:read", "posts:write:own", "posts:update:own")),
    ),
    rules=(
        Rule(
            "no-locked-updates",
            Effect.DENY,
            ("update",),
            "posts",
            when=Condition(Ref.parse("resource.locked"), Operator.EQUALS, True),
        ),
    ),
)

ROUTES = (
    RouteRule(path="/login", public=True),
    RouteRule(path="/health", methods=("GET",), public=True),
    RouteRule(path="/posts", methods=("GET",), permission="posts:read"),
    RouteRule(path="/posts", methods=("POST",), permission="posts:write"),
    RouteRule(path="/posts/*"),
    RouteRule(path="/admin/*", permission="admin:access"),
    RouteRule(path="/me"),
    RouteRule(path="/decorated"),
)

USERS = {"alice": "admin", "mona": "moderator", "uma": "user", "umar": "user"}

POSTS = {
    "p-uma": {"type": "posts", "id": "p-uma", "owner_id": "uma", "locked": False},
    "p-mona": {"type": "posts", "id": "p-mona", "owner_id": "mona", "locked": False},
    "p-locked": {"type": "posts", "id": "p-locked", "owner_id": "uma", "locked": True},
}

_JTI = itertools.count()


class World:
    """One store, one authorizer, one verifier; users seeded by an outside actor."""

    def __init__(self, roles_store: Store | None = None) -> None:
        self.clock = FrozenClock(NOW)
        self.store = MemoryStore(clock=self.clock)
        self.sink = RecordingAuditSink()
        self.auditor = Auditor(
            IdentifierHasher(KeyRing.generate()), self.clock, self.sink, aggregation=None
        )
        self.authorizer = Authorizer(
            AuthzPolicy(policy=POLICY, routes=ROUTES),
            store=roles_store or self.store,
            auditor=self.auditor,
            clock=self.clock,
        )
        self.verifier = HMACVerifier(self.store, clock=self.clock)
        for user, role in USERS.items():
            self.set_role(user, role)
        self.assignments().set_role_sync("seed", "tess", "admin", tenant="t1", may_administer=True)
        self.sink.clear()

    def assignments(self) -> Assignments:
        found = self.authorizer.assignments
        assert found is not None
        return found

    def set_role(self, user: str, role: str) -> None:
        """What an operator outside the request does (the seed, or a demotion)."""
        self.assignments().set_role_sync("seed", user, role, may_administer=True)

    def run(self, coroutine: object) -> object:
        return asyncio.run(coroutine)  # type: ignore[arg-type]

    def auth(self, user: str) -> dict[str, str]:
        token = make_token(user, jti=f"t-{next(_JTI)}")
        return {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def fails(self) -> list[dict[str, object]]:
        return [dict(e.details) for e in self.sink.events if e.name == "authz_fail"]
