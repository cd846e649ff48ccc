"""ABAC conditions: data that is compiled once into closures, and never executes code.

A :class:`Condition` compares one attribute reference (``resource.owner_id``) with a literal
or with another reference (``subject.id``: ``resource.owner_id equals subject.id`` means what
it says, unlike the guide's code, which compared with the literal text ``"resource.owner_id"``).
:class:`AllOf`, :class:`AnyOf` and :class:`Not` combine them. References only index mappings
and the fixed fields of :class:`~bastion.core.authz.subjects.Subject` and ``Resource``: never
``getattr`` on an app object, never a dunder, never a call.

Types are strict, so that a value stored the wrong way fails loudly instead of flipping a
decision: a bool is never a number (``True`` does not equal ``1``), ordering compares two
numbers or two texts only, ``contains``/``in``/``not_in`` take a text or a list/tuple/set,
``None`` equals only ``None``. A missing attribute, a wrong type or a NaN raises
:class:`ConditionError`, which the policy turns into a deny with reason ``condition_error``.

Evaluation order (the query-filter builder relies on it): :class:`AllOf` evaluates its items
left to right and stops at the first false one, :class:`AnyOf` stops at the first true one;
an error met before stopping propagates; :class:`Not` propagates its item's error.
"""

from __future__ import annotations

import enum
import json
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias, cast

from bastion.core.authz.subjects import Resource, Subject
from bastion.errors import BastionError, ConfigurationError

__all__ = [
    "AllOf",
    "AnyOf",
    "Compiled",
    "Condition",
    "ConditionError",
    "Expression",
    "Not",
    "Operator",
    "Ref",
    "Test",
    "compile_condition",
]

Root = Literal["subject", "resource", "context"]
_ROOTS: Final = ("subject", "resource", "context")
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*", re.ASCII)
MAX_PATH: Final = 8
_SEQUENCES: Final = (list, tuple, set, frozenset)


class ConditionError(BastionError):
    """A condition could not be evaluated (missing attribute, wrong type, NaN).

    ``condition`` is the condition's text, ``why`` what went wrong (never a value: values may
    be personal data).
    """

    def __init__(self, condition: str, why: str) -> None:
        super().__init__(f"{condition}: {why}")
        self.condition = condition
        self.why = why


class Operator(enum.StrEnum):
    """The comparison of one :class:`Condition`."""

    EQUALS = "equals"
    NOT_EQUALS = "not_equals"
    CONTAINS = "contains"
    IN = "in"
    NOT_IN = "not_in"
    GREATER_THAN = "greater_than"
    LESS_THAN = "less_than"
    GREATER_OR_EQUAL = "greater_or_equal"
    LESS_OR_EQUAL = "less_or_equal"
    STARTS_WITH = "starts_with"


