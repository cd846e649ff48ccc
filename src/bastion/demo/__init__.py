"""A small protected example app, served by ``bastion demo`` (``make demo``).

It stands in for the full demo (a later issue) and uses only the parts that exist today:

* a visitor cookie written through :class:`~bastion.core.cookies.Cookie` (``__Host-`` prefix,
  ``Secure``, ``HttpOnly``, ``SameSite=Lax``) whose value is a random ID signed by a
  purpose-bound :class:`~bastion.core.signing.Signer`;
* the visit counter kept server-side in a store (SQLite by default) under a hash of the ID, and
  incremented with ``compare_and_set`` so concurrent requests never lose a visit;
* a tampered, foreign or malformed cookie is never adopted: the visitor gets a fresh ID and an
  ``input_validation_fail`` audit event;
* strict security headers with a per-response CSP nonce; a store outage is a 503 page, never a
  traceback.

Plain HTTP on loopback is the development mode: browsers treat ``127.0.0.1`` and ``localhost``
as secure contexts, so the ``Secure`` cookie still works there.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import secrets
import sys
from typing import TYPE_CHECKING, Any

from bastion.core.audit import Auditor, EventName, IdentifierHasher, LoggingAuditSink, Outcome
from bastion.core.clock import Clock, system_clock
from bastion.core.cookies import Cookie, parse_cookie
from bastion.core.keys import KeyRing
from bastion.core.signing import Signer
from bastion.errors import BastionError, StoreError
from bastion.stores import Store, open_store
from bastion.stores.url import redact_url

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]

__all__ = ["COOKIE_NAME", "DemoApp", "serve"]

COOKIE_NAME = "__Host-bastion-demo"
VISIT_TTL = 30 * 24 * 60 * 60
_CAS_ATTEMPTS = 16

logger = logging.getLogger("bastion.demo")

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bastion demo</title>
<style nonce="{nonce}">
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; color: #222 }}
code {{ background: #f3f3f3; padding: 0 .25rem }} .n {{ font-size: 3rem; margin: 0 }}
</style></head><body>
<h1>bastion demo</h1>
<p class="n">{visits}</p>
<p>visits from this browser. The cookie holds only a signed random ID; the count lives in the
store (<code>{store}</code>) under a hash of that ID.</p>
<p>{note}</p>
</body></html>
"""


