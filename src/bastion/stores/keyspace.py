"""Key layout for stores that shard by key: hash tags and Redis Cluster key slots.

Redis Cluster places a key in one of :data:`KEY_SLOTS` slots by the CRC16 of the key, or, when
the key contains a *hash tag* (the text between the first ``{`` and the first ``}`` after it,
if that text is non-empty), by the CRC16 of the tag alone. Keys that a multi-key operation or
script touches together (a user's session index and the sessions it lists, say) must share a
slot, so they are built with the same tag::

    >>> hash_tag("sessions", "user-42")
    'sessions:{user-42}'
    >>> key_slot(hash_tag("sessions", "user-42")) == key_slot(hash_tag("login", "user-42"))
    True

:func:`hash_tag` escapes ``{``, ``}`` and ``%`` in the identifier, so no identifier can end the
tag early or make it empty (an empty tag hashes the whole key, which would scatter the group).
Store prefixes must not contain braces for the same reason: a ``{`` in a prefix would become the
first brace of every key and capture the tag. :func:`key_slot` is a pure-Python implementation
of the cluster's slot function, so tests can prove the grouping without a cluster.

:func:`namespace_prefix` turns a store's configured prefix into the bytes every stored key
starts with, so that two prefixes never share a key (see its docstring).

This module has no I/O and no Redis dependency, so the engine can build keys without the
``redis`` extra installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.errors import ConfigurationError, StoreError

if TYPE_CHECKING:
    from bastion.core.ratelimit import Rate, Strategy

__all__ = [
    "KEY_SLOTS",
    "crc16_xmodem",
    "hash_tag",
    "key_slot",
    "namespace_prefix",
    "ratelimit_key_suffix",
]

KEY_SLOTS = 16384
"""Number of hash slots in a Redis Cluster."""


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC16_TABLE = _crc16_table()


def crc16_xmodem(data: bytes) -> int:
    """CRC-16/XMODEM (polynomial 0x1021, initial value 0): the checksum Redis Cluster uses.

    >>> hex(crc16_xmodem(b"123456789"))
    '0x31c3'
    """
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16_TABLE[(crc >> 8) ^ byte]
    return crc


def key_slot(key: str | bytes) -> int:
    """The Redis Cluster slot of ``key`` (text is encoded as UTF-8, as the stores send it).

    Hashes the hash tag when the key has a non-empty one, else the whole key.

    >>> key_slot("123456789")
    12739
    """
    raw = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    start = raw.find(b"{")
    if start != -1:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return crc16_xmodem(raw) % KEY_SLOTS


def _escape_tag(ident: str) -> str:
    # Percent-style escaping is injective and leaves the tag free of braces.
    return ident.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


def hash_tag(namespace: str, ident: str) -> str:
    """Build ``namespace:{ident}``: keys built with the same ``ident`` share a cluster slot.

    ``namespace`` names the kind of record (``"sessions"``, ``"rl"``) and must not contain
    braces. ``ident`` is any non-empty text (a user ID, an API key ID); braces and ``%`` in it
    are escaped so that it always forms one whole, non-empty tag. The mapping is injective:
    different identifiers never produce the same key.
    """
    if not isinstance(namespace, str) or not isinstance(ident, str):
        raise StoreError("hash_tag() takes a namespace and an identifier, both str")
    if "{" in namespace or "}" in namespace:
        raise StoreError(
            f"hash_tag() namespace {namespace!r} contains a brace; braces would move the "
            "Redis Cluster hash tag. Use a namespace without '{' and '}'"
        )
    if not ident:
        raise StoreError(
            "hash_tag() identifier must not be empty: an empty tag '{}' makes Redis Cluster "
            "hash the whole key, so related keys would land in different slots"
        )
    return f"{namespace}:{{{_escape_tag(ident)}}}"


def namespace_prefix(prefix: str, *, setting: str = "prefix") -> bytes:
    """The bytes every key of a store configured with ``prefix`` starts with.

    The prefix names a namespace and the stored key is ``name + ":" + key``, where ``name`` is
    ``prefix`` without one trailing ``:`` and with ``%`` and ``:`` inside it percent-escaped.
    The name therefore never contains ``:``, and the first ``:`` of a stored key always ends
    it: different prefixes never produce the same stored key, whatever the keys (a plain
    concatenation made prefix ``a`` + key ``:b`` the same key as prefix ``a:`` + key ``b``).
    ``"app"`` and ``"app:"`` name the same namespace, and the usual prefixes (``"bastion:"``,
    ``"myapp:"``) keep the layout ``myapp:<key>``; a prefix with inner colons such as
    ``"tenant:7:"`` is stored as ``tenant%3A7:<key>``.

    Raises :class:`~bastion.errors.ConfigurationError` for an empty prefix (keys would mix
    with the application's own), a brace (it would capture the Redis Cluster hash tag of every
    key) or text that is not valid UTF-8.
    """
    if not isinstance(prefix, str):
        raise ConfigurationError(
            f"store prefix must be str, got {type(prefix).__name__}", setting=setting
        )
    if "{" in prefix or "}" in prefix:
        raise ConfigurationError(
            f"store prefix {prefix!r} contains a brace; it would capture the Redis Cluster "
            "hash tag of every key. Use a prefix without '{' and '}' (e.g. 'app:')",
            setting=setting,
        )
    name = prefix[:-1] if prefix.endswith(":") else prefix
    if not name:
        raise ConfigurationError(
            f"store prefix {prefix!r} names no namespace; bastion's keys would mix with the "
            "application's. Use a name such as 'app:'",
            setting=setting,
        )
    escaped = name.replace("%", "%25").replace(":", "%3A") + ":"
    try:
        return escaped.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigurationError(
            "store prefix is not valid text (it contains a lone surrogate)", setting=setting
        ) from None


def ratelimit_key_suffix(strategy: Strategy, rate: Rate) -> str:
    """What the SQLite and Redis stores append to a rate-limit key for one of its rates.

    The strategy and the rate are part of the key: a changed algorithm or rate never reads
    another's state.
    """
    return f":{strategy.value}:{rate.limit}/{rate.period_us}"
