"""Sign in with OpenID Connect and OAuth 2.0 providers (``Bastion(oidc=OIDCPolicy(...))``).

::

    from bastion.oidc import OIDC, OIDCPolicy, Provider

    policy = OIDCPolicy(providers=(
        Provider(name="google", issuer="https://accounts.google.com",
                 client_id="...", client_secret="..."),
    ))

The flow is the authorization code flow with PKCE (S256), a single-use ``state`` and
``nonce`` stored server-side and bound to the browser's session, the RFC 9207 ``iss`` check,
and a fully verified ID token (:mod:`bastion.oidc.service`); plain OAuth 2.0 providers
(``Provider(id_token=False, userinfo_endpoint=...)``) are identified by their userinfo answer.
A login ends in a bastion session (default) or in bastion tokens (``OIDCPolicy(login=
"tokens")``); ``/auth/{provider}/logout`` ends the session at the provider too. Routes:
:mod:`bastion.oidc.starlette` (Starlette, FastAPI) and :mod:`bastion.flask.oidc` (Flask).
"""

from __future__ import annotations

from bastion.core.oidc.reasons import OIDCReason, OIDCRejected
from bastion.oidc.issuing import TokenIssuer
from bastion.oidc.policy import DEFAULT_SCOPES, OIDCLogin, OIDCPolicy, Provider
from bastion.oidc.service import OIDC, Completion, Identity

__all__ = [
    "DEFAULT_SCOPES",
    "OIDC",
    "Completion",
    "Identity",
    "OIDCLogin",
    "OIDCPolicy",
    "OIDCReason",
    "OIDCRejected",
    "Provider",
    "TokenIssuer",
]
