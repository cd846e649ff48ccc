"""bastion.core.cookies: a total, linear parser and the one validated Set-Cookie writer."""

from __future__ import annotations

import dataclasses
import email.utils
import string
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core import cookies
from bastion.core.cookies import (
    MAX_AGE_LIMIT,
    MAX_ATTRIBUTE_BYTES,
    MAX_COOKIE_BYTES,
    Cookie,
    SameSite,
    parse_cookie,
)
from bastion.errors import CookieError, CookieTooLarge

TOKEN_CHARS = "!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits
COOKIE_OCTETS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in {'"', ",", ";", "\\"})
ATTRIBUTE_NAMES = {
    "Max-Age",
    "Expires",
    "Domain",
    "Path",
    "Secure",
    "HttpOnly",
    "SameSite",
    "Partitioned",
}

# Any code point, lone surrogates included (hypothesis leaves them out unless asked), plus the
# characters the parser cares about, so that they turn up often.
ANY_CHAR = st.one_of(
    st.characters(exclude_categories=()),
    st.characters(categories=["Cs"]),
    st.sampled_from(' \t;="\\,\r\n\u2000\u00a0'),
)
ANY_TEXT = st.text(ANY_CHAR)
TOKENS = st.text(TOKEN_CHARS, min_size=1, max_size=40)
OCTET_VALUES = st.text(COOKIE_OCTETS, max_size=200)
OFFSETS = st.builds(
    timezone,
    st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23)),
)
# st.datetimes takes naive bounds and attaches the time zones itself.
AWARE = st.datetimes(
    min_value=datetime(2, 1, 1),  # noqa: DTZ001
    max_value=datetime(9998, 12, 31),  # noqa: DTZ001
    timezones=OFFSETS,
)


def test_public_api() -> None:
    assert set(cookies.__all__) == {
        "MAX_AGE_LIMIT",
        "MAX_ATTRIBUTE_BYTES",
        "MAX_COOKIE_BYTES",
        "Cookie",
        "SameSite",
        "find_cookie",
        "parse_cookie",
    }
    assert (MAX_COOKIE_BYTES, MAX_ATTRIBUTE_BYTES, MAX_AGE_LIMIT) == (4096, 1024, 34_560_000)


# --- parse_cookie: named cases ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("a=1; token=x=y; flag", {"a": "1", "token": "x=y"}),
        ("", {}),
        ("chips=ahoy; vienna=finger", {"chips": "ahoy", "vienna": "finger"}),
        # Only SP and HTAB are trimmed; U+2000 stays part of the name, so no __Host- spoofing.
        ("\u2000__Host-id=x", {"\u2000__Host-id": "x"}),
        ("\u00a0a=1", {"\u00a0a": "1"}),
        ("\x0ca=1", {"\x0ca": "1"}),
        (" \ta \t= \t1 \t", {"a": "1"}),
        # Nameless pieces are ignored: no '=' at all, or an empty name after trimming.
        ("=__Host-id=x", {}),
        (" \t=x; a=1", {"a": "1"}),
        ("a=b; unnamed; c=d", {"a": "b", "c": "d"}),
        ('a=b; "; c=d', {"a": "b", "c": "d"}),
        # First wins.
        ("a=1; a=2", {"a": "1"}),
        ("a=b; h=i; a=c", {"a": "b", "h": "i"}),
        # Quotes: one surrounding pair removed, unbalanced ones kept, no unescaping.
        ('a="quoted value"', {"a": "quoted value"}),
        ('a=""', {"a": ""}),
        ('a="', {"a": '"'}),
        ('a="""', {"a": '"'}),
        ('a="x; b=2', {"a": '"x', "b": "2"}),
        ('a=x"', {"a": 'x"'}),
        ('a="x\\"y"', {"a": 'x\\"y'}),
        (
            'keebler="E=mc2; L=\\"Loves\\"; fudge=\\012;"',
            {"keebler": '"E=mc2', "L": '\\"Loves\\"', "fudge": "\\012"},
        ),
        # Browsers send what RFC 6265 forbids; the parser keeps it, it does not fail.
        ("keebler=E=mc2", {"keebler": "E=mc2"}),
        ("key:term=value:term", {"key:term": "value:term"}),
        ("a=b; c=[; d=r; f=h", {"a": "b", "c": "[", "d": "r", "f": "h"}),
        ("a=b; Domain=example.com", {"a": "b", "Domain": "example.com"}),
        ("a b c=d e = f; gh=i", {"a b c": "d e = f", "gh": "i"}),
        ("a=b;;;c=d;", {"a": "b", "c": "d"}),
        ("é=ü; 名前=値", {"é": "ü", "名前": "値"}),
        ("\ud800=\udfff; b=\udc00x", {"\ud800": "\udfff", "b": "\udc00x"}),
    ],
)
def test_parse_cookie_cases(header: str, expected: dict[str, str]) -> None:
    assert parse_cookie(header) == expected


