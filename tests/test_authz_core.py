"""The authorization model: permissions, subjects, resources, the role graph, the policy's
decision order and its explanations (bastion.core.authz)."""

from __future__ import annotations

import gc
import itertools
import sys
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core.authz import (
    AnyOf,
    AuthzReason,
    Condition,
    Decision,
    Effect,
    Operator,
    Permission,
    Policy,
    Ref,
    Resource,
    Role,
    RoleGraph,
    Rule,
    Subject,
)
from bastion.core.authz.decision import make_decision
from bastion.errors import AuthzInputError, ConfigurationError

# -- permissions ------------------------------------------------------------------------------

RESOURCES = ["posts", "postsecret", "post", "users", "*"]
ACTIONS = ["read", "write", "readme", "*"]
SCOPES = [None, "own", "team", "*"]


def _text(resource: str, action: str, scope: str | None) -> str:
    return f"{resource}:{action}" if scope is None else f"{resource}:{action}:{scope}"


permissions = st.one_of(
    st.just("*"),
    st.builds(_text, st.sampled_from(RESOURCES), st.sampled_from(ACTIONS), st.sampled_from(SCOPES)),
)


def _meaning(text: str) -> set[tuple[str, str, str | None]]:
    """A naive reference: the set of concrete (resource, action, scope) triples a permission
    stands for, over a universe holding every literal used plus one more of each. A grant
    covers a requirement when it stands for everything the requirement stands for."""
    resources = [r for r in RESOURCES if r != "*"] + ["other"]
    actions = [a for a in ACTIONS if a != "*"] + ["other"]
    scopes: list[str | None] = [None, "own", "team", "other"]
    if text == "*":
        return set(itertools.product(resources, actions, scopes))
    parts = text.split(":")
    res, act = parts[0], parts[1]
    scope = parts[2] if len(parts) == 3 else None
    return {
        (r, a, s)
        for r in resources
        for a in actions
        for s in scopes
        if res in ("*", r)
        and act in ("*", a)
        # unscoped and "*" stand for every scope; a literal scope for itself
        and (len(parts) == 2 or scope == "*" or scope == s)
    }


@settings(max_examples=250, deadline=None)
@given(permissions, permissions)
def test_covers_agrees_with_the_naive_set_reference(grant: str, required: str) -> None:
    expected = _meaning(required) <= _meaning(grant)
    assert Permission.parse(grant).covers(Permission.parse(required)) is expected


@settings(max_examples=250, deadline=None)
@given(permissions, permissions)
def test_overlaps_agrees_with_the_naive_set_reference(deny: str, required: str) -> None:
    d, r = Permission.parse(deny), Permission.parse(required)
    if d.scope == "own" and r.scope is None:
        expected = False  # reached through ownership only (needs_owner), not by overlap
    else:
        expected = bool(_meaning(required) & _meaning(deny))
    assert d.overlaps(r) is expected
    if not any(part == "*" for part in (r.resource, r.action, r.scope)) and r.scope is not None:
        # with nothing to widen, a deny overlaps exactly what it would cover as a grant
        assert d.overlaps(r) is d.covers(r)


@settings(max_examples=150, deadline=None)
@given(
    st.from_regex(r"[a-z0-9][a-z0-9_.\-]{0,12}", fullmatch=True),
    st.from_regex(r"[a-z0-9][a-z0-9_.\-]{0,12}", fullmatch=True),
    st.from_regex(r"[a-z0-9][a-z0-9_.\-]{0,8}", fullmatch=True),
)
def test_a_resource_wildcard_never_crosses_into_another_resource(
    granted: str, asked: str, action: str
) -> None:
    grant = Permission.parse(f"{granted}:*")
    required = Permission.parse(f"{asked}:{action}")
    assert grant.covers(required) is (granted == asked)


