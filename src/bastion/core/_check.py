"""Validators shared by the frozen configs' ``__post_init__``: one wording per kind of mistake.

Each takes the setting's name first, so the :class:`~bastion.errors.ConfigurationError` names it
(``setting=``) and says what the value must be; each returns the value it accepted (seconds as a
``float``, a header name lowercased), so a ``__post_init__`` reads as a list of settings. Checks
that relate two settings, or that name a fix only one config knows, stay in that config.
"""

from __future__ import annotations

import math
import re
from typing import Final

from bastion.errors import ConfigurationError

__all__ = ["flag", "header_name", "seconds", "text", "whole_number"]

_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}", re.ASCII)


def flag(name: str, value: object) -> bool:
    """``value`` if it is ``True`` or ``False`` (not ``1``, not ``"yes"``)."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False", setting=name)
    return value


def _hint(hint: str) -> str:
    return f" ({hint})" if hint else ""


def whole_number(
    name: str,
    value: object,
    *,
    low: int,
    high: int | None = None,
    unit: str = "",
    hint: str = "",
) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) from ``low`` to ``high`` inclusive.
    ``unit`` names what it counts (``"seconds"``: "a whole number of seconds"); ``hint`` is
    said in parentheses (``"or None to send no HSTS"``)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        wanted = f">= {low}" if high is None else f"from {low} to {high}"
        counted = f" of {unit}" if unit else ""
        raise ConfigurationError(
            f"{name} must be a whole number{counted} {wanted}{_hint(hint)}, got {value!r}",
            setting=name,
        )
    return value


def seconds(
    name: str,
    value: object,
    *,
    allow_zero: bool = False,
    high: float | None = None,
    hint: str = "",
) -> float:
    """``value`` as a float if it is a finite number of seconds above 0 (or 0 with
    ``allow_zero``), and at most ``high`` when given; ``hint`` as for :func:`whole_number`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
        or (high is not None and value > high)
    ):
        bound = ">= 0" if allow_zero else "> 0"
        if high is not None:
            bound += f" and at most {high:g}"
        raise ConfigurationError(
            f"{name} must be a finite number of seconds {bound}{_hint(hint)}, got {value!r}",
            setting=name,
        )
    return float(value)


def text(name: str, value: object) -> str:
    """``value`` if it is a ``str`` with something besides whitespace."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{name} must be non-empty text, got {value!r}", setting=name)
    return value


def header_name(name: str, value: object) -> str:
    """``value`` lowercased, if it is an HTTP header name (an RFC 9110 token, 1-256 chars)."""
    if not isinstance(value, str) or _TOKEN.fullmatch(value) is None:
        raise ConfigurationError(
            f"{name} must be an HTTP header name (letters, digits and !#$%&'*+-.^_`|~), "
            f"got {value!r}",
            setting=name,
        )
    return value.lower()
