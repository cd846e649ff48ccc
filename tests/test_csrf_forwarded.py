"""CSRF reads the request's scheme and host from the one trusted-proxy resolver.

The app runs at ``http://10.0.0.5`` behind a proxy; browsers see ``https://shop.example``.
Only a trusted proxy's forwarding headers say so: RFC 7239 ``Forwarded`` (``proto=``,
``host=``) when :class:`~bastion.core.client.TrustedProxies` reads ``header="forwarded"``, else
``X-Forwarded-Proto`` / ``-Host``. A client that is not a trusted proxy forges them in vain.
Real apps through httpx (ASGI) and werkzeug (WSGI) test clients.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import werkzeug.test

from bastion.asgi import CSRFMiddleware
from bastion.core.client import TrustedProxies
from bastion.wsgi import CSRFMiddleware as WSGICSRFMiddleware

PROXY = "10.0.0.1"
CLIENT = "192.0.2.7"
SHOP = "https://shop.example"
FORWARDED = TrustedProxies(["10.0.0.0/8"], header="forwarded")
X_FORWARDED = TrustedProxies(["10.0.0.0/8"])


async def asgi_ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def wsgi_ok(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


async def asgi_post(proxies: TrustedProxies, peer: str, headers: dict[str, str]) -> Any:
    app = CSRFMiddleware(asgi_ok, proxies=proxies, production=False)
    transport = httpx.ASGITransport(app=app, client=(peer, 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://10.0.0.5") as client:
        response = await client.post("/pay", headers={"Accept": "application/json", **headers})
    return response.status_code, response.content, response.headers.get("cache-control")


def wsgi_post(proxies: TrustedProxies, peer: str, headers: dict[str, str]) -> Any:
    app = WSGICSRFMiddleware(wsgi_ok, proxies=proxies, production=False)
    response = werkzeug.test.Client(app).post(
        "/pay",
        base_url="http://10.0.0.5",
        headers={"Accept": "application/json", **headers},
        environ_base={"REMOTE_ADDR": peer},
    )
    return response.status_code, response.get_data(), response.headers.get("Cache-Control")


async def post(adapter: str, proxies: TrustedProxies, peer: str, headers: dict[str, str]) -> Any:
    if adapter == "asgi":
        return await asgi_post(proxies, peer, headers)
    return wsgi_post(proxies, peer, headers)


PASSED = (200, b"ok", None)
MISMATCH = (
    403,
    (
        b'{"error": "csrf_failed", "reason": "origin_mismatch", "detail": "CSRF check failed: '
        b'The Origin header names an origin this app does not trust."}'
    ),
    "no-store",
)
ADAPTERS = pytest.mark.parametrize("adapter", ["asgi", "wsgi"])


@pytest.mark.asyncio
@ADAPTERS
async def test_the_refusal_without_forwarding(adapter: str) -> None:
    assert await post(adapter, FORWARDED, PROXY, {"Origin": SHOP}) == MISMATCH


@pytest.mark.asyncio
@ADAPTERS
async def test_a_trusted_proxys_forwarded_proto_and_host_are_honoured(adapter: str) -> None:
    headers = {"Origin": SHOP, "Forwarded": "for=198.51.100.7;proto=https;host=shop.example"}
    assert await post(adapter, FORWARDED, PROXY, headers) == PASSED


@pytest.mark.asyncio
@ADAPTERS
async def test_a_forged_forwarded_from_an_untrusted_client_is_ignored(adapter: str) -> None:
    headers = {"Origin": SHOP, "Forwarded": "for=198.51.100.7;proto=https;host=shop.example"}
    assert await post(adapter, FORWARDED, CLIENT, headers) == MISMATCH
    # And a forged X-Forwarded-Host from a client: ignored, whichever family is read.
    forged = {"Origin": SHOP, "X-Forwarded-Host": "shop.example", "X-Forwarded-Proto": "https"}
    assert await post(adapter, X_FORWARDED, CLIENT, forged) == MISMATCH
    assert await post(adapter, FORWARDED, CLIENT, forged) == MISMATCH


@pytest.mark.asyncio
@ADAPTERS
async def test_a_trusted_proxys_x_forwarded_host_is_honoured(adapter: str) -> None:
    headers = {"Origin": SHOP, "X-Forwarded-Host": "shop.example", "X-Forwarded-Proto": "https"}
    assert await post(adapter, X_FORWARDED, PROXY, headers) == PASSED


@pytest.mark.asyncio
@ADAPTERS
async def test_only_the_configured_family_is_read(adapter: str) -> None:
    """A proxy writes one family; the other may be the client's, passed through."""
    x_forwarded = {"Origin": SHOP, "X-Forwarded-Host": "shop.example", "X-Forwarded-Proto": "https"}
    assert await post(adapter, FORWARDED, PROXY, x_forwarded) == MISMATCH
    forwarded = {"Origin": SHOP, "Forwarded": "proto=https;host=shop.example"}
    assert await post(adapter, X_FORWARDED, PROXY, forwarded) == MISMATCH


