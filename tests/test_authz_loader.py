"""Policy documents: the same policy in JSON, YAML and TOML, and every error naming its line."""

from __future__ import annotations

import json
import sys
import textwrap
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.authz.files import policy_from_file
from bastion.core.authz import _documents
from bastion.core.authz.decision import AuthzReason
from bastion.core.authz.loader import PolicyError, load_policy
from bastion.core.authz.policy import Effect
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
                "unknown operator 'equal' (did you mean 'equals'? expected one of: equals, "
                "not_equals, contains, in, not_in, greater_than, less_than, greater_or_equal, "
                "less_or_equal, starts_with)"
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


# --- the guide's document policy, in every format, deciding alike --------------------------

GUIDE_JSON = """
{"policies": [
  {"name": "document_public_read", "effect": "allow", "resource": "document",
   "actions": ["read"],
   "conditions": [{"attribute": "resource.public", "operator": "equals", "value": true}]},
  {"name": "document_access", "effect": "allow", "resource": "document", "actions": ["read"],
   "conditions": [{"attribute": "resource.owner_id", "operator": "equals",
                   "value": "subject.id"}]},
  {"name": "document_write", "effect": "allow", "resource": "document", "action": "write",
   "conditions": [{"attribute": "resource.owner_id", "operator": "equals",
                   "value": "subject.id"},
                  {"attribute": "resource.locked", "operator": "equals", "value": false}]}
]}
"""

GUIDE_YAML = """
policies:
  - name: document_public_read
    effect: allow
    resource: document
    actions: [read]
    conditions:
      - {attribute: resource.public, operator: equals, value: true}
  - name: document_access
    effect: allow
    resource: document
    actions: [read]
    conditions:
      - attribute: resource.owner_id
        operator: equals
        value: subject.id
  - name: document_write
    effect: allow
    resource: document
    action: write
    conditions:
      - {attribute: resource.owner_id, operator: equals, value: subject.id}
      - {attribute: resource.locked, operator: equals, value: false}
"""

GUIDE_TOML = """
[[policies]]
name = "document_public_read"
effect = "allow"
resource = "document"
actions = ["read"]
conditions = [{attribute = "resource.public", operator = "equals", value = true}]

[[policies]]
name = "document_access"
effect = "allow"
resource = "document"
actions = ["read"]
[[policies.conditions]]
attribute = "resource.owner_id"
operator = "equals"
value = "subject.id"

[[policies]]
name = "document_write"
effect = "allow"
resource = "document"
action = "write"
conditions = [
  {attribute = "resource.owner_id", operator = "equals", value = "subject.id"},
  {attribute = "resource.locked", operator = "equals", value = false},
]
"""

BASTION_YAML = """
rules:
  - name: document-read
    effect: allow
    resource: document
    actions: [read]
    when:
      any:
        - {attribute: resource.public, operator: equals, value: true}
        - {attribute: subject.id, operator: equals, value: {ref: resource.owner_id}}
  - name: document-write
    effect: allow
    resource: document
    actions: [write]
    when:
      all:
        - {attribute: subject.id, operator: equals, value: {ref: resource.owner_id}}
        - not: {attribute: resource.locked, operator: equals, value: true}
"""

DOCUMENT_POLICIES = {
    "guide-json": (GUIDE_JSON, "json"),
    "guide-yaml": (GUIDE_YAML, "yaml"),
    "guide-toml": (GUIDE_TOML, "toml"),
    "bastion-yaml": (BASTION_YAML, "yaml"),
}

SUBJECTS = [{"id": "u1"}, {"id": "u2", "roles": []}, {"id": "subject.id"}]
DOCUMENTS = [
    {"type": "document", "id": f"d{n}", "owner_id": "u1", "public": public, "locked": locked}
    for n, (public, locked) in enumerate([(p, lk) for p in (False, True) for lk in (False, True)])
]


def _expected(subject: dict[str, object], action: str, document: dict[str, object]) -> bool:
    owner = subject["id"] == document["owner_id"]
    if action == "read":
        return bool(document["public"]) or owner
    return owner and not document["locked"]


@pytest.mark.parametrize("name", list(DOCUMENT_POLICIES))
def test_the_guides_document_policy_decides_alike_in_every_format(name: str) -> None:
    text, fmt = DOCUMENT_POLICIES[name]
    policy = load_policy(text, format=fmt, source=name)  # type: ignore[arg-type]
    for subject in SUBJECTS:
        for document in DOCUMENTS:
            for action in ("read", "write", "delete"):
                decision = policy.evaluate(subject, document, action)
                want = action != "delete" and _expected(subject, action, document)
                assert decision.allowed is want, (name, subject, document, action)


