"""The ``authz`` group's workloads, built once as neutral data, then for pycasbin and bastion.

RBAC (issue 15, "Speed": 1,000 permission rules, 10,000 role edges):

* 250 roles in 5 levels of 50 (``role-<level>-<i>``); a role above level 0 inherits the two
  roles ``i`` and ``i + 1`` (mod 50) of the level below: 400 role-to-role edges and chains of
  depth 4 (pycasbin's role manager silently stops at 10 links, so the chains stay well under);
* 1,000 permissions (``res<j>:<action>``, 100 resources by 10 actions), each held by one role
  (role ``k mod 250``): 4 rules per role, up to 60 per role once inherited;
* 4,800 users with two roles each: 9,600 user-to-role edges, 10,000 edges in all.

pycasbin holds every edge in its ``g`` table and the rules in ``p``, with exact matching (no
``keyMatch``) and the cheap comparisons first in the matcher, so that its short-circuit skips
``g`` for every rule of another resource. bastion holds the role-to-role edges in its
``RoleGraph`` and a user's roles in the :class:`Subject`, as bastion's store (or the app) loads
them per request; the ``subject built per decision`` row adds that look-up and the
``Subject`` construction to every decision.

ABAC (10,000 rules): 1,000 resource types (``kind<t>``) by the same 10 actions; rule ``k``
allows ``kind<k // 10>:<action k mod 10>`` when ``subject.dept equals resource.dept`` and
``subject.level >= 1 + k mod 5``. pycasbin gets it twice: as its documented form for many
rules, ``eval(p.sub_rule)`` with the condition text in each policy line (the form behind the
issue's "about 500 ms"), and as one compiled matcher with the level in a policy column
(``r.sub.level >= p.level``), its fastest form for rules of one shape.

Every sample request carries the expected answer, computed here from the neutral data by a
plain set union that shares no code with either engine; :func:`prove` runs both engines on
every request and refuses a disagreement, so a side that allows or denies everything cannot
report a figure.
"""

from __future__ import annotations

import importlib.util
import itertools
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "ACTIONS",
    "AbacRequest",
    "AbacWorkload",
    "Attributes",
    "RbacRequest",
    "RbacWorkload",
    "Side",
    "abac_workload",
    "bastion_abac",
    "bastion_rbac",
    "casbin_abac_eval",
    "casbin_abac_matcher",
    "casbin_rbac",
    "cycling",
    "have_policy",
    "prove",
    "random_abac_requests",
    "rbac_workload",
]

ACTIONS: Final = (
    "read",
    "write",
    "delete",
    "list",
    "create",
    "update",
    "share",
    "export",
    "archive",
    "audit",
)
LEVELS: Final = 5
ROLES_PER_LEVEL: Final = 50
RESOURCES: Final = 100
USERS: Final = 4_800
ROLES_PER_USER: Final = 2
ABAC_TYPES: Final = 1_000
DEPTS: Final = ("sales", "ops", "legal", "eng")
SEED: Final = 15


def have_policy() -> bool:
    """Whether helper ``authz-core``'s ``bastion.core.authz.policy`` is importable (without
    it: the pycasbin rows only)."""
    try:
        return importlib.util.find_spec("bastion.core.authz.policy") is not None
    except ModuleNotFoundError:
        return False


@dataclass(frozen=True, slots=True)
class RbacRequest:
    user: str
    resource: str
    action: str
    expected: bool

    @property
    def permission(self) -> str:
        return f"{self.resource}:{self.action}"


@dataclass(frozen=True, slots=True)
class RbacWorkload:
    role_permissions: dict[str, tuple[str, ...]]
    """Role name -> the permission texts it holds itself (``res3:write``)."""
    role_parents: dict[str, tuple[str, ...]]
    user_roles: dict[str, tuple[str, ...]]
    requests: tuple[RbacRequest, ...]

    @property
    def rule_count(self) -> int:
        return sum(len(p) for p in self.role_permissions.values())

    @property
    def edge_count(self) -> int:
        parents = sum(len(p) for p in self.role_parents.values())
        return parents + sum(len(r) for r in self.user_roles.values())


