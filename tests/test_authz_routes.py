"""The route table of the authorization middleware (bastion.core.authz.routes), sans-I/O."""

from __future__ import annotations

import pytest

from bastion.core.authz.routes import (
    BAD_PATH,
    METHOD_OVERRIDE,
    NO_ROUTE_RULE,
    RouteKind,
    RouteRule,
    RouteTable,
    denied_refusal,
    path_problem,
)
from bastion.errors import ConfigurationError

TABLE = RouteTable(
    (
        RouteRule(path="/*", permission="app:use"),
        RouteRule(path="/admin/*", permission="admin:access"),
        RouteRule(path="/admin/health", methods=("GET",), public=True),
        RouteRule(path="/login", public=True),
        RouteRule(path="/static/*", methods=("GET",), public=True),
        RouteRule(path="/posts", methods=("POST",), permission="posts:write"),
        RouteRule(path="/posts", methods=("GET",), permission="posts:read"),
        RouteRule(path="/me", permission=None),
    )
)

OPEN = RouteTable(
    (RouteRule(path="/login", public=True), RouteRule(path="/admin", permission="a:b"))
)


def permissions(method: str, path: str, **kw: object) -> tuple[str, ...]:
    outcome = TABLE.decide(method, path, **kw)  # type: ignore[arg-type]
    assert outcome.kind is RouteKind.PROTECTED, outcome
    return outcome.permissions


def test_every_covering_rule_applies() -> None:
    assert permissions("GET", "/admin/users") == ("app:use", "admin:access")
    assert permissions("POST", "/posts") == ("app:use", "posts:write")
    assert permissions("GET", "/posts") == ("app:use", "posts:read")
    assert permissions("GET", "/me") == ("app:use",)  # the signed-in rule adds no permission
    assert [r.path for r in TABLE.decide("GET", "/me").rules] == ["/*", "/me"]


def test_public_rules_lift_only_less_specific_rules_above_them() -> None:
    assert TABLE.decide("GET", "/login").kind is RouteKind.PUBLIC
    assert TABLE.decide("POST", "/login").kind is RouteKind.PUBLIC
    assert TABLE.decide("GET", "/static/app.css").kind is RouteKind.PUBLIC
    assert TABLE.decide("GET", "/admin/health").kind is RouteKind.PUBLIC
    # a public rule's methods only
    assert permissions("POST", "/static/app.css") == ("app:use",)
    assert permissions("POST", "/admin/health") == ("app:use", "admin:access")
    # a public /* never opens a more specific protective rule
    table = RouteTable(
        (RouteRule(path="/*", public=True), RouteRule(path="/admin/*", permission="x:y"))
    )
    assert table.decide("GET", "/admin/x").permissions == ("x:y",)
    assert table.decide("GET", "/other").kind is RouteKind.PUBLIC


@pytest.mark.parametrize(
    "path", ["/Login", "/LOGIN", "/login/", "/Static/app.css", "/ADMIN/health", "/admin/health/"]
)
def test_case_and_trailing_slash_variants_are_not_public(path: str) -> None:
    outcome = TABLE.decide("GET", path)
    assert outcome.kind is RouteKind.PROTECTED
    assert "app:use" in outcome.permissions


@pytest.mark.parametrize("path", ["/ADMIN/users", "/Admin/users/", "/admin", "/ADMIN", "/admin/"])
def test_case_and_trailing_slash_variants_meet_protective_rules(path: str) -> None:
    assert permissions("GET", path) == ("app:use", "admin:access")


def test_trailing_slash_at_an_exact_rule() -> None:
    assert OPEN.decide("GET", "/admin/").permissions == ("a:b",)
    assert OPEN.decide("GET", "/Admin").permissions == ("a:b",)
    refused = OPEN.decide("GET", "/login/")  # not the public path as written, and no other rule
    assert (refused.status, refused.refusal) == (403, NO_ROUTE_RULE)


def test_no_rule_fails_closed() -> None:
    for method, path in [("GET", "/elsewhere"), ("DELETE", "/login/x"), ("GET", "/adminx")]:
        outcome = OPEN.decide(method, path)
        assert outcome.kind is RouteKind.REFUSED
        assert (outcome.status, outcome.refusal) == (403, NO_ROUTE_RULE)
    empty = RouteTable(())
    assert empty.decide("GET", "/").refusal == NO_ROUTE_RULE


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/login/../admin", None),
        ("/static/../admin/users", "/static/../admin/users"),
        ("/static/../admin", "/static/%2e%2e/admin"),  # the server decoded %2e%2e
        ("/static/..", "/static/%2E%2E"),
        ("/admin/x", "/static%2F..%2Fadmin/x"),  # raw holds an encoded slash
        ("/static/a/b", "/static/a%2Fb"),
        ("/static/a\\b", None),
        ("/static/a", "/static/a%5Cb"),
        ("//admin", None),
        ("/static//x", None),
        ("/./admin", None),
        ("/admin/.", None),
        ("/admin;jsessionid=1", None),
        ("/static/x;/../admin", None),
        ("/static/%2e%2e/admin", "/static/%252e%252e/admin"),  # double encoding
        ("/static/x", "/static/x%3Bparam"),
        ("/static/x\x00", None),
        ("/static/x", "/static/%2eenv"),
        ("relative", None),
    ],
)
def test_paths_not_in_normal_form_are_refused(path: str, raw: str | None) -> None:
    outcome = TABLE.decide("GET", path, raw_path=raw)
    assert outcome.kind is RouteKind.REFUSED
    assert (outcome.status, outcome.refusal) == (400, BAD_PATH)
    assert outcome.refusal.error == "authz_bad_path"
    assert path_problem(path, raw) == outcome.problem


