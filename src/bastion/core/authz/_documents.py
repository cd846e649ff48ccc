"""Policy documents as trees of :class:`Node` that remember their line (JSON, YAML, TOML).

The policy loader reports every mistake with the line it is on, so each format is read into the
same small tree first: a node holds a plain value (a ``dict`` of nodes, a ``list`` of nodes, or a
scalar) and the line of its key and of its value. Only the loader's schema walk looks at the
tree; it never reaches application code.

- JSON is read by a small position-keeping parser of our own (the standard library's decoder
  forgets positions and silently keeps the last of two equal keys; a duplicate key is an error
  here, as is ``NaN`` or ``Infinity``, which are not JSON).
- YAML is composed by PyYAML's *safe* loader into its node graph (which carries marks); scalars
  are built by the safe constructor, so a ``!!python/...`` tag can never construct an object,
  and a mapping or sequence with any tag but the plain one is refused. Aliases are followed up
  to a node budget, so a billion-laughs document is an error, not a hang.
- TOML is parsed by :mod:`tomllib`; a second, lenient pass over the (already valid) text
  records the line of every table header, key and array element, since tomllib keeps none.

Every problem is a :class:`DocumentError` carrying the line; the loader turns it into its
public ``PolicyError``.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from bisect import bisect_right
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from bastion.core.authz import _toml_lines

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DocumentError", "Node", "kind_of", "parse_json", "parse_toml", "parse_yaml"]

Scalar = str | int | float | bool | None

MAX_DEPTH: Final = 64
"""Deepest nesting of mappings and sequences a policy may use (conditions nest a few levels)."""

MAX_NODES: Final = 200_000
"""Most nodes a document may expand to (YAML aliases can repeat a subtree many times)."""


class DocumentError(Exception):
    """A document cannot be read: ``line`` (1-based, or ``None``), what is wrong, and the path
    of the key at fault when there is one (``setting``)."""

    def __init__(self, message: str, *, line: int | None, setting: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.setting = setting


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """One value of a document: ``value`` is a ``dict[str, Node]``, a ``list[Node]`` or a scalar.

    ``line`` is where the value starts and ``key_line`` where the key that holds it is (the same
    line for sequence items and the root): an unknown key is reported at its key, a value of the
    wrong type at the value.
    """

    value: dict[str, Node] | list[Node] | Scalar
    line: int
    key_line: int


def kind_of(value: object) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string"}.get(
        type(value), f"a {type(value).__name__}"
    )


def _check_scalar(value: object, line: int, fmt: str) -> Scalar:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DocumentError(f"{value!r} is not a finite number", line=line)
        return value
    raise DocumentError(
        f"{fmt} value of type {type(value).__name__} is not a policy value "
        "(use a string, a number, a boolean or a list)",
        line=line,
    )


# --- JSON -----------------------------------------------------------------------------------

_NUMBER: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_SPACE: Final = re.compile(r"[ \t\n\r]*")
_STRING: Final = re.compile(r'"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"')
_WORDS: Final = {"true": True, "false": False, "null": None}


class _JsonReader:
    """Recursive descent over RFC 8259 JSON, keeping the line of every key and value."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.newlines = [m.start() for m in re.finditer("\n", text)]

    def line(self, pos: int) -> int:
        return bisect_right(self.newlines, pos - 1) + 1

    def fail(self, pos: int, message: str) -> DocumentError:
        return DocumentError(f"invalid JSON: {message}", line=self.line(pos))

    def skip(self, pos: int) -> int:
        match = _SPACE.match(self.text, pos)
        return match.end() if match else pos

    def document(self) -> Node:
        pos = self.skip(0)
        if pos == len(self.text):
            raise DocumentError("the document is empty", line=1)
        node, pos = self.value(pos, key_line=None, depth=0)
        pos = self.skip(pos)
        if pos != len(self.text):
            raise self.fail(pos, "extra data after the document")
        return node

    def value(self, pos: int, *, key_line: int | None, depth: int) -> tuple[Node, int]:
        line = self.line(pos)
        key_line = line if key_line is None else key_line
        char = self.text[pos : pos + 1]
        if char in "{[":
            if depth >= MAX_DEPTH:
                raise self.fail(pos, f"nested deeper than {MAX_DEPTH} levels")
            if char == "{":
                mapping, pos = self.mapping(pos + 1, depth + 1)
                return Node(value=mapping, line=line, key_line=key_line), pos
            items, pos = self.sequence(pos + 1, depth + 1)
            return Node(value=items, line=line, key_line=key_line), pos
        if char == '"':
            text, pos = self.string(pos)
            return Node(value=text, line=line, key_line=key_line), pos
        for word, scalar in _WORDS.items():
            if self.text.startswith(word, pos):
                return Node(value=scalar, line=line, key_line=key_line), pos + len(word)
        match = _NUMBER.match(self.text, pos)
        if match is None:
            what = repr(char) if char else "the end of the document"
            raise self.fail(pos, f"expected a value, found {what}")
        number = self.number(match, pos)
        return Node(value=number, line=line, key_line=key_line), match.end()

    def number(self, match: re.Match[str], pos: int) -> int | float:
        if match.group(1) is None and match.group(2) is None:
            try:
                return int(match.group())
            except ValueError:  # beyond the interpreter's digit limit
                raise self.fail(pos, "the number has too many digits") from None
        number = float(match.group())
        if not math.isfinite(number):
            raise self.fail(pos, f"{match.group()} is out of range")
        return number

    def string(self, pos: int) -> tuple[str, int]:
        match = _STRING.match(self.text, pos)
        if match is None:
            raise self.fail(
                pos, "a string is unterminated, or holds a control character or a bad escape"
            )
        decoded = json.loads(match.group())
        if not isinstance(decoded, str):  # pragma: no cover (the pattern matches strings only)
            raise self.fail(pos, "expected a string")
        return decoded, match.end()

    def mapping(self, pos: int, depth: int) -> tuple[dict[str, Node], int]:
        result: dict[str, Node] = {}
        pos = self.skip(pos)
        if self.text.startswith("}", pos):
            return result, pos + 1
        while True:
            if not self.text.startswith('"', pos):
                raise self.fail(pos, "expected a key in double quotes")
            key_line = self.line(pos)
            key, pos = self.string(pos)
            if key in result:
                raise DocumentError(
                    f"duplicate key {key!r} (first on line {result[key].key_line})",
                    line=key_line,
                )
            pos = self.skip(pos)
            if not self.text.startswith(":", pos):
                raise self.fail(pos, f"expected ':' after the key {key!r}")
            node, pos = self.value(self.skip(pos + 1), key_line=key_line, depth=depth)
            result[key] = node
            pos = self.skip(pos)
            if self.text.startswith(",", pos):
                pos = self.skip(pos + 1)
                continue
            if self.text.startswith("}", pos):
                return result, pos + 1
            raise self.fail(pos, "expected ',' or '}'")

    def sequence(self, pos: int, depth: int) -> tuple[list[Node], int]:
        items: list[Node] = []
        pos = self.skip(pos)
        if self.text.startswith("]", pos):
            return items, pos + 1
        while True:
            node, pos = self.value(pos, key_line=None, depth=depth)
            items.append(node)
            pos = self.skip(pos)
            if self.text.startswith(",", pos):
                pos = self.skip(pos + 1)
                continue
            if self.text.startswith("]", pos):
                return items, pos + 1
            raise self.fail(pos, "expected ',' or ']'")


