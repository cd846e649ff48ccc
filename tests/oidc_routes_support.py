"""Apps for the route tests of plain OAuth 2.0 providers, tokens mode and RP-initiated logout.

:class:`Site` is one application: a memory store, a frozen clock at the real time (the provider
stamps real times), a recording audit sink, an :class:`~bastion.oidc.OIDC` service for the
providers a test gives, and a Starlette app (:meth:`Site.starlette`) or a Flask app
(:meth:`Site.flask`) with bastion's sessions and CSRF in front and the sign-in routes mounted
under ``/auth``. ``/me`` answers the session's user, ``/csrf`` a CSRF token for a POST, and
(``login="tokens"``) ``/api/me`` the subject of a bearer access token.

:func:`register` adds a client at the real provider whose redirect URIs are these apps'
(``https://testserver`` for Starlette's client, ``https://localhost`` for Flask's).
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any

import httpx
from flask import Flask
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route

with warnings.catch_warnings():
    # Starlette announces its test client's move to httpx2 at import time; only that notice.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from bastion import Bastion, TokenPolicy
from bastion.asgi import csrf_token, load_session, protect
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.environment import Environment
from bastion.core.keys import KeyRing
from bastion.crypto import CryptoPolicy, DataKey
from bastion.flask import csrf_token as flask_csrf_token
from bastion.flask import protect as flask_protect
from bastion.flask import session as flask_session
from bastion.flask.oidc import oidc_blueprint
from bastion.oidc import OIDC, OIDCPolicy
from bastion.oidc.starlette import oidc_router
from bastion.starlette import principal
from bastion.stores.memory import MemoryStore
from bastion.testing.audit import RecordingAuditSink
from oidc_support import ALICE, complete_login

if TYPE_CHECKING:
    from collections.abc import Sequence

    from starlette.requests import Request

    from bastion.oidc import Identity, Provider
    from bastion.runtime import Runtime
    from oidc_support import Account, OIDCClient, OIDCProviderServer

__all__ = [
    "FLASK",
    "JSON",
    "STARLETTE",
    "Site",
    "TestClient",
    "register",
    "sign_in",
]

JSON = {"accept": "application/json"}
STARLETTE = "https://testserver"
FLASK = "https://localhost"


def register(
    provider: OIDCProviderServer,
    name: str = "local",
    *,
    auth_method: str = "client_secret_basic",
    post_logout: bool = True,
) -> OIDCClient:
    """A client at ``provider`` for the provider route ``name`` of both test apps."""
    return provider.register_client(
        redirect_uris=[f"{STARLETTE}/auth/{name}/callback", f"{FLASK}/auth/{name}/callback"],
        post_logout_redirect_uris=[f"{STARLETTE}/bye", f"{FLASK}/bye"] if post_logout else [],
        auth_method=auth_method,
    )


def sign_in(authorize: str, account: Account = ALICE) -> str:
    """The provider's redirect to the callback (its path and query) after ``account`` signs in
    on the provider's own pages."""
    with httpx.Client() as browser:
        callback = complete_login(browser, authorize, account.username, account.password)
    return callback.removeprefix(STARLETTE).removeprefix(FLASK)


class Site:
    """One application (see the module docstring)."""

    def __init__(
        self,
        providers: Sequence[Provider],
        *,
        login: str = "session",
        link: bool = False,
        crypto: bool = False,
    ) -> None:
        self.sink = RecordingAuditSink()
        self.clock = FrozenClock(time.time())
        self.store = MemoryStore()
        keyring = KeyRing.generate()
        self.auditor = Auditor(IdentifierHasher(keyring), self.clock, self.sink, aggregation=None)
        self.policy = OIDCPolicy(providers=tuple(providers), link_verified_email=link, login=login)
        tokens = TokenPolicy(issuer=STARLETTE, protect=("/api/*",)) if login == "tokens" else None
        # crypto=True: field encryption, so a session keeps its ID token (encrypted) for the
        # logout's id_token_hint; without it, no hint is kept. Built through the front door,
        # as an app builds it (runtime.oidc takes runtime.crypto).
        self.runtime: Runtime = Bastion(
            store=self.store,
            keyring=keyring,
            headers=None,
            auditor=self.auditor,
            clock=self.clock,
            environment=Environment.TEST,
            tokens=tokens,
            oidc=self.policy,
            crypto=CryptoPolicy(keys=DataKey.generate(1)) if crypto else None,
        ).build()
        self.crypto = self.runtime.crypto if crypto else None
        self.oidc = self.runtime.oidc
        self.users: dict[tuple[str, str], str] = {}
        self.seen: list[Identity] = []
        self.by_email = False

    def close(self) -> None:
        self.oidc.close()
        self.runtime.close()

    def hook(self, identity: Identity) -> str | None:
        """Find or create the user of (``iss``, ``sub``); with ``by_email``, the e-mail that
        ``oidc.linkable_email`` allows instead. Every identity is kept in ``seen``."""
        self.seen.append(identity)
        if self.by_email:
            return self.oidc.linkable_email(identity)
        key = (identity.issuer, identity.subject)
        return self.users.setdefault(key, f"user-{len(self.users) + 1}")

    def events(self, name: str) -> list[dict[str, Any]]:
        return [dict(event.details) for event in self.sink.events if event.name == name]

    def fails(self) -> list[dict[str, Any]]:
        return self.events("authn_login_fail")

    # -- apps ------------------------------------------------------------------------------

    def starlette(self, oidc: OIDC | None = None) -> TestClient:
        """The Starlette app's test client; ``oidc`` serves the routes instead of
        :attr:`oidc` (a second service on the same store: a fresh metadata cache)."""
        service = self.oidc if oidc is None else oidc

        async def me(request: Request) -> JSONResponse:
            session = await load_session(request)
            return JSONResponse({"user": session.user_id})

        async def token(request: Request) -> PlainTextResponse:
            return PlainTextResponse(csrf_token(request))

        async def api_me(request: Request) -> JSONResponse:
            found = principal(request)
            return JSONResponse({"sub": None if found is None else found.subject})

        app = Starlette(
            routes=[
                Route("/me", me),
                Route("/csrf", token),
                Route("/api/me", api_me),
                Mount("/auth", oidc_router(service, on_identity=self.hook)),
            ]
        )
        return TestClient(protect(app, self.runtime), base_url=STARLETTE)

    def flask(self) -> Flask:
        app = Flask(__name__)
        flask_protect(app, self.runtime)
        app.register_blueprint(oidc_blueprint(self.oidc, on_identity=self.hook))

        @app.get("/me")
        def me() -> dict[str, Any]:
            return {"user": flask_session.user_id}

        @app.get("/csrf")
        def token() -> str:
            return flask_csrf_token()

        return app
