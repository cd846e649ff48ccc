"""Strict reading of the JWS compact serialization, before any key or library sees a token.

Every check here is structural and cheap, and each refusal names its :class:`TokenReason`:

- exactly three dot-separated segments (``MALFORMED``: a five-segment JWE or nested token too);
- canonical base64url in each segment (``NOT_CANONICAL``): the URL-safe alphabet only, no
  ``=`` padding, no whitespace, no impossible length, and zero trailing bits, so every byte
  string has exactly one accepted encoding and a re-encoded copy of a token never passes for
  a different one;
- UTF-8 JSON objects (``MALFORMED``) in which no member name occurs twice
  (``DUPLICATE_KEY``: parsers disagree on which duplicate wins, RFC 7515 section 5.2), without
  the non-JSON constants ``NaN`` and ``Infinity``, and without lone surrogates.

The size cap is the caller's first check (:class:`bastion.core.tokens.jwt.JWTCodec` and the
DPoP verifier apply it on the raw length before calling in here).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import TYPE_CHECKING, Any, NoReturn

from bastion.core.tokens.reasons import TokenReason, TokenRejected

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["b64url_decode", "b64url_encode", "json_object", "split_compact"]

_SEGMENT = re.compile(rb"[A-Za-z0-9_-]*")
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_PADDING = (b"", b"", b"==", b"=")
# The last character of a segment whose length is 2 or 3 (mod 4) carries 4 or 2 unused bits,
# which must be zero in the canonical encoding.
# A length of 1 (mod 4) is impossible: no last character is acceptable.
_TAIL: tuple[frozenset[int], ...] = (
    frozenset(),
    frozenset(),
    frozenset(b"AQgw"),
    frozenset(b"AEIMQUYcgkosw048"),
)
_a2b = binascii.a2b_base64


def _refuse(reason: TokenReason, message: str) -> NoReturn:
    raise TokenRejected(reason, message)


def split_compact(token: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """The signing input and the three decoded segments of a compact JWS.

    ``token`` is the raw ASCII bytes, already under the caller's size cap. Returns
    ``(signing_input, header, payload, signature)``: the signing input is the first two
    segments as sent (``header.payload``), the others the bytes each segment encodes. Nothing
    here parses JSON: the caller decides what to parse before and after the signature.
    """
    parts = token.split(b".")
    if len(parts) != 3:
        _refuse(TokenReason.MALFORMED, "a JWS compact token has exactly three segments")
    if b"+" in token or b"/" in token or b"=" in token:
        # The standard alphabet and padding; everything else outside base64url (whitespace,
        # non-ASCII bytes, punctuation) the strict decoder below refuses.
        _refuse(TokenReason.NOT_CANONICAL, "a segment is not base64url text")
    header, payload, signature = parts
    rest_h, rest_p, rest_s = len(header) & 3, len(payload) & 3, len(signature) & 3
    if (
        (rest_h and header[-1] not in _TAIL[rest_h])
        or (rest_p and payload[-1] not in _TAIL[rest_p])
        or (rest_s and signature[-1] not in _TAIL[rest_s])
    ):
        _refuse(TokenReason.NOT_CANONICAL, "a base64url segment has a non-canonical tail")
    try:
        return (
            token[: len(header) + 1 + len(payload)],
            _a2b(header.translate(_TO_STANDARD) + _PADDING[rest_h], strict_mode=True),
            _a2b(payload.translate(_TO_STANDARD) + _PADDING[rest_p], strict_mode=True),
            _a2b(signature.translate(_TO_STANDARD) + _PADDING[rest_s], strict_mode=True),
        )
    except binascii.Error:
        _refuse(TokenReason.NOT_CANONICAL, "a segment is not base64url text")


def _check_tail(segment: bytes) -> None:
    rest = len(segment) & 3
    if rest and segment[-1] not in _TAIL[rest]:
        _refuse(TokenReason.NOT_CANONICAL, "a base64url segment has a non-canonical tail")


def b64url_decode(segment: bytes) -> bytes:
    """Decode one base64url segment, refusing every non-canonical form (``NOT_CANONICAL``).

    Segments that came out of :func:`split_compact` are already checked; this checks again,
    so that it is safe on any input.
    """
    if _SEGMENT.fullmatch(segment) is None:
        _refuse(TokenReason.NOT_CANONICAL, "a segment is not base64url text")
    _check_tail(segment)
    return _decode_checked(segment)


def _decode_checked(segment: bytes) -> bytes:
    # The alphabet and the tail were checked: the standard decoder cannot fail or discard.
    return _a2b(segment.translate(_TO_STANDARD) + _PADDING[len(segment) & 3])


def b64url_encode(data: bytes) -> bytes:
    """The canonical base64url form of ``data`` (no padding)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class _DuplicateMember(Exception):
    """Raised from inside the JSON parser; becomes ``DUPLICATE_KEY``."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        raise _DuplicateMember
    return members


def _no_constant(name: str) -> NoReturn:
    raise _NotJSON(name)


class _NotJSON(Exception):
    """``NaN``, ``Infinity`` and ``-Infinity`` are Python's extensions, not JSON (RFC 8259)."""


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def json_object(data: bytes) -> dict[str, Any]:
    """Parse ``data`` as one UTF-8 JSON object with distinct member names.

    Refuses (``MALFORMED``) invalid UTF-8, invalid JSON, a value that is not an object, the
    constants ``NaN``/``Infinity``, lone surrogates (``"\\ud800"``: text that cannot be encoded
    again), integers beyond Python's digit limit and nesting beyond the recursion limit; and
    (``DUPLICATE_KEY``) an object naming a member twice, at any depth.
    """
    try:
        text = data.decode("utf-8")
        try:
            # The C scanner alone: what JSONDecoder.decode runs after skipping whitespace.
            value, end = _SCAN(text, 0)
        except StopIteration:
            end = -1
        if end != len(text):
            value = _DECODER.decode(text)  # whitespace around the value, or an error to raise
    except _DuplicateMember:
        _refuse(TokenReason.DUPLICATE_KEY, "a JSON object names a member twice")
    except (ValueError, RecursionError, _NotJSON):
        _refuse(TokenReason.MALFORMED, "a segment is not UTF-8 JSON")
    if type(value) is not dict:
        _refuse(TokenReason.MALFORMED, "a segment is not a JSON object")
    if "\\u" in text:
        # Escapes are the only way a lone surrogate gets into parsed text.
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            _refuse(TokenReason.MALFORMED, "a JSON string holds a lone surrogate")
    return value
