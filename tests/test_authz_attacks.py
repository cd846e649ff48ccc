"""Attack cases at the core of authorization: each asserts the exact refusal (reason, and the
evidence in the decision) or the exact configuration error."""

from __future__ import annotations

import pytest

from bastion.core.authz import (
    AuthzReason,
    Condition,
    Effect,
    Operator,
    Permission,
    Policy,
    Ref,
    Resource,
    Role,
    Rule,
    Subject,
)
from bastion.errors import AuthzInputError, ConfigurationError

ROLES = (
    Role("guest", ("posts:read",)),
    Role("user", ("posts:write:own",), ("guest",)),
    Role("moderator", ("posts:*",), ("user",)),
    Role("admin", ("users:*",), ("moderator",)),
    Role("super_admin", ("*",), ("admin",)),
)
POLICY = Policy(roles=ROLES)


def c(attribute: str, operator: str, value: object) -> Condition:
    return Condition(Ref.parse(attribute), Operator(operator), value)


# -- a user named like a role -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["admin", "super_admin", "moderator", "user", "guest"])
def test_a_user_named_like_a_role_gets_nothing(name: str) -> None:
    decision = POLICY.evaluate({"id": name}, None, "posts:read")
    assert (decision.allowed, decision.reason) == (False, AuthzReason.NO_MATCH)
    assert decision.role is None
    assert not POLICY.has_role({"id": name}, name)
    assert POLICY.permissions_of({"id": name}) == frozenset()


def test_a_role_name_in_attributes_is_not_a_role() -> None:
    s = Subject(id="u1", attributes={"role": "admin", "roles": ["admin"]})
    assert POLICY.evaluate(s, None, "users:delete").reason is AuthzReason.NO_MATCH
    assert not POLICY.has_role(s, "admin")


# -- wildcards across segment boundaries ------------------------------------------------------


@pytest.mark.parametrize(
    ("granted", "asked"),
    [
        ("posts:*", "postsecret:read"),
        ("posts:*", "posts.secret:read"),
        ("posts:*", "post:read"),
        ("post:*", "posts:read"),
        ("*:read", "posts:readall"),
        ("*:read", "posts:write"),
        ("posts:read", "posts:read.all"),
        ("posts:read:own", "posts:read:owner"),
        ("posts:read:own", "posts:read:team"),
    ],
)
def test_a_wildcard_never_crosses_a_segment(granted: str, asked: str) -> None:
    policy = Policy(roles=(Role("r", (granted,)),))
    decision = policy.evaluate(Subject(id="u1", roles=frozenset({"r"})), None, asked)
    assert decision.allowed is False
    assert decision.reason is AuthzReason.NO_MATCH


@pytest.mark.parametrize(
    "text",
    [
        "POSTS:read",
        "posts:read ",
        "posts :read",
        "posts:re*",
        "posts*",
        "*posts:read",
        "**",
        "a:b:c:d",
    ],
)
def test_odd_permission_texts_are_refused_in_roles_and_checks(text: str) -> None:
    with pytest.raises(ConfigurationError, match=r"roles\.r\.permissions") as caught:
        Role("r", (text,))
    assert caught.value.setting == "roles.r.permissions"
    with pytest.raises(AuthzInputError, match="action must be"):
        POLICY.evaluate({"id": "u1", "roles": ["super_admin"]}, None, text)
    with pytest.raises(AuthzInputError, match="subject grants must be"):
        Subject(id="u1", grants=(text,))  # type: ignore[arg-type]


# -- cycles and deep chains -------------------------------------------------------------------


def test_a_cycle_is_a_start_up_error_naming_it() -> None:
    roles = (
        Role("admin", inherits=("moderator",)),
        Role("moderator", inherits=("user",)),
        Role("user", inherits=("admin",)),
    )
    with pytest.raises(ConfigurationError) as caught:
        Policy(roles=roles)
    assert str(caught.value) == "roles inherit in a cycle: admin -> moderator -> user -> admin"


def test_a_chain_deeper_than_the_limit_is_a_start_up_error_not_a_silent_deny() -> None:
    # pycasbin stops at ten levels and silently denies; here an eleven-level chain grants
    # (within the default max_depth of 16), and one past max_depth fails at start-up.
    chain = [Role(f"level{i}", inherits=(f"level{i + 1}",)) for i in range(11)]
    chain.append(Role("level11", ("vault:open",)))
    policy = Policy(roles=tuple(chain))
    deep = policy.evaluate({"id": "u", "roles": ["level0"]}, None, "vault:open")
    assert deep.reason is AuthzReason.ALLOWED_BY_ROLE
    assert deep.via == tuple(f"level{i}" for i in range(12))
    with pytest.raises(ConfigurationError, match="is 11 levels deep, deeper than max_depth=10"):
        Policy(roles=tuple(chain), max_depth=10)


