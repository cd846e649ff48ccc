"""``Vary`` merging, written once: a layer adds the request header its answer depends on.

A response's ``Vary`` lists the request headers a shared cache must key on. A layer whose
answer depends on one (sessions on ``Cookie``, CORS on ``Origin``) adds it, unless the header
already lists it as a whole element (case-insensitive) or is ``*``. Elements are compared
whole: ``X-Cookie-Consent`` is not ``Cookie``, so a page that varies on a consent cookie still
gets ``Cookie`` added (a substring test would skip it, and a shared cache could serve one
user's session page to another).
"""

from __future__ import annotations

__all__ = ["add_vary", "add_vary_text", "merge_vary", "merge_vary_text"]


def merge_vary(value: bytes, token: bytes) -> bytes | None:
    """``value`` (a ``Vary`` header) with ``token`` added, or ``None`` when it already lists
    ``token`` or is ``*``."""
    wanted = token.lower()
    for part in value.split(b","):
        name = part.strip(b" \t").lower()
        if name in {wanted, b"*"}:
            return None
    stripped = value.strip(b" \t")
    return token if not stripped else stripped + b", " + token


def merge_vary_text(value: str, token: str) -> str | None:
    """:func:`merge_vary` for text headers (WSGI, Flask)."""
    merged = merge_vary(value.encode("latin-1", "replace"), token.encode("latin-1"))
    return None if merged is None else merged.decode("latin-1")


def add_vary(headers: list[tuple[bytes, bytes]], token: bytes) -> None:
    """Add ``token`` to the ``Vary`` of an ASGI header list, in place: merged into the first
    ``Vary`` unless one of them lists it (or ``*``), else appended as a new one."""
    first = -1
    for index, (name, value) in enumerate(headers):
        if name.lower() == b"vary":
            if merge_vary(value, token) is None:
                return
            if first < 0:
                first = index
    if first < 0:
        headers.append((b"vary", token))
        return
    name, value = headers[first]
    headers[first] = (name, merge_vary(value, token) or value)


def add_vary_text(headers: list[tuple[str, str]], token: str) -> None:
    """:func:`add_vary` for a WSGI header list."""
    first = -1
    for index, (name, value) in enumerate(headers):
        if name.lower() == "vary":
            if merge_vary_text(value, token) is None:
                return
            if first < 0:
                first = index
    if first < 0:
        headers.append(("Vary", token))
        return
    name, value = headers[first]
    headers[first] = (name, merge_vary_text(value, token) or value)
