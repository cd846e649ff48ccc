"""The demo's authorization routes: documents under a policy, and role administration.

Routes (added to the demo's stable contract):

* ``GET /documents``: the documents the signed-in user may read, and a form to write one.
  The list is the policy's query filter run as SQL, never a filter in Python over every row.
* ``POST /documents`` (form ``title``, ``body``, ``public``, ``locked``, ``csrf_token``):
  needs ``documents:create``; answers 303 to ``/documents/{id}``.
* ``GET /documents/{id}``: the document, or 403 with the policy's reason; a missing document
  answers that same 403 to whoever may not read it (its existence stays hidden), 404 to the
  others.
* ``POST /documents/{id}`` (form ``body``, ``csrf_token``): needs ``documents:write`` on that
  document as the table holds it (its owner and lock are the row's, never the form's).
* ``GET /admin/roles``: each user with their role; ``POST /admin/roles`` (form ``username``,
  ``role``, ``csrf_token``): sets the role (``user`` demotes). Both need ``authz:admin``; nobody
  changes their own role (bastion refuses it), and a demoted user loses access on their next
  request, because the permission version in their session is then older than the store's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from starlette.responses import RedirectResponse, Response

from bastion import normalize_username
from bastion.authz.sqlalchemy import to_sqlalchemy
from bastion.core.authz.subjects import Resource
from bastion.demo.documents import BODY_MAX, DOCUMENTS, RESOURCE_TYPE, TITLE_MAX
from bastion.demo.support import read_form
from bastion.engine.authz.record import ChangeKind
from bastion.errors import Forbidden

if TYPE_CHECKING:
    from starlette.requests import Request

    from bastion.core.authz.decision import Decision
    from bastion.core.authz.subjects import Subject
    from bastion.demo.app import DemoApp
    from bastion.demo.documents import Document
    from bastion.demo.users import User

__all__ = ["NOBODY", "ROLES", "AccessRoutes", "unseen"]

ROLES: Final = ("user", "moderator", "admin")
"""The roles an admin can give; ``user`` is also what a demotion sets."""


def role_of(roles: frozenset[str]) -> str:
    """The highest of the demo's roles in ``roles`` (``user`` when none)."""
    return next((role for role in reversed(ROLES) if role in roles), "user")


NOBODY: Final = " "
"""The owner of :func:`unseen` documents: text (a ``None`` owner would make the owner rule a
``condition_error``, not the ``condition_failed`` of another user's document) that no account
can have (user names are trimmed)."""


def unseen(raw_id: str) -> Resource | None:
    """What the policy checks for a document number with no row: a private, unlocked
    document of :data:`NOBODY`, so that it is refused exactly as another user's private one
    is. ``None`` for a path segment that is not a document number (the same rule as
    :meth:`~bastion.demo.documents.DocumentTable.find`): no row could ever be there."""
    if not (raw_id.isascii() and raw_id.isdigit()) or len(raw_id) > 18:
        return None
    return Resource(
        type=RESOURCE_TYPE,
        id=str(int(raw_id)),
        owner=NOBODY,
        attributes={"owner_id": NOBODY, "public": False, "locked": False},
    )


def _flag(value: object) -> bool:
    return str(value or "").lower() in {"1", "on", "true", "yes"}