def _role(level: int, i: int) -> str:
    return f"role-{level}-{i % ROLES_PER_LEVEL}"


def _effective(workload_parents: dict[str, tuple[str, ...]], role: str) -> set[str]:
    """``role`` and every role it inherits, by a plain walk (the reference, not an engine)."""
    seen, todo = set(), [role]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(workload_parents[name])
    return seen


def rbac_workload(*, samples: int = 20, seed: int = SEED) -> RbacWorkload:
    """The RBAC policy and ``samples`` requests, half allowed and half denied."""
    rng = random.Random(seed)
    roles = [_role(level, i) for level in range(LEVELS) for i in range(ROLES_PER_LEVEL)]
    parents = {
        _role(level, i): (() if level == 0 else (_role(level - 1, i), _role(level - 1, i + 1)))
        for level in range(LEVELS)
        for i in range(ROLES_PER_LEVEL)
    }
    held: dict[str, list[str]] = {role: [] for role in roles}
    for k in range(RESOURCES * len(ACTIONS)):
        held[roles[k % len(roles)]].append(f"res{k // len(ACTIONS)}:{ACTIONS[k % len(ACTIONS)]}")
    users = {f"user-{n}": tuple(rng.sample(roles, ROLES_PER_USER)) for n in range(USERS)}
    everything = [p for perms in held.values() for p in perms]
    requests: list[RbacRequest] = []
    while len(requests) < samples:
        user = rng.choice(sorted(users))
        granted = {p for r in users[user] for a in _effective(parents, r) for p in held[a]}
        want = len(requests) % 2 == 0
        pool = sorted(granted) if want else sorted(set(everything) - granted)
        resource, action = rng.choice(pool).split(":")
        requests.append(RbacRequest(user, resource, action, want))
    return RbacWorkload(
        {role: tuple(perms) for role, perms in held.items()}, parents, users, tuple(requests)
    )


@dataclass(frozen=True, slots=True)
class Attributes:
    """A request value for pycasbin's ``r.sub.<name>`` / ``r.obj.<name>`` attribute access."""

    type: str
    dept: str
    level: int = 0


@dataclass(frozen=True, slots=True)
class AbacRequest:
    user: str
    dept: str
    level: int
    resource_type: str
    resource_dept: str
    action: str
    expected: bool

    @property
    def permission(self) -> str:
        return f"{self.resource_type}:{self.action}"


@dataclass(frozen=True, slots=True)
class AbacWorkload:
    rules: tuple[tuple[str, str, int], ...]
    """``(resource type, action, least level)``: allowed when the depts match too."""
    requests: tuple[AbacRequest, ...]


