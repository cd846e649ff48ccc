"""The capped, streaming body scanner that finds a CSRF token in a form body.

A request the header checks cannot decide (an old browser, ``curl``) needs a token; when it is
not in the header, it may be the ``csrf_token`` field of a urlencoded or multipart form.
:class:`FormTokenScanner` finds that one field in a body fed chunk by chunk, keeping at most
``max_bytes`` of it, in time linear in the body whatever its chunking; the adapters keep what
they read and replay it to the app unchanged. JSON and other bodies must use the header.
"""

from __future__ import annotations

import enum
import re
from typing import Final

from bastion.core.csrf.checks import CSRFReason

__all__ = ["FormTokenScanner", "ScanStatus"]

_MAX_PART_HEADER_BYTES: Final = 16 * 1024
_BOUNDARY = re.compile(r"""boundary\s*=\s*(?:"([^"]{1,70})"|([^\s;"]{1,70}))""", re.IGNORECASE)
_DISPOSITION_PARAM = re.compile(rb""";\s*([A-Za-z0-9*_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)""")
_HEXDIGITS: Final = frozenset(b"0123456789abcdefABCDEF")


class ScanStatus(enum.Enum):
    MORE = "more"
    """Feed the next chunk."""
    FOUND = "found"
    """The token field was found (:attr:`FormTokenScanner.token`); stop reading."""
    ABSENT = "absent"
    """The whole body was read and has no token field."""
    TOO_LARGE = "too_large"
    """``max_bytes`` were read without finding the token."""
    MALFORMED = "malformed"
    """The body is not the form it claims to be (or ends in the middle of a part)."""


_URLENCODED: Final = "application/x-www-form-urlencoded"
_MULTIPART: Final = "multipart/form-data"
_PREAMBLE, _AFTER_DELIMITER, _HEADERS, _CONTENT = range(4)


