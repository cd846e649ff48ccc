"""Which compiled policy answers which path: the default, per-route overrides, the report path.

:class:`HeaderRouter` is what a headers middleware holds, built once and shared by the ASGI and
WSGI adapters so that both route identically. Override keys are path patterns in the one
grammar of :mod:`bastion.core.paths`: ``"/legacy"`` is that path, ``"/legacy/*"`` the prefix on
whole segments (``/legacy``, ``/legacy/`` and ``/legacy/x``, never ``/legacyx``), ``"/*"``
every path.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from bastion.core import _check
from bastion.core.clock import system_clock
from bastion.core.environment import is_production
from bastion.core.headers.policy import HeaderPolicy, _resolve_policy
from bastion.core.headers.reports import ReportReceiver
from bastion.core.headers.vocabulary import Preset
from bastion.core.paths import PathPattern
from bastion.core.request import is_normal, normalize_path
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from bastion.core.audit import Auditor
    from bastion.core.clock import Clock
    from bastion.core.headers.compiled import CompiledHeaders

__all__ = ["HeaderRouter"]

# A request id believed from the proxy: a short token (AWS "Root=1-...;Parent=..." included).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:;=/+@-]{1,128}", re.ASCII)


class HeaderRouter:
    """What a headers middleware holds, built once: the compiled default policy, per-path
    overrides and, when the policy's ``report_to`` is a path, the CSP report receiver.

    ``overrides`` maps path patterns to other policies (``{"/legacy/*": "relaxed"}``,
    ``{"/login": ...}``); see :mod:`bastion.core.paths` for the grammar. A key that is not a
    pattern (no leading ``/``, a trailing ``/``, a ``*`` elsewhere than a final ``/*``) raises
    :class:`~bastion.errors.ConfigurationError` for ``overrides``, saying how to write it. The
    most specific pattern wins: the longest path, and an exact pattern before the prefix of the
    same path (``"/docs"`` before ``"/docs/*"`` for ``/docs``). :attr:`overrides` holds them in
    that order.

    Each policy is checked once here (:meth:`HeaderPolicy.check_environment`): its weaknesses
    are logged, and in production (``production=None`` asks
    :func:`~bastion.core.environment.is_production`) the unsafe ones are refused.
    """

    __slots__ = (
        "_exact",
        "_prefixes",
        "default",
        "overrides",
        "receiver",
        "report_path",
        "request_id_header",
    )

    def __init__(
        self,
        policy: HeaderPolicy | Preset | str = Preset.STRICT,
        *,
        overrides: Mapping[str, HeaderPolicy | Preset | str] | None = None,
        auditor: Auditor | None = None,
        report_max_bytes: int = 16_384,
        report_burst: int = 50,
        report_rate: float = 1.0,
        report_client_burst: int = 10,
        report_client_rate: float = 0.5,
        report_max_clients: int = 4096,
        request_id_header: str | None = None,
        clock: Clock = system_clock,
        production: bool | None = None,
    ) -> None:
        if production is None:
            production = is_production()
        self.request_id_header = (
            None
            if request_id_header is None
            else _check.header_name("request_id_header", request_id_header)
        )
        resolved = _resolve_policy(policy)
        resolved.check_environment(production=production)
        self.default = resolved.compile()
        routes: list[tuple[PathPattern, CompiledHeaders]] = []
        for key, other in (overrides or {}).items():
            pattern = PathPattern.parse(key, setting="overrides")
            policy_there = _resolve_policy(other)
            if policy_there is not resolved:
                policy_there.check_environment(production=production, where=pattern.text)
            routes.append((pattern, policy_there.compile()))
        routes.sort(key=lambda route: (len(route[0].base), not route[0].prefix), reverse=True)
        self.overrides: tuple[tuple[PathPattern, CompiledHeaders], ...] = tuple(routes)
        """``(pattern, compiled policy)`` per override, most specific first."""
        self._exact = {p.base: compiled for p, compiled in routes if not p.prefix}
        self._prefixes = tuple(
            ("/" if p.base == "/" else p.base + "/", p.base, compiled)
            for p, compiled in routes
            if p.prefix
        )
        target = resolved.report_to
        self.report_path = target if target is not None and target.startswith("/") else None
        self.receiver: ReportReceiver | None = None
        if self.report_path is not None:
            if auditor is None:
                raise ConfigurationError(
                    f"report_to={target!r} makes this middleware receive CSP reports, which are "
                    "audit events: pass auditor=Auditor(...)",
                    setting="auditor",
                )
            self.receiver = ReportReceiver(
                auditor,
                clock,
                max_bytes=report_max_bytes,
                burst=report_burst,
                per_second=report_rate,
                client_burst=report_client_burst,
                client_per_second=report_client_rate,
                max_clients=report_max_clients,
            )

    @staticmethod
    def request_id(value: str | None) -> str | None:
        """The request id the proxy sent in ``request_id_header``, if it is a short token
        (at most 128 of ``A-Z a-z 0-9 . _ : ; = / + @ -``); ``None``: draw a fresh one."""
        if value is None or _REQUEST_ID.fullmatch(value) is None:
            return None
        return value

    def for_path(self, path: str) -> CompiledHeaders:
        """The compiled policy for ``path`` (the full path, mount prefix included): the most
        specific matching override, else the default.

        A pattern selects a path as written, case and trailing slash included (``"/docs"``
        selects ``/docs``, not ``/docs/`` or ``/Docs``; ``"/docs/*"`` selects all three but
        ``/Docs``). An override is an exception to the default, so it applies only when every
        reading of the path agrees on it (:mod:`bastion.core.request`): ``/app/../docs`` gets
        the ``/docs`` override only if ``/app/../docs`` as sent would get it too; otherwise the
        default policy.
        """
        chosen = self._lookup(path)
        if (
            chosen is not self.default
            and not is_normal(path)
            and self._lookup(normalize_path(path)) is not chosen
        ):
            return self.default
        return chosen

    def _lookup(self, path: str) -> CompiledHeaders:
        # An exact pattern for the path itself is the most specific match there can be: no
        # prefix has a longer path, and at the same length the exact pattern comes first.
        exact = self._exact.get(path)
        if exact is not None:
            return exact
        for under, base, compiled in self._prefixes:
            if path.startswith(under) or path == base:
                return compiled
        return self.default

    def __repr__(self) -> str:
        return f"HeaderRouter({self.default!r}, overrides={len(self.overrides)})"
