"""The body of a response bastion sends instead of the app's: plain text, or JSON on request.

Every refusal bastion answers itself (429 rate limited, 503 store unavailable) has a short
text body for people and ``curl``; a client whose ``Accept`` asks for JSON and not for HTML (an
API client, ``fetch`` with ``Accept: application/json``) gets ``{"error": ..., "detail": ...}``
instead, so it can branch on ``error`` without parsing prose. The CSRF 403 follows the same
rule with an HTML page for browsers (:func:`bastion.core.csrf.rejection_body`).
"""

from __future__ import annotations

import json
from typing import Final, NamedTuple

__all__ = [
    "JSON",
    "RATE_LIMITED",
    "RATE_LIMIT_STORE_UNAVAILABLE",
    "SESSION_STORE_UNAVAILABLE",
    "TEXT",
    "Refusal",
    "refusal_body",
    "wants_json",
]

TEXT: Final = b"text/plain; charset=utf-8"
JSON: Final = b"application/json"


class Refusal(NamedTuple):
    """One kind of refusal: ``error``, a stable code for programs; ``detail``, text for people."""

    error: str
    detail: str


RATE_LIMITED: Final = Refusal("rate_limited", "Too Many Requests")
RATE_LIMIT_STORE_UNAVAILABLE: Final = Refusal("rate_limit_store_unavailable", "Service Unavailable")
SESSION_STORE_UNAVAILABLE: Final = Refusal(
    "session_store_unavailable",
    "Service unavailable: the session store cannot be reached. Please try again shortly.\n",
)


def wants_json(accept: str | None) -> bool:
    """Whether a refusal should be JSON: the client accepts JSON and does not ask for HTML."""
    if not accept:
        return False
    folded = accept.lower()
    return "json" in folded and "text/html" not in folded


def refusal_body(refusal: Refusal, *, accept: str | None) -> tuple[bytes, bytes]:
    """``(content_type, body)`` of ``refusal``: its ``detail`` as text, or
    ``{"error": ..., "detail": ...}`` when :func:`wants_json` says so."""
    if wants_json(accept):
        payload = {"error": refusal.error, "detail": refusal.detail.strip()}
        return JSON, json.dumps(payload).encode("utf-8")
    return TEXT, refusal.detail.encode("utf-8")
