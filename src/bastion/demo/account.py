"""The account's own data: revoke an API key, export everything, delete the account.

* ``POST /account/api-keys/{key_id}/revoke``: revokes one of the caller's keys at once
  (``authn_token_revoked``, the guide's ``API_KEY_REVOKED``). Another user's key id is answered
  exactly like an unknown one (404, nothing done), so key ids cannot be probed for owners.
* ``GET /account/export``: the caller's data as JSON (the account record, the profile with the
  phone decrypted, the live sessions' count, API key ids and scopes, documents), sent with
  ``Cache-Control: no-store``; the password hash, the TOTP secret, recovery codes and keys are
  never in it. Audited as ``sensitive_read`` (the guide's ``DATA_EXPORT``).
* ``POST /account/delete``: the current password re-entered (a stolen session cookie alone
  cannot delete an account): revokes the user's API keys, ends every session, refresh family
  and access token (one epoch raise), removes the profile row, the documents, the roles and the
  account record, then ``user_deleted`` (the guide's ``ACCOUNT_DELETED``). A wrong password is
  a 403 page, an audited ``user_deleted`` failure, and nothing changes.

CSRF is checked by the demo's stack before any of these handlers runs, like every form of the
demo; the path is rate limited (``Rule("reauth", ...)`` in ``demo_config``) so the password
field is no oracle for a stolen session.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

from starlette.responses import JSONResponse, RedirectResponse, Response

from bastion import PasswordRejected
from bastion.asgi import get_session, load_session
from bastion.asgi.sessions import list_sessions
from bastion.core.audit import EventName, Outcome
from bastion.demo.documents import DOCUMENTS
from bastion.demo.support import read_form

if TYPE_CHECKING:
    from starlette.requests import Request

    from bastion.core.apikeys import APIKeyRecord
    from bastion.demo.app import DemoApp
    from bastion.demo.users import User

__all__ = ["DELETION_ACTOR", "EXPORT_VERSION", "AccountRoutes"]

DELETION_ACTOR: Final = "system:demo-account-deletion"
"""The actor of the role removal when an account deletes itself (no account has a ``:``)."""
EXPORT_VERSION: Final = 1
"""The ``format`` of the export document, raised when its shape changes."""
_KEY_ID: Final = re.compile(r"[0-9a-f]{16}", re.ASCII)


def _key_entry(record: APIKeyRecord, now: float) -> dict[str, Any]:
    """What the export says about one key: its id and metadata, never the key or its HMAC."""
    return {
        "key_id": record.key_id,
        "name": record.name,
        "scopes": list(record.scopes),
        "status": record.status_at(now).value,
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "revoked_at": record.revoked_at,
    }


class AccountRoutes:
    """The three routes of ``demo`` (see the module docstring)."""

    __slots__ = ("demo",)

    def __init__(self, demo: DemoApp) -> None:
        self.demo = demo

    def _client(self, request: Request) -> str | None:
        return request.client.host if request.client else None

    async def revoke_key(self, request: Request) -> Response:
        demo = self.demo
        user = await demo.current_user(request)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        key_id = str(request.path_params["key_id"])
        record = await demo.api_keys.get(key_id) if _KEY_ID.fullmatch(key_id) else None
        if record is None or record.owner != user.username:  # the same answer for both
            return demo.error_page(request, user, 404, "There is no such API key.")
        revoked = await demo.api_keys.revoke(key_id, client_ip=self._client(request))
        (await load_session(request))["flash"] = (
            f"API key {key_id} revoked." if revoked else f"API key {key_id} was already revoked."
        )
        return RedirectResponse("/account", status_code=303)

    async def export(self, request: Request) -> Response:
        demo = self.demo
        user = await demo.current_user(request)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        name = user.username
        now = demo.clock.now()
        stored = demo.profiles.table.get(name)
        token, bio = (None, "") if stored is None else stored
        phone, note = demo.profiles.phone_of(name, token)
        keys = await demo.api_keys.list_keys(name)
        sessions = len(await list_sessions(request, name))
        documents = await demo.documents.list(DOCUMENTS.c.owner_id == name)
        body = {
            "format": EXPORT_VERSION,
            "exported_at": now,
            "account": {
                "username": name,
                "role": user.role,
                "created_at": user.created_at,
                "totp_enabled": user.has_totp,
            },
            "profile": {"phone": phone, "phone_note": note, "bio": bio},
            "sessions": {"live": sessions},
            "api_keys": [_key_entry(record, now) for record in keys],
            "documents": [
                {"id": d.id, "title": d.title, "public": d.public, "locked": d.locked}
                for d in documents
            ],
        }
        demo.audit_event(
            request,
            EventName.SENSITIVE_READ,
            Outcome.SUCCESS,
            name,
            action="data_export",
            documents=len(documents),
        )
        return JSONResponse(
            body,
            headers={
                "Cache-Control": "no-store",
                "Content-Disposition": f'attachment; filename="bastion-demo-{name}.json"',
            },
        )

    async def delete(self, request: Request) -> Response:
        demo = self.demo
        user = await demo.current_user(request)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        form = await read_form(request)
        current = str(form.get("current_password", ""))
        try:
            confirmed = await demo.hasher.averify(user.password_hash, current)
        except PasswordRejected:  # longer than any password: wrong, without hashing it
            confirmed = False
        if not confirmed:
            demo.audit_event(
                request,
                EventName.USER_DELETED,
                Outcome.FAILURE,
                user.username,
                reason="current_password_wrong",
            )
            return demo.error_page(
                request,
                user,
                403,
                "The password you entered is wrong: the account was not deleted.",
                reason="current_password_wrong",
            )
        ended = await self._erase(request, user)
        demo.audit_event(
            request, EventName.USER_DELETED, Outcome.SUCCESS, user.username, sessions_ended=ended
        )
        get_session(request).logout()
        return RedirectResponse("/?deleted=1", status_code=303)

    async def _erase(self, request: Request, user: User) -> int:
        """Everything of ``user``, credentials first: if a later step fails (a 503), no key,
        session or token of the account still works. Returns the listed sessions ended."""
        demo = self.demo
        name = user.username
        client = self._client(request)
        for record in await demo.api_keys.list_keys(name):
            if record.revoked_at is None:
                await demo.api_keys.revoke(record.key_id, client_ip=client)
        ended = await demo.runtime.tokens.revoke_all(name)
        await demo.totp.forget(name)  # recovery codes and the wrong-code budget
        demo.profiles.table.delete(name)
        await demo.documents.delete_owned(name)
        await demo.assignments.set_roles(DELETION_ACTOR, name, (), may_administer=True)
        await demo.users.delete(name)
        return ended
