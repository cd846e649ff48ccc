"""Authorization in Flask: the route table (:func:`init_authz`), :func:`require_permission` and
:func:`require_owner`.

::

    from bastion.flask.authz import init_authz, require_permission, require_owner

    init_authz(app, authorizer)          # the route table, before every view

    @app.post("/posts")
    @require_permission("posts:write")
    def create(): ...

    @app.post("/posts/<post_id>")
    @require_owner(lambda post_id: load_post(post_id), action="write")
    def edit(post_id, resource): ...

:func:`init_authz` runs the route table of :mod:`bastion.core.authz.routes` in a
``before_request`` hook rather than around ``app.wsgi_app``, because bastion's ``flask.session``
only exists inside Flask's request context: a WSGI middleware around the app would never see
the session's user. The refusals are those of :class:`bastion.wsgi.authz.AuthzMiddleware`.

The user is ``environ["bastion.principal"]`` (:class:`~bastion.wsgi.bearer.BearerMiddleware`,
:func:`bastion.flask.bearer_required`) first, else the user of bastion's ``flask.session``. The
authorizer is ``authorizer=``, else the one in ``environ["bastion.authz"]`` (put there by
:class:`bastion.wsgi.authz.AuthzMiddleware` or the stack), else
``app.extensions["bastion.authz"]``. Refusals are a response of their own (``401
unauthenticated``, ``403 <reason>``, ``503 authz_store_unavailable``; JSON or text by
:mod:`bastion.core.refusal`, ``Cache-Control: no-store``), before the view runs.
:func:`require_owner` calls the loader with the view's URL arguments, checks ``action`` on
what it returns (a Resource or the guide's dict: the owner as the app loaded it, never from
the form), and passes it to the view as ``resource``; ``None`` is a 404.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Final

from flask import Response, abort, current_app, request
from flask import session as flask_session

from bastion.authz.service import AUTHZ_KEY, STORE_UNAVAILABLE, SUBJECT_KEY
from bastion.core.authz.permission import Permission
from bastion.errors import AuditUnavailable, ConfigurationError, StoreUnavailable
from bastion.wsgi.authz import environ_user, refusal_parts, request_subject, route_refusal

if TYPE_CHECKING:
    from collections.abc import Callable

    from flask import Flask

    from bastion.authz.service import Authorizer
    from bastion.core.client import TrustedProxies

__all__ = ["init_authz", "require_owner", "require_permission"]

EXTENSION: Final = "bastion.authz"


def init_authz(
    app: Flask, authorizer: Authorizer, *, proxies: TrustedProxies | None = None
) -> None:
    """Check every request of ``app`` against ``authorizer``'s route table before its view,
    and make ``authorizer`` the one the decorators use (``app.extensions["bastion.authz"]``).
    """
    app.extensions[EXTENSION] = authorizer

    def route_table() -> Response | None:
        environ = request.environ
        found = route_refusal(authorizer, environ, session=flask_session, proxies=proxies)
        if found is None:
            return None
        status, refusal = found
        content_type, body, extra = refusal_parts(environ, refusal, status)
        return Response(body, status=status, headers=extra, content_type=content_type.decode())

    app.before_request(route_table)


def _authorizer(given: Authorizer | None, setting: str) -> Authorizer:
    if given is not None:
        return given
    found = request.environ.get(AUTHZ_KEY) or current_app.extensions.get(EXTENSION)
    if found is None:
        raise ConfigurationError(
            f"{setting} found no authorizer: pass authorizer=..., or wrap the app in "
            "bastion.wsgi.authz.AuthzMiddleware, or set app.extensions['bastion.authz']",
            setting=setting,
        )
    return found  # type: ignore[no-any-return]  # put there by the app or the stack


def _check(
    authorizer: Authorizer, permissions: tuple[str, ...], resource: object
) -> Response | None:
    environ = request.environ
    try:
        verdict = authorizer.gate_sync(
            environ_user(environ, flask_session),  # the proxy passes isinstance(Session)
            permissions,
            resource=resource,
            context={"method": request.method, "path": request.path},
            subject=request_subject(environ),
            client_ip=request.remote_addr,
        )
    except AuditUnavailable:
        raise  # fail-closed auditing: answered 503 further out
    except StoreUnavailable:
        status, refusal = 503, STORE_UNAVAILABLE
    else:
        if verdict.refusal is None:
            environ[SUBJECT_KEY] = verdict.subject
            return None
        status, refusal = verdict.status, verdict.refusal
    content_type, body, extra = refusal_parts(environ, refusal, status)
    return Response(body, status=status, headers=extra, content_type=content_type.decode())


def require_permission(
    *permissions: str, authorizer: Authorizer | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run the view only for a user holding every one of ``permissions`` (checked now)."""
    wanted = tuple(str(Permission.parse(p, setting="require_permission")) for p in permissions)
    if not wanted:
        raise ConfigurationError(
            "require_permission() needs at least one permission", setting="require_permission"
        )

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            refused = _check(_authorizer(authorizer, "require_permission"), wanted, None)
            return refused if refused is not None else view(*args, **kwargs)

        return guarded

    return decorate


def require_owner(
    loader: Callable[..., Any], *, action: str = "write", authorizer: Authorizer | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run the view only when the user may ``action`` on what ``loader`` (called with the
    view's URL arguments) returns; the view receives it as ``resource``."""
    if not isinstance(action, str) or not action:
        raise ConfigurationError("require_owner(action=...) must be an action", setting="action")

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            found = _authorizer(authorizer, "require_owner")
            loaded = loader(*args, **kwargs)
            if loaded is None:
                abort(404)
            # The check reads the guide's dict itself: a malformed row is a 403, never a 500.
            refused = _check(found, (action,), loaded)
            return refused if refused is not None else view(*args, resource=loaded, **kwargs)

        return guarded

    return decorate
