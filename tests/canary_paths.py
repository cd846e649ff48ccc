"""The paths of the secret canary (tests/test_audit_canary.py): the demo app on a stored trail,
driven through every route and refusal, registering each secret it sends or is given (a
:class:`Run`), and recording every response with the secret kinds it may show."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import secrets
from typing import TYPE_CHECKING
from urllib.parse import quote_plus

import httpx
import pyotp

from bastion.core.apikeys import generate_api_key
from bastion.core.clock import FrozenClock
from bastion.core.sessions import DEVELOPMENT_COOKIE_NAME
from bastion.demo.app import API_SCOPE, DemoApp
from bastion.passwords import TEST_ONLY_PROFILE, PasswordHasher
from bastion.stores.sqlite import SQLiteStore
from bastion.testing.csrf import BROWSER_ACCEPT, afetch_token, browser_headers, find_token
from canary_support import CLIENT_ADDRESS, Canaries, Sink

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from bastion.core.keys import KeyRing
    from bastion.crypto import DataKeyRing

__all__ = [
    "Run",
    "access",
    "accounts",
    "api_keys",
    "audit_pages",
    "crossed",
    "csp_reports",
    "limits",
    "passphrase",
    "refusals",
    "reset",
    "second_factor",
    "tokens",
]

BASE = "http://127.0.0.1:8000"


def passphrase(word: str) -> str:
    """A passphrase the demo's policy accepts, new on each call (with spaces: its URL-encoded
    form differs)."""
    return f"{word} {secrets.token_hex(6)} staple {secrets.token_hex(5)}"


class Run:
    """One demo app on a stored trail, its clients, the secrets met and the responses seen."""

    def __init__(
        self, audit_url: str, ring: KeyRing, user: str, *, data_keys: DataKeyRing, store: Path
    ) -> None:
        self.user = user
        self.clock = FrozenClock(1_800_000_000.0)
        self.store_path = store
        self.canaries = Canaries()
        self.seed = self.secret("password", passphrase("seed"))
        self.app = DemoApp(
            SQLiteStore(store, clock=self.clock),
            keyring=ring,
            clock=self.clock,
            seed_password=self.seed,
            hasher=PasswordHasher(TEST_ONLY_PROFILE),
            production=False,
            audit_url=audit_url,
            data_keys=data_keys,
        )
        self.responses: list[tuple[Sink, frozenset[str]]] = []
        self._allowed: frozenset[str] = frozenset()
        self.totp: pyotp.TOTP | None = None

    def secret(self, kind: str, value: str, *, partial: bool = True) -> str:
        self.canaries.add(kind, value, partial=partial)
        return value

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, client=(CLIENT_ADDRESS, 50123)),
            base_url=BASE,
            event_hooks={"response": [self._record]},
        )

    @contextlib.contextmanager
    def showing(self, *kinds: str) -> Iterator[None]:
        """Responses inside may show these secret kinds (the page exists to show them)."""
        self._allowed = frozenset(kinds)
        try:
            yield
        finally:
            self._allowed = frozenset()

    async def _record(self, response: httpx.Response) -> None:
        await response.aread()
        headers = [f"{k}: {v}" for k, v in response.headers.multi_items() if k != "set-cookie"]
        for cookie in response.headers.get_list("set-cookie"):
            name, _, value = cookie.split(";", 1)[0].partition("=")
            kinds = {
                DEVELOPMENT_COOKIE_NAME: "session_id",
                self.app.throttle.device_cookie_name(secure=False): "device_cookie",
            }
            if name in kinds and len(value) >= 16:
                kind = kinds[name]
                self.secret(kind, value)
                for part in value.split("."):
                    if len(part) >= 16 and part != value:
                        self.secret(f"{kind}.part", part)
        request = response.request
        name = f"response {len(self.responses)}: {request.method} {request.url.path[:40]}"
        body = "\n".join(headers).encode() + b"\n\n" + response.content
        self.responses.append((Sink(f"{name} {response.status_code}", body), self._allowed))

    async def form(
        self, client: httpx.AsyncClient, page: str, path: str, data: dict[str, str]
    ) -> httpx.Response:
        token = self.secret("csrf_token", await afetch_token(client, page))
        return await client.post(path, data={**data, "csrf_token": token})

    def code(self, *, wrong: bool = False) -> str:
        """The TOTP code of the current step (after moving to a fresh step), or a wrong one."""
        assert self.totp is not None
        if not wrong:
            self.clock.advance(30)
        right = self.totp.at(self.clock.now())
        value = f"{(int(right) + 1) % 1_000_000:06d}" if wrong else right
        return self.secret("totp_code", value)

    async def log_in(
        self, client: httpx.AsyncClient, password: str, *, user: str = "", totp: str = ""
    ) -> httpx.Response:
        data = {"username": user or self.user, "password": password}
        if totp:
            data["totp"] = totp
        return await self.form(client, "/login", "/login", data)


# -- the paths -------------------------------------------------------------------------------


async def accounts(run: Run, client: httpx.AsyncClient) -> str:
    """Register (a weak password refused), log out, wrong and right logins, a password change
    refused and done, revoke-others, the profile, the audit page. The password now."""
    weak = run.secret("password", secrets.token_hex(4))
    first = run.secret("password", passphrase("first"))
    refused = await run.form(
        client, "/register", "/register", {"username": run.user, "password": weak}
    )
    assert refused.status_code == 400
    made = await run.form(
        client, "/register", "/register", {"username": run.user, "password": first}
    )
    assert (made.status_code, made.headers["location"]) == (303, "/account")
    assert (await run.form(client, "/account", "/logout", {})).status_code == 303
    wrong = await run.log_in(client, run.secret("password", passphrase("wrong")))
    assert wrong.status_code == 401
    assert (await run.log_in(client, first)).status_code == 303
    second = run.secret("password", passphrase("second"))
    bad = {"current_password": run.secret("password", passphrase("guess")), "new_password": second}
    assert (await run.form(client, "/account", "/account/password", bad)).status_code == 400
    good = {"current_password": first, "new_password": second}
    assert (await run.form(client, "/account", "/account/password", good)).status_code == 303
    async with run.client() as other:
        assert (await run.log_in(other, second)).status_code == 303
        done = await run.form(client, "/account/sessions", "/account/sessions/revoke-others", {})
        assert done.status_code == 303
        assert (await other.get("/account")).status_code == 303  # logged out elsewhere
    phone = run.secret(
        "phone", f"+44 20 7946 {secrets.randbelow(10**4):04d} {secrets.randbelow(10**6):06d}"
    )
    with run.showing("phone"):  # the owner's own profile shows the number
        form = {"phone": phone, "bio": "<b>canary</b>"}
        saved = await run.form(client, "/account/profile", "/account/profile", form)
        assert saved.status_code == 200
        assert phone in (await client.get("/account/profile")).text
    assert (await client.get("/audit?event=authn_login_fail")).status_code == 200
    return second


async def second_factor(run: Run, client: httpx.AsyncClient, password: str) -> None:
    """TOTP enrolment (a wrong code, then the right one), then logins without a code, with a
    wrong one, the right one, the same one replayed, and a recovery code."""
    with run.showing("totp_secret"):
        page = await client.get("/account/totp")
        found = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
        assert found is not None
        run.totp = pyotp.TOTP(run.secret("totp_secret", found.group(1)))
        token = find_token(page.text)
        wrong = await client.post(
            "/account/totp", data={"code": run.code(wrong=True), "csrf_token": token}
        )
        assert wrong.status_code == 400
        found = re.search(r'id="totp-secret">([A-Z2-7]+)<', wrong.text)  # a fresh secret
        assert found is not None
        run.totp = pyotp.TOTP(run.secret("totp_secret", found.group(1)))
        run.secret("totp_secret", found.group(1).lower())
    with run.showing("totp_secret", "recovery_code"):
        data = {"code": run.code(), "csrf_token": find_token(wrong.text)}
        enabled = await client.post("/account/totp", data=data)
        assert enabled.status_code == 200
    codes = re.findall(r"<li><code>([a-z0-9]{5}-[a-z0-9]{5})</code></li>", enabled.text)
    assert len(codes) == 10
    for code in codes:
        run.secret("recovery_code", code)
        run.secret("recovery_code", code.replace("-", ""))  # as it may be normalised
    async with run.client() as fresh:
        assert (await run.log_in(fresh, password)).status_code == 401  # the code is missing
        assert (await run.log_in(fresh, password, totp=run.code(wrong=True))).status_code == 401
        code = run.code()
        assert (await run.log_in(fresh, password, totp=code)).status_code == 303
    async with run.client() as replay:
        assert (await run.log_in(replay, password, totp=code)).status_code == 401
        assert (await run.log_in(replay, password, totp=codes[0])).status_code == 303


async def api_keys(run: Run, client: httpx.AsyncClient) -> str:
    """Create keys, use them (``X-API-Key``, ``Authorization: Bearer``), a forged key, a
    malformed one, one without the scope. The good key."""
    with run.showing("api_key"):
        made = await run.form(client, "/account", "/account/api-keys", {"scopes": API_SCOPE})
        narrow = await run.form(client, "/account", "/account/api-keys", {"scopes": "posts:read"})
    keys = [re.search(r'id="api-key">(bst_[A-Za-z0-9]+)<', page.text) for page in (made, narrow)]
    found = [key.group(1) for key in keys if key is not None]
    assert len(found) == 2, keys
    key, other = (run.secret("api_key", value) for value in found)
    assert (await client.get("/account")).status_code == 200  # the list shows key ids only
    async with run.client() as api:
        for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
            answer = await api.get("/api/me", headers=headers)
            assert (answer.status_code, answer.json()["username"]) == (200, run.user)
        forged = run.secret("api_key", generate_api_key())
        malformed = run.secret("api_key", "bst_" + secrets.token_hex(20))
        for bad, status in ((forged, 401), (malformed, 401), (other, 403)):
            answer = await api.get("/api/me", headers={"X-API-Key": bad})
            assert answer.status_code == status, answer.text
    return key


def _token_pair(run: Run, answer: httpx.Response) -> tuple[str, str]:
    assert answer.status_code == 200, answer.text
    pair = answer.json()
    access, refresh = pair["access_token"], pair["refresh_token"]
    _, payload, signature = access.split(".")
    run.secret("access_token", access, partial=False)  # the header is the same for every token
    run.secret("access_token.payload", payload, partial=False)
    run.secret("access_token.signature", signature)
    run.secret("refresh_token", refresh, partial=False)  # brt_<family id>: public by design
    run.secret("refresh_token.secret", refresh.split(".", 1)[1])
    return access, refresh


async def tokens(run: Run, password: str) -> str:
    """The token endpoint (wrong password, missing code, right), ``/api/me`` with the access
    token and a forged one, refresh, the rotated token replayed (reuse: the family dies),
    revocation of an access token and a refresh family."""
    async with run.client() as api:
        login = {"username": run.user, "password": password}
        wrong = {**login, "password": run.secret("password", passphrase("api wrong"))}
        assert (await api.post("/api/token", data=wrong)).status_code == 400
        assert (await api.post("/api/token", data=login)).status_code == 400  # no code
        with run.showing("access_token", "refresh_token"):
            access, refresh = _token_pair(
                run, await api.post("/api/token", data={**login, "totp": run.code()})
            )
        me = await api.get("/api/me", headers={"Authorization": f"Bearer {access}"})
        assert (me.status_code, me.json()["username"]) == (200, run.user)
        head, payload, signature = access.split(".")
        forged = f"{head}.{payload}.{signature[::-1]}"
        refused = await api.get("/api/me", headers={"Authorization": f"Bearer {forged}"})
        assert refused.status_code == 401
        with run.showing("access_token", "refresh_token"):
            newer = _token_pair(
                run, await api.post("/api/token/refresh", data={"refresh_token": refresh})
            )
        run.clock.advance(60)  # past the grace window: presenting the old token is a replay
        replay = await api.post("/api/token/refresh", data={"refresh_token": refresh})
        assert (replay.status_code, replay.json()["error"]) == (401, "invalid_grant")
        dead = await api.post("/api/token/refresh", data={"refresh_token": newer[1]})
        assert dead.status_code == 401  # the whole family was revoked
        with run.showing("access_token", "refresh_token"):
            access, refresh = _token_pair(
                run, await api.post("/api/token", data={**login, "totp": run.code()})
            )
        assert (await api.post("/api/token/revoke", data={"token": access})).status_code == 200
        gone = await api.get("/api/me", headers={"Authorization": f"Bearer {access}"})
        assert gone.status_code == 401
        assert (await api.post("/api/token/revoke", data={"token": refresh})).status_code == 200
        revoked = await api.post("/api/token/refresh", data={"refresh_token": refresh})
        assert revoked.status_code == 401
    return access


async def reset(run: Run, client: httpx.AsyncClient) -> tuple[str, str]:
    """A reset link asked for, read from the outbox, opened; a forged link; a weak new
    password refused; the reset done; the spent link refused. The new password, the link."""
    async with run.client() as anonymous:
        asked = await run.form(
            anonymous, "/reset-password", "/reset-password", {"username": run.user}
        )
        assert asked.status_code == 200
        with run.showing("reset_token"):
            outbox = await client.get("/outbox")
        found = re.search(
            r'href="[^"]*/reset-password/(bot_[A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)"', outbox.text
        )
        assert found is not None
        link_id, secret_part = found.groups()
        token = run.secret("reset_token", f"{link_id}.{secret_part}", partial=False)
        run.secret("reset_token.secret", secret_part)
        forged = run.secret("reset_token", f"{link_id}.{secrets.token_urlsafe(32)}", partial=False)
        assert (await anonymous.get(f"/reset-password/{forged}")).status_code == 400
        new = run.secret("password", passphrase("reset"))
        path = f"/reset-password/{token}"
        with run.showing("reset_token"):  # the link's own form
            weak = await run.form(anonymous, path, path, {"new_password": secrets.token_hex(3)})
            assert weak.status_code == 400
            done = await run.form(anonymous, path, path, {"new_password": new})
        assert (done.status_code, done.headers["location"]) == (303, "/login")
        spent = await anonymous.get(path)
        assert spent.status_code == 400
    return new, token


async def access(run: Run, password: str) -> None:
    """Documents (create, read, edit, a missing one), admin pages refused to a user, then the
    admin (the seeded password) sets roles."""
    async with run.client() as client:
        assert (await run.log_in(client, password, totp=run.code())).status_code == 303
        assert (await client.get("/documents")).status_code == 200
        made = await run.form(
            client, "/documents", "/documents", {"title": "notes", "body": "hello"}
        )
        assert made.status_code == 303
        where = made.headers["location"]
        assert (await client.get(where)).status_code == 200
        assert (await run.form(client, where, where, {"body": "edited"})).status_code == 303
        assert (await client.get("/documents/999999")).status_code == 403
        assert (await client.get("/admin")).status_code == 403
        assert (await client.get("/admin/roles")).status_code == 403
    async with run.client() as admin:
        assert (await run.log_in(admin, run.seed, user="admin")).status_code == 303
        assert (await admin.get("/admin")).status_code == 200
        for role in ("moderator", "user"):
            data = {"username": run.user, "role": role}
            assert (await run.form(admin, "/admin/roles", "/admin/roles", data)).status_code == 200
        assert (await run.form(admin, "/account", "/logout", {})).status_code == 303


async def refusals(run: Run, password: str, key: str, access: str, link: str) -> None:
    """CSRF failures and oversized bodies carrying a password, secrets in paths and query
    strings (a reset link, an API key, an access token), HTTP Basic credentials, and a
    password typed into the user name field."""
    huge = {"username": run.user, "password": password, "padding": "x" * (1 << 20)}
    as_json = {"Accept": "application/json"}
    reset_path = f"/reset-password/{link}"
    async with run.client() as client:
        assert (await run.log_in(client, password, totp=run.code())).status_code == 303
        new = run.secret("password", passphrase("csrf"))
        change = {"current_password": password, "new_password": new}
        query = f"?link={link}&password={quote_plus(password)}&api_key={key}"
        missing = await client.post("/account/password" + query, data=change, headers=as_json)
        assert (missing.status_code, missing.json()["reason"]) == (403, "token_missing")
        page = {"Accept": BROWSER_ACCEPT}
        friendly = await client.post("/account/password", data=change, headers=page)
        assert friendly.status_code == 403
        assert "CSRF protection" in friendly.text
        forged = {**change, "csrf_token": run.secret("csrf_token", secrets.token_urlsafe(32))}
        invalid = await client.post("/account/password", data=forged, headers=as_json)
        assert (invalid.status_code, invalid.json()["reason"]) == (403, "token_malformed")
        cross = browser_headers("https://evil.example", site="cross-site")
        login = {"username": run.user, "password": password}
        hostile = await client.post("/api/token", data=login, headers={**cross, **as_json})
        assert (hostile.status_code, hostile.json()["reason"]) == (403, "cross_site")
        form = {"new_password": new}
        unforged = await client.post(reset_path, data=form, headers=as_json)
        assert (unforged.status_code, unforged.json()["reason"]) == (403, "token_missing")
        for path in ("/login", reset_path):
            too_big = await client.post(path, data=huge, headers=as_json)
            assert (too_big.status_code, too_big.json()["error"]) == (413, "body_too_large")
        with run.showing("password"):  # the login form fills in the user name it was sent
            typed = await run.log_in(client, "not it", user=password)
            assert typed.status_code == 401
        asked = await run.form(client, "/reset-password", "/reset-password", {"username": password})
        assert asked.status_code == 200
        # Multipart forms: read by the CSRF layer for its token, then by the handler.
        token = run.secret("csrf_token", await afetch_token(client, "/login"))
        fields = {"username": run.user, "password": f"{password} but wrong", "csrf_token": token}
        parts = {name: (None, value) for name, value in fields.items()}  # no file: no upload
        multipart = await client.post("/login", files=parts)
        assert multipart.status_code == 401  # the token was found in the multipart body
        run.secret("password", f"{password} but wrong")
        broken = {"Content-Type": "multipart/form-data", **as_json}  # no boundary
        body = f"password={password}&csrf_token={token}".encode()
        refused = await client.post("/login", content=body, headers=broken)
        assert (refused.status_code, refused.json()["reason"]) == (400, "body_malformed")
    async with run.client() as api:  # no cookies
        too_big = await api.post("/api/token", data=huge, headers=as_json)
        assert (too_big.status_code, too_big.json()["error"]) == (413, "body_too_large")
        as_document = await api.post(
            "/api/token", json={"username": run.user, "password": password}
        )
        assert (as_document.status_code, as_document.json()["error"]) == (400, "invalid_grant")
        typed = await api.post("/api/token", data={"username": password, "password": "x"})
        assert (typed.status_code, typed.json()["error"]) == (400, "invalid_grant")
        exposed = await api.get(f"/api/me?api_key={key}&access_token={access}")
        assert (exposed.status_code, exposed.json()) == (401, {"error": "missing"})
        basic = base64.b64encode(f"{run.user}:{password}".encode()).decode()
        answer = await api.get("/api/me", headers={"Authorization": f"Basic {basic}"})
        assert (answer.status_code, answer.json()) == (400, {"error": "invalid_request"}), (
            answer.text
        )


async def crossed(run: Run, password: str, key: str, access: str, link: str) -> None:
    """Each credential sent where another kind is expected: a refresh token, a reset link or a
    password as a bearer token, an access token as an API key, an access token, an API key or
    a password as a refresh token, and revocations of things that are not tokens."""
    refresh = run.canaries.values["refresh_token"]
    session = run.canaries.values["session_id"]
    bearer = "Authorization"
    async with run.client() as api:
        for headers, status, error in (
            ({bearer: f"Bearer {refresh}"}, 401, "invalid_token"),
            ({bearer: f"Bearer {link}"}, 401, "invalid_token"),
            ({bearer: f"Bearer {password}"}, 400, "invalid_request"),  # spaces: not a token
            ({bearer: f"Bearer {session}"}, 401, "invalid_token"),
            ({"X-API-Key": access}, 401, "malformed"),
            ({"X-API-Key": password}, 401, "malformed"),
        ):
            answer = await api.get("/api/me", headers=headers)
            assert (answer.status_code, answer.json()) == (status, {"error": error}), headers
        for wrong in (access, key, password, link, session):
            answer = await api.post("/api/token/refresh", data={"refresh_token": wrong})
            assert (answer.status_code, answer.json()["error"]) == (401, "invalid_grant")
        for wrong in (key, password, link, session):
            answer = await api.post("/api/token/revoke", data={"token": wrong})
            assert answer.status_code == 200  # RFC 7009: the same answer for anything
    async with run.client() as browser:
        for wrong in (key, access, refresh):
            assert (await run.log_in(browser, wrong)).status_code == 401


async def csp_reports(run: Run, password: str, key: str, access: str, link: str) -> None:
    """CSP violation reports (both formats) from the reset form's page: the document URL with
    the link in its path, a TOTP code in its query and the access token in its fragment, a
    blocked URL with the API key, and the password as the script sample."""
    page = f"http://127.0.0.1:8000/reset-password/{link}?code={run.code(wrong=True)}#{access}"
    blocked = f"https://evil.example/{key}?api_key={key}"
    legacy = {
        "document-uri": page,
        "referrer": page,
        "blocked-uri": blocked,
        "violated-directive": "script-src-elem",
        "effective-directive": "script-src-elem",
        "script-sample": password,
        "disposition": "enforce",
        "status-code": 200,
    }
    modern = [
        {
            "type": "csp-violation",
            "url": page,
            "body": {
                "documentURL": page,
                "referrer": page,
                "blockedURL": blocked,
                "effectiveDirective": "script-src-elem",
                "sample": password,
                "disposition": "enforce",
                "statusCode": 200,
            },
        }
    ]
    async with run.client() as browser:
        for media, report in (
            ("application/csp-report", {"csp-report": legacy}),
            ("application/reports+json", modern),
        ):
            body = json.dumps(report)
            sent = await browser.post("/csp-report", content=body, headers={"Content-Type": media})
            assert sent.status_code == 204, sent.text


async def limits(run: Run, password: str, key: str) -> None:
    """Rate-limited requests carrying an API key (header and query) and passwords, and the
    login throttle (even the right password waits)."""
    run.clock.advance(61)
    async with run.client() as api:
        statuses = []
        for _ in range(61):
            answer = await api.get(f"/api/me?api_key={key}", headers={"X-API-Key": key})
            statuses.append(answer.status_code)
        assert statuses == [200] * 60 + [429]
        assert '"api";r=0' in answer.headers["ratelimit"]
    async with run.client() as browser:
        statuses = []
        for number in range(7):
            wrong = run.secret("password", passphrase(f"throttle {number}"))
            statuses.append((await run.log_in(browser, wrong, user="demo")).status_code)
        assert statuses == [401] * 6 + [429]
        throttled = await run.log_in(browser, run.seed, user="demo")
        assert (throttled.status_code, throttled.headers["retry-after"]) == (429, "30")
        assert "Too many failed logins" in throttled.text
    run.clock.advance(120)
    async with run.client() as anonymous:
        token = run.secret("csrf_token", await afetch_token(anonymous, "/login"))
        statuses = []
        for number in range(20):  # many accounts from one client: the throttle's own limit
            data = {"username": f"nobody{number}", "password": password, "csrf_token": token}
            answer = await anonymous.post("/login", data=data, headers={"Accept": BROWSER_ACCEPT})
            statuses.append(answer.status_code)
        assert statuses[0] == 401
        assert statuses[-1] == 429
        assert statuses == sorted(statuses)  # refused from some point on, then every time
        assert "Too many failed logins" in answer.text
        statuses = []
        for _ in range(11):  # the sign-up rate limit, each request with a password
            data = {"username": run.user, "password": run.secret("password", secrets.token_hex(5))}
            answer = await anonymous.post(
                "/register", data={**data, "csrf_token": token}, headers={"Accept": BROWSER_ACCEPT}
            )
            statuses.append(answer.status_code)
        assert statuses == [400] * 10 + [429]
        assert '"signup";r=0' in answer.headers["ratelimit"]
        assert "Too many requests" in answer.text
    run.clock.advance(120)


async def audit_pages(run: Run, password: str) -> None:
    """The pages that show stored events: ``/audit`` (with filters) for the user and the
    admin, the admin page, the user's sessions."""
    run.app.runtime.audit.flush()
    async with run.client() as client:
        assert (await run.log_in(client, password, totp=run.code())).status_code == 303
        for path in (
            "/audit",
            "/audit?event=authn_token_reuse",
            "/audit?since=1h",
            "/account/sessions",
        ):
            page = await client.get(path)
            assert page.status_code == 200, (path, page.text)
        assert 'data-event="authn_token_reuse"' in (await client.get("/audit")).text
        for path in ("/", "/healthz", "/.well-known/jwks.json", "/login", "/register"):
            assert (await client.get(path)).status_code == 200, path
    async with run.client() as admin:
        assert (await run.log_in(admin, run.seed, user="admin")).status_code == 303
        assert (await admin.get("/audit")).status_code == 200
        assert (await admin.get("/admin")).status_code == 200
        for data, status in (
            ({"username": run.user, "role": "root"}, 400),  # no such role
            ({"username": password, "role": "user"}, 404),  # a password as the account name
            ({"username": "admin", "role": "user"}, 403),  # nobody changes their own role
        ):
            answer = await run.form(admin, "/admin/roles", "/admin/roles", data)
            assert answer.status_code == status, answer.text
