"""Who asks (:class:`Subject`) and what about (:class:`Resource`), as typed values.

A subject's id and its roles live in two separate namespaces: the id is never looked up as a
role, so a user named ``admin`` who holds no role has nothing (in pycasbin's one ``g`` graph,
such a user inherits the role ``admin``). A resource's ``owner`` is what the APP loaded with
the row, never a value from the request.

Both accept the guide's dicts through :meth:`Subject.of` and :meth:`Resource.of`; a malformed
value handed over at request time is an :class:`~bastion.errors.AuthzInputError` (the check
denies), never a guess at what was meant.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from bastion.core.authz.permission import Permission, is_segment
from bastion.errors import AuthzInputError, BastionError

__all__ = ["MAX_ID_LENGTH", "Resource", "Subject"]

MAX_ID_LENGTH: Final = 512
"""Longest subject id, resource id, owner or tenant accepted."""

_EMPTY: Final[Mapping[str, object]] = MappingProxyType({})
_NO_TENANTS: Final[Mapping[str, frozenset[str]]] = MappingProxyType({})
_SUBJECT_KEYS: Final = frozenset(
    {"id", "roles", "tenant_roles", "grants", "denies", "version", "permissions"}
)
_RESOURCE_FIELDS: Final = ("id", "type", "owner", "owner_id", "tenant")


def _text(name: str, value: object, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise AuthzInputError(
            f"{name} must be a non-empty text of at most {MAX_ID_LENGTH} characters, "
            f"got {type(value).__name__}"
        )
    return value


def _roles(name: str, value: object) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise AuthzInputError(f"{name} must be a collection of role names, not {value!r:.60}")
    roles = frozenset(value)
    for role in roles:
        if not is_segment(role):
            raise AuthzInputError(
                f"{name} holds {role!r:.60}, not a role name ([a-z0-9][a-z0-9_.-]*)"
            )
    return roles


def _permissions(name: str, value: object) -> tuple[Permission, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise AuthzInputError(f"{name} must be a collection of permissions, not {value!r:.60}")
    out: list[Permission] = []
    for item in value:
        if isinstance(item, Permission):
            out.append(item)
            continue
        try:
            out.append(Permission.parse(item, setting=name))
        except BastionError as exc:
            raise AuthzInputError(str(exc)) from None
    return tuple(out)


def _attributes(name: str, value: object) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise AuthzInputError(f"{name} must be a mapping, not {type(value).__name__}")
    if not value:
        return _EMPTY
    for key in value:
        if not isinstance(key, str):
            raise AuthzInputError(f"{name} keys must be text, got {type(key).__name__}")
    return MappingProxyType(dict(value))


@dataclass(frozen=True, slots=True, kw_only=True)
class Subject:
    """The user (or service) asking.

    ``roles`` are held everywhere; ``tenant_roles[t]`` only on resources of tenant ``t``.
    ``grants`` and ``denies`` are per-user extras (a deny overrides every allow). ``version``
    is the permission version the roles were read under (see ``bastion.engine.authz``).
    Attribute references ``subject.<name>`` read ``attributes`` first, then ``id`` and
    ``roles`` (the global roles as held, without inherited ones: a rule about roles says so
    with its ``roles``, which count inheritance).
    """

    id: str
    roles: frozenset[str] = frozenset()
    tenant_roles: Mapping[str, frozenset[str]] = field(default_factory=lambda: _NO_TENANTS)
    grants: tuple[Permission, ...] = ()
    denies: tuple[Permission, ...] = ()
    attributes: Mapping[str, object] = field(default_factory=lambda: _EMPTY)
    version: int | None = None

    def __post_init__(self) -> None:
        # Built per request (often per decision): the common shape (a frozenset of roles,
        # nothing else) is checked without copying anything.
        _text("subject id", self.id)
        if type(self.roles) is frozenset:
            for role in self.roles:
                if not is_segment(role):
                    raise AuthzInputError(
                        f"subject roles holds {role!r:.60}, not a role name ([a-z0-9][a-z0-9_.-]*)"
                    )
        else:
            object.__setattr__(self, "roles", _roles("subject roles", self.roles))
        if self.tenant_roles is not _NO_TENANTS:
            if not isinstance(self.tenant_roles, Mapping):
                raise AuthzInputError("subject tenant_roles must map a tenant to role names")
            tenants: dict[str, frozenset[str]] = {}
            for tenant, roles in self.tenant_roles.items():
                tenants[str(_text("subject tenant", tenant))] = _roles(
                    f"subject tenant_roles[{tenant!r}]", roles
                )
            object.__setattr__(self, "tenant_roles", MappingProxyType(tenants))
        if self.grants != ():
            object.__setattr__(self, "grants", _permissions("subject grants", self.grants))
        if self.denies != ():
            object.__setattr__(self, "denies", _permissions("subject denies", self.denies))
        if self.attributes is not _EMPTY:
            attributes = _attributes("subject attributes", self.attributes)
            object.__setattr__(self, "attributes", attributes)
        if self.version is not None and (
            isinstance(self.version, bool) or not isinstance(self.version, int)
        ):
            raise AuthzInputError("subject version must be a whole number or None")

    @classmethod
    def of(cls, value: object) -> Subject:
        """``value`` if it is a Subject, else the guide's dict (``{"id": "u1", "roles":
        ["user"], "permissions": [...], ...}``: ``permissions`` are per-user grants, other
        unknown keys become attributes)."""
        if isinstance(value, Subject):
            return value
        if not isinstance(value, Mapping):
            raise AuthzInputError(
                f"a subject must be a Subject or a mapping, not {type(value).__name__}"
            )
        if "id" not in value:
            raise AuthzInputError("a subject mapping needs an 'id'")
        grants: object = value.get("grants", ())
        if "permissions" in value:
            grants = (
                *_permissions("subject grants", grants),
                *_permissions("subject permissions", value["permissions"]),
            )
        extra = value.keys() - _SUBJECT_KEYS
        attributes = {k: value[k] for k in extra} if extra else _EMPTY
        return cls(
            id=value["id"],
            roles=_roles("subject roles", value.get("roles", ())),
            tenant_roles=value.get("tenant_roles", _NO_TENANTS),
            grants=grants,  # type: ignore[arg-type]  # checked in __post_init__
            denies=value.get("denies", ()),
            attributes=attributes,
            version=value.get("version"),
        )

    def roles_in(self, tenant: str | None) -> frozenset[str]:
        """The roles this subject holds on a resource of ``tenant`` (global ones plus that
        tenant's; global ones only when ``tenant`` is None)."""
        if tenant is None:
            return self.roles
        extra = self.tenant_roles.get(tenant)
        return self.roles if not extra else self.roles | extra


@dataclass(frozen=True, slots=True, kw_only=True)
class Resource:
    """The thing acted on, as the app loaded it.

    ``owner`` decides ``:own`` permissions and must come from the app's data. References
    ``resource.<name>`` read ``attributes`` first, then ``id``, ``type``, ``owner``,
    ``owner_id`` (the same as ``owner``) and ``tenant``. An attribute named like one of those
    fields must agree with it (else ``owner`` and ``resource.owner_id`` could disagree).
    """

    type: str
    id: str | None = None
    owner: str | None = None
    tenant: str | None = None
    attributes: Mapping[str, object] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        if not is_segment(self.type):
            raise AuthzInputError(
                f"resource type must match [a-z0-9][a-z0-9_.-]*, got {self.type!r:.60}"
            )
        if isinstance(self.id, int) and not isinstance(self.id, bool):
            object.__setattr__(self, "id", str(self.id))  # a database's integer key
        _text("resource id", self.id, optional=True)
        _text("resource owner", self.owner, optional=True)
        _text("resource tenant", self.tenant, optional=True)
        attributes = _attributes("resource attributes", self.attributes)
        object.__setattr__(self, "attributes", attributes)
        for name in _RESOURCE_FIELDS:
            if name not in attributes:
                continue
            value, expected = attributes[name], self.field(name)
            # Compared as text or None only: an app object's __eq__ is never called.
            if not (value is None is expected or (type(value) is str and value == expected)):
                raise AuthzInputError(
                    f"resource attribute {name!r} disagrees with the resource's "
                    f"{'owner' if name == 'owner_id' else name}"
                )

    def field(self, name: str) -> object:
        """One of the fixed fields by name (``owner_id`` is ``owner``)."""
        if name == "id":
            return self.id
        if name == "type":
            return self.type
        if name in ("owner", "owner_id"):
            return self.owner
        if name == "tenant":
            return self.tenant
        raise KeyError(name)

    @classmethod
    def of(cls, value: object) -> Resource:
        """``value`` if it is a Resource, else the guide's dict (``{"type": "document", "id":
        "d1", "owner_id": "u1", "public": True}``): ``owner_id`` (or ``owner``) becomes
        ``owner`` and stays an attribute; ``id``, ``type`` and ``tenant`` become fields; the
        rest are attributes."""
        if isinstance(value, Resource):
            return value
        if not isinstance(value, Mapping):
            raise AuthzInputError(
                f"a resource must be a Resource or a mapping, not {type(value).__name__}"
            )
        if "type" not in value:
            raise AuthzInputError("a resource mapping needs a 'type'")
        owner = value.get("owner_id", value.get("owner"))
        if "owner" in value and "owner_id" in value and value["owner"] != value["owner_id"]:
            raise AuthzInputError("resource 'owner' and 'owner_id' disagree")
        attributes = {k: v for k, v in value.items() if k not in ("id", "type", "tenant")}
        attributes.pop("owner", None)
        return cls(
            type=value["type"],
            id=value.get("id"),
            owner=owner,
            tenant=value.get("tenant"),
            attributes=attributes,
        )

    @property
    def label(self) -> str:
        """``type:id`` (or the type alone), for decisions and logs."""
        return self.type if self.id is None else f"{self.type}:{self.id}"
