"""Sign in with the local provider: the demo's OpenID Connect routes and its account hook.

``bastion demo --oidc-provider`` starts the local provider (:mod:`bastion.demo.local_provider`)
and gives the demo its :class:`~bastion.oidc.Provider` named ``local``. The demo then mounts
bastion's own routes (:func:`bastion.oidc.starlette.oidc_routes`), nothing of its own in the
flow:

* ``GET /auth/local/login``: ``302`` to the provider with ``state``, ``nonce``,
  ``code_challenge`` and ``code_challenge_method=S256`` (the state stored server-side, single
  use, bound to this browser's pre-login session);
* ``GET /auth/local/callback``: checked, the code exchanged, the ID token verified, then
  ``session.login()`` (a new session ID and CSRF secret) and ``303`` to ``/account``.

:class:`ProviderAccounts` is the account hook: it maps the provider's ``(iss, sub)`` to a demo
account, never the e-mail or the provider's user name, and creates the account on the first
sign-in. A provider user called ``demo`` therefore gets a new account (``demo-3f9a1c``), not
the seeded local ``demo``: a user name chosen at another site identifies nobody here. The
local provider's issuer names its port, drawn at each start, so with a store that outlives the
demo (the default SQLite file) each start's provider is another issuer and its ``alice`` another
account, exactly as two providers' users would be.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import TYPE_CHECKING, Any, Final

from starlette.routing import Mount, Route

from bastion.asgi import get_session
from bastion.core.audit import EventName, Outcome
from bastion.core.throttle import normalize_username
from bastion.demo.app import SEEDING_ACTOR
from bastion.demo.users import User, valid_username
from bastion.errors import StoreBusy
from bastion.oidc.starlette import oidc_routes
from bastion.passwords import generate_password

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from bastion.demo.app import DemoApp
    from bastion.oidc import Identity

__all__ = ["LINK_PREFIX", "PROVIDER_NAME", "ProviderAccounts", "oidc_mount"]

PROVIDER_NAME: Final = "local"
"""The provider's name in the routes: ``/auth/local/login``, ``/auth/local/callback``."""
LINK_PREFIX: Final = "demo:oidc:"
"""Store key prefix of the links from a provider identity to a demo account."""
_NAME_ATTEMPTS: Final = 8


def link_key(issuer: str, subject: str) -> str:
    """The store key of ``(issuer, subject)``'s link (a digest: both are the provider's text)."""
    digest = hashlib.sha256(json.dumps([issuer, subject]).encode("utf-8")).hexdigest()
    return LINK_PREFIX + digest


class ProviderAccounts:
    """The account hook: the demo account of a provider identity, found or created.

    The link ``(iss, sub) -> account`` is one store record, written by compare-and-set, so
    two first sign-ins of one identity at once end on one account. A new account gets the
    ``user`` role and an unusable random password (it signs in through the provider; a
    password reset is the way to a local password), and is audited as ``user_created``.
    """

    __slots__ = ("_demo",)

    def __init__(self, demo: DemoApp) -> None:
        self._demo = demo

    async def __call__(self, identity: Identity) -> str:
        store = self._demo.store
        key = link_key(identity.issuer, identity.subject)
        raw = await store.get(key)
        linked = _linked_name(raw)
        if linked is not None and await self._demo.users.get(linked) is not None:
            return linked
        name = await self._create(identity)
        record = json.dumps(
            {"username": name, "issuer": identity.issuer, "subject": identity.subject}
        ).encode("utf-8")
        if await store.compare_and_set(key, raw, record):
            return name
        # Another sign-in of the same identity linked first: theirs is the account. The one
        # made here stays unused (no one knows its password, nothing links to it).
        winner = _linked_name(await store.get(key))
        if winner is None:
            raise StoreBusy("the provider identity's link kept changing; gave up (503)")
        return winner

    async def _create(self, identity: Identity) -> str:
        demo = self._demo
        base = _base_name(identity)
        password_hash = await demo.hasher.ahash(generate_password(24))
        for attempt in range(_NAME_ATTEMPTS):
            name = base if attempt == 0 else f"{base[:25]}-{secrets.token_hex(3)}"
            user = User(username=name, password_hash=password_hash, created_at=demo.clock.now())
            if await demo.users.create(user):
                await demo.assignments.set_role(SEEDING_ACTOR, name, "user", may_administer=True)
                demo.auditor.emit(
                    EventName.USER_CREATED,
                    outcome=Outcome.SUCCESS,
                    user=name,
                    details={"method": "oidc", "provider": identity.provider},
                )
                return name
        raise StoreBusy("no free account name for the provider's user; gave up (503)")


def _linked_name(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        data: Any = json.loads(raw)
    except ValueError:
        return None
    name = data.get("username") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def _base_name(identity: Identity) -> str:
    """A readable account name from the provider's ``preferred_username`` when it is a valid
    demo name, otherwise ``oidc-<random>``. Only a suggestion: a taken name gets a random
    suffix, never the existing account."""
    wanted = identity.claims.get("preferred_username")
    if isinstance(wanted, str):
        name = normalize_username(wanted)
        if valid_username(name) and len(name) <= 25:
            return name
    return f"oidc-{secrets.token_hex(3)}"


def oidc_mount(demo: DemoApp) -> Mount:
    """``/auth``: bastion's routes over ``demo.runtime.oidc`` (login, callback, and any route
    bastion adds later), each wrapped once.

    After a successful sign-in (the callback's ``303``) the session gets the user's permission
    version (``runtime.authz.stamp``), as the password login does. A refusal meant for a person
    (bastion's plain-text answer, not the JSON one a program asked for) becomes the demo's
    error page with the same status, message and ``Retry-After``."""
    routes = oidc_routes(demo.runtime.oidc, on_identity=ProviderAccounts(demo))
    return Mount("/auth", routes=[_wrapped(demo, route) for route in routes])


def _wrapped(demo: DemoApp, route: Route) -> Route:
    endpoint = route.endpoint
    stamps = route.name == "oidc_callback"

    async def handle(request: Request) -> Response:
        response: Response = await endpoint(request)
        if stamps and response.status_code == 303:
            session = get_session(request)
            if session.user_id is not None:
                await demo.runtime.authz.stamp(session, str(session.user_id))
        return _as_page(demo, request, response)

    return Route(route.path, handle, methods=route.methods, name=route.name)


def _as_page(demo: DemoApp, request: Request, response: Response) -> Response:
    if response.status_code < 400 or not (response.media_type or "").startswith("text/plain"):
        return response
    message = bytes(response.body).decode("utf-8", "replace")
    page = demo.error_page(
        request, None, response.status_code, message, response.headers.get("retry-after")
    )
    page.headers["cache-control"] = "no-store"
    return page