def parse_json(text: str) -> Node:
    """The JSON document ``text`` as a tree; duplicate keys, ``NaN`` and ``Infinity`` refused."""
    return _JsonReader(text).document()


# --- YAML -----------------------------------------------------------------------------------

_YAML_MAP: Final = "tag:yaml.org,2002:map"
_YAML_SEQ: Final = "tag:yaml.org,2002:seq"


def _yaml_module() -> Any:
    try:
        # PyYAML ships no type information: its objects are Any here.
        import yaml  # type: ignore[import-untyped]  # noqa: PLC0415 (optional, imported late)
    except ImportError:
        raise DocumentError(
            "YAML policies need PyYAML: install bastion[yaml] (or write the policy as JSON "
            "or TOML, which need nothing)",
            line=None,
        ) from None
    return yaml


def _mark_line(error: Exception) -> int | None:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    line = getattr(mark, "line", None)
    return line + 1 if isinstance(line, int) else None


class _YamlReader:
    def __init__(self, yaml_mod: Any, loader: Any) -> None:
        self.yaml = yaml_mod
        self.loader = loader
        self.budget = MAX_NODES

    def node(self, node: Any, *, key_line: int | None, depth: int) -> Node:
        self.budget -= 1
        line = node.start_mark.line + 1
        if self.budget < 0:
            raise DocumentError(
                f"the document expands to more than {MAX_NODES} values (aliases?)", line=line
            )
        key_line = line if key_line is None else key_line
        if isinstance(node, self.yaml.ScalarNode):
            return Node(value=self.scalar(node), line=line, key_line=key_line)
        if depth >= MAX_DEPTH:
            raise DocumentError(f"nested deeper than {MAX_DEPTH} levels", line=line)
        if isinstance(node, self.yaml.SequenceNode):
            self.plain_tag(node, _YAML_SEQ, "a sequence")
            items = [self.node(item, key_line=None, depth=depth + 1) for item in node.value]
            return Node(value=items, line=line, key_line=key_line)
        self.plain_tag(node, _YAML_MAP, "a mapping")
        return Node(value=self.mapping(node, depth + 1), line=line, key_line=key_line)

    def plain_tag(self, node: Any, tag: str, kind: str) -> None:
        if node.tag != tag:
            raise DocumentError(
                f"the tag {_short_tag(node.tag)} is not allowed on {kind} "
                "(policies are plain data)",
                line=node.start_mark.line + 1,
            )

    def scalar(self, node: Any) -> Scalar:
        line = node.start_mark.line + 1
        try:
            value = self.loader.construct_object(node, deep=True)
        except self.yaml.YAMLError as exc:
            raise DocumentError(f"invalid YAML: {_yaml_problem(exc)}", line=line) from None
        return _check_scalar(value, line, "a YAML")

    def mapping(self, node: Any, depth: int) -> dict[str, Node]:
        try:
            self.loader.flatten_mapping(node)  # merge keys (<<) become plain pairs
        except self.yaml.YAMLError as exc:
            raise DocumentError(
                f"invalid YAML: {_yaml_problem(exc)}", line=_mark_line(exc)
            ) from None
        result: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            key = self.scalar(key_node) if isinstance(key_node, self.yaml.ScalarNode) else None
            if not isinstance(key, str):
                hint = " (quote it: YAML reads yes, no, on and off as booleans)"
                raise DocumentError(
                    f"a key must be a string, found {kind_of(key)}"
                    + (hint if isinstance(key, bool) else ""),
                    line=key_line,
                )
            if key in result:
                raise DocumentError(
                    f"duplicate key {key!r} (first on line {result[key].key_line})",
                    line=key_line,
                )
            result[key] = self.node(value_node, key_line=key_line, depth=depth)
        return result