def test_a_space_prefixed_host_name_is_not_a_host_cookie() -> None:
    parsed = parse_cookie("\u2000__Host-id=x; =__Host-id=y")
    assert "__Host-id" not in parsed
    assert parsed == {"\u2000__Host-id": "x"}


def test_many_semicolons_give_nothing() -> None:
    # Linear by construction (one split, constant work per piece); asserted by result, not time.
    assert parse_cookie(";" * 100_000) == {}


def test_a_200_000_char_header_of_pairs_gives_every_key() -> None:
    pieces: list[str] = []
    length = 0
    while length < 200_000:
        piece = f"k{len(pieces)}=b;"
        pieces.append(piece)
        length += len(piece)
    header = "".join(pieces)
    assert len(header) >= 200_000
    parsed = parse_cookie(header)
    assert len(parsed) == len(pieces)
    assert parsed["k0"] == "b"
    assert parsed[f"k{len(pieces) - 1}"] == "b"
    assert parse_cookie("a=b;" * 50_000) == {"a": "b"}


def test_cve_2024_7592_shape_is_returned_verbatim() -> None:
    # CPython's http.cookies went quadratic unescaping this; we only drop the outer quotes.
    inner = '\\"' * 4000
    parsed = parse_cookie(f'a="{inner}"')
    assert parsed == {"a": inner}
    assert len(parsed["a"]) == 8000


# --- parse_cookie: properties -----------------------------------------------------------------


@settings(deadline=None)
@given(ANY_TEXT)
def test_parse_never_raises_and_returns_clean_names(header: str) -> None:
    parsed = parse_cookie(header)
    assert len(parsed) <= header.count("=")
    for name, value in parsed.items():
        assert name
        assert name == name.strip(" \t")
        assert ";" not in name
        assert "=" not in name
        assert ";" not in value
        assert name in header
        assert value in header


@settings(deadline=None)
@given(name=TOKENS, value=OCTET_VALUES)
def test_round_trip_through_serialize(name: str, value: str) -> None:
    pair = Cookie(name=name, value=value).serialize().split(";", 1)[0]
    assert pair == f"{name}={value}"
    assert parse_cookie(pair) == {name: value}


@settings(deadline=None)
@given(st.lists(st.tuples(TOKENS, OCTET_VALUES), max_size=20))
def test_joined_pairs_come_back_first_wins(pairs: list[tuple[str, str]]) -> None:
    header = "; ".join(
        Cookie(name=name, value=value).serialize().split(";", 1)[0] for name, value in pairs
    )
    expected: dict[str, str] = {}
    for name, value in pairs:
        expected.setdefault(name, value)
    assert parse_cookie(header) == expected


# --- Cookie: serialized output ----------------------------------------------------------------


def test_typical_host_session_cookie() -> None:
    template = Cookie(name="__Host-sid", max_age=3600)
    cookie = template.with_value("Zm9vYmFy_-")
    assert cookie.serialize() == (
        "__Host-sid=Zm9vYmFy_-; Max-Age=3600; Path=/; Secure; HttpOnly; SameSite=Lax"
    )


def test_expired_host_session_cookie() -> None:
    cookie = Cookie(name="__Host-sid", value="Zm9vYmFy", max_age=3600)
    assert cookie.expired().serialize() == (
        "__Host-sid=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/; Secure; "
        "HttpOnly; SameSite=Lax"
    )


def test_expired_keeps_what_the_browser_matches_on() -> None:
    cookie = Cookie(
        name="__Secure-pref",
        value="v",
        domain="example.com",
        path="/app",
        http_only=False,
        same_site=SameSite.NONE,
        partitioned=True,
    )
    assert cookie.expired().serialize() == (
        "__Secure-pref=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; "
        "Domain=example.com; Path=/app; Secure; SameSite=None; Partitioned"
    )


