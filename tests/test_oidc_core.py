"""The sans-I/O OpenID Connect core: PKCE, the login-state record, discovery checks, the
authorization URL, the callback checks, the ID token's claims and the safe ``next``."""

from __future__ import annotations

import urllib.parse
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.core.oidc.authorize import authorization_url
from bastion.core.oidc.callback import MAX_PARAM, Callback, check_response, read_callback
from bastion.core.oidc.discovery import discovery_url, parse_discovery
from bastion.core.oidc.idtoken import check_claims, check_leeway
from bastion.core.oidc.pkce import challenge, check_verifier, new_verifier
from bastion.core.oidc.reasons import OIDCReason, OIDCRejected
from bastion.core.oidc.redirect import check_allowed, check_next
from bastion.core.oidc.state import (
    LoginState,
    decode_state,
    encode_state,
    matches_binding,
    new_login_state,
)
from bastion.errors import BadData, ConfigurationError

ISSUER = "https://op.example"
NOW = 1_700_000_000.0


def _reason(excinfo: pytest.ExceptionInfo[OIDCRejected]) -> OIDCReason:
    return excinfo.value.reason


# -- PKCE ----------------------------------------------------------------------------------------


def test_pkce_matches_rfc_7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_new_verifiers_are_well_formed_and_fresh() -> None:
    verifiers = {new_verifier() for _ in range(50)}
    assert len(verifiers) == 50
    assert all(check_verifier(v) == v and len(v) == 43 for v in verifiers)


@pytest.mark.parametrize("bad", ["short", "a" * 129, "a" * 42 + "!", "a" * 42 + " "])
def test_malformed_verifiers_are_refused(bad: str) -> None:
    with pytest.raises(BadData):
        challenge(bad)


# -- login state ---------------------------------------------------------------------------------


def _record(**changes: Any) -> LoginState:
    values: dict[str, Any] = {
        "provider": "local",
        "redirect_uri": "https://app.example/auth/local/callback",
        "next_url": "/account",
        "session_binding": "pre-login-handle",
        "now": NOW,
    }
    values.update(changes)
    return new_login_state(**values)


def test_state_round_trips_and_binds_to_the_browser() -> None:
    record = _record()
    assert decode_state(encode_state(record)) == record
    assert matches_binding(record, "pre-login-handle")
    assert not matches_binding(record, "another-browser")
    assert "pre-login-handle" not in encode_state(record).decode()
    other = _record()
    assert {other.state, other.nonce, other.code_verifier}.isdisjoint(
        {record.state, record.nonce, record.code_verifier}
    )


@given(st.binary(max_size=300))
def test_decode_state_is_total_over_bytes(raw: bytes) -> None:
    try:
        decoded = decode_state(raw)
    except BadData:
        return
    assert isinstance(decoded, LoginState)


def test_decode_state_refuses_extra_members_and_wrong_types() -> None:
    raw = encode_state(_record())
    with pytest.raises(BadData, match="unexpected members"):
        decode_state(raw[:-1] + b',"admin":true}')
    with pytest.raises(BadData, match="created_at"):
        decode_state(raw.replace(b'"created_at":1700000000.0', b'"created_at":"now"'))


# -- discovery -----------------------------------------------------------------------------------


def _document(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/auth",
        "token_endpoint": f"{ISSUER}/token",
        "jwks_uri": f"{ISSUER}/jwks",
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "authorization_response_iss_parameter_supported": True,
        "end_session_endpoint": f"{ISSUER}/session/end",
    }
    document.update(changes)
    return {k: v for k, v in document.items() if v is not None}


def test_a_good_discovery_document() -> None:
    metadata = parse_discovery(_document(), issuer=ISSUER)
    assert metadata.token_endpoint == f"{ISSUER}/token"
    assert metadata.id_token_algs == ("RS256", "ES256")
    assert metadata.iss_parameter_supported is True
    assert metadata.end_session_endpoint == f"{ISSUER}/session/end"
    assert discovery_url(ISSUER + "/") == f"{ISSUER}/.well-known/openid-configuration"


