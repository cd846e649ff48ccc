"""``Authorizer``: the policy, the users' roles and the audit trail behind one object.

``runtime.authz`` is one; tests and apps without ``Bastion(...)`` build it directly::

    authorizer = Authorizer(AuthzPolicy(policy=policy), store=store, auditor=auditor)
    decision = await authorizer.check("u1", "posts:write", post)   # a Decision
    await authorizer.require("u1", "read", document)                # raises Forbidden

Where a user's roles come from (``AuthzPolicy.roles``): bastion's store
(:class:`~bastion.engine.authz.Assignments`, read on every request that needs it, one ``get``,
so a demotion counts on the next request; the permission version the request carries is passed
along), or the app's own loader. A user id is never taken for a role name. The subject built
from a record, and the passing verdicts of checks that read nothing but the subject, are kept
by the record's bytes (:mod:`bastion.authz._known`): a repeat check costs the read and a
lookup, and a change, which rewrites the record, is seen by the next request.

Every denial emits ``authz_fail`` (outcome ``blocked``) with the decision's reason and its
explanation (which rule, grant or condition, through which role); a condition that could not
be evaluated is also logged on ``bastion.security.authz``, since it means a policy or the data
it reads is wrong. The client only ever sees the reason code.

Changes of roles and grants go through :meth:`Authorizer.change` (and the named methods): the
actor must hold ``AuthzPolicy.admin_permission`` (in the tenant changed, for a tenant role), and
nobody can change their own assignment (:class:`~bastion.errors.SelfGrantRefused`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from bastion.authz._changes import Changes
from bastion.authz._known import KnownSubjects
from bastion.authz.guide import Guide
from bastion.authz.policy import AuthzPolicy
from bastion.core.audit import EventName, Outcome
from bastion.core.authz.decision import AuthzReason, Decision
from bastion.core.authz.routes import UNAUTHENTICATED, denied_refusal
from bastion.core.authz.subjects import Subject
from bastion.core.clock import system_clock
from bastion.core.refusal import Refusal
from bastion.engine.authz import Assignments
from bastion.errors import AuthzInputError, ConfigurationError, Forbidden

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, MutableMapping

    from bastion.authz._known import Known
    from bastion.core.audit import Auditor, DetailValue
    from bastion.core.authz.policy import Policy
    from bastion.core.authz.routes import RouteOutcome, RouteTable
    from bastion.core.clock import Clock
    from bastion.stores.base import Store

__all__ = [
    "AUTHZ_KEY",
    "BAD_INPUT",
    "SESSION_VERSION_KEY",
    "STORE_UNAVAILABLE",
    "SUBJECT_KEY",
    "Authorizer",
    "RequestUser",
    "Verdict",
]

AUTHZ_KEY: Final = "bastion.authz"
"""Where the adapters find the authorizer: ``scope["state"]`` under ASGI, the environ under
WSGI. The route middleware puts it there; ``Bastion``'s stack does too."""
SUBJECT_KEY: Final = "bastion.authz.subject"
"""Beside it: the request's :class:`Subject`, once loaded, so later checks reuse it."""

SESSION_VERSION_KEY: Final = "_authz_v"
"""The session key of the permission version read at login (:meth:`Authorizer.stamp`)."""

STORE_UNAVAILABLE: Final = Refusal(
    "authz_store_unavailable",
    "Service unavailable: permissions cannot be read right now. Please try again shortly.\n",
)

BAD_INPUT: Final = Refusal("authz_bad_input", "Forbidden: this request cannot be authorized.\n")
"""The refusal when the user id or the loaded resource is malformed (:meth:`Authorizer.gate`)."""

_LOGGER: Final = logging.getLogger("bastion.security.authz")
_ANYONE: Final = "anonymous"
_USER: Final = "the user"


class RequestUser(NamedTuple):
    """Who an adapter found signed in: the user id and the permission version the request
    carries (the token's ``pv`` claim, or the session's ``_authz_v``; ``None`` when absent)."""

    id: str
    version: int | None = None


class Verdict(NamedTuple):
    """The result of :meth:`Authorizer.gate`: ``status`` 0 to go on, else the refusal."""

    status: int
    refusal: Refusal | None = None
    subject: Subject | None = None
    decision: Decision | None = None