def test_posts_star_never_covers_postsecret() -> None:
    assert not Permission.parse("posts:*").covers(Permission.parse("postsecret:read"))
    assert not Permission.parse("post:*").covers(Permission.parse("posts:read"))
    assert Permission.parse("posts:*").covers(Permission.parse("posts:read"))
    assert Permission.parse("posts:*").covers(Permission.parse("posts:read:own"))
    assert Permission.parse("*").covers(Permission.parse("postsecret:read:team"))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abcXY*:_-. 0é", max_size=20))
def test_parse_either_refuses_or_round_trips(text: str) -> None:
    try:
        permission = Permission.parse(text)
    except ConfigurationError as exc:
        refused: ConfigurationError | None = exc
    else:
        refused = None
    if refused is not None:
        assert refused.setting == "permission"
        return
    assert str(permission) in (text, "*")
    assert Permission.parse(str(permission)) == permission


@pytest.mark.parametrize(
    "text",
    [
        "Posts:read",
        "posts:Read",
        "posts: read",
        " posts:read",
        "posts:read ",
        "posts",
        "posts:",
        ":read",
        "posts::read",
        "posts:**",
        "post*:read",
        "*posts:read",
        "posts:read:own:extra",
        "posts:read:",
        "",
        "**",
        "posts/read",
        "posts:rea\u0000d",
        "posts:réad",
        "a:" + "b" * 300,
    ],
)
def test_odd_permission_texts_are_refused_naming_the_setting(text: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Permission.parse(text, setting="roles.user.permissions")
    assert caught.value.setting == "roles.user.permissions"
    assert "roles.user.permissions" in str(caught.value)


def test_a_non_text_permission_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="must be a permission text"):
        Permission.parse(3)


def test_scopes_are_exact_and_unscoped_covers_every_scope() -> None:
    write, own, team = (
        Permission.parse(t) for t in ("posts:write", "posts:write:own", "posts:write:team")
    )
    assert write.covers(own)
    assert write.covers(team)
    assert not own.covers(write)  # only through the policy's ownership check
    assert not own.covers(team)
    assert not team.covers(own)
    assert own.covers_as_owner(write)
    assert own.covers_as_owner(own)
    assert not own.covers_as_owner(team)
    assert not write.covers_as_owner(write)
    assert Permission.parse("posts:write:*").covers(write)
    assert str(Permission.parse("*")) == "*"
    assert str(Permission.parse("*:*:*")) == "*"
    assert write.unscoped == write
    assert own.unscoped == write


# -- subjects and resources -------------------------------------------------------------------


def test_subject_of_accepts_the_guide_dict() -> None:
    s = Subject.of({"id": "u1", "roles": ["user"], "permissions": ["posts:read"], "dept": "x"})
    assert s.id == "u1"
    assert s.roles == frozenset({"user"})
    assert s.grants == (Permission.parse("posts:read"),)
    assert s.attributes == {"dept": "x"}
    assert Subject.of(s) is s


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("u1", "a Subject or a mapping"),
        ({"roles": ["user"]}, "needs an 'id'"),
        ({"id": 1}, "subject id must be a non-empty text"),
        ({"id": ""}, "subject id must be a non-empty text"),
        ({"id": "u1", "roles": "admin"}, "collection of role names"),
        ({"id": "u1", "roles": ["Admin"]}, "not a role name"),
        ({"id": "u1", "permissions": ["POSTS:read"]}, "subject permissions"),
        ({"id": "u1", "version": True}, "version must be a whole number"),
        ({"id": "u1", "tenant_roles": {"t1": "admin"}}, "collection of role names"),
    ],
)
def test_a_malformed_subject_is_an_input_error(value: object, message: str) -> None:
    with pytest.raises(AuthzInputError, match=message):
        Subject.of(value)