def test_loopback_http_is_allowed_for_tests() -> None:
    local = "http://127.0.0.1:4000"
    document = _document(
        issuer=local,
        authorization_endpoint=f"{local}/auth",
        token_endpoint=f"{local}/token",
        jwks_uri=f"{local}/jwks",
    )
    assert parse_discovery(document, issuer=local).jwks_uri == f"{local}/jwks"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"issuer": ISSUER + "/"}, "issuer"),  # exact, no normalisation
        ({"issuer": "https://evil.example"}, "issuer"),
        ({"token_endpoint": "http://op.example/token"}, "token_endpoint"),
        ({"jwks_uri": "https://user@op.example/jwks"}, "jwks_uri"),
        ({"authorization_endpoint": "/auth"}, "authorization_endpoint"),
        ({"jwks_uri": None}, "jwks_uri"),
        ({"response_types_supported": ["id_token"]}, "response type"),
        ({"code_challenge_methods_supported": ["plain"]}, "S256"),
        ({"id_token_signing_alg_values_supported": ["none", "HS256"]}, "asymmetric"),
        ({"id_token_signing_alg_values_supported": "RS256"}, "list of strings"),
        ({"authorization_response_iss_parameter_supported": "yes"}, "boolean"),
    ],
)
def test_bad_discovery_documents_are_bad_responses(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(OIDCRejected, match=message) as excinfo:
        parse_discovery(_document(**changes), issuer=ISSUER)
    assert _reason(excinfo) is OIDCReason.BAD_RESPONSE


def test_none_and_hmac_are_dropped_from_the_listed_algorithms() -> None:
    document = _document(id_token_signing_alg_values_supported=["none", "HS256", "PS256"])
    assert parse_discovery(document, issuer=ISSUER).id_token_algs == ("PS256",)
    absent = _document(id_token_signing_alg_values_supported=None)
    assert parse_discovery(absent, issuer=ISSUER).id_token_algs == ("RS256",)
    with pytest.raises(OIDCRejected, match="not a JSON object"):
        parse_discovery(["issuer"], issuer=ISSUER)


# -- the authorization URL -----------------------------------------------------------------------


def test_authorization_url_carries_every_parameter_encoded() -> None:
    record = _record(redirect_uri="https://app.example/cb?x=1&y=2")
    url = authorization_url(
        f"{ISSUER}/auth?tenant=a", record, client_id="app&admin=1", scopes=("openid", "email")
    )
    base, _, query = url.partition("?")
    assert base == f"{ISSUER}/auth"
    params = urllib.parse.parse_qs(query, strict_parsing=True)
    assert params == {
        "tenant": ["a"],
        "response_type": ["code"],
        "client_id": ["app&admin=1"],
        "redirect_uri": ["https://app.example/cb?x=1&y=2"],
        "scope": ["openid email"],
        "state": [record.state],
        "nonce": [record.nonce],
        "code_challenge": [challenge(record.code_verifier)],
        "code_challenge_method": ["S256"],
    }


def test_extra_parameters_cannot_override_the_flow() -> None:
    record = _record()
    url = authorization_url(
        f"{ISSUER}/auth", record, client_id="app", scopes=("openid",), extra={"prompt": "login"}
    )
    assert url.endswith("&prompt=login")
    for name in ("state", "response_mode", "code_challenge_method"):
        with pytest.raises(ConfigurationError) as excinfo:
            authorization_url(
                f"{ISSUER}/auth", record, client_id="app", scopes=("openid",), extra={name: "x"}
            )
        assert excinfo.value.setting == "extra_params"


# -- the callback --------------------------------------------------------------------------------


def test_callback_without_state_is_state_missing() -> None:
    for params in ({}, {"code": "abc"}, {"state": "", "code": "abc"}):
        with pytest.raises(OIDCRejected) as excinfo:
            read_callback(params)
        assert _reason(excinfo) is OIDCReason.STATE_MISSING


def test_provider_error_with_or_without_state() -> None:
    with pytest.raises(OIDCRejected) as excinfo:
        read_callback({"error": "access_denied"})
    assert (_reason(excinfo), excinfo.value.detail) == (OIDCReason.PROVIDER_ERROR, "access_denied")
    callback = read_callback({"error": "access_denied", "state": "s", "iss": ISSUER})
    with pytest.raises(OIDCRejected) as excinfo:
        check_response(callback, issuer=ISSUER, iss_required=True)
    assert (_reason(excinfo), excinfo.value.detail) == (OIDCReason.PROVIDER_ERROR, "access_denied")
    odd = read_callback({"error": "<script>", "state": "s"})
    with pytest.raises(OIDCRejected) as excinfo:
        check_response(odd, issuer=ISSUER, iss_required=False)
    assert (_reason(excinfo), excinfo.value.detail) == (OIDCReason.PROVIDER_ERROR, None)


def test_rfc_9207_iss() -> None:
    good = read_callback({"state": "s", "code": "c", "iss": ISSUER})
    assert check_response(good, issuer=ISSUER, iss_required=True) == "c"
    absent = read_callback({"state": "s", "code": "c"})
    assert check_response(absent, issuer=ISSUER, iss_required=False) == "c"
    for callback, required in ((absent, True), (Callback("s", "c", ISSUER + "/", None), False)):
        with pytest.raises(OIDCRejected) as excinfo:
            check_response(callback, issuer=ISSUER, iss_required=required)
        assert _reason(excinfo) is OIDCReason.ISS_MISMATCH
    # a mix-up: the iss check runs before the error is believed
    mixed = read_callback({"state": "s", "error": "access_denied", "iss": "https://b.example"})
    with pytest.raises(OIDCRejected) as excinfo:
        check_response(mixed, issuer=ISSUER, iss_required=False)
    assert _reason(excinfo) is OIDCReason.ISS_MISMATCH


def test_callback_without_code_or_with_oversized_values() -> None:
    with pytest.raises(OIDCRejected) as excinfo:
        check_response(read_callback({"state": "s"}), issuer=ISSUER, iss_required=False)
    assert _reason(excinfo) is OIDCReason.BAD_RESPONSE
    with pytest.raises(OIDCRejected) as excinfo:
        read_callback({"state": "s" * (MAX_PARAM + 1)})
    assert _reason(excinfo) is OIDCReason.STATE_UNKNOWN
    with pytest.raises(OIDCRejected) as excinfo:
        read_callback({"state": "s", "code": "c" * (MAX_PARAM + 1)})
    assert _reason(excinfo) is OIDCReason.BAD_RESPONSE


_PARAM_NAMES = st.sampled_from(["state", "code", "iss", "error", "error_description", "x"])


@given(
    st.dictionaries(_PARAM_NAMES, st.text(max_size=40), max_size=6),
    st.booleans(),
)
def test_callback_checks_are_total_and_never_accept_a_foreign_iss(
    params: dict[str, str], required: bool
) -> None:
    refused: OIDCReason | None = None
    try:
        callback = read_callback(params)
        code = check_response(callback, issuer=ISSUER, iss_required=required)
    except OIDCRejected as exc:
        refused = exc.reason
    if refused is not None:
        assert refused in {
            OIDCReason.STATE_MISSING,
            OIDCReason.PROVIDER_ERROR,
            OIDCReason.ISS_MISMATCH,
            OIDCReason.BAD_RESPONSE,
        }
        return
    assert params["state"]
    assert code == params["code"]
    assert "error" not in params
    assert params.get("iss", ISSUER) == ISSUER
    assert not required or params.get("iss") == ISSUER


# -- the ID token's claims -----------------------------------------------------------------------


def _claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": "app",
        "sub": "alice",
        "exp": NOW + 300,
        "iat": NOW - 5,
        "nonce": "n-1",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _check(claims: dict[str, Any], **options: Any) -> str:
    return check_claims(claims, issuer=ISSUER, client_id="app", nonce="n-1", now=NOW, **options)


def test_good_claims_give_the_subject() -> None:
    assert _check(_claims()) == "alice"
    assert _check(_claims(aud=["app", "other"], azp="app")) == "alice"
    assert _check(_claims(azp="app")) == "alice"
    assert _check(_claims(exp=NOW - 30)) == "alice"  # within the 60 s leeway


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        ({"iss": ISSUER + "/"}, "iss"),
        ({"iss": None}, "iss"),
        ({"aud": "other"}, "aud"),
        ({"aud": ["other", 3]}, "aud"),
        ({"aud": []}, "aud"),
        ({"aud": ["app", "other"]}, "azp"),  # several audiences need azp
        ({"azp": "other"}, "azp"),
        ({"aud": ["app", "other"], "azp": "other"}, "azp"),
        ({"exp": NOW - 61}, "exp"),
        ({"exp": "tomorrow"}, "exp"),
        ({"exp": True}, "exp"),
        ({"exp": None}, "exp"),
        ({"iat": NOW + 61}, "iat"),
        ({"iat": NOW - 700}, "iat"),
        ({"iat": float("nan")}, "iat"),
        ({"sub": ""}, "sub"),
        ({"sub": None}, "sub"),
        ({"sub": "x" * 256}, "sub"),
    ],
)
def test_each_bad_claim_is_named(changes: dict[str, Any], detail: str) -> None:
    with pytest.raises(OIDCRejected) as excinfo:
        _check(_claims(**changes))
    assert (_reason(excinfo), excinfo.value.detail) == (OIDCReason.ID_TOKEN_INVALID, detail)