class Authorizer(Changes):
    """Authorization for one app (see the module docstring).

    ``store`` holds the users' assignments when ``policy.roles`` is ``"store"``
    (``assignments`` may be given instead, already built); ``auditor`` receives ``authz_fail``
    (and, through the assignments, ``authz_change``); ``clock`` stamps the changes.
    """

    __slots__ = (
        "_auditor",
        "_inline",
        "_known",
        "assignments",
        "engine",
        "guide",
        "policy",
        "routes",
    )

    def __init__(
        self,
        policy: AuthzPolicy,
        *,
        store: Store | None = None,
        auditor: Auditor,
        clock: Clock = system_clock,
        assignments: Assignments | None = None,
    ) -> None:
        if not isinstance(policy, AuthzPolicy):
            raise ConfigurationError(
                f"Authorizer needs an AuthzPolicy, got {type(policy).__name__}",
                setting="authz",
            )
        self.policy = policy
        self.engine: Policy = policy.load()
        self.routes: RouteTable = policy.table
        self._auditor = auditor
        if assignments is None and policy.roles_in_store:
            if store is None:
                raise ConfigurationError(
                    "authz.roles='store' keeps roles in bastion's store, but no store was "
                    "given; configure Bastion(store=...) or give authz.roles a loader",
                    setting="authz.roles",
                )
            known = {role.name for role in self.engine.roles}
            assignments = Assignments(store, auditor=auditor, clock=clock, known_roles=known)
        self.assignments = assignments
        self._known = None if assignments is None else KnownSubjects(assignments)
        self._inline = assignments is not None and assignments.inline
        self.guide = Guide(self.engine, authorizer=self)

    def __repr__(self) -> str:
        return f"Authorizer(policy={self.engine.name!r}, routes={len(self.routes.rules)})"

    # -- subjects --------------------------------------------------------------------------

    async def subject_for(self, user_id: str, *, version: int | None = None) -> Subject:
        """The user's :class:`Subject`, roles read now (``version``: the one the request
        carries)."""
        if self.assignments is None or self._known is None:
            return self._loaded(user_id)
        raw = await self.assignments.raw(user_id)
        return self._known.get(user_id, raw, version).subject

    def subject_for_sync(self, user_id: str, *, version: int | None = None) -> Subject:
        """:meth:`subject_for` for WSGI apps (the store's sync side)."""
        if self.assignments is None or self._known is None:
            return self._loaded(user_id)
        raw = self.assignments.raw_sync(user_id)
        return self._known.get(user_id, raw, version).subject

    async def stamp(self, session: MutableMapping[str, Any], user_id: str) -> None:
        """Write ``user_id``'s permission version into ``session`` (call it at login, after
        ``session.login(user_id)``); later requests carry it to :meth:`subject_for`. Nothing
        for roles kept by the app's own loader."""
        if self.assignments is not None:
            session[SESSION_VERSION_KEY] = await self.assignments.version(user_id)

    def stamp_sync(self, session: MutableMapping[str, Any], user_id: str) -> None:
        """:meth:`stamp` for WSGI apps."""
        if self.assignments is not None:
            session[SESSION_VERSION_KEY] = self.assignments.version_sync(user_id)

    def _loaded(self, user_id: str) -> Subject:
        loader = self.policy.roles
        if isinstance(loader, str):  # pragma: no cover (roles='store' always has assignments)
            raise ConfigurationError("authz.roles has no loader", setting="authz.roles")
        subject = Subject.of(loader(user_id))
        if subject.id != user_id:
            raise AuthzInputError(
                f"the authz.roles loader returned the subject {subject.id!r} for another user"
            )
        return subject

    async def _subject(self, who: object) -> Subject:
        if isinstance(who, str):
            return await self.subject_for(who)
        return Subject.of(who)

    def _subject_sync(self, who: object) -> Subject:
        if isinstance(who, str):
            return self.subject_for_sync(who)
        return Subject.of(who)

    # -- checks ----------------------------------------------------------------------------

    async def check(
        self,
        who: Subject | Mapping[str, object] | str,
        action: str,
        resource: object = None,
        context: Mapping[str, object] | None = None,
        *,
        client_ip: str | None = None,
    ) -> Decision:
        """The decision for ``who`` (a Subject, the guide's dict, or a user id whose roles
        are read) doing ``action`` on ``resource`` (a Resource, the guide's dict, a type name,
        or ``None``); a denial is audited."""
        subject = await self._subject(who)
        return self.decide(subject, action, resource, context, client_ip=client_ip)

    def check_sync(
        self,
        who: Subject | Mapping[str, object] | str,
        action: str,
        resource: object = None,
        context: Mapping[str, object] | None = None,
        *,
        client_ip: str | None = None,
    ) -> Decision:
        """:meth:`check` for WSGI apps."""
        subject = self._subject_sync(who)
        return self.decide(subject, action, resource, context, client_ip=client_ip)

    async def require(
        self,
        who: Subject | Mapping[str, object] | str,
        action: str,
        resource: object = None,
        context: Mapping[str, object] | None = None,
        *,
        client_ip: str | None = None,
    ) -> Decision:
        """:meth:`check`, raising :class:`~bastion.errors.Forbidden` on a denial."""
        return _required(await self.check(who, action, resource, context, client_ip=client_ip))

    def require_sync(
        self,
        who: Subject | Mapping[str, object] | str,
        action: str,
        resource: object = None,
        context: Mapping[str, object] | None = None,
        *,
        client_ip: str | None = None,
    ) -> Decision:
        """:meth:`require` for WSGI apps."""
        return _required(self.check_sync(who, action, resource, context, client_ip=client_ip))

    def decide(
        self,
        subject: Subject,
        action: str,
        resource: object = None,
        context: Mapping[str, object] | None = None,
        *,
        client_ip: str | None = None,
    ) -> Decision:
        """The decision for a loaded ``subject`` (no I/O); a denial is audited."""
        decision = self.engine.evaluate(subject, resource, action, context)
        if not decision.allowed:
            self.audit_denial(decision, client_ip=client_ip)
        return decision

    def filter(
        self,
        subject: Subject | Mapping[str, object],
        action: str,
        resource_type: str,
        context: Mapping[str, object] | None = None,
    ) -> Any:
        """The residual filter over ``resource_type`` rows ``subject`` may ``action``
        (:meth:`Policy.filter <bastion.core.authz.policy.Policy.filter>`)."""
        return self.engine.filter(Subject.of(subject), action, resource_type, context)

    # -- the adapters' gate ----------------------------------------------------------------

    async def gate(
        self,
        user: RequestUser | None,
        permissions: Iterable[str],
        *,
        resource: object = None,
        context: Mapping[str, object] | None = None,
        subject: Subject | None = None,
        client_ip: str | None = None,
    ) -> Verdict:
        """What an adapter answers for a request of ``user`` (``None``: nobody signed in, a
        401) needing every one of ``permissions``: status 0 to go on, else 403 with the
        first denial's reason. ``subject``: already loaded for this request."""
        if user is None:
            return self._unauthenticated(permissions, client_ip)
        try:
            if subject is not None and subject.id == user.id:
                return self._judge(subject, permissions, resource, context, client_ip)
            assignments, known = self.assignments, self._known
            if assignments is None or known is None:
                subject = self._loaded(user.id)
                return self._judge(subject, permissions, resource, context, client_ip)
            if self._inline:  # a memory store: no await, no coroutine
                raw = assignments.raw_sync(user.id)
            else:
                raw = await assignments.raw(user.id)
            entry = known.get(user.id, raw, user.version)
            if resource is None and type(permissions) is tuple:
                return self._judge_known(entry, permissions, context, client_ip)
            return self._judge(entry.subject, permissions, resource, context, client_ip)
        except AuthzInputError as exc:
            return self._bad_input(user, permissions, exc, client_ip)

    def kept(self, user: RequestUser | None, permissions: tuple[str, ...]) -> Verdict | None:
        """The passing verdict kept for ``user``'s type-level check of ``permissions``, with
        the user's record read now from a store whose reads never block (memory); ``None``
        when :meth:`gate` must decide (another store, nobody signed in, a check not made or
        not passed yet, a malformed user id). Synchronous: the FastAPI dependency answers a
        repeat check without a coroutine of its own. A carried version above the store's is
        :class:`~bastion.errors.StoreCorrupt`, as in :meth:`gate`."""
        known = self._known
        if user is None or known is None or not self._inline or self.assignments is None:
            return None
        try:
            entry = known.get(user.id, self.assignments.raw_sync(user.id), user.version)
        except AuthzInputError:
            return None  # gate() answers it (authz_bad_input, audited)
        return entry.passed.get(permissions)

    def gate_sync(
        self,
        user: RequestUser | None,
        permissions: Iterable[str],
        *,
        resource: object = None,
        context: Mapping[str, object] | None = None,
        subject: Subject | None = None,
        client_ip: str | None = None,
    ) -> Verdict:
        """:meth:`gate` for WSGI apps."""
        if user is None:
            return self._unauthenticated(permissions, client_ip)
        try:
            if subject is not None and subject.id == user.id:
                return self._judge(subject, permissions, resource, context, client_ip)
            assignments, known = self.assignments, self._known
            if assignments is None or known is None:
                subject = self._loaded(user.id)
                return self._judge(subject, permissions, resource, context, client_ip)
            entry = known.get(user.id, assignments.raw_sync(user.id), user.version)
            if resource is None and type(permissions) is tuple:
                return self._judge_known(entry, permissions, context, client_ip)
            return self._judge(entry.subject, permissions, resource, context, client_ip)
        except AuthzInputError as exc:
            return self._bad_input(user, permissions, exc, client_ip)

    def _judge_known(
        self,
        entry: Known,
        permissions: tuple[str, ...],
        context: Mapping[str, object] | None,
        client_ip: str | None,
    ) -> Verdict:
        """:meth:`_judge` of a type-level check for a subject read from the store, through
        the passing verdicts kept beside it (:mod:`bastion.authz._known`)."""
        verdict = entry.passed.get(permissions)
        if verdict is None:
            verdict = self._judge(entry.subject, permissions, None, context, client_ip)
            if verdict.status == 0 and all(self.engine.subject_only(p) for p in permissions):
                entry.keep(permissions, verdict)
        return verdict

    def _judge(
        self,
        subject: Subject,
        permissions: Iterable[str],
        resource: object,
        context: Mapping[str, object] | None,
        client_ip: str | None,
    ) -> Verdict:
        decision: Decision | None = None
        for permission in permissions:
            decision = self.decide(subject, permission, resource, context, client_ip=client_ip)
            if not decision.allowed:
                return Verdict(403, denied_refusal(decision.reason.value), subject, decision)
        return Verdict(0, None, subject, decision)

    def _bad_input(
        self,
        user: RequestUser,
        permissions: Iterable[str],
        exc: AuthzInputError,
        client_ip: str | None,
    ) -> Verdict:
        """The answer when the request's user id (one the store refuses: too long, a lone
        surrogate) or the resource the app loaded (an owner that is not text) cannot be
        checked: the check denies (403 ``authz_bad_input``), never a 500 and never a
        guess. The audit event names the kind of problem, never the value."""
        self._auditor.emit(
            EventName.AUTHZ_FAIL,
            outcome=Outcome.BLOCKED,
            user=user.id,
            client_ip=client_ip,
            details={
                "reason": BAD_INPUT.error,
                "action": ", ".join(permissions),
                "problem": type(exc).__name__,
            },
        )
        return Verdict(403, BAD_INPUT)

    def _unauthenticated(self, permissions: Iterable[str], client_ip: str | None) -> Verdict:
        wanted = ", ".join(permissions) or "this route"
        decision = Decision(
            allowed=False, reason=AuthzReason.UNAUTHENTICATED, action=wanted, subject=_ANYONE
        )
        self.audit_denial(decision, client_ip=client_ip)
        return Verdict(401, UNAUTHENTICATED, None, decision)

    def audit_route(
        self,
        outcome: RouteOutcome,
        *,
        method: str,
        path: str,
        user: RequestUser | None,
        client_ip: str | None = None,
    ) -> None:
        """Audit a refusal of the route table: ``authz_fail`` for ``no_route_rule``,
        ``input_validation_fail`` for a path or method override it would not read."""
        refusal = outcome.refusal
        if refusal is None:
            return
        details: dict[str, DetailValue] = {
            "reason": refusal.error,
            "method": method,
            "path": path,
            "problem": outcome.problem,
        }
        name = EventName.AUTHZ_FAIL if outcome.status == 403 else EventName.INPUT_VALIDATION_FAIL
        self._auditor.emit(
            name,
            outcome=Outcome.BLOCKED,
            user=None if user is None else user.id,
            client_ip=client_ip,
            details=details,
        )

    def audit_denial(self, decision: Decision, *, client_ip: str | None = None) -> None:
        """Emit ``authz_fail`` for ``decision`` (and log a condition that errored). The
        explanation names "the user", never the id: the Auditor hashes ``user`` so that a
        leaked log cannot be read back with a list of user names, and a clear-text id beside
        it would undo that."""
        anonymous = decision.subject == _ANYONE
        explanation = (decision if anonymous else replace(decision, subject=_USER)).explain()
        if decision.reason is AuthzReason.CONDITION_ERROR:
            _LOGGER.warning("authorization condition could not be evaluated: %s", explanation)
        details: dict[str, DetailValue] = {
            "reason": decision.reason.value,
            "action": decision.action,
            "resource": decision.resource,
            "rule": decision.rule,
            "role": decision.role,
            "condition": decision.condition,
            "explanation": explanation,
        }
        self._auditor.emit(
            EventName.AUTHZ_FAIL,
            outcome=Outcome.BLOCKED,
            user=None if anonymous else decision.subject,
            client_ip=client_ip,
            details={k: v for k, v in details.items() if v is not None},
        )


def _required(decision: Decision) -> Decision:
    if not decision.allowed:
        raise Forbidden(decision.explain(), decision=decision)
    return decision
