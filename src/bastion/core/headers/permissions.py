"""``Permissions-Policy``: which browser features (camera, geolocation, ...) a page may use."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bastion.core.headers.vocabulary import _short
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ["PermissionsPolicy"]

_FEATURE = re.compile(r"[a-z][a-z0-9-]*")
_ORIGIN = re.compile(r"https?://(?:\*\.)?[A-Za-z0-9.-]+(?::[0-9]{1,5})?")


@dataclass(frozen=True, slots=True, init=False)
class PermissionsPolicy:
    """A ``Permissions-Policy`` header from features and their allowlists::

        PermissionsPolicy(camera=(), geolocation=["self", "https://maps.example"])

    ``()`` disables the feature everywhere, ``"self"`` allows this origin, ``"*"`` every origin,
    origins are written as ``https://host[:port]``. Keyword arguments use ``_`` for ``-``.
    """

    features: tuple[tuple[str, tuple[str, ...]], ...]

    def __init__(
        self, features: Mapping[str, Iterable[str] | str] | None = None, /, **more: Iterable[str]
    ) -> None:
        checked: dict[str, tuple[str, ...]] = {}
        items = [*(features or {}).items(), *((k.replace("_", "-"), v) for k, v in more.items())]
        for name, allow in items:
            setting = f"permissions_policy.{name}"
            if not isinstance(name, str) or _FEATURE.fullmatch(name) is None:
                raise ConfigurationError(
                    f"permissions_policy: feature {_short(name)} must be lowercase letters, "
                    "digits and '-' (e.g. 'camera')",
                    setting="permissions_policy",
                )
            members = [allow] if isinstance(allow, str) else list(allow)
            rendered: list[str] = []
            for member in members:
                folded = member.strip("'").lower() if isinstance(member, str) else None
                if folded in {"self", "src", "*"}:
                    rendered.append(folded)
                elif folded == "none":
                    continue
                elif isinstance(member, str) and _ORIGIN.fullmatch(member):
                    rendered.append(f'"{member}"')
                else:
                    raise ConfigurationError(
                        f"{setting}: {_short(member)} is not 'self', '*' or an origin such as "
                        "'https://example.com'",
                        setting=setting,
                    )
            if "*" in rendered and len(rendered) > 1:
                raise ConfigurationError(
                    f"{setting}: '*' already allows every origin", setting=setting
                )
            checked[name] = tuple(rendered)
        object.__setattr__(self, "features", tuple(checked.items()))

    def render(self) -> str:
        parts = []
        for name, allow in self.features:
            if allow == ("*",):
                parts.append(f"{name}=*")
            else:
                parts.append(f"{name}=({' '.join(allow)})")
        return ", ".join(parts)
