"""Sans-I/O token decisions: JWT access tokens, refresh-token families, one-time tokens, DPoP.

The store work (deny-list, families, one-time consumption, proof replay) lives in
:mod:`bastion.engine.tokens`; the user-facing service in :mod:`bastion.tokens`.
"""

from bastion.core.tokens.reasons import TokenReason, TokenRejected

__all__ = ["TokenReason", "TokenRejected"]