def abac_workload(*, types: int = ABAC_TYPES, seed: int = SEED) -> AbacWorkload:
    """``types`` x 10 rules and four requests: allows at about a quarter and three quarters
    of the rule list (pycasbin stops at its first allow), a deny by department and a deny by
    level (both of which pycasbin scans to the end for)."""
    rules = tuple(
        (f"kind{k // len(ACTIONS)}", ACTIONS[k % len(ACTIONS)], 1 + k % 5)
        for k in range(types * len(ACTIONS))
    )
    rng = random.Random(seed)
    last_leveled = max(k for k, rule in enumerate(rules) if rule[2] >= 2)
    picks = (len(rules) // 4, 3 * len(rules) // 4, len(rules) // 2, last_leveled)
    requests = []
    for n, index in enumerate(picks):
        kind, action, least = rules[index]
        dept = rng.choice(DEPTS)
        other = DEPTS[(DEPTS.index(dept) + 1) % len(DEPTS)]
        if n < 2:  # allowed: the same dept, a level above the least
            request = AbacRequest(f"u{n}", dept, least + 1, kind, dept, action, expected=True)
        elif n == 2:  # denied by dept, whatever the level
            request = AbacRequest(f"u{n}", dept, 5, kind, other, action, expected=False)
        else:  # denied by level, the same dept
            request = AbacRequest(f"u{n}", dept, least - 1, kind, dept, action, expected=False)
        requests.append(request)
    return AbacWorkload(rules, tuple(requests))


def random_abac_requests(
    workload: AbacWorkload, count: int, *, seed: int = SEED
) -> list[AbacRequest]:
    """``count`` requests over random rules, departments and levels (0-5), each with the
    answer the rule gives: for checking that the engines agree beyond the timed sample."""
    rng = random.Random(seed)
    requests = []
    for n in range(count):
        kind, action, least = rng.choice(workload.rules)
        dept, resource_dept = rng.choice(DEPTS), rng.choice(DEPTS)
        level = rng.randint(0, 5)
        expected = dept == resource_dept and level >= least
        requests.append(AbacRequest(f"r{n}", dept, level, kind, resource_dept, action, expected))
    return requests


# -- pycasbin -------------------------------------------------------------------------------

_RBAC_MODEL: Final = """
[request_definition]
r = sub, obj, act

[policy_definition]
p = sub, obj, act

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = r.obj == p.obj && r.act == p.act && g(r.sub, p.sub)
"""

_ABAC_EVAL_MODEL: Final = """
[request_definition]
r = sub, obj, act

[policy_definition]
p = sub_rule, obj, act

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = r.obj.type == p.obj && r.act == p.act && eval(p.sub_rule)
"""

_ABAC_MATCHER_MODEL: Final = """
[request_definition]
r = sub, obj, act

[policy_definition]
p = obj, act, level

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = r.obj.type == p.obj && r.act == p.act && r.sub.dept == r.obj.dept && r.sub.level >= p.level
"""


def _enforcer(model_text: str) -> Any:
    import casbin  # noqa: PLC0415
    from casbin.model import Model  # noqa: PLC0415

    model = Model()
    model.load_model_from_text(model_text)
    return casbin.Enforcer(model)


@dataclass(frozen=True, slots=True)
class Side:
    """One engine on one workload: ``call(*prepare(request))`` is one decision.

    ``prepare`` builds, once per sample request and outside the timed loop, the arguments the
    engine takes (names, attribute objects, a ``Subject``); ``answer`` reads allowed/denied from
    what ``call`` returned; ``engine`` is the enforcer or the ``Policy``.
    """

    engine: Any
    call: Callable[..., object]
    prepare: Callable[[Any], tuple[object, ...]]
    answer: Callable[[object], bool]

    def decide(self, request: Any) -> bool:
        return self.answer(self.call(*self.prepare(request)))


def _truth(result: object) -> bool:
    return result is True


def _allowed(decision: object) -> bool:
    return getattr(decision, "allowed", None) is True


def casbin_rbac(workload: RbacWorkload) -> Side:
    """pycasbin on the RBAC workload: one ``enforce(user, resource, action)``."""
    enforcer = _enforcer(_RBAC_MODEL)
    enforcer.add_policies(
        [
            [role, *permission.split(":")]
            for role, permissions in workload.role_permissions.items()
            for permission in permissions
        ]
    )
    edges = [[child, parent] for child, ps in workload.role_parents.items() for parent in ps]
    edges += [[user, role] for user, roles in workload.user_roles.items() for role in roles]
    enforcer.add_grouping_policies(edges)

    def prepare(request: RbacRequest) -> tuple[object, ...]:
        return request.user, request.resource, request.action

    return Side(enforcer, enforcer.enforce, prepare, _truth)


def _casbin_abac_args(request: AbacRequest) -> tuple[object, ...]:
    subject = Attributes(type="user", dept=request.dept, level=request.level)
    return (
        subject,
        Attributes(type=request.resource_type, dept=request.resource_dept),
        request.action,
    )


def casbin_abac_eval(workload: AbacWorkload) -> Side:
    """pycasbin's documented form for many ABAC rules: ``eval(p.sub_rule)``."""
    enforcer = _enforcer(_ABAC_EVAL_MODEL)
    enforcer.add_policies(
        [
            [f"r.sub.dept == r.obj.dept && r.sub.level >= {least}", kind, action]
            for kind, action, least in workload.rules
        ]
    )
    return Side(enforcer, enforcer.enforce, _casbin_abac_args, _truth)


def casbin_abac_matcher(workload: AbacWorkload) -> Side:
    """pycasbin with one compiled matcher and the level as an integer policy column."""
    enforcer = _enforcer(_ABAC_MATCHER_MODEL)
    enforcer.add_policies([[kind, action, least] for kind, action, least in workload.rules])
    return Side(enforcer, enforcer.enforce, _casbin_abac_args, _truth)


# -- bastion --------------------------------------------------------------------------------


def bastion_rbac(workload: RbacWorkload, *, build_subject: bool = False) -> Side:
    """bastion's ``Policy`` on the RBAC workload: one ``evaluate(subject, None, permission)``.

    The subject is built once per request (as a request gets it from the store);
    ``build_subject`` builds it from the user's role set inside every decision instead.
    """
    from bastion.core.authz.policy import Policy  # noqa: PLC0415
    from bastion.core.authz.roles import Role  # noqa: PLC0415
    from bastion.core.authz.subjects import Subject  # noqa: PLC0415

    policy = Policy(
        roles=tuple(
            Role(name=name, permissions=perms, inherits=workload.role_parents[name])
            for name, perms in workload.role_permissions.items()
        ),
        name="bench-rbac",
    )
    evaluate = policy.evaluate
    roles = {user: frozenset(r) for user, r in workload.user_roles.items()}
    if build_subject:

        def building(user: str, permission: str) -> object:
            return evaluate(Subject(id=user, roles=roles[user]), None, permission)

        def by_name(request: RbacRequest) -> tuple[object, ...]:
            return request.user, request.permission

        return Side(policy, building, by_name, _allowed)

    def prepare(request: RbacRequest) -> tuple[object, ...]:
        return Subject(id=request.user, roles=roles[request.user]), None, request.permission

    return Side(policy, evaluate, prepare, _allowed)


def bastion_abac(workload: AbacWorkload) -> Side:
    """bastion's ``Policy`` of ABAC ``Rule``\\ s with conditions on the ABAC workload."""
    from bastion.core.authz.conditions import AllOf, Condition, Operator, Ref  # noqa: PLC0415
    from bastion.core.authz.policy import Effect, Policy, Rule  # noqa: PLC0415
    from bastion.core.authz.subjects import Resource, Subject  # noqa: PLC0415

    same_dept = Condition(
        attribute=Ref.parse("subject.dept"),
        operator=Operator.EQUALS,
        value=Ref.parse("resource.dept"),
    )
    level = Ref.parse("subject.level")
    policy = Policy(
        rules=tuple(
            Rule(
                name=f"rule-{k}",
                effect=Effect.ALLOW,
                actions=(f"{kind}:{action}",),
                resource=kind,
                when=AllOf(
                    items=(
                        same_dept,
                        Condition(attribute=level, operator=Operator.GREATER_OR_EQUAL, value=least),
                    )
                ),
            )
            for k, (kind, action, least) in enumerate(workload.rules)
        ),
        name="bench-abac",
    )

    def prepare(request: AbacRequest) -> tuple[object, ...]:
        subject = Subject(
            id=request.user, attributes={"dept": request.dept, "level": request.level}
        )
        resource = Resource(
            type=request.resource_type, id="1", attributes={"dept": request.resource_dept}
        )
        return subject, resource, request.permission

    return Side(policy, policy.evaluate, prepare, _allowed)


def cycling(side: Side, requests: Sequence[Any]) -> Callable[[], object]:
    """The timed operation: one decision per call, through ``requests`` in turn, each's
    arguments built once here (the same overhead, a ``next`` and a call, on every side)."""
    calls = itertools.cycle([(side.call, side.prepare(r)) for r in requests])

    def op() -> object:
        call, args = next(calls)
        return call(*args)

    return op


def prove(name: str, side: Side, requests: Sequence[Any]) -> None:
    """Refuse ``side`` unless it gives every request its expected answer (both kinds
    present: a side that allows, or denies, everything fails here)."""
    if {r.expected for r in requests} != {True, False}:
        raise RuntimeError(f"authz case {name!r}: the sample needs allow and deny cases")
    for request in requests:
        answer = side.decide(request)
        if answer is not request.expected:
            raise RuntimeError(
                f"authz case {name!r} answered {answer} for {request}, expected {request.expected}"
            )
