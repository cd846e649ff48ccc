"""Which environment the app runs in: the one place bastion reads ``ENV`` / ``BASTION_ENV``.

Production forbids unsafe combinations outright (a short secret, development mode, a removed
protection); other environments allow them with a logged warning.

Two variables, read so that a mistake can never turn production off:

* ``BASTION_ENV`` names bastion's environment; ``ENV`` is read too, since many apps set it.
* Either one saying production makes it production: the other cannot weaken it
  (``ENV=production BASTION_ENV=development`` is production).
* Otherwise ``BASTION_ENV`` wins over ``ENV``, so an app whose ``ENV`` means something else
  (``ENV=staging``) tells bastion what it is with ``BASTION_ENV``.
* A value bastion does not know (``prodution``, ``staging``, ``live``) is a
  :class:`~bastion.errors.ConfigurationError` at start-up, naming the variable and the accepted
  values, instead of silently meaning "not production". An unknown ``ENV`` is tolerated only
  when ``BASTION_ENV`` holds a known value.
"""

from __future__ import annotations

import enum
import os
from typing import TYPE_CHECKING, Final

from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Environment", "current_environment", "is_production", "read_setting"]


class Environment(enum.StrEnum):
    PRODUCTION = "production"
    DEVELOPMENT = "development"
    TEST = "test"
    UNKNOWN = "unknown"


_ALIASES: Final = {
    "production": Environment.PRODUCTION,
    "prod": Environment.PRODUCTION,
    "development": Environment.DEVELOPMENT,
    "dev": Environment.DEVELOPMENT,
    "test": Environment.TEST,
    "testing": Environment.TEST,
}


_ACCEPTED: Final = ", ".join(_ALIASES)


def _read(env: Mapping[str, str], name: str) -> Environment | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    found = _ALIASES.get(raw.lower())
    if found is None:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        hint = " (or leave ENV to the app and set BASTION_ENV)" if name == "ENV" else ""
        raise ConfigurationError(
            f"{name}={shown!r} is not an environment bastion knows; use one of {_ACCEPTED}"
            f"{hint}. An unknown value would silently turn production's refusals off",
            setting=name,
        )
    return found


def current_environment(variables: Mapping[str, str] | None = None) -> Environment:
    """The environment from ``BASTION_ENV`` and ``ENV`` in ``variables`` (default
    ``os.environ``), by the rules of the module docstring. ``UNKNOWN`` when neither is set.

    Raises :class:`~bastion.errors.ConfigurationError` for a value it does not know.
    """
    env = os.environ if variables is None else variables
    ours = _read(env, "BASTION_ENV")
    try:
        theirs = _read(env, "ENV")
    except ConfigurationError:
        if ours is None:
            raise
        theirs = None  # the app's own meaning of ENV; BASTION_ENV says what bastion needs
    if Environment.PRODUCTION in {ours, theirs}:
        return Environment.PRODUCTION
    return ours or theirs or Environment.UNKNOWN


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