class AccessRoutes:
    """The routes of the module docstring, on the demo's runtime."""

    __slots__ = ("_demo",)

    def __init__(self, demo: DemoApp) -> None:
        self._demo = demo

    def __repr__(self) -> str:
        return "AccessRoutes()"

    def _refused(self, request: Request, user: User, decision: Decision) -> Response:
        return self._demo.error_page(
            request, user, 403, f"Not allowed: {decision.explain()}", reason=decision.reason.value
        )

    async def documents(self, request: Request) -> Response:
        demo = self._demo
        user = await demo.current_user(request)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        authz = demo.runtime.authz
        subject = await authz.subject_for(user.username)
        if request.method == "POST":
            return await self._create(request, user, subject)
        where = to_sqlalchemy(authz.filter(subject, "documents:read", RESOURCE_TYPE), DOCUMENTS)
        rows = await demo.documents.list(where)
        may_create = authz.engine.allows(subject, None, "documents:create")  # no audit: a hint
        return demo.page(request, "documents.html", user, rows=rows, may_create=may_create)

    async def _create(self, request: Request, user: User, subject: Subject) -> Response:
        demo = self._demo
        decision = await demo.runtime.authz.check(subject, "documents:create")
        if not decision:
            return self._refused(request, user, decision)
        form = await read_form(request)
        title = str(form.get("title", "")).strip()
        body = str(form.get("body", ""))
        if not title or len(title) > TITLE_MAX or len(body) > BODY_MAX:
            return demo.error_page(
                request,
                user,
                400,
                f"A document needs a title of 1 to {TITLE_MAX} characters and a body of at "
                f"most {BODY_MAX}.",
            )
        document_id = await demo.documents.create(
            user.username,
            title,
            body,
            public=_flag(form.get("public")),
            locked=_flag(form.get("locked")),
            now=demo.clock.now(),
        )
        return RedirectResponse(f"/documents/{document_id}", status_code=303)

    async def document(self, request: Request) -> Response:
        """``GET``/``POST /documents/{id}``. Whether a document exists is itself something to
        read: a number with no row is checked as :func:`unseen` (a private document of
        nobody), so a user who may not read a document gets the same 403, reason and page
        whether it exists or not; only a user who could read it learns that it is missing
        (404). A path segment that cannot name a document at all is a 404 for everyone."""
        demo = self._demo
        user = await demo.current_user(request)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        raw_id = request.path_params["document_id"]
        document = await demo.documents.find(raw_id)
        resource = document.resource() if document is not None else unseen(raw_id)
        if resource is None:
            return demo.error_page(request, user, 404, "There is no such document.")
        authz = demo.runtime.authz
        subject = await authz.subject_for(user.username)
        client = request.client.host if request.client else None
        decision = await authz.check(subject, "documents:read", resource, client_ip=client)
        if not decision:
            return self._refused(request, user, decision)
        if document is None:
            return demo.error_page(request, user, 404, "There is no such document.")
        if request.method == "POST":
            return await self._edit(request, user, subject, document)
        may_write = authz.engine.allows(subject, resource, "documents:write")  # a hint only
        return demo.page(request, "document.html", user, document=document, may_write=may_write)

    async def _edit(
        self, request: Request, user: User, subject: Subject, document: Document
    ) -> Response:
        demo = self._demo
        client = request.client.host if request.client else None
        decision = await demo.runtime.authz.check(
            subject, "documents:write", document.resource(), client_ip=client
        )
        if not decision:
            return self._refused(request, user, decision)
        form = await read_form(request)
        body = str(form.get("body", ""))
        if len(body) > BODY_MAX:
            return demo.error_page(request, user, 400, f"At most {BODY_MAX} characters.")
        await demo.documents.set_body(document.id, body)
        return RedirectResponse(f"/documents/{document.id}", status_code=303)

    async def roles(self, request: Request) -> Response:
        demo = self._demo
        user = await demo.current_user(request)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        authz = demo.runtime.authz
        client = request.client.host if request.client else None
        decision = await authz.check(user.username, "authz:admin", client_ip=client)
        if not decision:
            return self._refused(request, user, decision)
        flash = None
        if request.method == "POST":
            form = await read_form(request)
            target = normalize_username(str(form.get("username", "")))
            role = str(form.get("role", ""))
            refused = await self._set_role(user.username, target, role, client)
            if refused is not None:
                status, message = refused
                return demo.error_page(request, user, status, message)
            flash = f"{target} is now {role}."
        names = await demo.users.names()
        assignments = await demo.assignments.load_many(names)
        rows = [(name, role_of(a.roles)) for name, a in zip(names, assignments, strict=True)]
        return demo.page(request, "admin_roles.html", user, rows=rows, roles=ROLES, flash=flash)

    async def _set_role(
        self, actor: str, target: str, role: str, client: str | None
    ) -> tuple[int, str] | None:
        """Give ``target`` the role ``role`` as ``actor``; the refusal, if any."""
        demo = self._demo
        if role not in ROLES:
            return 400, f"The role must be one of {', '.join(ROLES)}."
        if await demo.users.get(target) is None:
            return 404, "There is no such account."
        try:
            # The Authorizer checks that the actor holds authz:admin and is not the target
            # (SelfGrantRefused); every change is an authz_change event.
            await demo.runtime.authz.change(
                actor, target, ChangeKind.SET_ROLES, (role,), client_ip=client
            )
        except Forbidden as refused:
            return 403, str(refused)
        return None
