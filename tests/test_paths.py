"""The one path-pattern grammar (bastion.core.paths): how patterns are written and matched."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.core.paths import EVERYWHERE, PathPattern, parse_patterns
from bastion.core.request import match_forms
from bastion.errors import ConfigurationError


def pattern(text: str) -> PathPattern:
    return PathPattern.parse(text, setting="path")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("api", "must be a path starting with '/'"),
        ("/hooks/", "write '/hooks/*' for the prefix or '/hooks' for the exact path"),
        ("/a*", "is not a final '/*' segment"),
        ("/*/x", "is not a final '/*' segment"),
        ("/a//b", "would never match"),
        ("/a/../b", "would never match"),
        (3, "must be a path starting with '/'"),
    ],
)
def test_malformed_patterns_name_the_setting(text: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)) as caught:
        PathPattern.parse(text, setting="exempt")
    assert caught.value.setting == "exempt"


def test_exact_and_prefix_are_written_the_same_way_for_every_use() -> None:
    exact, prefix = pattern("/login"), pattern("/api/*")
    assert (exact.prefix, exact.base, prefix.prefix, prefix.base) == (False, "/login", True, "/api")
    # protective readings: case, trailing slash and dot segments never escape the rule
    assert exact.covers(match_forms("/LOGIN/"))
    assert exact.covers(match_forms("/x/../login"))
    assert not exact.covers(match_forms("/login/x"))
    assert prefix.covers(match_forms("/api"))
    assert prefix.covers(match_forms("/Api/x"))
    assert not prefix.covers(match_forms("/apix"))
    # exemptions: only a path in normal form, exactly as written
    assert exact.exempts("/login")
    assert not exact.exempts("/Login")
    assert not exact.exempts("/login/")
    assert not exact.exempts("//login")
    assert prefix.exempts("/api/x")
    assert prefix.exempts("/api")
    assert not prefix.exempts("/apix")
    assert not prefix.exempts("/api/../admin")


def test_everywhere() -> None:
    assert EVERYWHERE.everywhere
    assert EVERYWHERE.covers(("/anything",))
    assert EVERYWHERE.exempts("/x")
    assert not EVERYWHERE.exempts("/x/../y")
    assert str(EVERYWHERE) == "/*"


def test_parse_patterns_takes_one_or_many() -> None:
    assert parse_patterns("/a", setting="s") == (pattern("/a"),)
    assert parse_patterns(["/a", pattern("/b/*")], setting="s") == (pattern("/a"), pattern("/b/*"))
    with pytest.raises(ConfigurationError, match="list of them"):
        parse_patterns(42, setting="s")


segment = st.text(alphabet="abcXYZ09-_", min_size=1, max_size=5)


@given(st.lists(segment, min_size=1, max_size=4), st.lists(segment, max_size=3))
def test_a_prefix_covers_and_exempts_what_is_below_it(base: list[str], rest: list[str]) -> None:
    root = "/" + "/".join(base)
    path = root + "".join("/" + part for part in rest)
    prefix = pattern(root + "/*")
    assert prefix.exempts(path)
    assert prefix.covers(match_forms(path))
    assert prefix.covers(match_forms(path.upper()))
    assert not pattern(root).exempts(path) or not rest
    sibling = root + "x"
    assert not prefix.exempts(sibling)
    assert not prefix.covers(match_forms(sibling))
