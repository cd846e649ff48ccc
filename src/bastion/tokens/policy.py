"""``TokenPolicy``: the tokens slice of :class:`~bastion.config.Bastion`.

Frozen and validated, so a bad setting fails at start-up with a message naming it. The
defaults follow RFC 9068 and RFC 9700: short-lived access tokens (5 minutes), refresh tokens
rotated on every use inside a family whose absolute lifetime never grows, DPoP off unless the
app turns it on.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bastion.core._check import seconds, whole_number
from bastion.core.paths import PathPattern
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from bastion.core.tokens.jwk import JWTKeySet
    from bastion.engine.tokens.refresh import RefreshPolicy

__all__ = ["ACCESS_TYP", "PENDING_TYP", "DPoPMode", "TokenPolicy"]

ACCESS_TYP = "at+jwt"
"""The ``typ`` of access tokens (RFC 9068 section 2.1)."""

PENDING_TYP = "2fa-pending+jwt"
"""The ``typ`` of second-factor-pending tokens: a password was right, a second factor is due.
Its audience differs from the access tokens' too, so neither can stand in for the other."""

MIN_ACCESS_LIFETIME = 10.0
MAX_ACCESS_LIFETIME = 24 * 3600.0


class DPoPMode(enum.StrEnum):
    """Whether access and refresh tokens are sender-constrained with DPoP (RFC 9449)."""

    OFF = "off"  # Bearer only; a DPoP proof is ignored and never binds a token
    ALLOWED = "allowed"  # a client that sends a proof at issue gets bound tokens
    REQUIRED = "required"  # every issue and every use needs a proof


def _seconds(value: object, setting: str, low: float, high: float) -> float:
    found = seconds(setting, value, allow_zero=True)
    if not low <= found <= high:
        raise ConfigurationError(
            f"{setting} must be between {low:g} and {high:g} seconds, got {found:g}",
            setting=setting,
        )
    return found


def _text(value: object, setting: str) -> str:
    if not isinstance(value, str) or not value or value != value.strip() or len(value) > 512:
        raise ConfigurationError(
            f"{setting} must be non-empty text without surrounding spaces (at most 512 characters)",
            setting=setting,
        )
    if any(ord(char) < 0x21 or ord(char) == 0x7F for char in value):
        raise ConfigurationError(
            f"{setting} must not contain spaces or control characters", setting=setting
        )
    return value