@pytest.mark.parametrize("nonce", ["n-2", None, 7, "n-1 "])
def test_a_foreign_nonce_is_nonce_mismatch(nonce: object) -> None:
    with pytest.raises(OIDCRejected) as excinfo:
        _check(_claims(nonce=nonce))
    assert _reason(excinfo) is OIDCReason.NONCE_MISMATCH


def test_leeway_is_bounded() -> None:
    assert check_leeway(0) == 0.0
    for bad in (-1, 301, True, "60"):
        with pytest.raises(ConfigurationError) as excinfo:
            check_leeway(bad)  # type: ignore[arg-type]
        assert excinfo.value.setting == "leeway"


# -- the safe next -------------------------------------------------------------------------------

ALLOWED = ("https://app.example", "https://docs.example/welcome")


@pytest.mark.parametrize(
    "value", ["/", "/account", "/a/b?c=d&e=%20f#frag", "/%41ccount", "/a:b", "/@x"]
)
def test_same_origin_paths_pass(value: str) -> None:
    assert check_next(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "https://app.example",
        "https://app.example/",
        "https://app.example/x?y=1",
        "https://docs.example/welcome",
    ],
)
def test_allow_listed_urls_pass(value: str) -> None:
    assert check_next(value, allowed=check_allowed(ALLOWED)) == value