def test_every_attribute_with_a_non_utc_expiry() -> None:
    expires = datetime(2030, 6, 1, 14, 30, 15, 999_999, tzinfo=timezone(timedelta(hours=2)))
    cookie = Cookie(
        name="__Secure-pref",
        value="dark",
        max_age=60,
        expires=expires,
        domain="sub.example.com",
        path="/app",
        same_site=SameSite.STRICT,
        partitioned=True,
    )
    assert cookie.serialize() == (
        "__Secure-pref=dark; Max-Age=60; Expires=Sat, 01 Jun 2030 12:30:15 GMT; "
        "Domain=sub.example.com; Path=/app; Secure; HttpOnly; SameSite=Strict; Partitioned"
    )


def test_defaults_and_empty_value() -> None:
    cookie = Cookie(name="n")
    assert cookie.value == ""
    assert cookie.serialize() == "n=; Path=/; Secure; HttpOnly; SameSite=Lax"
    assert Cookie(name="n", secure=False, http_only=False).serialize() == "n=; Path=/; SameSite=Lax"


@settings(deadline=None)
@given(AWARE)
def test_expires_is_imf_fixdate(moment: datetime) -> None:
    rendered = Cookie(name="n", expires=moment).serialize()
    expected = email.utils.format_datetime(
        moment.astimezone(UTC).replace(microsecond=0), usegmt=True
    )
    assert f"; Expires={expected};" in rendered


# --- Cookie: refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("x; Domain=evil.example", "a semicolon at index 1"),
        (" x", "a space at index 0"),
        ('a"b', "a double quote at index 1"),
        ("a,b", "a comma at index 1"),
        ("a\\b", "a backslash at index 1"),
        ("a\rb", "a carriage return (CR) at index 1"),
        ("a\nb", "a line feed (LF) at index 1"),
        ("\x00", "a control character (U+0000) at index 0"),
        ("a\x7f", "a control character (U+007F) at index 1"),
        ("\tx", "a control character (U+0009) at index 0"),
        ("café", "a non-ASCII character at index 3"),
        ("\ud800", "a non-ASCII character at index 0"),
    ],
)
def test_value_outside_cookie_octets_is_refused(value: str, kind: str) -> None:
    template = Cookie(name="sid")
    with pytest.raises(CookieError, match=r"encode it, e\.g\. base64url") as built:
        Cookie(name="sid", value=value)
    assert f"value contains {kind};" in str(built.value)
    with pytest.raises(CookieError, match=r"encode it, e\.g\. base64url") as replaced:
        template.with_value(value)
    assert str(replaced.value) == str(built.value)


def test_refusal_messages_do_not_echo_the_value() -> None:
    with pytest.raises(CookieError) as caught:
        Cookie(name="sid", value="s3cr3tt0ken;x")
    assert "s3cr3tt0ken" not in str(caught.value)


def test_value_must_be_text() -> None:
    with pytest.raises(CookieError, match="value must be a str, got bytes; encode bytes"):
        Cookie(name="sid", value=b"abc")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name",
    ["", "a b", "a=b", "a;b", 'a"b', "a,b", "a\r\nb", "é", "\u2000__Host-id", "(x)", "a/b"],
)
def test_name_must_be_a_token(name: str) -> None:
    with pytest.raises(CookieError, match="is not an RFC 9110 token; use a non-empty name"):
        Cookie(name=name)


def test_name_must_be_text() -> None:
    with pytest.raises(CookieError, match="cookie name must be a str, got NoneType"):
        Cookie(name=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "__Secure-x", "secure": False}, "a __Secure- name requires secure=True"),
        ({"name": "__SECURE-x", "secure": False}, "a __Secure- name requires secure=True"),
        ({"name": "__Host-x", "secure": False}, "a __Host- name requires secure=True"),
        ({"name": "__host-x", "secure": False}, "a __Host- name requires secure=True"),
        ({"name": "__Host-x", "path": "/app"}, "a __Host- name requires path='/', got path='/app'"),
        (
            {"name": "__Host-x", "domain": "example.com"},
            "a __Host- name must not set a domain, got domain='example.com'",
        ),
        ({"name": "__Http-x", "http_only": False}, "a __Http- or __Host-Http- name requires"),
        ({"name": "__Host-Http-x", "http_only": False}, "a __Http- or __Host-Http- name"),
    ],
)
def test_prefix_rules(options: dict[str, object], message: str) -> None:
    with pytest.raises(CookieError) as caught:
        Cookie(**options)  # type: ignore[arg-type]
    assert message in str(caught.value)
    assert "drop the prefix" in str(caught.value) or "__Secure- name" in str(caught.value)


