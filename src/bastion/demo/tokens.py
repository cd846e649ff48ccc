"""The demo's token routes: a token endpoint for non-browser clients, and password reset.

Routes (added to the demo's stable contract):

* ``POST /api/token`` (form ``username``, ``password``, and ``totp`` when the account has it):
  an access token and a refresh token, as JSON (RFC 6749 section 5.1).
* ``POST /api/token/refresh`` (form ``refresh_token``): a new pair from the same family; a
  refresh token presented again after it was rotated answers 401 and revokes its family.
* ``POST /api/token/revoke`` (form ``token``): revokes an access token or a refresh family
  (RFC 7009: 200 whether or not the token was known).
* ``GET /.well-known/jwks.json``: the public keys access tokens are signed with.
* ``GET`` / ``POST /reset-password`` (form ``username``): a one-time reset link, put on the
  account's page ``GET /outbox`` (the demo sends no e-mail). The answer is the same whether or
  not the account exists.
* ``GET`` / ``POST /reset-password/{token}`` (form ``new_password``): the link's form, and the
  change itself, which ends every session, refresh family and access token of the account.

The three ``/api/token*`` routes read no cookie and set none, so a client calling them without
cookies (``curl``) needs no CSRF token; with cookies (the page's own script) the CSRF checks
apply as everywhere else.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

from starlette.responses import JSONResponse, RedirectResponse, Response

from bastion import PasswordRejected, normalize_username
from bastion.core.audit import EventName, Outcome
from bastion.core.tokens.principal import BearerRequest
from bastion.core.tokens.reasons import TokenReason, TokenRejected
from bastion.demo.support import read_form
from bastion.passwords import check_new_password

if TYPE_CHECKING:
    from starlette.requests import Request

    from bastion.demo.app import DemoApp
    from bastion.demo.users import User

__all__ = ["RESET_PURPOSE", "Outbox", "TokenRoutes"]

RESET_PURPOSE: Final = "password-reset"
RESET_LIFETIME: Final = 15 * 60.0
OUTBOX_PER_USER: Final = 5
OUTBOX_USERS: Final = 1000
NO_STORE: Final = {"Cache-Control": "no-store"}


@dataclass(frozen=True, slots=True)
class Message:
    sent_at: float
    subject: str
    link: str


class Outbox:
    """The demo's stand-in for e-mail: the last few messages per account, in this process.

    Bounded both ways (messages per account, accounts), so anonymous reset requests cannot
    grow it without limit; the oldest go first.
    """

    __slots__ = ("_boxes",)

    def __init__(self) -> None:
        self._boxes: OrderedDict[str, deque[Message]] = OrderedDict()

    def send(self, username: str, message: Message) -> None:
        box = self._boxes.pop(username, None) or deque(maxlen=OUTBOX_PER_USER)
        box.append(message)
        self._boxes[username] = box
        while len(self._boxes) > OUTBOX_USERS:
            self._boxes.popitem(last=False)

    def read(self, username: str) -> list[Message]:
        return list(reversed(self._boxes.get(username, ())))


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=NO_STORE
    )


class TokenRoutes:
    """The handlers above, bound to the demo (its users, throttle, TOTP and runtime)."""

    __slots__ = ("demo", "outbox")

    def __init__(self, demo: DemoApp) -> None:
        self.demo = demo
        self.outbox = Outbox()

    # -- the token endpoint -----------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        demo = self.demo
        form = await read_form(request)
        raw_name, password = str(form.get("username", "")), str(form.get("password", ""))
        code = str(form.get("totp", "")).strip()
        client = request.client.host if request.client else "unknown"
        try:
            check = await demo.check_credentials(raw_name, password, code, client, device=None)
        except PasswordRejected:
            return _oauth_error(400, "invalid_request", "the password is too long")
        if check.throttled is not None:
            response = _oauth_error(429, "slow_down", "too many failed sign-ins; wait and retry")
            response.headers["Retry-After"] = check.throttled
            return response
        if check.username is None:
            description = (
                "this account needs its authenticator code in the totp field"
                if check.needs_code
                else "wrong user name, password or code"
            )
            return _oauth_error(400, "invalid_grant", description)
        try:
            pair = await demo.runtime.tokens.issue(
                check.username, scopes=(demo.api_scope,), authenticated_at=check.checked_at
            )
        except TokenRejected:  # a revocation came in while the password was checked
            return _oauth_error(400, "invalid_grant", "sign in again")
        return Response(pair.to_json(), media_type="application/json", headers=NO_STORE)

    async def refresh(self, request: Request) -> Response:
        form = await read_form(request)
        token = str(form.get("refresh_token", ""))
        try:
            pair = await self.demo.runtime.tokens.refresh(token)
        except TokenRejected as error:
            description = (
                "this refresh token was already used: its family is revoked, sign in again"
                if error.reason is TokenReason.REUSED
                else "the refresh token is not valid"
            )
            return _oauth_error(401, "invalid_grant", description)
        return Response(pair.to_json(), media_type="application/json", headers=NO_STORE)

    async def revoke(self, request: Request) -> Response:
        form = await read_form(request)
        token = str(form.get("token", ""))
        if token:
            await self.demo.runtime.tokens.revoke(token)
        return Response(b"", status_code=200, headers=NO_STORE)

    async def jwks(self, _request: Request) -> Response:
        return Response(
            self.demo.runtime.tokens.jwks(),
            media_type="application/jwk-set+json",
            headers={"Cache-Control": "public, max-age=300"},
        )

    async def bearer_user(self, request: Request) -> str | TokenRejected:
        """The user of the request's access token, or why it was refused (for ``/api/me``)."""
        tokens = self.demo.runtime.tokens
        try:
            principal = await tokens.authenticate(
                BearerRequest(
                    authorization=request.headers.get("authorization"),
                    dpop=request.headers.get("dpop"),
                    method=request.method,
                    url=str(request.url.replace(query="", fragment="")),
                )
            )
        except TokenRejected as error:
            return error
        if self.demo.api_scope not in principal.scopes:
            return TokenRejected(TokenReason.INSUFFICIENT_SCOPE)
        return principal.subject

    # -- password reset ---------------------------------------------------------------------

    async def reset_request(self, request: Request) -> Response:
        demo = self.demo
        user = await demo.current_user(request)
        if request.method != "POST":
            return demo.page(request, "reset_request.html", user, sent=False)
        form = await read_form(request)
        name = normalize_username(str(form.get("username", "")))
        account = await demo.users.get(name) if name else None
        if account is not None:
            token = await demo.runtime.tokens.onetime.issue(
                RESET_PURPOSE, account.username, state=account.password_hash, ttl=RESET_LIFETIME
            )
            link = f"{request.url.scheme}://{request.url.netloc}/reset-password/{token}"
            self.outbox.send(
                account.username, Message(time.time(), "Reset your bastion demo password", link)
            )
        # The same answer for every name: the page does not tell who has an account.
        return demo.page(request, "reset_request.html", user, sent=True)

    async def outbox_page(self, request: Request) -> Response:
        demo = self.demo
        user = await demo.current_user(request)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        return demo.page(request, "outbox.html", user, messages=self.outbox.read(user.username))

    async def _reset_account(self, token: str) -> User | None:
        """The account a live reset link belongs to, checked against the account's current
        password hash (a link dies when the password changes); not spent by looking."""
        demo = self.demo
        onetime = demo.runtime.tokens.onetime
        try:
            username = await onetime.owner(token, purpose=RESET_PURPOSE)
            account = await demo.users.get(username)
            if account is None:
                return None
            await onetime.peek(token, purpose=RESET_PURPOSE, state=account.password_hash)
        except TokenRejected:
            return None
        return account

    async def reset_form(self, request: Request) -> Response:
        demo = self.demo
        token = request.path_params["token"]
        user = await demo.current_user(request)
        account = await self._reset_account(token)
        if account is None:
            return demo.error_page(
                request,
                user,
                400,
                "This reset link is not valid: it was used, it expired, or "
                "the password was changed since it was sent. Ask for a new one.",
            )
        if request.method != "POST":
            return demo.page(request, "reset_form.html", user, account=account.username)
        form = await read_form(request)
        new = str(form.get("new_password", ""))
        errors: list[str] = []
        try:
            result = await check_new_password(
                demo.policy,
                new,
                user_inputs=(account.username,),
                has_second_factor=account.has_totp,
            )
            errors += list(result.messages)
        except PasswordRejected as exc:
            errors.append(str(exc))
        if errors:
            return demo.page(
                request, "reset_form.html", user, 400, account=account.username, errors=errors
            )
        new_hash = await demo.hasher.ahash(new)
        try:
            username = await demo.runtime.tokens.onetime.consume(
                token, purpose=RESET_PURPOSE, state=account.password_hash
            )
        except TokenRejected:  # a parallel request spent it first, or the password changed
            return demo.error_page(request, user, 400, "This reset link was just used.")
        # Only over the hash the link was bound to: a change made meanwhile is not overwritten.
        changed = await demo.users.update(
            username,
            lambda u: (
                replace(u, password_hash=new_hash)
                if u.password_hash == account.password_hash
                else u
            ),
        )
        if changed is None or changed.password_hash != new_hash:
            return demo.error_page(request, user, 400, "The password changed meanwhile.")
        ended = await demo.runtime.tokens.revoke_all(username)
        demo.audit_event(
            request,
            EventName.AUTHN_PASSWORD_CHANGE,
            Outcome.SUCCESS,
            username,
            via="reset_link",
            revoked=ended,
        )
        return RedirectResponse("/login", status_code=303)