def test_resource_of_keeps_owner_id_as_an_attribute() -> None:
    r = Resource.of({"type": "document", "id": 7, "owner_id": "u1", "public": True})
    assert (r.type, r.id, r.owner) == ("document", "7", "u1")
    assert r.attributes == {"owner_id": "u1", "public": True}
    assert r.label == "document:7"
    assert Resource.of(r) is r


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"id": "d1"}, "needs a 'type'"),
        ({"type": "Document"}, "resource type must match"),
        ({"type": "document", "owner_id": 5}, "resource owner must be a non-empty text"),
        ({"type": "document", "owner": "a", "owner_id": "b"}, "disagree"),
        ([("type", "document")], "a Resource or a mapping"),
    ],
)
def test_a_malformed_resource_is_an_input_error(value: object, message: str) -> None:
    with pytest.raises(AuthzInputError, match=message):
        Resource.of(value)


def test_a_resource_attribute_cannot_contradict_its_owner() -> None:
    with pytest.raises(AuthzInputError, match="'owner_id' disagrees"):
        Resource(type="document", owner="u1", attributes={"owner_id": "u2"})
    with pytest.raises(AuthzInputError, match="'owner_id' disagrees"):
        Resource(type="document", owner="5", attributes={"owner_id": 5})
    with pytest.raises(AuthzInputError, match="'tenant' disagrees"):
        Resource(type="document", attributes={"tenant": "b"})
    same = Resource(type="document", owner="u1", attributes={"owner_id": "u1", "tenant": None})
    assert same.attributes == {"owner_id": "u1", "tenant": None}


def test_roles_in_a_tenant() -> None:
    s = Subject(id="u1", roles=frozenset({"user"}), tenant_roles={"a": frozenset({"admin"})})
    assert s.roles_in(None) == {"user"}
    assert s.roles_in("a") == {"user", "admin"}
    assert s.roles_in("b") == {"user"}


# -- the role graph ---------------------------------------------------------------------------

GUIDE_ROLES = (
    Role("guest", ("posts:read",)),
    Role("user", ("posts:write:own", "comments:write"), ("guest",)),
    Role("moderator", ("posts:*", "comments:*"), ("user",)),
    Role("admin", ("users:*",), ("moderator",)),
    Role("super_admin", ("*",), ("admin",)),
)


def test_the_guide_hierarchy_flattens_with_paths() -> None:
    graph = RoleGraph(GUIDE_ROLES)
    assert set(graph.closure("super_admin")) == {
        "super_admin",
        "admin",
        "moderator",
        "user",
        "guest",
    }
    assert graph.via("admin", "guest") == ("admin", "moderator", "user", "guest")
    assert graph.via("admin", "admin") == ("admin",)
    assert graph.via("guest", "admin") == ()
    assert graph.origins(("posts", "*")) == {"moderator"}
    assert graph.own("user", ("posts", "write")) == (Permission.parse("posts:write:own"),)
    assert graph.holders("user") == {"user", "moderator", "admin", "super_admin"}
    (held,) = graph.held("admin", ("posts", "read"))
    assert (str(held.permission), held.role, held.via) == (
        "posts:read",
        "guest",
        ("admin", "moderator", "user", "guest"),
    )
    assert graph.permissions("user") == {"posts:read", "posts:write:own", "comments:write"}
    assert graph.closure("nobody") == frozenset()
    assert graph.held("nobody", ("posts", "read")) == ()


