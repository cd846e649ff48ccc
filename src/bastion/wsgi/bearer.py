"""``BearerMiddleware`` for WSGI: the twin of :mod:`bastion.asgi.bearer`, synchronous.

Same paths (``protected`` fail closed, ``scopes`` rules, ``optional``), same refusals (400
``invalid_request``, 401 ``invalid_token`` with ``WWW-Authenticate``, 403
``insufficient_scope``, 503 with ``Retry-After`` when the verifier's store is down) and the
same reasons for refusing an invalid token on an optional path (see that module). The
verifier's :meth:`~bastion.core.tokens.principal.BearerVerifier.authenticate_sync` runs on the
request thread; the principal goes in ``environ["bastion.principal"]`` (``None`` on an optional
path without a token), which :func:`principal` reads.

WSGI servers join repeated headers into one value with ``", "``; two ``Authorization``
headers therefore arrive as one value with a comma, which is not token68 and is refused as
``invalid_request`` like two separate headers under ASGI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from bastion.core.paths import EVERYWHERE, PathPattern
from bastion.core.refusal import refusal_body
from bastion.core.request import wsgi_path
from bastion.core.tokens.bearer import (
    MAX_AUTHORIZATION_BYTES,
    OUTAGE,
    BearerChallenge,
    BearerRefused,
    BearerRules,
    public_url,
    quote_path,
)
from bastion.core.tokens.principal import BearerRequest, Principal
from bastion.core.tokens.reasons import TokenRejected
from bastion.errors import AuditUnavailable, ConfigurationError, StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from bastion.core.audit import Auditor
    from bastion.core.client import TrustedProxies
    from bastion.core.refusal import Refusal
    from bastion.core.tokens.bearer import Route
    from bastion.core.tokens.principal import BearerVerifier
    from bastion.wsgi.types import Environ, StartResponse, WSGIApp

__all__ = [
    "PRINCIPAL_KEY",
    "BearerMiddleware",
    "answer_refused",
    "authenticate_environ",
    "environ_client",
    "environ_url",
    "principal",
    "refusal_response",
]

PRINCIPAL_KEY: Final = "bastion.principal"
"""The key of the principal in the environ."""

_STATUS: Final = {
    400: "400 Bad Request",
    401: "401 Unauthorized",
    403: "403 Forbidden",
    503: "503 Service Unavailable",
}


def authenticate_environ(
    environ: Mapping[str, Any],
    verifier: BearerVerifier,
    rules: BearerRules,
    route: Route,
    proxies: TrustedProxies | None = None,
) -> Principal | None:
    """The principal of a WSGI request on ``route`` (``None``: optional and no token of ours);
    raises :class:`~bastion.core.tokens.bearer.BearerRefused` or
    :class:`~bastion.errors.StoreUnavailable`. Shared with :mod:`bastion.flask`."""
    authorization = environ.get("HTTP_AUTHORIZATION")
    dpop = environ.get("HTTP_DPOP")
    presented = rules.present(
        route,
        () if authorization is None else (authorization.encode("latin-1", "replace"),),
        () if dpop is None else (dpop,),
    )
    if presented is None:
        return None
    request = BearerRequest(
        presented.authorization,
        presented.dpop,
        environ.get("REQUEST_METHOD") or "GET",
        environ_url(environ, proxies),
    )
    try:
        found = verifier.authenticate_sync(request)
    except TokenRejected as rejected:
        raise rules.rejected(route, presented, rejected) from None
    return rules.admit(route, found, presented.scheme)


def environ_url(environ: Mapping[str, Any], proxies: TrustedProxies | None) -> str:
    """``scheme://host/path`` of the request for DPoP's ``htu`` (see
    :func:`~bastion.core.tokens.bearer.public_url`)."""
    path = wsgi_path(environ.get("SCRIPT_NAME", ""), environ.get("PATH_INFO", ""))
    return public_url(
        environ.get("wsgi.url_scheme") or "http",
        environ.get("HTTP_HOST") or environ.get("SERVER_NAME"),
        quote_path(path.encode("latin-1", "replace")),
        peer=environ.get("REMOTE_ADDR") or None,
        forwarded_proto=environ.get("HTTP_X_FORWARDED_PROTO"),
        forwarded_host=environ.get("HTTP_X_FORWARDED_HOST"),
        forwarded_for=_values(environ.get("HTTP_X_FORWARDED_FOR")),
        proxies=proxies,
    )


def _values(value: str | None) -> tuple[str, ...]:
    return (value,) if value else ()


def environ_client(environ: Mapping[str, Any], proxies: TrustedProxies | None) -> str | None:
    """The client's address for an audit event (through the trusted proxies)."""
    peer = environ.get("REMOTE_ADDR") or None
    if proxies is None or not proxies.trusts_any:
        return peer
    value = environ.get("HTTP_" + proxies.header.upper().replace("-", "_"))
    address = proxies.client(peer, () if value is None else (value,))
    return None if address is None else str(address)


