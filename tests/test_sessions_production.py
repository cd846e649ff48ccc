"""``ENV=production`` refuses every insecure session-cookie setting; elsewhere each is logged."""

from __future__ import annotations

import itertools
import logging

import pytest

from bastion.asgi import SessionMiddleware
from bastion.core.cookies import SameSite
from bastion.core.sessions import SessionConfig
from bastion.errors import ConfigurationError
from bastion.stores.memory import MemoryStore
from bastion.wsgi import SessionMiddleware as WSGISessionMiddleware

COMBINATIONS = [
    (secure, http_only, same_site, development)
    for secure, http_only, same_site, development in itertools.product(
        (True, False), (True, False), tuple(SameSite), (True, False)
    )
    # secure=False needs development=True, and SameSite=None needs Secure: not constructible
    if (secure or development) and (secure or same_site is not SameSite.NONE)
]


def config_of(
    secure: bool, http_only: bool, same_site: SameSite, development: bool
) -> SessionConfig:
    return SessionConfig(
        secure=secure, http_only=http_only, same_site=same_site, development=development
    )


def is_safe(secure: bool, http_only: bool, same_site: SameSite, development: bool) -> bool:
    return secure and http_only and same_site is not SameSite.NONE and not development


@pytest.mark.parametrize(("secure", "http_only", "same_site", "development"), COMBINATIONS)
def test_every_insecure_combination_is_refused_in_production(
    secure: bool,
    http_only: bool,
    same_site: SameSite,
    development: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = config_of(secure, http_only, same_site, development)
    if is_safe(secure, http_only, same_site, development):
        config.check_environment(production=True)
        with caplog.at_level(logging.WARNING, logger="bastion.security.sessions"):
            config.check_environment(production=False)
        assert caplog.records == []
        return
    with pytest.raises(ConfigurationError) as caught:
        config.check_environment(production=True)
    assert caught.value.setting in {"development", "http_only", "same_site"}
    assert "ENV=production" in str(caught.value)
    # Outside production the same setting starts, with a warning naming it.
    with caplog.at_level(logging.WARNING, logger="bastion.security.sessions"):
        config.check_environment(production=False)
    assert caplog.records
    assert all(r.name == "bastion.security.sessions" for r in caplog.records)
    assert caught.value.setting is not None
    assert caught.value.setting in caplog.text


async def _app(scope: object, receive: object, send: object) -> None:  # pragma: no cover
    return None


@pytest.mark.parametrize(
    "config",
    [
        SessionConfig(http_only=False),
        SessionConfig(same_site=SameSite.NONE),
        SessionConfig(same_site="None"),  # type: ignore[arg-type]
        SessionConfig(development=True, secure=False),
    ],
)
def test_the_middlewares_refuse_them_under_env_production(
    config: SessionConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENV", "production")
    monkeypatch.delenv("BASTION_ENV", raising=False)
    with pytest.raises(ConfigurationError):
        SessionMiddleware(_app, store=MemoryStore(), config=config)
    with pytest.raises(ConfigurationError):
        WSGISessionMiddleware(lambda e, s: [], store=MemoryStore(), config=config)
    SessionMiddleware(_app, store=MemoryStore(), config=SessionConfig())  # the default starts
