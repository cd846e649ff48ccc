"""``at_hash`` (OpenID Connect Core 3.1.3.8): checked when the ID token carries it.

The local provider leaves ``at_hash`` out of code-flow ID tokens (it is optional there), so the
proxy re-signs the provider's ID token with the provider's own key and an ``at_hash`` added:
the right one (the login succeeds), a wrong one, or the right one beside a swapped or missing
access token (each refused as ``id_token_invalid``, detail ``at_hash``, and audited).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest

from bastion.core.oidc.idtoken import check_at_hash, token_hash
from bastion.core.oidc.reasons import OIDCReason, OIDCRejected
from bastion.oidc import Provider
from oidc_routes_support import JSON, Site, register, sign_in
from oidc_support import oidc_provider_fixture  # noqa: F401 (the fixture)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from oidc_support import Exchange, OIDCProviderServer

SPEC_ACCESS_TOKEN = "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"  # Core, appendix A.3
SPEC_AT_HASH = "77QmUPtjPfzWtF2AnpK9RQ"


@pytest.fixture
def site(oidc_provider: OIDCProviderServer) -> Iterator[Site]:
    client = register(oidc_provider)
    opened = Site(
        [
            Provider(
                name="local",
                issuer=oidc_provider.issuer,
                client_id=client.client_id,
                client_secret=client.client_secret,
            )
        ]
    )
    yield opened
    opened.close()


def with_at_hash(
    op: OIDCProviderServer,
    *,
    alg: str = "RS256",
    at_hash: Callable[[str], str] | None = None,
    access_token: Callable[[str], str | None] | None = None,
) -> Callable[[Exchange], Exchange]:
    """A token-endpoint rewrite: the ID token re-signed by the provider's ``alg`` key with
    ``at_hash`` (default: the right one), the access token then changed by ``access_token``."""

    def edit(exchange: Exchange) -> Exchange:
        body = json.loads(exchange.body)
        real = body["access_token"]
        value = at_hash(real) if at_hash is not None else token_hash(real, alg=alg)
        header = None if alg == "RS256" else {"alg": alg}
        body["id_token"] = op.forge_id_token(
            body["id_token"], claims={"at_hash": value}, header=header
        )
        if access_token is not None:
            changed = access_token(real)
            if changed is None:
                del body["access_token"]
            else:
                body["access_token"] = changed
        return replace(exchange, body=json.dumps(body).encode())

    return edit


def login(site: Site, op: OIDCProviderServer, edit: Callable[[Exchange], Exchange]) -> Any:
    with site.starlette() as client:
        response = client.get("/auth/local/login", follow_redirects=False)
        callback = sign_in(response.headers["location"])
        with op.proxy.rewrite("/token", edit):
            answer = client.get(callback, headers=JSON, follow_redirects=False)
        return answer, client.get("/me").json()


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_the_right_at_hash_passes(site: Site, oidc_provider: OIDCProviderServer, alg: str) -> None:
    response, me = login(site, oidc_provider, with_at_hash(oidc_provider, alg=alg))
    assert response.status_code == 303, response.text
    assert me == {"user": "user-1"}


@pytest.mark.parametrize(
    "forgery",
    [
        {"at_hash": lambda real: token_hash(real + "x", alg="RS256")},
        {"at_hash": lambda real: token_hash(real, alg="RS512")},  # another hash size
        {"access_token": lambda real: real[:-2] + "zz"},  # swapped beside a genuine ID token
        {"access_token": lambda real: None},  # an at_hash naming no access token
    ],
    ids=["wrong-hash", "wrong-size", "swapped-token", "no-access-token"],
)
def test_a_mismatching_at_hash_is_refused(
    site: Site, oidc_provider: OIDCProviderServer, forgery: dict[str, Any]
) -> None:
    response, me = login(site, oidc_provider, with_at_hash(oidc_provider, **forgery))
    assert response.status_code == 400
    assert response.json()["error"] == "id_token_invalid"
    assert me == {"user": None}
    assert site.fails()[-1] == {
        "method": "oidc",
        "reason": "id_token_invalid",
        "provider": "local",
        "detail": "at_hash",
    }


def test_token_hash_matches_the_specification_example() -> None:
    assert token_hash(SPEC_ACCESS_TOKEN, alg="RS256") == SPEC_AT_HASH
    assert token_hash(SPEC_ACCESS_TOKEN, alg="PS256") == SPEC_AT_HASH
    assert token_hash(SPEC_ACCESS_TOKEN, alg="ES256") == SPEC_AT_HASH
    # the left half of SHA-384 / SHA-512 / SHAKE256(114): 24, 32 and 57 bytes, base64url
    assert len(token_hash(SPEC_ACCESS_TOKEN, alg="ES384")) == 32
    assert len(token_hash(SPEC_ACCESS_TOKEN, alg="RS512")) == 43
    assert token_hash(SPEC_ACCESS_TOKEN, alg="EdDSA") == token_hash(
        SPEC_ACCESS_TOKEN, alg="Ed25519"
    )
    assert len(token_hash(SPEC_ACCESS_TOKEN, alg="EdDSA", curve="Ed448")) == 76


def test_check_at_hash_is_total() -> None:
    check_at_hash({}, None, alg="RS256")  # no claim: nothing to check
    check_at_hash({"at_hash": SPEC_AT_HASH}, SPEC_ACCESS_TOKEN, alg="RS256")
    for claims, token in [
        ({"at_hash": 7}, SPEC_ACCESS_TOKEN),
        ({"at_hash": SPEC_AT_HASH}, ""),
        ({"at_hash": SPEC_AT_HASH}, "tokén"),
        ({"at_hash": "é"}, SPEC_ACCESS_TOKEN),
    ]:
        with pytest.raises(OIDCRejected) as raised:
            check_at_hash(claims, token, alg="RS256")
        assert (raised.value.reason, raised.value.detail) == (
            OIDCReason.ID_TOKEN_INVALID,
            "at_hash",
        )