def test_prefixed_names_that_follow_the_rules() -> None:
    assert Cookie(name="__Secure-x", domain="example.com", path="/a").serialize() == (
        "__Secure-x=; Domain=example.com; Path=/a; Secure; HttpOnly; SameSite=Lax"
    )
    assert Cookie(name="__Host-x").serialize().startswith("__Host-x=; Path=/; Secure")


def test_same_site_none_needs_secure() -> None:
    with pytest.raises(CookieError, match=r"same_site=SameSite.NONE requires secure=True"):
        Cookie(name="x", same_site=SameSite.NONE, secure=False)
    assert Cookie(name="x", same_site=SameSite.NONE).serialize().endswith("; SameSite=None")


def test_partitioned_needs_secure() -> None:
    with pytest.raises(CookieError, match="partitioned=True requires secure=True"):
        Cookie(name="x", partitioned=True, secure=False)


def test_same_site_accepts_the_exact_strings_only() -> None:
    cookie = Cookie(name="x", same_site="Strict")  # type: ignore[arg-type]
    assert cookie.same_site is SameSite.STRICT
    with pytest.raises(CookieError, match=r"same_site must be SameSite\.STRICT, SameSite\.LAX"):
        Cookie(name="x", same_site="strict")  # type: ignore[arg-type]


@pytest.mark.parametrize("flag", ["secure", "http_only", "partitioned"])
def test_flags_must_be_booleans(flag: str) -> None:
    with pytest.raises(CookieError, match=f"{flag} must be True or False, got str"):
        Cookie(name="x", **{flag: "no"})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("max_age", "message"),
    [
        (True, "max_age must be an int number of seconds or None, got bool"),
        (1.5, "max_age must be an int number of seconds or None, got float"),
        ("60", "max_age must be an int number of seconds or None, got str"),
        (-1, "max_age=-1 is out of range; use 0 (delete now) to 34560000 seconds"),
        (MAX_AGE_LIMIT + 1, "max_age=34560001 is out of range"),
        pytest.param(10**5000, "cookie 'x': max_age is out of range", id="huge-int"),
    ],
)
def test_max_age_refusals(max_age: object, message: str) -> None:
    with pytest.raises(CookieError) as caught:
        Cookie(name="x", max_age=max_age)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_max_age_bounds_are_accepted() -> None:
    assert "; Max-Age=0;" in Cookie(name="x", max_age=0).serialize()
    assert f"; Max-Age={MAX_AGE_LIMIT};" in Cookie(name="x", max_age=MAX_AGE_LIMIT).serialize()


@pytest.mark.parametrize(
    ("expires", "message"),
    [
        (datetime(2030, 1, 1), "expires is a naive datetime; give it a time zone"),  # noqa: DTZ001
        (date(2030, 1, 1), "expires must be a datetime or None, got date"),
        (1_900_000_000, "expires must be a datetime or None, got int"),
        (
            datetime.max.replace(tzinfo=timezone(timedelta(hours=-1))),
            "expires is out of the representable range",
        ),
    ],
)
def test_expires_refusals(expires: object, message: str) -> None:
    with pytest.raises(CookieError) as caught:
        Cookie(name="x", expires=expires)  # type: ignore[arg-type]
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("domain", "message"),
    [
        ("", "domain is empty; use domain=None for a host-only cookie"),
        ("example.com\r\nSet-Cookie: a=b", "domain contains a carriage return (CR) at index 11"),
        ("example.com\n", "domain contains a line feed (LF) at index 11"),
        ("example.com; Secure", "domain contains a semicolon at index 11"),
        ("exa mple.com", "domain contains a space at index 3"),
        ("exa\x00mple.com", "domain contains a control character (U+0000)"),
        ("bücher.example", "domain contains a non-ASCII character at index 1"),
        (".example.com", "without a leading, trailing or doubled dot"),
        ("example.com.", "without a leading, trailing or doubled dot"),
        ("example..com", "without a leading, trailing or doubled dot"),
        ("exa_mple.com", "must be letters, digits and hyphens"),
        ("example.com:8080", "must be letters, digits and hyphens"),
        ("a." * 512 + "a", f"domain is 1025 bytes; browsers ignore attribute values over {1024}"),
    ],
)
def test_domain_refusals(domain: str, message: str) -> None:
    with pytest.raises(CookieError) as caught:
        Cookie(name="x", domain=domain)
    assert message in str(caught.value)


