"""The ``authz`` group's FastAPI rows: one route bare, with a no-op dependency, and guarded.

The app is FastAPI with one route, ``GET /posts`` answering a plain-text ``ok``; the guarded
route adds ``dependencies=[Depends(guard)]``. The guard is, when helper ``authz-http``'s
``bastion.fastapi.require`` exists, ``require("posts:write", authorizer=...)`` with an
``Authorizer`` whose roles live in bastion's memory store (``AuthzPolicy(roles="store")``, two
users seeded through its ``Assignments``), the request signed in by the bearer principal that
``BearerMiddleware`` leaves in ``scope["state"]`` (so each request reads the user's roles from
the store, as in production). Without it, a plain async dependency that calls
``Policy.evaluate`` for a ``Subject`` an authentication layer left in the scope, and the row's
name says so. Proved before timing: 200 for the user holding ``posts:write``, 403 for the one
holding only ``posts:read``.

The no-op row (an async dependency taking the request and doing nothing) is FastAPI's own
cost of any dependency: the guard is shown against the bare route and against it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import PlainTextResponse
from starlette.requests import Request  # noqa: TC002 (FastAPI reads the annotation at run time)

from bench.driver import call_asgi, http_scope
from bench.groups.authz_policies import have_policy
from bench.measure import async_case

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from bench.driver import ASGIApp, Scope
    from bench.measure import Case

__all__ = [
    "GUARDS",
    "HTTP_BARE",
    "HTTP_NO_OP",
    "PERMISSION",
    "GuardWorld",
    "guard_label",
    "have_require",
    "http_cases",
]

PERMISSION: Final = "posts:write"
HTTP_BARE: Final = "FastAPI GET /posts: no dependency"
HTTP_NO_OP: Final = "FastAPI GET /posts: Depends(no-op async dependency)"
HTTP_WEIGHT: Final = 500
GUARDS: Final = ("none", "no-op", "authz")
_SUBJECT_KEY: Final = "bench.subject"


def have_require() -> bool:
    """Whether helper ``authz-http``'s ``bastion.fastapi.require`` exists."""
    import bastion.fastapi  # noqa: PLC0415

    return callable(getattr(bastion.fastapi, "require", None))


def guard_label() -> str:
    """The name of the guarded row: which guard it measures."""
    if have_require():
        return f'FastAPI GET /posts: Depends(require("{PERMISSION}")), roles in the memory store'
    return "FastAPI GET /posts: Depends(plain dependency calling Policy.evaluate)"


async def _no_op(request: Request) -> None:
    """A dependency that does nothing with the request: FastAPI's own cost of a dependency."""


def _evaluate_dependency(policy: Any) -> Callable[..., Awaitable[object]]:
    """The stand-in guard: the subject an authentication layer left in the scope, one
    ``Policy.evaluate``, 403 with the reason on a deny (async: a sync dependency would cost
    FastAPI a thread hop)."""
    evaluate = policy.evaluate

    async def check(request: Request) -> object:
        decision = evaluate(request.scope["state"][_SUBJECT_KEY], None, PERMISSION)
        if not decision.allowed:
            raise HTTPException(status_code=403, detail=str(decision.reason))
        return decision

    return check


def guard_policy() -> Any:
    """A small policy: ``writer`` holds ``posts:write``, ``reader`` only ``posts:read``."""
    from bastion.core.authz.policy import Policy  # noqa: PLC0415
    from bastion.core.authz.roles import Role  # noqa: PLC0415

    return Policy(
        roles=(
            Role(name="reader", permissions=("posts:read",)),
            Role(name="writer", permissions=(PERMISSION,), inherits=("reader",)),
        ),
        name="bench-guard",
    )


def _authorizer(policy: Any) -> Any:
    """An ``Authorizer`` over ``policy`` with the users' roles in a memory store, seeded."""
    from bastion.authz.policy import AuthzPolicy  # noqa: PLC0415
    from bastion.authz.service import Authorizer  # noqa: PLC0415
    from bastion.core.audit import Auditor, IdentifierHasher  # noqa: PLC0415
    from bastion.core.clock import system_clock  # noqa: PLC0415
    from bastion.core.keys import KeyRing  # noqa: PLC0415
    from bastion.stores.memory import MemoryStore  # noqa: PLC0415
    from bastion.testing.audit import RecordingAuditSink  # noqa: PLC0415

    auditor = Auditor(
        IdentifierHasher(KeyRing.generate()), system_clock, RecordingAuditSink(), aggregation=None
    )
    authorizer = Authorizer(AuthzPolicy(policy=policy), store=MemoryStore(), auditor=auditor)
    for role in ("writer", "reader"):
        authorizer.assignments.set_role_sync("seed", f"user-{role}", role, may_administer=True)
    return authorizer