_ORDERING: Final[dict[Operator, Callable[[Any, Any], Any]]] = {
    Operator.GREATER_THAN: operator.gt,
    Operator.LESS_THAN: operator.lt,
    Operator.GREATER_OR_EQUAL: operator.ge,
    Operator.LESS_OR_EQUAL: operator.le,
}


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference to an attribute: ``root`` then a path of names (``resource.owner_id`` is
    ``Ref("resource", ("owner_id",))``)."""

    root: Root
    path: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.root not in _ROOTS:
            raise ConfigurationError(
                f"attribute reference must start with subject, resource or context, "
                f"got {self.root!r:.40}",
                setting="condition.attribute",
            )
        path = tuple(self.path) if isinstance(self.path, list | tuple) else None
        if not path or len(path) > MAX_PATH:
            raise ConfigurationError(
                f"attribute reference {self.root} needs 1 to {MAX_PATH} names after the root",
                setting="condition.attribute",
            )
        for name in path:
            if not isinstance(name, str) or not _NAME.fullmatch(name) or name.startswith("__"):
                raise ConfigurationError(
                    f"attribute reference {self.root}.{name!s:.40} is not a plain name "
                    f"([A-Za-z_][A-Za-z0-9_-]*, no dunder)",
                    setting="condition.attribute",
                )
        object.__setattr__(self, "path", path)

    @classmethod
    def parse(cls, text: object, *, setting: str = "condition.attribute") -> Ref:
        """Read ``"resource.owner_id"``; anything else is a ConfigurationError."""
        if not isinstance(text, str) or "." not in text:
            raise ConfigurationError(
                f"{setting} must be 'subject.<name>', 'resource.<name>' or 'context.<name>', "
                f"got {text!r:.80}",
                setting=setting,
            )
        root, *path = text.split(".")
        return cls(cast("Root", root), tuple(path))

    def __str__(self) -> str:
        return ".".join((self.root, *self.path))


def _literal_text(value: object) -> str:
    if isinstance(value, Ref):
        return str(value)
    if isinstance(value, set | frozenset):
        value = sorted(value, key=repr)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_literal_text(v) for v in value) + "]"
    return json.dumps(value)


def _literal_ok(value: object) -> bool:
    if value is None or isinstance(value, bool | str | int):
        return True
    return isinstance(value, float) and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class Condition:
    """``attribute operator value``: ``value`` is a literal (text, number, bool, None, or a
    list of those for ``in``/``not_in``) or a :class:`Ref`. Texts and strings are accepted for
    ``attribute`` and ``operator`` and parsed."""

    attribute: Ref
    operator: Operator
    value: object = None

    def __post_init__(self) -> None:
        if not isinstance(self.attribute, Ref):
            object.__setattr__(self, "attribute", Ref.parse(self.attribute))
        try:
            object.__setattr__(self, "operator", Operator(self.operator))
        except ValueError:
            raise ConfigurationError(
                f"condition operator must be one of {', '.join(Operator)}, "
                f"got {self.operator!r:.40}",
                setting="condition.operator",
            ) from None
        value, op = self.value, self.operator
        if isinstance(value, Ref):
            return
        if isinstance(value, _SEQUENCES):
            if op not in (Operator.IN, Operator.NOT_IN):
                raise ConfigurationError(
                    f"{self.attribute} {op}: a list value needs in or not_in",
                    setting="condition.value",
                )
            items = tuple(value)
            if not all(_literal_ok(v) for v in items):
                raise ConfigurationError(
                    f"{self.attribute} {op}: list items must be text, numbers, booleans or "
                    f"null (finite numbers)",
                    setting="condition.value",
                )
            object.__setattr__(self, "value", items)
            return
        if not _literal_ok(value):
            raise ConfigurationError(
                f"{self.attribute} {op}: value must be text, a finite number, a boolean, "
                f"null, a list or a reference, got {type(value).__name__}",
                setting="condition.value",
            )
        if op in (Operator.IN, Operator.NOT_IN) and not isinstance(value, str):
            raise ConfigurationError(
                f"{self.attribute} {op}: value must be a list, a text or a reference",
                setting="condition.value",
            )
        if op in _ORDERING and (_kind(value) not in ("number", "str")):
            raise ConfigurationError(
                f"{self.attribute} {op}: value must be a number or a text",
                setting="condition.value",
            )
        if op is Operator.STARTS_WITH and not isinstance(value, str):
            raise ConfigurationError(
                f"{self.attribute} starts_with: value must be a text", setting="condition.value"
            )

    def __str__(self) -> str:
        return f"{self.attribute} {self.operator} {_literal_text(self.value)}"


def _items(name: str, items: object) -> tuple[Expression, ...]:
    if isinstance(items, str) or not isinstance(items, list | tuple):
        raise ConfigurationError(f"{name} takes a list of conditions", setting="condition")
    out = tuple(items)
    if not out:
        raise ConfigurationError(f"{name} needs at least one condition", setting="condition")
    for item in out:
        if not isinstance(item, Condition | AllOf | AnyOf | Not):
            raise ConfigurationError(
                f"{name} items must be conditions, got {type(item).__name__}",
                setting="condition",
            )
    return out


@dataclass(frozen=True, slots=True)
class AllOf:
    """True when every item is true (left to right, stops at the first false one)."""

    items: tuple[Expression, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", _items("all", self.items))

    def __str__(self) -> str:
        return "(" + " and ".join(map(str, self.items)) + ")"


@dataclass(frozen=True, slots=True)
class AnyOf:
    """True when some item is true (left to right, stops at the first true one)."""

    items: tuple[Expression, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", _items("any", self.items))

    def __str__(self) -> str:
        return "(" + " or ".join(map(str, self.items)) + ")"


@dataclass(frozen=True, slots=True)
class Not:
    """True when the item is false (an error stays an error)."""

    item: Expression

    def __post_init__(self) -> None:
        _items("not", (self.item,))

    def __str__(self) -> str:
        return f"not {self.item}"


Expression: TypeAlias = Condition | AllOf | AnyOf | Not
Test = Callable[[Subject, "Resource | None", Mapping[str, object]], bool]
Getter = Callable[[Subject, "Resource | None", Mapping[str, object]], object]


@dataclass(frozen=True, slots=True)
class Compiled:
    """A compiled expression: ``test(subject, resource, context)`` returns a bool or raises
    :class:`ConditionError`. ``source`` is the expression it was compiled from (data, for
    the query-filter builder), ``text`` its readable form."""

    source: Expression
    text: str
    test: Test

    def __call__(
        self, subject: Subject, resource: Resource | None, context: Mapping[str, object]
    ) -> bool:
        return self.test(subject, resource, context)


_MISSING: Final = object()


def _kind(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, _SEQUENCES):
        return "sequence"
    return "other"


def _getter(ref: Ref, text: str) -> Getter:
    first, rest = ref.path[0], ref.path[1:]

    def walk(value: object) -> object:
        for name in rest:
            if not isinstance(value, Mapping):
                raise ConditionError(text, f"{ref} is not reachable: a step is not a mapping")
            value = value.get(name, _MISSING)
            if value is _MISSING:
                raise ConditionError(text, f"{ref} is missing")
        return value

    if ref.root == "subject":

        def from_subject(s: Subject, _r: Resource | None, _c: Mapping[str, object]) -> object:
            value = s.attributes.get(first, _MISSING)
            if value is _MISSING:
                if first == "id":
                    value = s.id
                elif first == "roles":
                    value = s.roles
                else:
                    raise ConditionError(text, f"{ref} is missing")
            return walk(value) if rest else value

        return from_subject

    if ref.root == "resource":

        def from_resource(_s: Subject, r: Resource | None, _c: Mapping[str, object]) -> object:
            if r is None:
                raise ConditionError(text, f"{ref} is asked but there is no resource")
            value = r.attributes.get(first, _MISSING)
            if value is _MISSING:
                if first not in ("id", "type", "owner", "owner_id", "tenant"):
                    raise ConditionError(text, f"{ref} is missing")
                value = r.field(first)
            return walk(value) if rest else value

        return from_resource

    def from_context(_s: Subject, _r: Resource | None, c: Mapping[str, object]) -> object:
        value = c.get(first, _MISSING)
        if value is _MISSING:
            raise ConditionError(text, f"{ref} is missing")
        return walk(value) if rest else value

    return from_context


def _scalar(text: str, value: object, side: str) -> str:
    kind = _kind(value)
    if kind in ("sequence", "other"):
        raise ConditionError(text, f"{side} is a {type(value).__name__}, not a single value")
    if kind == "number" and isinstance(value, float) and math.isnan(value):
        raise ConditionError(text, f"{side} is NaN")
    return kind


def _same(a: object, b: object) -> bool:
    """Strict equality of two scalars: kinds must match (True is not 1)."""
    return _kind(a) == _kind(b) and a == b


def _member(text: str, element: object, container: object, side: str) -> bool:
    _scalar(text, element, "the element")
    if isinstance(container, str):
        if not isinstance(element, str):
            raise ConditionError(text, f"{side} is a text, the element is not")
        return element in container
    if not isinstance(container, _SEQUENCES):
        raise ConditionError(text, f"{side} is a {type(container).__name__}, not a text or a list")
    return any(_same(item, element) for item in container)


def _compare(c: Condition, text: str) -> Test:
    left = _getter(c.attribute, text)
    value = c.value
    right: Getter
    if isinstance(value, Ref):
        right = _getter(value, text)
    else:

        def right(_s: Subject, _r: Resource | None, _x: Mapping[str, object]) -> object:
            return value

    op = c.operator

    if op in (Operator.EQUALS, Operator.NOT_EQUALS):
        want = op is Operator.EQUALS

        def test(s: Subject, r: Resource | None, x: Mapping[str, object]) -> bool:
            a, b = left(s, r, x), right(s, r, x)
            ka, kb = _scalar(text, a, "the attribute"), _scalar(text, b, "the value")
            if ka != kb:
                raise ConditionError(text, f"compares a {ka} with a {kb}")
            return (a == b) is want

    elif op is Operator.CONTAINS:

        def test(s: Subject, r: Resource | None, x: Mapping[str, object]) -> bool:
            return _member(text, right(s, r, x), left(s, r, x), "the attribute")

    elif op in (Operator.IN, Operator.NOT_IN):
        want = op is Operator.IN

        def test(s: Subject, r: Resource | None, x: Mapping[str, object]) -> bool:
            return _member(text, left(s, r, x), right(s, r, x), "the value") is want

    elif op is Operator.STARTS_WITH:

        def test(s: Subject, r: Resource | None, x: Mapping[str, object]) -> bool:
            a, b = left(s, r, x), right(s, r, x)
            if not isinstance(a, str) or not isinstance(b, str):
                raise ConditionError(text, "starts_with needs two texts")
            return a.startswith(b)

    else:
        order = _ORDERING[op]

        def test(s: Subject, r: Resource | None, x: Mapping[str, object]) -> bool:
            a, b = left(s, r, x), right(s, r, x)
            ka, kb = _scalar(text, a, "the attribute"), _scalar(text, b, "the value")
            if ka != kb or ka not in ("number", "str"):
                raise ConditionError(text, f"orders a {ka} against a {kb}")
            return bool(order(a, b))

    return test


def _build(expr: Expression) -> Test:
    if isinstance(expr, Condition):
        return _compare(expr, str(expr))
    if isinstance(expr, Not):
        inner = _build(expr.item)
        return lambda s, r, x: not inner(s, r, x)
    parts = tuple(_build(item) for item in expr.items)
    if isinstance(expr, AllOf):
        return lambda s, r, x: all(p(s, r, x) for p in parts)
    return lambda s, r, x: any(p(s, r, x) for p in parts)


def compile_condition(expression: Expression) -> Compiled:
    """Compile ``expression`` once into a closure tree (no ``eval``, no attribute access on
    app objects). A ConfigurationError if it is not an expression."""
    if not isinstance(expression, Condition | AllOf | AnyOf | Not):
        raise ConfigurationError(
            f"a rule condition must be a Condition, AllOf, AnyOf or Not, "
            f"got {type(expression).__name__}",
            setting="condition",
        )
    return Compiled(source=expression, text=str(expression), test=_build(expression))
