"""One user's assignment record: its key, its JSON form, and the changes that apply to it.

Pure functions, no I/O: :mod:`bastion.engine.authz.assignments` reads and writes the record
through the flow drivers. Store layout::

    authz:u:{<user id>}       {"v":1,"version":N,"roles":[..],"tenant_roles":{..},
                               "grants":[..],"denies":[..],"changed_at":T}   no TTL
    authz:h:{<sha-256 hex>}   the same record, for an id too long for the key above

The user id is the Redis Cluster hash tag (:func:`~bastion.stores.keyspace.hash_tag` escapes
``{``, ``}`` and ``%``, an injective mapping), so ids with ``:``, ``/``, braces or any Unicode
never reach another user's key, and the record shares a slot with the user's session epoch
(``session-epoch:{<user id>}``): the bearer check reads the deny entry, the epoch and this
record in one ``MGET``. An id whose key would pass :data:`~bastion.stores.base.MAX_KEY_BYTES`
is named by its SHA-256 digest under another namespace (``authz:h``), so the two forms never
meet either.

Validation is the core's: role names use the permission segment grammar
(:func:`~bastion.core.authz.permission.is_segment`), grants and denies are
:class:`~bastion.core.authz.permission.Permission` texts (``resource:action[:scope]``, ``*``
as a whole segment, or ``*``), tenants are printable text of at most
:data:`~bastion.core.authz.subjects.MAX_ID_LENGTH` characters. Input that breaks a rule is
:class:`~bastion.errors.AuthzInputError` (a 4xx: it comes from an admin form or an API call,
not from start-up configuration). A stored record that breaks a rule is
:class:`~bastion.errors.StoreCorrupt` (503): it may hold a deny that cannot be read, so it is
never taken for "no roles".
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from bastion.core.audit import clean_text
from bastion.core.authz.permission import Permission, is_segment
from bastion.core.authz.subjects import MAX_ID_LENGTH, Subject
from bastion.errors import AuthzInputError, ConfigurationError, StoreCorrupt
from bastion.stores.base import MAX_KEY_BYTES
from bastion.stores.keyspace import hash_tag

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping

__all__ = [
    "MAX_ENTRIES",
    "MAX_USER_ID_LENGTH",
    "Assignment",
    "ChangeKind",
    "apply_change",
    "assignment_key",
    "check_permission",
    "check_role",
    "check_tenant",
    "check_user_id",
    "decode_assignment",
    "encode_assignment",
]

RECORD_VERSION: Final = 1
MAX_ENTRIES: Final = 256
"""Most roles (per tenant and global), tenants, grants or denies one user holds: a record
stays a few KiB, so loading it per request stays cheap."""
MAX_USER_ID_LENGTH: Final = MAX_ID_LENGTH
"""Longest user id, in characters: the longest a :class:`~bastion.core.authz.subjects.Subject`
takes (an id the policy cannot decide for has nothing to hold). Up to four bytes each, so a
long id of wide characters outgrows a store key and is hashed (see the module docstring)."""


class ChangeKind(enum.StrEnum):
    """What one change does; the ``change`` detail of its ``authz_change`` event."""

    ASSIGN_ROLE = "assign_role"
    REVOKE_ROLE = "revoke_role"
    SET_ROLES = "set_roles"
    GRANT = "grant"
    REVOKE_GRANT = "revoke_grant"
    DENY = "deny"
    REVOKE_DENY = "revoke_deny"


def _shown(value: object) -> str:
    return repr(clean_text(value, 80)) if isinstance(value, str) else type(value).__name__


def check_user_id(user_id: object, *, setting: str = "user_id") -> str:
    """``user_id`` if it is non-empty text of valid UTF-8, at most
    :data:`MAX_USER_ID_LENGTH` characters; else :class:`~bastion.errors.AuthzInputError`."""
    if type(user_id) is not str or not user_id:
        raise AuthzInputError(f"{setting} must be non-empty text, got {_shown(user_id)}")
    if len(user_id) > MAX_USER_ID_LENGTH:
        raise AuthzInputError(
            f"{setting} is {len(user_id)} characters; the limit is {MAX_USER_ID_LENGTH}"
        )
    try:
        user_id.encode("utf-8")
    except UnicodeEncodeError:
        raise AuthzInputError(f"{setting} is not valid text (a lone surrogate)") from None
    return user_id


def check_role(role: object, *, setting: str = "role") -> str:
    """``role`` if it is a role name (the core's segment grammar)."""
    if type(role) is not str or not is_segment(role):
        raise AuthzInputError(
            f"{setting} must be a role name ([a-z0-9][a-z0-9_.-]*), got {_shown(role)}"
        )
    return role


def check_permission(permission: object, *, setting: str = "permission") -> Permission:
    """``permission`` parsed, if it is a permission text (``resource:action[:scope]`` or
    ``*``) or a :class:`~bastion.core.authz.permission.Permission`."""
    if isinstance(permission, Permission):
        return permission
    try:
        return Permission.parse(permission, setting=setting)
    except ConfigurationError as exc:  # the core's wording, as input refused at run time
        raise AuthzInputError(str(exc)) from None


def check_tenant(tenant: object, *, setting: str = "tenant") -> str:
    """``tenant`` if it is non-empty text of printable characters, at most
    :data:`~bastion.core.authz.subjects.MAX_ID_LENGTH`: tenants are the app's identifiers,
    matched exactly."""
    if (
        type(tenant) is not str
        or not tenant
        or len(tenant) > MAX_ID_LENGTH
        or not tenant.isprintable()
    ):
        raise AuthzInputError(
            f"{setting} must be non-empty printable text of at most {MAX_ID_LENGTH} "
            f"characters, got {_shown(tenant)}"
        )
    try:
        tenant.encode("utf-8")
    except UnicodeEncodeError:
        raise AuthzInputError(f"{setting} is not valid text (a lone surrogate)") from None
    return tenant


def assignment_key(user_id: str) -> str:
    """The store key of ``user_id``'s assignment record (see the module docstring)."""
    check_user_id(user_id)
    key = hash_tag("authz:u", user_id)
    if len(key.encode("utf-8")) <= MAX_KEY_BYTES:
        return key
    return hash_tag("authz:h", hashlib.sha256(user_id.encode("utf-8")).hexdigest())


def _config(condition: bool, setting: str, message: str) -> None:
    if not condition:
        raise ConfigurationError(f"Assignment.{setting} {message}", setting=setting)


@dataclass(frozen=True, slots=True, kw_only=True)
class Assignment:
    """What one user holds, as read from the store under ``version``.

    ``version`` is the user's permission version: 0 for a user with no record, bumped by every
    change. ``tenant_roles`` maps a tenant to the roles held there only. ``grants`` and
    ``denies`` are per-user permissions, sorted by text. ``changed_at`` is the Unix time of
    the last change (``None`` before the first).
    """

    version: int = 0
    roles: frozenset[str] = frozenset()
    tenant_roles: Mapping[str, frozenset[str]] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    grants: tuple[Permission, ...] = ()
    denies: tuple[Permission, ...] = ()
    changed_at: float | None = None

    def __post_init__(self) -> None:
        version = self.version
        _config(type(version) is int and version >= 0, "version", "must be a whole number >= 0")
        _config(type(self.roles) is frozenset, "roles", "must be a frozenset of role names")
        _config(
            isinstance(self.tenant_roles, MappingProxyType)
            and all(type(r) is frozenset and r for r in self.tenant_roles.values()),
            "tenant_roles",
            "must be a read-only mapping of tenant to a non-empty frozenset of roles",
        )
        for name, held in (("grants", self.grants), ("denies", self.denies)):
            _config(
                type(held) is tuple and all(type(p) is Permission for p in held),
                name,
                "must be a tuple of Permission",
            )
        at = self.changed_at
        _config(
            at is None or (type(at) is float and math.isfinite(at)),
            "changed_at",
            "must be None or a finite float",
        )

    def roles_in(self, tenant: str | None = None) -> frozenset[str]:
        """The roles that count in ``tenant``: the global ones, plus the tenant's own."""
        if tenant is None:
            return self.roles
        return self.roles | self.tenant_roles.get(tenant, frozenset())

    def subject(self, user_id: str, **attributes: object) -> Subject:
        """The :class:`~bastion.core.authz.subjects.Subject` the policy decides for: this
        assignment held by ``user_id``, stamped with its ``version``. ``attributes`` are the
        app's facts about the user for ABAC rules (``subject.<name>``)."""
        return Subject(
            id=user_id,
            roles=self.roles,
            tenant_roles=self.tenant_roles,
            grants=self.grants,
            denies=self.denies,
            attributes=attributes,
            version=self.version,
        )


def _text_list(value: object, check: Any, what: str) -> list[Any]:
    if type(value) is not list or len(value) > MAX_ENTRIES:
        raise StoreCorrupt(f"an authorization record's {what} is not a list of names")
    if not all(type(item) is str for item in value) or value != sorted(set(value)):
        raise StoreCorrupt(f"an authorization record's {what} is not sorted unique text")
    try:
        items = [check(item) for item in value]
    except AuthzInputError:
        raise StoreCorrupt(f"an authorization record's {what} holds an invalid name") from None
    if [str(item) for item in items] != value:  # "*:*:*" where "*" is written
        raise StoreCorrupt(f"an authorization record's {what} is not in canonical form")
    return items


def decode_assignment(raw: bytes | None) -> Assignment:
    """The assignment stored as ``raw``: an empty one at version 0 for ``None``;
    :class:`~bastion.errors.StoreCorrupt` for anything :func:`encode_assignment` did not
    write (never an empty assignment, which would drop the user's denies)."""
    if raw is None:
        return Assignment()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise StoreCorrupt("an authorization record is not JSON") from None
    fields = {"v", "version", "roles", "tenant_roles", "grants", "denies", "changed_at"}
    if type(data) is not dict or set(data) != fields or data["v"] != RECORD_VERSION:
        raise StoreCorrupt("an authorization record has an unknown layout")
    version = data["version"]
    if type(version) is not int or version < 1:
        raise StoreCorrupt("an authorization record's version is not a whole number >= 1")
    tenants = data["tenant_roles"]
    if type(tenants) is not dict or len(tenants) > MAX_ENTRIES:
        raise StoreCorrupt("an authorization record's tenant_roles is not a mapping")
    tenant_roles: dict[str, frozenset[str]] = {}
    for tenant, roles in tenants.items():
        try:
            check_tenant(tenant)
        except AuthzInputError:
            raise StoreCorrupt("an authorization record names an invalid tenant") from None
        held = _text_list(roles, check_role, "tenant roles")
        if not held:
            raise StoreCorrupt("an authorization record holds a tenant with no roles")
        tenant_roles[tenant] = frozenset(held)
    at = data["changed_at"]
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise StoreCorrupt("an authorization record's changed_at is not a time")
    return Assignment(
        version=version,
        roles=frozenset(_text_list(data["roles"], check_role, "roles")),
        tenant_roles=MappingProxyType(tenant_roles),
        grants=tuple(_text_list(data["grants"], check_permission, "grants")),
        denies=tuple(_text_list(data["denies"], check_permission, "denies")),
        changed_at=float(at),
    )


def encode_assignment(assignment: Assignment) -> bytes:
    """The stored form of ``assignment`` (sorted, compact JSON; the same bytes for the same
    assignment)."""
    data = {
        "v": RECORD_VERSION,
        "version": assignment.version,
        "roles": sorted(assignment.roles),
        "tenant_roles": {t: sorted(r) for t, r in sorted(assignment.tenant_roles.items())},
        "grants": [str(p) for p in assignment.grants],
        "denies": [str(p) for p in assignment.denies],
        "changed_at": assignment.changed_at,
    }
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _bounded(items: Collection[object], what: str) -> None:
    if len(items) > MAX_ENTRIES:
        raise AuthzInputError(f"a user may hold at most {MAX_ENTRIES} {what}")


def apply_change(
    current: Assignment,
    kind: ChangeKind,
    values: Iterable[str | Permission],
    *,
    tenant: str | None,
    at: float,
) -> Assignment | None:
    """``current`` with the change applied and its version bumped, or ``None`` when the change
    would leave it as it is (no write, no version bump, no event). ``values`` are already
    checked: role names for the role kinds, permissions for the grant and deny kinds."""
    roles, tenant_roles = current.roles, dict(current.tenant_roles)
    grants, denies = current.grants, current.denies
    if kind in {ChangeKind.ASSIGN_ROLE, ChangeKind.REVOKE_ROLE, ChangeKind.SET_ROLES}:
        wanted = frozenset(v for v in values if type(v) is str)
        held = roles if tenant is None else tenant_roles.get(tenant, frozenset())
        if kind is ChangeKind.ASSIGN_ROLE:
            new = held | wanted
        elif kind is ChangeKind.REVOKE_ROLE:
            new = held - wanted
        else:
            new = wanted
        if new == held:
            return None
        _bounded(new, "roles in one place")
        if tenant is None:
            roles = new
        elif new:
            tenant_roles[tenant] = new
            _bounded(frozenset(tenant_roles), "tenants")
        else:
            del tenant_roles[tenant]
    else:
        given = frozenset(v for v in values if type(v) is Permission)
        adding = kind in {ChangeKind.GRANT, ChangeKind.DENY}
        held_list = grants if kind in {ChangeKind.GRANT, ChangeKind.REVOKE_GRANT} else denies
        changed = set(held_list) | given if adding else set(held_list) - given
        new_list = tuple(sorted(changed, key=str))
        if new_list == held_list:
            return None
        _bounded(new_list, "grants or denies")
        if kind in {ChangeKind.GRANT, ChangeKind.REVOKE_GRANT}:
            grants = new_list
        else:
            denies = new_list
    return Assignment(
        version=current.version + 1,
        roles=roles,
        tenant_roles=MappingProxyType(tenant_roles),
        grants=grants,
        denies=denies,
        changed_at=float(at),
    )
