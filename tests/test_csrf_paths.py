"""CSRF and per-route headers read methods and paths as the rate limiter does.

A method in any case is the same method; an encoded ``_method`` override is still an override;
an exemption (a CSRF-exempt path, a per-route header policy) is never borrowed by a path that
resolves elsewhere; the path is the full one, mount prefix included, under ASGI and WSGI.
"""

from __future__ import annotations

import re
import socket
from typing import TYPE_CHECKING, Any

import flask
import pytest
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client, EnvironBuilder

from bastion.asgi import CSRFMiddleware, SecurityHeadersMiddleware
from bastion.core.csrf import CSRFChecker, CSRFConfig, CSRFReason, Facts, TokenSource
from bastion.core.keys import KeyRing
from bastion.errors import ConfigurationError
from bastion.wsgi import CSRFMiddleware as WSGICSRFMiddleware
from bastion.wsgi import SecurityHeadersMiddleware as WSGIHeadersMiddleware
from servers import uvicorn_thread

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, MutableMapping

NONCE = re.compile(rb"'nonce-[0-9a-f]+'")
KEYRING = KeyRing.from_secrets(["k" * 43])
CROSS_SITE = [(b"host", b"t"), (b"sec-fetch-site", b"cross-site"), (b"accept", b"application/json")]


async def ok_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def csrf(**config: Any) -> CSRFMiddleware:
    config.setdefault("token_source", TokenSource.DOUBLE_SUBMIT)
    return CSRFMiddleware(ok_app, config=CSRFConfig(**config), keyring=KEYRING, production=False)


async def call(
    app: Callable[..., Any],
    method: str,
    path: str,
    *,
    query: bytes = b"",
    root_path: str = "",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[int, dict[bytes, bytes], bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "root_path": root_path,
        "query_string": query,
        "headers": CROSS_SITE if headers is None else headers,
        "client": ("203.0.113.9", 5000),
        "server": ("t", 443),
    }
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return int(start["status"]), dict(start.get("headers", [])), body


@pytest.mark.asyncio
@pytest.mark.parametrize("method", ["get", "Get", "head", "options"])
async def test_safe_methods_in_any_case_pass(method: str) -> None:
    assert (await call(csrf(), method, "/form"))[0] == 200


@pytest.mark.asyncio
@pytest.mark.parametrize("method", ["post", "Post", "delete", "patch"])
async def test_unsafe_methods_in_any_case_are_checked(method: str) -> None:
    status, _, body = await call(csrf(), method, "/transfer")
    assert status == 403
    assert b'"reason": "cross_site"' in body


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "query",
    [b"_method=POST", b"_method=%50OST", b"%5Fmethod=post", b"_method=+delete", b"_METHOD=put"],
)
async def test_an_encoded_method_override_is_still_refused(query: bytes) -> None:
    status, _, body = await call(csrf(), "GET", "/transfer", query=query)
    assert status == 403
    assert b'"reason": "method_override"' in body


@pytest.mark.asyncio
async def test_every_override_header_is_read() -> None:
    headers = [*CROSS_SITE, (b"x-http-method-override", b"GET"), (b"x-http-method", b"DELETE")]
    status, _, body = await call(csrf(), "GET", "/transfer", headers=headers)
    assert (status, b'"reason": "method_override"' in body) == (403, True)


@pytest.mark.asyncio
async def test_every_value_of_a_repeated_override_header_is_read() -> None:
    # A framework's override middleware may read the last of repeated headers
    # (dict(scope["headers"]) does): the first value alone does not decide.
    headers = [
        *CROSS_SITE,
        (b"x-http-method-override", b"GET"),
        (b"x-http-method-override", b"DELETE"),
    ]
    status, _, body = await call(csrf(), "GET", "/transfer", headers=headers)
    assert (status, b'"reason": "method_override"' in body) == (403, True)


