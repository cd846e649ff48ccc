"""CSRF protection, sans I/O: the checks, the tokens, the form scanner and the shared guard.

The package holds one concern per module:

* :mod:`~bastion.core.csrf.config`: :class:`CSRFConfig`, :class:`TokenSource`,
  :func:`normalize_origin`;
* :mod:`~bastion.core.csrf.checks`: the header checks (method, exemptions, Fetch Metadata,
  Origin, Referer) as :class:`CSRFChecker`, the :class:`Facts` they read, the :class:`Verdict`
  and the :class:`CSRFReason` of a refusal;
* :mod:`~bastion.core.csrf.tokens`: secrets, masked tokens, :class:`DoubleSubmit` cookies;
* :mod:`~bastion.core.csrf.forms`: :class:`FormTokenScanner`, the capped body scanner;
* :mod:`~bastion.core.csrf.guard`: :class:`CSRFGuard`, what the ASGI and WSGI middlewares
  share.

Every public name is importable from here.
"""

from __future__ import annotations

from bastion.core.csrf.checks import CSRFChecker, CSRFReason, Facts, Pass, Verdict, rejection_body
from bastion.core.csrf.config import (
    COMMON_UNSAFE_METHODS,
    DEFAULT_COOKIE_NAME,
    DEFAULT_FIELD_NAME,
    DEFAULT_HEADER_NAME,
    DEVELOPMENT_COOKIE_NAME,
    SAFE_METHODS,
    CSRFConfig,
    TokenSource,
    normalize_origin,
)
from bastion.core.csrf.forms import FormTokenScanner, ScanStatus
from bastion.core.csrf.guard import CSRFGuard, TokenState
from bastion.core.csrf.tokens import (
    MASKED_TOKEN_CHARS,
    DoubleSubmit,
    check_token,
    double_submit_setup,
    mask_secret,
    new_secret,
    secret_from_text,
    unmask_token,
)
from bastion.core.refusal import wants_json

__all__ = [
    "COMMON_UNSAFE_METHODS",
    "DEFAULT_COOKIE_NAME",
    "DEFAULT_FIELD_NAME",
    "DEFAULT_HEADER_NAME",
    "DEVELOPMENT_COOKIE_NAME",
    "MASKED_TOKEN_CHARS",
    "SAFE_METHODS",
    "CSRFChecker",
    "CSRFConfig",
    "CSRFGuard",
    "CSRFReason",
    "DoubleSubmit",
    "Facts",
    "FormTokenScanner",
    "Pass",
    "ScanStatus",
    "TokenSource",
    "TokenState",
    "Verdict",
    "check_token",
    "double_submit_setup",
    "mask_secret",
    "new_secret",
    "normalize_origin",
    "rejection_body",
    "secret_from_text",
    "unmask_token",
    "wants_json",
]