def test_domain_accepts_host_names_and_punycode() -> None:
    for domain in ("localhost", "example.com", "xn--bcher-kva.example", "a-b.c0.example"):
        assert f"; Domain={domain};" in Cookie(name="x", domain=domain).serialize()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("app", "path 'app' must start with '/'"),
        ("", "path '' must start with '/'"),
        ("/a;b", "path contains a semicolon at index 2"),
        ("/a\r\nSet-Cookie: x=y", "path contains a carriage return (CR) at index 2"),
        ("/a\nb", "path contains a line feed (LF) at index 2"),
        ("/a b", "path contains a space at index 2; attribute values must not contain CR"),
        ("/\x1f", "path contains a control character (U+001F)"),
        ("/é", "path contains a non-ASCII character at index 1"),
        ("/" + "a" * MAX_ATTRIBUTE_BYTES, "path is 1025 bytes; browsers ignore attribute values"),
        (None, "path must be a str, got NoneType"),
    ],
)
def test_path_refusals(path: str, message: str) -> None:
    with pytest.raises(CookieError) as caught:
        Cookie(name="x", path=path)
    assert message in str(caught.value)


def test_path_at_the_attribute_cap_is_accepted() -> None:
    path = "/" + "a" * (MAX_ATTRIBUTE_BYTES - 1)
    assert f"; Path={path};" in Cookie(name="x", path=path).serialize()


# --- Cookie: size budget ----------------------------------------------------------------------


def test_name_plus_value_at_the_budget_serializes() -> None:
    cookie = Cookie(name="n", value="a" * (MAX_COOKIE_BYTES - 1))
    assert cookie.serialize().startswith("n=" + "a" * 4095 + "; Path=/")


def test_name_plus_value_over_the_budget_is_too_large() -> None:
    template = Cookie(name="sid")
    too_big = template.with_value("a" * (MAX_COOKIE_BYTES - 2))
    with pytest.raises(CookieTooLarge) as caught:
        too_big.serialize()
    assert (caught.value.size, caught.value.limit) == (4097, 4096)
    assert isinstance(caught.value, CookieError)
    assert "name and value are 4097 bytes; browsers ignore cookies over 4096 bytes" in str(
        caught.value
    )
    # Attributes do not count: a long path does not push a cookie over the budget.
    long_path = Cookie(name="n", value="a" * 4095, path="/" + "p" * 1000)
    assert len(long_path.serialize()) > MAX_COOKIE_BYTES


# --- Cookie: value type behaviour -------------------------------------------------------------


def test_with_value_reuses_the_rendered_attributes() -> None:
    template = Cookie(name="__Host-sid", max_age=3600, same_site=SameSite.STRICT)
    cookie = template.with_value("abc")
    assert cookie._attributes is template._attributes
    assert cookie == dataclasses.replace(template, value="abc")
    for item in dataclasses.fields(Cookie):
        expected = "abc" if item.name == "value" else getattr(template, item.name)
        assert getattr(cookie, item.name) == expected, item.name
    assert template.value == ""


@settings(deadline=None)
@given(
    value=OCTET_VALUES, max_age=st.none() | st.integers(0, MAX_AGE_LIMIT), moment=st.none() | AWARE
)
def test_with_value_matches_a_full_build(
    value: str, max_age: int | None, moment: datetime | None
) -> None:
    template = Cookie(name="__Secure-x", max_age=max_age, expires=moment, domain="example.com")
    fresh = Cookie(
        name="__Secure-x", value=value, max_age=max_age, expires=moment, domain="example.com"
    )
    assert template.with_value(value) == fresh
    assert template.with_value(value).serialize() == fresh.serialize()


def test_repr_hides_the_value() -> None:
    cookie = Cookie(name="__Host-sid", value="s3cr3tt0ken")
    assert "s3cr3tt0ken" not in repr(cookie)
    assert repr(cookie) == (
        "Cookie(name='__Host-sid', value=<11 chars, redacted>, "
        "attributes='Path=/; Secure; HttpOnly; SameSite=Lax')"
    )


