"""The client's address: the one reading of trusted proxies for every layer.

A connection's peer address is the client unless the peer is a proxy the app trusts; then the
forwarding headers it adds are read (see :class:`TrustedProxies`). Rate-limit keys, CSRF's
forwarded scheme and host, the session registry and every audit event take the address from
one :class:`TrustedProxies`, so behind a load balancer they all record the real client.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from typing import TYPE_CHECKING, Final, TypeAlias

from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ["Address", "TrustedProxies"]

logger = logging.getLogger("bastion.security.proxies")


Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> Address | None:
    value = text.strip()
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        value = value[1:-1]
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            return None
        value = value[1:end]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]  # IPv4 with a port
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _forwarded_for(values: Sequence[str]) -> list[str]:
    hops: list[str] = []
    for value in values:
        for element in value.split(","):
            found = ""
            for pair in element.split(";"):
                name, sep, text = pair.partition("=")
                if sep and name.strip().lower() == "for":
                    found = text.strip()
            hops.append(found)
    return hops


_WEB_SCHEMES: Final = frozenset({"http", "https"})
_QUOTED_PAIR: Final = re.compile(r"\\(.)")


def _split(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` outside quoted strings (RFC 7239's values may be quoted)."""
    if '"' not in text:
        return text.split(separator)
    parts: list[str] = []
    start, quoted, escaped = 0, False, False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _unquote(text: str) -> str:
    value = text.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return _QUOTED_PAIR.sub(r"\1", value[1:-1])
    return value


def _forwarded_elements(values: Sequence[str]) -> list[dict[str, str] | None]:
    """The elements of ``Forwarded`` header values, each its parameters by lowercased name;
    ``None`` for a malformed element (a parameter given twice, a pair without ``=``)."""
    elements: list[dict[str, str] | None] = []
    for value in values:
        for element in _split(value, ","):
            params: dict[str, str] | None = {}
            for pair in _split(element, ";"):
                if not pair.strip():
                    continue
                name, sep, text = pair.partition("=")
                name = name.strip().lower()
                if not sep or params is None or name in params:
                    params = None
                    break
                params[name] = _unquote(text)
            elements.append(params)
    return elements


def _xff(values: Sequence[str]) -> list[str]:
    return [hop for value in values for hop in value.split(",")]


