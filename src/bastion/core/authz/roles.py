"""Roles and their inheritance, checked and flattened once at start-up.

``Role("admin", inherits=("moderator",))`` means an admin holds everything a moderator holds.
:class:`RoleGraph` refuses, when it is built, an unknown parent, a duplicate role, a cycle and
a chain deeper than ``max_depth``, each as a :class:`~bastion.errors.ConfigurationError` that
names the roles involved: pycasbin silently denies past ten levels, which reads as a working
policy until somebody is locked out.

Each role's closure (the roles it holds) and each permission's origins (the roles given it)
are computed once, as sets; a decision intersects them, so it costs a few set operations
whatever the size of the graph, and can still say "via admin -> moderator".
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from bastion.core import _check
from bastion.core.authz.permission import WILDCARD, Permission, is_segment
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

__all__ = ["MAX_DEPTH_LIMIT", "Held", "Role", "RoleGraph"]

MAX_DEPTH_LIMIT: Final = 1000
"""The largest ``max_depth`` accepted."""
_VIA_CACHE: Final = 65_536
"""Inheritance paths kept once computed (each is a short tuple of role names)."""

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Role:
    """A named role: its own permissions and the roles it inherits from."""

    name: str
    permissions: tuple[str | Permission, ...] = ()
    inherits: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not is_segment(self.name):
            raise ConfigurationError(
                f"role name must match [a-z0-9][a-z0-9_.-]*, got {self.name!r:.80}",
                setting="roles",
            )
        if isinstance(self.permissions, str) or isinstance(self.inherits, str):
            raise ConfigurationError(
                f"role {self.name}: permissions and inherits must be tuples, not one text",
                setting=f"roles.{self.name}",
            )
        parsed = tuple(
            p
            if isinstance(p, Permission)
            else Permission.parse(p, setting=f"roles.{self.name}.permissions")
            for p in self.permissions
        )
        object.__setattr__(self, "permissions", parsed)
        inherits = tuple(self.inherits)
        for parent in inherits:
            if not is_segment(parent):
                raise ConfigurationError(
                    f"role {self.name} inherits {parent!r:.80}, not a role name",
                    setting=f"roles.{self.name}.inherits",
                )
        if len(set(inherits)) != len(inherits):
            raise ConfigurationError(
                f"role {self.name} names a parent twice in inherits",
                setting=f"roles.{self.name}.inherits",
            )
        object.__setattr__(self, "inherits", inherits)

    @property
    def parsed(self) -> tuple[Permission, ...]:
        """The permissions, parsed (``__post_init__`` parsed every text)."""
        return tuple(p for p in self.permissions if isinstance(p, Permission))


@dataclass(frozen=True, slots=True)
class Held:
    """One permission a role holds: the permission, the role that was given it, and the
    inheritance chain from the role asked about down to that role (``("admin",
    "moderator")``; ``("moderator",)`` when held directly)."""

    permission: Permission
    role: str
    via: tuple[str, ...]


def _scope_rank(permission: Permission) -> int:
    return 0 if permission.scope is None or permission.scope == WILDCARD else 1


class RoleGraph:
    """The validated role hierarchy, indexed for decisions.

    Read-only after construction (apart from a bounded cache of inheritance paths).
    ``roles`` maps a name to its :class:`Role`. :meth:`closure` is the set of roles one role
    holds (itself included); :meth:`holders` the roles that hold one (itself and every role
    inheriting it); :meth:`origins` the roles whose OWN permissions sit under a ``(resource,
    action)`` key (a segment may be ``*``) and :meth:`own` those permissions; :meth:`via`
    the shortest inheritance path between two roles. A decision intersects the closure of
    each role the subject holds with the origins of at most four keys: two set operations in
    C, whatever the size of the graph, and no per-role copy of every inherited permission.
    :meth:`held` and :meth:`permissions` give the flattened view for explanations, query
    filters and ``permissions_of``.
    """

    __slots__ = ("_closure", "_holders", "_origins", "_own", "_rank", "_via", "max_depth", "roles")

    def __init__(self, roles: Iterable[Role] = (), *, max_depth: int = 16) -> None:
        self.max_depth = _check.whole_number("max_depth", max_depth, low=1, high=MAX_DEPTH_LIMIT)
        by_name: dict[str, Role] = {}
        for role in roles:
            if not isinstance(role, Role):
                raise ConfigurationError(
                    f"roles must be Role objects, got {type(role).__name__}", setting="roles"
                )
            if role.name in by_name:
                raise ConfigurationError(
                    f"role {role.name} is defined twice", setting=f"roles.{role.name}"
                )
            by_name[role.name] = role
        for role in by_name.values():
            for parent in role.inherits:
                if parent not in by_name:
                    raise ConfigurationError(
                        f"role {role.name} inherits unknown role {parent}",
                        setting=f"roles.{role.name}.inherits",
                    )
        self.roles: Mapping[str, Role] = MappingProxyType(by_name)
        self._check_cycles()
        order = self._check_depth()  # parents before the roles inheriting them
        closure: dict[str, frozenset[str]] = {}
        children: dict[str, list[str]] = {name: [] for name in by_name}
        for name in order:
            parents = by_name[name].inherits
            closure[name] = frozenset((name,)).union(*(closure[p] for p in parents))
            for parent in parents:
                children[parent].append(name)
        holders: dict[str, frozenset[str]] = {}
        for name in reversed(order):
            holders[name] = frozenset((name,)).union(*(holders[c] for c in children[name]))
        own: dict[str, dict[Key, tuple[Permission, ...]]] = {}
        origins: dict[Key, set[str]] = {}
        for name, role in by_name.items():
            table: dict[Key, list[Permission]] = {}
            for permission in dict.fromkeys(role.parsed):
                table.setdefault((permission.resource, permission.action), []).append(permission)
            own[name] = {k: tuple(sorted(v, key=_scope_rank)) for k, v in table.items()}
            for key in table:
                origins.setdefault(key, set()).add(name)
        self._closure: Mapping[str, frozenset[str]] = MappingProxyType(closure)
        self._holders: Mapping[str, frozenset[str]] = MappingProxyType(holders)
        self._own: Mapping[str, Mapping[Key, tuple[Permission, ...]]] = MappingProxyType(own)
        self._origins = MappingProxyType({k: frozenset(v) for k, v in origins.items()})
        self._rank = MappingProxyType({name: i for i, name in enumerate(by_name)})
        self._via: dict[tuple[str, str], tuple[str, ...]] = {}

    def _check_cycles(self) -> None:
        state: dict[str, int] = {}  # 1 = on the current path, 2 = done
        for start in self.roles:
            if start in state:
                continue
            path: list[str] = [start]
            stack: list[Iterator[str]] = [iter(self.roles[start].inherits)]
            state[start] = 1
            while stack:
                nxt = next(stack[-1], None)
                if nxt is None:
                    state[path.pop()] = 2
                    stack.pop()
                    continue
                if state.get(nxt) == 1:
                    cycle = [*path[path.index(nxt) :], nxt]
                    raise ConfigurationError(
                        f"roles inherit in a cycle: {' -> '.join(cycle)}",
                        setting=f"roles.{nxt}.inherits",
                    )
                if nxt not in state:
                    state[nxt] = 1
                    path.append(nxt)
                    stack.append(iter(self.roles[nxt].inherits))

    def _check_depth(self) -> list[str]:
        """Refuse a chain longer than ``max_depth``; return the roles parents first."""
        longest: dict[str, tuple[str, ...]] = {}  # filled parents first
        for name in self.roles:
            # Iterative post-order: the graph is acyclic here, chains may be long.
            todo = [name]
            while todo:
                top = todo[-1]
                if top in longest:
                    todo.pop()
                    continue
                missing = [p for p in self.roles[top].inherits if p not in longest]
                if missing:
                    todo.extend(missing)
                    continue
                best: tuple[str, ...] = ()
                for parent in self.roles[top].inherits:
                    if len(longest[parent]) > len(best):
                        best = longest[parent]
                longest[top] = (top, *best)
                todo.pop()
            found = longest[name]
            if len(found) - 1 > self.max_depth:
                raise ConfigurationError(
                    f"role chain {' -> '.join(found)} is {len(found) - 1} levels deep, "
                    f"deeper than max_depth={self.max_depth}",
                    setting="max_depth",
                )
        return list(longest)

    def __contains__(self, name: object) -> bool:
        return name in self.roles

    def closure(self, name: str) -> frozenset[str]:
        """The roles ``name`` holds, itself included; empty for a role the graph does not
        know (a role held by a user but never defined grants nothing)."""
        return self._closure.get(name, frozenset())

    def holders(self, name: str) -> frozenset[str]:
        """The roles that hold ``name`` (itself and every role inheriting it)."""
        return self._holders.get(name, frozenset())

    def origins(self, key: Key) -> frozenset[str]:
        """The roles given, as their own, a permission stored under ``key`` exactly (the
        caller looks up the wildcard keys too)."""
        return self._origins.get(key, frozenset())

    def own(self, name: str, key: Key) -> tuple[Permission, ...]:
        """The permissions ``name`` was given itself under ``key``, unscoped ones first."""
        table = self._own.get(name)
        return () if table is None else table.get(key, ())

    def rank(self, name: str) -> int:
        """The role's position in the definition order (ties in explanations go to the
        first defined)."""
        return self._rank[name]

    def first(self, names: frozenset[str]) -> str:
        """The first defined of ``names`` (not empty)."""
        if len(names) == 1:
            return next(iter(names))
        return min(names, key=self._rank.__getitem__)

    def via(self, name: str, ancestor: str) -> tuple[str, ...]:
        """The shortest inheritance path from ``name`` to ``ancestor`` (both included;
        ``(name,)`` when they are the same); empty when ``name`` does not hold it."""
        cached = self._via.get((name, ancestor))
        if cached is not None:
            return cached
        if ancestor not in self.closure(name):
            return ()
        paths: dict[str, tuple[str, ...]] = {name: (name,)}
        queue = deque([name])
        while ancestor not in paths:
            current = queue.popleft()
            for parent in self.roles[current].inherits:
                if parent not in paths and ancestor in self._closure[parent]:
                    paths[parent] = (*paths[current], parent)
                    queue.append(parent)
        found = paths[ancestor]
        if len(self._via) < _VIA_CACHE:
            self._via[(name, ancestor)] = found
        return found

    def held(self, name: str, key: Key) -> tuple[Held, ...]:
        """The permissions ``name`` holds, inherited ones included, stored under ``key``
        exactly, each with the role it was given to and the path there; unscoped first."""
        reached = self.closure(name) & self.origins(key)
        out = [
            Held(permission, origin, self.via(name, origin))
            for origin in sorted(reached, key=self._rank.__getitem__)
            for permission in self.own(origin, key)
        ]
        return tuple(sorted(out, key=lambda h: _scope_rank(h.permission)))

    def permissions(self, name: str) -> frozenset[str]:
        """The texts of every permission ``name`` holds, inherited ones included."""
        return frozenset(
            str(permission)
            for ancestor in self.closure(name)
            for permissions in self._own[ancestor].values()
            for permission in permissions
        )
