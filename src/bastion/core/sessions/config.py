"""SessionConfig: how sessions behave, frozen and validated at start-up."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from bastion.core import _check
from bastion.core.cookies import MAX_AGE_LIMIT, Cookie, SameSite
from bastion.core.sessions.ids import DEFAULT_COOKIE_NAME, DEVELOPMENT_COOKIE_NAME
from bastion.errors import ConfigurationError, CookieError

__all__ = ["SessionConfig"]

logger = logging.getLogger("bastion.security.sessions")


def _check_seconds(name: str, value: object, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(
            f"{name} must be a finite number of seconds greater than 0"
            + (" or None" if allow_none else "")
            + f", got {value!r}",
            setting=name,
        )
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionConfig:
    """How sessions behave. Frozen and validated here, so a bad setting fails at start-up.

    Cookie policy: the defaults are ``__Host-session``, ``Secure``, ``HttpOnly``,
    ``SameSite=Lax``, ``Path=/``, no ``Domain``. ``secure=False`` is refused unless
    ``development=True`` (plain-HTTP development on localhost); the middleware refuses
    ``development=True``, ``http_only=False`` and ``same_site=SameSite.NONE`` outright when the
    environment is production and logs a warning for each otherwise
    (:meth:`check_environment`). ``cookie_name=None`` picks :data:`DEFAULT_COOKIE_NAME`, or
    :data:`DEVELOPMENT_COOKIE_NAME` in development.

    Lifetimes (seconds): ``idle_timeout`` and ``absolute_lifetime`` for browser-session cookies,
    ``persistent_idle_timeout`` and ``persistent_absolute_lifetime`` for "remember me" sessions
    (``persistent=True`` makes that the default for every session). ``renew_every`` (or
    ``None``) is the ID renewal period and ``renew_grace`` how long the previous ID keeps
    working. ``touch_interval`` throttles idle-deadline refreshes.

    ``max_bytes`` caps the encoded record. ``clear_site_data`` adds
    ``Clear-Site-Data: "cookies"`` to logout responses. ``signed`` signs the cookie value with the
    key ring given to the middleware (an extra check, not a substitute for the 256-bit ID).
    """

    cookie_name: str | None = None
    secure: bool = True
    http_only: bool = True
    same_site: SameSite = SameSite.LAX
    domain: str | None = None
    path: str = "/"
    development: bool = False
    persistent: bool = False
    idle_timeout: float = 30 * 60.0
    absolute_lifetime: float = 12 * 3600.0
    persistent_idle_timeout: float = 14 * 86400.0
    persistent_absolute_lifetime: float = 30 * 86400.0
    renew_every: float | None = 15 * 60.0
    renew_grace: float = 30.0
    touch_interval: float = 60.0
    max_bytes: int = 64 * 1024
    clear_site_data: bool = True
    signed: bool = False
    cookie: Cookie = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("secure", "http_only", "development", "persistent", "clear_site_data"):
            _check.flag(name, getattr(self, name))
        _check.flag("signed", self.signed)
        if not self.secure and not self.development:
            raise ConfigurationError(
                "secure=False sends the session cookie over plain HTTP, where anyone on the "
                "path can read it; keep secure=True, or set development=True for local "
                "plain-HTTP development (refused when ENV=production)",
                setting="secure",
            )
        for name in (
            "idle_timeout",
            "absolute_lifetime",
            "persistent_idle_timeout",
            "persistent_absolute_lifetime",
            "renew_grace",
            "touch_interval",
        ):
            object.__setattr__(self, name, _check_seconds(name, getattr(self, name)))
        renew = _check_seconds("renew_every", self.renew_every, allow_none=True)
        object.__setattr__(self, "renew_every", renew)
        if self.touch_interval >= self.idle_timeout:
            raise ConfigurationError(
                f"touch_interval ({self.touch_interval:g} s) must be shorter than idle_timeout "
                f"({self.idle_timeout:g} s), or an active user would be logged out",
                setting="touch_interval",
            )
        if self.idle_timeout > self.absolute_lifetime:
            raise ConfigurationError(
                "idle_timeout must not exceed absolute_lifetime; lower idle_timeout",
                setting="idle_timeout",
            )
        if self.persistent_idle_timeout > self.persistent_absolute_lifetime:
            raise ConfigurationError(
                "persistent_idle_timeout must not exceed persistent_absolute_lifetime",
                setting="persistent_idle_timeout",
            )
        if self.persistent_absolute_lifetime > MAX_AGE_LIMIT:
            raise ConfigurationError(
                f"persistent_absolute_lifetime is over {MAX_AGE_LIMIT} s (400 days), which "
                "browsers clamp cookies to; lower it",
                setting="persistent_absolute_lifetime",
            )
        if (
            isinstance(self.max_bytes, bool)
            or not isinstance(self.max_bytes, int)
            or not 1024 <= self.max_bytes <= 1024 * 1024
        ):
            raise ConfigurationError(
                f"max_bytes must be a whole number between 1024 and 1048576, got "
                f"{self.max_bytes!r}",
                setting="max_bytes",
            )
        cookie_name: str = self.cookie_name or (
            DEVELOPMENT_COOKIE_NAME if not self.secure else DEFAULT_COOKIE_NAME
        )
        object.__setattr__(self, "cookie_name", cookie_name)
        try:
            cookie = Cookie(
                name=cookie_name,
                secure=self.secure,
                http_only=self.http_only,
                same_site=self.same_site,
                domain=self.domain,
                path=self.path,
            )
        except CookieError as exc:
            raise ConfigurationError(f"session cookie policy: {exc}", setting="cookie") from exc
        object.__setattr__(self, "cookie", cookie)
        object.__setattr__(self, "same_site", cookie.same_site)  # "None" -> SameSite.NONE

    @property
    def name(self) -> str:
        """The cookie name in effect."""
        return self.cookie.name

    def check_environment(self, *, production: bool) -> None:
        """Refuse every insecure cookie setting in production; warn about each one elsewhere.

        The insecure settings: ``development=True`` (which allows ``secure=False``),
        ``http_only=False`` (page scripts, and so any XSS, can read the session ID) and
        ``same_site=SameSite.NONE`` (the cookie rides on cross-site requests, leaving CSRF
        protection alone in the way). A ``Secure`` cookie named without the ``__Host-`` /
        ``__Secure-`` prefix is logged, not refused. Called once by each middleware at
        start-up, so each warning is logged once per app.
        """
        weak = [
            (flag, why)
            for flag, on, why in (
                (
                    "development",
                    self.development,
                    (
                        f"development=True (secure={self.secure}): the session cookie may "
                        "travel over plain HTTP"
                    ),
                ),
                (
                    "http_only",
                    not self.http_only,
                    "http_only=False: page scripts (and any XSS) can read the session cookie",
                ),
                (
                    "same_site",
                    self.same_site is SameSite.NONE,
                    "same_site=SameSite.NONE: the session cookie is sent on cross-site requests",
                ),
            )
            if on
        ]
        if production and weak:
            flag, why = weak[0]
            raise ConfigurationError(
                f"{why}; this is refused when ENV=production. Remove the setting (the default "
                "is Secure, HttpOnly, SameSite=Lax)",
                setting=flag,
            )
        for flag, why in weak:
            logger.warning(
                "bastion sessions: %s (setting %s). Never use it in production", why, flag
            )
        if not self.clear_site_data:
            logger.warning(
                "bastion sessions: clear_site_data=False; logout leaves the browser's other "
                "cookies and storage of this origin in place (setting clear_site_data)"
            )
        if self.secure and not self.cookie.name.startswith(("__Host-", "__Secure-")):
            logger.warning(
                "bastion sessions: cookie_name=%r has no __Host- or __Secure- prefix; a "
                "subdomain can then set or shadow the session cookie (setting cookie_name)",
                self.cookie.name,
            )

    def lifetimes(self, persistent: bool) -> tuple[float, float]:
        """``(idle_timeout, absolute_lifetime)`` for a session of that kind."""
        if persistent:
            return self.persistent_idle_timeout, self.persistent_absolute_lifetime
        return self.idle_timeout, self.absolute_lifetime
