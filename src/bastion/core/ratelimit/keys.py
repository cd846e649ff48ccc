"""Rate-limit key functions over :class:`~bastion.core.request.RequestView`.

A key function turns a request into the text its counters are stored under, or ``None`` to
exempt the request. These take the adapter-neutral view, so one written once works under ASGI,
WSGI and Flask alike:

* :func:`client_ip_key` (the default): the client's address, the forwarding header read only
  from the configured :class:`~bastion.core.client.TrustedProxies`;
* :func:`header_key`: a request header (an API key), hashed by default;
* :func:`user_key`: the authenticated user (``scope["user"]``, ``REMOTE_USER``);
* :func:`path_key`: the route, one counter shared by every client.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import TYPE_CHECKING, Final, TypeAlias

from bastion.core.client import TrustedProxies
from bastion.core.request import match_forms
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.core.request import RequestView

__all__ = ["KeyFunc", "client_ip_key", "header_key", "path_key", "user_key"]

logger = logging.getLogger("bastion.security.ratelimit")

_HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", re.ASCII)
"""A header field name (an RFC 9110 token)."""

KeyFunc: TypeAlias = "Callable[[RequestView], str | None]"
"""A key function: the request's key, or ``None`` to exempt it."""


def client_ip_key(proxies: TrustedProxies | None = None) -> KeyFunc:
    """Key by client address (see :class:`~bastion.core.client.TrustedProxies`). A peer that
    is no IP address (a Unix socket, a test client) gets one shared key, never an exemption."""
    ip = proxies if proxies is not None else TrustedProxies()
    plain_ipv4 = not ip.trusts_any and ip.ipv4_prefix == 32
    header = ip.header

    def key(request: RequestView) -> str | None:
        peer = request.peer
        if plain_ipv4 and peer is not None and ":" not in peer and peer[-1:].isdigit():
            # The server wrote the peer address: IPv4 needs no parsing (IPv6 is grouped).
            return peer
        value = request.header(header) if ip.trusts_any else None
        found = ip.key(peer, [value] if value else [])
        if found is None:
            return f"peer:{peer}" if peer else "peer:unknown"
        return found

    return key


def header_key(name: str, *, hash_value: bool = True) -> KeyFunc:
    """Key by a request header (``None`` without it: exempt). The value is hashed by default,
    so API keys never reach the store or its logs. A repeated header is keyed by its first
    value (:meth:`~bastion.core.request.RequestView.first_header`), the one the app reads:
    extra copies with fresh text do not open fresh counters."""
    if not isinstance(name, str) or _HEADER_NAME.fullmatch(name) is None:
        # A name no header can have would make the key None for every request: all exempt.
        raise ConfigurationError(
            f"header_key: {name!r:.40} is no header name (letters, digits and '-', no spaces "
            "or ':'), so no request would carry it and the rule would exempt every request",
            setting="name",
        )
    if not hash_value:
        logger.warning(
            "bastion rate limits: header_key(%r, hash_value=False) keeps the header's value as "
            "given in the store and its logs; hash it unless it is no secret",
            name,
        )
    wanted = name.lower()

    def key(request: RequestView) -> str | None:
        value = request.first_header(wanted)
        if not value:
            return None
        if hash_value:
            return hashlib.sha256(value.encode("latin-1", "replace")).hexdigest()[:32]
        return value

    return key


def user_key(request: RequestView) -> str | None:
    """Key by the authenticated user (:attr:`RequestView.user`); anonymous requests return
    ``None`` (pair the rule with an IP rule)."""
    user = request.user
    return None if not user else f"user:{user}"


def path_key(request: RequestView) -> str | None:
    """Key by the request path: one counter per route for all clients together (a global
    budget for an expensive endpoint). The path is the full one in normal form, lower case
    (:func:`~bastion.core.request.match_forms`), so ``//x``, ``/x/`` and ``/X`` share the
    counter of ``/x`` instead of each opening a fresh one."""
    return f"path:{match_forms(request.path)[-1]}"
