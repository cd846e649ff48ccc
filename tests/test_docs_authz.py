"""docs/authz.md's examples run: its python blocks in order in one namespace, its TOML policy
loads, and each block's claims are asserted inside it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bastion.core.authz.loader import load_policy
from bastion.core.authz.subjects import Resource, Subject

if TYPE_CHECKING:
    import pytest

PAGE: Final = Path(__file__).resolve().parent.parent / "docs" / "authz.md"


def _blocks(language: str) -> list[str]:
    text = PAGE.read_text(encoding="utf-8")
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def test_the_python_blocks_run_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # the app block names policy.toml and sqlite:///app.db
    (tmp_path / "policy.toml").write_text(_blocks("toml")[0], encoding="utf-8")
    namespace: dict[str, Any] = {}
    blocks = _blocks("python")
    assert len(blocks) >= 6
    for number, block in enumerate(blocks):
        exec(compile(block, f"docs/authz.md block {number}", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "denied: nothing grants users:read to u7" in printed
    assert "denied: rule locked-stays: resource.locked equals true" in printed
    config = namespace["config"]
    assert config.authz.table.rules  # the route table of the app block
    assert "public" in str(namespace["query"]).lower()


def test_the_toml_block_is_the_owner_rule() -> None:
    policy = load_policy(_blocks("toml")[0], format="toml", source="docs/authz.md")
    owner = Subject(id="u1", roles=frozenset({"user"}))
    row = Resource(type="documents", owner="u1", attributes={"owner_id": "u1"})
    assert policy.allows(owner, row, "documents:write")
    assert not policy.allows(Subject(id="u2"), row, "documents:write")
    assert policy.allows(Subject(id="u2", roles=frozenset({"user"})), None, "documents:create")
