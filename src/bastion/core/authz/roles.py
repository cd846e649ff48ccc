"""Roles and their inheritance, checked and flattened once at start-up.

``Role("admin", inherits=("moderator",))`` means an admin holds everything a moderator holds.
:class:`RoleGraph` refuses, when it is built, an unknown parent, a duplicate role, a cycle and
a chain deeper than ``max_depth``, each as a :class:`~bastion.errors.ConfigurationError` that
names the roles involved: pycasbin silently denies past ten levels, which reads as a working
policy until somebody is locked out.

Every role's permissions are flattened with where each came from (the granting role and the
inheritance path), indexed by ``(resource, action)``, so a decision is a few dict look-ups
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


def _scope_rank(held: Held) -> int:
    scope = held.permission.scope
    return 0 if scope is None or scope == WILDCARD else 1


class RoleGraph:
    """The validated role hierarchy with every role's permissions flattened.

    Read-only after construction. ``roles`` maps a name to its :class:`Role`;
    :meth:`closure` gives the roles one role holds (itself included) with the path to each;
    :meth:`held` gives the flattened permissions of one role under one ``(resource, action)``
    key (a key segment may be ``*``); :meth:`holders` gives the roles that hold a role.
    """

    __slots__ = ("_closure", "_flat", "_holders", "_permissions", "max_depth", "roles")

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
        self._check_depth()
        closure: dict[str, Mapping[str, tuple[str, ...]]] = {}
        for name in by_name:
            closure[name] = MappingProxyType(self._walk(name))
        self._closure: Mapping[str, Mapping[str, tuple[str, ...]]] = MappingProxyType(closure)
        holders: dict[str, set[str]] = {name: set() for name in by_name}
        for name, reached in closure.items():
            for ancestor in reached:
                holders[ancestor].add(name)
        self._holders = MappingProxyType({k: frozenset(v) for k, v in holders.items()})
        self._flat = MappingProxyType({name: self._flatten(name) for name in by_name})
        self._permissions = MappingProxyType(
            {
                name: frozenset(str(h.permission) for hs in table.values() for h in hs)
                for name, table in self._flat.items()
            }
        )

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

    def _check_depth(self) -> None:
        longest: dict[str, tuple[str, ...]] = {}

        def chain(name: str) -> tuple[str, ...]:
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
            return longest[name]

        for name in self.roles:
            found = chain(name)
            if len(found) - 1 > self.max_depth:
                raise ConfigurationError(
                    f"role chain {' -> '.join(found)} is {len(found) - 1} levels deep, "
                    f"deeper than max_depth={self.max_depth}",
                    setting="max_depth",
                )

    def _walk(self, name: str) -> dict[str, tuple[str, ...]]:
        """Breadth first from ``name``: each reachable role with its shortest path."""
        reached: dict[str, tuple[str, ...]] = {name: (name,)}
        queue = deque([name])
        while queue:
            current = queue.popleft()
            for parent in self.roles[current].inherits:
                if parent not in reached:
                    reached[parent] = (*reached[current], parent)
                    queue.append(parent)
        return reached

    def _flatten(self, name: str) -> Mapping[Key, tuple[Held, ...]]:
        table: dict[Key, list[Held]] = {}
        seen: set[Permission] = set()
        for ancestor, via in self._closure[name].items():  # nearest first
            for permission in self.roles[ancestor].parsed:
                if permission in seen:
                    continue
                seen.add(permission)
                key = (permission.resource, permission.action)
                table.setdefault(key, []).append(Held(permission, ancestor, via))
        return MappingProxyType(
            {key: tuple(sorted(hs, key=_scope_rank)) for key, hs in table.items()}
        )

    def __contains__(self, name: object) -> bool:
        return name in self.roles

    def closure(self, name: str) -> Mapping[str, tuple[str, ...]]:
        """The roles ``name`` holds (itself included), each with its inheritance path; empty
        for a role the graph does not know."""
        return self._closure.get(name, MappingProxyType({}))

    def holders(self, name: str) -> frozenset[str]:
        """The roles that hold ``name`` (itself and every role inheriting it)."""
        return self._holders.get(name, frozenset())

    def held(self, name: str, key: Key) -> tuple[Held, ...]:
        """The flattened permissions of role ``name`` stored under ``key`` (exactly: the
        caller looks up the wildcard keys too), unscoped ones first."""
        table = self._flat.get(name)
        if table is None:
            return ()
        return table.get(key, ())

    def table(self, name: str) -> Mapping[Key, tuple[Held, ...]]:
        """Every flattened permission of ``name`` by ``(resource, action)``."""
        return self._flat.get(name, MappingProxyType({}))

    def permissions(self, name: str) -> frozenset[str]:
        """The texts of every permission ``name`` holds, inherited ones included."""
        return self._permissions.get(name, frozenset())
