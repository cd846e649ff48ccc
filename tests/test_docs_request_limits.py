"""docs/request-limits.md's examples run: its python blocks in order in one namespace (with a
Starlette ``app`` to protect), and the protected app refuses what the page says it refuses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from starlette.applications import Starlette

from bastion.asgi.limits import RequestLimitsMiddleware
from bastion.core.request_limits import RequestLimits

PAGE: Final = Path(__file__).resolve().parent.parent / "docs" / "request-limits.md"


def _blocks() -> list[str]:
    text = PAGE.read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


@pytest.mark.asyncio
async def test_the_python_blocks_run_in_order() -> None:
    namespace: dict[str, Any] = {"app": Starlette()}
    blocks = _blocks()
    assert len(blocks) == 3
    for number, block in enumerate(blocks):
        exec(compile(block, f"docs/request-limits.md block {number}", "exec"), namespace)
    assert isinstance(namespace["limited"], RequestLimitsMiddleware)
    assert namespace["config"].limits.max_body_bytes == 64 * 1024
    transport = httpx.ASGITransport(namespace["app"])
    async with httpx.AsyncClient(transport=transport, base_url="https://localhost") as http:
        refused = await http.post("/anything", content=b"x" * (64 * 1024 + 1))
    assert refused.status_code == 413
    assert refused.json()["error"] == "body_too_large"


def test_the_defaults_table_is_true() -> None:
    text = PAGE.read_text(encoding="utf-8")
    defaults = RequestLimits()
    assert f"{defaults.max_body_bytes:,} bytes" in text
    assert f"| `body_timeout` | {defaults.body_timeout:g} s" in text
    assert f"| `handler_timeout` | {defaults.handler_timeout:g} s" in text
    assert f"`Retry-After: {defaults.retry_after}`" in text
