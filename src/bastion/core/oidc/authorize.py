"""The authorization request: the URL the login route redirects the browser to.

Authorization code flow only (``response_type=code``), PKCE S256 always, ``state`` and
``nonce`` always. Every value is percent-encoded as a query component, so a scope or a
redirect URI can never add a parameter of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from bastion.core.oidc._url import query_encode
from bastion.core.oidc.pkce import METHOD, challenge
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from bastion.core.oidc.state import LoginState

__all__ = ["RESERVED", "authorization_url", "end_session_url"]

RESERVED: Final = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
        "response_mode",
        "request",
        "request_uri",
    }
)
"""Parameters ``extra`` may not set: the ones bastion owns, and those that would change the
flow (``response_mode``, a request object)."""


def authorization_url(
    endpoint: str,
    record: LoginState,
    *,
    client_id: str,
    scopes: Sequence[str],
    extra: Mapping[str, str] | None = None,
    nonce: bool = True,
) -> str:
    """The authorization URL for ``record`` at ``endpoint`` (a discovery-checked URL; a query
    it already has is kept). ``extra`` adds provider-specific parameters (``prompt``,
    ``login_hint``, ...) but may not override :data:`RESERVED` ones. ``nonce=False`` leaves
    the ``nonce`` out (a plain OAuth 2.0 provider issues no ID token to carry it back)."""
    params: list[tuple[str, str]] = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", record.redirect_uri),
        ("scope", " ".join(scopes)),
        ("state", record.state),
    ]
    if nonce:
        params.append(("nonce", record.nonce))
    params += [
        ("code_challenge", challenge(record.code_verifier)),
        ("code_challenge_method", METHOD),
    ]
    for name, value in (extra or {}).items():
        if name in RESERVED:
            raise ConfigurationError(
                f"extra authorization parameter {name!r} is set by bastion",
                setting="extra_params",
            )
        params.append((name, value))
    return _with_query(endpoint, params)


def end_session_url(
    endpoint: str,
    *,
    client_id: str,
    id_token_hint: str | None = None,
    post_logout_redirect_uri: str | None = None,
    state: str | None = None,
) -> str:
    """The RP-initiated logout URL (OpenID Connect RP-Initiated Logout 1.0) at the provider's
    ``end_session_endpoint``: the browser goes there to end its session at the provider."""
    params: list[tuple[str, str]] = [("client_id", client_id)]
    if id_token_hint is not None:
        params.append(("id_token_hint", id_token_hint))
    if post_logout_redirect_uri is not None:
        params.append(("post_logout_redirect_uri", post_logout_redirect_uri))
    if state is not None:
        params.append(("state", state))
    return _with_query(endpoint, params)


def _with_query(endpoint: str, params: list[tuple[str, str]]) -> str:
    query = "&".join(f"{query_encode(k)}={query_encode(v)}" for k, v in params)
    base, _, fragment = endpoint.partition("#")
    if fragment:
        raise ConfigurationError(
            "the authorization endpoint must not have a fragment", setting="authorization_endpoint"
        )
    joiner = "&" if "?" in base else "?"
    if base.endswith(("?", "&")):
        joiner = ""
    return f"{base}{joiner}{query}"
