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

__all__ = ["ClientIPKey", "KeyFunc", "client_ip_key", "header_key", "path_key", "user_key"]

logger = logging.getLogger("bastion.security.ratelimit")

_HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", re.ASCII)
"""A header field name (an RFC 9110 token)."""

KeyFunc: TypeAlias = "Callable[[RequestView], str | None]"
"""A key function: the request's key, or ``None`` to exempt it."""


def client_ip_key(proxies: TrustedProxies | None = None) -> ClientIPKey:
    """Key by client address (see :class:`~bastion.core.client.TrustedProxies`). A peer that
    is no IP address (a Unix socket, a test client) gets one shared key, never an exemption."""
    return ClientIPKey(proxies if proxies is not None else TrustedProxies())


class ClientIPKey:
    """The key function :func:`client_ip_key` makes. Without trusted proxies it reads nothing
    of the request but its peer, and says so (:attr:`peer_only`): a rule set whose keys are all
    of this kind is decided from the peer alone (:meth:`of_peer`), with no request view built.
    """

    __slots__ = ("_header", "_plain_ipv4", "_proxies", "peer_only")

    def __init__(self, proxies: TrustedProxies) -> None:
        self._proxies = proxies
        self._header = proxies.header
        self.peer_only = not proxies.trusts_any
        """Whether the key is a function of the peer alone (no proxy is trusted)."""
        self._plain_ipv4 = self.peer_only and proxies.ipv4_prefix == 32

    def __repr__(self) -> str:
        return f"client_ip_key({self._proxies!r})"

    def __call__(self, request: RequestView) -> str | None:
        peer = request.peer
        if self._plain_ipv4 and peer is not None and ":" not in peer and peer[-1:].isdigit():
            # The server wrote the peer address: IPv4 needs no parsing (IPv6 is grouped).
            return peer
        ip = self._proxies
        value = request.header(self._header) if ip.trusts_any else None
        found = ip.key(peer, [value] if value else [])
        if found is None:
            return f"peer:{peer}" if peer else "peer:unknown"
        return found

    def of_peer(self, peer: str | None) -> str | None:
        """The key of a request from ``peer`` when :attr:`peer_only` (the same as calling the
        key on the request's view)."""
        if self._plain_ipv4 and peer is not None and ":" not in peer and peer[-1:].isdigit():
            return peer
        found = self._proxies.key(peer, [])
        if found is None:
            return f"peer:{peer}" if peer else "peer:unknown"
        return found


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
