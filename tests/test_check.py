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


def test_whole_number_names_its_unit_and_a_hint() -> None:
    error = refused(
        _check.whole_number, "hsts_max_age", -1, low=0, unit="seconds", hint="or None for none"
    )
    assert str(error).startswith(
        "hsts_max_age must be a whole number of seconds >= 0 (or None for none), got -1"
    )


def test_seconds_with_a_top() -> None:
    assert _check.seconds("interval", 86_400, high=86_400) == 86_400.0
    error = refused(_check.seconds, "interval", 86_401, high=86_400, hint="one day")
    assert str(error).startswith(
        "interval must be a finite number of seconds > 0 and at most 86400 (one day), got 86401"
    )


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


def _wording_cases() -> list[tuple[Any, str, str]]:
    from bastion.core.apikeys import RateLimitSetting  # noqa: PLC0415
    from bastion.core.audit import AuditAggregation  # noqa: PLC0415
    from bastion.core.csrf import CSRFConfig  # noqa: PLC0415
    from bastion.core.headers import HeaderPolicy  # noqa: PLC0415
    from bastion.core.passwords import PasswordPolicy, generate_password  # noqa: PLC0415

    return [
        (lambda: HeaderPolicy(nosniff=1), "nosniff", "nosniff must be True or False"),
        (
            lambda: HeaderPolicy(hsts_max_age=-1),
            "hsts_max_age",
            "hsts_max_age must be a whole number of seconds >= 0 (or None to send no HSTS), got -1",
        ),
        (
            lambda: HeaderPolicy(extra={"Bad Name": "x"}),
            "extra",
            (
                "extra must be an HTTP header name (letters, digits and !#$%&'*+-.^_`|~), got "
                "'Bad Name'"
            ),
        ),
        (lambda: CSRFConfig(log_only="yes"), "log_only", "log_only must be True or False"),
        (
            lambda: CSRFConfig(max_body_bytes=10),
            "max_body_bytes",
            "max_body_bytes must be a whole number of bytes from 1024 to 67108864, got 10",
        ),
        (
            lambda: AuditAggregation(interval=0),
            "interval",
            "interval must be a finite number of seconds > 0 and at most 86400 (one day), got 0",
        ),
        (
            lambda: AuditAggregation(max_keys=0),
            "max_keys",
            "max_keys must be a whole number from 1 to 1000000, got 0",
        ),
        (
            lambda: RateLimitSetting(limit=0, period=60),
            "rate_limit.limit",
            "rate_limit.limit must be a whole number of requests >= 1, got 0",
        ),
        (
            lambda: RateLimitSetting(limit=5, period=float("inf")),
            "rate_limit.period",
            "rate_limit.period must be a finite number of seconds > 0, got inf",
        ),
        (
            lambda: PasswordPolicy(min_length=0),
            "min_length",
            "min_length must be a whole number of characters >= 1, got 0",
        ),
        (
            lambda: generate_password(length=4),
            "length",
            "length must be a whole number from 8 to 1024, got 4",
        ),
    ]


def test_the_configs_speak_the_shared_wording() -> None:
    """The header, CSRF, audit, API-key and password settings are checked by these helpers:
    the same sentence for the same kind of mistake, naming the setting."""
    for make, setting, message in _wording_cases():
        error = refused(make)
        assert error.setting == setting
        assert str(error).startswith(message), str(error)
