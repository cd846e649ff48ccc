"""The demo's authorization routes: documents under a policy, and role administration.

Routes (added to the demo's stable contract):

* ``GET /documents``: the documents the signed-in user may read, and a form to write one.
  The list is the policy's query filter run as SQL, never a filter in Python over every row.
* ``POST /documents`` (form ``title``, ``body``, ``public``, ``locked``, ``csrf_token``):
  needs ``documents:create``; answers 303 to ``/documents/{id}``.
* ``GET /documents/{id}``: the document, or 403 with the policy's reason.
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
from bastion.core.audit import Outcome
from bastion.demo.documents import BODY_MAX, DOCUMENTS, RESOURCE_TYPE, TITLE_MAX
from bastion.errors import Forbidden, StoreBusy

if TYPE_CHECKING:
    from starlette.requests import Request

    from bastion.core.authz.decision import Decision
    from bastion.demo.app import DemoApp
    from bastion.demo.users import User

__all__ = ["ROLES", "AccessRoutes"]

ROLES: Final = ("user", "moderator", "admin")
"""The roles an admin can give; ``user`` is also what a demotion sets."""


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
        may_create = await authz.check(subject, "documents:create", audit=False)
        return demo.page(request, "documents.html", user, rows=rows, may_create=bool(may_create))

    async def _create(self, request: Request, user: User, subject: object) -> Response:
        demo = self._demo
        decision = await demo.runtime.authz.check(subject, "documents:create")
        if not decision:
            return self._refused(request, user, decision)
        form = await request.form()
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
        demo = self._demo
        user = await demo.current_user(request)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        raw = request.path_params["document_id"]
        document = await demo.documents.get(int(raw)) if raw.isascii() and raw.isdigit() else None
        if document is None:
            return demo.error_page(request, user, 404, "There is no such document.")
        authz = demo.runtime.authz
        subject = await authz.subject_for(user.username)
        resource = document.resource()
        if request.method == "POST":
            decision = await authz.check(subject, "documents:write", resource)
            if not decision:
                return self._refused(request, user, decision)
            form = await request.form()
            body = str(form.get("body", ""))
            if len(body) > BODY_MAX:
                return demo.error_page(request, user, 400, f"At most {BODY_MAX} characters.")
            await demo.documents.set_body(document.id, body)
            return RedirectResponse(f"/documents/{document.id}", status_code=303)
        decision = await authz.check(subject, "documents:read", resource)
        if not decision:
            return self._refused(request, user, decision)
        may_write = await authz.check(subject, "documents:write", resource, audit=False)
        return demo.page(
            request, "document.html", user, document=document, may_write=bool(may_write)
        )

    async def roles(self, request: Request) -> Response:
        demo = self._demo
        user = await demo.current_user(request)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        authz = demo.runtime.authz
        subject = await authz.subject_for(user.username)
        decision = await authz.check(subject, "authz:admin")
        if not decision:
            return self._refused(request, user, decision)
        flash = None
        if request.method == "POST":
            form = await request.form()
            target = normalize_username(str(form.get("username", "")))
            role = str(form.get("role", ""))
            if role not in ROLES:
                return demo.error_page(request, user, 400, f"role must be one of {ROLES}.")
            if await demo.users.get(target) is None:
                return demo.error_page(request, user, 404, "There is no such account.")
            try:
                await authz.assignments.set_roles(
                    user.username, target, (role,), may_administer=True
                )
            except Forbidden as refused:
                return demo.error_page(request, user, 403, str(refused))
            except StoreBusy:
                return demo.error_page(request, user, 503, "Please try again.")
            demo.audit_event(request, "demo_role_set", Outcome.SUCCESS, user.username, role=role)
            flash = f"{target} is now {role}."
        rows = []
        for name in await demo.users.names():
            assignment = await authz.assignments.load(name)
            rows.append((name, demo.role_of(assignment.roles)))
        return demo.page(request, "admin_roles.html", user, rows=rows, roles=ROLES, flash=flash)
