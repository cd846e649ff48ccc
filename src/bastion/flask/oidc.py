"""The sign-in routes for Flask: a blueprint with ``/auth/<provider>/login``, ``/callback`` and
``/logout``.

::

    from bastion.flask.oidc import oidc_blueprint

    def on_identity(identity):                      # the app's account hook
        user = users.by_subject(identity.issuer, identity.subject)
        return None if user is None else user.id    # None: 403, nobody is logged in

    runtime = bastion.flask.protect(app, config)     # bastion sessions
    app.register_blueprint(oidc_blueprint(oidc, on_identity=on_identity))

The same steps, statuses, refusals and audit events as the Starlette routes
(:mod:`bastion.oidc.starlette`), including ``OIDCPolicy(login="tokens")`` and the
RP-initiated ``POST .../logout`` (guarded by bastion's CSRF check); the handlers call the
service's ``*_sync`` methods. ``flask.session`` must be bastion's
(:func:`bastion.flask.protect` with ``Bastion(store=...)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from flask import Blueprint, Response, request
from flask import session as flask_session

from bastion.core.oidc.reasons import OIDCReason, OIDCRejected
from bastion.core.refusal import refusal_body
from bastion.engine.sessions import Session
from bastion.errors import ConfigurationError, StoreUnavailable
from bastion.oidc.policy import OIDCLogin
from bastion.oidc.refusals import (
    BAD_HOST,
    LOGIN_STORE_UNAVAILABLE,
    NO_ACCOUNT,
    UNKNOWN_PROVIDER,
    refusal_for,
)
from bastion.oidc.service import usable_callback

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.oidc.service import OIDC, Identity

__all__ = ["oidc_blueprint"]

_NO_STORE: Final = {"Cache-Control": "no-store"}
_TOKENS_HEADERS: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def oidc_blueprint(
    oidc: OIDC,
    *,
    on_identity: Callable[[Identity], str | int | None],
    url_prefix: str = "/auth",
    name: str = "bastion_oidc",
) -> Blueprint:
    """A blueprint with ``GET {url_prefix}/<provider>/login``, ``GET .../callback`` and
    ``POST .../logout``.

    ``on_identity`` maps the signed-in :class:`~bastion.oidc.service.Identity` to the app's
    user id, or ``None`` to refuse (403); it may raise
    :class:`~bastion.core.oidc.reasons.OIDCRejected` (``oidc.linkable_email(identity)``)."""
    if not callable(on_identity):
        raise ConfigurationError(
            "on_identity must be a function of the Identity returning the user id",
            setting="on_identity",
        )
    blueprint = Blueprint(name, __name__, url_prefix=url_prefix)

    @blueprint.get("/<provider>/login")
    def login(provider: str) -> Response:
        chosen = oidc.provider(provider)
        if chosen is None:
            oidc.audit_refusal(_session(), provider, UNKNOWN_PROVIDER)
            return _refuse(UNKNOWN_PROVIDER)
        session = _session()
        nexts = request.args.getlist("next")
        if len(nexts) > 1:
            oidc.audit_refusal(session, provider, OIDCReason.NEXT_REFUSED, "repeated")
            return _refuse(OIDCReason.NEXT_REFUSED)
        callback = chosen.redirect_uri or _callback_url()
        if callback is None:
            oidc.audit_refusal(session, provider, BAD_HOST)
            return _refuse(BAD_HOST)
        try:
            url = oidc.begin_sync(
                provider, session, redirect_uri=callback, next=nexts[0] if nexts else None
            )
        except OIDCRejected as error:
            return _refuse(error.reason, retry_after=error.retry_after)
        except StoreUnavailable:
            oidc.audit_refusal(session, provider, LOGIN_STORE_UNAVAILABLE)
            return _refuse(LOGIN_STORE_UNAVAILABLE)
        return Response(status=302, headers={"Location": url, **_NO_STORE})

    @blueprint.get("/<provider>/callback")
    def callback(provider: str) -> Response:  # noqa: PLR0911 (one return per refusal)
        if oidc.provider(provider) is None:
            oidc.audit_refusal(_session(), provider, UNKNOWN_PROVIDER)
            return _refuse(UNKNOWN_PROVIDER)
        session = _session()
        params: dict[str, str] = {}
        for key, value in request.args.items(multi=True):
            if key in params:
                oidc.audit_refusal(session, provider, OIDCReason.STATE_UNKNOWN, "repeated")
                return _refuse(OIDCReason.STATE_UNKNOWN)
            params[key] = value
        try:
            done = oidc.complete_sync(provider, session, params)
        except OIDCRejected as error:
            return _refuse(error.reason)
        except StoreUnavailable:
            oidc.audit_refusal(session, provider, LOGIN_STORE_UNAVAILABLE)
            return _refuse(LOGIN_STORE_UNAVAILABLE)
        try:
            user_id = on_identity(done.identity)
        except OIDCRejected as error:
            oidc.audit_refusal(session, provider, error.reason, error.detail)
            return _refuse(error.reason)
        if user_id is None:
            oidc.audit_refusal(session, provider, NO_ACCOUNT)
            return _refuse(NO_ACCOUNT)
        if oidc.policy.login is OIDCLogin.TOKENS:
            return _tokens_answer(oidc, session, provider, done.identity, user_id)
        oidc.logged_in(session, done.identity, user_id, id_token=done.id_token)
        return Response(status=303, headers={"Location": done.next, **_NO_STORE})

    @blueprint.post("/<provider>/logout")
    def logout(provider: str) -> Response:
        if oidc.provider(provider) is None:
            oidc.audit_refusal(_session(), provider, UNKNOWN_PROVIDER)
            return _refuse(UNKNOWN_PROVIDER)
        try:
            url = oidc.logout_sync(provider, _session())
        except OIDCRejected as error:
            return _refuse(error.reason)
        return Response(status=303, headers={"Location": url, **_NO_STORE})

    return blueprint


def _tokens_answer(
    oidc: OIDC, session: Session, provider: str, identity: Identity, user_id: str | int
) -> Response:
    """The callback's answer in tokens mode: bastion's tokens as JSON, no session login."""
    try:
        tokens = oidc.issue_tokens_sync(identity, user_id)
    except StoreUnavailable:
        oidc.audit_refusal(session, provider, LOGIN_STORE_UNAVAILABLE)
        return _refuse(LOGIN_STORE_UNAVAILABLE)
    return Response(tokens.to_json(), headers=_TOKENS_HEADERS, content_type="application/json")


def _session() -> Session:
    session = flask_session._get_current_object()  # type: ignore[attr-defined]
    if not isinstance(session, Session):
        raise ConfigurationError(
            "the OpenID Connect blueprint needs bastion's sessions: "
            "bastion.flask.protect(app, Bastion(store=...))",
            setting="session_interface",
        )
    return session


def _callback_url() -> str | None:
    """The callback route's absolute URL, from the login route's own; ``None`` when the
    request's ``Host`` leaves none (Werkzeug reads an invalid one, such as ``bad host`` or
    ``x@evil.example``, as an empty host: ``BAD_HOST``, a 400, never the redirect URI check's
    ``ConfigurationError``)."""
    base = request.base_url  # scheme, host, script root and path; no query
    return usable_callback(base.removesuffix("/login") + "/callback") if request.host else None


def _refuse(reason: OIDCReason | str, *, retry_after: int | None = None) -> Response:
    status, refusal = refusal_for(reason)
    content_type, body = refusal_body(
        refusal,
        accept=request.headers.get("Accept"),
        content_type=request.headers.get("Content-Type"),
    )
    headers = dict(_NO_STORE)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    elif status == 503:
        headers["Retry-After"] = "5"
    return Response(body, status=status, headers=headers, content_type=content_type.decode())