@pytest.mark.asyncio
@ADAPTERS
async def test_mixed_case_header_and_parameter_names(adapter: str) -> None:
    headers = {"Origin": SHOP, "FORWARDED": 'For="198.51.100.7";PROTO=HTTPS;Host="shop.example"'}
    assert await post(adapter, FORWARDED, PROXY, headers) == PASSED
    headers = {"Origin": SHOP, "x-FORWARDED-host": "shop.example", "X-forwarded-PROTO": "HTTPS"}
    assert await post(adapter, X_FORWARDED, PROXY, headers) == PASSED


@pytest.mark.asyncio
@ADAPTERS
async def test_the_proxys_own_element_is_the_last_one(adapter: str) -> None:
    # The client wrote the first element; the trusted proxy appended its own.
    forged = "proto=https;host=evil.example, for=198.51.100.7;proto=https;host=shop.example"
    evil = {"Origin": "https://evil.example", "Forwarded": forged}
    assert await post(adapter, FORWARDED, PROXY, evil) == MISMATCH
    assert await post(adapter, FORWARDED, PROXY, {"Origin": SHOP, "Forwarded": forged}) == PASSED


@pytest.mark.asyncio
@ADAPTERS
async def test_a_chain_of_trusted_proxies_reports_what_the_first_one_saw(adapter: str) -> None:
    # A CDN saw https://shop.example from the client; the load balancer (10.0.0.2, trusted)
    # appended what it saw from the CDN.
    chain = "for=198.51.100.7;proto=https;host=shop.example, for=10.0.0.2;proto=http;host=lb"
    assert await post(adapter, FORWARDED, PROXY, {"Origin": SHOP, "Forwarded": chain}) == PASSED
    # When the hop before the last is not a trusted proxy, its element is not believed.
    chain = "for=198.51.100.7;proto=https;host=shop.example, for=203.0.113.1;proto=http;host=lb"
    assert await post(adapter, FORWARDED, PROXY, {"Origin": SHOP, "Forwarded": chain}) == MISMATCH


