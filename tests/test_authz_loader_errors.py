"""Policy documents with mistakes: every error a PolicyError naming the source, line and key."""

from __future__ import annotations

import sys
import textwrap
from typing import TYPE_CHECKING

import pytest

from bastion.core.authz import _documents
from bastion.core.authz.loader import PolicyError, load_policy
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from pathlib import Path


def _fails(text: str, fmt: str, source: str = "policy") -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        load_policy(textwrap.dedent(text).lstrip("\n"), format=fmt, source=source)  # type: ignore[arg-type]
    error = caught.value
    assert isinstance(error, ConfigurationError)
    assert error.source == source
    where = source if error.line is None else f"{source} line {error.line}"
    assert str(error) == f"{where}: {error.detail}"
    return error


# --- each mistake, in each format, at its line ----------------------------------------------

UNKNOWN_KEY = {
    "json": """
        {"rules": [
          {"name": "r", "effect": "allow", "actions": ["read"],
           "efect": "deny"}
        ]}
    """,
    "yaml": """
        rules:
          - name: r
            effect: allow
            actions: [read]
            efect: deny
    """,
    "toml": """
        [[rules]]
        name = "r"
        effect = "allow"
        actions = ["read"]
        efect = "deny"
    """,
}


@pytest.mark.parametrize(("fmt", "line"), [("json", 3), ("yaml", 5), ("toml", 5)])
def test_an_unknown_key_is_an_error_at_its_line(fmt: str, line: int) -> None:
    error = _fails(UNKNOWN_KEY[fmt], fmt, source=f"p.{fmt}")
    assert error.line == line
    assert error.detail == (
        "unknown key 'efect' in rules[0] (did you mean 'effect'? expected one of: action, "
        "actions, description, effect, name, resource, roles, when)"
    )
    assert error.setting == "rules[0].efect"


def test_a_near_miss_key_gets_a_suggestion() -> None:
    error = _fails('{"roles": {"admin": {"inherts": ["user"]}, "user": {}}}', "json")
    assert error.detail == (
        "unknown key 'inherts' in roles.admin (did you mean 'inherits'? expected one of: "
        "description, inherits, permissions)"
    )


WRONG_TYPE = {
    "json": '{"roles": {"user": {},\n  "admin": {"inherits": 1}}}',
    "yaml": "roles:\n  user: {}\n  admin:\n    inherits: 1\n",
    "toml": "[roles.user]\n[roles.admin]\npermissions = []\ninherits = 1\n",
}


@pytest.mark.parametrize(("fmt", "line"), [("json", 2), ("yaml", 4), ("toml", 4)])
def test_a_value_of_the_wrong_type_is_an_error_at_its_line(fmt: str, line: int) -> None:
    error = _fails(WRONG_TYPE[fmt], fmt)
    assert (error.line, error.setting, error.detail) == (
        line,
        "roles.admin.inherits",
        "roles.admin.inherits must be a string or a list of strings, got a number",
    )


CYCLE = {
    "json": """
        {"roles": {
          "a": {"inherits": ["b"]},
          "b": {"inherits": ["c"]},
          "c": {"permissions": ["x:read"],
                "inherits": ["a"]}
        }}
    """,
    "yaml": """
        roles:
          a: {inherits: [b]}
          b:
            inherits: [c]
          c:
            permissions: ["x:read"]
            inherits:
              - a
    """,
    "toml": """
        [roles.a]
        inherits = ["b"]
        [roles.b]
        inherits = ["c"]
        [roles.c]
        permissions = ["x:read"]
        inherits = [
          "a",
        ]
    """,
}


@pytest.mark.parametrize(("fmt", "line"), [("json", 5), ("yaml", 8), ("toml", 8)])
def test_a_role_cycle_is_reported_at_the_role_that_closes_it(fmt: str, line: int) -> None:
    error = _fails(CYCLE[fmt], fmt)
    assert error.line == line
    assert error.detail == "role 'c' inherits 'a', which closes the cycle a -> b -> c -> a"


