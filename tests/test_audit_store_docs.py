"""docs/audit.md's stored-trail examples run, in order, in one namespace (each block asserts
its own claims)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import pytest

PAGE: Final = Path(__file__).resolve().parent.parent / "docs" / "audit.md"


def test_the_stored_trail_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the blocks name sqlite:///audit.db
    section = PAGE.read_text(encoding="utf-8").split("## The stored trail", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 2
    namespace: dict[str, Any] = {}
    for number, block in enumerate(blocks):
        exec(compile(block, f"docs/audit.md stored block {number}", "exec"), namespace)
    assert (tmp_path / "audit.db").is_file()
    assert namespace["report"].events == 1