def test_every_override_header_is_read_under_wsgi() -> None:
    app = flask.Flask(__name__)
    app.add_url_rule("/transfer", "transfer", lambda: "page")
    app.wsgi_app = WSGICSRFMiddleware(  # type: ignore[method-assign]
        app.wsgi_app,
        config=CSRFConfig(token_source=TokenSource.DOUBLE_SUBMIT),
        keyring=KEYRING,
        production=False,
    )
    headers = {"X-HTTP-Method-Override": "GET", "X-Method-Override": "delete"}
    assert app.test_client().get("/transfer", headers=headers).status_code == 403


@pytest.mark.asyncio
async def test_a_lower_case_override_header_is_refused() -> None:
    headers = [*CROSS_SITE, (b"x-http-method-override", b"delete")]
    status, _, body = await call(csrf(), "get", "/transfer", headers=headers)
    assert (status, b'"reason": "method_override"' in body) == (403, True)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "path", ["/hooks/../transfer", "/hooks/./../transfer", "/hooks//x", "/hooks/x/.."]
)
async def test_an_exemption_is_not_borrowed_by_another_spelling(path: str) -> None:
    app = csrf(exempt=("/hooks/*", "/webhook"))
    assert (await call(app, "POST", "/hooks/github"))[0] == 200
    assert (await call(app, "POST", "/webhook"))[0] == 200
    status, _, body = await call(app, "POST", path)
    assert status == 403
    assert b'"reason": "cross_site"' in body


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/webhook/", "/Webhook", "//webhook", "/x/../webhook"])
async def test_an_exact_exemption_is_exact(path: str) -> None:
    assert (await call(csrf(exempt=("/webhook",)), "POST", path))[0] == 403


@pytest.mark.asyncio
async def test_asgi_exemptions_use_the_full_path() -> None:
    app = csrf(exempt=("/app/hook",))
    assert (await call(app, "POST", "/app/hook", root_path="/app"))[0] == 200
    assert (await call(app, "POST", "/hook", root_path="/app"))[0] == 200  # an older server
    assert (await call(app, "POST", "/hook"))[0] == 403


def test_wsgi_exemptions_use_the_full_path() -> None:
    inner = flask.Flask(__name__)
    inner.add_url_rule("/hook", "hook", lambda: "ok", methods=["POST"])
    guarded = WSGICSRFMiddleware(
        inner.wsgi_app,
        config=CSRFConfig(exempt=("/app/hook",), token_source=TokenSource.DOUBLE_SUBMIT),
        keyring=KEYRING,
        production=False,
    )
    client = Client(DispatcherMiddleware(flask.Flask("root"), {"/app": guarded}))
    cross = {"Sec-Fetch-Site": "cross-site"}
    assert client.post("/app/hook", headers=cross).status_code == 200


def test_wsgi_lower_case_post_is_checked() -> None:
    app = flask.Flask(__name__)
    app.add_url_rule("/transfer", "transfer", lambda: "moved", methods=["POST"])
    app.wsgi_app = WSGICSRFMiddleware(  # type: ignore[method-assign]
        app.wsgi_app,
        config=CSRFConfig(token_source=TokenSource.DOUBLE_SUBMIT),
        keyring=KEYRING,
        production=False,
    )
    client = app.test_client()
    refused = client.open("/transfer", method="post", headers={"Sec-Fetch-Site": "cross-site"})
    assert refused.status_code == 403
    assert client.open("/transfer", method="get").status_code == 405  # safe: reaches Flask


def test_exempt_paths_must_be_in_normal_form() -> None:
    for bad in ("/hooks//", "/a/./b", "/a/../b"):
        with pytest.raises(ConfigurationError) as caught:
            CSRFConfig(exempt=(bad,))
        assert caught.value.setting == "exempt"


def test_the_checker_normalizes_a_method_it_is_given() -> None:
    checker = CSRFChecker(CSRFConfig())
    assert checker.check(Facts(method="get", path="/")).passed is not None
    assert checker.check(Facts(method="post", path="/", sec_fetch_site="cross-site")).reason is (
        CSRFReason.CROSS_SITE
    )


