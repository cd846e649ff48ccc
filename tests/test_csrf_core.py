"""bastion.core.csrf: the header decision table, tokens, double-submit cookies, the body scanner."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.core.csrf import (
    MASKED_TOKEN_CHARS,
    CSRFChecker,
    CSRFConfig,
    CSRFReason,
    DoubleSubmit,
    Facts,
    FormTokenScanner,
    Pass,
    ScanStatus,
    check_token,
    mask_secret,
    new_secret,
    normalize_origin,
    rejection_body,
    secret_from_text,
    unmask_token,
    wants_json,
)
from bastion.core.keys import KeyRing, SecretKey
from bastion.core.sessions import new_csrf_secret
from bastion.errors import ConfigurationError

# -- origins


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://Example.COM", "https://example.com"),
        ("https://example.com:443", "https://example.com"),
        ("http://example.com:80", "http://example.com"),
        ("https://example.com:8443", "https://example.com:8443"),
        ("https://[::1]:8443", "https://[::1]:8443"),
        ("https://example.com/", None),
        ("https://user@example.com", None),
        ("ftp://example.com", None),
        ("example.com", None),
        ("https://example.com:99999", None),
        ("https://exämple.com", None),
        ("null", None),
        ("https://", None),
    ],
)
def test_normalize_origin(text: str, expected: str | None) -> None:
    assert normalize_origin(text) == expected


@given(st.text(max_size=80))
def test_normalize_origin_is_total(text: str) -> None:
    result = normalize_origin(text)
    assert result is None or result == normalize_origin(result)


# -- the decision table


def facts(**kwargs: Any) -> Facts:
    base: dict[str, Any] = {"method": "POST", "path": "/x", "scheme": "https", "host": "app.test"}
    base.update(kwargs)
    return Facts(**base)


CHECKER = CSRFChecker(CSRFConfig(trusted_origins=("https://admin.app.test",)))


@pytest.mark.parametrize(
    ("kwargs", "passed", "reason"),
    [
        ({"method": "GET"}, Pass.SAFE_METHOD, None),
        ({"method": "HEAD", "sec_fetch_site": "cross-site"}, Pass.SAFE_METHOD, None),
        ({"method": "GET", "method_override": "DELETE"}, None, CSRFReason.METHOD_OVERRIDE),
        ({"method": "GET", "query": "a=1&_method=put"}, None, CSRFReason.METHOD_OVERRIDE),
        ({"method": "GET", "query": "_method=GET"}, Pass.SAFE_METHOD, None),
        ({"sec_fetch_site": "same-origin"}, Pass.FETCH_METADATA, None),
        ({"sec_fetch_site": "same-origin", "origin": "null"}, Pass.FETCH_METADATA, None),
        ({"sec_fetch_site": "none"}, Pass.FETCH_METADATA, None),
        ({"sec_fetch_site": "cross-site"}, None, CSRFReason.CROSS_SITE),
        (
            {"sec_fetch_site": "same-site", "origin": "https://x.app.test"},
            None,
            CSRFReason.SAME_SITE,
        ),
        (
            {"sec_fetch_site": "same-site", "origin": "https://admin.app.test"},
            Pass.TRUSTED_ORIGIN,
            None,
        ),
        ({"origin": "https://app.test"}, Pass.ORIGIN, None),
        ({"origin": "https://app.test:443"}, Pass.ORIGIN, None),
        ({"origin": "https://app.test:444"}, None, CSRFReason.ORIGIN_MISMATCH),
        ({"origin": "http://app.test"}, None, CSRFReason.ORIGIN_MISMATCH),
        ({"origin": "garbage"}, None, CSRFReason.ORIGIN_MISMATCH),
        ({"origin": "null"}, None, None),
        ({}, None, None),
        ({"referer": "https://app.test/form"}, None, None),
        ({"referer": "https://evil.test/form"}, None, CSRFReason.REFERER_MISMATCH),
        ({"referer": "not a url"}, None, CSRFReason.REFERER_MISMATCH),
        ({"scheme": "http", "referer": "https://evil.test/"}, None, None),
        ({"sec_fetch_site": "weird", "origin": "https://app.test"}, Pass.ORIGIN, None),
    ],
)
def test_decision_table(
    kwargs: dict[str, Any], passed: Pass | None, reason: CSRFReason | None
) -> None:
    verdict = CHECKER.check(facts(**kwargs))
    assert verdict.passed == passed
    assert verdict.reason == reason
    assert verdict.needs_token == (passed is None and reason is None)


def test_public_origins_replace_the_host_header() -> None:
    checker = CSRFChecker(CSRFConfig(public_origins=("https://shop.example",)))
    assert checker.check(facts(origin="https://shop.example")).passed is Pass.ORIGIN
    # The Host header is not consulted once public origins are configured.
    assert checker.check(facts(origin="https://app.test")).reason is CSRFReason.ORIGIN_MISMATCH


def test_wildcard_trusted_origins_match_subdomains_only() -> None:
    checker = CSRFChecker(CSRFConfig(trusted_origins=("https://*.partner.example:8443",)))
    assert checker.is_trusted("https://a.partner.example:8443")
    assert checker.is_trusted("https://a.b.partner.example:8443")
    assert not checker.is_trusted("https://partner.example:8443")
    assert not checker.is_trusted("https://a.partner.example")
    assert not checker.is_trusted("https://evilpartner.example:8443")
    assert not checker.is_trusted("http://a.partner.example:8443")


def test_exempt_paths_exact_and_prefix() -> None:
    checker = CSRFChecker(CSRFConfig(exempt=("/hook", "/api/public/*")))
    assert checker.check(facts(path="/hook", sec_fetch_site="cross-site")).passed is Pass.EXEMPT
    assert checker.check(facts(path="/hook/x", sec_fetch_site="cross-site")).passed is None
    assert checker.check(facts(path="/api/public/a")).passed is Pass.EXEMPT
    assert checker.check(facts(path="/api/public")).passed is Pass.EXEMPT
    assert checker.check(facts(path="/api/publicity", sec_fetch_site="cross-site")).passed is None


def test_exempt_paths_use_the_one_path_grammar() -> None:
    # "/hooks/" was a prefix for CSRF and an exact path elsewhere: refused, saying how to
    # write either meaning.
    with pytest.raises(ConfigurationError) as caught:
        CSRFConfig(exempt=("/hooks/",))
    assert caught.value.setting == "exempt"
    assert str(caught.value) == (
        "exempt: '/hooks/' ends in '/'; write '/hooks/*' for the prefix or '/hooks' for the "
        "exact path"
    )
    assert CSRFConfig(exempt=("/hooks/*", "/webhook")).exempt == ("/hooks/*", "/webhook")
    assert CSRFConfig(exempt="/webhook").exempt == ("/webhook",)


def test_missing_reason_names_a_query_token() -> None:
    assert CHECKER.missing_reason(facts(query="csrf_token=abc")) is CSRFReason.TOKEN_IN_QUERY
    assert CHECKER.missing_reason(facts(query="x=1&csrf_token=abc")) is CSRFReason.TOKEN_IN_QUERY
    assert CHECKER.missing_reason(facts(query="xcsrf_token=abc")) is CSRFReason.TOKEN_MISSING


def test_websocket_origin() -> None:
    ws = facts(method="GET", scheme="https")
    assert CHECKER.check_websocket(ws) is None
    ws.origin = "https://app.test"
    assert CHECKER.check_websocket(ws) is None
    ws.origin = "https://evil.test"
    assert CHECKER.check_websocket(ws) is CSRFReason.WEBSOCKET_ORIGIN
    ws.origin = "null"
    assert CHECKER.check_websocket(ws) is CSRFReason.WEBSOCKET_ORIGIN


# -- tokens


def test_masked_tokens_differ_and_unmask_to_the_secret() -> None:
    secret = secret_from_text(new_csrf_secret())
    tokens = {mask_secret(secret) for _ in range(20)}
    assert len(tokens) == 20
    for token in tokens:
        assert len(token) == MASKED_TOKEN_CHARS
        assert unmask_token(token) == secret
        assert check_token(token, secret) is None
    assert check_token(mask_secret(new_secret()), secret) is CSRFReason.TOKEN_INCORRECT


def test_secret_from_text_accepts_foreign_shapes() -> None:
    assert len(secret_from_text("short")) == 32
    assert secret_from_text("short") == secret_from_text("short")
    assert secret_from_text("tëxt") != secret_from_text("text")


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_check_token_is_total(token: str | bytes) -> None:
    assert check_token(token, new_secret()) in {
        CSRFReason.TOKEN_MALFORMED,
        CSRFReason.TOKEN_INCORRECT,
    }


_B64URL = re.compile(rb"[A-Za-z0-9_-]+", re.ASCII)


def reference_unmask(token: bytes) -> bytes | None:
    """What unmask_token answers, written the slow, obvious way."""
    token = token.strip(b" \t")
    if len(token) != MASKED_TOKEN_CHARS or _B64URL.fullmatch(token) is None:
        return None
    raw = base64.urlsafe_b64decode(token + b"==")
    return bytes(a ^ b for a, b in zip(raw[:32], raw[32:], strict=True))


@given(
    st.binary(min_size=64, max_size=64),
    st.lists(
        st.tuples(st.integers(0, 85), st.sampled_from(list(b"+/=.\n \x00\xff-_A"))), max_size=3
    ),
)
def test_unmask_token_refuses_every_character_outside_base64url(
    raw: bytes, edits: list[tuple[int, int]]
) -> None:
    token = bytearray(base64.urlsafe_b64encode(raw).rstrip(b"="))
    for index, char in edits:
        token[index] = char
    assert unmask_token(bytes(token)) == reference_unmask(bytes(token))


def test_double_submit_binds_identity_and_rotates_keys() -> None:
    old, new = SecretKey.generate(), SecretKey.generate()
    before = DoubleSubmit(KeyRing(old))
    cookie, secret = before.issue("alice")
    assert before.verify(cookie, "alice") == secret
    assert before.verify(cookie, "bob") is None
    assert before.verify(cookie, "") is None
    rotated = DoubleSubmit(KeyRing(new, previous=[old]))
    assert rotated.verify(cookie, "alice") == secret
    assert DoubleSubmit(KeyRing(new)).verify(cookie, "alice") is None
    value, _, mac = cookie.partition(".")
    assert before.verify(value, "alice") is None
    assert before.verify(value + "." + mac[::-1], "alice") is None
    assert before.verify(None, "alice") is None
    assert "alice" not in cookie


@given(st.text(max_size=20))
def test_double_submit_cookie_is_hmac_sha256_of_the_length_prefixed_identity(
    identity: str,
) -> None:
    # The documented format, computed independently: a change in how the MAC is computed
    # (the keyed HMAC is copied per message) must not change a single cookie.
    ring = KeyRing.generate()
    cookie, secret = DoubleSubmit(ring).issue(identity)
    value, _, mac = cookie.partition(".")
    who = identity.encode("utf-8", "surrogatepass")
    key = next(iter(ring.derive("csrf-double-submit"))).reveal()
    expected = hmac.digest(key, len(who).to_bytes(4) + who + secret, hashlib.sha256)
    assert base64.urlsafe_b64decode(mac + "=") == expected
    assert base64.urlsafe_b64decode(value + "=") == secret


@given(st.text(max_size=200), st.text(max_size=20))
def test_double_submit_verify_is_total(cookie: str, identity: str) -> None:
    assert DoubleSubmit(KeyRing.generate()).verify(cookie, identity) is None


# -- the body scanner


def scan(content_type: str, body: bytes, cuts: list[int], max_bytes: int = 4096) -> Any:
    scanner = FormTokenScanner.for_content_type(
        content_type, field="csrf_token", max_bytes=max_bytes
    )
    assert isinstance(scanner, FormTokenScanner)
    points = sorted({c % (len(body) + 1) for c in cuts} | {0, len(body)})
    chunks = [body[a:b] for a, b in itertools.pairwise(points)] or [b""]
    status = ScanStatus.MORE
    for index, chunk in enumerate(chunks):
        status = scanner.feed(chunk, more=index < len(chunks) - 1)
        if status is not ScanStatus.MORE:
            break
    return status, scanner.token


MULTIPART = "multipart/form-data; boundary=XyZ"


def multipart(*parts: tuple[str, bytes], filename: str | None = None) -> bytes:
    out = b"preamble\r\n"
    for name, value in parts:
        extra = f'; filename="{filename}"' if filename and name == "file" else ""
        out += (
            (
                f'--XyZ\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n'
                "Content-Type: text/plain\r\n\r\n"
            ).encode()
            + value
            + b"\r\n"
        )
    return out + b"--XyZ--\r\n"


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_urlencoded_scan_is_independent_of_chunking(cuts: list[int]) -> None:
    body = b"a=1&b=%26%3D&csrf_token=tok%2Den+x&c=3"
    assert scan("application/x-www-form-urlencoded", body, cuts) == (
        ScanStatus.FOUND,
        b"tok-en x",
    )
    assert scan("application/x-www-form-urlencoded", b"a=1&b=2", cuts) == (
        ScanStatus.ABSENT,
        None,
    )


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_multipart_scan_is_independent_of_chunking(cuts: list[int]) -> None:
    body = multipart(("file", b"--XyZ- not a delimiter\r\n--Xy"), ("csrf_token", b"T0k3n"))
    assert scan(MULTIPART, body, cuts) == (ScanStatus.FOUND, b"T0k3n")
    assert scan(MULTIPART, multipart(("a", b"1")), cuts) == (ScanStatus.ABSENT, None)


@given(st.binary(max_size=600), st.lists(st.integers(min_value=0, max_value=600), max_size=6))
def test_scanners_are_total(body: bytes, cuts: list[int]) -> None:
    for content_type in (MULTIPART, "application/x-www-form-urlencoded"):
        status, token = scan(content_type, body, cuts, max_bytes=1024)
        assert status in set(ScanStatus) - {ScanStatus.MORE}
        assert (token is not None) == (status is ScanStatus.FOUND)


def test_scanner_stops_at_the_cap() -> None:
    body = multipart(("file", b"x" * 10_000), ("csrf_token", b"late"))
    assert scan(MULTIPART, body, list(range(0, len(body), 512)), max_bytes=2048)[0] is (
        ScanStatus.TOO_LARGE
    )
    # One huge chunk is cut at the cap too (the scanner keeps at most max_bytes).
    assert scan(MULTIPART, body, [], max_bytes=2048)[0] is ScanStatus.TOO_LARGE
    early = multipart(("csrf_token", b"early"), ("file", b"x" * 10_000))
    assert scan(MULTIPART, early, [], max_bytes=2048) == (ScanStatus.FOUND, b"early")


def test_scanner_for_content_type() -> None:
    def make(content_type: str | None) -> Any:
        return FormTokenScanner.for_content_type(content_type, field="csrf_token", max_bytes=1024)

    assert make(None) is None
    assert make("application/json") is None
    assert make("text/plain") is None
    assert make("multipart/form-data") is CSRFReason.BODY_MALFORMED
    assert make('multipart/form-data; boundary="ünï"') is CSRFReason.BODY_MALFORMED
    assert isinstance(make('Multipart/Form-Data; boundary="a b"'), FormTokenScanner)
    assert isinstance(make("application/x-www-form-urlencoded; charset=utf-8"), FormTokenScanner)


# -- refusals


def test_reason_statuses_and_bodies() -> None:
    assert CSRFReason.BODY_TOO_LARGE.status == 413
    assert CSRFReason.BODY_MALFORMED.status == 400
    assert CSRFReason.IDENTITY_FAILED.status == 503  # the app's identity function failed
    assert {r.status for r in CSRFReason} == {400, 403, 413, 503}
    content_type, body = rejection_body(CSRFReason.CROSS_SITE, json_format=True)
    assert content_type == b"application/json"
    assert b'"reason": "cross_site"' in body
    content_type, body = rejection_body(CSRFReason.TOKEN_MISSING, json_format=False)
    assert content_type.startswith(b"text/html")
    assert b"token_missing" in body
    assert wants_json("application/json")
    assert not wants_json("text/html,application/json;q=0.9")
    assert wants_json(None)  # no Accept: anything goes, and a program is the likely sender
    assert wants_json("text/html", "application/json")  # a JSON body


_HEADER_TEXT = st.one_of(
    st.none(), st.text(max_size=40), st.sampled_from(["null", "https://app.test"])
)


@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]),
    site=st.one_of(_HEADER_TEXT, st.sampled_from(["cross-site", "same-site", "same-origin"])),
    origin=_HEADER_TEXT,
    referer=_HEADER_TEXT,
    override=_HEADER_TEXT,
    query=st.text(max_size=40),
)
def test_decision_is_total_and_never_passes_a_cross_site_post(
    method: str,
    site: str | None,
    origin: str | None,
    referer: str | None,
    override: str | None,
    query: str,
) -> None:
    verdict = CHECKER.check(
        facts(
            method=method,
            sec_fetch_site=site,
            origin=origin,
            referer=referer,
            method_override=override,
            query=query,
        )
    )
    assert (verdict.passed is None) or (verdict.reason is None)
    if method not in {"GET", "HEAD"} and site in {"cross-site", "same-site"}:
        assert verdict.passed is None


# -- the body scanner's work is linear in the body, whatever the chunking


def examined(content_type: str, body: bytes, chunk: int) -> int:
    """Bytes the scanner searched, copied or decoded to scan ``body`` fed in ``chunk``-byte
    pieces (it must run to the end of the body: the field is absent)."""
    scanner = FormTokenScanner.for_content_type(
        content_type, field="csrf_token", max_bytes=len(body) + 1
    )
    assert isinstance(scanner, FormTokenScanner)
    status = ScanStatus.MORE
    for start in range(0, len(body), chunk):
        status = scanner.feed(body[start : start + chunk], more=start + chunk < len(body))
    assert status in {ScanStatus.ABSENT, ScanStatus.MALFORMED}
    return scanner.examined


PART = b'--XyZ\r\nContent-Disposition: form-data; name="f"\r\n\r\n'
PATHOLOGICAL: list[tuple[str, Any]] = [
    ("application/x-www-form-urlencoded", lambda n: b"a=" + b"x" * n),  # one long pending pair
    ("application/x-www-form-urlencoded", lambda n: b"&" * n),
    ("application/x-www-form-urlencoded", lambda n: b"%" * n),
    ("application/x-www-form-urlencoded", lambda n: b"csrf_tok" * (n // 8)),  # a near-name
    ("application/x-www-form-urlencoded", lambda n: b"%63=&" * (n // 5)),
    (MULTIPART, lambda n: PART + b"x" * n + b"\r\n--XyZ--\r\n"),  # one long file part
    (MULTIPART, lambda n: b"p" * n + b"\r\n--XyZ--\r\n"),  # a long preamble
    (MULTIPART, lambda n: b"\r\n--XyZ-" * (n // 8) + b"\r\n--XyZ--\r\n"),  # near-delimiters
    (MULTIPART, lambda n: (b"--XyZ\r\nX: " + b"h" * 8000 + b"\r\n\r\nv\r\n") * (n // 8000)),
]


@pytest.mark.parametrize(("content_type", "make"), PATHOLOGICAL)
@pytest.mark.parametrize("chunk", [1, 7, 16])
def test_scanner_work_is_linear_in_the_body(content_type: str, make: Any, chunk: int) -> None:
    # Before the fix a pending urlencoded pair (and a multipart preamble or part header) was
    # searched again from its start at every chunk: 2 MiB in 16-byte chunks took seconds.
    small, large = make(16_000), make(32_000)
    work_small = examined(content_type, small, chunk)
    work_large = examined(content_type, large, chunk)
    # A failed search looks again at most at the needle's length minus one bytes (the
    # delimiter "\r\n--XyZ" is 8 bytes long), so a byte is examined a bounded number of times.
    assert work_small <= 12 * len(small)
    assert work_large <= 12 * len(large)
    assert work_large <= 2.2 * work_small


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "csrf_token", "csrf%5Ftoken", "b+c", "%", "csrf_token%"]),
            st.binary(max_size=12),
        ),
        max_size=6,
    ),
    st.lists(st.integers(min_value=0, max_value=200), max_size=10),
    st.integers(min_value=1, max_value=120),
)
def test_urlencoded_any_chunking_gives_the_answer_of_one_chunk(
    pairs: list[tuple[str, bytes]], cuts: list[int], max_bytes: int
) -> None:
    body = b"&".join(name.encode() + b"=" + value for name, value in pairs)
    form = "application/x-www-form-urlencoded"
    assert scan(form, body, cuts, max_bytes) == scan(form, body, [], max_bytes)


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "csrf_token", "file"]), st.binary(max_size=20)), max_size=4
    ),
    st.lists(st.integers(min_value=0, max_value=600), max_size=10),
    st.integers(min_value=1, max_value=600),
)
def test_multipart_any_chunking_gives_the_answer_of_one_chunk(
    parts: list[tuple[str, bytes]], cuts: list[int], max_bytes: int
) -> None:
    body = multipart(*parts, filename="f.txt")
    assert scan(MULTIPART, body, cuts, max_bytes) == scan(MULTIPART, body, [], max_bytes)


@given(
    st.binary(max_size=300).map(lambda b: b.replace(b"Q", b"\r\n--XyZ")),
    st.lists(st.integers(min_value=0, max_value=300), max_size=8),
    st.integers(min_value=1, max_value=400),
)
def test_any_body_any_chunking_gives_the_answer_of_one_chunk(
    body: bytes, cuts: list[int], max_bytes: int
) -> None:
    for content_type in (MULTIPART, "application/x-www-form-urlencoded"):
        assert scan(content_type, body, cuts, max_bytes) == scan(content_type, body, [], max_bytes)


def test_a_body_exactly_at_the_cap_is_scanned_to_its_end() -> None:
    # An ASGI server may end a body with an empty last message: a body of exactly max_bytes
    # followed by the end is a whole body, not one over the cap.
    body = b"a=1&csrf_token=tok"
    scanner = FormTokenScanner.for_content_type(
        "application/x-www-form-urlencoded", field="csrf_token", max_bytes=len(body)
    )
    assert isinstance(scanner, FormTokenScanner)
    assert scanner.feed(body, more=True) is ScanStatus.MORE
    assert scanner.feed(b"", more=False) is ScanStatus.FOUND
    assert scanner.token == b"tok"
    over = FormTokenScanner.for_content_type(
        "application/x-www-form-urlencoded", field="csrf_token", max_bytes=len(body)
    )
    assert isinstance(over, FormTokenScanner)
    assert over.feed(body, more=True) is ScanStatus.MORE
    assert over.feed(b"&", more=False) is ScanStatus.TOO_LARGE
