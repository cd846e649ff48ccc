"""Sessions as FastAPI dependencies.

::

    from fastapi import FastAPI
    from bastion.asgi import SessionMiddleware
    from bastion.integrations.sessions import SessionDep, UserIdDep

    app = FastAPI()
    app.add_middleware(SessionMiddleware, store="redis://localhost:6379/0")

    @app.post("/cart")
    async def add(item: str, session: SessionDep) -> dict[str, list[str]]:
        session["cart"] = [*session.get("cart", []), item]
        return {"cart": session["cart"]}

    @app.get("/me")
    async def me(user_id: UserIdDep) -> dict[str, str]:   # 401 unless logged in
        return {"user": user_id}

:data:`SessionDep` (``Annotated[Session, Depends(session_dependency)]``) loads the session
with an awaited read before the handler runs, so a first touch inside the handler never blocks
the event loop, whatever the store. A handler that takes it but never touches the session
still costs that one read; leave it out where the session is not needed.
:data:`UserIdDep` also refuses a request whose session has no logged-in user with ``401``. A
session that is only waiting for a second factor (:mod:`bastion.engine.second_factor`) has no
user, so it is refused too.

For type checkers both names are plain types (``Session``, ``str``); at run time they are the
``Annotated`` dependencies, built when first looked up so that importing this module does not
import FastAPI (only Starlette).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

# FastAPI reads the dependencies' parameter annotations at run time: this name must exist.
from starlette.requests import HTTPConnection  # noqa: TC002

from bastion.asgi.sessions import get_session, session_engine
from bastion.engine.sessions import Session

if TYPE_CHECKING:
    from typing import TypeAlias

    SessionDep: TypeAlias = Session
    UserIdDep: TypeAlias = str

__all__ = [
    "SessionDep",
    "UserIdDep",
    "authenticated_user_id",
    "session_dependency",
]


async def session_dependency(request: HTTPConnection) -> Session:
    """The request's session, loaded (one awaited store read when a cookie is present)."""
    session = get_session(request)
    await session_engine(request).load(session)
    return session


async def authenticated_user_id(request: HTTPConnection) -> str:
    """The logged-in user's id; ``401`` when there is none (HTTP requires a
    ``WWW-Authenticate`` challenge on a 401; ``Session`` names the scheme: log in)."""
    session = await session_dependency(request)
    user_id = session.user_id
    if user_id is None:
        from starlette.exceptions import HTTPException  # noqa: PLC0415 (framework on demand)

        raise HTTPException(
            status_code=401,
            detail="Not logged in",
            headers={"WWW-Authenticate": "Session"},
        )
    return user_id


def _annotated(name: str) -> Any:
    from fastapi import Depends  # noqa: PLC0415 (FastAPI is imported only when used)

    if name == "SessionDep":
        return Annotated[Session, Depends(session_dependency)]
    return Annotated[str, Depends(authenticated_user_id)]


if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        """``SessionDep`` and ``UserIdDep``, built on first access (module ``__getattr__``)."""
        if name in {"SessionDep", "UserIdDep"}:
            return _annotated(name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
