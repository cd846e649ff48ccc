"""What a token endpoint answers, and the scope grammar (RFC 6749 sections 3.3 and 5.1)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Collection

__all__ = ["TokenPair", "scopes_of"]


@dataclass(frozen=True, slots=True, repr=False)
class TokenPair:
    """What a token endpoint answers (RFC 6749 section 5.1). ``repr`` hides the tokens."""

    access_token: str
    refresh_token: str | None
    expires_in: int
    token_type: str
    scope: str

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_in": self.expires_in,
        }
        if self.refresh_token is not None:
            body["refresh_token"] = self.refresh_token
        if self.scope:
            body["scope"] = self.scope
        return body

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode("ascii")

    def __repr__(self) -> str:
        return (
            f"TokenPair(token_type={self.token_type!r}, expires_in={self.expires_in}, "
            f"scope={self.scope!r}, refresh={'yes' if self.refresh_token else 'no'})"
        )


def scopes_of(scopes: Collection[str]) -> tuple[str, ...]:
    if isinstance(scopes, str):
        scopes = scopes.split()
    found: list[str] = []
    for scope in scopes:
        if (
            not isinstance(scope, str)
            or not scope
            or any(ord(c) < 0x21 or c in '"\\' or ord(c) > 0x7E for c in scope)
        ):
            raise ConfigurationError(
                "a scope is printable ASCII without spaces, quotes or backslashes "
                "(RFC 6749 section 3.3)",
                setting="scopes",
            )
        if scope not in found:
            found.append(scope)
    return tuple(found)