# -- per-route header policies -------------------------------------------------------------------


async def csp_of(app: Any, path: str) -> bytes:
    _, headers, _ = await call(app, "GET", path, headers=[(b"host", b"t")])
    return NONCE.sub(b"'nonce'", headers[b"content-security-policy"])


@pytest.mark.asyncio
async def test_a_relaxed_override_is_not_borrowed_by_a_path_that_resolves_elsewhere() -> None:
    app = SecurityHeadersMiddleware(ok_app, overrides={"/docs/*": "relaxed"})
    strict, relaxed = await csp_of(app, "/account"), await csp_of(app, "/docs")
    assert strict != relaxed
    assert await csp_of(app, "/docs/../account") == strict
    assert await csp_of(app, "/docs//x") == relaxed  # every reading is under /docs


def wsgi_headers(app: Any, script_name: str, path_info: str) -> dict[str, str]:
    environ = EnvironBuilder().get_environ()
    environ.update(SCRIPT_NAME=script_name, PATH_INFO=path_info)
    found: dict[str, str] = {}

    def start_response(status: str, headers: Iterable[tuple[str, str]], *exc: Any) -> None:
        found.update((k.lower(), v) for k, v in headers)

    b"".join(app(environ, start_response))
    found["content-security-policy"] = NONCE.sub(
        b"'nonce'", found["content-security-policy"].encode()
    ).decode()
    return found


def test_wsgi_header_overrides_use_the_full_path() -> None:
    inner = flask.Flask(__name__)
    inner.add_url_rule("/docs", "docs", lambda: "docs")
    app = WSGIHeadersMiddleware(inner.wsgi_app, overrides={"/app/docs": "relaxed"})
    relaxed = WSGIHeadersMiddleware(inner.wsgi_app, "relaxed")
    csp = "content-security-policy"
    assert wsgi_headers(app, "/app", "/docs")[csp] == wsgi_headers(relaxed, "/app", "/docs")[csp]
    assert wsgi_headers(app, "", "/docs")[csp] != wsgi_headers(relaxed, "", "/docs")[csp]


# -- what a real server hands the layers -------------------------------------------------------


def raw_post(port: int, target: bytes, extra: bytes = b"") -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
            b"Sec-Fetch-Site: cross-site\r\nAccept: application/json\r\n"
            + extra
            + b"Connection: close\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_encoded_dot_segments_do_not_borrow_an_exemption_under_uvicorn() -> None:
    """uvicorn decodes ``%2e%2e`` and ``%2f`` into the path; the exemption is not borrowed."""
    app = csrf(exempt=("/hooks/*",))
    with uvicorn_thread(app, http="h11") as port:
        assert raw_post(port, b"/hooks/github")[0] == 200
        for target in (
            b"/hooks/%2e%2e/transfer",
            b"/hooks/..%2ftransfer",
            b"/hooks%2f..%2ftransfer",
        ):
            status, body = raw_post(port, target)
            assert (status, b'"reason": "cross_site"' in body) == (403, True), target


def test_wsgi_dot_segments_under_a_mount_do_not_borrow_an_exemption() -> None:
    guarded = WSGICSRFMiddleware(
        lambda environ, start_response: (start_response("200 OK", []), [b"ok"])[1],
        config=CSRFConfig(exempt=("/app/hook",), token_source=TokenSource.DOUBLE_SUBMIT),
        keyring=KEYRING,
        production=False,
    )

    def status_of(script_name: str, path_info: str) -> str:
        environ = EnvironBuilder(method="POST", headers={"Sec-Fetch-Site": "cross-site"})
        built = environ.get_environ()
        built.update(SCRIPT_NAME=script_name, PATH_INFO=path_info)
        seen: list[str] = []
        b"".join(guarded(built, lambda status, headers, *exc: seen.append(status)))
        return seen[0]

    assert status_of("/app", "/hook") == "200 OK"
    assert status_of("/app", "/x/../hook") == "403 Forbidden"
    assert status_of("", "/hook") == "403 Forbidden"
