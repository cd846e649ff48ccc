"""Roles, grants and denies per user in bastion's store, and the per-user permission version.

Every change is one bounded compare-and-set loop (:func:`~bastion.engine.flows.update`) on the
user's one record (:mod:`bastion.engine.authz.record`): of two concurrent changes to one user
both land, one after the other, or one raises :class:`~bastion.errors.StoreBusy` (503, nothing
written); a change is never lost. Each change that alters the record bumps its ``version`` and
emits ``authz_change``; a change that would leave the record as it is writes nothing.

Who may change what. The caller states whether the actor may administer assignments
(``may_administer``: the facade checks the ``authz:admin`` permission, or the one the app
names); ``False`` raises :class:`~bastion.errors.Forbidden`. An actor can never change their
own assignment through this API, administrator or not: :class:`~bastion.errors.SelfGrantRefused`.
Both refusals emit ``authz_fail`` and touch no store.

The permission version travels with the credential: the facade writes it into the session at
login (``session["_authz_v"]``) and Tokens puts it in the access token (claim ``pv``). Per
request the facade reads the record (:meth:`Assignments.raw`, one ``get``) and checks it with
the carried version (:meth:`Assignments.current_from`), always answering with the store's
roles, so a demotion counts on the next request (:meth:`Assignments.current` does both). For
a bearer request the read can ride in the deny-list check's ``MGET``
(:meth:`~bastion.engine.tokens.revocation.Revocations.check_and_read` with
:func:`~bastion.engine.authz.record.assignment_key`), and :meth:`Assignments.current_from`
parses what it read: no extra round trip (the bearer layer does not hand that read on yet).
A carried version above the store's means the store lost writes (a restore from an old
backup, a failover to a lagging replica), which may have undone a demotion: that is
:class:`~bastion.errors.StoreCorrupt`, never the older roles.

Audit events (identifiers hashed by the :class:`~bastion.core.audit.Auditor`): ``user`` is the
actor; details ``target`` (the changed user, hashed with the same key and kind as ``user``),
``change`` (a :class:`~bastion.engine.authz.record.ChangeKind`), ``value`` (the roles or
permission), ``tenant``, ``old_version``, ``new_version``, and for role changes
``roles_before``/``roles_after``. Refusals: ``authz_fail`` with ``reason`` ``self_grant`` or
``not_administrator``, and ``changed_meanwhile`` (with ``undone``) for a change whose actor
lost the right to it while it was made (:meth:`Assignments.change_flow`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Final, TypeVar

from bastion.core.audit import EventName, Outcome
from bastion.core.clock import system_clock
from bastion.engine.authz._named import NamedChanges
from bastion.engine.authz.record import (
    ChangeKind,
    apply_change,
    assignment_key,
    check_permission,
    check_role,
    check_tenant,
    check_user_id,
    decode_assignment,
    encode_assignment,
)
from bastion.engine.flows import Done, Get, GetMany, Write, drive, drive_sync, update
from bastion.errors import (
    AuthzInputError,
    ConfigurationError,
    Forbidden,
    SelfGrantRefused,
    StoreCorrupt,
)
from bastion.stores.base import MAX_GET_MANY, inline_side, require_sync, sync_side

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Sequence

    from bastion.core.audit import Auditor
    from bastion.core.authz.permission import Permission
    from bastion.core.clock import Clock
    from bastion.engine.authz.record import Assignment
    from bastion.engine.flows import Flow
    from bastion.stores.base import Store, SyncStore

__all__ = ["Assignments"]

_CACHE: Final = 4096
"""Parsed records kept per :class:`Assignments` (the same bytes always parse the same)."""
_ROLE_KINDS: Final = frozenset(
    {ChangeKind.ASSIGN_ROLE, ChangeKind.REVOKE_ROLE, ChangeKind.SET_ROLES}
)
_T = TypeVar("_T")
_Landed = tuple["Assignment", "Assignment | None"]
StillAllowed = Callable[["Assignment", "Assignment"], bool]
"""``still_allowed(actor_now, target_before)`` of :meth:`Assignments.change_flow`."""


def check_carried(carried: object) -> int | None:
    """The carried permission version: ``None`` or a whole number >= 0."""
    if carried is None:
        return None
    if type(carried) is not int or carried < 0:
        raise AuthzInputError("the carried permission version must be a whole number >= 0")
    return carried


def _held(assignment: Assignment, tenant: str | None) -> frozenset[str]:
    if tenant is None:
        return assignment.roles
    return assignment.tenant_roles.get(tenant, frozenset())


class Assignments(NamedChanges):
    """Per-user role, grant and deny assignments over ``store`` (see the module docstring).

    ``auditor`` receives ``authz_change`` and ``authz_fail``; ``clock`` stamps each change.
    ``known_roles``, when given, are the only role names a change may assign (the policy's
    roles), so a typo in an admin form is refused instead of stored. The ``*_sync`` methods
    run the same flows on ``store.sync`` (WSGI apps); on a store whose sync side never blocks
    (memory) the async methods run them inline too.
    """

    __slots__ = (
        "_auditor",
        "_clock",
        "_inline",
        "_keys",
        "_known",
        "_parsed",
        "_store",
        "_sync",
    )

    def __init__(
        self,
        store: Store,
        *,
        auditor: Auditor,
        clock: Clock = system_clock,
        known_roles: Collection[str] | None = None,
    ) -> None:
        if known_roles is not None:
            if isinstance(known_roles, str):
                raise ConfigurationError(
                    "known_roles must be a collection of role names, not one string",
                    setting="known_roles",
                )
            try:
                known_roles = frozenset(check_role(r, setting="known_roles") for r in known_roles)
            except AuthzInputError as exc:
                raise ConfigurationError(str(exc), setting="known_roles") from None
        self._store = store
        self._sync: SyncStore | None = sync_side(store)
        self._inline = inline_side(store)
        self._auditor = auditor
        self._clock = clock
        self._known: frozenset[str] | None = known_roles
        self._parsed: dict[bytes, Assignment] = {}
        self._keys: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Assignments(store={self._store!r})"

    # -- reading ---------------------------------------------------------------------------

    def parse(self, raw: bytes | None) -> Assignment:
        """The assignment a record's bytes hold (empty at version 0 for ``None``);
        :class:`~bastion.errors.StoreCorrupt` for a damaged record."""
        if raw is None:
            return decode_assignment(None)
        found = self._parsed.get(raw)
        if found is None:
            found = decode_assignment(raw)
            if len(self._parsed) >= _CACHE:
                self._parsed.clear()
            self._parsed[raw] = found
        return found

    def key(self, user_id: str) -> str:
        """:func:`~bastion.engine.authz.record.assignment_key`, kept per user id (it checks
        the id and escapes it on every call; a request's check needs it every time)."""
        key = self._keys.get(user_id)
        if key is None:
            key = assignment_key(user_id)
            if len(self._keys) >= _CACHE:
                self._keys.clear()
            self._keys[user_id] = key
        return key

    @property
    def inline(self) -> bool:
        """Whether the store's reads never block (a memory store): :meth:`raw_sync` may then
        run on the event loop, with no await."""
        return self._inline is not None

    async def raw(self, user_id: str) -> bytes | None:
        """``user_id``'s record as stored (one ``get``; ``None`` for no record): the
        per-request read, parsed (and kept) by the caller with :meth:`current_from`."""
        if self._inline is not None:
            return self._inline.get(self.key(user_id))
        return await self._store.get(self.key(user_id))

    def raw_sync(self, user_id: str) -> bytes | None:
        """:meth:`raw` on the store's synchronous side."""
        sync = self._inline or require_sync(self._sync, self._store)
        return sync.get(self.key(user_id))

    def current_from(self, raw: bytes | None, carried: int | None) -> Assignment:
        """The per-request answer from a record read elsewhere (the bearer check's ``MGET``):
        the store's assignment, whatever ``carried`` says, unless ``carried`` (the session's
        or token's version) is above the store's, which is :class:`StoreCorrupt`."""
        carried = check_carried(carried)
        assignment = self.parse(raw)
        if carried is not None and carried > assignment.version:
            raise StoreCorrupt(
                f"the store holds permission version {assignment.version} of a user whose "
                f"credential carries version {carried}: the store lost writes (a restore or a "
                "failover), which may have undone a role change; refusing its roles"
            )
        return assignment

    def load_flow(self, user_id: str) -> Flow[Assignment]:
        """Read ``user_id``'s assignment (one ``get``)."""
        return self.parse((yield Get(self.key(user_id))))

    def load_many_flow(self, user_ids: Sequence[str]) -> Flow[list[Assignment]]:
        """Read several users' assignments, :data:`~bastion.stores.base.MAX_GET_MANY` per
        store command (an admin page listing users with their roles). Danger: the keys are
        in different Redis Cluster slots, so this suits a single Redis server, as the store
        does today."""
        keys = [assignment_key(user_id) for user_id in user_ids]
        found: list[bytes | None] = []
        for start in range(0, len(keys), MAX_GET_MANY):
            found += yield GetMany(tuple(keys[start : start + MAX_GET_MANY]))
        return [self.parse(raw) for raw in found]

    def current_flow(self, user_id: str, carried: int | None) -> Flow[Assignment]:
        """:meth:`current_from` on a fresh read of ``user_id``'s record (one ``get``)."""
        check_carried(carried)
        return self.current_from((yield Get(self.key(user_id))), carried)

    # -- changing --------------------------------------------------------------------------

    def _refuse(
        self, actor: str, target: str, kind: ChangeKind, reason: str, client_ip: str | None
    ) -> None:
        self._auditor.emit(
            EventName.AUTHZ_FAIL,
            outcome=Outcome.BLOCKED,
            user=actor,
            client_ip=client_ip,
            details={"reason": reason, "change": str(kind), "target": self._digest(target)},
        )

    def _digest(self, user_id: str) -> str:
        # The Auditor hashes identifiers only in its own fields; building (not emitting) an
        # event gives the target's digest under the same key and kind as ``user``.
        hashed = self._auditor.event(EventName.AUTHZ_CHANGE, outcome=Outcome.SUCCESS, user=user_id)
        return "" if hashed.user is None else hashed.user.digest

    def _values(
        self, kind: ChangeKind, values: Iterable[str | Permission]
    ) -> tuple[str | Permission, ...]:
        if kind not in _ROLE_KINDS:
            return tuple(sorted({check_permission(v) for v in values}, key=str))
        checked = tuple(sorted({check_role(v) for v in values}))
        unknown = [] if self._known is None else [r for r in checked if r not in self._known]
        if unknown:
            raise AuthzInputError(f"role {unknown[0]!r} is not a role of the policy")
        return checked

    def change_flow(
        self,
        actor: str,
        user_id: str,
        kind: ChangeKind,
        values: Iterable[str | Permission],
        *,
        tenant: str | None = None,
        may_administer: bool,
        client_ip: str | None = None,
        still_allowed: StillAllowed | None = None,
    ) -> Flow[Assignment]:
        """Apply one change to ``user_id``'s assignment on behalf of ``actor`` and return the
        assignment afterwards. Refusals (input, self-grant, not an administrator) come before
        any store command; the write is a bounded compare-and-set loop.

        ``still_allowed(actor_now, target_before)``, when given, is asked once the write has
        landed, with the actor's record read after it and the target's as it was before it:
        ``False`` means the actor lost the right to make this change meanwhile (another
        administrator demoted them while their own check was under way), and the change is
        undone (:meth:`_undo`), audited ``authz_fail`` reason ``changed_meanwhile``, and
        refused with :class:`~bastion.errors.Forbidden`. Why a read after the write is
        enough: of two administrators changing each other, each writes the other's record
        and then reads their own, so at least one of them reads the other's write (each store
        command is atomic and seen in one order); no two such changes both stand, and the
        last administrator cannot be removed by crossing demotions."""
        check_user_id(actor, setting="actor")
        check_user_id(user_id)
        if type(may_administer) is not bool:
            raise ConfigurationError(
                "may_administer must be True or False (whether the actor holds the admin "
                f"permission), got {type(may_administer).__name__}",
                setting="may_administer",
            )
        if not isinstance(kind, ChangeKind):
            raise ConfigurationError(f"unknown change {kind!r}", setting="kind")
        if actor == user_id:
            self._refuse(actor, user_id, kind, "self_grant", client_ip)
            raise SelfGrantRefused(
                "a user cannot change their own roles, grants or denies", decision=None
            )
        if not may_administer:
            self._refuse(actor, user_id, kind, "not_administrator", client_ip)
            raise Forbidden("the actor may not change role assignments", decision=None)
        if isinstance(values, str):
            raise AuthzInputError("values must be a collection of names, not one string")
        checked = self._values(kind, values)
        if tenant is not None:
            if kind not in _ROLE_KINDS:
                raise AuthzInputError("grants and denies are per user; they take no tenant")
            check_tenant(tenant)
        at = self._clock.now()

        def step(_key: str, raw: bytes | None) -> Write[_Landed] | Done[_Landed]:
            old = self.parse(raw)
            new = apply_change(old, kind, checked, tenant=tenant, at=at)
            if new is None:
                return Done(result=(old, None))
            return Write(encode_assignment(new), result=(old, new))

        key = self.key(user_id)
        old, new = yield from update(key, step, what="a user's role assignment")
        if new is None:
            return old
        if still_allowed is not None and not still_allowed(
            self.parse((yield Get(self.key(actor)))), old
        ):
            undone = yield from self._undo(key, new, old, at)
            self._auditor.emit(
                EventName.AUTHZ_FAIL,
                outcome=Outcome.BLOCKED,
                user=actor,
                client_ip=client_ip,
                details={
                    "reason": "changed_meanwhile",
                    "change": str(kind),
                    "target": self._digest(user_id),
                    "undone": "yes" if undone else "no: changed again since",
                },
            )
            raise Forbidden(
                "the actor's own roles changed while this change was being made and no longer "
                "allow it; it was undone",
                decision=None,
            )
        details: dict[str, str | int | None] = {
            "target": self._digest(user_id),
            "change": str(kind),
            "value": " ".join(map(str, checked)),
            "tenant": tenant,
            "old_version": old.version,
            "new_version": new.version,
        }
        if kind in _ROLE_KINDS:
            details["roles_before"] = " ".join(sorted(_held(old, tenant)))
            details["roles_after"] = " ".join(sorted(_held(new, tenant)))
        self._auditor.emit(
            EventName.AUTHZ_CHANGE,
            outcome=Outcome.SUCCESS,
            user=actor,
            client_ip=client_ip,
            details=details,
        )
        return new

    def _undo(self, key: str, written: Assignment, before: Assignment, at: float) -> Flow[bool]:
        """Put ``before``'s roles, grants and denies back under a new version, if the record
        still holds what this change ``written``; ``False`` (nothing written) when another
        change came after it, which stands: its actor's own check passed after ours."""
        mine = encode_assignment(written)
        restored = replace(before, version=written.version + 1, changed_at=float(at))

        def step(_key: str, raw: bytes | None) -> Write[bool] | Done[bool]:
            if raw != mine:
                return Done(result=False)
            return Write(encode_assignment(restored), result=True)

        return (yield from update(key, step, what="a user's role assignment (an undo)"))

    # -- drivers ---------------------------------------------------------------------------

    async def _run(self, flow: Flow[_T]) -> _T:
        return await drive(flow, self._store, self._inline)

    def _run_sync(self, flow: Flow[_T]) -> _T:
        return drive_sync(flow, require_sync(self._sync, self._store))

    # -- async API -------------------------------------------------------------------------

    async def load(self, user_id: str) -> Assignment:
        """``user_id``'s assignment (empty at version 0 for a user with no record)."""
        return await self._run(self.load_flow(user_id))

    async def load_many(self, user_ids: Sequence[str]) -> list[Assignment]:
        """The assignments of ``user_ids``, in order (see :meth:`load_many_flow`)."""
        return await self._run(self.load_many_flow(user_ids))

    async def version(self, user_id: str) -> int:
        """``user_id``'s permission version: what the facade writes into a new session and
        Tokens into a new access token (claim ``pv``)."""
        return (await self._run(self.load_flow(user_id))).version

    async def current(self, user_id: str, carried: int | None) -> Assignment:
        """The per-request assignment (see :meth:`current_from`): one ``get``."""
        return await self._run(self.current_flow(user_id, carried))

    async def change(
        self,
        actor: str,
        user_id: str,
        kind: ChangeKind,
        values: Iterable[str | Permission],
        *,
        tenant: str | None = None,
        may_administer: bool,
        client_ip: str | None = None,
        still_allowed: StillAllowed | None = None,
    ) -> Assignment:
        """Run :meth:`change_flow`; the named methods below are its usual forms."""
        flow = self.change_flow(
            actor,
            user_id,
            kind,
            values,
            tenant=tenant,
            may_administer=may_administer,
            client_ip=client_ip,
            still_allowed=still_allowed,
        )
        return await self._run(flow)

    # -- sync API (WSGI) -------------------------------------------------------------------

    def load_sync(self, user_id: str) -> Assignment:
        """:meth:`load` on the store's synchronous side."""
        return self._run_sync(self.load_flow(user_id))

    def load_many_sync(self, user_ids: Sequence[str]) -> list[Assignment]:
        """:meth:`load_many` on the store's synchronous side."""
        return self._run_sync(self.load_many_flow(user_ids))

    def version_sync(self, user_id: str) -> int:
        """:meth:`version` on the store's synchronous side."""
        return self._run_sync(self.load_flow(user_id)).version

    def current_sync(self, user_id: str, carried: int | None) -> Assignment:
        """:meth:`current` on the store's synchronous side."""
        return self._run_sync(self.current_flow(user_id, carried))

    def change_sync(
        self,
        actor: str,
        user_id: str,
        kind: ChangeKind,
        values: Iterable[str | Permission],
        *,
        tenant: str | None = None,
        may_administer: bool,
        client_ip: str | None = None,
        still_allowed: StillAllowed | None = None,
    ) -> Assignment:
        """:meth:`change` on the store's synchronous side."""
        flow = self.change_flow(
            actor,
            user_id,
            kind,
            values,
            tenant=tenant,
            may_administer=may_administer,
            client_ip=client_ip,
            still_allowed=still_allowed,
        )
        return self._run_sync(flow)
