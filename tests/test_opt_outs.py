"""Every setting that turns a protection off is logged on ``bastion.security.*`` at start-up,
and refused under ``ENV=production`` where it removes the protection outright.

The list (README, "Opting out"): CSRF ``check_websocket_origin=False``, ``log_only=True``,
``development=True`` (refused in production), ``skip_authenticated=True`` and ``exempt=...``
(logged); sessions ``development``, ``http_only=False``, ``same_site=None`` (refused in
production, tests/test_sessions_production.py) and ``clear_site_data=False`` (logged); rate
limits ``shadow=True``, ``on_failure="open"``, ``websockets=False``, ``header_key(...,
hash_value=False)`` and a ``trusted_proxies`` entry that trusts every address (logged); the
login throttle's ``device_cookie(..., secure=False)`` (refused in production).
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

with warnings.catch_warnings():
    from starlette.exceptions import StarletteDeprecationWarning

    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from bastion.asgi import CSRFMiddleware, RateLimitMiddleware
from bastion.asgi.ratelimit import header_key
from bastion.config import Bastion
from bastion.core.client import TrustedProxies
from bastion.core.clock import FrozenClock
from bastion.core.csrf import CSRFConfig, TokenSource
from bastion.core.environment import Environment
from bastion.core.keys import KeyRing
from bastion.core.sessions import SessionConfig
from bastion.engine.ratelimit import RateLimiter, Rule
from bastion.errors import ConfigurationError
from bastion.stores.memory import MemoryStore
from bastion.wsgi import CSRFMiddleware as WSGICSRFMiddleware
from bastion.wsgi.ratelimit import header_key as wsgi_header_key

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

KEYRING = KeyRing.from_secrets(["o" * 43])


def security_warnings(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == logger and r.levelno == logging.WARNING
    ]


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("in")
    await websocket.close()


def ws_app(config: CSRFConfig, *, production: bool | None) -> Any:
    inner = Starlette(routes=[WebSocketRoute("/ws", echo)])
    return CSRFMiddleware(inner, config=config, keyring=KEYRING, production=production)


# -- CSRF --------------------------------------------------------------------------------------


def test_websocket_origin_check_off_is_refused_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = CSRFConfig(check_websocket_origin=False, token_source=TokenSource.DOUBLE_SUBMIT)
    with pytest.raises(ConfigurationError) as caught:
        ws_app(config, production=True)
    assert caught.value.setting == "check_websocket_origin"
    monkeypatch.setenv("ENV", "production")
    with pytest.raises(ConfigurationError):
        ws_app(config, production=None)
    for create in (lambda: WSGICSRFMiddleware(lambda e, s: [], config=config, keyring=KEYRING),):
        with pytest.raises(ConfigurationError):
            create()


def test_websocket_origin_check_off_is_logged_and_lets_a_foreign_origin_in(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = CSRFConfig(check_websocket_origin=False, token_source=TokenSource.DOUBLE_SUBMIT)
    with caplog.at_level(logging.WARNING):
        app = ws_app(config, production=False)
    logged = security_warnings(caplog, "bastion.security.csrf")
    assert len(logged) == 1
    assert "check_websocket_origin=False" in logged[0]
    with (
        TestClient(app, base_url="https://testserver") as client,
        client.websocket_connect("/ws", headers={"Origin": "https://evil.example"}) as ws,
    ):
        assert ws.receive_text() == "in"  # what the opt-out does, as documented


def test_log_only_is_refused_in_production_and_logged_elsewhere(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = CSRFConfig(log_only=True, token_source=TokenSource.DOUBLE_SUBMIT)
    with pytest.raises(ConfigurationError) as caught:
        ws_app(config, production=True)
    assert caught.value.setting == "log_only"
    with caplog.at_level(logging.WARNING):
        ws_app(config, production=False)
    assert any("log_only=True" in m for m in security_warnings(caplog, "bastion.security.csrf"))


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"skip_authenticated": True}, "skip_authenticated=True"),
        ({"exempt": ("/hooks/*", "/webhook")}, "exempt="),
        ({"development": True}, "development=True"),
    ],
)
def test_other_csrf_opt_outs_are_logged(
    options: dict[str, Any], needle: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = CSRFConfig(token_source=TokenSource.DOUBLE_SUBMIT, **options)
    with caplog.at_level(logging.WARNING):
        ws_app(config, production=False)
    logged = security_warnings(caplog, "bastion.security.csrf")
    assert any(needle in m for m in logged), logged
    if "exempt" in options:
        assert "'/hooks/*'" in next(m for m in logged if needle in m)
        ws_app(config, production=True)  # webhooks are legitimate in production


def test_the_safe_csrf_defaults_log_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        ws_app(CSRFConfig(token_source=TokenSource.DOUBLE_SUBMIT), production=True)
    assert security_warnings(caplog, "bastion.security.csrf") == []


# -- sessions --------------------------------------------------------------------------------


def test_clear_site_data_off_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        SessionConfig(clear_site_data=False).check_environment(production=True)
    logged = security_warnings(caplog, "bastion.security.sessions")
    assert len(logged) == 1
    assert "clear_site_data=False" in logged[0]


# -- rate limits ------------------------------------------------------------------------------


def limiter(**options: Any) -> RateLimiter:
    return RateLimiter(MemoryStore(clock=FrozenClock(1_700_000_000.0)), **options)


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda: Rule("x", "1/minute", shadow=True), "shadow=True"),
        (lambda: Rule("x", "1/minute", on_failure="open"), "on_failure='open'"),
        (lambda: limiter(shadow=True), "shadow=True"),
        (
            lambda: RateLimitMiddleware(
                Starlette(), limiter(), Rule("x", "1/minute"), websockets=False
            ),
            "websockets=False",
        ),
        (lambda: header_key("X-API-Key", hash_value=False), "hash_value=False"),
        (lambda: wsgi_header_key("X-API-Key", hash_value=False), "hash_value=False"),
    ],
)
def test_rate_limit_opt_outs_are_logged(
    build: Any, needle: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        build()
    logged = security_warnings(caplog, "bastion.security.ratelimit")
    assert len(logged) == 1, logged
    assert needle in logged[0]


@pytest.mark.parametrize("network", ["0.0.0.0/0", "::/0"])
def test_trusting_every_address_is_logged(network: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        TrustedProxies([network])
    logged = security_warnings(caplog, "bastion.security.proxies")
    assert len(logged) == 1, logged
    assert network in logged[0]


def test_rate_limit_defaults_log_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        rule = Rule("x", "1/minute; 10/hour", on_failure="closed")
        RateLimitMiddleware(Starlette(), limiter(), rule)
        header_key("X-API-Key")
        TrustedProxies(["10.0.0.0/8", "::1"])
    assert security_warnings(caplog, "bastion.security.ratelimit") == []
    assert security_warnings(caplog, "bastion.security.proxies") == []


def _inner(scope: Any, receive: Any, send: Any) -> Any:
    raise AssertionError("never called: these tests only build the stack")


def test_protect_without_csrf_over_cookie_sessions_is_refused_in_production(
    tmp_path: Any,
) -> None:
    from bastion.asgi import protect as asgi_protect  # noqa: PLC0415
    from bastion.wsgi import protect as wsgi_protect  # noqa: PLC0415

    store = f"sqlite:///{tmp_path / 'p.db'}"
    production = Environment.PRODUCTION
    for protect in (asgi_protect, wsgi_protect):
        with pytest.raises(ConfigurationError) as caught:
            protect(
                _inner, Bastion(store=store, keyring=KEYRING, csrf=None, environment=production)
            )
        assert caught.value.setting == "csrf"
        assert "no CSRF check" in str(caught.value)


def test_protect_layer_opt_outs_are_logged(caplog: pytest.LogCaptureFixture, tmp_path: Any) -> None:
    from bastion.asgi import protect as asgi_protect  # noqa: PLC0415
    from bastion.wsgi import protect as wsgi_protect  # noqa: PLC0415

    store = f"sqlite:///{tmp_path / 'p.db'}"
    production = Environment.PRODUCTION
    dev = SessionConfig(development=True, secure=False)
    for protect in (asgi_protect, wsgi_protect):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="bastion.security.protect"):
            protect(_inner, Bastion(store=store, sessions=dev, keyring=KEYRING, csrf=None,
                    headers=None, environment=Environment.TEST))  # fmt: skip
        found = security_warnings(caplog, "bastion.security.protect")
        assert any("csrf=None" in m and "cookie sessions are on" in m for m in found), found
        assert any("headers=None" in m for m in found), found
        # Without sessions, csrf=None is an API's choice: logged, and allowed in production.
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="bastion.security.protect"):
            protect(_inner, Bastion(keyring=KEYRING, csrf=None, environment=production))
        found = security_warnings(caplog, "bastion.security.protect")
        assert any("csrf=None" in m for m in found), found
        assert not any("cookie sessions" in m for m in found), found


# -- login throttle ---------------------------------------------------------------------------


def test_a_device_cookie_without_secure_is_refused_in_production_and_logged_elsewhere(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from bastion.engine.throttle import LoginThrottle  # noqa: PLC0415
    from bastion.stores.memory import MemoryStore  # noqa: PLC0415

    production = LoginThrottle(MemoryStore(), KEYRING, production=True)
    value = production.new_device_cookie("alice")
    assert "Secure" in production.device_cookie(value).serialize()
    with pytest.raises(ConfigurationError) as caught:
        production.device_cookie(value, secure=False)
    assert caught.value.setting == "secure"
    development = LoginThrottle(MemoryStore(), KEYRING, production=False)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert "Secure" not in development.device_cookie(value, secure=False).serialize()
    logged = security_warnings(caplog, "bastion.security.throttle")
    assert len(logged) == 1, logged  # once per throttle, not per login
    assert "secure=False" in logged[0]
