"""The line of every table, key and array element of a TOML document (tomllib keeps none).

:func:`key_lines` runs after :func:`tomllib.loads` accepted the text, so it can be lenient: it
only follows the structure (headers, ``[[array]]`` tables, dotted keys, inline arrays and
tables, the four kinds of strings, comments) to note where each path starts. A path is a tuple
of keys and list indexes, as the loaded data would be indexed (``("rules", 0, "when")``). Keys
in quotes are decoded by tomllib itself, so the paths match the loaded keys exactly. If the
scanner ever meets text it does not follow, it stops and returns what it found: lines are then
reported at the nearest known ancestor, never wrongly.
"""

from __future__ import annotations

import contextlib
import re
import tomllib
from bisect import bisect_right
from typing import Final

__all__ = ["key_lines"]

Path = tuple[str | int, ...]

_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
_BLANK: Final = re.compile(r"[ \t]*")
_SCALAR_END: Final = re.compile(r"[,\]}\n#]|\r\n")


class _Lost(Exception):
    """The scanner met text it does not follow (it keeps the lines found so far)."""


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.newlines = [m.start() for m in re.finditer("\n", text)]
        self.lines: dict[Path, int] = {}
        self.arrays: dict[Path, int] = {}  # elements seen so far of each [[array]] of tables

    def line(self) -> int:
        return bisect_right(self.newlines, self.pos - 1) + 1

    def note(self, path: Path, line: int) -> None:
        self.lines.setdefault(path, line)

    def peek(self, literal: str) -> bool:
        return self.text.startswith(literal, self.pos)

    def expect(self, literal: str) -> None:
        if not self.peek(literal):
            raise _Lost
        self.pos += len(literal)

    def blank(self) -> None:
        match = _BLANK.match(self.text, self.pos)
        self.pos = match.end() if match else self.pos

    def gap(self) -> None:
        """Skip spaces, newlines and comments."""
        while True:
            start = self.pos
            self.pos = len(self.text) - len(self.text[self.pos :].lstrip(" \t\r\n"))
            if self.peek("#"):
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            if self.pos == start:
                return

    # --- statements -------------------------------------------------------------------------

    def document(self) -> None:
        table: Path = ()
        while True:
            self.gap()
            if self.pos >= len(self.text):
                return
            line = self.line()
            if self.peek("[["):
                self.pos += 2
                table = self.array_header(self.keys(), line)
                self.blank()
                self.expect("]]")
            elif self.peek("["):
                self.pos += 1
                table = self.resolve(self.keys(), line)
                self.blank()
                self.expect("]")
            else:
                keys = self.keys()
                for end in range(1, len(keys) + 1):
                    self.note((*table, *keys[:end]), line)
                self.blank()
                self.expect("=")
                self.blank()
                self.value((*table, *keys))

    def resolve(self, keys: tuple[str, ...], line: int) -> Path:
        """The data path of a header's keys: an [[array]] on the way means its last element."""
        path: Path = ()
        for key in keys:
            path = (*path, key)
            self.note(path, line)
            if path in self.arrays:
                path = (*path, self.arrays[path] - 1)
        return path

    def array_header(self, keys: tuple[str, ...], line: int) -> Path:
        if not keys:
            raise _Lost
        array = (*self.resolve(keys[:-1], line), keys[-1])
        self.arrays[array] = self.arrays.get(array, 0) + 1
        element = (*array, self.arrays[array] - 1)
        self.note(array, line)
        self.note(element, line)
        return element

    def keys(self) -> tuple[str, ...]:
        keys: list[str] = []
        while True:
            self.blank()
            keys.append(self.key())
            self.blank()
            if not self.peek("."):
                return tuple(keys)
            self.pos += 1

    def key(self) -> str:
        if self.peek('"') or self.peek("'"):
            start = self.pos
            self.string()
            decoded = tomllib.loads("k = " + self.text[start : self.pos])["k"]
            if not isinstance(decoded, str):
                raise _Lost
            return decoded
        match = _BARE_KEY.match(self.text, self.pos)
        if match is None:
            raise _Lost
        self.pos = match.end()
        return match.group()

    # --- values -----------------------------------------------------------------------------

    def value(self, path: Path) -> None:
        if self.peek("["):
            self.pos += 1
            self.array(path)
        elif self.peek("{"):
            self.pos += 1
            self.inline_table(path)
        elif self.peek('"') or self.peek("'"):
            self.string()
        else:
            match = _SCALAR_END.search(self.text, self.pos)
            end = len(self.text) if match is None else match.start()
            if end == self.pos:
                raise _Lost
            self.pos = end

    def array(self, path: Path) -> None:
        index = 0
        while True:
            self.gap()
            if self.peek("]"):
                self.pos += 1
                return
            self.note((*path, index), self.line())
            self.value((*path, index))
            self.gap()
            if self.peek(","):
                self.pos += 1
                index += 1
            elif not self.peek("]"):
                raise _Lost

    def inline_table(self, path: Path) -> None:
        while True:
            self.gap()
            if self.peek("}"):
                self.pos += 1
                return
            line = self.line()
            keys = self.keys()
            for end in range(1, len(keys) + 1):
                self.note((*path, *keys[:end]), line)
            self.blank()
            self.expect("=")
            self.blank()
            self.value((*path, *keys))
            self.gap()
            if self.peek(","):
                self.pos += 1
            elif not self.peek("}"):
                raise _Lost

    def string(self) -> None:
        for fence in ('"""', "'''"):
            if self.peek(fence):
                self.pos = self.closing(fence, self.pos + 3, escapes=fence == '"""')
                while self.peek(fence[0]):  # up to two quotes may end the content
                    self.pos += 1
                return
        quote = self.text[self.pos]
        self.pos = self.closing(quote, self.pos + 1, escapes=quote == '"')

    def closing(self, fence: str, pos: int, *, escapes: bool) -> int:
        while pos < len(self.text):
            if escapes and self.text[pos] == "\\":
                pos += 2
                continue
            if self.text.startswith(fence, pos):
                return pos + len(fence)
            pos += 1
        raise _Lost


def key_lines(text: str) -> dict[Path, int]:
    """The 1-based line where each path of the (valid) TOML ``text`` is first written."""
    scanner = _Scanner(text)
    # On text it does not follow, keep the lines found so far: lookups use the nearest ancestor.
    with contextlib.suppress(_Lost, IndexError, RecursionError, tomllib.TOMLDecodeError):
        scanner.document()
    return scanner.lines
