"""A real OpenID Provider on 127.0.0.1 for the OpenID Connect tests, and a tampering proxy.

The provider is panva's certified ``oidc-provider`` (the version pinned by
``src/bastion/demo/oidc_provider/package-lock.json``, installed by tests/node_tools.py with
``npm ci`` on the pinned Node of the dev extra), configured by the demo's
``oidc_provider/provider.mjs`` from what this module writes: two clients, signing keys, the
seeded accounts. It is reached only through :class:`TamperingProxy`, a threaded HTTP server
in this process whose origin is the provider's issuer: it forwards every request unchanged until
a test asks it to rewrite a response, which is how the tests get what a certified provider never
sends (a wrong ``iss``, an expired or unsigned ID token, garbage, an outage). Nothing mocks
bastion's HTTP client.

How a test uses it::

    from oidc_support import ALICE, complete_login, oidc_provider_fixture  # noqa: F401

    def test_sign_in(oidc_provider: OIDCProviderServer) -> None:
        client = oidc_provider.basic_client          # client_secret_basic
        # ... configure bastion with issuer=oidc_provider.issuer, client.client_id,
        # client.client_secret, redirect_uri=client.redirect_uris[0]
        with httpx.Client() as browser:
            callback = complete_login(browser, authorize_url, ALICE.username, ALICE.password)
        # callback: the redirect URI with code, state and iss (RFC 9207)

    def test_wrong_audience(oidc_provider: OIDCProviderServer) -> None:
        with oidc_provider.rewrite_id_token(claims={"aud": "someone-else"}):
            ...  # the code exchange through the proxy returns the forged ID token

Forgeries (each a context manager; outside it the proxy forwards unchanged)::

    oidc_provider.rewrite_id_token(claims={"iss": "http://evil"})     # signed with the OP's key
    oidc_provider.rewrite_id_token(claims={"nonce": DELETE})          # a claim removed
    oidc_provider.rewrite_id_token(claims=lambda c: {**c, "exp": c["iat"] - 60})  # expired
    oidc_provider.rewrite_id_token(header={"alg": "none"})            # unsigned
    oidc_provider.rewrite_id_token(header={"alg": "HS256"}, key=oidc_provider.public_key_pem)
    oidc_provider.rewrite_id_token(header={"kid": "x"}, key=new_private_jwk("x", "RS256"))
    oidc_provider.serve_extra_keys(jwk)   # /jwks also lists jwk's public half (key rotation)
    oidc_provider.respond("/token", status=200, body=b"garbage")      # or status=503
    oidc_provider.unreachable("/token")   # the connection is closed unanswered
    oidc_provider.proxy.requests          # [(method, path), ...] every request seen

Importing ``oidc_provider_fixture`` registers the session-scoped fixture ``oidc_provider``
(``oidc_provider_b``: a second provider with its own issuer, for mix-up tests). The default
clients accept the redirect URIs of :data:`DEFAULT_REDIRECT_URIS` (Starlette's and Flask's test
clients); :meth:`OIDCProviderServer.register_client` adds a client with the exact redirect URIs
of a server a test started. The ``private_key_jwt`` client's key pair is made here: the provider
gets the public JWKS, the test holds ``jwt_client.private_jwk``.

Without Node or the package the tests skip locally and fail under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pytest

import node_tools
from oidc_jose import (
    ec_key,
    jwt_parts,
    new_private_jwk,
    pkce_pair,
    public_jwk,
    rsa_key,
    sign_jwt,
)
from oidc_pages import ProviderPageError, complete_login, complete_logout
from oidc_proxy import Exchange, TamperingProxy, drop_connection

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from pathlib import Path


__all__ = [
    "ACCOUNTS",
    "ALICE",
    "DEFAULT_REDIRECT_URIS",
    "DELETE",
    "MALLORY",
    "Account",
    "Exchange",
    "OIDCClient",
    "OIDCProviderServer",
    "ProviderPageError",
    "TamperingProxy",
    "complete_login",
    "complete_logout",
    "drop_connection",
    "jwt_parts",
    "new_private_jwk",
    "oidc_provider_b_fixture",
    "oidc_provider_fixture",
    "pkce_pair",
    "public_jwk",
    "sign_jwt",
]

PROVIDER_SCRIPT = node_tools.OIDC_PROVIDER_DIR / "provider.mjs"
START_WITHIN = 15.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    """A seeded provider account: ``username`` is the login and the ``sub``."""

    username: str
    password: str
    email: str
    email_verified: bool
    name: str

    def claims(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "email_verified": self.email_verified,
            "name": self.name,
            "preferred_username": self.username,
        }


ALICE = Account(
    username="alice",
    password="alice-correct-horse-battery",
    email="alice@example.com",
    email_verified=True,
    name="Alice Example",
)
# An unverified e-mail equal to alice's: linking by it would hand alice's account to mallory.
MALLORY = Account(
    username="mallory",
    password="mallory-staple-tangerine",
    email="alice@example.com",
    email_verified=False,
    name="Mallory Example",
)
ACCOUNTS = (ALICE, MALLORY)

DEFAULT_REDIRECT_URIS = (
    "http://testserver/auth/local/callback",  # Starlette's and FastAPI's TestClient
    "http://localhost/auth/local/callback",  # Flask's test client
)


@dataclass(frozen=True, slots=True, kw_only=True)
class OIDCClient:
    """A client registered at the provider.

    ``client_secret`` is set for ``client_secret_basic``; ``private_jwk`` (a private JWK dict
    with ``kid`` and ``alg``) for ``private_key_jwt``, whose public half the provider holds.
    """

    client_id: str
    auth_method: str
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...] = ()
    client_secret: str | None = None
    private_jwk: dict[str, Any] | None = None

    def metadata(self) -> dict[str, Any]:
        """The client's registration as the provider reads it."""
        data: dict[str, Any] = {
            "client_id": self.client_id,
            "redirect_uris": list(self.redirect_uris),
            "post_logout_redirect_uris": list(self.post_logout_redirect_uris),
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": self.auth_method,
        }
        if self.client_secret is not None:
            data["client_secret"] = self.client_secret
        if self.private_jwk is not None:
            data["jwks"] = {"keys": [public_jwk(self.private_jwk)]}
            data["token_endpoint_auth_signing_alg"] = self.private_jwk["alg"]
        return data

    @property
    def private_key_pem(self) -> bytes:
        """``private_jwk`` as a PKCS#8 PEM (what some clients take instead of a JWK)."""
        from joserfc.jwk import import_key  # noqa: PLC0415

        if self.private_jwk is None:
            raise ValueError(f"{self.client_id} has no private key")
        pem: bytes = import_key(self.private_jwk).as_pem(private=True)
        return pem