# -- conditions that cannot be evaluated ------------------------------------------------------


def _locked_policy() -> Policy:
    return Policy(
        roles=ROLES,
        rules=(
            Rule(
                "no-locked-writes",
                Effect.DENY,
                ("write",),
                resource="posts",
                when=c("resource.locked", "equals", True),
            ),
        ),
    )


@pytest.mark.parametrize(
    ("attributes", "error"),
    [
        ({}, "resource.locked is missing"),
        ({"locked": 1}, "compares a number with a bool"),
        ({"locked": "true"}, "compares a str with a bool"),
        ({"locked": None}, "compares a none with a bool"),
        ({"locked": ["x"]}, "the attribute is a list, not a single value"),
    ],
)
def test_a_deny_rule_that_cannot_be_evaluated_denies_even_a_super_admin(
    attributes: dict[str, object], error: str
) -> None:
    resource = Resource(type="posts", id="p1", owner="u1", attributes=attributes)
    decision = _locked_policy().evaluate({"id": "s", "roles": ["super_admin"]}, resource, "write")
    assert (decision.allowed, decision.reason) == (False, AuthzReason.CONDITION_ERROR)
    assert decision.rule == "no-locked-writes"
    assert decision.condition == "resource.locked equals true"
    assert decision.error == error
    assert decision.explain() == (
        f"denied: rule no-locked-writes could not be evaluated (resource.locked equals true): "
        f"{error}"
    )


def test_an_allow_rule_that_cannot_be_evaluated_denies() -> None:
    policy = Policy(
        rules=(
            Rule(
                "adults",
                Effect.ALLOW,
                ("read",),
                resource="film",
                when=c("subject.age", "greater_or_equal", 18),
            ),
        )
    )
    for attributes, why in (
        ({}, "subject.age is missing"),
        ({"age": "30"}, "orders a str against a number"),
        ({"age": True}, "orders a bool against a number"),
        ({"age": float("nan")}, "the attribute is NaN"),
    ):
        decision = policy.evaluate(Subject(id="u", attributes=attributes), "film", "read")
        assert (decision.reason, decision.error) == (AuthzReason.CONDITION_ERROR, why)
    assert policy.evaluate(Subject(id="u", attributes={"age": 30}), "film", "read").allowed


def test_bool_is_not_int_in_a_deny_rule() -> None:
    policy = _locked_policy()
    moderator = {"id": "m", "roles": ["moderator"]}
    as_int = policy.evaluate(moderator, {"type": "posts", "locked": 1}, "write")
    assert as_int.reason is AuthzReason.CONDITION_ERROR
    as_bool = policy.evaluate(moderator, {"type": "posts", "locked": True}, "write")
    assert as_bool.reason is AuthzReason.DENIED_BY_RULE
    unlocked = policy.evaluate(moderator, {"type": "posts", "locked": False}, "write")
    assert unlocked.reason is AuthzReason.ALLOWED_BY_ROLE


# -- tenants ----------------------------------------------------------------------------------


def test_a_role_in_tenant_a_grants_nothing_in_tenant_b() -> None:
    s = Subject(id="u1", tenant_roles={"a": frozenset({"admin"})})
    in_a = POLICY.evaluate(s, Resource(type="users", id="x", tenant="a"), "delete")
    assert in_a.reason is AuthzReason.ALLOWED_BY_ROLE
    in_b = POLICY.evaluate(s, Resource(type="users", id="x", tenant="b"), "delete")
    assert (in_b.allowed, in_b.reason) == (False, AuthzReason.WRONG_TENANT)
    assert in_b.explain() == "denied: users:delete on users:x: u1 holds it only in another tenant"
    untenanted = POLICY.evaluate(s, Resource(type="users", id="x"), "delete")
    assert untenanted.reason is AuthzReason.NO_MATCH
    type_level = POLICY.evaluate(s, None, "users:delete")
    assert type_level.reason is AuthzReason.NO_MATCH


def test_a_tenant_named_like_a_role_is_no_role() -> None:
    s = Subject(id="u1", tenant_roles={"admin": frozenset({"guest"})})
    assert POLICY.evaluate(s, Resource(type="users", tenant="admin"), "delete").allowed is False


# -- deny overrides allow ---------------------------------------------------------------------


def test_a_per_user_deny_overrides_super_admin() -> None:
    s = Subject(id="s", roles=frozenset({"super_admin"}), denies=(Permission.parse("users:*"),))
    decision = POLICY.evaluate(s, None, "users:delete")
    assert (decision.allowed, decision.reason, decision.rule) == (
        False,
        AuthzReason.DENIED_BY_GRANT,
        "users:*",
    )
    assert POLICY.allows(s, None, "posts:delete")


