"""``find_cookie(header, name)`` is ``parse_cookie(header).get(name)``, without the dict.

The CSRF layer reads one cookie of a request; it must read the same one the parser would (the
first of duplicates, trimmed the same way, quotes dropped the same way), or a crafted header
could make the two disagree.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bastion.core.cookies import find_cookie, parse_cookie

PIECES = st.lists(
    st.one_of(
        st.sampled_from(["__Host-csrf", " __Host-csrf", "__Host-csrf\t", "x__Host-csrf", ""]),
        st.text(alphabet='ab=;" \t\u00a0_-H', max_size=12),
    ),
    max_size=6,
)


@given(PIECES, st.lists(st.text(alphabet='ab"= \t', max_size=6), max_size=6))
def test_find_cookie_agrees_with_the_parser(names: list[str], values: list[str]) -> None:
    header = "; ".join(f"{n}={v}" for n, v in zip(names, values, strict=False))
    for name in ("__Host-csrf", "a", "", " ", "b=a"):
        assert find_cookie(header, name) == parse_cookie(header).get(name)


@given(st.text(alphabet='ab=;" \t_', max_size=40))
def test_find_cookie_agrees_on_any_header(header: str) -> None:
    for name in ("a", "b", "ab", '"a"', "", " a"):
        assert find_cookie(header, name) == parse_cookie(header).get(name)


def test_examples() -> None:
    header = 'x=1; __Host-csrf="v1"; __Host-csrf=v2; broken; =y'
    assert find_cookie(header, "__Host-csrf") == "v1"
    assert find_cookie(header, "x") == "1"
    assert find_cookie(header, "broken") is None
    assert find_cookie(header, "") is None
    assert find_cookie("", "x") is None
