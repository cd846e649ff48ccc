"""The benchmark groups, in the order ``python -m bench`` runs them.

A group's module is imported only when the group runs, so ``--only asgi`` needs neither
``redis`` nor a ``redis-server``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.group import Group

__all__ = ["GROUP_NAMES", "load_group"]

GROUP_NAMES = (
    "asgi",
    "stores",
    "credentials",
    "sessions",
    "ratelimit",
    "headers",
    "csrf",
    "cors",
    "fullstack",
    "tokens",
    "authz",
    "scale",
    "postgres",
    "audit",
    "crypto",
)


def load_group(name: str) -> Group:
    """The group called ``name`` (one of :data:`GROUP_NAMES`)."""
    if name not in GROUP_NAMES:
        raise ValueError(f"unknown bench group {name!r}; choose from {', '.join(GROUP_NAMES)}")
    module = importlib.import_module(f"bench.groups.{name}")
    group: Group = module.GROUP
    return group
