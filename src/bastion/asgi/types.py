"""The ASGI types bastion's adapters and users share, defined once.

Frameworks type scopes and messages their own way (Litestar and Quart with TypedDicts), so an
app is any ASGI callable (:data:`ASGIApp`), not one held to the :data:`Scope` alias.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeAlias

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send"]

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[..., Awaitable[None]]
