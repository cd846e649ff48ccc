"""Sans-I/O token decisions: JWT access tokens, refresh-token families, one-time tokens, DPoP.

The store work (deny-list, families, one-time consumption, proof replay) lives in
:mod:`bastion.engine.tokens`; the user-facing service in :mod:`bastion.tokens`.

The JWT names (:class:`JWTCodec`, :class:`JWTKey`, :class:`JWTKeySet`, :class:`Claims`) need
the ``jwt`` extra (joserfc); they load on first use, so importing this package does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion.core.tokens.reasons import TokenReason, TokenRejected

if TYPE_CHECKING:
    from bastion.core.tokens.jwk import JWTKey, JWTKeySet
    from bastion.core.tokens.jwt import Claims, JWTCodec

__all__ = ["Claims", "JWTCodec", "JWTKey", "JWTKeySet", "TokenReason", "TokenRejected"]

_LAZY = {
    "Claims": "bastion.core.tokens.jwt",
    "JWTCodec": "bastion.core.tokens.jwt",
    "JWTKey": "bastion.core.tokens.jwk",
    "JWTKeySet": "bastion.core.tokens.jwk",
}


def __getattr__(name: str) -> Any:
    """The JWT names, imported on first use (an ImportError names the ``jwt`` extra)."""
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'bastion.core.tokens' has no attribute {name!r}")
    import importlib  # noqa: PLC0415 (only for the lazy names)

    return getattr(importlib.import_module(module_name), name)