def test_normal_paths_pass_the_check() -> None:
    for path, raw in [
        ("/static/.env", "/static/.env"),
        ("/static/caf\u00e9", "/static/caf%C3%A9"),
        ("/static/a.b/c", "/static/a.b/c?x=%2F"),  # the query is not the path
        ("/", "/"),
        ("/static/x", None),
    ]:
        assert path_problem(path, raw) is None, path


def test_head_is_checked_as_get() -> None:
    table = RouteTable(
        (
            RouteRule(path="/report", methods=("GET",), permission="reports:read"),
            RouteRule(path="/report", methods=("POST",), permission="reports:write"),
        )
    )
    assert table.decide("HEAD", "/report").permissions == ("reports:read",)
    assert table.decide("head", "/report").permissions == ("reports:read",)
    assert table.decide("post", "/report").permissions == ("reports:write",)
    # a rule for HEAD alone leaves the GET reading of a HEAD request without a rule
    head_only = RouteTable((RouteRule(path="/x", methods=("HEAD",), public=True),))
    assert head_only.decide("HEAD", "/x").refusal == NO_ROUTE_RULE


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        (["DELETE", None, None], ""),
        ([None, "PUT", None], ""),
        ([None, None, "delete"], ""),
        ([None, None, None], "_method=DELETE"),
        ([None, None, None], "%5Fmethod=put"),
    ],
)
def test_method_override_is_refused(headers: list[str | None], query: str) -> None:
    outcome = TABLE.decide("POST", "/posts", override_headers=headers, query=query)
    assert (outcome.status, outcome.refusal) == (400, METHOD_OVERRIDE)
    assert outcome.refusal.error == "authz_method_override"


def test_method_override_allowed_checks_every_method() -> None:
    table = RouteTable(
        (
            RouteRule(path="/posts", methods=("POST",), permission="posts:write"),
            RouteRule(path="/posts", methods=("DELETE",), permission="posts:delete"),
        ),
        method_override=True,
    )
    outcome = table.decide("POST", "/posts", override_headers=["DELETE"])
    assert outcome.permissions == ("posts:write", "posts:delete")
    unknown = table.decide("POST", "/posts", override_headers=["PATCH"])
    assert unknown.refusal == NO_ROUTE_RULE


def test_denied_refusal_carries_the_reason() -> None:
    refusal = denied_refusal("not_owner")
    assert refusal.error == "not_owner"
    assert refusal.detail == "Forbidden: not owner.\n"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"path": "admin"}, "must be a path"),
        ({"path": "/admin/"}, "ends in '/'"),
        ({"path": "/a*"}, "'*'"),
        ({"path": "/x", "methods": "GET"}, "tuple of method names"),
        ({"path": "/x", "methods": ()}, "is empty"),
        ({"path": "/x", "methods": ("GET", "*")}, "mix '*'"),
        ({"path": "/x", "methods": ("G T",)}, "not a method name"),
        ({"path": "/x", "permission": ""}, "permission text"),
        ({"path": "/x", "permission": "Posts:Write"}, "Posts:Write"),
        ({"path": "/x", "permission": "post*:read"}, "post*:read"),
        ({"path": "/x", "public": True, "permission": "a:b"}, "public route checks nothing"),
        ({"path": "/x", "public": "yes"}, "True or False"),
    ],
)
def test_bad_rules_are_configuration_errors(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigurationError, match=r"authz\.routes") as caught:
        RouteRule(**kwargs)  # type: ignore[arg-type]
    assert needle in str(caught.value)


def test_bad_tables_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="both public and protected"):
        RouteTable((RouteRule(path="/x", public=True), RouteRule(path="/X", permission="a:b")))
    with pytest.raises(ConfigurationError, match="RouteRule values"):
        RouteTable(("/x",))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="method_override"):
        RouteTable((), method_override="yes")  # type: ignore[arg-type]
    # the same pattern for different methods is fine
    table = RouteTable(
        (
            RouteRule(path="/x", methods=("GET",), public=True),
            RouteRule(path="/x", methods=("POST",)),
        )
    )
    assert table.decide("GET", "/x").kind is RouteKind.PUBLIC
    assert table.decide("POST", "/x").kind is RouteKind.PROTECTED
