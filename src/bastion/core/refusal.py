"""The body of a response bastion sends instead of the app's: for people, or JSON for programs.

One rule decides the format of every refusal bastion answers itself (the CSRF 403, 413 and
400, the 429 of the rate limiter, the 503 of a store outage), through :func:`wants_json`:

* a request that sent a JSON body (``Content-Type: application/json`` or any ``+json`` type)
  gets JSON: it came from a program, whatever its ``Accept`` says;
* otherwise a request whose ``Accept`` names JSON (``application/json`` or ``+json``) with a
  quality at least that of HTML (``text/html`` or ``application/xhtml+xml``) gets JSON
  (``application/json, text/html;q=0.9`` prefers JSON); so does one that admits JSON only
  through ``application/*`` or ``*/*`` and does not ask for HTML at all (a quality above 0).
  That covers ``fetch()``, httpx, requests and curl (``*/*``), and a request without
  ``Accept``, which HTTP reads as ``*/*``;
* a browser navigating or submitting a form (its ``Accept`` names ``text/html``) gets text or
  an HTML page.

JSON refusals are ``{"error": ..., "detail": ...}`` (the CSRF one adds ``"reason"``), so a
client can branch on ``error`` without parsing prose.
"""

from __future__ import annotations

import json
import re
from typing import Final, NamedTuple

__all__ = [
    "AUDIT_UNAVAILABLE",
    "JSON",
    "RATE_LIMITED",
    "RATE_LIMIT_FAILED",
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
RATE_LIMIT_FAILED: Final = Refusal("rate_limit_failed", "Service Unavailable")
"""A rule's key or cost function failed: the limit cannot be decided, so the rule fails closed
(:mod:`bastion.engine.ratelimit`)."""
SESSION_STORE_UNAVAILABLE: Final = Refusal(
    "session_store_unavailable",
    "Service unavailable: the session store cannot be reached. Please try again shortly.\n",
)

AUDIT_UNAVAILABLE: Final = Refusal(
    "audit_unavailable",
    "Service unavailable: this action cannot be recorded now. Please try again shortly.\n",
)
"""The fail-closed audit trail refused an event (:class:`~bastion.errors.AuditUnavailable`),
so the action it records was not done."""

_JSON_RANGES: Final = frozenset({"application/json", "application/*", "*/*"})
_HTML_TYPES: Final = frozenset({"text/html", "application/xhtml+xml"})
_QUALITY: Final = re.compile(r"\s*q\s*=\s*(0(?:\.\d{0,3})?|1(?:\.0{0,3})?)\s*", re.IGNORECASE)
_MAX_RANGES: Final = 64


def _is_json_type(media: str) -> bool:
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def wants_json(accept: str | None, content_type: str | None = None) -> bool:
    """Whether a refusal should be JSON (the module docstring has the rule).

    ``accept`` and ``content_type`` are the request's header values (``None`` when absent).
    At most the first 64 media ranges of ``accept`` are read; a malformed quality counts as 1.
    """
    if content_type and _is_json_type(content_type.partition(";")[0].strip().lower()):
        return True
    if accept is None or not accept.strip():
        return True  # no Accept: the client accepts anything
    explicit = wildcard = html = 0.0  # the best quality of each kind of range
    for item in accept.lower().split(",")[:_MAX_RANGES]:
        media, _, params = item.partition(";")
        media = media.strip()
        quality = 1.0
        for param in params.split(";"):
            found = _QUALITY.fullmatch(param)
            if found is not None:
                quality = float(found.group(1))
        if media in _HTML_TYPES:
            html = max(html, quality)
        elif _is_json_type(media):
            explicit = max(explicit, quality)
        elif media in _JSON_RANGES:
            wildcard = max(wildcard, quality)
    if explicit > 0 and explicit >= html:
        return True  # JSON named, and preferred to HTML (or as good)
    return html <= 0 < wildcard


def refusal_body(
    refusal: Refusal, *, accept: str | None, content_type: str | None = None
) -> tuple[bytes, bytes]:
    """``(content_type, body)`` of ``refusal``: ``{"error": ..., "detail": ...}`` when
    :func:`wants_json` says so for the request's ``accept`` and ``content_type``, else its
    ``detail`` as text."""
    if wants_json(accept, content_type):
        payload = {"error": refusal.error, "detail": refusal.detail.strip()}
        return JSON, json.dumps(payload).encode("utf-8")
    return TEXT, refusal.detail.encode("utf-8")
