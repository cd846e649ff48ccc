"""OpenID Connect over HTTP and the store: login states, discovery and JWKS, the code
exchange and ID-token signatures. The entry point is :class:`OIDCClient`."""

from __future__ import annotations

from bastion.engine.oidc.client import ClientConfig, OIDCClient, VerifiedLogin
from bastion.engine.oidc.exchange import ClientAuth
from bastion.engine.oidc.jwks import ProviderKeys
from bastion.engine.oidc.state_store import LoginStates

__all__ = [
    "ClientAuth",
    "ClientConfig",
    "LoginStates",
    "OIDCClient",
    "ProviderKeys",
    "VerifiedLogin",
]
