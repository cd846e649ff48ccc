"""docs/crypto.md's examples run: its python blocks in order in one namespace (each asserts
its own claims), and its tables name only reasons and sizes the code has."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bastion.crypto import DecryptReason
from bastion.crypto.sqlalchemy import ciphertext_length

if TYPE_CHECKING:
    import pytest

PAGE: Final = Path(__file__).resolve().parent.parent / "docs" / "crypto.md"


def _blocks(language: str) -> list[str]:
    text = PAGE.read_text(encoding="utf-8")
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def test_the_python_blocks_run_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the models block opens sqlite:///patients.db
    namespace: dict[str, Any] = {}
    blocks = _blocks("python")
    assert len(blocks) >= 9
    for number, block in enumerate(blocks):
        # dont_inherit: this module's `from __future__ import annotations` would turn the
        # models' Mapped[...] annotations into strings SQLAlchemy cannot resolve here
        code = compile(block, f"docs/crypto.md block {number}", "exec", dont_inherit=True)
        exec(code, namespace)
    assert (tmp_path / "patients.db").is_file()
    assert namespace["report"].rewritten == 1
    namespace["engine"].dispose()


def test_the_reason_table_lists_every_reason() -> None:
    text = PAGE.read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.MULTILINE))
    assert listed == {reason.value for reason in DecryptReason}


def test_the_size_formula_matches_the_code() -> None:
    assert ciphertext_length(32) == 88
    text = " ".join(PAGE.read_text(encoding="utf-8").split())
    assert "a ciphertext of 88 characters instead of 140" in text
