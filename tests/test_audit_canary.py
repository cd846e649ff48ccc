"""The secret canary (issue 17, item 5): known secrets sent through every path of the demo app,
then searched for in every sink, in every form a leak could take (tests/canary_support.py).

Secrets: passwords (registration, a weak one refused, wrong ones, changed, reset, the seeded
admin's, one typed into the user name field), TOTP codes (right, wrong, replayed), the TOTP
secret and recovery codes, API keys (real, forged, malformed), access tokens (JWT: whole,
payload, signature), refresh tokens (whole and secret part, replayed after rotation),
password-reset tokens (whole and secret part, a forged one), session IDs and the login
throttle's device cookie (every value the app set), CSRF tokens, the profile's phone number
(encrypted at rest), the server key, the data key (text and bytes) and the audit store's
password. Paths: every demo route, the refusals (CSRF, rate limits, the login throttle, bodies
over the cap), each credential sent where another kind is expected, secrets in paths, query
strings, HTTP Basic and CSP reports.

Sinks, each on SQLite, PostgreSQL and Redis: (1) every log record on every logger (the root at
DEBUG with a handler of our own: message, arguments, extras, exception text), except the
test's own HTTP client (httpx, httpcore); (2) the stored trail read raw: SQLite's file with its
``-wal`` (while open) and after closing, PostgreSQL's rows as text and the tables' files on
disk, Redis's stream entries (``XRANGE``) and every key under the prefix; (3) the trail read
back through bastion: row bodies, query records (plain, ECS, OpenTelemetry) and ``bastion audit
query`` in each format, plus what the run printed; (4) every response body and header (but
``Set-Cookie``), except where the page exists to show that secret (the new API key, the token
pair, the TOTP enrolment page, the outbox, the reset form). Each reader is first shown to find
a secret put in its sink on purpose, so a clean result is not vacuous; the trail is also
checked to be pseudonymous (no raw user name or client address), and the app's own store to
hold digests only.
"""

from __future__ import annotations

import base64
import logging
import secrets
import socket
import traceback
from typing import TYPE_CHECKING

import pytest