class DemoApp:
    """The example ASGI app. ``store`` is closed on lifespan shutdown."""

    def __init__(
        self,
        store: Store,
        *,
        keyring: KeyRing,
        store_label: str,
        clock: Clock = system_clock,
        auditor: Auditor | None = None,
    ) -> None:
        self._store = store
        self._store_label = store_label
        self._signer = Signer(keyring, "demo-visitor")
        self._cookie = Cookie(name=COOKIE_NAME, max_age=VISIT_TTL)
        self._auditor = auditor or Auditor(IdentifierHasher(keyring), clock, LoggingAuditSink())
        # Built once: every response carries them; only the CSP nonce changes per response.
        self._static_headers = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"cross-origin-resource-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), geolocation=(), microphone=()"),
            (b"cache-control", b"no-store"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets are not served: closing without accepting refuses them
        path, method = scope["path"], scope["method"]
        if path == "/healthz":
            await self._respond(send, 200, b"ok", "text/plain; charset=utf-8")
        elif path != "/":
            await self._respond(send, 404, b"not found", "text/plain; charset=utf-8")
        elif method not in {"GET", "HEAD"}:
            await self._respond(
                send, 405, b"method not allowed", "text/plain; charset=utf-8", [(b"allow", b"GET")]
            )
        else:
            await self._home(scope, send)

    async def _home(self, scope: Scope, send: Send) -> None:
        cookie_header = b"; ".join(v for k, v in scope["headers"] if k == b"cookie")
        presented = parse_cookie(cookie_header.decode("latin-1")).get(COOKIE_NAME)
        client = scope.get("client")
        client_ip = client[0] if client else None
        visitor: bytes | None = None
        note = "Welcome. A fresh, signed visitor ID was issued."
        if presented is not None:
            verdict = self._signer.verify(presented)
            if verdict.value is not None:
                visitor = verdict.value
                note = "Welcome back. Your signed visitor ID verified."
            else:
                note = "The visitor cookie did not verify, so it was replaced, not adopted."
                self._auditor.emit(
                    EventName.INPUT_VALIDATION_FAIL,
                    outcome=Outcome.FAILURE,
                    client_ip=client_ip,
                    details={"field": COOKIE_NAME, "reason": verdict.status.value},
                )
        fresh = visitor is None
        if visitor is None:
            visitor = secrets.token_bytes(32)
        try:
            visits = await self._count_visit(visitor)
        except StoreError as exc:
            logger.warning("demo store failed: %s", type(exc).__name__)
            await self._respond(
                send, 503, b"store unavailable, try again", "text/plain; charset=utf-8"
            )
            return
        extra: list[tuple[bytes, bytes]] = []
        if fresh:
            self._auditor.emit(
                EventName.SESSION_CREATED, outcome=Outcome.SUCCESS, client_ip=client_ip
            )
            token = self._signer.sign(visitor)
            extra.append((b"set-cookie", self._cookie.with_value(token).serialize().encode()))
        nonce = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()
        body = _PAGE.format(
            nonce=nonce,
            visits=visits,
            store=html.escape(self._store_label),
            note=html.escape(note),
        ).encode()
        csp = (
            f"default-src 'none'; style-src 'nonce-{nonce}'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'"
        )
        extra.append((b"content-security-policy", csp.encode()))
        await self._respond(send, 200, body, "text/html; charset=utf-8", extra)

    async def _count_visit(self, visitor: bytes) -> int:
        """Increment the visitor's counter atomically; raises StoreError when it cannot."""
        key = "demo:visits:" + hashlib.sha256(visitor).hexdigest()
        for _ in range(_CAS_ATTEMPTS):
            current = await self._store.get(key)
            count = _decode_count(current) + 1
            new = json.dumps({"visits": count}).encode()
            if await self._store.compare_and_set(key, current, new, ttl=VISIT_TTL):
                return count
        raise StoreError(f"demo counter {key!r} kept changing; gave up after {_CAS_ATTEMPTS}")

    async def _respond(
        self,
        send: Send,
        status: int,
        body: bytes,
        content_type: str,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            *self._static_headers,
            *(extra or ()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._store.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _decode_count(raw: bytes | None) -> int:
    """The stored count, or 0 for a missing or unreadable record (which the CAS then replaces)."""
    if raw is None:
        return 0
    try:
        value = json.loads(raw)
    except ValueError:
        return 0
    count = value.get("visits") if isinstance(value, dict) else None
    return count if isinstance(count, int) and count >= 0 else 0


def serve(*, host: str, port: int, store_url: str) -> int:
    """Run the demo with uvicorn until interrupted. Returns the process exit code."""
    try:
        import uvicorn  # noqa: PLC0415 (the demo extra; imported only when serving)
    except ImportError:
        print("bastion demo needs uvicorn: pip install 'bastion[demo]'", file=sys.stderr)
        return 2
    try:
        store = open_store(store_url)
    except BastionError as exc:
        print(f"bastion demo: cannot open the store: {exc}", file=sys.stderr)
        return 2
    keyring = KeyRing.generate()  # a fresh key per run: old cookies are simply replaced
    label = redact_url(store_url)
    app = DemoApp(store, keyring=keyring, store_label=label)
    shown = "localhost" if host == "localhost" else (f"[{host}]" if ":" in host else host)
    print(f"bastion demo: http://{shown}:{port}/  (store: {label})")
    print("press Ctrl+C to stop")
    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)
    return 0