def test_a_role_inheriting_itself_is_a_cycle() -> None:
    error = _fails('{"roles": {"a": {"inherits": "a"}}}', "json")
    assert error.detail == "role 'a' inherits 'a', which closes the cycle a -> a"


@pytest.mark.parametrize(
    ("text", "line", "detail"),
    [
        (
            (
                '{"roles": {"admin": {"inherits": ["user"]},\n "user": {"inherits": ["gust"]},\n'
                ' "guest": {}}}'
            ),
            2,
            (
                "roles.user.inherits names the unknown role 'gust' (did you mean 'guest'?); roles "
                "defined: admin, guest, user"
            ),
        ),
        (
            (
                '{"roles": {"admin": {}},\n "rules": [{"name": "r", "effect": "allow",\n'
                ' "actions": ["posts:read"], "roles": ["editor"]}]}'
            ),
            3,
            "rules[0].roles names the unknown role 'editor'; roles defined: admin",
        ),
    ],
)
def test_a_reference_to_an_unknown_role_is_an_error(text: str, line: int, detail: str) -> None:
    error = _fails(text, "json")
    assert (error.line, error.detail) == (line, detail)


RULE = '{{"rules": [{{"name": "r", "effect": {effect},\n "actions": {actions}{extra}}}]}}'


@pytest.mark.parametrize(
    ("effect", "actions", "extra", "line", "detail"),
    [
        (
            '"permit"',
            '["read"]',
            "",
            1,
            'rules[0].effect must be "allow" or "deny", got \'permit\'',
        ),
        ('"allow"', '"read"', "", 2, "rules[0].actions must be a list of strings, got a string"),
        ('"allow"', "[1]", "", 2, "rules[0].actions[0] must be a string, got a number"),
        ('"allow"', "[]", "", 2, "rules[0].actions is empty"),
        (
            '"allow"',
            '["read"]',
            ',\n "when": {"attribute": "subjects.id", "operator": "equals", "value": 1}',
            3,
            (
                "rules[0].when.attribute 'subjects.id' is not an attribute reference (expected "
                "subject.<name>, resource.<name> or context.<name>)"
            ),
        ),
        (
            '"allow"',
            '["read"]',
            ',\n "when": {"attribute": "subject.id", "operator": "equal", "value": 1}',
            3,
            (
                "unknown operator 'equal' in rules[0].when (did you mean 'equals'? expected one "
                "of: equals, not_equals, contains, in, not_in, greater_than, less_than, "
                "greater_or_equal, less_or_equal, starts_with)"
            ),
        ),
        (
            '"allow"',
            '["read"]',
            ',\n "when": {"attribute": "subject.age", "operator": "greater_than",\n "value": true}',
            4,
            "rules[0].when.value for greater_than must be a number or a string, got a boolean",
        ),
        (
            '"allow"',
            '["read"]',
            ',\n "when": {"all": []}',
            3,
            "rules[0].when.all needs a condition",
        ),
        (
            '"allow"',
            '["read"]',
            ',\n "when": {"all": [], "any": []}',
            3,
            "rules[0].when must hold exactly one of 'all', 'any', 'not' (nest them)",
        ),
        (
            '"allow"',
            '["read"]',
            ',\n "when": {"attribute": "subject.id", "operator": "equals",\n "value": {"rf": "x"}}',
            4,
            (
                "unknown key 'rf' in rules[0].when.value (did you mean 'ref'? expected one of: "
                "literal, ref)"
            ),
        ),
    ],
)
def test_rule_mistakes_name_the_line_and_what_was_expected(
    effect: str, actions: str, extra: str, line: int, detail: str
) -> None:
    error = _fails(RULE.format(effect=effect, actions=actions, extra=extra), "json")
    assert (error.line, error.detail) == (line, detail)