def test_a_deny_of_one_action_refuses_a_wildcard_requirement() -> None:
    s = Subject(id="m", roles=frozenset({"moderator"}), denies=(Permission.parse("posts:read"),))
    decision = POLICY.evaluate(s, None, "posts:*")
    assert (decision.reason, decision.rule) == (AuthzReason.DENIED_BY_GRANT, "posts:read")
    assert POLICY.evaluate(s, None, "posts:write").reason is AuthzReason.ALLOWED_BY_ROLE
    scoped = Subject(
        id="m", roles=frozenset({"moderator"}), denies=(Permission.parse("posts:write:team"),)
    )
    assert POLICY.evaluate(scoped, None, "posts:write").reason is AuthzReason.DENIED_BY_GRANT
    assert POLICY.evaluate(scoped, None, "posts:write:own").reason is AuthzReason.ALLOWED_BY_ROLE
    policy = Policy(roles=ROLES, rules=(Rule("no-delete", Effect.DENY, ("posts:delete",)),))
    wide = policy.evaluate({"id": "m", "roles": ["moderator"]}, None, "posts:*")
    assert (wide.reason, wide.rule) == (AuthzReason.DENIED_BY_RULE, "no-delete")
    everything = policy.evaluate({"id": "s", "roles": ["super_admin"]}, None, "*")
    assert (everything.reason, everything.rule) == (AuthzReason.DENIED_BY_RULE, "no-delete")


def test_a_deny_rule_overrides_a_role_and_a_per_user_grant() -> None:
    policy = Policy(
        roles=ROLES,
        rules=(
            Rule("no-banned", Effect.DENY, ("*",), when=c("subject.banned", "equals", True)),
            Rule("all-read", Effect.ALLOW, ("posts:read",)),
        ),
    )
    s = Subject(
        id="u1",
        roles=frozenset({"super_admin"}),
        grants=(Permission.parse("posts:read"),),
        attributes={"banned": True},
    )
    decision = policy.evaluate(s, None, "posts:read")
    assert (decision.reason, decision.rule) == (AuthzReason.DENIED_BY_RULE, "no-banned")
    assert policy.evaluate({"id": "u2", "banned": False}, None, "posts:read").reason == (
        AuthzReason.ALLOWED_BY_RULE
    )


def test_a_deny_rule_for_a_role_reaches_every_role_inheriting_it_and_no_one_else() -> None:
    policy = Policy(
        roles=ROLES,
        rules=(Rule("guests-no-write", Effect.DENY, ("posts:*",), roles=("guest",)),),
    )
    # every role inherits guest here, so everyone below super_admin's own * is refused
    assert policy.evaluate({"id": "a", "roles": ["admin"]}, None, "posts:write").reason == (
        AuthzReason.DENIED_BY_RULE
    )
    assert policy.evaluate({"id": "x", "roles": []}, None, "posts:write").reason == (
        AuthzReason.NO_MATCH
    )


# -- ownership comes from the resource only ---------------------------------------------------


def test_owner_from_the_context_or_the_subject_does_not_count() -> None:
    user = Subject(id="u1", roles=frozenset({"user"}), attributes={"owner_id": "u1"})
    unowned = Resource(type="posts", id="p1")
    context = {"owner_id": "u1", "owner": "u1", "resource": {"owner_id": "u1"}}
    decision = POLICY.evaluate(user, unowned, "write", context)
    assert (decision.allowed, decision.reason) == (False, AuthzReason.NOT_OWNER)
    other = POLICY.evaluate(user, Resource(type="posts", id="p1", owner="u2"), "write", context)
    assert other.reason is AuthzReason.NOT_OWNER
    mine = POLICY.evaluate(user, Resource(type="posts", id="p1", owner="u1"), "write")
    assert mine.reason is AuthzReason.ALLOWED_AS_OWNER


def test_ownership_is_exact_text() -> None:
    user = {"id": "u1", "roles": ["user"]}
    for owner in ("U1", "u1 ", " u1", "u10", "u"):
        decision = POLICY.evaluate(user, {"type": "posts", "owner_id": owner}, "write")
        assert decision.reason is AuthzReason.NOT_OWNER, owner
    with pytest.raises(AuthzInputError, match="resource owner must be a non-empty text"):
        POLICY.evaluate(user, {"type": "posts", "owner_id": 1}, "write")
    with pytest.raises(AuthzInputError, match="resource owner must be a non-empty text"):
        POLICY.evaluate(user, {"type": "posts", "owner_id": ""}, "write")


def test_an_own_grant_never_covers_another_scope() -> None:
    user = {"id": "u1", "roles": ["user"]}
    decision = POLICY.evaluate(user, {"type": "posts", "owner_id": "u1"}, "posts:write:team")
    assert decision.reason is AuthzReason.NO_MATCH


def test_the_resource_type_and_the_action_must_agree() -> None:
    with pytest.raises(AuthzInputError, match="not an action of resource type posts"):
        POLICY.evaluate({"id": "u1", "roles": ["user"]}, {"type": "posts"}, "users:delete")
