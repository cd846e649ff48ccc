"""``Bastion``: the whole configuration of bastion's stack as one frozen, validated value.

::

    import bastion

    config = bastion.Bastion(
        store="sqlite:///app.db",                       # sessions, rate limits, throttle, keys
        keyring=bastion.KeyRing.from_secrets([secret]),  # signing and audit hashing
        rate_limits=(bastion.Rule("login", "10/minute", path="/login", methods={"POST"}),),
    )
    app = bastion.asgi.protect(app, config)              # or bastion.wsgi / bastion.flask

The value holds every shared setting once (the store, the key ring, the trusted proxies, the
auditor, the clock, the environment) and one slice per capability (``sessions``, ``csrf``,
``headers``, ``rate_limits``, ...). It is data: it can be printed (secrets and store passwords
are redacted), compared and built in a test. :meth:`Bastion.build` turns it into a
:class:`~bastion.runtime.Runtime`, which builds the engines once and composes the layers.

:meth:`Bastion.from_env` is the one place bastion reads environment variables (the variables
are listed there). Nothing else in bastion reads ``os.environ`` to configure itself, except the
environment name (``ENV`` / ``BASTION_ENV``) when ``environment=`` is left ``None``.

Opting out is explicit and logged when the runtime is built: ``csrf=None`` (no CSRF check) and
``headers=None`` (no security headers). ``ENV=production`` refuses cookie sessions without CSRF
and a missing key ring (a generated one changes on every restart and differs between workers).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from bastion.audit.policy import AuditPolicy
from bastion.authz.policy import AuthzPolicy
from bastion.core.audit import Auditor
from bastion.core.client import TrustedProxies
from bastion.core.clock import Clock, system_clock
from bastion.core.cors import CORSPolicy
from bastion.core.csrf import CSRFConfig
from bastion.core.environment import Environment, current_environment
from bastion.core.headers import HeaderPolicy, Preset
from bastion.core.keys import KeyRing, SecretKey
from bastion.core.login_monitor import LoginMonitorPolicy
from bastion.core.request_limits import RequestLimits
from bastion.core.sessions import SessionConfig
from bastion.core.throttle import ThrottlePolicy
from bastion.engine.ratelimit import Rule
from bastion.errors import ConfigurationError
from bastion.oidc.policy import OIDCPolicy
from bastion.stores.url import redact_url
from bastion.tokens.policy import TokenPolicy

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from bastion.core.login_monitor import Suspicion
    from bastion.core.sessions import SessionRecord
    from bastion.crypto.policy import CryptoPolicy
    from bastion.runtime import Runtime
    from bastion.stores.base import Store

__all__ = ["Bastion"]

logger = logging.getLogger("bastion.security.config")

_PRESETS: Final = {preset.value: preset for preset in Preset}


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class Bastion:
    """bastion's configuration (see the module docstring). Every field is optional.

    * ``store``: one store or store URL (``"sqlite:///app.db"``, ``"redis://host/0"``,
      ``"memory://"``) for sessions, rate limits, the login throttle, API keys and TOTP. No
      store: no server-side sessions, and CSRF needs ``TokenSource.DOUBLE_SUBMIT``.
    * ``keyring``: the one key ring (cookie signing, double-submit tokens, audit hashing,
      throttle and key lookups). ``None`` draws a throwaway ring (refused in production).
    * ``sessions``: a :class:`~bastion.core.sessions.SessionConfig` (default one when a store
      is set); ``user_loader`` and ``session_filter`` are the session hooks.
    * ``csrf``: a :class:`~bastion.core.csrf.CSRFConfig`; ``None`` turns CSRF off (logged;
      refused with cookie sessions in production). ``csrf_identity`` names the caller for
      ``skip_authenticated``.
    * ``headers``: a :class:`~bastion.core.headers.HeaderPolicy` or preset (``"strict"``,
      ``"api"``, ``"relaxed"``); ``None`` turns them off (logged). ``header_routes`` maps path
      patterns (:mod:`bastion.core.paths`) to other policies.
    * ``cors``: a :class:`~bastion.core.cors.CORSPolicy` naming the other origins that may
      read responses (``None``: no cross-origin reads, no CORS layer).
    * ``limits``: the :class:`~bastion.core.request_limits.RequestLimits` of every request (on
      by default: a 1 MiB body cap, 30 seconds for the body, 30 seconds to the response's
      start; per-route values in ``routes``); ``None`` turns the layer off (logged).
    * ``rate_limits``: :class:`~bastion.engine.ratelimit.Rule` values applied by the
      rate-limit layer, on ``store`` (no rules: no layer).
    * ``proxies``: the :class:`~bastion.core.client.TrustedProxies` whose forwarding headers
      are believed, for every layer: rate-limit keys, the session registry, audit events.
    * ``throttle``: the login throttle's :class:`~bastion.core.throttle.ThrottlePolicy`;
      ``totp_issuer``: the site name in authenticator apps (needed for ``runtime.totp``).
    * ``tokens``: a :class:`~bastion.tokens.TokenPolicy` (JWT access tokens, refresh families,
      DPoP; needs ``store`` and the ``jwt`` extra): ``runtime.tokens`` and the bearer layer.
    * ``oidc``: an :class:`~bastion.oidc.OIDCPolicy` (sign-in with OpenID Connect providers;
      needs ``store`` and the ``oidc`` extra): ``runtime.oidc``.
    * ``authz``: an :class:`~bastion.authz.AuthzPolicy` (roles, permissions, ABAC rules and
      an optional route table): ``runtime.authz`` and, with routes, the authorization layer.
    * ``crypto``: a :class:`~bastion.crypto.CryptoPolicy` (field encryption and blind
      indexes; the ``crypto`` extra): ``runtime.crypto``.
    * ``audit``: an :class:`~bastion.audit.AuditPolicy` (the stored, tamper-evident audit
      trail: SQLite by default, PostgreSQL or Redis Streams): ``runtime.audit``, and every
      layer's events go to it (and to the log) through ``runtime.auditor``. Not with
      ``auditor=``.
    * ``login_monitor``: a :class:`~bastion.core.login_monitor.LoginMonitorPolicy` (bursts of
      failed logins per account and per network, credential stuffing, a login from a new
      network: each an ``authn_login_suspicious`` event) and ``on_suspicion``, the app's hook
      called with each :class:`~bastion.core.login_monitor.Suspicion` (alert, require a second
      factor). ``runtime.login_monitor``.
    * ``auditor``: one :class:`~bastion.core.audit.Auditor` for every layer (default: JSON on
      the ``bastion.audit`` logger, identifiers hashed under ``keyring``); ``clock``; and
      ``environment`` (``None``: read once from ``ENV`` / ``BASTION_ENV`` at build time).
    """

    store: Store | str | None = None
    keyring: KeyRing | None = None
    sessions: SessionConfig | None = None
    user_loader: Callable[[str], Any] | None = None
    session_filter: Callable[[SessionRecord], bool] | None = None
    csrf: CSRFConfig | None = field(default_factory=CSRFConfig)
    csrf_identity: Callable[[Any], str | None] | None = None
    headers: HeaderPolicy | Preset | str | None = Preset.STRICT
    header_routes: Mapping[str, HeaderPolicy | Preset | str] = field(default_factory=dict)
    cors: CORSPolicy | None = None
    limits: RequestLimits | None = field(default_factory=RequestLimits)
    rate_limits: tuple[Rule, ...] = ()
    proxies: TrustedProxies = field(default_factory=TrustedProxies)
    throttle: ThrottlePolicy | None = None
    totp_issuer: str | None = None
    tokens: TokenPolicy | None = None
    authz: AuthzPolicy | None = None
    oidc: OIDCPolicy | None = None
    crypto: CryptoPolicy | None = None
    audit: AuditPolicy | None = None
    login_monitor: LoginMonitorPolicy | None = None
    on_suspicion: Callable[[Suspicion], None] | None = None
    auditor: Auditor | None = None
    clock: Clock = system_clock
    environment: Environment | None = None

    def __post_init__(self) -> None:  # noqa: PLR0912 (one check per field, in field order)
        set_ = object.__setattr__
        if self.store is not None and not isinstance(self.store, str):
            for method in ("get", "set", "compare_and_set", "delete"):
                if not callable(getattr(self.store, method, None)):
                    raise ConfigurationError(
                        f"store must be a store URL or a Store, got {type(self.store).__name__}",
                        setting="store",
                    )
        if isinstance(self.keyring, SecretKey):
            set_(self, "keyring", KeyRing(self.keyring))
        elif self.keyring is not None and not isinstance(self.keyring, KeyRing):
            raise ConfigurationError(
                "keyring must be a KeyRing (KeyRing.from_secrets([secret]))", setting="keyring"
            )
        if self.sessions is not None:
            if not isinstance(self.sessions, SessionConfig):
                raise ConfigurationError("sessions must be a SessionConfig", setting="sessions")
            if self.store is None:
                raise ConfigurationError(
                    "sessions= was given without store=; sessions live in the store, so pass "
                    "store='sqlite:///app.db' (or another store URL)",
                    setting="store",
                )
        if self.csrf is not None and not isinstance(self.csrf, CSRFConfig):
            raise ConfigurationError(
                "csrf must be a CSRFConfig, or None to turn CSRF off", setting="csrf"
            )
        if self.cors is not None and not isinstance(self.cors, CORSPolicy):
            raise ConfigurationError(
                "cors must be a CORSPolicy (CORSPolicy(allow_origins=('https://app.example',)))",
                setting="cors",
            )
        if self.limits is not None and not isinstance(self.limits, RequestLimits):
            raise ConfigurationError(
                "limits must be a RequestLimits (RequestLimits(max_body_bytes=...)), or None to "
                "turn the request limits off",
                setting="limits",
            )
        set_(self, "headers", _policy(self.headers, "headers", allow_none=True))
        if not hasattr(self.header_routes, "items"):
            raise ConfigurationError(
                "header_routes must map path patterns to policies ({'/docs/*': 'relaxed'})",
                setting="header_routes",
            )
        routes = {
            path: _policy(policy, f"header_routes[{path!r}]")
            for path, policy in self.header_routes.items()
        }
        set_(self, "header_routes", MappingProxyType(routes))
        limits = self.rate_limits
        limits = (limits,) if isinstance(limits, Rule) else tuple(limits)
        for rule in limits:
            if not isinstance(rule, Rule):
                raise ConfigurationError(
                    f"rate_limits must hold Rule values, got {type(rule).__name__}",
                    setting="rate_limits",
                )
        set_(self, "rate_limits", limits)
        if not isinstance(self.proxies, TrustedProxies):
            raise ConfigurationError(
                "proxies must be a TrustedProxies (TrustedProxies(['10.0.0.0/8']))",
                setting="proxies",
            )
        if self.throttle is not None and not isinstance(self.throttle, ThrottlePolicy):
            raise ConfigurationError("throttle must be a ThrottlePolicy", setting="throttle")
        if self.tokens is not None:
            if not isinstance(self.tokens, TokenPolicy):
                raise ConfigurationError(
                    "tokens must be a TokenPolicy (TokenPolicy(issuer='https://app.example'))",
                    setting="tokens",
                )
            if self.store is None:
                raise ConfigurationError(
                    "tokens= was given without store=; refresh families, the deny-list and "
                    "the user epochs live in the store, so pass store='sqlite:///app.db'",
                    setting="store",
                )
        _check_capabilities(self)
        if self.auditor is not None and not isinstance(self.auditor, Auditor):
            raise ConfigurationError("auditor must be an Auditor", setting="auditor")
        _check_data_protection(self)
        if not callable(getattr(self.clock, "now", None)):
            raise ConfigurationError("clock must have a now() method", setting="clock")
        if self.environment is not None and not isinstance(self.environment, Environment):
            set_(self, "environment", _environment(self.environment))
        for name in ("user_loader", "session_filter", "csrf_identity"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise ConfigurationError(f"{name} must be callable", setting=name)

    # -- reading ----------------------------------------------------------------------------

    @property
    def production(self) -> bool:
        """Whether the stack runs under ``ENV=production`` (``environment``, else read now)."""
        environment = self.environment if self.environment is not None else current_environment()
        return environment is Environment.PRODUCTION

    def replace(self, **changes: Any) -> Bastion:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def build(self) -> Runtime:
        """Build the :class:`~bastion.runtime.Runtime`: the engines, one auditor, the layers."""
        from bastion.runtime import Runtime  # noqa: PLC0415 (runtime imports this module)

        return Runtime(self)

    def __repr__(self) -> str:
        shown: list[str] = []
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.default is not dataclasses.MISSING and value == item.default:
                continue
            if item.name == "store" and isinstance(value, str):
                value = redact_url(value)
            elif item.name == "header_routes":
                if not value:
                    continue
                value = dict(value)
            elif (
                (item.name == "csrf" and value == CSRFConfig())
                or (item.name == "limits" and value == RequestLimits())
                or (item.name == "proxies" and not value.trusts_any)
            ):
                continue
            shown.append(f"{item.name}={value!r}")
        return f"Bastion({', '.join(shown)})"

    # -- the environment --------------------------------------------------------------------

    @classmethod
    def from_env(  # noqa: PLR0912 (one branch per variable, in the documented order)
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        prefix: str = "BASTION_",
        **overrides: Any,
    ) -> Bastion:
        """A configuration from environment variables (``environ``, default ``os.environ``),
        with ``overrides`` (any field) taking precedence. The variables, after ``prefix``:

        * ``STORE``: the store URL;
        * ``SECRET_KEY`` (or ``SECRET_KEY_FILE``, a file holding it): the current key;
          ``PREVIOUS_SECRET_KEYS`` (or ``..._FILE``): older keys, whitespace- or
          comma-separated, newest first, still accepted while they are rotated out;
        * ``TRUSTED_PROXIES``: proxy addresses or networks, comma-separated;
        * ``HEADERS``: a header preset (``strict``, ``api``, ``relaxed``);
        * ``PUBLIC_ORIGINS``, ``TRUSTED_ORIGINS``: CSRF origins, comma-separated;
        * ``CORS_ORIGINS``: the origins a :class:`~bastion.core.cors.CORSPolicy` lets read
          responses (comma-separated; other CORS settings go in ``cors=``);
        * ``TOTP_ISSUER``: the site name in authenticator apps;
        * ``TOKEN_ISSUER``: the ``iss`` of access tokens (turns tokens on); ``TOKEN_KEYS`` (or
          ``..._FILE``): a JWKS document of private keys, the first signing, the others
          verifying (required with ``TOKEN_ISSUER`` under ``ENV=production``);
        * ``AUTHZ_POLICY``: the path of an authorization policy file (JSON, YAML or TOML),
          roles kept in the store (other authorization settings go in ``authz=``).

        ``ENV`` / ``BASTION_ENV`` name the environment (:mod:`bastion.core.environment`).
        Under ``ENV=production`` a missing secret key is a :class:`ConfigurationError`. An
        unknown ``{prefix}`` variable is logged (a typo would otherwise be silent).
        """
        import os  # noqa: PLC0415 (the one place configuration reads the environment)

        env: Mapping[str, str] = os.environ if environ is None else environ
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*_", prefix):
            raise ConfigurationError(
                f"prefix must be upper-case letters, digits and '_' ending in '_', got {prefix!r}",
                setting="prefix",
            )
        environment = overrides.pop("environment", None)
        # Normalized here, not only in __post_init__: the production checks below (the key's
        # length, a missing key) must see environment="production" given as text.
        environment = current_environment(env) if environment is None else _environment(environment)
        production = environment is Environment.PRODUCTION
        values: dict[str, Any] = {"environment": environment}

        def read(name: str) -> str | None:
            value = env.get(prefix + name, "").strip()
            path = env.get(prefix + name + "_FILE", "").strip()
            if value and path:
                raise ConfigurationError(
                    f"{prefix}{name} and {prefix}{name}_FILE are both set; keep one",
                    setting=prefix + name,
                )
            if path:
                value = _read_setting_file(path, prefix + name + "_FILE")
                if not value:
                    raise ConfigurationError(
                        f"{prefix}{name}_FILE={path!r} is empty", setting=prefix + name + "_FILE"
                    )
            return value or None

        def listed(name: str) -> tuple[str, ...]:
            text = read(name)
            return tuple(part for part in re.split(r"[\s,]+", text or "") if part)

        if (store := read("STORE")) is not None:
            values["store"] = store
        current = read("SECRET_KEY")
        previous = listed("PREVIOUS_SECRET_KEYS")
        if current is not None:
            values["keyring"] = KeyRing.from_secrets(
                [current, *previous], setting=prefix + "SECRET_KEY", production=production
            )
        elif previous:
            raise ConfigurationError(
                f"{prefix}PREVIOUS_SECRET_KEYS is set without {prefix}SECRET_KEY",
                setting=prefix + "SECRET_KEY",
            )
        elif production and "keyring" not in overrides:
            raise ConfigurationError(
                f"{prefix}SECRET_KEY (or {prefix}SECRET_KEY_FILE) is required when "
                "ENV=production: a generated key changes on every restart and differs between "
                "workers. Generate one with `python -m bastion secret` or "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`",
                setting=prefix + "SECRET_KEY",
            )
        if proxies := listed("TRUSTED_PROXIES"):
            values["proxies"] = TrustedProxies(proxies)
        if (headers := read("HEADERS")) is not None:
            values["headers"] = _policy(headers, prefix + "HEADERS")
        public, trusted = listed("PUBLIC_ORIGINS"), listed("TRUSTED_ORIGINS")
        if (public or trusted) and "csrf" not in overrides:
            values["csrf"] = CSRFConfig(public_origins=public, trusted_origins=trusted)
        if (origins := listed("CORS_ORIGINS")) and "cors" not in overrides:
            values["cors"] = CORSPolicy(allow_origins=origins)
        if (issuer := read("TOTP_ISSUER")) is not None:
            values["totp_issuer"] = issuer
        if "tokens" not in overrides and (tokens := _tokens_from_env(read, prefix, production)):
            values["tokens"] = tokens
        if "authz" not in overrides and (policy_path := env.get(prefix + "AUTHZ_POLICY", "")):
            values["authz"] = AuthzPolicy(policy=Path(policy_path.strip()))
        known = {prefix + name for name in _ENV_NAMES}
        known |= {name + "_FILE" for name in known} | {prefix + "ENV"}
        for name in sorted(env):
            if (
                name.startswith(prefix)
                and name not in known
                and not name.startswith(prefix + "DEMO_")
            ):
                logger.warning("bastion: %s is not a setting Bastion.from_env() reads", name)
        values.update(overrides)
        return cls(**values)


_ENV_NAMES: Final = (
    "STORE",
    "SECRET_KEY",
    "PREVIOUS_SECRET_KEYS",
    "TRUSTED_PROXIES",
    "HEADERS",
    "PUBLIC_ORIGINS",
    "TRUSTED_ORIGINS",
    "CORS_ORIGINS",
    "TOTP_ISSUER",
    "TOKEN_ISSUER",
    "TOKEN_KEYS",
    "AUTHZ_POLICY",
)


def _check_capabilities(config: Bastion) -> None:
    """The authorization and sign-in slices: their types, and the store they need."""
    if config.authz is not None:
        if not isinstance(config.authz, AuthzPolicy):
            raise ConfigurationError(
                "authz must be an AuthzPolicy (AuthzPolicy(policy=Policy(...)) or "
                "AuthzPolicy(policy='policy.toml'))",
                setting="authz",
            )
        if config.authz.roles_in_store and config.store is None:
            raise ConfigurationError(
                "authz= keeps users' roles in bastion's store (roles='store') but no "
                "store= was given; pass store='sqlite:///app.db', or give AuthzPolicy a "
                "roles= loader that reads them from the app's own data",
                setting="store",
            )
    if config.oidc is not None:
        if not isinstance(config.oidc, OIDCPolicy):
            raise ConfigurationError(
                "oidc must be an OIDCPolicy (OIDCPolicy(providers=(Provider(...),)))",
                setting="oidc",
            )
        if config.store is None:
            raise ConfigurationError(
                "oidc= was given without store=; the single-use login states live in the "
                "store, so pass store='sqlite:///app.db'",
                setting="store",
            )
        if config.oidc.login == "tokens" and config.tokens is None:
            raise ConfigurationError(
                "OIDCPolicy(login='tokens') answers a sign-in with bastion's tokens: pass "
                "tokens=TokenPolicy(...) as well",
                setting="oidc.login",
            )


def _check_data_protection(config: Bastion) -> None:
    if config.crypto is not None:
        try:
            from bastion.crypto.policy import CryptoPolicy  # noqa: PLC0415 (the crypto extra)
        except ImportError as error:
            raise ConfigurationError(
                "crypto= needs the 'crypto' extra: pip install 'bastion[crypto]'",
                setting="crypto",
            ) from error
        if not isinstance(config.crypto, CryptoPolicy):
            raise ConfigurationError(
                "crypto must be a CryptoPolicy (CryptoPolicy(keys=...))", setting="crypto"
            )
    if config.login_monitor is not None and not isinstance(
        config.login_monitor, LoginMonitorPolicy
    ):
        raise ConfigurationError(
            "login_monitor must be a LoginMonitorPolicy(...)", setting="login_monitor"
        )
    if config.on_suspicion is not None and not callable(config.on_suspicion):
        raise ConfigurationError("on_suspicion must be callable", setting="on_suspicion")
    if config.on_suspicion is not None and config.login_monitor is None:
        raise ConfigurationError(
            "on_suspicion= was given without login_monitor=LoginMonitorPolicy(): nothing "
            "would call it",
            setting="on_suspicion",
        )
    if config.audit is not None:
        if not isinstance(config.audit, AuditPolicy):
            raise ConfigurationError(
                "audit must be an AuditPolicy (AuditPolicy(store='sqlite:///audit.db'))",
                setting="audit",
            )
        if config.auditor is not None:
            raise ConfigurationError(
                "audit= and auditor= both say where events go; give one (the stored trail "
                "also writes each event to the log)",
                setting="audit",
            )


def _policy(value: object, setting: str, *, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, HeaderPolicy | Preset):
        return value
    if isinstance(value, str) and value.lower() in _PRESETS:
        return _PRESETS[value.lower()]
    raise ConfigurationError(
        f"{setting} must be a HeaderPolicy or one of the presets {sorted(_PRESETS)}, got {value!r}",
        setting=setting,
    )


_MAX_SETTING_FILE_BYTES: Final = 64 * 1024


def _tokens_from_env(
    read: Callable[[str], str | None], prefix: str, production: bool
) -> TokenPolicy | None:
    """``TOKEN_ISSUER`` and ``TOKEN_KEYS`` as a :class:`TokenPolicy` (``None``: not set)."""
    issuer, keys = read("TOKEN_ISSUER"), read("TOKEN_KEYS")
    if issuer is None:
        if keys is not None:
            raise ConfigurationError(
                f"{prefix}TOKEN_KEYS is set without {prefix}TOKEN_ISSUER",
                setting=prefix + "TOKEN_ISSUER",
            )
        return None
    if keys is None and production:
        raise ConfigurationError(
            f"{prefix}TOKEN_KEYS (or {prefix}TOKEN_KEYS_FILE) is required with "
            f"{prefix}TOKEN_ISSUER when ENV=production: a generated signing key changes on "
            "every restart and differs between workers",
            setting=prefix + "TOKEN_KEYS",
        )
    key_set = None if keys is None else _token_keys(keys, prefix + "TOKEN_KEYS")
    return TokenPolicy(issuer=issuer, keys=key_set)


def _token_keys(text: str, setting: str) -> Any:
    """A signing key set from a private JWKS document: the first key signs, the others (older
    keys being rotated out) verify. Needs the ``jwt`` extra."""
    import json  # noqa: PLC0415 (only when tokens are configured from the environment)

    from bastion.core.tokens.jwk import JWTKey, JWTKeySet  # noqa: PLC0415 (the jwt extra)

    try:
        document = json.loads(text)
    except ValueError:
        raise ConfigurationError(
            f"{setting} is not JSON (a JWKS document)", setting=setting
        ) from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigurationError(
            f"{setting} must be a JWKS document with a non-empty 'keys' list", setting=setting
        )
    keys = [JWTKey.from_jwk(entry) for entry in entries]
    if not keys[0].can_sign:
        raise ConfigurationError(
            f"{setting}: the first key signs, so it must hold its private half", setting=setting
        )
    return JWTKeySet(keys[0], verifying=keys[1:])


def _read_setting_file(path: str, setting: str) -> str:
    """The text of a ``*_FILE`` setting, stripped. Read with a bound (a mistaken path such as a
    log file or ``/dev/zero`` is refused, not read whole into memory), and errors never quote
    the file's content: it is meant to hold a secret."""
    try:
        with Path(path).open("rb") as file:
            raw = file.read(_MAX_SETTING_FILE_BYTES + 1)
    except OSError as error:
        raise ConfigurationError(
            f"{setting}={path!r} cannot be read ({error.strerror})", setting=setting
        ) from None
    if len(raw) > _MAX_SETTING_FILE_BYTES:
        raise ConfigurationError(
            f"{setting}={path!r} is larger than {_MAX_SETTING_FILE_BYTES} bytes; it should hold "
            "one setting (a secret key is a single line)",
            setting=setting,
        )
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigurationError(
            f"{setting}={path!r} is not UTF-8 text; write the key as text "
            "(`python -m bastion secret` prints one)",
            setting=setting,
        ) from None


def _environment(value: object) -> Environment:
    if isinstance(value, Environment):
        return value
    if isinstance(value, str):
        try:
            return Environment(value.lower())
        except ValueError:
            pass
    raise ConfigurationError(
        f"environment must be an Environment ({', '.join(e.value for e in Environment)}), got "
        f"{value!r}",
        setting="environment",
    )
