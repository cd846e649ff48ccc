"""README.md's and docs/'s code is the tested code.

Each example file the docs show is embedded verbatim in ``docs/frameworks.md``: a marker line
``<!-- example: examples/<file>.py -->`` followed by a fenced ``python`` block that must equal
the file byte for byte (the files themselves run in ``tests/test_examples.py``). Every other
``python`` block of README.md and of each page in docs/ must at least compile; top-level
``await`` is allowed, as in ``python -m asyncio`` or a notebook. Every relative link between
the pages must reach a file and, with a ``#fragment``, a heading of that file; every page of
docs/ is linked from README.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parent.parent
README: Final = ROOT / "README.md"
DOCS: Final = ROOT / "docs"
FRAMEWORKS: Final = DOCS / "frameworks.md"
PAGES: Final = (README, *sorted(DOCS.glob("*.md")))
LINK: Final = re.compile(r"\]\((?P<target>[^)\s]+)\)")
EXAMPLES: Final = ("examples/fastapi_app.py", "examples/flask_app.py", "examples/starlette_app.py")
MARKER: Final = re.compile(r"<!-- example: (?P<path>examples/[\w./-]+\.py) -->")
FENCE_OPEN: Final = "```python"
FENCE_CLOSE: Final = "```"


def python_blocks(text: str) -> list[tuple[int, str]]:
    """Every fenced ``python`` block as ``(line number of its first code line, code)``."""
    lines = text.splitlines()
    blocks: list[tuple[int, str]] = []
    index = 0
    while index < len(lines):
        if lines[index].strip() == FENCE_OPEN:
            start = index + 1
            end = start
            while end < len(lines) and lines[end].strip() != FENCE_CLOSE:
                end += 1
            if end == len(lines):
                raise ValueError(f"README line {index + 1}: a python block is never closed")
            blocks.append((start + 1, "".join(f"{line}\n" for line in lines[start:end])))
            index = end
        index += 1
    return blocks


def embedded_examples(text: str) -> list[tuple[str, str]]:
    """``(path, code)`` for every example marker, in order; the code is the fenced python
    block on the lines right after the marker (the marker without one is an error)."""
    lines = text.splitlines()
    found: list[tuple[str, str]] = []
    for number, line in enumerate(lines):
        match = MARKER.fullmatch(line.strip())
        if match is None:
            continue
        if number + 1 >= len(lines) or lines[number + 1].strip() != FENCE_OPEN:
            raise ValueError(
                f"README line {number + 1}: {match['path']} marker must be followed by a "
                f"{FENCE_OPEN} fence on the next line"
            )
        code = [block for start, block in python_blocks(text) if start == number + 3]
        found.append((match["path"], code[0]))
    return found


def mismatches(text: str, root: Path = ROOT) -> list[str]:
    """What is wrong with the examples embedded in ``text`` (empty when all is well)."""
    problems: list[str] = []
    embedded = embedded_examples(text)
    paths = [path for path, _ in embedded]
    problems += [f"no marker for {path}" for path in EXAMPLES if path not in paths]
    for path, code in embedded:
        source = (root / path).read_text(encoding="utf-8")
        if code != source:
            problems.append(f"{path}: the docs block differs from the file")
    return problems


def compile_failures(text: str, name: str = "README.md") -> list[str]:
    """``python`` blocks that are not valid Python, with line and message."""
    failures: list[str] = []
    for start, code in python_blocks(text):
        try:
            compile(code, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        except SyntaxError as exc:
            line = start + (exc.lineno or 1) - 1
            failures.append(f"{name}:{line}: {exc.msg}")
    return failures


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    return {slug(m[1]) for m in re.finditer(r"^#+ (.*)$", text, flags=re.MULTILINE)}


def broken_links(path: Path) -> list[str]:
    """Relative links of ``path`` whose file or heading does not exist."""
    problems: list[str] = []
    text = path.read_text(encoding="utf-8")
    for match in LINK.finditer(text):
        target = match["target"]
        if "://" in target or target.startswith("mailto:"):
            continue
        file_part, _, fragment = target.partition("#")
        goal = path if not file_part else (path.parent / file_part).resolve()
        if not goal.exists():
            problems.append(f"{path.name}: {target}: no such file")
        elif fragment and goal.suffix == ".md" and fragment not in anchors(goal):
            problems.append(f"{path.name}: {target}: no such heading")
    return problems


def with_examples(text: str) -> str:
    """``text`` with each example appended as the lead will insert it (marker, then fence)."""
    sections = [
        f"<!-- example: {path} -->\n{FENCE_OPEN}\n"
        f"{(ROOT / path).read_text(encoding='utf-8')}{FENCE_CLOSE}\n"
        for path in EXAMPLES
    ]
    return text.rstrip("\n") + "\n\n" + "\n".join(sections)


def test_the_framework_page_embeds_the_tested_examples() -> None:
    assert mismatches(FRAMEWORKS.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_blocks_compile(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert compile_failures(text, page.name) == []


def test_the_pages_hold_code() -> None:
    blocks = sum(len(python_blocks(page.read_text(encoding="utf-8"))) for page in PAGES)
    assert blocks >= 20
    assert len(python_blocks(README.read_text(encoding="utf-8"))) >= 3


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_reach_their_targets(page: Path) -> None:
    assert broken_links(page) == []


def test_readme_links_every_page_of_docs() -> None:
    text = README.read_text(encoding="utf-8")
    linked = {m["target"].partition("#")[0] for m in LINK.finditer(text)}
    # "_name.md" is a draft the lead merges into a page (docs/_tokens_http_draft.md), not a page
    pages = {f"docs/{page.name}" for page in DOCS.glob("*.md") if not page.name.startswith("_")}
    assert pages - linked == set()


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n## A part\n", encoding="utf-8")
    page.write_text(
        "[ok](other.md#a-part) [x](missing.md) [y](other.md#nope) [z](https://a.example)\n",
        encoding="utf-8",
    )
    assert broken_links(page) == [
        "page.md: missing.md: no such file",
        "page.md: other.md#nope: no such heading",
    ]


def test_checks_pass_on_readme_with_the_examples_inserted() -> None:
    text = with_examples(README.read_text(encoding="utf-8"))
    assert mismatches(text) == []
    assert [path for path, _ in embedded_examples(text)][-3:] == list(EXAMPLES)
    assert compile_failures(text) == []


def test_checks_catch_a_drifted_or_missing_example() -> None:
    text = with_examples("# title\n")
    drifted = text.replace("create_app(", "make_app(", 1)
    assert mismatches(drifted) == ["examples/fastapi_app.py: the docs block differs from the file"]
    without_flask = text.replace("<!-- example: examples/flask_app.py -->\n", "")
    assert mismatches(without_flask) == ["no marker for examples/flask_app.py"]
    broken = text + "\n```python\n@app.get('/') def f(): ...\n```\n"
    assert compile_failures(broken) == [f"README.md:{len(text.splitlines()) + 3}: invalid syntax"]


def test_a_marker_needs_its_block() -> None:
    with pytest.raises(ValueError, match=r"examples/flask_app\.py marker must be followed"):
        embedded_examples("<!-- example: examples/flask_app.py -->\nsome prose\n")
    with pytest.raises(ValueError, match="never closed"):
        python_blocks("```python\nx = 1\n")
    assert python_blocks("```sh\nmake\n```\n```python\nx = 1\n```\n") == [(5, "x = 1\n")]