def _short_tag(tag: object) -> str:
    return str(tag).replace("tag:yaml.org,2002:", "!!")


def _yaml_problem(exc: Exception) -> str:
    problem = getattr(exc, "problem", None)
    return str(problem) if problem else str(exc).splitlines()[0]


def parse_yaml(text: str) -> Node:
    """The YAML document ``text`` as a tree, read with PyYAML's safe loader only."""
    yaml = _yaml_module()
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except RecursionError:  # PyYAML composes nested collections recursively
            raise DocumentError(f"nested deeper than {MAX_DEPTH} levels", line=1) from None
        except yaml.YAMLError as exc:
            raise DocumentError(
                f"invalid YAML: {_yaml_problem(exc)}", line=_mark_line(exc)
            ) from None
        if root is None:
            raise DocumentError("the document is empty", line=1)
        return _YamlReader(yaml, loader).node(root, key_line=None, depth=0)
    finally:
        loader.dispose()


# --- TOML -----------------------------------------------------------------------------------

_TOML_AT: Final = re.compile(r"\(at line (\d+), column \d+\)")


def parse_toml(text: str) -> Node:
    """The TOML document ``text`` as a tree; lines come from a second pass over the text."""
    try:
        data = tomllib.loads(text)
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise DocumentError(f"nested deeper than {MAX_DEPTH} levels", line=1) from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_AT.search(message)
        line = int(match.group(1)) if match else text.count("\n") + 1
        raise DocumentError(
            f"invalid TOML: {_TOML_AT.sub('', message).strip()}", line=line
        ) from None
    lines = _toml_lines.key_lines(text)
    return _toml_node(data, (), lines.get, depth=0)


def _toml_node(
    value: object,
    path: tuple[str | int, ...],
    line_of: Callable[[tuple[str | int, ...]], int | None],
    *,
    depth: int,
) -> Node:
    line = _toml_line(path, line_of)
    if depth > MAX_DEPTH:
        raise DocumentError(f"nested deeper than {MAX_DEPTH} levels", line=line)
    if isinstance(value, dict):
        children = {
            str(key): _toml_node(item, (*path, str(key)), line_of, depth=depth + 1)
            for key, item in value.items()
        }
        return Node(value=children, line=line, key_line=line)
    if isinstance(value, list):
        items = [
            _toml_node(item, (*path, index), line_of, depth=depth + 1)
            for index, item in enumerate(value)
        ]
        return Node(value=items, line=line, key_line=line)
    return Node(value=_check_scalar(value, line, "a TOML"), line=line, key_line=line)


def _toml_line(
    path: tuple[str | int, ...], line_of: Callable[[tuple[str | int, ...]], int | None]
) -> int:
    """The recorded line of ``path``, else of its nearest recorded ancestor (else line 1)."""
    for end in range(len(path), 0, -1):
        line = line_of(path[:end])
        if line is not None:
            return line
    return 1
