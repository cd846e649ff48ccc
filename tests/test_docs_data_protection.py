"""docs/data-protection.md's examples run: its python blocks in order in one namespace, in a
scratch directory (the probe block writes shop.db), each block's claims asserted inside it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import pytest

PAGE: Final = Path(__file__).resolve().parent.parent / "docs" / "data-protection.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_the_python_blocks_run_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    blocks = _blocks()
    assert len(blocks) == 7
    for number, block in enumerate(blocks):
        exec(compile(block, f"docs/data-protection.md block {number}", "exec"), namespace)
    assert namespace["report"].ok
    assert namespace["report"].requests > 100
    printed = capsys.readouterr().out
    assert re.search(r"^\d+ requests, statuses \{200: \d+, 400: \d+\}$", printed, re.MULTILINE)
    assert (tmp_path / "shop.db").is_file()


def test_the_page_says_parameterised_queries_are_the_defence() -> None:
    text = PAGE.read_text(encoding="utf-8")
    assert "## SQL: parameterised queries are the defence" in text
    assert "pip install 'bastion[sanitize]'" in text