@pytest.mark.parametrize(
    "value",
    [
        "//evil.example",
        "//evil.example/x",
        "/\\evil.example",
        "\\\\evil.example",
        "\\/evil.example",
        "https:evil.example",
        "https:/evil.example",
        "https://evil.example",
        "https://app.example.evil.example/",
        "https://app.example@evil.example/",
        "https://docs.example/welcome/../admin",
        "https://docs.example/other",
        "javascript:alert(1)",
        "evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "/ /evil.example",
        "/\x00",
        "/%2F%2Fevil.example",
        "/%2f%2fevil.example",
        "%2F%2Fevil.example",
        "/%5Cevil.example",
        "/%5cevil.example",
        "/%252F%252Fevil.example",
        "/%09/evil.example",
        "/%",
        "/%zz",
        "/\u2215evil.example",
        "/\uff0fevil.example",
        "/" + "a" * 2048,
    ],
)
def test_open_redirect_variants_are_refused(value: str) -> None:
    with pytest.raises(OIDCRejected) as excinfo:
        check_next(value, allowed=check_allowed(ALLOWED))
    assert _reason(excinfo) is OIDCReason.NEXT_REFUSED


def test_empty_next_is_the_default_and_the_allow_list_is_checked() -> None:
    assert check_next(None) == "/"
    assert check_next("", default="/home") == "/home"
    for bad in (
        "app.example",
        "https://a\\b.example",
        "ftp://app.example",
        "https://a.example/%2F",
    ):
        with pytest.raises(ConfigurationError) as excinfo:
            check_allowed([bad])
        assert excinfo.value.setting == "allowed_next"
    with pytest.raises(ConfigurationError):
        check_allowed("https://app.example")


def _browser_target(value: str) -> urllib.parse.SplitResult:
    """Where a browser on https://app.example/page goes for ``Location: value``: WHATWG URL
    parsing drops tabs and newlines and treats a backslash as a slash in special schemes."""
    cleaned = value.replace("\t", "").replace("\n", "").replace("\r", "").replace("\\", "/")
    return urllib.parse.urlsplit(urllib.parse.urljoin("https://app.example/page", cleaned))


_TRICKY = st.lists(
    st.sampled_from([*"/\\%2Ff5Cc:.@?#aev \t\n", "evil.example", "https:", "%2F", "%5C"]),
    max_size=12,
).map("".join)


@given(st.one_of(_TRICKY, st.text(max_size=30)))
def test_an_accepted_next_never_leaves_the_origin(value: str) -> None:
    refused: OIDCReason | None = None
    try:
        accepted = check_next(value)
    except OIDCRejected as exc:
        refused = exc.reason
    if refused is not None:
        assert refused is OIDCReason.NEXT_REFUSED
        return
    target = _browser_target(accepted)
    assert (target.scheme, target.netloc) == ("https", "app.example")
    decoded = urllib.parse.unquote(accepted)
    assert not decoded.startswith(("//", "/\\"))
    assert "\\" not in decoded


@given(_TRICKY.map(lambda tail: "/" + tail))
def test_decoding_an_accepted_path_once_more_stays_on_the_origin(value: str) -> None:
    try:
        accepted = check_next(value)
    except OIDCRejected:
        return
    # a framework that decodes the path again (some do) must still land on the origin
    target = _browser_target(urllib.parse.unquote(accepted))
    assert target.netloc == "app.example"
