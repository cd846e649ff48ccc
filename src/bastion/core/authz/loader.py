"""Policies written as data (JSON, YAML, TOML), validated with errors that name the line.

:func:`load_policy` takes the text of a document and returns a :class:`~.policy.Policy`; it
reads no file (``bastion.authz.files`` does). Two shapes load, in any of the three formats, and
may be combined in one document:

bastion's format::

    {"roles": {"admin": {"inherits": ["moderator"], "permissions": ["users:*"]}},
     "rules": [{"name": "owner-writes", "effect": "allow", "resource": "document",
                "actions": ["write"],
                "when": {"all": [{"attribute": "resource.locked", "operator": "equals",
                                  "value": false},
                                 {"attribute": "subject.id", "operator": "equals",
                                  "value": {"ref": "resource.owner_id"}}]}}]}

``when`` nests ``{"all": [...]}``, ``{"any": [...]}`` and ``{"not": {...}}`` around conditions
``{"attribute", "operator", "value"}``. A ``value`` is a literal, ``{"ref": "subject.id"}`` (the
value of another attribute) or ``{"literal": ...}`` (a literal written explicitly).

the guide's format, loaded as it is written::

    {"policies": [{"name": "document_access", "effect": "allow", "resource": "document",
                   "actions": ["read"],
                   "conditions": [{"attribute": "resource.owner_id", "operator": "equals",
                                   "value": "subject.id"}]}]}

``conditions`` is a list that must all hold, and a string ``value`` that reads
``subject.<path>``, ``resource.<path>`` or ``context.<path>`` is a reference to that attribute,
as the guide intends (its own engine compared against the literal text, so owners were never
allowed). A literal string of that shape therefore cannot be written plainly in the guide's
format: write ``{"literal": "subject.id"}``. ``"action": "read"`` is accepted for
``"actions": ["read"]``.

The keys, all optional but at least one role or rule:

- top level: ``name`` (the policy's name), ``max_depth`` (longest role chain), ``roles``,
  ``rules``, ``policies``;
- a role (``roles.<name>``, or null for an empty role): ``permissions`` (permission texts),
  ``inherits`` (role names, or one name), ``description``;
- a rule: ``name`` and ``effect`` (``allow`` or ``deny``) required; ``actions`` (or
  ``action``): bare actions of ``resource`` or whole permission texts; ``resource`` (a type);
  ``roles`` (the rule applies to holders of one of them; anyone when absent); ``description``;
  ``when`` (bastion's format) or ``conditions`` (the guide's).

In TOML, roles are tables (``[roles.admin]``), rules arrays of tables (``[[rules]]``), and a
``when`` an inline table or a ``[rules.when]`` table. YAML anchors, aliases and merge keys work
(the number of values an alias may expand to is bounded).

Every mistake is a :class:`PolicyError` whose message starts ``"<source> line N: "`` and names
the key and what was expected: unknown keys (a typo never silently drops a rule), duplicate
keys, wrong types, unknown effects and operators, bad permission text, references to unknown
roles, a role cycle (at the role that closes it), an over-deep role chain, a bad attribute
reference. Conditions are data: nothing in a document can name code to run (YAML is read with
PyYAML's safe loader, and a tag that is not plain data, such as ``!!python/object``, is
refused at its line).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final, Literal, TypeVar

from bastion.core.authz import _documents, _schema
from bastion.core.authz._documents import DocumentError
from bastion.core.authz.conditions import AllOf, AnyOf, Condition, Expression, Not, Operator, Ref
from bastion.core.authz.permission import Permission
from bastion.core.authz.policy import Effect, Policy, Rule
from bastion.core.authz.roles import Role
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.core.authz._schema import ConditionSpec, DocumentSpec, RoleSpec, RuleSpec, Text

__all__ = ["Format", "PolicyError", "load_policy"]

Format = Literal["json", "yaml", "toml"]

_PARSERS: Final = {
    "json": _documents.parse_json,
    "yaml": _documents.parse_yaml,
    "toml": _documents.parse_toml,
}

T = TypeVar("T")

_CHAIN: Final = re.compile(r"role chain ([^ ]+) ->")


class PolicyError(ConfigurationError):
    """A policy document is malformed: ``source`` and ``line`` (1-based) say where.

    ``line`` is ``None`` only when no line applies (PyYAML missing for a YAML document).
    ``setting`` is the path of the key at fault (``rules[2].when.operator``), ``detail`` the
    message without its ``"<source> line N: "`` prefix.
    """

    def __init__(
        self, message: str, *, source: str, line: int | None, setting: str | None = None
    ) -> None:
        where = source if line is None else f"{source} line {line}"
        super().__init__(f"{where}: {message}", setting=setting)
        self.source = source
        self.line = line
        self.detail = message


def load_policy(text: str, *, format: Format, source: str) -> Policy:  # noqa: A002 (the format's name)
    """The :class:`~bastion.core.authz.policy.Policy` written in ``text``.

    ``source`` names the document in messages (a file path, ``"<settings>"``). Every mistake is
    a :class:`PolicyError` naming its line; nothing is loaded partially.
    """
    spec = read_document(text, format=format, source=source)
    return _Builder(source, spec).policy()


def read_document(text: str, *, format: Format, source: str) -> DocumentSpec:  # noqa: A002
    """The validated structure of a policy document, before the model objects are built."""
    if format not in _PARSERS:
        raise ConfigurationError(
            f"policy format must be one of json, yaml, toml, got {format!r}", setting="format"
        )
    try:
        return _schema.read_tree(_PARSERS[format](text))
    except DocumentError as exc:
        raise PolicyError(exc.message, source=source, line=exc.line, setting=exc.setting) from None


class _Builder:
    """The model objects of a validated document; a refusal by the model gets the line."""

    def __init__(self, source: str, spec: DocumentSpec) -> None:
        self.source = source
        self.spec = spec

    def fail(self, line: int, setting: str, exc: ConfigurationError) -> PolicyError:
        """The model's refusal at ``line``, its message led by the document's key path."""
        message = str(exc)
        if not message.startswith(setting):
            message = f"{setting}: {message}"
        return PolicyError(message, source=self.source, line=line, setting=setting)

    def policy(self) -> Policy:
        spec = self.spec
        roles = tuple(self.role(role) for role in spec.roles)
        rules = tuple(self.rule(rule) for rule in spec.rules)
        options: dict[str, int] = {} if spec.max_depth is None else {"max_depth": spec.max_depth}
        try:
            return Policy(roles=roles, rules=rules, name=spec.name, **options)
        except ConfigurationError as exc:
            raise self.fail(self.policy_line(exc), exc.setting or "the policy", exc) from None

    def policy_line(self, exc: ConfigurationError) -> int:
        """Where a refusal of the whole policy is reported: at the role or rule it names."""
        spec, setting = self.spec, exc.setting or ""
        roles = {role.name.value: role.name.line for role in spec.roles}
        chain = _CHAIN.search(str(exc))
        if chain and chain.group(1) in roles:
            return roles[chain.group(1)]
        if setting in ("name", "max_depth"):
            return spec.lines.get(setting, spec.line)
        _, _, rest = setting.partition(".")
        name = rest.split(".", 1)[0]
        if setting.startswith("roles.") and name in roles:
            return roles[name]
        for rule in spec.rules:
            if setting.startswith("rules.") and rule.name.value == name:
                return rule.line
        return spec.line

    def role(self, spec: RoleSpec) -> Role:
        setting = f"roles.{spec.name.value}"
        permissions = tuple(
            self.permission(text, f"{setting}.permissions[{index}]")
            for index, text in enumerate(spec.permissions)
        )
        seen: set[str] = set()
        for parent in spec.inherits:
            if parent.value in seen:
                raise PolicyError(
                    f"role {spec.name.value} names the parent {parent.value} twice",
                    source=self.source,
                    line=parent.line,
                    setting=f"{setting}.inherits",
                )
            seen.add(parent.value)
        return self.build(
            spec.name.line,
            setting,
            lambda: Role(
                spec.name.value, permissions, tuple(parent.value for parent in spec.inherits)
            ),
        )

    def permission(self, text: Text, setting: str) -> Permission:
        return self.build(text.line, setting, lambda: Permission.parse(text.value, setting=setting))

    def build(self, line: int, setting: str, make: Callable[[], T]) -> T:
        try:
            return make()
        except ConfigurationError as exc:
            raise self.fail(line, setting, exc) from None

    def rule(self, spec: RuleSpec) -> Rule:
        when = None if spec.when is None else self.condition(spec.when)
        resource = None if spec.resource is None else spec.resource.value

        def make(actions: tuple[Text, ...]) -> Rule:
            return Rule(
                spec.name.value,
                Effect(spec.effect.value),
                tuple(action.value for action in actions),
                resource,
                when,
                tuple(role.value for role in spec.roles),
            )

        try:
            return make(spec.actions)
        except ConfigurationError as exc:
            setting = exc.setting or ""
            line = spec.line
            if setting == "rules.name":
                line = spec.name.line
            elif setting.endswith(".resource") and spec.resource is not None:
                line = spec.resource.line
            elif setting.endswith(".roles") and spec.roles:
                line = spec.roles[0].line
            elif setting.endswith(".actions"):
                line = self.action_line(spec, make)
            raise self.fail(line, f"{spec.setting}.{setting.rsplit('.', 1)[-1]}", exc) from None

    def action_line(self, spec: RuleSpec, make: Callable[[tuple[Text, ...]], Rule]) -> int:
        """The line of the first action the model refuses on its own."""
        for action in spec.actions:
            try:
                make((action,))
            except ConfigurationError:
                return action.line
        return spec.actions[0].line

    def condition(self, spec: ConditionSpec) -> Expression:
        setting = spec.setting
        if isinstance(spec, _schema.GroupSpec):
            items = tuple(self.condition(item) for item in spec.items)
            if spec.kind == "not":
                return self.build(spec.line, setting, lambda: Not(items[0]))
            group = AllOf if spec.kind == "all" else AnyOf
            return self.build(spec.line, setting, lambda: group(items))
        attribute = spec.attribute
        ref = self.build(
            attribute.line,
            f"{setting}.attribute",
            lambda: Ref.parse(attribute.value, setting=f"{setting}.attribute"),
        )
        value: object = spec.value
        if isinstance(spec.value, _schema.Text):
            target = spec.value
            value = self.build(
                target.line,
                f"{setting}.value",
                lambda: Ref.parse(target.value, setting=f"{setting}.value"),
            )
        operator = Operator(spec.operator.value)
        try:
            return Condition(ref, operator, value)
        except ConfigurationError as exc:
            part = (exc.setting or "").rpartition(".")[2]
            line = spec.value_line if part == "value" else spec.line
            key = f"{setting}.{part}" if part in ("attribute", "operator", "value") else setting
            raise self.fail(line, key, exc) from None
