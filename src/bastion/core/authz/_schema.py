"""The schema walk of a policy document: a :class:`~._documents.Node` tree in, a validated
:class:`DocumentSpec` out, every mistake a :class:`~._documents.DocumentError` at its line.

The specs keep the line of every text so that the loader can still name the line when the
model (``Permission.parse``, ``Role``, ``Rule``, ``Condition``, ``Policy``) refuses a value. The
document's shapes are described in :mod:`bastion.core.authz.loader`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from bastion.core.authz import _documents
from bastion.core.authz._documents import DocumentError, Node, Scalar

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

__all__ = [
    "OPERATORS",
    "ConditionSpec",
    "DocumentSpec",
    "GroupSpec",
    "LeafSpec",
    "RoleSpec",
    "RuleSpec",
    "Text",
    "read_tree",
]

OPERATORS: Final = (
    "equals",
    "not_equals",
    "contains",
    "in",
    "not_in",
    "greater_than",
    "less_than",
    "greater_or_equal",
    "less_or_equal",
    "starts_with",
)
_ORDERED: Final = frozenset({"greater_than", "less_than", "greater_or_equal", "less_or_equal"})

_ROOTS: Final = ("subject", "resource", "context")
_REF_SHAPE: Final = re.compile(r"(?:subject|resource|context)\.\S+")
"""A guide-format string value of this shape is an attribute reference (and must parse as one)."""

_TOP_KEYS: Final = ("max_depth", "name", "policies", "roles", "rules")
_ROLE_KEYS: Final = ("description", "inherits", "permissions")
_RULE_KEYS: Final = ("action", "actions", "description", "effect", "name", "resource", "roles")
_LEAF_KEYS: Final = ("attribute", "operator", "value")
_GUIDE_ONLY: Final = {
    "conditions": "a list of 'conditions' belongs to the guide's format, under 'policies'; "
    "a rule under 'rules' takes 'when' (with 'all', 'any', 'not')",
}
_BASTION_ONLY: Final = {
    "when": "'when' belongs to bastion's format, under 'rules'; a rule under 'policies' takes "
    "a list of 'conditions'",
}


# --- the validated intermediate structure ---------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Text:
    """A string of the document and its line."""

    value: str
    line: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RoleSpec:
    name: Text
    permissions: tuple[Text, ...]
    inherits: tuple[Text, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class LeafSpec:
    """One ``attribute operator value`` test; ``value`` is a literal or a :class:`Text` ref."""

    attribute: Text
    operator: Text
    value: Scalar | tuple[Scalar, ...] | Text
    line: int
    value_line: int
    setting: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupSpec:
    kind: Literal["all", "any", "not"]
    items: tuple[ConditionSpec, ...]
    line: int
    setting: str


ConditionSpec = LeafSpec | GroupSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleSpec:
    name: Text
    effect: Text
    actions: tuple[Text, ...]
    resource: Text | None
    roles: tuple[Text, ...]
    when: ConditionSpec | None
    line: int
    setting: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DocumentSpec:
    name: str
    max_depth: int | None
    roles: tuple[RoleSpec, ...]
    rules: tuple[RuleSpec, ...]
    line: int
    lines: Mapping[str, int]
    """The line of each top-level key."""


# --- reading the tree -----------------------------------------------------------------------


def _kind(node: Node) -> str:
    value = node.value
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    return _documents.kind_of(value)


class _Reader:
    """The schema walk: a :class:`Node` tree in, a :class:`DocumentSpec` out."""

    def fail(self, line: int | None, setting: str, message: str) -> DocumentError:
        return DocumentError(message, line=line, setting=setting)

    def mapping(
        self,
        node: Node,
        setting: str,
        keys: Sequence[str],
        required: Sequence[str] = (),
        elsewhere: Mapping[str, str] | None = None,
    ) -> dict[str, Node]:
        """The children of a mapping node; ``elsewhere`` explains keys of the other format."""
        value = node.value
        if not isinstance(value, dict):
            raise self.fail(node.line, setting, f"{setting} must be a mapping, got {_kind(node)}")
        for key, child in value.items():
            if key not in keys:
                close = difflib.get_close_matches(key, [*keys, *(elsewhere or ())], n=1)
                if close and elsewhere and close[0] in elsewhere:
                    raise self.fail(
                        child.key_line,
                        f"{setting}.{key}",
                        f"unknown key {key!r} in {setting}: {elsewhere[close[0]]}",
                    )
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise self.fail(
                    child.key_line,
                    f"{setting}.{key}",
                    f"unknown key {key!r} in {setting} ({hint}expected one of: {', '.join(keys)})",
                )
        for key in required:
            if key not in value:
                raise self.fail(node.line, f"{setting}.{key}", f"{setting} needs the key {key!r}")
        return value

    def text(self, node: Node, setting: str) -> Text:
        if not isinstance(node.value, str):
            raise self.fail(node.line, setting, f"{setting} must be a string, got {_kind(node)}")
        return Text(value=node.value, line=node.line)

    def texts(self, node: Node, setting: str, *, single: bool = False) -> tuple[Text, ...]:
        if single and isinstance(node.value, str):
            return (Text(value=node.value, line=node.line),)
        if not isinstance(node.value, list):
            wanted = "a string or a list of strings" if single else "a list of strings"
            raise self.fail(node.line, setting, f"{setting} must be {wanted}, got {_kind(node)}")
        return tuple(self.text(item, f"{setting}[{i}]") for i, item in enumerate(node.value))

    def items(self, node: Node, setting: str) -> Iterator[tuple[str, Node]]:
        if not isinstance(node.value, list):
            raise self.fail(node.line, setting, f"{setting} must be a list, got {_kind(node)}")
        for index, item in enumerate(node.value):
            yield f"{setting}[{index}]", item

    # --- the document -----------------------------------------------------------------------

    def document(self, root: Node) -> DocumentSpec:
        top = self.mapping(root, "the policy", _TOP_KEYS)
        name = self.text(top["name"], "name").value if "name" in top else "policy"
        max_depth = None
        if "max_depth" in top:
            depth = top["max_depth"]
            if isinstance(depth.value, bool) or not isinstance(depth.value, int):
                raise self.fail(
                    depth.line, "max_depth", f"max_depth must be a whole number, got {_kind(depth)}"
                )
            max_depth = depth.value
        roles = self.roles(top["roles"]) if "roles" in top else ()
        rules = [
            *(self.rule(s, n, guide=False) for s, n in self.section(top, "rules")),
            *(self.rule(s, n, guide=True) for s, n in self.section(top, "policies")),
        ]
        if not roles and not rules:
            raise self.fail(root.line, "the policy", "the policy defines no roles and no rules")
        seen: dict[str, RuleSpec] = {}
        for rule in rules:
            first = seen.setdefault(rule.name.value, rule)
            if first is not rule:
                raise self.fail(
                    rule.name.line,
                    f"{rule.setting}.name",
                    f"rule name {rule.name.value!r} is used twice (first on line "
                    f"{first.name.line}); names tell decisions apart",
                )
        self.check_role_refs(roles, rules)
        return DocumentSpec(
            name=name,
            max_depth=max_depth,
            roles=roles,
            rules=tuple(rules),
            line=root.line,
            lines={key: node.key_line for key, node in top.items()},
        )

    def section(self, top: dict[str, Node], key: str) -> Iterator[tuple[str, Node]]:
        return self.items(top[key], key) if key in top else iter(())

    def roles(self, node: Node) -> tuple[RoleSpec, ...]:
        value = node.value
        if not isinstance(value, dict):
            raise self.fail(
                node.line, "roles", f"roles must be a mapping of role names, got {_kind(node)}"
            )
        specs = []
        for role, body in value.items():
            setting = f"roles.{role}"
            fields = {} if body.value is None else self.mapping(body, setting, _ROLE_KEYS)
            if "description" in fields:
                self.text(fields["description"], f"{setting}.description")
            specs.append(
                RoleSpec(
                    name=Text(value=role, line=body.key_line),
                    permissions=self.texts(fields["permissions"], f"{setting}.permissions")
                    if "permissions" in fields
                    else (),
                    inherits=self.texts(fields["inherits"], f"{setting}.inherits", single=True)
                    if "inherits" in fields
                    else (),
                )
            )
        return tuple(specs)

    def rule(self, setting: str, node: Node, *, guide: bool) -> RuleSpec:
        keys = (*_RULE_KEYS, "conditions" if guide else "when")
        other = _GUIDE_ONLY if not guide else _BASTION_ONLY
        fields = self.mapping(node, setting, sorted(keys), ("name", "effect"), other)
        if "action" in fields and "actions" in fields:
            raise self.fail(
                fields["action"].key_line,
                f"{setting}.action",
                f"{setting} has both 'action' and 'actions': write one",
            )
        actions: tuple[Text, ...]
        if "action" in fields:
            actions = (self.text(fields["action"], f"{setting}.action"),)
        elif "actions" in fields:
            actions = self.texts(fields["actions"], f"{setting}.actions")
        else:
            raise self.fail(node.line, f"{setting}.actions", f"{setting} needs 'actions'")
        if not actions:
            raise self.fail(
                fields["actions"].line, f"{setting}.actions", f"{setting}.actions is empty"
            )
        effect = self.text(fields["effect"], f"{setting}.effect")
        if effect.value not in ("allow", "deny"):
            raise self.fail(
                effect.line,
                f"{setting}.effect",
                f'{setting}.effect must be "allow" or "deny", got {effect.value!r}',
            )
        if "description" in fields:
            self.text(fields["description"], f"{setting}.description")
        when: ConditionSpec | None = None
        if "when" in fields:
            when = self.condition(fields["when"], f"{setting}.when", guide=False)
        elif "conditions" in fields:
            when = self.guide_conditions(fields["conditions"], f"{setting}.conditions")
        return RuleSpec(
            name=self.text(fields["name"], f"{setting}.name"),
            effect=effect,
            actions=actions,
            resource=self.text(fields["resource"], f"{setting}.resource")
            if "resource" in fields
            else None,
            roles=self.texts(fields["roles"], f"{setting}.roles", single=True)
            if "roles" in fields
            else (),
            when=when,
            line=node.line,
            setting=setting,
        )

    # --- conditions -------------------------------------------------------------------------

    def guide_conditions(self, node: Node, setting: str) -> ConditionSpec:
        leaves = tuple(self.leaf(item, s, guide=True) for s, item in self.items(node, setting))
        if not leaves:
            raise self.fail(
                node.line,
                setting,
                f"{setting} is empty (omit it for a rule without conditions)",
            )
        if len(leaves) == 1:
            return leaves[0]
        return GroupSpec(kind="all", items=leaves, line=node.line, setting=setting)

    def condition(self, node: Node, setting: str, *, guide: bool) -> ConditionSpec:
        value = node.value
        groups = ("all", "any", "not")
        if isinstance(value, dict) and any(key in value for key in groups):
            fields = self.mapping(node, setting, groups)
            if len(fields) != 1:
                raise self.fail(
                    node.line,
                    setting,
                    f"{setting} must hold exactly one of 'all', 'any', 'not' (nest them)",
                )
            ((kind, inner),) = fields.items()
            if kind == "not":
                item = self.condition(inner, f"{setting}.not", guide=guide)
                return GroupSpec(
                    kind="not", items=(item,), line=inner.key_line, setting=f"{setting}.not"
                )
            items = tuple(
                self.condition(item, s, guide=guide)
                for s, item in self.items(inner, f"{setting}.{kind}")
            )
            if not items:
                raise self.fail(
                    inner.line, f"{setting}.{kind}", f"{setting}.{kind} needs a condition"
                )
            return GroupSpec(
                kind="all" if kind == "all" else "any",
                items=items,
                line=inner.key_line,
                setting=f"{setting}.{kind}",
            )
        return self.leaf(node, setting, guide=guide)

    def leaf(self, node: Node, setting: str, *, guide: bool) -> LeafSpec:
        fields = self.mapping(node, setting, _LEAF_KEYS, required=_LEAF_KEYS)
        attribute = self.reference(fields["attribute"], f"{setting}.attribute")
        operator = self.text(fields["operator"], f"{setting}.operator")
        if operator.value not in OPERATORS:
            close = difflib.get_close_matches(operator.value, OPERATORS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise self.fail(
                operator.line,
                f"{setting}.operator",
                f"unknown operator {operator.value!r} in {setting} ({hint}expected one of: "
                f"{', '.join(OPERATORS)})",
            )
        value = self.operand(fields["value"], f"{setting}.value", guide=guide)
        if not isinstance(value, Text):
            self.check_operand(operator.value, value, fields["value"], f"{setting}.value")
        return LeafSpec(
            attribute=attribute,
            operator=operator,
            value=value,
            line=node.line,
            value_line=fields["value"].line,
            setting=setting,
        )

    def reference(self, node: Node, setting: str) -> Text:
        ref = self.text(node, setting)
        root, _, path = ref.value.partition(".")
        if root not in _ROOTS or not path:
            raise self.fail(
                ref.line,
                setting,
                f"{setting} {ref.value!r} is not an attribute reference (expected "
                "subject.<name>, resource.<name> or context.<name>)",
            )
        return ref

    def operand(
        self, node: Node, setting: str, *, guide: bool
    ) -> Scalar | tuple[Scalar, ...] | Text:
        value = node.value
        if isinstance(value, dict):
            fields = self.mapping(node, setting, ("literal", "ref"))
            if len(fields) != 1:
                raise self.fail(node.line, setting, f"{setting} needs one of 'ref' or 'literal'")
            if "ref" in fields:
                return self.reference(fields["ref"], f"{setting}.ref")
            return self.literal(fields["literal"], f"{setting}.literal")
        if guide and isinstance(value, str) and _REF_SHAPE.fullmatch(value):
            return self.reference(node, setting)
        return self.literal(node, setting)

    def literal(self, node: Node, setting: str) -> Scalar | tuple[Scalar, ...]:
        value = node.value
        if isinstance(value, list):
            items = []
            for index, item in enumerate(value):
                if isinstance(item.value, dict | list):
                    raise self.fail(
                        item.line,
                        f"{setting}[{index}]",
                        f"{setting}[{index}] must be a string, number or boolean, got "
                        f"{_kind(item)}",
                    )
                items.append(item.value)
            return tuple(items)
        if isinstance(value, dict):
            raise self.fail(node.line, setting, f"{setting} must be a literal, got a mapping")
        return value

    def check_operand(
        self, operator: str, value: Scalar | tuple[Scalar, ...], node: Node, setting: str
    ) -> None:
        def kind_ok(ok: bool, wanted: str) -> None:
            if not ok:
                raise self.fail(
                    node.line,
                    setting,
                    f"{setting} for {operator} must be {wanted}, got {_kind(node)}",
                )

        number_or_text = isinstance(value, int | float | str) and not isinstance(value, bool)
        if operator in _ORDERED:
            kind_ok(number_or_text, "a number or a string")
        elif operator == "starts_with":
            kind_ok(isinstance(value, str), "a string")
        elif operator in ("in", "not_in"):
            kind_ok(isinstance(value, tuple | str), "a list or a string")
        elif operator == "contains":
            kind_ok(
                not isinstance(value, tuple) and value is not None, "a string, number or boolean"
            )

    # --- roles named by the document --------------------------------------------------------

    def check_role_refs(self, roles: Sequence[RoleSpec], rules: Sequence[RuleSpec]) -> None:
        known = {role.name.value: role for role in roles}
        for role in roles:
            for parent in role.inherits:
                if parent.value not in known:
                    raise self.unknown_role(parent, f"roles.{role.name.value}.inherits", known)
        for rule in rules:
            for name in rule.roles:
                if name.value not in known:
                    raise self.unknown_role(name, f"{rule.setting}.roles", known)
        self.check_cycles(roles, known)

    def unknown_role(self, name: Text, setting: str, known: dict[str, RoleSpec]) -> DocumentError:
        close = difflib.get_close_matches(name.value, list(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        defined = ", ".join(sorted(known)) or "none"
        return self.fail(
            name.line,
            setting,
            f"{setting} names the unknown role {name.value!r}{hint}; roles defined: {defined}",
        )

    def check_cycles(self, roles: Sequence[RoleSpec], known: dict[str, RoleSpec]) -> None:
        """Depth-first in document order; the edge that reaches a role on the path closes it."""
        done: set[str] = set()
        for start in roles:
            if start.name.value in done:
                continue
            path: list[str] = [start.name.value]
            stack: list[Iterator[Text]] = [iter(start.inherits)]
            while stack:
                parent = next(stack[-1], None)
                if parent is None:
                    done.add(path.pop())
                    stack.pop()
                    continue
                if parent.value in path:
                    cycle = [*path[path.index(parent.value) :], parent.value]
                    raise self.fail(
                        parent.line,
                        f"roles.{path[-1]}.inherits",
                        f"role {path[-1]!r} inherits {parent.value!r}, which closes the cycle "
                        f"{' -> '.join(cycle)}",
                    )
                if parent.value not in done:
                    path.append(parent.value)
                    stack.append(iter(known[parent.value].inherits))


def read_tree(root: Node) -> DocumentSpec:
    """The validated structure of the document ``root``."""
    return _Reader().document(root)