@pytest.mark.parametrize(
    ("roles", "message", "setting"),
    [
        (
            (Role("a", inherits=("b",)), Role("b", inherits=("a",))),
            "cycle: a -> b -> a",
            "roles.a.inherits",
        ),
        ((Role("a", inherits=("a",)),), "cycle: a -> a", "roles.a.inherits"),
        (
            (Role("a", inherits=("b",)), Role("b", inherits=("c",)), Role("c", inherits=("b",))),
            "cycle: b -> c -> b",
            "roles.b.inherits",
        ),
        (
            (Role("a", inherits=("ghost",)),),
            "role a inherits unknown role ghost",
            "roles.a.inherits",
        ),
        ((Role("a"), Role("a")), "role a is defined twice", "roles.a"),
    ],
)
def test_graph_errors_name_the_roles(roles: tuple[Role, ...], message: str, setting: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        RoleGraph(roles)
    assert caught.value.setting == setting


def test_a_chain_deeper_than_max_depth_names_the_chain_and_the_limit() -> None:
    chain = [Role(f"r{i}", inherits=(f"r{i + 1}",)) for i in range(5)] + [Role("r5")]
    RoleGraph(chain, max_depth=5)  # five levels: fine
    with pytest.raises(ConfigurationError) as caught:
        RoleGraph(chain, max_depth=4)
    assert str(caught.value) == (
        "role chain r0 -> r1 -> r2 -> r3 -> r4 -> r5 is 5 levels deep, deeper than max_depth=4"
    )
    assert caught.value.setting == "max_depth"


def test_a_long_chain_within_the_limit_is_checked_without_recursion() -> None:
    chain = [Role(f"r{i}", ("x:read",), inherits=(f"r{i + 1}",)) for i in range(299)] + [
        Role("r299")
    ]
    graph = RoleGraph(chain, max_depth=300)
    assert graph.via("r0", "r299") == tuple(f"r{i}" for i in range(300))
    assert graph.permissions("r0") == {"x:read"}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Role("Admin"), "role name must match"),
        (lambda: Role("a b"), "role name must match"),
        (lambda: Role("*"), "role name must match"),
        (lambda: Role("a", "posts:read"), "must be tuples"),  # type: ignore[arg-type]
        (lambda: Role("a", inherits=("b", "b")), "names a parent twice"),
        (lambda: Role("a", ("posts:READ",)), "roles.a.permissions"),
        (lambda: RoleGraph((), max_depth=0), "max_depth must be a whole number"),
    ],
)
def test_role_errors(make: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make()  # type: ignore[operator]


# -- the policy -------------------------------------------------------------------------------


def _document_policy() -> Policy:
    return Policy(
        roles=GUIDE_ROLES,
        rules=(
            Rule(
                "document_access",
                Effect.ALLOW,
                ("read",),
                resource="document",
                when=AnyOf(
                    (
                        Condition(Ref.parse("resource.public"), Operator("equals"), True),
                        Condition(
                            Ref.parse("resource.owner_id"), Operator("equals"), Ref_("subject.id")
                        ),
                    )
                ),
            ),
            Rule(
                "document_write",
                Effect.ALLOW,
                ("write",),
                resource="document",
                when=Condition(
                    Ref.parse("resource.owner_id"), Operator("equals"), Ref_("subject.id")
                ),
            ),
            Rule(
                "no-locked-writes",
                Effect.DENY,
                ("write",),
                resource="document",
                when=Condition(Ref.parse("resource.locked"), Operator("equals"), True),
            ),
        ),
    )


def Ref_(text: str) -> Ref:  # noqa: N802 (reads like the class it builds)
    return Ref.parse(text)


USER = {"id": "u1", "roles": ["user"]}
DOC_READ = "(resource.public equals true or resource.owner_id equals subject.id)"


@pytest.mark.parametrize(
    ("subject", "resource", "action", "reason", "explanation"),
    [
        (
            USER,
            None,
            "posts:read",
            "allowed_by_role",
            "allowed: posts:read granted to role guest (via user -> guest)",
        ),
        (
            {"id": "m", "roles": ["admin"]},
            None,
            "posts:delete",
            "allowed_by_role",
            "allowed: posts:* granted to role moderator (via admin -> moderator)",
        ),
        (
            {"id": "s", "roles": ["super_admin"]},
            None,
            "billing:refund",
            "allowed_by_role",
            "allowed: * granted to role super_admin",
        ),
        (
            USER,
            {"type": "posts", "id": "p1", "owner_id": "u1"},
            "write",
            "allowed_as_owner",
            "allowed: posts:write:own granted to role user, and u1 owns posts:p1",
        ),
        (
            USER,
            {"type": "posts", "id": "p2", "owner_id": "u2"},
            "write",
            "not_owner",
            "denied: posts:write:own needs ownership and u1 does not own posts:p2",
        ),
        (
            USER,
            {"type": "posts", "id": "p3"},
            "write",
            "not_owner",
            "denied: posts:write:own needs ownership and u1 does not own posts:p3",
        ),
        (
            USER,
            None,
            "posts:write",
            "not_owner",
            "denied: posts:write:own needs ownership and u1 does not own the resource",
        ),
        (
            USER,
            None,
            "posts:write:own",
            "allowed_by_role",
            "allowed: posts:write:own granted to role user",
        ),
        (USER, None, "users:delete", "no_match", "denied: nothing grants users:delete to u1"),
        (
            USER,
            {"type": "document", "id": "d1", "owner_id": "u2", "public": True},
            "read",
            "allowed_by_rule",
            "allowed: rule document_access: " + DOC_READ,
        ),
        (
            USER,
            {"type": "document", "id": "d1", "owner_id": "u2", "public": False},
            "read",
            "condition_failed",
            "denied: rule document_access did not hold: " + DOC_READ,
        ),
        (
            USER,
            {"type": "document", "id": "d1", "owner_id": "u1", "locked": False},
            "write",
            "allowed_by_rule",
            "allowed: rule document_write: resource.owner_id equals subject.id",
        ),
        (
            USER,
            {"type": "document", "id": "d1", "owner_id": "u1", "locked": True},
            "write",
            "denied_by_rule",
            "denied: rule no-locked-writes: resource.locked equals true",
        ),
        (
            USER,
            "posts",
            "read",
            "allowed_by_role",
            "allowed: posts:read granted to role guest (via user -> guest)",
        ),
    ],
)
def test_decisions_and_their_explanations(
    subject: object, resource: object, action: str, reason: str, explanation: str
) -> None:
    decision = _document_policy().evaluate(subject, resource, action)
    assert decision.reason == reason
    assert decision.explain() == explanation
    assert bool(decision) is decision.allowed is reason.startswith("allowed")


def test_a_decision_names_the_role_and_via_chain() -> None:
    d = _document_policy().evaluate({"id": "a", "roles": ["admin"]}, None, "posts:delete")
    assert (d.rule, d.role, d.via) == ("posts:*", "moderator", ("admin", "moderator"))
    assert d.resource is None
    assert d.subject == "a"
    assert d.action == "posts:delete"
    # an exact (resource, action) entry is looked up before the wildcard ones
    d = _document_policy().evaluate({"id": "a", "roles": ["admin"]}, None, "posts:read")
    assert (d.rule, d.role, d.via) == (
        "posts:read",
        "guest",
        ("admin", "moderator", "user", "guest"),
    )


def test_per_user_grants_and_denies() -> None:
    policy = _document_policy()
    granted = Subject(id="u1", grants=(Permission.parse("reports:read"),))
    d = policy.evaluate(granted, None, "reports:read")
    assert (d.reason, d.explain()) == (
        "allowed_by_grant",
        "allowed: reports:read granted to u1 directly",
    )
    denied = Subject(
        id="m", roles=frozenset({"moderator"}), denies=(Permission.parse("posts:delete"),)
    )
    d = policy.evaluate(denied, None, "posts:delete")
    assert (d.reason, d.explain()) == (
        "denied_by_grant",
        "denied: posts:delete denied to m directly",
    )
    assert policy.allows(denied, None, "posts:write")
    own = Subject(id="u9", grants=(Permission.parse("notes:edit:own"),))
    mine = policy.evaluate(own, {"type": "notes", "id": "n1", "owner_id": "u9"}, "edit")
    assert mine.reason == "allowed_as_owner"
    assert mine.explain() == "allowed: notes:edit:own granted to u9 directly, and u9 owns notes:n1"
    assert policy.evaluate(own, {"type": "notes", "owner_id": "u8"}, "edit").reason == "not_owner"


def test_an_own_deny_applies_only_to_the_subjects_own_resources() -> None:
    policy = Policy(roles=(Role("editor", ("posts:*",)),))
    s = Subject(
        id="u1", roles=frozenset({"editor"}), denies=(Permission.parse("posts:delete:own"),)
    )
    assert (
        policy.evaluate(s, {"type": "posts", "owner_id": "u1"}, "delete").reason
        == "denied_by_grant"
    )
    assert (
        policy.evaluate(s, {"type": "posts", "owner_id": "u2"}, "delete").reason
        == "allowed_by_role"
    )


def test_rules_limited_to_roles_count_inherited_roles() -> None:
    policy = Policy(
        roles=GUIDE_ROLES,
        rules=(Rule("mods-read-reports", Effect.ALLOW, ("reports:read",), roles=("moderator",)),),
    )
    assert (
        policy.evaluate({"id": "a", "roles": ["admin"]}, None, "reports:read").reason
        == "allowed_by_rule"
    )
    assert policy.evaluate(USER, None, "reports:read").reason == "no_match"


def test_has_role_and_permissions_of() -> None:
    policy = _document_policy()
    admin = {"id": "a", "roles": ["admin"]}
    assert policy.has_role(admin, "user")
    assert policy.has_role(admin, "admin")
    assert not policy.has_role(admin, "super_admin")
    assert not policy.has_role({"id": "admin"}, "admin")
    assert policy.permissions_of(USER) == {"posts:read", "posts:write:own", "comments:write"}
    tenant = Subject(id="t", tenant_roles={"acme": frozenset({"admin"})})
    assert policy.has_role(tenant, "user", tenant="acme")
    assert not policy.has_role(tenant, "user")
    assert "users:*" in policy.permissions_of(tenant, tenant="acme")
    assert policy.permissions_of(tenant) == frozenset()


def test_evaluate_refuses_malformed_input() -> None:
    policy = _document_policy()
    with pytest.raises(AuthzInputError, match="action"):
        policy.evaluate(USER, None, "Posts:read")
    with pytest.raises(AuthzInputError, match="not an action of resource type document"):
        policy.evaluate(USER, {"type": "document"}, "posts:read")
    with pytest.raises(AuthzInputError, match="context must be a mapping"):
        policy.evaluate(USER, None, "posts:read", ["x"])  # type: ignore[arg-type]
    with pytest.raises(AuthzInputError, match="not a type name"):
        policy.evaluate(USER, "Doc ument", "read")
    with pytest.raises(AuthzInputError, match="an action must be a text"):
        policy.evaluate(USER, None, 5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Rule("r", "permit", ("posts:read",)), "effect must be allow or deny"),  # type: ignore[arg-type]
        (lambda: Rule("r", Effect.ALLOW, ()), "actions must be a non-empty tuple"),
        (lambda: Rule("r", Effect.ALLOW, "posts:read"), "actions must be a non-empty tuple"),  # type: ignore[arg-type]
        (
            lambda: Rule("r", Effect.ALLOW, ("read",)),
            "the bare action 'read' needs a resource type",
        ),
        (
            lambda: Rule("r", Effect.ALLOW, ("posts:read",), resource="document"),
            "not an action of resource document",
        ),
        (lambda: Rule("bad name", Effect.ALLOW, ("posts:read",)), "rule name must match"),
        (lambda: Rule("r", Effect.ALLOW, ("posts:read",), when="x"), "when must be a condition"),  # type: ignore[arg-type]
        (lambda: Rule("r", Effect.ALLOW, ("posts:read",), roles="admin"), "roles must be a tuple"),  # type: ignore[arg-type]
        (
            lambda: Policy(
                rules=(Rule("r", Effect.ALLOW, ("a:b",)), Rule("r", Effect.DENY, ("a:b",)))
            ),
            "rule r is defined twice",
        ),
        (
            lambda: Policy(rules=(Rule("r", Effect.ALLOW, ("a:b",), roles=("ghost",)),)),
            "unknown role ghost",
        ),
        (lambda: Policy(name="no spaces allowed"), "policy name must match"),
    ],
)
def test_rule_and_policy_errors(make: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make()  # type: ignore[operator]


def test_rule_actions_resolve_against_the_resource() -> None:
    rule = Rule("r", Effect.ALLOW, ("read", "*", "document:write:own"), resource="document")
    assert [str(p) for p in rule.permissions] == [
        "document:read",
        "document:*",
        "document:write:own",
    ]
    assert [str(p) for p in Rule("any", Effect.ALLOW, ("*",)).permissions] == ["*"]


def test_what_a_filter_builder_can_read() -> None:
    policy = _document_policy()
    required = policy.required("read", "document")
    assert str(required) == "document:read"
    denies, allows = policy.rules_for(required)
    assert denies == ()
    assert [r.rule.name for r in allows] == ["document_access"]
    assert allows[0].condition is not None
    assert allows[0].condition.source == policy.rules[0].when
    assert allows[0].applies_to(frozenset())
    (match,) = policy.grants_for(USER, policy.required("posts:write"))
    assert (str(match.permission), match.role, match.needs_owner) == (
        "posts:write:own",
        "user",
        True,
    )
    denied = Subject(id="x", denies=(Permission.parse("document:*"),))
    assert [str(m.permission) for m in policy.denies_for(denied, required)] == ["document:*"]
    write_denies, _ = policy.rules_for(policy.required("document:write"))
    assert [r.rule.name for r in write_denies] == ["no-locked-writes"]


def test_decision_is_truthy_only_when_allowed() -> None:
    d = Decision(allowed=False, reason=AuthzReason.NO_ROUTE_RULE, action="GET /x", subject="u1")
    assert not d
    assert d.explain() == "denied: no route rule covers GET /x"
    u = Decision(allowed=False, reason=AuthzReason.UNAUTHENTICATED, action="posts:read", subject="")
    assert u.explain() == "denied: posts:read needs a signed-in user"


def test_the_fast_decision_is_the_same_decision() -> None:
    fields = {
        "allowed": True,
        "reason": AuthzReason.ALLOWED_BY_ROLE,
        "action": "posts:read",
        "subject": "u1",
        "resource": "posts:1",
        "rule": "posts:*",
        "role": "moderator",
        "via": ("admin", "moderator"),
        "condition": None,
        "error": None,
    }
    fast = make_decision(**fields)  # type: ignore[arg-type]
    assert fast == Decision(**fields)  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        fast.allowed = False  # type: ignore[misc]


def test_a_diamond_explains_with_the_shortest_path_and_grants_once() -> None:
    roles = (
        Role("base", ("docs:read",)),
        Role("left", inherits=("base",)),
        Role("right", inherits=("mid",)),
        Role("mid", inherits=("base",)),
        Role("top", inherits=("right", "left")),
    )
    policy = Policy(roles=roles)
    d = policy.evaluate({"id": "u", "roles": ["top"]}, None, "docs:read")
    assert (d.role, d.via) == ("base", ("top", "left", "base"))
    assert policy.permissions_of({"id": "u", "roles": ["top"]}) == {"docs:read"}


def test_filter_hands_over_to_the_filters_module(monkeypatch: pytest.MonkeyPatch) -> None:
    # A local stand-in for helper authz-filters' module: Policy.filter is a thin call.
    calls: list[tuple[object, ...]] = []
    stand_in = types.ModuleType("bastion.core.authz.filters")

    def filter_for(*args: object) -> str:
        calls.append(args)
        return "the filter"

    stand_in.filter_for = filter_for  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bastion.core.authz.filters", stand_in)
    policy = _document_policy()
    result: object = policy.filter(USER, "read", "document", {"k": 1})
    assert result == "the filter"
    assert calls == [(policy, USER, "read", "document", {"k": 1})]


def test_the_collector_is_running_again_after_a_build_even_a_failed_one() -> None:
    assert gc.isenabled()
    _document_policy()
    assert gc.isenabled()
    with pytest.raises(ConfigurationError, match="unknown role ghost"):
        Policy(rules=(Rule("r", Effect.ALLOW, ("a:b",), roles=("ghost",)),))
    assert gc.isenabled()
    gc.disable()
    try:
        _document_policy()
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()


LITERAL_RESOURCES = [r for r in RESOURCES if r != "*"]
LITERAL_ACTIONS = [a for a in ACTIONS if a != "*"]


@st.composite
def rbac_cases(draw: st.DrawFn) -> tuple[Policy, Subject, Resource | None, str, bool]:
    """A random role DAG, subject and check, with the answer of a naive reference: a plain
    walk for the roles, the set reading of permissions for covering, ownership by hand."""
    names = [f"r{i}" for i in range(4)]
    parents = {n: [m for m in names[i + 1 :] if draw(st.booleans())] for i, n in enumerate(names)}
    perms = {n: draw(st.lists(permissions, max_size=2, unique=True)) for n in names}
    roles = tuple(Role(n, tuple(perms[n]), tuple(parents[n])) for n in names)
    held = draw(st.sets(st.sampled_from(names), max_size=2))
    grants = draw(st.lists(permissions, max_size=2, unique=True))
    denies = draw(st.lists(permissions, max_size=1, unique=True))
    subject = Subject(
        id="u1",
        roles=frozenset(held),
        grants=tuple(map(Permission.parse, grants)),
        denies=tuple(map(Permission.parse, denies)),
    )
    resource_type = draw(st.sampled_from(LITERAL_RESOURCES))
    scope = draw(st.sampled_from([None, "own", "team"]))
    required = _text(resource_type, draw(st.sampled_from(LITERAL_ACTIONS)), scope)
    resource = draw(
        st.one_of(
            st.none(),
            st.builds(
                lambda owner: Resource(type=resource_type, owner=owner),
                st.sampled_from([None, "u1", "u2"]),
            ),
        )
    )
    owns = resource.owner == "u1" if resource is not None else scope == "own"

    def reach(text: str, *, deny: bool) -> bool:
        if (
            text != "*"
            and text.count(":") == 2
            and text.endswith(":own")
            and scope in (None, "own")
        ):
            meaning = _meaning(text[: -len(":own")])  # resource and action as an unscoped one
            if all((r, a, "own") in meaning for r, a, _ in _meaning(required)):
                return owns
            return False
        if deny:
            return bool(_meaning(text) & _meaning(required))
        return _meaning(required) <= _meaning(text)

    effective, todo = set(), list(held)
    while todo:
        name = todo.pop()
        if name not in effective:
            effective.add(name)
            todo.extend(parents[name])
    granted = grants + [p for n in effective for p in perms[n]]
    expected = not any(reach(d, deny=True) for d in denies) and any(
        reach(g, deny=False) for g in granted
    )
    return Policy(roles=roles), subject, resource, required, expected


@settings(max_examples=200, deadline=None)
@given(rbac_cases())
def test_rbac_decisions_agree_with_a_naive_reference(
    case: tuple[Policy, Subject, Resource | None, str, bool],
) -> None:
    policy, subject, resource, required, expected = case
    decision = policy.evaluate(subject, resource, required)
    assert decision.allowed is expected, decision.explain()


def test_a_policy_repr_does_not_print_every_rule() -> None:
    assert repr(_document_policy()) == "Policy(max_depth=16, name='policy')"