@pytest.mark.asyncio
@ADAPTERS
async def test_a_malformed_element_reports_nothing(adapter: str) -> None:
    for value in (
        "proto=https;proto=https;host=shop.example",  # a parameter twice
        "proto=gopher;host=shop.example",  # not a web scheme: the host alone is believed
    ):
        headers = {"Origin": SHOP, "Forwarded": value}
        assert await post(adapter, FORWARDED, PROXY, headers) == MISMATCH, value
    # Several Forwarded header lines are one list (RFC 9110 section 5.3).
    if adapter == "asgi":
        app = CSRFMiddleware(asgi_ok, proxies=FORWARDED, production=False)
        transport = httpx.ASGITransport(app=app, client=(PROXY, 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://10.0.0.5") as client:
            response = await client.post(
                "/pay",
                headers=[
                    ("Origin", SHOP),
                    ("Forwarded", "proto=https;host=evil.example"),
                    ("Forwarded", "for=198.51.100.7;proto=https;host=shop.example"),
                ],
            )
        assert response.status_code == 200


def test_the_resolver_reads_forwarded_proto_and_host() -> None:
    reported = FORWARDED.forwarded_origin
    assert reported(PROXY, ["for=1.2.3.4;proto=https;host=shop.example"]) == (
        "https",
        "shop.example",
    )
    assert reported(CLIENT, ["for=1.2.3.4;proto=https;host=shop.example"]) == (None, None)
    assert reported(PROXY, ['host="shop.example:8443"']) == (None, "shop.example:8443")
    assert reported(PROXY, [], proto="https", host="shop.example") == (None, None)
    assert X_FORWARDED.forwarded_origin(PROXY, [], proto="https", host="shop.example") == (
        "https",
        "shop.example",
    )
    assert X_FORWARDED.forwarded_origin(PROXY, ["proto=https;host=a"]) == (None, None)
    assert TrustedProxies().forwarded_origin(PROXY, [], proto="https") == (None, None)


# -- X-Forwarded-Proto / -Host: the item the trusted proxy wrote, not the client's first ------


@pytest.mark.asyncio
@ADAPTERS
async def test_a_client_supplied_first_x_forwarded_host_is_ignored(adapter: str) -> None:
    # The attacker's page posts with its own X-Forwarded-Host; the proxy appends the real one.
    forged = {"X-Forwarded-Host": "evil.example, shop.example", "X-Forwarded-Proto": "https"}
    evil = {"Origin": "https://evil.example", **forged}
    assert await post(adapter, X_FORWARDED, PROXY, evil) == MISMATCH
    assert await post(adapter, X_FORWARDED, PROXY, {"Origin": SHOP, **forged}) == PASSED


@pytest.mark.asyncio
@ADAPTERS
async def test_a_client_supplied_first_x_forwarded_proto_is_ignored(adapter: str) -> None:
    # The proxy serves plain http://shop.example and appends "http" after the client's "https".
    forged = {"X-Forwarded-Host": "shop.example", "X-Forwarded-Proto": "https, http"}
    assert await post(adapter, X_FORWARDED, PROXY, {"Origin": SHOP, **forged}) == MISMATCH
    plain = {"Origin": "http://shop.example", **forged}
    assert await post(adapter, X_FORWARDED, PROXY, plain) == PASSED


def test_the_resolver_counts_the_trusted_proxies_in_x_forwarded_for() -> None:
    value = X_FORWARDED.forwarded_value
    # One proxy (the peer): the last item is its own; the ones before are the client's.
    assert value(PROXY, "evil.example, shop.example") == "shop.example"
    assert value(PROXY, "shop.example") == "shop.example"
    # Two trusted proxies that append (X-Forwarded-For ends with the edge's address): the
    # edge's item, the second from the right.
    hops = ["198.51.100.7, 10.0.0.2"]
    assert X_FORWARDED.hops(PROXY, hops) == 2
    assert value(PROXY, "evil.example, shop.example, lb", hops) == "shop.example"
    # The client's own X-Forwarded-For entries do not add hops: the walk stops at the client.
    forged = ["10.0.0.3, 198.51.100.7, 10.0.0.2"]
    assert X_FORWARDED.hops(PROXY, forged) == 2
    assert value(PROXY, "evil.example, shop.example, lb", forged) == "shop.example"
    # Fewer items than proxies: they set the header rather than appended; the leftmost.
    assert value(PROXY, "shop.example", hops) == "shop.example"
    assert value(CLIENT, "shop.example") is None
    assert X_FORWARDED.hops(CLIENT, hops) == 0
    assert value(PROXY, "") is None
    assert value(PROXY, "shop.example, ") is None  # the proxy wrote an empty item
    assert X_FORWARDED.forwarded_origin(PROXY, proto="HTTPS, http", host="a, b") == ("http", "b")
