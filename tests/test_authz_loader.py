"""Policy documents: the guide's document policy in JSON, YAML and TOML deciding alike, files
by suffix, and the JSON reader against the standard library."""

from __future__ import annotations

import json
import textwrap
import tomllib
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.authz.files import policy_from_file
from bastion.core.authz import _documents, _toml_lines
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


# --- the TOML line finder against documents whose lines are known ---------------------------

_WORD = st.text(alphabet="abcdefghij_-", min_size=1, max_size=8)
_TOML_TEXT = st.text(
    alphabet=st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs", "Cc")), max_size=12
)


@given(
    rules=st.lists(
        st.tuples(_TOML_TEXT, st.lists(_WORD, min_size=1, max_size=3), st.booleans()),
        min_size=1,
        max_size=4,
    ),
    quoted_keys=st.booleans(),
)
def test_the_toml_line_finder_notes_each_key_where_it_is_written(
    rules: list[tuple[str, list[str], bool]], quoted_keys: bool
) -> None:
    lines: list[str] = ["# rules", ""]
    want: dict[tuple[str | int, ...], int] = {}
    for index, (name, actions, multiline) in enumerate(rules):
        lines.append("[[rules]]")
        want["rules", index] = len(lines)
        key = '"name"' if quoted_keys else "name"
        lines.append(f"{key} = {json.dumps(name)}  # the rule's name")
        want["rules", index, "name"] = len(lines)
        if multiline:
            lines.append('description = """')
            lines.append("a [fake] = table")
            lines.append('"""')
            lines.append("actions = [")
            for position, action in enumerate(actions):
                lines.append(f"  '{action}',")
                want["rules", index, "actions", position] = len(lines)
            lines.append("]")
        else:
            lines.append(f"actions = {json.dumps(actions)}")
            for position in range(len(actions)):
                want["rules", index, "actions", position] = len(lines)
        lines.append("when = {attribute = 'subject.x', operator = 'equals', value = 1}")
        want["rules", index, "when", "operator"] = len(lines)
    text = "\n".join(lines) + "\n"
    assert [rule["name"] for rule in tomllib.loads(text)["rules"]] == [r[0] for r in rules]
    found = _toml_lines.key_lines(text)
    assert {path: found.get(path) for path in want} == want
