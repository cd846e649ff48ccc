"""A small HMAC-signed access-token verifier for the HTTP tests of ``BearerVerifier``.

It stands in for bastion's token service (JWTCodec plus the deny-list) until that lands: the
lead switches these tests to the real service after the merge. It is a real verifier, not a
mock: tokens are signed with HMAC-SHA256 and checked in constant time, ``exp`` is checked on a
fixed clock, and every ``jti`` is looked up in a deny-list in a real store (memory, or a Redis
server the outage tests stop). A DPoP-bound token (``cnf_jkt``) sent as ``Bearer`` is
``DPOP_REQUIRED``; with the ``DPoP`` scheme the proof header must read ``proof:<jkt>``
(the proof's own checks belong to helper ``dpop``'s verifier and are not under test here).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import TYPE_CHECKING

from bastion.core.clock import FrozenClock
from bastion.core.tokens.bearer import parse_authorization
from bastion.core.tokens.principal import BearerRequest, Principal
from bastion.core.tokens.reasons import TokenReason, TokenRejected

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from bastion.asgi.types import Message, Scope
    from bastion.stores.base import Store

KEY = b"k" * 32
NOW = 1_700_000_000.0
REALM = "bastion tests"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(
    subject: str = "alice",
    *,
    scopes: Iterable[str] = ("read",),
    jti: str = "t-1",
    expires_at: float = NOW + 300,
    cnf_jkt: str | None = None,
    key: bytes = KEY,
) -> str:
    """A signed test token: ``t1.<claims>.<mac>`` (token68 characters only)."""
    claims: dict[str, object] = {
        "sub": subject,
        "scope": " ".join(scopes),
        "jti": jti,
        "exp": expires_at,
    }
    if cnf_jkt is not None:
        claims["cnf"] = {"jkt": cnf_jkt}
    body = "t1." + _b64(json.dumps(claims, sort_keys=True).encode())
    mac = hmac.new(key, body.encode("ascii"), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


class HMACVerifier:
    """A :class:`~bastion.core.tokens.principal.BearerVerifier` over ``store``'s deny-list.

    ``seen`` records every request it was asked about (to assert the URL and method)."""

    def __init__(self, store: Store, *, clock: FrozenClock | None = None) -> None:
        self.store = store
        self.clock = clock or FrozenClock(NOW)
        self.seen: list[BearerRequest] = []

    def _claims(self, request: BearerRequest) -> tuple[dict[str, object], str]:
        self.seen.append(request)
        credentials = parse_authorization(request.authorization)
        if credentials is None:
            raise TokenRejected(TokenReason.MISSING)
        token = credentials.token
        body, _, mac = token.rpartition(".")
        if not body.startswith("t1.") or body.count(".") != 1:
            raise TokenRejected(TokenReason.MALFORMED)
        expected = hmac.new(KEY, body.encode("ascii"), hashlib.sha256).digest()
        try:
            presented = _unb64(mac)
            claims = json.loads(_unb64(body[3:]))
        except ValueError:
            raise TokenRejected(TokenReason.MALFORMED) from None
        if not hmac.compare_digest(expected, presented):
            raise TokenRejected(TokenReason.BAD_SIGNATURE)
        if not isinstance(claims, dict):
            raise TokenRejected(TokenReason.MALFORMED)
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp <= self.clock.now():
            raise TokenRejected(TokenReason.EXPIRED)
        cnf = claims.get("cnf")
        jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
        if jkt is not None:
            if credentials.scheme != "dpop":
                raise TokenRejected(TokenReason.DPOP_REQUIRED)
            if request.dpop is None:
                raise TokenRejected(TokenReason.DPOP_REQUIRED)
            if request.dpop != f"proof:{jkt}":
                raise TokenRejected(TokenReason.DPOP_MISMATCH)
        elif credentials.scheme == "dpop":
            raise TokenRejected(TokenReason.DPOP_INVALID)  # DPoP scheme for an unbound token
        return claims, str(claims["jti"])

    @staticmethod
    def _principal(claims: dict[str, object]) -> Principal:
        cnf = claims.get("cnf")
        return Principal(
            subject=str(claims["sub"]),
            scopes=frozenset(str(claims.get("scope", "")).split()),
            token_id=str(claims["jti"]),
            expires_at=float(claims["exp"]),  # type: ignore[arg-type]
            claims=claims,
            cnf_jkt=cnf.get("jkt") if isinstance(cnf, dict) else None,
        )

    async def authenticate(self, request: BearerRequest) -> Principal:
        claims, jti = self._claims(request)
        if await self.store.get("deny:" + jti) is not None:
            raise TokenRejected(TokenReason.REVOKED)
        return self._principal(claims)

    def authenticate_sync(self, request: BearerRequest) -> Principal:
        claims, jti = self._claims(request)
        if self.store.sync.get("deny:" + jti) is not None:
            raise TokenRejected(TokenReason.REVOKED)
        return self._principal(claims)


class BrokenVerifier(HMACVerifier):
    """A verifier with a bug: it raises a plain ``RuntimeError`` (must propagate, not 401)."""

    async def authenticate(self, request: BearerRequest) -> Principal:
        raise RuntimeError("verifier bug")

    def authenticate_sync(self, request: BearerRequest) -> Principal:
        raise RuntimeError("verifier bug")


def auth(token: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{scheme} {token}"}


MALFORMED_HEADERS: list[tuple[str, list[tuple[str, str]]]] = [
    ("two tokens", [("Authorization", "Bearer abc def")]),
    ("bad scheme", [("Authorization", "Basic YWxpY2U6cHc=")]),
    ("bad token68", [("Authorization", 'Bearer ab"c')]),
    ("token68 comma", [("Authorization", "Bearer abc,def")]),
    ("scheme only", [("Authorization", "Bearer")]),
    ("oversized", [("Authorization", "Bearer " + "a" * 9000)]),
    ("two headers", [("Authorization", "Bearer abc"), ("Authorization", "Bearer def")]),
]
"""Each case: a name and the request's header list. All are ``400 invalid_request``."""

CHALLENGE_MISSING = f'Bearer realm="{REALM}"'


def challenge(error: str, description: str, scope: str | None = None) -> str:
    text = f'Bearer realm="{REALM}", error="{error}", error_description="{description}"'
    if scope is not None:
        text += f', scope="{scope}"'
    return text


async def handshake(
    app: Any, headers: list[tuple[bytes, bytes]], *, extension: bool
) -> list[Message]:
    scope: Scope = {
        "type": "websocket",
        "path": "/api/ws",
        "raw_path": b"/api/ws",
        "root_path": "",
        "scheme": "wss",
        "query_string": b"",
        "headers": [(b"host", b"api.test"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("api.test", 443),
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}} if extension else {},
    }
    incoming: list[Message] = [{"type": "websocket.connect"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent
