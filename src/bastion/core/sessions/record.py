"""The stored session record and its tombstone: the JSON layout, checked values, the codec.

Records are JSON, never pickle. Values are checked when they are assigned
(:func:`check_session_value`): only ``dict`` with ``str`` keys, ``list``, ``str``, ``int``,
finite ``float``, ``bool`` and ``None`` are accepted, so what a handler reads back is exactly
what it wrote (a tuple would come back as a list, so it is refused). The encoded record is
capped at :attr:`SessionConfig.max_bytes`.

This module owns the byte layout: the metadata first, the data last (``...,"d":{...}}``), so
that the data part can be found (:func:`data_slice`) and replaced (:func:`replace_data`)
without decoding the rest. Nothing else edits record bytes.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

# The json package's accelerated pieces, used directly: the ``json.dumps`` / ``JSONDecoder.decode``
# wrappers rebuild an encoder or run two whitespace regexes per call, which is most of the cost
# of a small session record. The output is byte for byte what ``json.dumps`` gives. Where the C
# accelerator is missing (not CPython), the json package's pure-Python versions stand in.
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from json.scanner import make_scanner
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from bastion.errors import BadData, ConfigurationError, SessionDataError

if TYPE_CHECKING:
    from bastion.core.sessions.config import SessionConfig

__all__ = [
    "RECORD_VERSION",
    "RecordDecoder",
    "SessionRecord",
    "Tombstone",
    "check_session_value",
    "clip",
    "data_slice",
    "decode_record",
    "encode_data",
    "encode_record",
    "encode_tombstone",
    "replace_data",
    "stored_data",
]

RECORD_VERSION: Final = 1
_HANDLE = re.compile(r"[A-Za-z0-9_-]{43}", re.ASCII)
_MAX_DEPTH: Final = 32
_MAX_CLIENT_TEXT: Final = 256
_NUMBERS: Final = frozenset({int, float})


def check_session_value(key: object, value: object) -> None:
    """Refuse a key or value that JSON would not give back unchanged, naming the key.

    Raises :class:`~bastion.errors.SessionDataError` at ``session[key] = value`` time rather than
    at save, where the handler that wrote it is gone.
    """
    if not isinstance(key, str):
        raise SessionDataError(
            f"session keys must be str, got {type(key).__name__} {key!r}; convert the key to str"
        )
    _check_json(key, value, 0)


def _check_json(key: str, value: object, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise SessionDataError(
            f"session[{key!r}] nests deeper than {_MAX_DEPTH} levels; flatten the value"
        )
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SessionDataError(
                f"session[{key!r}] holds {value!r}, which JSON cannot represent; "
                "store a finite number or None"
            )
        return
    if isinstance(value, list):
        for item in value:
            _check_json(key, item, depth + 1)
        return
    if isinstance(value, dict):
        for inner_key, item in value.items():
            if not isinstance(inner_key, str):
                raise SessionDataError(
                    f"session[{key!r}] has a dict key of type {type(inner_key).__name__}; JSON "
                    "keys are text, so it would come back as str. Use str keys"
                )
            _check_json(key, item, depth + 1)
        return
    raise SessionDataError(
        f"session[{key!r}] holds a {type(value).__name__}, which sessions cannot store (JSON "
        "only: dict, list, str, int, float, bool, None); convert it, e.g. a datetime to an "
        "ISO string or a set/tuple to a list"
    )


@dataclass(slots=True, kw_only=True)
class SessionRecord:
    """What the store holds for one live session. Times are Unix seconds."""

    data: dict[str, Any]
    created_at: float
    issued_at: float
    """When the current ID was issued: the renewal clock."""
    last_seen: float
    """The idle clock, pushed forward at most once per ``touch_interval``."""
    csrf_secret: str
    user_id: str | None = None
    authenticated_at: float | None = None
    persistent: bool = False
    ip: str | None = None
    user_agent: str | None = None
    epoch: int = 0
    """The user's revocation epoch this login was made under (:class:`Epoch`). A record of a
    user whose current epoch is higher has been revoked, listed in the registry or not."""

    def deadline(self, config: SessionConfig) -> float:
        """When this session dies: the earlier of its idle and absolute deadlines."""
        idle, absolute = config.lifetimes(self.persistent)
        return min(self.last_seen + idle, self.created_at + absolute)


def _record(  # noqa: PLR0917 (private: every field of a record, in order)
    data: dict[str, Any],
    created_at: float,
    issued_at: float,
    last_seen: float,
    csrf_secret: str,
    user_id: str | None,
    authenticated_at: float | None,
    persistent: bool,
    ip: str | None,
    user_agent: str | None,
    epoch: int,
) -> SessionRecord:
    """A :class:`SessionRecord` from already-checked fields, for the decoders' hot path.

    Same object as the keyword constructor builds (it has no checks of its own), without the
    cost of ten keyword arguments on every request.
    """
    record = object.__new__(SessionRecord)
    record.data = data
    record.created_at = created_at
    record.issued_at = issued_at
    record.last_seen = last_seen
    record.csrf_secret = csrf_secret
    record.user_id = user_id
    record.authenticated_at = authenticated_at
    record.persistent = persistent
    record.ip = ip
    record.user_agent = user_agent
    record.epoch = epoch
    return record


@dataclass(frozen=True, slots=True, kw_only=True)
class Tombstone:
    """What is left under a rotated ID. ``successor`` is the new handle for a renewal within
    its grace window (``until``), ``None`` for a privilege-change rotation (dead)."""

    successor: str | None
    until: float


def clip(text: str | None) -> str | None:
    """Client text (IP, user agent) cut to the length a record keeps."""
    if text is None:
        return None
    return text[:_MAX_CLIENT_TEXT]


def _not_json(value: object) -> object:
    raise TypeError(f"{type(value).__name__} is not a JSON type")


# Compact separators, ASCII output (so a ``"`` inside a string is always escaped), no NaN or
# Infinity. No circular-reference markers: a cycle raises RecursionError, caught below.
# The C constructor takes no keywords: markers, default, encoder, indent, separators, then
# sort_keys, skipkeys and allow_nan, all off.
_OFF: Final = False
_FALLBACK_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=True,
    check_circular=False,
    allow_nan=False,
    separators=(",", ":"),
    default=_not_json,
)
_ENCODE: Final = (
    c_make_encoder(None, _not_json, encode_basestring_ascii, None, ":", ",", _OFF, _OFF, _OFF)
    if c_make_encoder is not None
    else lambda value, _level: (_FALLBACK_ENCODER.encode(value),)
)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed in a session record")


# NaN or Infinity in a stored time would make every deadline comparison false: refused.
_SCAN: Final = make_scanner(json.JSONDecoder(parse_constant=_refuse_constant))  # type: ignore[arg-type]
_DATA_MARK: Final = b',"d":'


def _dumps(value: object) -> bytes:
    return "".join(_ENCODE(value, 0)).encode("ascii")


def _loads(raw: bytes) -> Any:
    """Decode one JSON document; ValueError for anything else (trailing data included)."""
    try:
        text = raw.decode("utf-8")
        value, end = _SCAN(text, 0)
    except (StopIteration, RecursionError, UnicodeDecodeError):
        raise ValueError("not a JSON document") from None
    if end != len(text):
        raise ValueError("data after the JSON document")
    return value


def encode_data(data: dict[str, Any]) -> bytes:
    """The session data as compact JSON. Raises :class:`SessionDataError` naming the key at
    fault (a value changed in place after assignment, e.g. a set appended to a list)."""
    try:
        return _dumps(data)
    except (TypeError, ValueError, RecursionError) as exc:
        culprit = _find_bad_key(data)
        raise SessionDataError(
            f"session[{culprit!r}] cannot be saved as JSON ({exc}); store JSON values only"
        ) from None


def data_slice(raw: bytes) -> bytes | None:
    """The encoded data inside a record, as :func:`encode_record` laid it out (data last).

    Comparing it with :func:`encode_data` of the current data tells whether a request changed
    the session without decoding anything. ``"`` inside JSON strings is always escaped, so the
    first ``,"d":`` is the top-level one (every field before it is a scalar).
    """
    index = raw.find(_DATA_MARK)
    return None if index < 0 else raw[index + len(_DATA_MARK) : -1]


def replace_data(raw: bytes, old_data: bytes, data_json: bytes) -> bytes:
    """``raw`` (a record whose data is ``old_data``, as :func:`data_slice` found it) with its
    data replaced by ``data_json``: the metadata bytes are kept exactly as stored, so the common
    save (only the data changed) encodes nothing but the data."""
    return raw[: len(raw) - len(old_data) - 1] + data_json + b"}"


def stored_data(raw: bytes) -> dict[str, Any]:
    """The data of an encoded record, decoded afresh (a copy no handler holds yet)."""
    data = data_slice(raw)
    if data is None:
        raise BadData("session record has no data")
    decoded: dict[str, Any] = json.loads(data)
    return decoded


def encode_record(
    record: SessionRecord, *, max_bytes: int, data_json: bytes | None = None
) -> bytes:
    """The record as compact JSON, data last. Raises :class:`SessionDataError` over
    ``max_bytes``. ``data_json`` is :func:`encode_data` of ``record.data`` when the caller has
    it already."""
    head = {
        "v": RECORD_VERSION,
        "c": record.created_at,
        "i": record.issued_at,
        "s": record.last_seen,
        "x": record.csrf_secret,
        "u": record.user_id,
        "a": record.authenticated_at,
        "p": record.persistent,
        "ip": clip(record.ip),
        "ua": clip(record.user_agent),
        "e": record.epoch,
    }
    if data_json is None:
        data_json = encode_data(record.data)
    try:
        encoded_head = _dumps(head)
    except ValueError:
        raise SessionDataError("session metadata holds a non-finite time") from None
    raw = encoded_head[:-1] + _DATA_MARK + data_json + b"}"
    if len(raw) > max_bytes:
        biggest = max(
            record.data,
            key=lambda k: len(json.dumps(record.data[k], default=str)),
            default=None,
        )
        raise SessionDataError(
            f"session is {len(raw)} bytes encoded, over max_bytes={max_bytes} (largest key: "
            f"{biggest!r}); keep large data elsewhere and store its ID in the session"
        )
    return raw


def _find_bad_key(data: dict[str, Any]) -> str | None:
    for key, value in data.items():
        try:
            check_session_value(key, value)
        except SessionDataError:
            return key
    return None


def encode_tombstone(tombstone: Tombstone) -> bytes:
    payload = {"v": RECORD_VERSION, "t": tombstone.successor, "until": tombstone.until}
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def _number(payload: dict[str, Any], name: str) -> float:
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadData(f"session record field {name!r} is not a number")
    return float(value)


def decode_record(raw: bytes) -> SessionRecord | Tombstone:
    """Parse a stored record or tombstone. Raises :class:`~bastion.errors.BadData` on anything
    else (a corrupted value, another program's key), so the caller starts a fresh session."""
    try:
        payload = _loads(raw)
    except ValueError:
        raise BadData("session record is not JSON") from None
    if type(payload) is not dict or payload.get("v") != RECORD_VERSION:
        raise BadData("session record has an unknown format version")
    if "until" in payload:
        successor = payload.get("t")
        if successor is not None and (
            not isinstance(successor, str) or _HANDLE.fullmatch(successor) is None
        ):
            raise BadData("session tombstone has a malformed successor")
        return Tombstone(successor=successor, until=_number(payload, "until"))
    try:
        data, csrf, persistent = payload["d"], payload["x"], payload["p"]
        created, issued, seen = payload["c"], payload["i"], payload["s"]
        user, auth, ip, ua = payload["u"], payload["a"], payload["ip"], payload["ua"]
        epoch = payload.get("e", 0)  # records written before epochs existed: epoch 0
    except KeyError:
        raise BadData("session record is missing a field") from None
    # One combined check for the well-formed case; the precise checks only on failure.
    if not (
        type(data) is dict
        and type(csrf) is str
        and type(persistent) is bool
        and type(created) in _NUMBERS
        and type(issued) in _NUMBERS
        and type(seen) in _NUMBERS
        and (user is None or type(user) is str)
        and (auth is None or type(auth) in _NUMBERS)
        and (ip is None or type(ip) is str)
        and (ua is None or type(ua) is str)
        and type(epoch) is int
        and epoch >= 0
    ):
        raise BadData("session record has a field of the wrong type")
    return _record(data, created, issued, seen, csrf, user, auth, persistent, ip, ua, epoch)


_Head: TypeAlias = (
    "tuple[float, float, float, str, str | None, float | None, bool, str | None, str | None, int]"
)


class RecordDecoder:
    """:func:`decode_record` with a bounded memory of record heads it has already checked.

    A session's metadata (everything before the data) changes rarely: at most once per
    ``touch_interval`` and on lifecycle events, while the data changes on every write. This
    decoder remembers the checked fields of up to ``capacity`` heads, keyed by their exact
    bytes, so a record whose head it has seen costs one parse of the data alone. A head is only
    remembered after a full, validated decode; a hit still requires the data to be one JSON
    object that ends the record, so bytes that a full decode would read differently never take
    the short path. The memory is dropped as a whole when full (no per-entry bookkeeping), and
    is safe to share between threads (single dictionary operations).

    It holds CSRF secrets (part of each head) in memory, as the memory store does; it never
    holds session IDs (the store keys are not part of it).
    """

    __slots__ = ("_capacity", "_heads")

    def __init__(self, capacity: int = 2048) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ConfigurationError(
                f"capacity must be a whole number >= 0, got {capacity!r}", setting="capacity"
            )
        self._capacity = capacity
        self._heads: dict[bytes, _Head] = {}

    def decode(self, raw: bytes) -> SessionRecord | Tombstone:
        """As :func:`decode_record`: a record or tombstone, :class:`BadData` otherwise."""
        index = raw.find(_DATA_MARK)
        if index < 0:
            return decode_record(raw)
        head = raw[:index]
        known = self._heads.get(head)
        if known is not None:
            data = _data_at(raw, index + len(_DATA_MARK))
            if data is not None:
                return _record(data, *known)
        record = decode_record(raw)
        if isinstance(record, SessionRecord) and self._capacity:
            if len(self._heads) >= self._capacity:
                self._heads.clear()
            self._heads[head] = (
                record.created_at,
                record.issued_at,
                record.last_seen,
                record.csrf_secret,
                record.user_id,
                record.authenticated_at,
                record.persistent,
                record.ip,
                record.user_agent,
                record.epoch,
            )
        return record


def _data_at(raw: bytes, start: int) -> dict[str, Any] | None:
    """The JSON object at ``start`` when it runs to the record's closing brace, else ``None``."""
    if raw[-1:] != b"}":
        return None
    try:
        text = raw[start:-1].decode("utf-8")
        data, end = _SCAN(text, 0)
    except (ValueError, StopIteration, RecursionError, UnicodeDecodeError):
        return None
    if end != len(text) or type(data) is not dict:
        return None
    return data