def test_guide_format_conditions_must_not_be_an_empty_list() -> None:
    error = _fails(
        '{"policies": [{"name": "p", "effect": "allow", "action": "read",\n "conditions": []}]}',
        "json",
    )
    assert (error.line, error.detail) == (
        2,
        "policies[0].conditions is empty (omit it for a rule without conditions)",
    )


def test_when_belongs_to_bastions_format_and_conditions_to_the_guides() -> None:
    error = _fails(
        '{"rules": [{"name": "p", "effect": "allow", "action": "read",\n'
        ' "conditions": [{"attribute": "subject.id", "operator": "equals",'
        ' "value": 1}]}]}',
        "json",
    )
    assert (error.line, error.detail) == (
        2,
        (
            "unknown key 'conditions' in rules[0]: a list of 'conditions' belongs to the guide's "
            "format, under 'policies'; a rule under 'rules' takes 'when' (with 'all', 'any', 'not')"
        ),
    )


def test_two_rules_with_one_name_are_an_error() -> None:
    error = _fails(
        '{"rules": [{"name": "r", "effect": "allow", "action": "a:read"}],\n'
        ' "policies": [{"name": "r", "effect": "deny", "action": "a:read"}]}',
        "json",
    )
    assert (error.line, error.setting) == (2, "policies[0].name")
    assert error.detail.startswith("rule name 'r' is used twice (first on line 1)")


def test_an_empty_policy_is_an_error() -> None:
    assert _fails("{}", "json").detail == "the policy defines no roles and no rules"
    assert _fails("   ", "json").detail == "the document is empty"
    assert _fails("# nothing\n", "yaml").detail == "the document is empty"


# --- syntax, per format ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "detail"),
    [
        ('{"roles": {\n  "a": {},\n  "a": {}}}', 3, "duplicate key 'a' (first on line 2)"),
        ('{"roles": {\n  "a": {},\n}}', 3, "invalid JSON: expected a key in double quotes"),
        ('{"max_depth":\n NaN}', 2, "invalid JSON: expected a value, found 'N'"),
        ('{"max_depth": 1e400}', 1, "invalid JSON: 1e400 is out of range"),
        (
            '{"name": "a\tb"}',
            1,
            "invalid JSON: a string is unterminated, or holds a control character or a bad escape",
        ),
        ('{"name": "p"}\n{"name": "q"}', 2, "invalid JSON: extra data after the document"),
        ("[" * 65 + "]" * 65, 1, "invalid JSON: nested deeper than 64 levels"),
    ],
)
def test_json_syntax_errors_name_the_line(text: str, line: int, detail: str) -> None:
    error = _fails(text, "json")
    assert (error.line, error.detail) == (line, detail)


def test_yaml_duplicate_keys_and_syntax_errors_name_the_line() -> None:
    error = _fails("roles:\n  a: {}\n  b: {}\n  a: {}\n", "yaml")
    assert (error.line, error.detail) == (4, "duplicate key 'a' (first on line 2)")
    error = _fails("roles:\n  a: {inherits: [b}\n", "yaml")
    assert error.line == 2
    assert error.detail.startswith("invalid YAML: ")


def test_yaml_booleans_as_keys_get_a_hint() -> None:
    error = _fails("roles:\n  on: {}\n", "yaml")
    assert (error.line, error.detail) == (
        2,
        (
            "a key must be a string, found a boolean (quote it: YAML reads yes, no, on and off as "
            "booleans)"
        ),
    )


def test_yaml_dates_and_nan_are_not_policy_values() -> None:
    error = _fails("name: 2026-12-03\n", "yaml")
    assert error.detail.startswith("a YAML value of type date is not a policy value")
    error = _fails("roles: {a: {}}\nmax_depth: .nan\n", "yaml")
    assert (error.line, error.detail) == (2, "nan is not a finite number")