def test_the_formats_give_identical_decisions_and_explanations() -> None:
    guides = [
        load_policy(text, format=fmt, source="p")  # type: ignore[arg-type]
        for name, (text, fmt) in DOCUMENT_POLICIES.items()
        if name.startswith("guide")
    ]
    for subject in SUBJECTS:
        for document in DOCUMENTS:
            for action in ("read", "write"):
                first, *rest = (p.evaluate(subject, document, action) for p in guides)
                assert all(d == first for d in rest)


def test_the_owner_is_allowed_by_the_guides_rule_as_it_intends() -> None:
    policy = load_policy(GUIDE_JSON, format="json", source="p")
    private = DOCUMENTS[0]
    decision = policy.evaluate({"id": "u1"}, private, "read")
    assert decision.allowed
    assert decision.reason is AuthzReason.ALLOWED_BY_RULE
    assert decision.rule == "document_access"
    assert decision.explain() == (
        "allowed: rule document_access: resource.owner_id equals subject.id"
    )
    # A subject whose id is the text "subject.id" gets nothing: the value is a reference.
    assert not policy.evaluate({"id": "subject.id"}, private, "read").allowed


def test_a_literal_string_shaped_like_a_reference_is_written_as_literal() -> None:
    text = """
        {"policies": [{"name": "odd", "effect": "allow", "resource": "document",
          "action": "read",
          "conditions": [{"attribute": "subject.id", "operator": "equals",
                          "value": {"literal": "subject.id"}}]}]}
    """
    policy = load_policy(text, format="json", source="p")
    document = DOCUMENTS[0]
    assert policy.evaluate({"id": "subject.id"}, document, "read").allowed
    assert not policy.evaluate({"id": "u1"}, document, "read").allowed


def test_locked_writes_are_denied_with_the_failed_condition() -> None:
    policy = load_policy(BASTION_YAML, format="yaml", source="p")
    locked = DOCUMENTS[1]
    decision = policy.evaluate({"id": "u1"}, locked, "write")
    assert not decision.allowed
    assert decision.reason is AuthzReason.CONDITION_FAILED
    assert decision.rule == "document-write"


def test_a_missing_attribute_denies_with_a_condition_error() -> None:
    policy = load_policy(GUIDE_JSON, format="json", source="p")
    decision = policy.evaluate({"id": "u1"}, {"type": "document", "owner_id": "u1"}, "write")
    assert not decision.allowed
    assert decision.reason is AuthzReason.CONDITION_ERROR


ROLES_TOML = """
name = "site"

[roles.guest]
permissions = ["posts:read"]

[roles.user]
inherits = ["guest"]
permissions = ["posts:write:own"]

[roles.moderator]
inherits = ["user"]
permissions = ["posts:write", "comments:*"]

[roles.admin]
inherits = ["moderator"]
permissions = ["users:*"]

[roles.super_admin]
inherits = ["admin"]
permissions = ["*"]

[[rules]]
name = "no-locked-writes"
effect = "deny"
actions = ["posts:write"]
roles = ["user"]
when = {attribute = "resource.locked", operator = "equals", value = true}
"""


def test_a_role_hierarchy_in_toml_decides_through_inheritance() -> None:
    policy = load_policy(ROLES_TOML, format="toml", source="roles.toml")
    assert policy.name == "site"
    admin = {"id": "a1", "roles": ["admin"]}
    post = {"type": "posts", "id": "p1", "owner_id": "u1", "locked": False}
    decision = policy.evaluate(admin, post, "write")
    assert decision.allowed
    assert decision.reason is AuthzReason.ALLOWED_BY_ROLE
    assert decision.via == ("admin", "moderator")
    assert policy.has_role(admin, "guest")
    assert policy.evaluate(admin, None, "users:read").allowed
    assert not policy.evaluate({"id": "admin"}, None, "users:read").allowed
    user = {"id": "u1", "roles": ["user"]}
    assert policy.evaluate(user, post, "write").reason is AuthzReason.ALLOWED_AS_OWNER
    assert not policy.evaluate({"id": "u2", "roles": ["user"]}, post, "write").allowed
    denied = policy.evaluate(admin, {**post, "locked": True}, "write")
    assert denied.reason is AuthzReason.DENIED_BY_RULE
    assert denied.rule == "no-locked-writes"


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