def refusal_response(
    environ: Mapping[str, Any],
    status: int,
    body_of: Refusal,
    extra: list[tuple[str, str]],
) -> tuple[str, list[tuple[str, str]], bytes]:
    """``(status line, headers, body)`` of a refusal, JSON or text by the request's
    ``Accept`` (:mod:`bastion.core.refusal`)."""
    content_type, body = refusal_body(
        body_of, accept=environ.get("HTTP_ACCEPT"), content_type=environ.get("CONTENT_TYPE")
    )
    headers = [
        ("Content-Type", content_type.decode("ascii")),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        *extra,
    ]
    return _STATUS.get(status, f"{status} Refused"), headers, body


def answer_refused(
    environ: Mapping[str, Any], rules: BearerRules, refused: BearerRefused
) -> tuple[str, list[tuple[str, str]], bytes]:
    """The response of ``refused``: status, ``WWW-Authenticate`` and body."""
    status, challenge, body_of = rules.answer(refused)
    extra = [("WWW-Authenticate", challenge), *rules.extra_headers(refused)]
    return refusal_response(environ, status, body_of, extra)


class BearerMiddleware:
    """Access tokens for one WSGI app (see the module docstring and
    :class:`bastion.asgi.bearer.BearerMiddleware`, whose arguments it takes)."""

    __slots__ = ("_app", "_proxies", "_retry_after", "_verifier", "rules")

    def __init__(
        self,
        app: WSGIApp,
        verifier: BearerVerifier,
        *,
        protected: str | Iterable[str | PathPattern] = (EVERYWHERE,),
        optional: str | Iterable[str | PathPattern] = (EVERYWHERE,),
        scopes: Mapping[str, Iterable[str]] | None = None,
        challenge: BearerChallenge | None = None,
        proxies: TrustedProxies | None = None,
        max_header_bytes: int = MAX_AUTHORIZATION_BYTES,
        retry_after: int = 5,
        auditor: Auditor | None = None,
    ) -> None:
        self._app = app
        self._verifier = verifier
        self.rules = BearerRules(
            protected=protected,
            optional=optional,
            scopes=scopes,
            challenge=challenge,
            max_header_bytes=max_header_bytes,
            auditor=auditor,
        )
        self._proxies = proxies
        if (
            isinstance(retry_after, bool)
            or not isinstance(retry_after, int)
            or not 1 <= retry_after <= 3600
        ):
            raise ConfigurationError(
                f"retry_after must be a whole number of seconds from 1 to 3600, got "
                f"{retry_after!r}",
                setting="retry_after",
            )
        self._retry_after = str(retry_after)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = wsgi_path(environ.get("SCRIPT_NAME", ""), environ.get("PATH_INFO", ""))
        route = self.rules.route(path)
        if route is None:
            return self._app(environ, start_response)
        try:
            found = authenticate_environ(environ, self._verifier, self.rules, route, self._proxies)
        except BearerRefused as refused:
            if self.rules.auditor is not None:
                self.rules.audit(
                    refused, path=path, client_ip=environ_client(environ, self._proxies)
                )
            status, headers, body = answer_refused(environ, self.rules, refused)
            start_response(status, headers)
            return [body]
        except AuditUnavailable:
            raise  # fail-closed auditing: answered 503 further out
        except StoreUnavailable:
            status, headers, body = refusal_response(
                environ, 503, OUTAGE, [("Retry-After", self._retry_after)]
            )
            start_response(status, headers)
            return [body]
        environ[PRINCIPAL_KEY] = found
        return self._app(environ, start_response)

    def __repr__(self) -> str:
        protected = [str(p) for p in self.rules.protected]
        return f"BearerMiddleware(protected={protected!r}, realm={self.rules.challenge.realm!r})"


_ABSENT: Final = object()


def principal(environ: Mapping[str, Any]) -> Principal | None:
    """The principal :class:`BearerMiddleware` attached to this request, or ``None``.

    Raises :class:`~bastion.errors.ConfigurationError` when no ``BearerMiddleware`` covered
    the request, so a missing middleware cannot pass for an anonymous request.
    """
    found = environ.get(PRINCIPAL_KEY, _ABSENT)
    if found is _ABSENT:
        raise ConfigurationError(
            "no BearerMiddleware covered this request; wrap the app in "
            "bastion.wsgi.bearer.BearerMiddleware(app, verifier, ...) with this path in "
            "protected= or optional=",
            setting="middleware",
        )
    return found if isinstance(found, Principal) else None
