"""``ENV`` / ``BASTION_ENV``: an unknown value is a start-up error, and production always wins."""

from __future__ import annotations

import pytest

from bastion.asgi import SessionMiddleware
from bastion.core.environment import Environment, current_environment, is_production
from bastion.core.sessions import SessionConfig
from bastion.errors import ConfigurationError
from bastion.stores.memory import MemoryStore


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({}, Environment.UNKNOWN),
        ({"ENV": ""}, Environment.UNKNOWN),
        ({"ENV": "production"}, Environment.PRODUCTION),
        ({"ENV": " Prod "}, Environment.PRODUCTION),
        ({"BASTION_ENV": "production"}, Environment.PRODUCTION),
        ({"ENV": "development"}, Environment.DEVELOPMENT),
        ({"ENV": "test", "BASTION_ENV": "dev"}, Environment.DEVELOPMENT),  # BASTION_ENV wins
        # Production asked for by either variable is never weakened by the other.
        ({"ENV": "production", "BASTION_ENV": "development"}, Environment.PRODUCTION),
        ({"ENV": "dev", "BASTION_ENV": "production"}, Environment.PRODUCTION),
        # An app whose ENV means something else names bastion's environment in BASTION_ENV.
        ({"ENV": "staging", "BASTION_ENV": "production"}, Environment.PRODUCTION),
        ({"ENV": "qa-3", "BASTION_ENV": "test"}, Environment.TEST),
    ],
)
def test_known_values(variables: dict[str, str], expected: Environment) -> None:
    assert current_environment(variables) is expected
    assert is_production(variables) is (expected is Environment.PRODUCTION)


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"ENV": "production", "BASTION_ENV": "prodution"}, "BASTION_ENV"),
        ({"ENV": "production", "BASTION_ENV": "staging"}, "BASTION_ENV"),
        ({"BASTION_ENV": "live"}, "BASTION_ENV"),
        ({"ENV": "staging"}, "ENV"),
        ({"ENV": "live"}, "ENV"),
        ({"ENV": "prodution"}, "ENV"),
    ],
)
def test_an_unknown_value_is_a_start_up_error(variables: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        current_environment(variables)
    message = str(caught.value)
    assert caught.value.setting == named
    assert f"{named}={variables[named]!r}" in message
    assert "production, prod, development, dev, test, testing" in message


def test_a_middleware_refuses_to_start_under_a_misspelt_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENV", "production")
    monkeypatch.setenv("BASTION_ENV", "prodution")
    config = SessionConfig(development=True, secure=False)

    async def app(scope: object, receive: object, send: object) -> None:  # pragma: no cover
        return None

    with pytest.raises(ConfigurationError) as caught:
        SessionMiddleware(app, store=MemoryStore(), config=config)
    assert caught.value.setting == "BASTION_ENV"
    monkeypatch.setenv("BASTION_ENV", "production")
    with pytest.raises(ConfigurationError) as refused:
        SessionMiddleware(app, store=MemoryStore(), config=config)
    assert refused.value.setting == "development"