# --- policy_from_file -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "text"),
    [(".json", GUIDE_JSON), (".yaml", GUIDE_YAML), (".yml", GUIDE_YAML), (".TOML", GUIDE_TOML)],
)
def test_a_policy_file_is_read_in_the_format_its_suffix_names(
    tmp_path: Path, suffix: str, text: str
) -> None:
    path = tmp_path / f"policy{suffix}"
    path.write_text(text, encoding="utf-8")
    policy = policy_from_file(path)
    assert policy.evaluate({"id": "u1"}, DOCUMENTS[0], "read").allowed
    assert not policy.evaluate({"id": "u2"}, DOCUMENTS[0], "read").allowed


def test_a_policy_file_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("roles:\n  admin:\n    permisions: [users:read]\n", encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        policy_from_file(str(path))
    assert caught.value.source == str(path)
    assert str(caught.value).startswith(f"{path} line 3: unknown key 'permisions' in roles.admin")


def test_a_byte_order_mark_is_dropped_and_other_bytes_must_be_utf8(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_bytes(b"\xef\xbb\xbf" + GUIDE_JSON.encode())
    assert policy_from_file(path).evaluate({"id": "u1"}, DOCUMENTS[0], "read").allowed
    path.write_bytes(b'{"roles": {\n"a": {"description": "\xff"}}}')
    with pytest.raises(PolicyError) as caught:
        policy_from_file(path)
    assert str(caught.value) == f"{path} line 2: the file is not UTF-8 (byte 34 cannot be decoded)"


def test_an_unknown_suffix_or_a_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "policy.ini"
    path.write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigurationError) as caught:
        policy_from_file(path)
    assert str(caught.value) == (
        f"policy file {path}: the suffix '.ini' names no policy format (expected one of .json, "
        ".yaml, .yml, .toml, or pass format=)"
    )
    path.write_text(GUIDE_JSON, encoding="utf-8")
    assert policy_from_file(path, format="json").name == "policy"
    missing = tmp_path / "missing.json"
    with pytest.raises(ConfigurationError) as caught:
        policy_from_file(missing)
    assert str(caught.value) == f"policy file {missing} cannot be read: No such file or directory"


def test_yaml_merge_keys_give_defaults_that_a_rule_overrides() -> None:
    text = """
        rules:
          - &doc {name: read, effect: allow, resource: document, actions: [read]}
          - <<: *doc
            name: locked
            effect: deny
            when: {attribute: resource.locked, operator: equals, value: true}
    """
    policy = load_policy(textwrap.dedent(text), format="yaml", source="p")
    assert [(r.name, r.effect) for r in policy.rules] == [
        ("read", Effect.ALLOW),
        ("locked", Effect.DENY),
    ]
    document = {"type": "document", "locked": True}
    assert policy.evaluate({"id": "u"}, document, "read").reason is AuthzReason.DENIED_BY_RULE
    error = _fails("rules:\n  - <<: [1]\n", "yaml")
    assert (error.line, error.detail) == (2, "a merge key (<<) takes a mapping or a list of them")


# --- the JSON reader agrees with the standard library ---------------------------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def _plain(node: _documents.Node) -> object:
    if isinstance(node.value, dict):
        return {key: _plain(child) for key, child in node.value.items()}
    if isinstance(node.value, list):
        return [_plain(child) for child in node.value]
    return node.value


@given(value=_VALUES, indent=st.sampled_from([None, 0, 2]), ascii_only=st.booleans())
def test_the_json_reader_reads_what_json_dumps_writes(
    value: object, indent: int | None, ascii_only: bool
) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only)
    assert _plain(_documents.parse_json(text)) == json.loads(text)


@given(text=st.text(max_size=60))
def test_the_json_reader_never_fails_but_with_a_document_error(text: str) -> None:
    line: int | None = 0
    try:
        tree = _documents.parse_json(text)
    except _documents.DocumentError as exc:
        line = exc.line
    else:
        assert _plain(tree) == json.loads(text)
        return
    assert line is not None
    assert 1 <= line <= text.count("\n") + 1


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
    policy = load_policy(GUIDE_YAML, format="yaml", source="p")
    assert policy.evaluate({"id": "u1"}, DOCUMENTS[0], "read").allowed