class TrustedProxies:
    """Finds the client's address behind the proxies it trusts, and turns it into a key.

    The peer address of the connection is believed. ``X-Forwarded-For`` (or ``Forwarded``,
    with ``header="forwarded"``) is read only when the peer is one of ``trusted_proxies``
    (addresses or networks); the hops are then walked from the right, skipping trusted proxies,
    and the first untrusted hop is the client. A malformed hop stops the walk at the last
    address a trusted proxy vouched for. Danger: trusting a proxy that does not overwrite the
    header lets any client pick its own key.

    IPv6 clients usually hold a whole /64, so their key is the network of ``ipv6_prefix`` bits
    (64 by default); IPv4-mapped IPv6 addresses count as IPv4.
    """

    __slots__ = ("_networks", "header", "ipv4_prefix", "ipv6_prefix")

    def __init__(
        self,
        trusted_proxies: Iterable[str] = (),
        *,
        header: str = "x-forwarded-for",
        ipv6_prefix: int = 64,
        ipv4_prefix: int = 32,
    ) -> None:
        if isinstance(trusted_proxies, str):
            trusted_proxies = [trusted_proxies]
        networks: list[Network] = []
        for entry in trusted_proxies:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ConfigurationError(
                    f"trusted proxy {entry!r} is not an IP address or network "
                    "(write '10.0.0.0/8' or '::1')",
                    setting="trusted_proxies",
                ) from None
        self._networks = tuple(networks)
        for network in networks:
            if network.prefixlen == 0:
                logger.warning(
                    "bastion: trusted_proxies includes %s, every address: any "
                    "client can then choose its own address and rate-limit key with "
                    "X-Forwarded-For. List the proxies' own addresses",
                    network,
                )
        header = header.lower()
        if header not in {"x-forwarded-for", "forwarded"}:
            raise ConfigurationError(
                f"header must be 'x-forwarded-for' or 'forwarded', got {header!r}",
                setting="header",
            )
        self.header = header
        for name, bits, top in (
            ("ipv6_prefix", ipv6_prefix, 128),
            ("ipv4_prefix", ipv4_prefix, 32),
        ):
            if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= top:
                raise ConfigurationError(
                    f"{name} must be a whole number of bits from 1 to {top}, got {bits!r}",
                    setting=name,
                )
        self.ipv6_prefix = ipv6_prefix
        self.ipv4_prefix = ipv4_prefix

    def __repr__(self) -> str:
        proxies = [str(network) for network in self._networks]
        return f"TrustedProxies(trusted_proxies={proxies!r}, header={self.header!r})"

    @property
    def networks(self) -> tuple[str, ...]:
        """The trusted proxies, as network text (``"10.0.0.0/8"``)."""
        return tuple(str(network) for network in self._networks)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrustedProxies):
            return NotImplemented
        return (self._networks, self.header, self.ipv4_prefix, self.ipv6_prefix) == (
            other._networks,
            other.header,
            other.ipv4_prefix,
            other.ipv6_prefix,
        )

    def __hash__(self) -> int:
        return hash((self._networks, self.header, self.ipv4_prefix, self.ipv6_prefix))

    @property
    def trusts_any(self) -> bool:
        """Whether any proxy is trusted (if not, forwarding headers are never read)."""
        return bool(self._networks)

    def _trusted(self, address: Address) -> bool:
        return any(address in network for network in self._networks)

    def trusts(self, peer: str | None) -> bool:
        """Whether ``peer`` (the connection's address) is a trusted proxy, whose forwarding
        headers (``X-Forwarded-For``, ``-Proto``, ``-Host`` or ``Forwarded``) are believed."""
        address = None if peer is None or not self._networks else _address(peer)
        return address is not None and self._trusted(address)

    def client(self, peer: str | None, header_values: Sequence[str] = ()) -> Address | None:
        """The client's address, or ``None`` when the peer is unknown or not an address."""
        address = None if peer is None else _address(peer)
        if address is None or not header_values or not self._trusted(address):
            return address
        hops = _forwarded_for(header_values) if self.header == "forwarded" else _xff(header_values)
        for hop in reversed(hops):
            found = _address(hop)
            if found is None:
                return address
            address = found
            if not self._trusted(address):
                return address
        return address

    def hops(self, peer: str | None, forwarded_for: Sequence[str] = ()) -> int:
        """How many trusted proxies handled the request (0 when ``peer`` is not one): the peer,
        and each trusted address at the right of ``X-Forwarded-For`` (``forwarded_for``: its
        header values), walked as :meth:`client` walks them."""
        if not self.trusts(peer):
            return 0
        count = 1
        for hop in reversed(_xff(forwarded_for)):
            found = _address(hop)
            if found is None or not self._trusted(found):
                break
            count += 1
        return count

    def forwarded_value(
        self, peer: str | None, value: str | None, forwarded_for: Sequence[str] = ()
    ) -> str | None:
        """The item of a forwarding header's ``value`` (``X-Forwarded-Proto``, ``-Host``; its
        lines joined with ``,``) that the first trusted proxy the client reached wrote, or
        ``None`` (``peer`` not trusted, nothing written).

        A proxy that appends adds its item at the right, after whatever the client sent, so
        the first item is the client's choice. With ``n`` trusted proxies (:meth:`hops`, read
        from ``forwarded_for``; one, the peer, without it) the item is the ``n``-th from the
        right. When there are fewer items than proxies, the proxies set the header rather than
        appended, and the leftmost item is read. Danger: a trusted proxy that passes a
        client's header through without writing its own lets the client choose it.
        """
        if not value:
            return None
        count = self.hops(peer, forwarded_for)
        if count == 0:
            return None
        items = value.split(",")
        return items[max(len(items) - count, 0)].strip() or None

    def forwarded_origin(
        self,
        peer: str | None,
        forwarded: Sequence[str] = (),
        *,
        proto: str | None = None,
        host: str | None = None,
        forwarded_for: Sequence[str] = (),
    ) -> tuple[str | None, str | None]:
        """The scheme and host a trusted proxy reports the client used: ``(None, None)`` unless
        ``peer`` is a trusted proxy; either is ``None`` when not reported.

        One family is read, the one :attr:`header` names, since a proxy writes one family and
        may pass the other through from the client. With ``header="forwarded"``, RFC 7239
        ``Forwarded`` (``forwarded``: its header values): each proxy appends its own element,
        so the last one is the peer's; the walk goes left while an element's ``for=`` is a
        trusted proxy too, and reads ``proto=`` and ``host=`` of the element written by the
        first proxy the client reached. A malformed element ends the walk at the element to
        its right (nothing, when it is the peer's own); a ``proto`` other than ``http`` or
        ``https`` is not reported. Otherwise ``X-Forwarded-Proto`` (``proto``) and
        ``X-Forwarded-Host`` (``host``), the item the first trusted proxy wrote
        (:meth:`forwarded_value`, counting the proxies in ``forwarded_for``, the
        ``X-Forwarded-For`` values), never a client's first item. Names and parameter names
        are case-insensitive; the scheme is lowercased.
        """
        if not self.trusts(peer):
            return None, None
        if self.header != "forwarded":
            scheme = self.forwarded_value(peer, proto, forwarded_for)
            return (scheme.lower() if scheme else None), self.forwarded_value(
                peer, host, forwarded_for
            )
        elements = _forwarded_elements(forwarded)
        chosen: dict[str, str] | None = None
        for element in reversed(elements):
            if element is None:
                break
            chosen = element
            hop = _address(element.get("for", ""))
            if hop is None or not self._trusted(hop):
                break
        if chosen is None:
            return None, None
        scheme = chosen.get("proto", "").lower()
        return (scheme if scheme in _WEB_SCHEMES else None), (chosen.get("host") or None)

    def key(self, peer: str | None, header_values: Sequence[str] = ()) -> str | None:
        """The rate-limit key of the client: its address, or its network for IPv6."""
        address = self.client(peer, header_values)
        if address is None:
            return None
        if isinstance(address, ipaddress.IPv6Address):
            if self.ipv6_prefix == 128:
                return str(address)
            return str(ipaddress.IPv6Network((address, self.ipv6_prefix), strict=False))
        if self.ipv4_prefix == 32:
            return str(address)
        return str(ipaddress.IPv4Network((address, self.ipv4_prefix), strict=False))