def _default_refresh() -> RefreshPolicy:
    from bastion.engine.tokens.refresh import RefreshPolicy  # noqa: PLC0415

    return RefreshPolicy()


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenPolicy:
    """How bastion issues and checks tokens.

    * ``issuer``: the ``iss`` of every token, compared exactly (``"https://app.example"``).
    * ``audience``: the ``aud`` access tokens carry and require (default: ``issuer``). Other
      token kinds get distinct audiences derived from it.
    * ``keys``: the :class:`~bastion.core.tokens.jwk.JWTKeySet` (``kid -> (key, alg)``).
      ``None`` draws a throwaway Ed25519 key, refused under ``ENV=production`` (tokens would
      not survive a restart or verify on another worker).
    * ``access_lifetime``: seconds an access token lives (default 300; 10 s to 1 day).
    * ``pending_lifetime``: seconds a second-factor-pending token lives (default 300).
    * ``refresh``: the :class:`~bastion.engine.tokens.refresh.RefreshPolicy` of refresh
      families; ``None``: no refresh tokens.
    * ``leeway``: clock skew accepted on ``exp``/``nbf``/``iat`` (default 30 s, at most 300).
    * ``max_bytes``: the size cap applied to a token before any decoding (default 8 KiB).
    * ``dpop``: :class:`DPoPMode` (default off).
    * ``protect``: path patterns (:mod:`bastion.core.paths`) on which the bearer layer refuses
      a request without a valid access token (fails closed).
    * ``optional``: path patterns on which a valid access token is attached and a missing one
      is no error; a ``Bearer`` or ``DPoP`` credential that fails is still refused (401), so
      a revoked or forged token never passes as an anonymous request. No patterns in either:
      no bearer layer (handlers call ``runtime.tokens.authenticate`` themselves).
    * ``realm``: the ``realm`` of ``WWW-Authenticate`` challenges.
    """

    issuer: str
    audience: str | None = None
    keys: JWTKeySet | None = None
    access_lifetime: float = 300.0
    pending_lifetime: float = 300.0
    refresh: RefreshPolicy | None = field(default_factory=_default_refresh)
    leeway: float = 30.0
    max_bytes: int = 8192
    dpop: DPoPMode = DPoPMode.OFF
    protect: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    realm: str = "api"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        _text(self.issuer, "tokens.issuer")
        set_(self, "audience", _text(self.audience or self.issuer, "tokens.audience"))
        if self.keys is not None:
            from bastion.core.tokens.jwk import JWTKeySet  # noqa: PLC0415 (the jwt extra)

            if not isinstance(self.keys, JWTKeySet):
                raise ConfigurationError(
                    "tokens.keys must be a JWTKeySet (JWTKeySet(JWTKey.generate('EdDSA')))",
                    setting="tokens.keys",
                )
            if self.keys.signing is None:
                raise ConfigurationError(
                    "tokens.keys has no signing key: bastion issues tokens, so give the set "
                    "a private key to sign with",
                    setting="tokens.keys",
                )
        set_(
            self,
            "access_lifetime",
            _seconds(
                self.access_lifetime,
                "tokens.access_lifetime",
                MIN_ACCESS_LIFETIME,
                MAX_ACCESS_LIFETIME,
            ),
        )
        set_(
            self,
            "pending_lifetime",
            _seconds(self.pending_lifetime, "tokens.pending_lifetime", 10.0, 3600.0),
        )
        set_(self, "leeway", _seconds(self.leeway, "tokens.leeway", 0.0, 300.0))
        whole_number("tokens.max_bytes", self.max_bytes, low=512, high=65536)
        try:
            set_(self, "dpop", DPoPMode(self.dpop))
        except ValueError:
            raise ConfigurationError(
                "tokens.dpop must be 'off', 'allowed' or 'required'", setting="tokens.dpop"
            ) from None
        for name in ("protect", "optional"):
            value = getattr(self, name)
            patterns = (value,) if isinstance(value, str) else tuple(value)
            for pattern in patterns:
                PathPattern.parse(pattern, setting=f"tokens.{name}")
            set_(self, name, patterns)
        _text(self.realm, "tokens.realm")
        if '"' in self.realm or "\\" in self.realm:
            raise ConfigurationError(
                "tokens.realm must not contain quotes or backslashes", setting="tokens.realm"
            )

    @property
    def access_audience(self) -> str:
        """The audience access tokens carry and require (``audience``, else ``issuer``)."""
        return self.audience or self.issuer

    def check_environment(self, *, production: bool) -> None:
        """Refuse what production must not run with: a generated signing key, which changes
        on every restart and differs between workers, so issued tokens would stop verifying."""
        if production and self.keys is None:
            raise ConfigurationError(
                "TokenPolicy(keys=None) under ENV=production: a generated signing key changes "
                "on every restart and differs between workers, so issued tokens would stop "
                "verifying. Pass keys=JWTKeySet(JWTKey.from_pem(...)) or set "
                "BASTION_TOKEN_KEYS_FILE (Bastion.from_env())",
                setting="tokens.keys",
            )

    @property
    def longest_lifetime(self) -> float:
        """How long anything this policy issues can live (seconds): the user epoch record must
        outlive it, or a "log out everywhere" would be forgotten while a token still works."""
        refresh = 0.0 if self.refresh is None else self.refresh.lifetime
        return max(self.access_lifetime, self.pending_lifetime, refresh)

    @property
    def pending_audience(self) -> str:
        """The audience of second-factor-pending tokens: never the access tokens' one."""
        return f"{self.access_audience}#2fa-pending"
