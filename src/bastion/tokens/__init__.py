"""Tokens: JWT access tokens, refresh-token families, revocation, DPoP and one-time tokens.

Needs the ``jwt`` extra (``pip install 'bastion[jwt]'``). Configure with
``Bastion(tokens=TokenPolicy(issuer=...))`` and use ``runtime.tokens``
(:class:`~bastion.tokens.service.Tokens`); see docs/tokens.md.
"""

from __future__ import annotations

from bastion.core.tokens.reasons import TokenReason, TokenRejected
from bastion.tokens.policy import ACCESS_TYP, PENDING_TYP, DPoPMode, TokenPolicy

__all__ = [
    "ACCESS_TYP",
    "PENDING_TYP",
    "DPoPMode",
    "TokenPolicy",
    "TokenReason",
    "TokenRejected",
]
