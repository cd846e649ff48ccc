"""Access tokens in Flask views: ``@bearer_required("scope", ...)`` and ``principal()``.

::

    import bastion.flask

    bastion.flask.init_bearer(app, verifier, challenge=BearerChallenge(realm="api"))

    @app.get("/api/me")
    @bastion.flask.bearer_required("profile:read")
    def me():
        return {"sub": bastion.flask.principal().subject}

The decorator fails closed: without a valid token the view does not run (``401`` with
``WWW-Authenticate: Bearer realm="..."``; ``400 invalid_request`` for a malformed header; ``401
invalid_token``; ``403 insufficient_scope`` naming the scopes; ``503`` with ``Retry-After``
when the verifier's store is down), with the same bodies and headers as
:class:`bastion.wsgi.bearer.BearerMiddleware`. When that middleware already covered the
request, its principal is used as is (no second verification); otherwise the decorator
verifies with the verifier :func:`init_bearer` registered on the app, and raises
:class:`~bastion.errors.ConfigurationError` (a 500: a setup bug, never an open door) when
there is none.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar

from flask import Flask, Response, current_app, request

from bastion.core.request import wsgi_path
from bastion.core.tokens.bearer import (
    MAX_AUTHORIZATION_BYTES,
    OUTAGE,
    BearerChallenge,
    BearerRefused,
    BearerRules,
    Route,
    check_scopes,
)
from bastion.core.tokens.principal import Principal
from bastion.core.tokens.reasons import TokenReason
from bastion.errors import AuditUnavailable, ConfigurationError, StoreUnavailable
from bastion.wsgi.bearer import (
    PRINCIPAL_KEY,
    answer_refused,
    authenticate_environ,
    environ_client,
    refusal_response,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.core.audit import Auditor
    from bastion.core.client import TrustedProxies
    from bastion.core.tokens.principal import BearerVerifier

__all__ = ["bearer_required", "init_bearer", "principal"]

P = ParamSpec("P")
R = TypeVar("R")

_EXTENSION: Final = "bastion.bearer"
_ABSENT: Final = object()


class _Bearer:
    """What :func:`init_bearer` leaves in ``app.extensions["bastion.bearer"]``."""

    __slots__ = ("proxies", "retry_after", "rules", "verifier")

    def __init__(
        self,
        verifier: BearerVerifier | None,
        rules: BearerRules,
        proxies: TrustedProxies | None,
        retry_after: int,
    ) -> None:
        self.verifier = verifier
        self.rules = rules
        self.proxies = proxies
        self.retry_after = retry_after


_DEFAULT: Final = _Bearer(None, BearerRules(protected=(), optional=()), None, 5)


def init_bearer(
    app: Flask,
    verifier: BearerVerifier | None,
    *,
    challenge: BearerChallenge | None = None,
    proxies: TrustedProxies | None = None,
    max_header_bytes: int = MAX_AUTHORIZATION_BYTES,
    retry_after: int = 5,
    auditor: Auditor | None = None,
) -> None:
    """Register the verifier (and the challenge, proxies and caps) that
    :func:`bearer_required` uses on ``app``. ``verifier=None`` relies on
    :class:`~bastion.wsgi.bearer.BearerMiddleware` having covered every decorated view.
    ``auditor`` receives ``input_validation_fail`` / ``authz_fail`` events, as the
    middleware's does."""
    if (
        isinstance(retry_after, bool)
        or not isinstance(retry_after, int)
        or not 1 <= retry_after <= 3600
    ):
        raise ConfigurationError(
            f"retry_after must be a whole number of seconds from 1 to 3600, got {retry_after!r}",
            setting="retry_after",
        )
    rules = BearerRules(
        protected=(),
        optional=(),
        challenge=challenge,
        max_header_bytes=max_header_bytes,
        auditor=auditor,
    )
    app.extensions[_EXTENSION] = _Bearer(verifier, rules, proxies, retry_after)


def _principal_for(route: Route) -> Principal | Response:
    bearer: _Bearer = current_app.extensions.get(_EXTENSION, _DEFAULT)
    environ = request.environ
    try:
        return bearer.rules.admit(route, _verified(bearer, route))
    except BearerRefused as refused:
        if bearer.rules.auditor is not None:
            path = wsgi_path(environ.get("SCRIPT_NAME", ""), environ.get("PATH_INFO", ""))
            client = environ_client(environ, bearer.proxies)
            bearer.rules.audit(refused, path=path, client_ip=client)
        status, headers, body = answer_refused(environ, bearer.rules, refused)
    except AuditUnavailable:
        raise  # fail-closed auditing: answered 503 further out
    except StoreUnavailable:
        status, headers, body = refusal_response(
            environ, 503, OUTAGE, [("Retry-After", str(bearer.retry_after))]
        )
    return Response(body, status=status, headers=headers)


def _verified(bearer: _Bearer, route: Route) -> Principal:
    """The request's principal: the middleware's, else verified now; ``BearerRefused``
    (``MISSING``) when there is none."""
    environ = request.environ
    found = environ.get(PRINCIPAL_KEY, _ABSENT)
    if found is _ABSENT:
        if bearer.verifier is None:
            raise ConfigurationError(
                "bearer_required needs a verifier: call "
                "bastion.flask.init_bearer(app, verifier), or wrap the app in "
                "bastion.wsgi.bearer.BearerMiddleware covering this path",
                setting="verifier",
            )
        found = authenticate_environ(environ, bearer.verifier, bearer.rules, route, bearer.proxies)
        environ[PRINCIPAL_KEY] = found
    if not isinstance(found, Principal):
        raise BearerRefused(TokenReason.MISSING, scopes=route.scopes)
    return found


def bearer_required(*scopes: str) -> Callable[[Callable[P, R]], Callable[P, R | Response]]:
    """A view decorator: the view runs only for a valid access token granting every one of
    ``scopes`` (checked at decoration: RFC 6749 scope-tokens). See the module docstring."""
    needed = check_scopes(scopes)
    route = Route(required=True, scopes=needed)

    def decorate(view: Callable[P, R]) -> Callable[P, R | Response]:
        @functools.wraps(view)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R | Response:
            found = _principal_for(route)
            if isinstance(found, Response):
                return found
            return view(*args, **kwargs)

        return guarded

    return decorate


def principal() -> Principal | None:
    """The current request's principal (set by :func:`bearer_required` or by
    :class:`~bastion.wsgi.bearer.BearerMiddleware`); ``None`` on an optional path without a
    token. Raises :class:`~bastion.errors.ConfigurationError` when neither covered the
    request, so a missing decorator cannot pass for an anonymous request."""
    found: Any = request.environ.get(PRINCIPAL_KEY, _ABSENT)
    if found is _ABSENT:
        raise ConfigurationError(
            "no bearer_required decorator or BearerMiddleware covered this request",
            setting="middleware",
        )
    return found if isinstance(found, Principal) else None