def test_frozen_slotted_keyword_only() -> None:
    cookie = Cookie(name="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cookie.value = "y"  # type: ignore[misc]
    assert not hasattr(cookie, "__dict__")
    with pytest.raises(TypeError):
        Cookie("x", "y")  # type: ignore[misc]
    assert hash(cookie) == hash(Cookie(name="x"))


# --- Cookie: any cookie that builds serializes cleanly -------------------------------------------


# Field strategies: every field valid on its own (cross-field rules may still refuse) ...
VALID_FIELDS = st.fixed_dictionaries(
    {
        "name": st.one_of(TOKENS, st.sampled_from(["__Host-id", "__Secure-id", "__Http-id"])),
        "value": OCTET_VALUES,
        "max_age": st.none() | st.integers(0, MAX_AGE_LIMIT),
        "expires": st.none() | AWARE,
        "domain": st.none() | st.sampled_from(["example.com", "a-b.example", "localhost"]),
        "path": st.just("/") | st.text(COOKIE_OCTETS, max_size=50).map(lambda p: "/" + p),
        "secure": st.booleans(),
        "http_only": st.booleans(),
        "same_site": st.sampled_from(SameSite),
        "partitioned": st.booleans(),
    }
)
# ... and anything at all, to show that whatever gets through serializes cleanly too.
ARBITRARY_FIELDS = st.fixed_dictionaries(
    {
        "name": st.one_of(TOKENS, ANY_TEXT),
        "value": st.one_of(OCTET_VALUES, ANY_TEXT),
        "max_age": st.one_of(st.none(), st.integers(), st.booleans(), st.floats()),
        "expires": st.one_of(st.none(), AWARE, st.datetimes()),
        "domain": st.one_of(st.none(), st.sampled_from(["example.com"]), ANY_TEXT),
        "path": st.one_of(st.just("/"), ANY_TEXT),
        "secure": st.booleans(),
        "http_only": st.booleans(),
        "same_site": st.sampled_from(SameSite),
        "partitioned": st.booleans(),
    }
)
CROSS_FIELD_RULE = (
    r"name requires secure=True|a __Host- name requires path='/'|"
    r"a __Host- name must not set a domain|"
    r"a __Http- or __Host-Http- name requires secure=True and http_only=True|"
    r"same_site=SameSite\.NONE requires secure=True|partitioned=True requires secure=True"
)


def breaks_a_cross_field_rule(fields: dict[str, Any]) -> bool:
    """An independent model of the prefix, SameSite=None and Partitioned rules."""
    folded = fields["name"].lower()
    secure = fields["secure"]
    host = folded.startswith("__host-")
    return (
        (folded.startswith("__secure-") and not secure)
        or (host and (not secure or fields["path"] != "/" or fields["domain"] is not None))
        or (folded.startswith(("__http-", "__host-http-")) and not (secure and fields["http_only"]))
        or (fields["same_site"] is SameSite.NONE and not secure)
        or (fields["partitioned"] and not secure)
    )


def assert_serializes_cleanly(cookie: Cookie, fields: dict[str, Any]) -> None:
    line = cookie.serialize()
    assert "\r" not in line
    assert "\n" not in line
    assert line.isascii()
    first, *attributes = line.split("; ")
    assert first == f"{fields['name']}={fields['value']}"
    assert parse_cookie(first) == {fields["name"]: fields["value"]}
    names = [attribute.split("=", 1)[0] for attribute in attributes]
    assert len(names) == len(set(names))
    assert set(names) <= ATTRIBUTE_NAMES
    assert names.count("Path") == names.count("SameSite") == 1
    assert ("Secure" in names) is fields["secure"]
    assert ("HttpOnly" in names) is fields["http_only"]
    assert ("Partitioned" in names) is fields["partitioned"]
    assert ("Domain" in names) is (fields["domain"] is not None)
    assert ("Max-Age" in names) is (fields["max_age"] is not None)
    assert ("Expires" in names) is (fields["expires"] is not None)


@settings(deadline=None, max_examples=300)
@given(VALID_FIELDS)
def test_valid_fields_build_unless_a_cross_field_rule_refuses(fields: dict[str, Any]) -> None:
    if breaks_a_cross_field_rule(fields):
        with pytest.raises(CookieError, match=CROSS_FIELD_RULE):
            Cookie(**fields)
    else:
        assert_serializes_cleanly(Cookie(**fields), fields)


@settings(deadline=None, max_examples=300)
@given(ARBITRARY_FIELDS)
def test_any_cookie_that_builds_serializes_cleanly(fields: dict[str, Any]) -> None:
    try:
        cookie = Cookie(**fields)
    except CookieError:
        return
    assert_serializes_cleanly(cookie, fields)
