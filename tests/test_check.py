"""The shared validators of ``bastion.core._check``: each refuses with a ConfigurationError that
names the setting and says what it must be, and returns the value it accepted."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bastion.core import _check
from bastion.errors import ConfigurationError


def refused(call: Any, *args: Any, **kwargs: Any) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as caught:
        call(*args, **kwargs)
    return caught.value


@pytest.mark.parametrize("value", [0, 1, None, "yes", 1.0])
def test_flag_refuses_anything_but_a_bool(value: Any) -> None:
    error = refused(_check.flag, "secure", value)
    assert error.setting == "secure"
    assert "must be True or False" in str(error)


def test_flag_accepts_bools() -> None:
    assert _check.flag("secure", True) is True
    assert _check.flag("secure", False) is False


@pytest.mark.parametrize("value", [True, 1.5, "3", None, -1, 11])
def test_whole_number_bounds(value: Any) -> None:
    error = refused(_check.whole_number, "burst", value, low=0, high=10)
    assert error.setting == "burst"
    assert "whole number from 0 to 10" in str(error)


def test_whole_number_without_a_top() -> None:
    assert _check.whole_number("n", 10**9, low=1) == 10**9
    assert "whole number >= 1" in str(refused(_check.whole_number, "n", 0, low=1))


@pytest.mark.parametrize("value", [0, -1, math.inf, math.nan, True, "1", None])
def test_seconds_are_positive_and_finite(value: Any) -> None:
    error = refused(_check.seconds, "window", value)
    assert error.setting == "window"
    assert "finite number of seconds > 0" in str(error)


def test_seconds_accepts_ints_and_floats_as_floats() -> None:
    assert _check.seconds("window", 2) == 2.0
    assert isinstance(_check.seconds("window", 2), float)
    assert _check.seconds("grace", 0, allow_zero=True) == 0.0
    assert ">= 0" in str(refused(_check.seconds, "grace", -1, allow_zero=True))


@pytest.mark.parametrize("value", ["", "   ", None, 3, b"x"])
def test_text_is_non_empty(value: Any) -> None:
    error = refused(_check.text, "issuer", value)
    assert (error.setting, "non-empty text" in str(error)) == ("issuer", True)


@pytest.mark.parametrize("value", ["", "x y", "x:y", "é", None, "a" * 300])
def test_header_name_is_a_token(value: Any) -> None:
    error = refused(_check.header_name, "header_name", value)
    assert error.setting == "header_name"
    assert "HTTP header name" in str(error)


def test_header_name_is_returned_lowercased() -> None:
    assert _check.header_name("header_name", "X-CSRF-Token") == "x-csrf-token"
