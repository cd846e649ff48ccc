"""The subjects and passing verdicts an Authorizer keeps by the record's bytes
(``bastion.authz._known``), on memory, a SQLite file and real Redis: a repeat check reuses
them, yet every change (a demotion, a deny, a promotion) reaches the very next check, a check
whose rule reads the request's context is decided each time, every denial is audited each
time, and a carried version is checked against the record on every request."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from bastion.authz.policy import AuthzPolicy
from bastion.authz.service import Authorizer, RequestUser
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.authz.conditions import Condition, Operator, Ref
from bastion.core.authz.policy import Effect, Policy, Rule
from bastion.core.authz.roles import Role
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing
from bastion.errors import StoreCorrupt
from bastion.testing.audit import RecordingAuditSink

if TYPE_CHECKING:
    from bastion.stores.base import Store

POLICY = Policy(
    roles=(
        Role("admin", ("authz:admin", "posts:*"), ("user",)),
        Role("user", ("posts:read", "reports:read")),
    ),
    rules=(
        Rule(
            "reports-read-only-by-get",
            Effect.DENY,
            ("reports:read",),
            when=Condition(Ref.parse("context.method"), Operator.NOT_EQUALS, "GET"),
        ),
    ),
)
GET = {"method": "GET", "path": "/x"}
POST = {"method": "POST", "path": "/x"}


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def sink() -> RecordingAuditSink:
    return RecordingAuditSink()


@pytest.fixture
def authorizer(any_store: Store, clock: FrozenClock, sink: RecordingAuditSink) -> Authorizer:
    auditor = Auditor(IdentifierHasher(KeyRing.generate()), clock, sink, aggregation=None)
    authz = Authorizer(AuthzPolicy(policy=POLICY), store=any_store, auditor=auditor, clock=clock)
    assert authz.assignments is not None
    authz.assignments.set_role_sync("seed", "root", "admin", may_administer=True)
    authz.assignments.set_role_sync("seed", "uma", "user", may_administer=True)
    sink.clear()
    return authz


def _fails(sink: RecordingAuditSink) -> list[str | None]:
    return [str(dict(e.details)["reason"]) for e in sink.events if e.name == "authz_fail"]


@pytest.mark.asyncio
async def test_a_repeat_check_reuses_the_verdict_and_every_change_reaches_the_next(
    authorizer: Authorizer, sink: RecordingAuditSink
) -> None:
    uma = RequestUser("uma", None)
    first = await authorizer.gate(uma, ("posts:read",), context=GET)
    again = await authorizer.gate(uma, ("posts:read",), context=GET)
    assert (first.status, again.status) == (0, 0)
    assert again is first  # kept: the record's bytes have not changed
    assert (await authorizer.gate(uma, ("posts:write",), context=GET)).status == 403

    await authorizer.grant("root", "uma", "posts:write")  # a promotion counts at once
    promoted = await authorizer.gate(uma, ("posts:write",), context=GET)
    assert promoted.status == 0
    assert promoted.decision is not None
    assert promoted.decision.reason.value == "allowed_by_grant"

    await authorizer.deny("root", "uma", "posts:read")  # so does a deny
    denied = await authorizer.gate(uma, ("posts:read",), context=GET)
    assert denied.status == 403
    assert denied.refusal is not None
    assert denied.refusal.error == "denied_by_grant"

    await authorizer.set_role("root", "root2", "admin")
    alice = RequestUser("root2", None)
    assert (await authorizer.gate(alice, ("posts:write",), context=GET)).status == 0
    await authorizer.set_role("root", "root2", "user")  # a demotion counts at once
    demoted = await authorizer.gate(alice, ("posts:write",), context=GET)
    assert demoted.status == 403
    assert demoted.refusal is not None
    assert demoted.refusal.error == "no_match"
    assert _fails(sink) == ["no_match", "denied_by_grant", "no_match"]


@pytest.mark.asyncio
async def test_a_check_whose_rule_reads_the_context_is_decided_every_time(
    authorizer: Authorizer, sink: RecordingAuditSink
) -> None:
    uma = RequestUser("uma", None)
    assert not authorizer.engine.subject_only("reports:read")
    assert authorizer.engine.subject_only("posts:read")
    assert (await authorizer.gate(uma, ("reports:read",), context=GET)).status == 0
    refused = await authorizer.gate(uma, ("reports:read",), context=POST)
    assert refused.status == 403
    assert refused.refusal is not None
    assert refused.refusal.error == "denied_by_rule"
    assert (await authorizer.gate(uma, ("reports:read",), context=GET)).status == 0
    assert _fails(sink) == ["denied_by_rule"]


@pytest.mark.asyncio
async def test_every_denial_is_decided_and_audited_again(
    authorizer: Authorizer, sink: RecordingAuditSink
) -> None:
    uma = RequestUser("uma", None)
    for _ in range(3):
        verdict = await authorizer.gate(uma, ("posts:delete",), context=GET)
        assert verdict.status == 403
    assert _fails(sink) == ["no_match"] * 3


@pytest.mark.asyncio
async def test_the_carried_version_is_checked_on_every_request(
    authorizer: Authorizer, sink: RecordingAuditSink
) -> None:
    version = (await authorizer.subject_for("uma")).version
    assert version == 1
    ok = RequestUser("uma", version)
    assert (await authorizer.gate(ok, ("posts:read",), context=GET)).status == 0
    assert (await authorizer.gate(ok, ("posts:read",), context=GET)).status == 0  # kept
    with pytest.raises(StoreCorrupt):  # above the store's: lost writes, even when kept
        await authorizer.gate(RequestUser("uma", version + 1), ("posts:read",), context=GET)
    negative = await authorizer.gate(RequestUser("uma", -1), ("posts:read",), context=GET)
    assert negative.status == 403
    assert negative.refusal is not None
    assert negative.refusal.error == "authz_bad_input"
    assert authorizer.subject_for_sync("uma", version=version).version == version
    with pytest.raises(StoreCorrupt):
        authorizer.gate_sync(RequestUser("uma", version + 1), ("posts:read",), context=GET)
    assert _fails(sink) == ["authz_bad_input"]
