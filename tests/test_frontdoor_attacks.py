"""Attacks on the front door (``Bastion``, ``Runtime``, ``protect``): each test is a way a
configuration or a lifespan could slip past a check, leak a secret or leave a store open."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import flask
import httpx
import pytest
import werkzeug.test
from flask import Flask
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import bastion
import bastion.asgi
import bastion.flask
import bastion.wsgi
from bastion import Bastion, ConfigurationError, Environment, KeyRing, TrustedProxies
from bastion.asgi import get_session
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import system_clock
from bastion.stores.memory import MemoryStore
from bastion.testing.audit import RecordingAuditSink
from bastion.testing.csrf import browser_headers

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from starlette.requests import Request

KEYRING = KeyRing.generate()
WEAK = "short-secret"


# -- Bastion.from_env ---------------------------------------------------------------------------


def test_from_env_environment_given_as_text_still_refuses_a_weak_key() -> None:
    # environment="production" (text, as Bastion(environment=...) accepts) must mean the same
    # as ENV=production: the key length check ran as development before.
    with pytest.raises(ConfigurationError) as caught:
        Bastion.from_env({"BASTION_SECRET_KEY": WEAK}, environment="production")
    assert caught.value.setting == "BASTION_SECRET_KEY[0]"
    with pytest.raises(ConfigurationError) as caught:
        Bastion.from_env({}, environment="production")
    assert caught.value.setting == "BASTION_SECRET_KEY"


def test_from_env_bad_environment_text_is_refused() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Bastion.from_env({}, environment="prod")
    assert caught.value.setting == "environment"


def test_secret_file_that_is_not_text_is_a_configuration_error_without_its_bytes(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"\xff\xfe" + b"k" * 40)
    with pytest.raises(ConfigurationError) as caught:
        Bastion.from_env({"BASTION_SECRET_KEY_FILE": str(secret)})
    assert caught.value.setting == "BASTION_SECRET_KEY_FILE"
    assert "0xff" not in str(caught.value)
    assert "kkkk" not in str(caught.value)


def test_secret_file_is_read_with_a_bound(tmp_path: Path) -> None:
    # A mistaken path (a log file, /dev/zero) must not be read whole into memory as a "key".
    big = tmp_path / "big"
    big.write_bytes(b"k" * (1 << 20))
    with pytest.raises(ConfigurationError) as caught:
        Bastion.from_env({"BASTION_SECRET_KEY_FILE": str(big)})
    assert caught.value.setting == "BASTION_SECRET_KEY_FILE"
    assert "kkkk" not in str(caught.value)


def test_secret_file_that_is_a_directory_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Bastion.from_env({"BASTION_SECRET_KEY_FILE": str(tmp_path)})
    assert caught.value.setting == "BASTION_SECRET_KEY_FILE"


# -- Runtime in production ----------------------------------------------------------------------


def test_a_weak_key_ring_built_outside_production_is_refused_by_a_production_runtime() -> None:
    # KeyRing.from_secrets() checks the length against the process's ENV; Bastion(environment=
    # PRODUCTION) must hold the ring to the production rule too.
    ring = KeyRing.from_secrets([WEAK], production=False)
    with pytest.raises(ConfigurationError) as caught:
        Bastion(keyring=ring, store="memory://", environment=Environment.PRODUCTION).build()
    assert caught.value.setting == "keyring"


# -- ASGI lifespan --------------------------------------------------------------------------------


def lifespan_app(*, fail: str) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if fail == "startup":
            raise RuntimeError("database migration failed")
        yield
        if fail == "shutdown":
            raise RuntimeError("flush failed")

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("home")

    return Starlette(routes=[Route("/", home)], lifespan=lifespan)


async def run_lifespan(app: Any, messages: list[dict[str, Any]]) -> list[str]:
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    with contextlib.suppress(RuntimeError):
        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    return sent


@pytest.mark.asyncio
@pytest.mark.parametrize("fail", ["startup", "shutdown"])
async def test_a_failed_lifespan_still_closes_the_runtime_protect_built(
    tmp_path: Path, fail: str
) -> None:
    app = bastion.asgi.protect(
        lifespan_app(fail=fail), Bastion(store=f"sqlite:///{tmp_path}/a.db", keyring=KEYRING)
    )
    runtime: bastion.Runtime = app.runtime  # type: ignore[attr-defined]
    assert runtime.store is not None
    sent = await run_lifespan(app, [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    assert sent[-1] == f"lifespan.{fail}.failed"
    with pytest.raises(bastion.StoreError):
        await runtime.store.get("k")  # closed: the server exits, nothing else would close it


@pytest.mark.asyncio
async def test_closing_a_runtime_twice_is_harmless(tmp_path: Path) -> None:
    runtime = Bastion(store=f"sqlite:///{tmp_path}/a.db", keyring=KEYRING).build()
    await runtime.aclose()
    await runtime.aclose()
    runtime.close()


@pytest.mark.asyncio
async def test_a_runtime_never_closes_a_store_the_caller_passed(tmp_path: Path) -> None:
    from bastion.stores.url import open_store  # noqa: PLC0415

    store = open_store(f"sqlite:///{tmp_path}/a.db")
    runtime = Bastion(store=store, keyring=KEYRING).build()
    await runtime.aclose()
    assert await store.get("k") is None  # still open
    await store.aclose()


# -- Flask --------------------------------------------------------------------------------------


def test_flask_protect_twice_on_one_app_is_refused() -> None:
    # A second protect() would stack a second CSRF check and a second runtime (a second store
    # for "memory://") around the first, with the sessions on one and the rate limits on other.
    app = Flask(__name__)
    config = Bastion(store="memory://", keyring=KEYRING)
    bastion.flask.protect(app, config)
    wsgi_app = app.wsgi_app
    with pytest.raises(ConfigurationError) as caught:
        bastion.flask.protect(app, config)
    assert caught.value.setting == "app"
    assert app.wsgi_app is wsgi_app


# -- Proxies --------------------------------------------------------------------------------------

HTTPS = "https://testserver"
FORWARDED_PROXIES = TrustedProxies(["10.0.0.0/8"], header="forwarded")
LIE = {"Forwarded": "for=203.0.113.9", "X-Forwarded-For": "198.51.100.66"}


def login_app() -> Starlette:
    async def sign_in(request: Request) -> PlainTextResponse:
        get_session(request).login("ada")
        return PlainTextResponse("in")

    return Starlette(routes=[Route("/login", sign_in, methods=["POST"])])


async def registry_ips(runtime: bastion.Runtime) -> list[str]:
    assert runtime.sessions is not None
    return sorted(info.ip or "-" for info in await runtime.sessions.list_sessions("ada"))


@pytest.mark.asyncio
async def test_forwarded_header_reaches_the_asgi_session_registry_only_from_a_proxy() -> None:
    runtime = Bastion(
        store=MemoryStore(), keyring=KEYRING, proxies=FORWARDED_PROXIES, environment="test"
    ).build()
    app = bastion.asgi.protect(login_app(), runtime)
    headers = {**browser_headers(HTTPS), **LIE}
    for peer in ("10.0.0.5", "192.0.2.50"):  # a proxy, then a client forging both headers
        transport = httpx.ASGITransport(app=app, client=(peer, 50000))
        async with httpx.AsyncClient(transport=transport, base_url=HTTPS) as http:
            assert (await http.post("/login", headers=headers)).status_code == 200
    assert await registry_ips(runtime) == ["192.0.2.50", "203.0.113.9"]


def wsgi_login(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    bastion.wsgi.get_session(environ).login("ada")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"in"]


def flask_login_app() -> Flask:
    app = Flask(__name__)

    @app.post("/login")
    def sign_in() -> str:
        flask.session.login("ada")  # type: ignore[attr-defined]
        return "in"

    return app


@pytest.mark.asyncio
@pytest.mark.parametrize("adapter", ["wsgi", "flask"])
async def test_forwarded_header_reaches_the_wsgi_session_registry_only_from_a_proxy(
    adapter: str,
) -> None:
    runtime = Bastion(
        store=MemoryStore(), keyring=KEYRING, proxies=FORWARDED_PROXIES, environment="test"
    ).build()
    if adapter == "wsgi":
        app: Any = bastion.wsgi.protect(wsgi_login, runtime)
    else:
        app = flask_login_app()
        bastion.flask.protect(app, runtime)
    headers = {**browser_headers(HTTPS), **LIE}
    for peer in ("10.0.0.5", "192.0.2.50"):
        client = werkzeug.test.Client(app)
        answer = client.post(
            "/login", base_url=HTTPS, headers=headers, environ_base={"REMOTE_ADDR": peer}
        )
        assert answer.status_code == 200, answer.get_data(as_text=True)
    assert await registry_ips(runtime) == ["192.0.2.50", "203.0.113.9"]


@pytest.mark.asyncio
async def test_a_forged_forwarding_header_never_reaches_audit_events() -> None:
    sink = RecordingAuditSink()
    auditor = Auditor(IdentifierHasher(KEYRING), system_clock, sink)
    config = Bastion(
        store=MemoryStore(),
        keyring=KEYRING,
        auditor=auditor,
        proxies=FORWARDED_PROXIES,
        environment="test",
    )
    app = bastion.asgi.protect(login_app(), config)
    forged = {"Sec-Fetch-Site": "cross-site", **LIE}
    for peer in ("192.0.2.50", "10.0.0.5"):
        transport = httpx.ASGITransport(app=app, client=(peer, 50000))
        async with httpx.AsyncClient(transport=transport, base_url=HTTPS) as http:
            assert (await http.post("/login", headers=forged)).status_code == 403
    hasher = IdentifierHasher(KEYRING)
    seen = [e.client_ip for e in sink.events if e.name == "malicious_csrf"]
    assert seen == [
        hasher.hash("192.0.2.50", kind="client_ip"),
        hasher.hash("203.0.113.9", kind="client_ip"),
    ]


# -- SessionMiddleware(bastion=...) -------------------------------------------------------------


def _refuse_all(record: Any) -> bool:
    return False


@pytest.mark.parametrize("family", ["asgi", "wsgi"])
@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("session_filter", _refuse_all),
        ("user_loader", str),
        ("proxies", TrustedProxies(["10.0.0.0/8"])),
        ("auditor", Auditor(IdentifierHasher(KEYRING), system_clock, RecordingAuditSink())),
        ("production", False),
    ],
)
def test_session_middleware_with_bastion_refuses_arguments_it_would_ignore(
    family: str, setting: str, value: Any
) -> None:
    # With bastion= the runtime's engine is served; a session_filter (say, one refusing revoked
    # sessions) or proxies passed beside it were silently dropped.
    runtime = Bastion(store=MemoryStore(), keyring=KEYRING, environment="test").build()
    middleware: Any = (
        bastion.asgi.SessionMiddleware if family == "asgi" else bastion.wsgi.SessionMiddleware
    )
    with pytest.raises(ConfigurationError) as caught:
        middleware(wsgi_login, bastion=runtime, **{setting: value})
    assert caught.value.setting == setting


def test_a_refused_flask_protect_leaves_the_app_as_it_was() -> None:
    # The CSRF layer refuses log_only in production after protect() had already swapped in
    # bastion's sessions: an app that caught the error served cookie sessions with no CSRF
    # check, and a corrected second call was refused as "already called".
    from bastion.core.csrf import CSRFConfig  # noqa: PLC0415

    app = flask_login_app()
    interface, wsgi_app = app.session_interface, app.wsgi_app
    refused = Bastion(
        store=MemoryStore(),
        keyring=KEYRING,
        csrf=CSRFConfig(log_only=True),
        environment=Environment.PRODUCTION,
    )
    with pytest.raises(ConfigurationError) as caught:
        bastion.flask.protect(app, refused)
    assert caught.value.setting == "log_only"
    assert app.session_interface is interface
    assert app.wsgi_app == wsgi_app
    assert "bastion" not in app.extensions
    runtime = bastion.flask.protect(app, refused.replace(csrf=CSRFConfig()))
    answer = werkzeug.test.Client(app).post("/login", base_url=HTTPS)
    assert answer.status_code == 403  # CSRF on: no browser headers, no token
    assert runtime.sessions is not None


def test_secret_file_symlink_loop_and_device_are_configuration_errors(tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    for path in (str(loop), "/dev/zero"):
        with pytest.raises(ConfigurationError) as caught:
            Bastion.from_env({"BASTION_SECRET_KEY_FILE": path})
        assert caught.value.setting == "BASTION_SECRET_KEY_FILE"


@pytest.mark.asyncio
async def test_an_app_raising_after_startup_still_has_its_runtime_closed(tmp_path: Path) -> None:
    async def raw(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        raise RuntimeError("crashed during shutdown, said nothing")

    app = bastion.asgi.protect(raw, Bastion(store=f"sqlite:///{tmp_path}/a.db", keyring=KEYRING))
    runtime: bastion.Runtime = app.runtime  # type: ignore[attr-defined]
    assert runtime.store is not None
    sent = await run_lifespan(app, [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    assert sent == ["lifespan.startup.complete"]
    with pytest.raises(bastion.StoreError):
        await runtime.store.get("k")


@pytest.mark.asyncio
async def test_an_app_without_lifespan_support_keeps_its_runtime_open(tmp_path: Path) -> None:
    # The server keeps serving such an app after its lifespan raised: the store must stay open.
    async def raw(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan here")

    app = bastion.asgi.protect(raw, Bastion(store=f"sqlite:///{tmp_path}/a.db", keyring=KEYRING))
    runtime: bastion.Runtime = app.runtime  # type: ignore[attr-defined]
    assert runtime.store is not None
    assert await run_lifespan(app, [{"type": "lifespan.startup"}]) == []
    assert await runtime.store.get("k") is None
    await runtime.aclose()


class _BrokenSink:
    """An audit sink whose backend has gone away by shutdown."""

    def __init__(self) -> None:
        self.broken = False

    def emit(self, event: Any) -> None:
        if self.broken:
            raise OSError("log shipper gone")


@pytest.mark.asyncio
async def test_a_failing_audit_flush_still_closes_the_store(tmp_path: Path) -> None:
    from bastion.core.audit import Outcome  # noqa: PLC0415

    sink = _BrokenSink()
    auditor = Auditor(IdentifierHasher(KEYRING), system_clock, sink)
    runtime = Bastion(store=f"sqlite:///{tmp_path}/a.db", keyring=KEYRING, auditor=auditor).build()
    for _ in range(3):  # a flood: counted, its summary written at flush
        auditor.emit("malicious_csrf", outcome=Outcome.BLOCKED, client_ip="192.0.2.1")
    sink.broken = True
    assert runtime.store is not None
    with pytest.raises(OSError, match="log shipper gone"):
        await runtime.aclose()
    with pytest.raises(bastion.StoreError):
        await runtime.store.get("k")