DELETE = object()
"""A value in ``rewrite_id_token(claims=...)`` that removes the claim."""


class OIDCProviderServer:
    """``oidc-provider`` under Node on 127.0.0.1 behind a :class:`TamperingProxy`.

    ``issuer`` is the proxy's origin (``http://127.0.0.1:<port>``): discovery, the endpoints
    and the ``iss`` of tokens and of the authorization response (RFC 9207) all name it.
    ``upstream`` is the provider's own origin (bypassing the proxy). Start with
    :meth:`start` or ``with``; :meth:`stop` ends the Node process group and the proxy.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        redirect_uris: Sequence[str] = DEFAULT_REDIRECT_URIS,
        post_logout_redirect_uris: Sequence[str] = ("http://testserver/", "http://localhost/"),
        accounts: Sequence[Account] = ACCOUNTS,
        id_token_claims: bool = True,
        name: str = "op",
    ) -> None:
        self.workdir = workdir
        self.accounts = {account.username: account for account in accounts}
        self.id_token_claims = id_token_claims
        self.name = name
        self.signing_key = rsa_key(f"{name}-rs256")
        self.signing_key_es256 = ec_key(f"{name}-es256")
        self.admin_token = secrets.token_urlsafe(24)
        self.basic_client = OIDCClient(
            client_id=f"{name}-basic",
            auth_method="client_secret_basic",
            client_secret=secrets.token_urlsafe(32),
            redirect_uris=tuple(redirect_uris),
            post_logout_redirect_uris=tuple(post_logout_redirect_uris),
        )
        self.jwt_client = OIDCClient(
            client_id=f"{name}-jwt",
            auth_method="private_key_jwt",
            private_jwk=new_private_jwk(f"{name}-jwt-key"),
            redirect_uris=tuple(redirect_uris),
            post_logout_redirect_uris=tuple(post_logout_redirect_uris),
        )
        self.proxy = TamperingProxy()
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        return self.proxy.origin

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def upstream(self) -> str:
        if self._port is None:
            raise RuntimeError("the provider is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self) -> None:
        node = node_tools.node()
        modules = node_tools.oidc_provider_modules()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proxy.start()
        port_file = self.workdir / f"{self.name}.port"
        port_file.unlink(missing_ok=True)
        config = {
            "modules": str(modules),
            "issuer": self.issuer,
            "port": 0,
            "port_file": str(port_file),
            "admin_token": self.admin_token,
            "cookie_keys": [secrets.token_urlsafe(32)],
            "jwks": {
                "keys": [
                    self.signing_key.as_dict(private=True),
                    self.signing_key_es256.as_dict(private=True),
                ]
            },
            "clients": [self.basic_client.metadata(), self.jwt_client.metadata()],
            "accounts": {
                account.username: {"password": account.password, "claims": account.claims()}
                for account in self.accounts.values()
            },
            "conform_id_token_claims": not self.id_token_claims,
        }
        config_path = self.workdir / f"{self.name}.json"
        config_path.write_text(json.dumps(config), encoding="utf-8")
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [str(node), str(PROVIDER_SCRIPT), str(config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, ended as a whole by stop()
                env={**os.environ, "NODE_ENV": "test"},
            )
        try:
            self._port = self._wait_for_port(port_file)
            self.proxy.upstream = ("127.0.0.1", self._port)
            self._wait_for_discovery()
        except BaseException:
            self.stop()
            raise

    def _failed(self, why: str) -> None:
        """Node and the package are there (node_tools skipped or failed otherwise): a provider
        that does not start is a broken test setup, a failure everywhere, never a skip."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        pytest.fail(f"oidc-provider {why}: {text[-2000:]}")

    def _wait_for_port(self, port_file: Path) -> int:
        deadline = time.monotonic() + START_WITHIN
        assert self._process is not None
        while not port_file.exists():
            if self._process.poll() is not None:
                self._failed(f"exited with {self._process.returncode}")
            if time.monotonic() > deadline:
                self._failed(f"did not listen within {START_WITHIN} s")
            time.sleep(0.02)  # polling a starting process, not waiting for a time window
        return int(port_file.read_text(encoding="ascii"))

    def _wait_for_discovery(self) -> None:
        import httpx  # noqa: PLC0415

        response = httpx.get(self.discovery_url, timeout=5)
        if response.status_code != 200 or response.json().get("issuer") != self.issuer:
            self._failed(f"discovery answered {response.status_code}: {response.text[:300]}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        elif process is not None:
            process.wait()
        self.proxy.stop()

    def __enter__(self) -> OIDCProviderServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clients ---------------------------------------------------------------------------

    def register_client(
        self,
        *,
        redirect_uris: Sequence[str],
        auth_method: str = "client_secret_basic",
        post_logout_redirect_uris: Sequence[str] = (),
        client_id: str | None = None,
    ) -> OIDCClient:
        """A new client at the running provider (the admin endpoint of provider.mjs)."""
        import httpx  # noqa: PLC0415

        client_id = client_id or f"{self.name}-{secrets.token_hex(6)}"
        if auth_method in {"client_secret_basic", "client_secret_post"}:
            client = OIDCClient(
                client_id=client_id,
                auth_method=auth_method,
                client_secret=secrets.token_urlsafe(32),
                redirect_uris=tuple(redirect_uris),
                post_logout_redirect_uris=tuple(post_logout_redirect_uris),
            )
        elif auth_method == "private_key_jwt":
            client = OIDCClient(
                client_id=client_id,
                auth_method=auth_method,
                private_jwk=new_private_jwk(f"{client_id}-key"),
                redirect_uris=tuple(redirect_uris),
                post_logout_redirect_uris=tuple(post_logout_redirect_uris),
            )
        else:
            raise ValueError(
                f"auth_method {auth_method!r}: client_secret_basic, client_secret_post or "
                "private_key_jwt"
            )
        response = httpx.post(
            f"{self.upstream}/_admin/clients",
            json=client.metadata(),
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=5,
        )
        if response.status_code != 201:
            raise AssertionError(f"client registration refused: {response.text}")
        return client

    # -- tampering -------------------------------------------------------------------------

    @property
    def token_path(self) -> str:
        return "/token"

    def forge_id_token(
        self,
        id_token: str,
        *,
        claims: Mapping[str, Any] | Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        header: Mapping[str, Any] | None = None,
        key: Any = None,
    ) -> str:
        """``id_token`` with its claims and header edited, signed again.

        ``claims``: a mapping merged into the claims (:data:`DELETE` removes one), or a function
        of the claims returning new ones. ``header``: merged into the header (``{"alg":
        "none"}``, ``{"kid": ...}``). ``key``: the signing key; by default the provider's own
        key for the header's ``alg`` (``RS256``: the RSA key, ``ES256``: the EC key), so the
        signature verifies and only the edited claims are wrong.
        """
        old_header, old_claims = jwt_parts(id_token)
        if callable(claims):
            new_claims = claims(dict(old_claims))
        else:
            new_claims = dict(old_claims)
            for name, value in (claims or {}).items():
                if value is DELETE:
                    new_claims.pop(name, None)
                else:
                    new_claims[name] = value
        new_header = {**old_header, **(header or {})}
        if key is None:
            own = self.signing_key_es256 if new_header["alg"] == "ES256" else self.signing_key
            key = own
            if header is None or "kid" not in header:
                new_header["kid"] = own.kid
        return sign_jwt(new_header, new_claims, key)

    @contextlib.contextmanager
    def rewrite_id_token(
        self,
        *,
        claims: Mapping[str, Any] | Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        header: Mapping[str, Any] | None = None,
        key: Any = None,
    ) -> Iterator[list[str]]:
        """Within the block, the token endpoint's ``id_token`` is forged (see
        :meth:`forge_id_token`); yields the list of the forged tokens sent."""
        sent: list[str] = []

        def edit(exchange: Exchange) -> Exchange:
            if exchange.status != 200:
                return exchange
            body = json.loads(exchange.body)
            if "id_token" in body:
                body["id_token"] = self.forge_id_token(
                    body["id_token"], claims=claims, header=header, key=key
                )
                sent.append(body["id_token"])
            return replace(exchange, body=json.dumps(body).encode())

        with self.proxy.rewrite(self.token_path, edit):
            yield sent

    def respond(
        self,
        path: str,
        *,
        status: int = 200,
        body: bytes = b"",
        content_type: str = "application/json",
    ) -> contextlib.AbstractContextManager[None]:
        """Within the block, ``path`` answers ``status`` and ``body`` (garbage, an outage's 503)
        instead of the provider's answer."""

        def answer(exchange: Exchange) -> Exchange:
            return replace(
                exchange, status=status, body=body, headers=[("Content-Type", content_type)]
            )

        return self.proxy.rewrite(path, answer)

    def unreachable(self, path: str) -> contextlib.AbstractContextManager[None]:
        """Within the block, a request for ``path`` gets its connection closed unanswered."""
        return self.proxy.rewrite(path, drop_connection)

    @property
    def public_key_pem(self) -> bytes:
        """The provider's RSA public key as PEM: the secret of the ``HS256`` confusion attack
        (``rewrite_id_token(header={"alg": "HS256"}, key=oidc_provider.public_key_pem)``)."""
        pem: bytes = self.signing_key.as_pem(private=False)
        return pem

    def serve_extra_keys(self, *jwks: Mapping[str, Any]) -> contextlib.AbstractContextManager[None]:
        """Within the block, the JWKS endpoint also lists the public half of ``jwks`` (private
        JWK dicts): a key rotation, tokens signed with a new key (``forge_id_token(key=...)``)."""

        def add(exchange: Exchange) -> Exchange:
            document = json.loads(exchange.body)
            document["keys"] = [*document["keys"], *(public_jwk(jwk) for jwk in jwks)]
            return replace(exchange, body=json.dumps(document).encode())

        return self.proxy.rewrite("/jwks", add)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session", name="oidc_provider")
def oidc_provider_fixture(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OIDCProviderServer]:
    """The session's OpenID Provider (issuer ``oidc_provider.issuer``)."""
    with OIDCProviderServer(tmp_path_factory.mktemp("oidc-provider"), name="op") as server:
        yield server


@pytest.fixture(scope="session", name="oidc_provider_b")
def oidc_provider_b_fixture(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OIDCProviderServer]:
    """A second, independent provider (its own issuer, keys and clients): mix-up tests."""
    with OIDCProviderServer(tmp_path_factory.mktemp("oidc-provider-b"), name="op-b") as server:
        yield server
