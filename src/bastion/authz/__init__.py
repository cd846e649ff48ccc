"""Authorization: roles, permissions, ownership and ABAC policies behind ``Bastion(authz=...)``."""

from __future__ import annotations

__all__: list[str] = []