from bastion.audit import AuditPolicy, AuditTrail
from bastion.core.audit import Outcome
from bastion.core.keys import KeyRing, SecretKey
from bastion.crypto import DataKeyRing
from bastion.errors import StoreUnavailable
from canary_paths import (
    Run,
    access,
    accounts,
    api_keys,
    audit_pages,
    crossed,
    csp_reports,
    limits,
    refusals,
    reset,
    second_factor,
    tokens,
)
from canary_support import (
    CLIENT_ADDRESS,
    Canaries,
    Location,
    LogCapture,
    Sink,
    cli_sinks,
    control_store,
    kind_of,
    open_logs,
    sqlite_sinks,
    trail_sinks,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

USER = "canary" + secrets.token_hex(4)
"""The account the paths create (a new name per run: the pseudonymity check looks for it)."""
STORES = ["sqlite", "postgres", "redis"]
SHOWN_ON_PURPOSE = {"csrf_token"}  # every form page carries its token


@pytest.fixture(params=STORES)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    with open_logs() as handler:
        yield handler


KINDS = {
    "password", "totp_code", "totp_secret", "recovery_code", "api_key", "access_token",
    "refresh_token", "reset_token", "session_id", "device_cookie", "csrf_token", "phone",
    "server_key", "data_key",
}  # fmt: skip


EVENTS = {
    "user_created", "authn_login_fail", "authn_login_success", "authn_login_lock",
    "authn_password_change", "authn_password_change_fail", "session_created", "session_renewed",
    "session_destroyed", "session_revoke_others", "totp_enabled", "authn_token_created",
    "authn_token_reuse", "authn_token_revoked", "onetime_token_consumed",
    "authz_fail", "authz_change", "authz_admin", "malicious_csrf", "excess_rate_limit_exceeded",
    "input_validation_fail", "csp_violation",
}  # fmt: skip
"""Events the paths above must have stored: proof that they reached the trail."""


@pytest.mark.asyncio
async def test_no_secret_reaches_any_sink(
    kind: str,
    logs: LogCapture,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key_text = SecretKey.generate().to_text()
    monkeypatch.setenv("BASTION_SECRET_KEY", key_text)
    ring = KeyRing.from_secrets([key_text])
    store = Location(kind, request, tmp_path)
    data_text = SecretKey.generate().to_text()
    data_keys = DataKeyRing.from_text(f"1:{data_text}")
    run = Run(store.url, ring, USER, data_keys=data_keys, store=tmp_path / "app.db")
    canaries = run.canaries
    if store.password is not None:
        canaries.add("store_password", store.password)
    canaries.add("server_key", key_text)  # configured text: its UTF-8 bytes are the secret
    canaries.add("data_key", data_text)  # base64url of the 32 bytes of the data key
    canaries.add_bytes(
        "data_key", base64.urlsafe_b64decode(data_text + "=" * (-len(data_text) % 4))
    )
    # Controls: the log and store readers find a secret put in their sink on purpose.
    logging.getLogger("x").info("control: %s", run.seed)
    control = canaries.find_all(logs.sinks()[-1:])
    assert [f.form for f in control] == ["raw", "prefix12", "suffix12"], control
    del logs.rendered[-1]  # the control record is the test's own, not the app's
    planted = canaries.find_all(control_store(Location(kind, request, tmp_path), ring, run.seed))
    assert ("password", "raw") in {(f.secret, f.form) for f in planted}, planted
    await run.app.startup()
    try:
        async with run.client() as client:
            password = await accounts(run, client)
            await second_factor(run, client, password)
            key = await api_keys(run, client)
            access_token = await tokens(run, password)
            password, link = await reset(run, client)
            assert (await client.get("/account")).status_code == 303  # the reset ended it
        await access(run, password)
        await refusals(run, password, key, access_token, link)
        await crossed(run, password, key, access_token, link)
        await csp_reports(run, password, key, access_token, link)
        await limits(run, password, key)
        await audit_pages(run, password)
        run.app.runtime.audit.flush()
        while_open = store.read()  # SQLite: the -wal file before the checkpoint at close
    finally:
        await run.app.shutdown()
    stored, names = trail_sinks(store.url, ring)
    assert names >= EVENTS, sorted(EVENTS - names)
    assert canaries.kinds() >= KINDS, sorted(KINDS - canaries.kinds())
    # Control: the pages that exist to show a secret do show it, found by the same scanner.
    shown = {
        kind_of(f.secret)
        for sink, allowed in run.responses
        for f in canaries.find(sink)
        if kind_of(f.secret) in allowed
    }
    assert shown == set().union(*(allowed for _, allowed in run.responses)), shown
    findings = canaries.find_all(logs.sinks())
    sinks = [*while_open, *store.read(), *stored, *cli_sinks(store.url, capsys)]
    findings += canaries.find_all(sinks)
    for sink, allowed in run.responses:
        findings += canaries.find(sink, allowed=allowed | SHOWN_ON_PURPOSE)
    assert not findings, "\n".join(str(f) for f in findings[:30])
    # The app's own store (sessions, throttle, keys, tokens, accounts) keeps digests only; the
    # one secret it holds is the TOTP secret in the demo's account record, which the code
    # check needs (kept in clear by the demo's UserStore).
    kept = canaries.find_all(sqlite_sinks(run.store_path))
    assert {kind_of(f.secret) for f in kept} <= {"totp_secret"}, "\n".join(map(str, kept[:10]))
    # The stored trail is pseudonymous: the user's name and address appear only as hashes.
    identities = Canaries()
    identities.add("user_name", USER)
    identities.add("client_address", CLIENT_ADDRESS)
    named = identities.find_all(sinks)
    assert not named, "\n".join(str(f) for f in named[:10])


def test_the_scanner_finds_every_form_and_no_near_miss() -> None:
    """The forms of tests/canary_support.py, each found where a leak would put it, and a
    short secret not "found" inside a longer number or word."""
    canaries = Canaries()
    canaries.add("password", "a pass phrase / with + signs")
    canaries.add("totp_code", "492039")
    canaries.add("refresh_token", "brt_publicfamilyid.secretpart0123456789", partial=False)
    secret = b"a pass phrase / with + signs"
    cases = {
        b"form body password=a+pass+phrase+%2F+with+%2B+signs&x=1": "quote_plus",
        b"url /x?p=a%20pass%20phrase%20%2F%20with%20%2B%20signs": "quote",
        b"hex " + secret.hex().encode(): "hex",
        b"Basic " + base64.b64encode(b"user:" + secret): "base64@1",
        b"token " + base64.urlsafe_b64encode(b"x" + secret): "base64@2",
        b"truncated 'a pass phras...'": "prefix12",
        b"kept the end: ...with + signs": "suffix12",
    }
    for data, form in cases.items():
        found = {f.form for f in canaries.find(Sink("case", data))}
        assert form in found, (data, found)
    assert [f.secret for f in canaries.find(Sink("code", b'{"code": "492039"}'))] == ["totp_code"]
    for near in (b"t=1749203912", b"id x492039y", b"0.4920391"):
        assert canaries.find(Sink("near", near)) == [], near
    # A refresh token's family id is public by design: only the whole token and its secret
    # part count.
    assert canaries.find(Sink("id", b"family brt_publicfamilyid revoked")) == []
    assert canaries.find(Sink("whole", b"brt_publicfamilyid.secretpart0123456789"))
    assert canaries.find(Sink("allowed", b"password=a+pass+phrase"), allowed={"password"}) == []
    key = bytes(range(200, 232))
    canaries.add_bytes("data_key", key)
    assert {f.form for f in canaries.find(Sink("file", b"\x00page" + key + b"\x00"))} == {
        "bytes",
        "bytes prefix12",
        "bytes suffix12",
    }
    assert {f.form for f in canaries.find(Sink("hex", key.hex().encode()))} == {"raw"}


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://bastion:{pw}@127.0.0.1:{port}/audit?connect_timeout=1",
        "redis://default:{pw}@127.0.0.1:{port}/0?timeout=1",
    ],
)
def test_an_unreachable_store_names_no_password(url: str, logs: LogCapture) -> None:
    """A trail whose store refuses connections: the error raised (with its causes and
    traceback), the trail's repr and every log line name the store without its password."""
    with socket.socket() as unused:  # bound, never listening: connections are refused
        unused.bind(("127.0.0.1", 0))
        canaries = Canaries()
        password = canaries.add("store_password", f"pw-{secrets.token_urlsafe(18)}")
        store = url.format(pw=canaries.values[password], port=unused.getsockname()[1])
        texts = []
        try:
            trail = AuditTrail(
                AuditPolicy(store=store), keyring=KeyRing.generate(), background=False
            )
            texts.append(repr(trail))
            trail.auditor(aggregation=None).emit("canary_control", outcome=Outcome.SUCCESS)
            trail.flush()  # the batch is refused: logged, counted, dropped
            trail.close()
        except StoreUnavailable as error:
            texts.append("".join(traceback.format_exception(error)))
    assert texts
    assert any("***@127.0.0.1" in text for text in texts), texts
    sinks = [Sink("error and repr", "\n".join(texts).encode()), *logs.sinks()]
    raised = any("StoreUnavailable" in text for text in texts)
    assert raised or logs.rendered  # raised at once (PostgreSQL) or logged at the flush (Redis)
    assert not canaries.find_all(sinks), canaries.find_all(sinks)
