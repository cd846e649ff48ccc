"""Permissions as ``resource:action[:scope]`` texts, with wildcards that respect segments.

The guide matched permissions with ``fnmatch``, where ``posts*`` also matches ``postsecret``
and ``*`` crosses the ``:`` between segments. Here a ``*`` is always a WHOLE segment and
matching is done segment by segment, so ``posts:*`` can never cover ``postsecret:read``.

Grammar: ``*`` alone (everything), or two or three segments joined by ``:``, each segment
``[a-z0-9][a-z0-9_.-]*`` or ``*``. Upper case, spaces, empty segments, ``**``, ``post*`` and a
fourth segment are refused: a permission that cannot be read one way only is a configuration
error, never a guess.

Scopes: ``own`` is the only scope with a meaning (ownership, checked by the policy against
the resource's owner); any other scope is opaque and matched exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from bastion.errors import ConfigurationError

__all__ = ["MAX_PERMISSION_LENGTH", "OWN", "SEGMENT", "WILDCARD", "Permission", "is_segment"]

WILDCARD: Final = "*"
OWN: Final = "own"
MAX_PERMISSION_LENGTH: Final = 256
"""Longest permission text read (three long segments fit; a megabyte of text does not)."""
SEGMENT: Final = re.compile(r"[a-z0-9][a-z0-9_.\-]*", re.ASCII)
"""One literal segment of a permission (also the grammar of role names and resource types)."""


def is_segment(text: object) -> bool:
    """Whether ``text`` is one literal segment (no wildcard)."""
    return (
        isinstance(text, str)
        and len(text) <= MAX_PERMISSION_LENGTH
        and SEGMENT.fullmatch(text) is not None
    )


def _segment_ok(text: str) -> bool:
    return text == WILDCARD or SEGMENT.fullmatch(text) is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Permission:
    """One permission: ``resource``, ``action`` and an optional ``scope``.

    The bare ``*`` is stored as ``*:*:*`` (and printed back as ``*``). Build one with
    :meth:`parse`; the constructor validates the same grammar.
    """

    resource: str
    action: str
    scope: str | None = None

    def __post_init__(self) -> None:
        for name, value in (
            ("resource", self.resource),
            ("action", self.action),
            ("scope", self.scope),
        ):
            if name == "scope" and value is None:
                continue
            if (
                not isinstance(value, str)
                or len(value) > MAX_PERMISSION_LENGTH
                or not _segment_ok(value)
            ):
                raise ConfigurationError(
                    f"permission {name} must be '*' or match [a-z0-9][a-z0-9_.-]*, got {value!r}",
                    setting=f"permission.{name}",
                )

    @classmethod
    def parse(cls, text: object, *, setting: str = "permission") -> Permission:
        """Read ``"resource:action[:scope]"`` or ``"*"``; anything else is a
        :class:`~bastion.errors.ConfigurationError` naming ``setting`` and the text."""
        if not isinstance(text, str):
            raise ConfigurationError(
                f"{setting} must be a permission text such as 'posts:write', "
                f"got {type(text).__name__}",
                setting=setting,
            )
        if len(text) > MAX_PERMISSION_LENGTH:
            raise ConfigurationError(
                f"{setting} is {len(text)} characters long, at most "
                f"{MAX_PERMISSION_LENGTH} are read",
                setting=setting,
            )
        if text == WILDCARD:
            return cls(resource=WILDCARD, action=WILDCARD, scope=WILDCARD)
        parts = text.split(":")
        if len(parts) not in (2, 3) or not all(_segment_ok(part) for part in parts):
            raise ConfigurationError(
                f"{setting} must be '*' or 'resource:action[:scope]' with each segment '*' "
                f"or lower-case [a-z0-9][a-z0-9_.-]* (no spaces, no partial wildcards), "
                f"got {text!r}",
                setting=setting,
            )
        return cls(resource=parts[0], action=parts[1], scope=parts[2] if len(parts) == 3 else None)

    def __str__(self) -> str:
        if self.resource == self.action == self.scope == WILDCARD:
            return WILDCARD
        head = f"{self.resource}:{self.action}"
        return head if self.scope is None else f"{head}:{self.scope}"

    @property
    def unscoped(self) -> Permission:
        """This permission without its scope (``posts:write:own`` -> ``posts:write``)."""
        return Permission(resource=self.resource, action=self.action)

    def covers(self, required: Permission) -> bool:
        """Whether holding this permission alone grants ``required``, segment by segment.

        ``*`` covers any one segment (including a ``*`` asked for); a literal segment covers
        only itself. An unscoped grant covers every scope of its action; a ``*`` scope covers
        every scope and the unscoped action; a literal scope covers only that scope. A grant
        scoped ``own`` covers the UNSCOPED action only through the policy's ownership check,
        see :meth:`covers_as_owner`, never here.
        """
        if self.resource not in (WILDCARD, required.resource):
            return False
        if self.action not in (WILDCARD, required.action):
            return False
        if self.scope is None or self.scope == WILDCARD:
            return True
        return self.scope == required.scope

    def covers_as_owner(self, required: Permission) -> bool:
        """Whether this is an ``own`` grant that covers ``required`` once ownership holds:
        resource and action covered, ``required`` unscoped or scoped ``own``."""
        if self.scope != OWN or required.scope not in (None, OWN):
            return False
        if self.resource not in (WILDCARD, required.resource):
            return False
        return self.action in (WILDCARD, required.action)

    def overlaps(self, required: Permission) -> bool:
        """Whether a DENY of this permission takes away some of what ``required`` asks for.

        Read each permission as the set of (resource, action, scope) it stands for (an
        unscoped one stands for every scope, as :meth:`covers` reads it): a grant covers
        when its set contains the requirement's, a deny overlaps when the two sets meet. So
        a deny of ``posts:read`` overlaps ``posts:*``, and a deny of ``posts:write:team``
        overlaps the unscoped ``posts:write``. The one exception is a deny scoped ``own``
        against an unscoped requirement: it reaches it only through ownership (see
        :meth:`needs_owner`), so it is not counted here.
        """
        if (
            WILDCARD not in (self.resource, required.resource)
            and self.resource != required.resource
        ):
            return False
        if WILDCARD not in (self.action, required.action) and self.action != required.action:
            return False
        scope, asked = self.scope, required.scope
        if scope is None or WILDCARD in (scope, asked):
            return True
        if asked is None:
            return scope != OWN
        return scope == asked

    def needs_owner(self, required: Permission) -> bool:
        """Whether this permission reaches ``required`` only through ownership: it is scoped
        ``own`` and ``required`` is unscoped or scoped ``own``."""
        return self.scope == OWN and required.scope in (None, OWN)
