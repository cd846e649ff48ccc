"""The WSGI types bastion's adapters and users share, defined once (PEP 3333)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

__all__ = ["Environ", "StartResponse", "WSGIApp"]

Environ: TypeAlias = dict[str, Any]
StartResponse: TypeAlias = Callable[..., Callable[[bytes], object]]
"""``start_response``: returns the legacy ``write`` callable (PEP 3333)."""
WSGIApp: TypeAlias = Callable[[Environ, StartResponse], Iterable[bytes]]