@pytest.mark.parametrize(
    ("fmt", "text", "detail"),
    [
        (
            "toml",
            "roles = " + "[" * 5000 + "]" * 5000,
            "invalid TOML: nested deeper than 64 levels",
        ),
        ("toml", "roles = " + "[" * 70 + "]" * 70, "nested deeper than 64 levels"),
        ("yaml", "[" * 5000 + "]" * 5000, "invalid YAML: exceeded maximum nesting depth"),
        ("yaml", "roles: " + "[" * 70 + "]" * 70, "nested deeper than 64 levels"),
    ],
)
def test_deep_nesting_is_an_error_not_a_crash(fmt: str, text: str, detail: str) -> None:
    error = _fails(text, fmt)
    assert (error.line, error.detail) == (1, detail)


def test_toml_syntax_error_names_the_line() -> None:
    error = _fails('[roles.a]\ninherits = ["b"\n[roles.b]\n', "toml")
    assert error.line == 3
    assert error.detail.startswith("invalid TOML: ")


def test_toml_lines_inside_inline_tables_and_multiline_strings() -> None:
    text = '''
        [[rules]]
        name = "r"
        description = """two
        lines"""
        effect = "allow"
        actions = ["doc:read"]
        when.any = [
          {attribute = "resource.public", operator = "equals", value = true},
          {attribute = "resource.x", operator = "is", value = 'a'},
        ]
    '''
    error = _fails(text, "toml")
    assert (error.line, error.setting) == (9, "rules[0].when.any[1].operator")


# --- nothing in a document runs code --------------------------------------------------------


def test_yaml_python_tags_are_refused_and_run_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    text = f"""
        rules:
          - name: r
            effect: allow
            actions: [read]
            when: !!python/object/apply:os.system ["touch {marker}"]
    """
    error = _fails(text, "yaml")
    assert (error.line, error.detail) == (
        5,
        (
            "the tag !!python/object/apply:os.system is not allowed on a sequence (policies are "
            "plain data)"
        ),
    )
    assert not marker.exists()
    error = _fails("name: !!python/name:os.system ''\n", "yaml")
    assert error.line == 1
    assert error.detail == (
        "invalid YAML: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/name:os.system'"
    )
    error = _fails("roles:\n  a: !!python/object:collections.OrderedDict {}\n", "yaml")
    assert (error.line, error.detail) == (
        2,
        (
            "the tag !!python/object:collections.OrderedDict is not allowed on a mapping (policies "
            "are plain data)"
        ),
    )


def test_yaml_alias_expansion_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _documents.MAX_NODES == 200_000
    monkeypatch.setattr(_documents, "MAX_NODES", 5000)
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    error = _fails("\n".join(lines) + "\n", "yaml")
    assert error.detail == "the document expands to more than 5000 values (aliases?)"


def test_without_pyyaml_a_yaml_policy_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)
    error = _fails("roles: {a: {}}\n", "yaml", source="p.yaml")
    assert error.line is None
    assert str(error) == (
        "p.yaml: YAML policies need PyYAML: install bastion[yaml] (or write the policy as "
        "JSON or TOML, which need nothing)"
    )


def test_an_unknown_format_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="policy format must be one of json, yaml, toml"):
        load_policy("{}", format="xml", source="p")  # type: ignore[arg-type]


# --- the model's refusals, at the line of the text refused ----------------------------------


