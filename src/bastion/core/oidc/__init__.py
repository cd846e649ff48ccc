"""OpenID Connect, sans I/O: PKCE, the login-state record, discovery checks, the authorization
URL, the callback checks, ID-token claim checks and the safe post-login destination.

The engine (:mod:`bastion.engine.oidc`) does the HTTP, the store and the signatures.
"""

from __future__ import annotations

from bastion.core.oidc.reasons import OIDCReason, OIDCRejected

__all__ = ["OIDCReason", "OIDCRejected"]
