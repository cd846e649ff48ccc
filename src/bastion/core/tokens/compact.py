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
from typing import Any, NoReturn

from bastion.core.tokens.reasons import TokenReason, TokenRejected

__all__ = ["b64url_decode", "b64url_encode", "json_object", "split_compact"]

_COMPACT = re.compile(rb"([A-Za-z0-9_-]*)\.([A-Za-z0-9_-]*)\.([A-Za-z0-9_-]*)")
_SEGMENT = re.compile(rb"[A-Za-z0-9_-]*")
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_PADDING = (b"", b"", b"==", b"=")
# The last character of a segment whose length is 2 or 3 (mod 4) carries 4 or 2 unused bits,
# which must be zero in the canonical encoding.
_LAST_OF_2 = frozenset(b"AQgw")
_LAST_OF_3 = frozenset(b"AEIMQUYcgkosw048")


def _refuse(reason: TokenReason, message: str) -> NoReturn:
    raise TokenRejected(reason, message)


def split_compact(token: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """The signing input and the three decoded segments of a compact JWS.

    ``token`` is the raw ASCII bytes, already under the caller's size cap. Returns
    ``(signing_input, header, payload, signature)``: the signing input is the first two
    segments as sent (``header.payload``), the others the bytes each segment encodes. Nothing
    here parses JSON: the caller decides what to parse before and after the signature.
    """
    match = _COMPACT.fullmatch(token)
    if match is None:
        if token.count(b".") != 2:
            _refuse(TokenReason.MALFORMED, "a JWS compact token has exactly three segments")
        _refuse(TokenReason.NOT_CANONICAL, "a segment is not base64url text")
    header, payload, signature = match.groups()
    _check_tail(header)
    _check_tail(payload)
    _check_tail(signature)
    return (
        token[: match.end(2)],
        _decode_checked(header),
        _decode_checked(payload),
        _decode_checked(signature),
    )


def _check_tail(segment: bytes) -> None:
    rest = len(segment) & 3
    if rest == 0:
        return
    if rest == 1:
        _refuse(TokenReason.NOT_CANONICAL, "a base64url segment has an impossible length")
    if segment[-1] not in (_LAST_OF_2 if rest == 2 else _LAST_OF_3):
        _refuse(TokenReason.NOT_CANONICAL, "a base64url segment has non-zero trailing bits")


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
    return binascii.a2b_base64(segment.translate(_TO_STANDARD) + _PADDING[len(segment) & 3])


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


def json_object(data: bytes) -> dict[str, Any]:
    """Parse ``data`` as one UTF-8 JSON object with distinct member names.

    Refuses (``MALFORMED``) invalid UTF-8, invalid JSON, a value that is not an object, the
    constants ``NaN``/``Infinity``, lone surrogates (``"\\ud800"``: text that cannot be encoded
    again), integers beyond Python's digit limit and nesting beyond the recursion limit; and
    (``DUPLICATE_KEY``) an object naming a member twice, at any depth.
    """
    try:
        text = data.decode("utf-8")
        value = _DECODER.decode(text)
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