class FormTokenScanner:
    """Finds one form field in a urlencoded or multipart body fed chunk by chunk.

    Memory is bounded by ``max_bytes``: at most that much of the body is kept for parsing; the
    adapter keeps the chunks it read so it can replay the body to the app unchanged. Scanning
    stops at the token, so a file part after the token is streamed, never held.

    The work is linear in the body whatever its chunking: every search resumes where the
    previous one gave up (a body fed in 16-byte chunks is not searched again from the start of
    a pending field at each chunk), and a urlencoded name too long to decode to the field name
    is skipped without being decoded. :attr:`examined` counts the bytes searched, copied or
    decoded, so that tests can bound the work without timing it. Any chunking of a body gives
    the same answer as the body in one chunk.

    Build it with :meth:`for_content_type`, which returns ``None`` for a body that cannot carry
    a form token (JSON, text/plain...).
    """

    __slots__ = (
        "_buf",
        "_delimiter",
        "_field",
        "_is_token",
        "_max",
        "_multipart",
        "_pos",
        "_search_from",
        "_state",
        "examined",
        "token",
    )

    def __init__(self, *, field: str, max_bytes: int, boundary: bytes | None) -> None:
        self._buf = bytearray()
        self._field = field.encode("ascii")
        self._max = max_bytes
        self._multipart = boundary is not None
        self._delimiter = b"\r\n--" + (boundary or b"")
        self._pos = 0
        self._search_from = 0
        self._state = _PREAMBLE
        self._is_token = False
        self.examined = 0
        self.token: bytes | None = None

    @classmethod
    def for_content_type(
        cls, content_type: str | None, *, field: str, max_bytes: int
    ) -> FormTokenScanner | CSRFReason | None:
        """A scanner for this body, ``None`` if it cannot hold a form field, or
        ``BODY_MALFORMED`` for a multipart type without a usable boundary."""
        if not content_type:
            return None
        media = content_type.split(";", 1)[0].strip().lower()
        if media == _URLENCODED:
            return cls(field=field, max_bytes=max_bytes, boundary=None)
        if media == _MULTIPART:
            match = _BOUNDARY.search(content_type)
            boundary = None if match is None else (match.group(1) or match.group(2))
            if not boundary or not boundary.isascii():
                return CSRFReason.BODY_MALFORMED
            return cls(field=field, max_bytes=max_bytes, boundary=boundary.encode("ascii"))
        return None

    def feed(self, chunk: bytes, *, more: bool) -> ScanStatus:
        """Add the next chunk (``more=False`` for the last one) and say what is known.

        A body that reaches ``max_bytes`` exactly is not refused until a byte beyond the cap
        arrives: its end (an empty last chunk) may still follow.
        """
        room = self._max - len(self._buf)
        over = len(chunk) > room
        self._buf += chunk[:room] if over else chunk
        more = more or over  # a body cut at the cap is not a body that ended
        status = self._scan_multipart(more=more) if self._multipart else self._scan_form(more)
        if status is ScanStatus.MORE and over:
            return ScanStatus.TOO_LARGE
        return status

    def _find(self, needle: bytes) -> int:
        """Index of ``needle`` at or after the parse position, or -1. A failed search records
        how far it looked, so the next one (after more bytes arrived) starts there; every
        caller moves the position past a found needle, so the record never goes stale."""
        start = max(self._pos, self._search_from)
        index = self._buf.find(needle, start)
        if index < 0:
            self._search_from = max(start, len(self._buf) - len(needle) + 1)
            self.examined += len(self._buf) - start
        else:
            self.examined += index + len(needle) - start
        return index

    def _scan_form(self, more: bool) -> ScanStatus:
        # The pairs completed by this chunk (up to its last "&", or to the end of the body) are
        # split in one pass; the bytes after the last "&" wait for the next chunk, and are not
        # searched again.
        buf, start = self._buf, max(self._pos, self._search_from)
        end = len(buf) if not more else buf.rfind(b"&", start)
        self._search_from = len(buf)
        self.examined += len(buf) - start
        if end < self._pos:
            return ScanStatus.MORE
        region = bytes(buf[self._pos : end])
        self.examined += len(region)
        self._pos = end + 1
        for pair in region.split(b"&"):
            token = self._pair_token(pair)
            if token is not None:
                self.token = token
                return ScanStatus.FOUND
        return ScanStatus.MORE if more else ScanStatus.ABSENT

    def _pair_token(self, pair: bytes) -> bytes | None:
        """The decoded value of ``pair`` if its name is the token field."""
        name = self._field
        if len(pair) < len(name):
            return None
        key, _, value = pair.partition(b"=")
        # A decoded byte comes from one to three raw bytes: a raw name outside
        # [len(name), 3 * len(name)] cannot decode to the field name.
        if not len(name) <= len(key) <= 3 * len(name):
            return None
        self.examined += len(key)
        if _percent_decode(key) != name:
            return None
        self.examined += len(value)
        return _percent_decode(value)

    def _scan_multipart(self, *, more: bool) -> ScanStatus:  # noqa: PLR0911, PLR0912 (a state machine)
        buf, delimiter = self._buf, self._delimiter
        while True:
            if self._state == _PREAMBLE:
                first = delimiter[2:]
                if buf.startswith(first):
                    self._pos = len(first)
                else:
                    index = self._find(delimiter)
                    if index < 0:
                        return ScanStatus.MORE if more else ScanStatus.MALFORMED
                    self._pos = index + len(delimiter)
                self._state = _AFTER_DELIMITER
            elif self._state == _AFTER_DELIMITER:
                if len(buf) - self._pos < 2:
                    return ScanStatus.MORE if more else ScanStatus.MALFORMED
                if buf[self._pos : self._pos + 2] == b"--":
                    return ScanStatus.ABSENT
                line_end = self._find(b"\r\n")
                if line_end < 0:
                    if len(buf) - self._pos > 256:
                        return ScanStatus.MALFORMED
                    return ScanStatus.MORE if more else ScanStatus.MALFORMED
                if buf[self._pos : line_end].strip(b" \t"):
                    return ScanStatus.MALFORMED
                self._pos = line_end + 2
                self._state = _HEADERS
            elif self._state == _HEADERS:
                end = self._find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) - self._pos > _MAX_PART_HEADER_BYTES:
                        return ScanStatus.MALFORMED
                    return ScanStatus.MORE if more else ScanStatus.MALFORMED
                self.examined += end - self._pos
                self._is_token = self._names_token(bytes(buf[self._pos : end]))
                self._pos = end + 4
                self._state = _CONTENT
            else:
                index = self._find(delimiter)
                if index < 0:
                    return ScanStatus.MORE if more else ScanStatus.MALFORMED
                if self._is_token:
                    self.token = bytes(buf[self._pos : index])
                    self.examined += len(self.token)
                    return ScanStatus.FOUND
                self._pos = index + len(delimiter)
                self._state = _AFTER_DELIMITER

    def _names_token(self, headers: bytes) -> bool:
        for line in headers.split(b"\r\n"):
            name, colon, value = line.partition(b":")
            if not colon or name.strip().lower() != b"content-disposition":
                continue
            params = {
                key.lower(): _unquote(raw.strip()) for key, raw in _DISPOSITION_PARAM.findall(value)
            }
            return params.get(b"name") == self._field and b"filename" not in params
        return False


def _unquote(raw: bytes) -> bytes:
    if len(raw) >= 2 and raw[:1] == b'"' and raw[-1:] == b'"':
        return re.sub(rb"\\(.)", rb"\1", raw[1:-1])
    return raw


def _percent_decode(data: bytes) -> bytes:
    """``application/x-www-form-urlencoded`` decoding of one name or value (``+`` is a space,
    a ``%`` not followed by two hex digits stays as it is)."""
    data = data.replace(b"+", b" ")
    if b"%" not in data:
        return data
    out = bytearray()
    index, size = 0, len(data)
    while index < size:
        byte = data[index]
        if (
            byte == 0x25
            and index + 2 < size
            and data[index + 1] in _HEXDIGITS
            and data[index + 2] in _HEXDIGITS
        ):
            out.append(int(data[index + 1 : index + 3], 16))
            index += 3
        else:
            out.append(byte)
            index += 1
    return bytes(out)
