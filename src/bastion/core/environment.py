"""Which environment the app runs in: the one place bastion reads ``ENV`` / ``BASTION_ENV``.

Production forbids unsafe combinations outright (a short secret, development mode); other
environments allow them with a logged warning. ``BASTION_ENV`` wins over ``ENV`` when both are
set, so an app whose ``ENV`` means something else can still tell bastion what it is.
"""

from __future__ import annotations

import enum
import os
from typing import TYPE_CHECKING

from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Environment", "current_environment", "is_production", "read_setting"]


class Environment(enum.StrEnum):
    PRODUCTION = "production"
    DEVELOPMENT = "development"
    TEST = "test"
    UNKNOWN = "unknown"


_ALIASES = {
    "production": Environment.PRODUCTION,
    "prod": Environment.PRODUCTION,
    "development": Environment.DEVELOPMENT,
    "dev": Environment.DEVELOPMENT,
    "test": Environment.TEST,
    "testing": Environment.TEST,
}


def current_environment(variables: Mapping[str, str] | None = None) -> Environment:
    """Read ``BASTION_ENV`` (then ``ENV``) from ``variables`` (default ``os.environ``)."""
    env = os.environ if variables is None else variables
    raw = env.get("BASTION_ENV") or env.get("ENV") or ""
    return _ALIASES.get(raw.strip().lower(), Environment.UNKNOWN)


def is_production(variables: Mapping[str, str] | None = None) -> bool:
    return current_environment(variables) is Environment.PRODUCTION


def read_setting(name: str, variables: Mapping[str, str] | None = None) -> str | None:
    """The value of the ``BASTION_*`` variable ``name`` (default source ``os.environ``), or
    ``None`` when it is unset or empty. Only names starting with ``BASTION_`` are read, so this
    cannot be used to reach unrelated secrets of the process.

    Danger: a value may be a secret (``BASTION_DEMO_PASSWORD``); never log it.
    """
    if not name.startswith("BASTION_") or not name[8:].replace("_", "").isalnum():
        raise ConfigurationError(
            f"read_setting() reads BASTION_* names only, got {name!r}", setting="name"
        )
    env = os.environ if variables is None else variables
    value = env.get(name)
    return value if value else None