@pytest.mark.parametrize(
    ("text", "line", "setting", "detail"),
    [
        (
            '{"roles": {"admin": {"permissions": ["users:*",\n "Posts:write"]}}}',
            2,
            "roles.admin.permissions[1]",
            (
                "roles.admin.permissions[1] must be '*' or 'resource:action[:scope]' with each "
                "segment '*' or lower-case [a-z0-9][a-z0-9_.-]* (no spaces, no partial wildcards), "
                "got 'Posts:write'"
            ),
        ),
        (
            '{"roles": {"a": {},\n "Admin": {}}}',
            2,
            "roles.Admin",
            "roles.Admin: role name must match [a-z0-9][a-z0-9_.-]*, got 'Admin'",
        ),
        (
            '{"roles": {"b": {},\n "a": {"inherits": ["b",\n "b"]}}}',
            3,
            "roles.a.inherits",
            "role a names the parent b twice",
        ),
        (
            (
                '{"rules": [{"name": "r", "effect": "allow", "resource": "doc",\n'
                ' "actions": ["read",\n "posts:write"]}]}'
            ),
            3,
            "rules[0].actions",
            "rules[0].actions: rule r: action posts:write is not an action of resource doc",
        ),
        (
            '{"rules": [{"effect": "allow", "actions": ["a:read"],\n "name": "bad name"}]}',
            2,
            "rules[0].name",
            (
                "rules[0].name: rule name must match [A-Za-z0-9][A-Za-z0-9_.-]* (128 at most), "
                "got 'bad name'"
            ),
        ),
        (
            (
                '{"rules": [{"name": "r", "effect": "allow", "actions": ["a:read"],\n'
                ' "when": {"attribute": "subject.__class__", "operator": "equals", "value": 1}}]}'
            ),
            2,
            "rules[0].when.attribute",
            (
                "rules[0].when.attribute: attribute reference subject.__class__ is not a plain "
                "name ([A-Za-z_][A-Za-z0-9_-]*, no dunder)"
            ),
        ),
        (
            (
                '{"rules": [{"name": "r", "effect": "allow", "actions": ["a:read"],\n'
                ' "when": {"attribute": "subject.id", "operator": "equals",\n "value": [1, 2]}}]}'
            ),
            3,
            "rules[0].when.value",
            "rules[0].when.value: subject.id equals: a list value needs in or not_in",
        ),
        (
            (
                '{"max_depth": 2, "roles": {"d": {},\n "a": {"inherits": ["b"]},\n'
                ' "b": {"inherits": ["c"]}, "c": {"inherits": ["d"]}}}'
            ),
            2,
            "max_depth",
            "max_depth: role chain a -> b -> c -> d is 3 levels deep, deeper than max_depth=2",
        ),
        (
            '{"roles": {"a": {}},\n "name": "my policy"}',
            2,
            "name",
            "name: policy name must match [A-Za-z0-9][A-Za-z0-9_.-]*, got 'my policy'",
        ),
    ],
)
def test_the_models_refusals_name_the_line(text: str, line: int, setting: str, detail: str) -> None:
    error = _fails(text, "json")
    assert (error.line, error.setting, error.detail) == (line, setting, detail)


def test_a_bad_reference_on_the_value_side_of_the_guides_format_is_an_error() -> None:
    error = _fails(
        '{"policies": [{"name": "p", "effect": "allow", "resource": "doc", "action": "read",\n'
        ' "conditions": [{"attribute": "subject.id", "operator": "equals",\n'
        ' "value": "resource.__dict__"}]}]}',
        "json",
    )
    assert (error.line, error.setting) == (3, "policies[0].conditions[0].value")
    assert "resource.__dict__ is not a plain name" in error.detail


def test_the_pure_python_safe_loader_gives_the_same_lines_and_refusals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    yaml = pytest.importorskip("yaml")
    monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    error = _fails(CYCLE["yaml"], "yaml")
    assert (error.line, error.detail) == (
        8,
        "role 'c' inherits 'a', which closes the cycle a -> b -> c -> a",
    )
    error = _fails("roles:\n  a: !!python/object/new:os.getcwd []\n", "yaml")
    assert (error.line, error.detail) == (
        2,
        (
            "the tag !!python/object/new:os.getcwd is not allowed on a sequence (policies are "
            "plain data)"
        ),
    )
    error = _fails("[" * 5000 + "]" * 5000, "yaml")
    assert (error.line, error.detail) == (1, "invalid YAML: exceeded maximum nesting depth")
    policy = load_policy(
        textwrap.dedent(UNKNOWN_KEY["yaml"]).replace("efect: deny", "resource: doc"),
        format="yaml",
        source="p",
    )
    assert policy.evaluate({"id": "u1"}, {"type": "doc"}, "read").allowed
