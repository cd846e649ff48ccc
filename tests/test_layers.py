"""The layer direction of ../shared/DESIGN.md, checked on the source's import statements.

A module may import only from its own layer or layers below it. ``core`` additionally imports no
I/O library and never names an ASGI scope or a WSGI environ; only ``core.environment`` reads
``os.environ``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "bastion"

# Lower numbers are lower layers. Layers of equal rank must not import each other either,
# except within themselves (asgi and wsgi are siblings).
RANK: dict[str, float] = {
    "errors": 0,
    "core": 1,
    "stores": 2,
    "engine": 3,
    # feature facades just above the engine: they gather core decisions and engine managers
    "passwords": 3.5,
    "apikeys": 3.5,
    "tokens": 3.5,
    "authz": 3.5,
    "oidc": 3.5,
    "crypto": 3.5,
    "sanitize": 3.5,
    "query": 3.5,
    "audit": 3.5,
    # the Bastion configuration and the runtime built from it (one layer, see SAME_LAYER):
    # above every engine
    "config": 3.6,
    "asgi": 4,
    "wsgi": 4,
    "testing": 5,
    "integrations": 5,
    "flask": 5,
    "starlette": 5,
    "fastapi": 5,
    "demo": 6,
    "cli": 7,
}

IO_MODULES = {
    "asyncio",
    "socket",
    "ssl",
    "selectors",
    "sqlite3",
    "subprocess",
    "threading",
    "multiprocessing",
    "concurrent",
    "http",
    "urllib",
    "redis",
    "starlette",
    "fastapi",
    "flask",
    "werkzeug",
    "uvicorn",
}


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


SAME_LAYER = {"runtime": "config", "slices": "config"}
"""Top-level modules of one layer: ``Bastion.build()`` makes a ``Runtime`` from the config, and
``slices`` hands a middleware given ``bastion=`` its part of it."""


def _layer_of(path: Path) -> str | None:
    parts = path.relative_to(SRC).with_suffix("").parts
    if parts == ("__init__",) or parts[0] in {"__main__"}:
        return None  # the package root re-exports; it is checked by the test below
    return SAME_LAYER.get(parts[0], parts[0])


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}:{node.lineno}: use absolute imports (bastion.x)")
    return found


def test_every_module_belongs_to_a_known_layer() -> None:
    unknown = {_layer_of(p) for p in _modules()} - set(RANK) - {None}
    assert not unknown, f"add these packages to RANK in {__file__}: {sorted(map(str, unknown))}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path: Path) -> None:
    layer = _layer_of(path)
    if layer is None:
        return
    for module, line in _imports(path):
        parts = module.split(".")
        if parts[0] != "bastion" or len(parts) < 2:
            continue
        target = SAME_LAYER.get(parts[1], parts[1])
        assert target in RANK, f"{path}:{line}: imports unknown layer bastion.{target}"
        if target == layer:
            continue
        assert RANK[target] < RANK[layer], (
            f"{path.relative_to(SRC)}:{line} ({layer}) imports bastion.{target}: "
            f"layers may only import layers below them"
        )


@pytest.mark.parametrize(
    "path", sorted((SRC / "core").rglob("*.py")), ids=lambda p: str(p.relative_to(SRC))
)
def test_core_is_sans_io(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    # One exception: ``from threading import Lock``. A lock guards in-memory state shared by
    # threads (the audit aggregation table); it starts no thread and does no I/O.
    locks = {
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.module == "threading"
        and [alias.name for alias in node.names] == ["Lock"]
    }
    for module, line in _imports(path):
        root = module.split(".")[0]
        if line in locks:
            continue
        assert root not in IO_MODULES, f"{path.relative_to(SRC)}:{line}: core imports {module}"
    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            assert node.arg not in {"scope", "environ", "receive", "send", "start_response"}, (
                f"{path.relative_to(SRC)}:{node.lineno}: core must not see ASGI/WSGI objects"
            )


def test_only_core_environment_reads_the_environment() -> None:
    # core/environment.py reads ENV / BASTION_ENV; config.py is Bastion.from_env(), the one place
    # configuration comes from the environment.
    allowed = {SRC / "core" / "environment.py", SRC / "config.py"}
    for path in _modules():
        if path in allowed:
            continue
        text = path.read_text(encoding="utf-8")
        for needle in ("os.environ", "getenv"):
            assert needle not in text, (
                f"{path.relative_to(SRC)} reads environment variables; "
                "read them in bastion.core.environment (or a Config.from_env) only"
            )


def test_the_checker_catches_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from bastion.asgi import something\nimport sqlite3\n", encoding="utf-8")
    imported = {m for m, _ in _imports(bad)}
    assert imported == {"bastion.asgi", "sqlite3"}
    assert RANK["asgi"] > RANK["core"]
    assert "sqlite3" in IO_MODULES
