"""A double-submit cookie is verified by HMAC once; its verified secret is remembered.

A returning browser sends the same cookie on every request; its MAC cannot change, so the
result of verifying it is kept (bounded, successes only: a forged cookie is checked every time
and never stored). Identity is part of what is remembered: a cookie verified for one user is
not for another. The token submitted with the cookie is still checked on every request.
"""

from __future__ import annotations

from bastion.core.csrf import DoubleSubmit
from bastion.core.csrf.tokens import MAX_VERIFIED_COOKIES
from bastion.core.keys import KeyRing


def test_a_verified_cookie_is_remembered_for_its_identity_only() -> None:
    double = DoubleSubmit(KeyRing.generate())
    cookie, secret = double.issue("alice")
    assert double.verify(cookie, "alice") == secret
    assert double.remembered == 1
    assert double.verify(cookie, "alice") == secret
    assert double.verify(cookie, "bob") is None
    assert double.verify(cookie, "") is None
    assert double.remembered == 1


def test_forged_cookies_are_never_remembered() -> None:
    double = DoubleSubmit(KeyRing.generate())
    cookie, _secret = double.issue("alice")
    value, _dot, mac = cookie.partition(".")
    other, _ = DoubleSubmit(KeyRing.generate()).issue("alice")
    for forged in (value + "." + mac[::-1], other, value, "x" * 90, cookie + "x"):
        assert double.verify(forged, "alice") is None
    assert double.remembered == 0


def test_what_is_remembered_is_bounded() -> None:
    double = DoubleSubmit(KeyRing.generate())
    cookies = [double.issue("u")[0] for _ in range(MAX_VERIFIED_COOKIES + 10)]
    for cookie in cookies:
        assert double.verify(cookie, "u") is not None
    assert 0 < double.remembered <= MAX_VERIFIED_COOKIES
    assert all(double.verify(cookie, "u") is not None for cookie in cookies)
