"""``HeaderPolicy``: which security headers to send, validated when built, and its presets.

The reasons behind each default and preset are in the package docstring
(:mod:`bastion.core.headers`). :meth:`HeaderPolicy.compile` renders every header once into
``(name, value)`` pairs for :class:`~bastion.core.headers.CompiledHeaders`;
:meth:`HeaderPolicy.weaknesses` lists what a policy turns off
(:mod:`bastion.core.headers.weaknesses`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bastion.core import _check
from bastion.core.headers.compiled import _NONCE_MARK, CompiledHeaders
from bastion.core.headers.csp import NONCE, ContentSecurityPolicy
from bastion.core.headers.permissions import PermissionsPolicy
from bastion.core.headers.vocabulary import (
    _SOURCE,
    CrossDomainPolicies,
    CrossOriginEmbedderPolicy,
    CrossOriginOpenerPolicy,
    CrossOriginResourcePolicy,
    DNSPrefetchControl,
    Preset,
    ReferrerPolicy,
    XFrameOptions,
    _check_value,
    _coerce,
    _short,
)
from bastion.core.headers.weaknesses import check_environment, weaknesses
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from bastion.core.headers.weaknesses import Weakness

__all__ = ["HeaderPolicy"]

_ENDPOINT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_HSTS_PRELOAD_MIN = 31_536_000  # hstspreload.org: at least one year
_HSTS_MAX = 2**31 - 1

_STRICT_CSP = ContentSecurityPolicy(
    default_src="'none'",
    script_src=[NONCE, "'strict-dynamic'"],
    style_src=["'self'", NONCE],
    img_src="'self'",
    font_src="'self'",
    connect_src="'self'",
    manifest_src="'self'",
    form_action="'self'",
    base_uri="'none'",
    frame_ancestors="'none'",
)
_API_CSP = ContentSecurityPolicy(default_src="'none'", frame_ancestors="'none'")
_RELAXED_CSP = ContentSecurityPolicy(
    default_src="'self'",
    script_src=["'self'", NONCE],
    style_src=["'self'", "'unsafe-inline'"],
    img_src=["'self'", "data:", "https:"],
    font_src=["'self'", "data:", "https:"],
    object_src="'none'",
    base_uri="'self'",
    form_action="'self'",
    frame_ancestors="'self'",
)
_STRICT_PERMISSIONS = PermissionsPolicy(
    accelerometer=(),
    autoplay=(),
    camera=(),
    display_capture=(),
    encrypted_media=(),
    fullscreen=("self",),
    geolocation=(),
    gyroscope=(),
    magnetometer=(),
    microphone=(),
    midi=(),
    payment=(),
    picture_in_picture=(),
    publickey_credentials_get=("self",),
    screen_wake_lock=(),
    usb=(),
    xr_spatial_tracking=(),
)
_RELAXED_PERMISSIONS = PermissionsPolicy(camera=(), geolocation=(), microphone=(), payment=())


_Csp = ContentSecurityPolicy | str | None
_Permissions = PermissionsPolicy | Mapping[str, Iterable[str] | str] | str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderPolicy:
    """Which security headers to send, validated when built; :meth:`compile` renders them.

    The defaults are the ``strict`` preset. :meth:`preset` gives the others, with overrides::

        HeaderPolicy.preset("api", cache_control=None)
        HeaderPolicy(csp_policy=ContentSecurityPolicy.parse("default-src 'self'"))

    Parameters named as in the common reference middleware: ``hsts_max_age``,
    ``include_subdomains``, ``csp_policy``, ``referrer_policy``, ``coop_policy``,
    ``coep_policy``. ``None`` leaves a header out.

    ``report_to`` (a path such as ``"/csp-report"`` or an absolute ``https://`` URL) adds
    ``report-to`` and ``report-uri`` to both CSPs and a ``Reporting-Endpoints`` header; the
    middlewares serve a path given here with their bounded report receiver.
    """

    hsts_max_age: int | None = 63_072_000
    include_subdomains: bool = True
    hsts_preload: bool = False
    hsts_over_http: bool = False
    csp_policy: _Csp = _STRICT_CSP
    csp_report_only: _Csp = None
    report_to: str | None = None
    report_group: str = "csp-endpoint"
    permissions_policy: _Permissions = _STRICT_PERMISSIONS
    referrer_policy: ReferrerPolicy | str | None = ReferrerPolicy.STRICT_ORIGIN_WHEN_CROSS_ORIGIN
    coop_policy: CrossOriginOpenerPolicy | str | None = CrossOriginOpenerPolicy.SAME_ORIGIN
    coep_policy: CrossOriginEmbedderPolicy | str | None = CrossOriginEmbedderPolicy.REQUIRE_CORP
    corp_policy: CrossOriginResourcePolicy | str | None = CrossOriginResourcePolicy.SAME_ORIGIN
    x_frame_options: XFrameOptions | str | None = XFrameOptions.AUTO
    nosniff: bool = True
    x_xss_protection_zero: bool = True
    x_permitted_cross_domain_policies: CrossDomainPolicies | str | None = CrossDomainPolicies.NONE
    origin_agent_cluster: bool = True
    x_dns_prefetch_control: DNSPrefetchControl | str | None = DNSPrefetchControl.OFF
    cache_control: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    remove: tuple[str, ...] = ("server", "x-powered-by")
    force: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for flag in (
            "include_subdomains",
            "hsts_preload",
            "hsts_over_http",
            "nosniff",
            "x_xss_protection_zero",
            "origin_agent_cluster",
        ):
            _check.flag(flag, getattr(self, flag))
        self._check_hsts()
        self._check_policies()
        self._check_names()
        self._check_reporting()

    def _check_policies(self) -> None:
        put = object.__setattr__
        for setting in ("csp_policy", "csp_report_only"):
            value = getattr(self, setting)
            if isinstance(value, str):
                put(self, setting, ContentSecurityPolicy.parse(value))
            elif value is not None and not isinstance(value, ContentSecurityPolicy):
                raise ConfigurationError(
                    f"{setting} must be a ContentSecurityPolicy, a str or None", setting=setting
                )
        permissions = self.permissions_policy
        if isinstance(permissions, str):
            _check_value("permissions_policy", permissions)
        elif isinstance(permissions, Mapping):
            put(self, "permissions_policy", PermissionsPolicy(permissions))
        elif permissions is not None and not isinstance(permissions, PermissionsPolicy):
            raise ConfigurationError(
                "permissions_policy must be a PermissionsPolicy, a mapping, a str or None",
                setting="permissions_policy",
            )
        for setting, kind in (
            ("referrer_policy", ReferrerPolicy),
            ("coop_policy", CrossOriginOpenerPolicy),
            ("coep_policy", CrossOriginEmbedderPolicy),
            ("corp_policy", CrossOriginResourcePolicy),
            ("x_frame_options", XFrameOptions),
            ("x_permitted_cross_domain_policies", CrossDomainPolicies),
            ("x_dns_prefetch_control", DNSPrefetchControl),
        ):
            value = getattr(self, setting)
            if value is not None:
                put(self, setting, _coerce(kind, setting, value))
        if self.cache_control is not None:
            _check_value("cache_control", self.cache_control)

    def _check_names(self) -> None:
        put = object.__setattr__
        if not isinstance(self.extra, Mapping):
            raise ConfigurationError("extra must be a mapping of header names to values")
        put(
            self,
            "extra",
            {
                _check.header_name("extra", k): _check_value(f"extra[{k!r}]", v)
                for k, v in self.extra.items()
            },
        )
        if isinstance(self.remove, str) or not isinstance(self.remove, Iterable):
            raise ConfigurationError("remove must be a tuple of header names", setting="remove")
        put(self, "remove", tuple(_check.header_name("remove", n) for n in self.remove))
        if isinstance(self.force, str) or not isinstance(self.force, Iterable):
            raise ConfigurationError("force must be a set of header names", setting="force")
        put(self, "force", frozenset(_check.header_name("force", n) for n in self.force))

    def _check_hsts(self) -> None:
        max_age = self.hsts_max_age
        if max_age is None:
            return
        _check.whole_number(
            "hsts_max_age", max_age, low=0, unit="seconds", hint="or None to send no HSTS"
        )
        if max_age > _HSTS_MAX:
            raise ConfigurationError(
                f"hsts_max_age={max_age} is too large; 63072000 (two years) is the usual value",
                setting="hsts_max_age",
            )
        if self.hsts_preload and (max_age < _HSTS_PRELOAD_MIN or not self.include_subdomains):
            raise ConfigurationError(
                "hsts_preload=True needs hsts_max_age >= 31536000 and include_subdomains=True "
                "(the preload list refuses anything less)",
                setting="hsts_preload",
            )

    def _check_reporting(self) -> None:
        target = self.report_to
        if _ENDPOINT_NAME.fullmatch(self.report_group) is None:
            raise ConfigurationError(
                f"report_group={_short(self.report_group)} must be a name of letters, digits, "
                "'_' and '-'",
                setting="report_group",
            )
        if target is None:
            return
        _check_value("report_to", target)
        if not (target.startswith("/") and not target.startswith("//")) and not (
            target.startswith("https://") and _SOURCE.fullmatch(target)
        ):
            raise ConfigurationError(
                f"report_to={_short(target)} must be a path ('/csp-report') or an https:// URL",
                setting="report_to",
            )
        if '"' in target:
            raise ConfigurationError("report_to must not contain '\"'", setting="report_to")

    def weaknesses(self) -> tuple[Weakness, ...]:
        """The protections this policy turns off or weakens, in setting order (none for the
        presets): :func:`bastion.core.headers.weaknesses.weaknesses`. See
        :meth:`check_environment` for what is done with them."""
        return weaknesses(self)

    def check_environment(self, *, production: bool | None = None, where: str = "") -> None:
        """Refuse the weaknesses marked ``refused_in_production`` in production; log the others
        (:func:`bastion.core.headers.weaknesses.check_environment`).

        ``production=None`` asks :func:`bastion.core.environment.is_production`. Called once per
        policy by :class:`~bastion.core.headers.HeaderRouter` at start-up, so each warning is
        logged once per middleware; ``where`` (an override's path pattern) is named in the
        message.
        """
        check_environment(self, production=production, where=where)

    @classmethod
    def preset(cls, name: Preset | str = Preset.STRICT, **overrides: Any) -> HeaderPolicy:
        """The named preset (``strict``, ``api``, ``relaxed``) with ``overrides`` applied."""
        preset = _coerce(Preset, "preset", name)
        base: dict[str, Any] = {}
        if preset is Preset.API:
            base = {
                "csp_policy": _API_CSP,
                "permissions_policy": None,
                "referrer_policy": ReferrerPolicy.NO_REFERRER,
                "coop_policy": None,
                "coep_policy": None,
                "origin_agent_cluster": False,
                "x_dns_prefetch_control": None,
                "cache_control": "no-store",
            }
        elif preset is Preset.RELAXED:
            base = {
                "hsts_max_age": 31_536_000,
                "include_subdomains": False,
                "csp_policy": _RELAXED_CSP,
                "permissions_policy": _RELAXED_PERMISSIONS,
                "coop_policy": CrossOriginOpenerPolicy.SAME_ORIGIN_ALLOW_POPUPS,
                "coep_policy": None,
                "corp_policy": CrossOriginResourcePolicy.SAME_SITE,
                "x_dns_prefetch_control": None,
            }
        base.update(overrides)
        return cls(**base)

    def replace(self, **changes: Any) -> HeaderPolicy:
        """A validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def compile(self) -> CompiledHeaders:
        """Render every header once into bytes (see :class:`CompiledHeaders`)."""
        dynamic: list[tuple[str, str]] = []
        csp = self._with_reporting(self.csp_policy)
        report_only = self._with_reporting(self.csp_report_only)
        if csp is not None:
            dynamic.append(("content-security-policy", csp.render(_NONCE_MARK)))
        if report_only is not None:
            dynamic.append(("content-security-policy-report-only", report_only.render(_NONCE_MARK)))
        plain = self._plain_headers(csp, reporting=bool(dynamic))
        hsts: list[tuple[str, str]] = []
        if self.hsts_max_age is not None:
            value = f"max-age={self.hsts_max_age}"
            if self.include_subdomains:
                value += "; includeSubDomains"
            if self.hsts_preload:
                value += "; preload"
            hsts.append(("strict-transport-security", value))
        names = [name for name, _ in (*plain, *dynamic, *hsts)]
        emitted = set(names)
        if len(emitted) != len(names):
            twice = sorted({name for name in names if names.count(name) > 1})
            raise ConfigurationError(
                f"extra names headers the policy already sends: {twice}; set them through "
                "their own settings instead",
                setting="extra",
            )
        unknown = self.force - emitted
        if unknown:
            raise ConfigurationError(
                f"force names headers this policy does not send: {sorted(unknown)}",
                setting="force",
            )
        clash = emitted & set(self.remove)
        if clash:
            raise ConfigurationError(
                f"remove names headers this policy sends: {sorted(clash)}", setting="remove"
            )
        return CompiledHeaders(
            plain=plain,
            dynamic=dynamic,
            hsts=hsts,
            hsts_over_http=self.hsts_over_http,
            remove=self.remove,
            force=self.force,
        )

    def _plain_headers(
        self, csp: ContentSecurityPolicy | None, *, reporting: bool
    ) -> list[tuple[str, str]]:
        plain: list[tuple[str, str]] = []
        if self.report_to is not None and reporting:
            plain.append(("reporting-endpoints", f'{self.report_group}="{self.report_to}"'))
        frame = self._frame_options(csp)
        if frame is not None:
            plain.append(("x-frame-options", frame))
        if self.nosniff:
            plain.append(("x-content-type-options", "nosniff"))
        if self.referrer_policy is not None:
            plain.append(("referrer-policy", str(self.referrer_policy)))
        permissions = self.permissions_policy
        if isinstance(permissions, PermissionsPolicy):
            if permissions.features:
                plain.append(("permissions-policy", permissions.render()))
        elif isinstance(permissions, str):
            plain.append(("permissions-policy", permissions))
        for name, value in (
            ("cross-origin-opener-policy", self.coop_policy),
            ("cross-origin-embedder-policy", self.coep_policy),
            ("cross-origin-resource-policy", self.corp_policy),
        ):
            if value is not None:
                plain.append((name, str(value)))
        for name, setting in (
            ("x-xss-protection", "0" if self.x_xss_protection_zero else None),
            ("x-permitted-cross-domain-policies", self.x_permitted_cross_domain_policies),
            ("origin-agent-cluster", "?1" if self.origin_agent_cluster else None),
            ("x-dns-prefetch-control", self.x_dns_prefetch_control),
            ("cache-control", self.cache_control),
        ):
            if setting is not None:
                plain.append((name, str(setting)))
        plain.extend(self.extra.items())
        return plain

    def _with_reporting(self, csp: object) -> ContentSecurityPolicy | None:
        if not isinstance(csp, ContentSecurityPolicy):
            return None
        if self.report_to is None:
            return csp
        changes: dict[str, str] = {}
        if csp.get("report-to") is None:
            changes["report_to"] = self.report_group
        if csp.get("report-uri") is None:
            changes["report_uri"] = self.report_to
        return csp.with_directives(**changes) if changes else csp

    def _frame_options(self, csp: ContentSecurityPolicy | None) -> str | None:
        if self.x_frame_options is None:
            return None
        setting = XFrameOptions(self.x_frame_options)
        ancestors = None if csp is None else csp.get("frame-ancestors")
        derived: str | None
        if ancestors is None or ancestors == ("'none'",):
            derived = XFrameOptions.DENY.value
        elif ancestors == ("'self'",):
            derived = XFrameOptions.SAMEORIGIN.value
        else:
            derived = None
        if setting is XFrameOptions.AUTO:
            return derived
        if ancestors is not None and derived != setting.value:
            raise ConfigurationError(
                f"x_frame_options={setting.value!r} contradicts the CSP frame-ancestors "
                f"{' '.join(ancestors)!r}; use x_frame_options='auto' to derive it",
                setting="x_frame_options",
            )
        return str(setting.value)


def _resolve_policy(policy: HeaderPolicy | Preset | str) -> HeaderPolicy:
    return policy if isinstance(policy, HeaderPolicy) else HeaderPolicy.preset(policy)