class GuardWorld:
    """The policy, the guard and the requests of the FastAPI rows, built once."""

    def __init__(self) -> None:
        self.policy = guard_policy() if have_policy() else None
        self.real = self.policy is not None and have_require()
        self.authorizer = _authorizer(self.policy) if self.real else None
        self.guards = GUARDS if self.policy is not None else GUARDS[:2]

    def app(self, guard: str) -> ASGIApp:
        """The one-route app with ``guard`` (one of :data:`GUARDS`)."""
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        dependencies = []
        if guard == "no-op":
            dependencies.append(Depends(_no_op))
        elif guard == "authz" and self.real:
            from bastion.fastapi import require  # type: ignore[attr-defined]  # noqa: PLC0415

            dependencies.append(Depends(require(PERMISSION, authorizer=self.authorizer)))
        elif guard == "authz" and self.policy is not None:
            dependencies.append(Depends(_evaluate_dependency(self.policy)))
        elif guard != "none":
            raise ValueError(f"no guard {guard!r} here")

        async def posts() -> PlainTextResponse:
            return PlainTextResponse("ok")

        app.add_api_route("/posts", posts, methods=["GET"], dependencies=dependencies)
        return app

    def scope(self, role: str) -> Scope:
        """``GET /posts`` from the signed-in user holding ``role``."""
        scope = http_scope("GET", "/posts")
        if self.real:
            from bastion.core.tokens.principal import Principal  # noqa: PLC0415

            principal = Principal(
                subject=f"user-{role}",
                scopes=frozenset(),
                token_id=f"bench-{role}",
                expires_at=time.time() + 3600,
                claims={},
            )
            scope["state"] = {"bastion.principal": principal}
        elif self.policy is not None:
            from bastion.core.authz.subjects import Subject  # noqa: PLC0415

            scope["state"] = {_SUBJECT_KEY: Subject(id=f"user-{role}", roles=frozenset({role}))}
        return scope


async def _prove(name: str, app: ASGIApp, scope: Scope, status: int) -> None:
    answered, _headers, body = await call_asgi(app, scope)
    if answered != status:
        raise RuntimeError(f"authz case {name!r} answered {answered} ({body!r}), not {status}")


async def http_cases() -> list[Case]:
    """The route bare (the baseline), with a no-op dependency, and with the guard against
    both, each proved (without bastion's policy: the first two only)."""
    world = GuardWorld()
    apps = {guard: world.app(guard) for guard in world.guards}
    allowed = world.scope("writer")
    await _prove(HTTP_BARE, apps["none"], allowed, 200)
    await _prove(HTTP_NO_OP, apps["no-op"], allowed, 200)

    def request(app: ASGIApp) -> Callable[[], Awaitable[object]]:
        def op() -> Awaitable[object]:
            return call_asgi(app, allowed)

        return op

    cases = [
        async_case(HTTP_BARE, request(apps["none"]), weight=HTTP_WEIGHT),
        async_case(HTTP_NO_OP, request(apps["no-op"]), baseline=HTTP_BARE, weight=HTTP_WEIGHT),
    ]
    if "authz" not in apps:
        return cases
    label = guard_label()
    await _prove(label, apps["authz"], allowed, 200)
    await _prove(label, apps["authz"], world.scope("reader"), 403)
    guarded = request(apps["authz"])
    return [
        *cases,
        async_case(label, guarded, baseline=HTTP_BARE, weight=HTTP_WEIGHT),
        async_case(f"{label} (vs no-op)", guarded, baseline=HTTP_NO_OP, weight=HTTP_WEIGHT),
    ]


def instruction_app(guard: str) -> tuple[ASGIApp, Scope]:
    """For :mod:`bench.instructions`: the app with ``guard`` and the allowed request (the
    child checks its 200; the 403 of the denied request is proved by the group)."""
    world = GuardWorld()
    return world.app(guard), world.scope("writer")
