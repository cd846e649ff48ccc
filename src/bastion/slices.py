"""What a middleware given ``bastion=`` reads of the runtime: its own slice, nothing else.

``CSRFMiddleware(app, bastion=config)``, ``SecurityHeadersMiddleware(app, bastion=config)``,
``CORSMiddleware(app, bastion=config)`` and ``RateLimitMiddleware(app, bastion=config)`` (ASGI
and WSGI alike) take their settings from a :class:`~bastion.config.Bastion` or the
:class:`~bastion.runtime.Runtime` it builds, as ``SessionMiddleware(app, bastion=config)``
does: the layer's own slice (``csrf``, ``headers`` and ``header_routes``, ``cors``,
``rate_limits``) and what every layer shares (key ring, auditor, trusted proxies, clock,
environment). A setting passed beside ``bastion=`` would be silently overruled by one of the
two, so it is refused by name. A layer whose slice the configuration turns off is refused too:
the app asked for a layer the configuration says it does not want.

Written once for both adapter families (asgi and wsgi are siblings and import nothing from each
other). Given a ``Runtime``, a layer uses its key ring, auditor and proxies, shared with the
other layers. Given a ``Bastion``, a layer reads that configuration's shared fields and its own
slice, and builds nothing else: no store is opened, and the other slices are not checked (a
headers layer does not need the store that session-held CSRF tokens would).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn, TypeVar

from bastion.core.audit import Auditor
from bastion.core.client import TrustedProxies
from bastion.core.clock import system_clock
from bastion.core.request_limits import LimitTable, RequestLimits
from bastion.errors import ConfigurationError
from bastion.runtime import Runtime

if TYPE_CHECKING:
    from collections.abc import Iterable

    from bastion.config import Bastion
    from bastion.core.clock import Clock
    from bastion.core.keys import KeyRing
    from bastion.core.ratelimit.keys import KeyFunc
    from bastion.core.ratelimit.rules import Rule, RuleSet
    from bastion.engine.ratelimit import RateLimiter

__all__ = [
    "Shared",
    "layer_limiter",
    "layer_off",
    "layer_settings",
    "rate_limit_arguments",
    "required_slice",
]

T = TypeVar("T")

# The Bastion field that holds what a middleware argument of this name would set.
_FIELDS = {
    "production": "environment",
    "identity": "csrf_identity",
    "overrides": "header_routes",
    "limiter": "store",
    "rules": "rate_limits",
    "session_engine": "store",
    "key": "proxies",
}
_HINTS = {
    "key": "; a rule that needs another key takes Rule(key=...)",
}


@dataclass(frozen=True, slots=True)
class Shared:
    """What a layer given ``bastion=`` reads besides its slice (of ``config``)."""

    config: Bastion
    keyring: KeyRing | None
    auditor: Auditor
    proxies: TrustedProxies
    clock: Clock
    production: bool
    runtime: Runtime | None


def layer_settings(bastion: object, layer: str, slice_name: str, **given: object) -> Shared:
    """The configuration ``bastion`` (a ``Bastion`` or a ``Runtime``) hands ``layer``, after
    refusing each of ``given`` (the middleware's own arguments) that was passed: not ``None``
    and, for ``clock``, not the system clock. ``config`` and ``policy`` stand for the layer's
    slice, ``slice_name``."""
    for name, value in given.items():
        if value is None or (name == "clock" and value is system_clock):
            continue
        field = slice_name if name in {"config", "policy"} else _FIELDS.get(name, name)
        raise ConfigurationError(
            f"{layer}(bastion=...) takes {name} from the Bastion configuration; pass "
            f"Bastion({field}=...) instead of {name}= here{_HINTS.get(name, '')}",
            setting=name,
        )
    if isinstance(bastion, Runtime):
        return Shared(
            bastion.config,
            bastion.keyring,
            bastion.auditor,
            bastion.proxies,
            bastion.config.clock,
            bastion.production,
            bastion,
        )
    from bastion.config import Bastion  # noqa: PLC0415 (the config pulls in every layer's types)

    if not isinstance(bastion, Bastion):
        raise ConfigurationError(
            f"{layer}(bastion=...) expects a Bastion configuration or its Runtime, got "
            f"{type(bastion).__name__}",
            setting="bastion",
        )
    auditor = bastion.auditor
    if auditor is None:
        auditor = Auditor.default(bastion.keyring, bastion.clock)
    return Shared(
        bastion, bastion.keyring, auditor, bastion.proxies, bastion.clock, bastion.production, None
    )


def required_slice(value: T | None, layer: str, slice_name: str) -> T:
    """``value``, the layer's slice of the configuration; refused when the configuration turns
    the layer off (``None``, or no rate-limit rules)."""
    if value is None or (isinstance(value, tuple) and not value):
        layer_off(layer, slice_name)
    return value


def layer_off(layer: str, slice_name: str) -> NoReturn:
    """Refuse ``layer``: its configuration turns it off."""
    off = "rate_limits=()" if slice_name == "rate_limits" else f"{slice_name}=None"
    raise ConfigurationError(
        f"{layer}(bastion=...): this Bastion configuration turns the layer off ({off}); "
        f"set Bastion({slice_name}=...) or do not add {layer}",
        setting=slice_name,
    )


def layer_limiter(shared: Shared) -> RateLimiter:
    """The rate limiter of a layer given ``bastion=``: the runtime's, or for a ``Bastion`` one
    on its store (a per-process memory store when it has none), reporting to its auditor."""
    if shared.runtime is not None:
        return shared.runtime.limiter
    from bastion.engine.ratelimit import RateLimiter  # noqa: PLC0415 (optional layer)
    from bastion.stores.base import require_rate_limit  # noqa: PLC0415
    from bastion.stores.memory import MemoryStore  # noqa: PLC0415
    from bastion.stores.url import open_store  # noqa: PLC0415

    store = shared.config.store
    if store is None:
        store = MemoryStore(clock=shared.clock)
    elif isinstance(store, str):
        store = open_store(store, clock=shared.clock)
    return RateLimiter(require_rate_limit(store), auditor=shared.auditor)


def rate_limit_arguments(
    bastion: object,
    limiter: RateLimiter | None,
    rules: Rule | Iterable[Rule] | RuleSet | None,
    key: KeyFunc | None,
) -> tuple[RateLimiter, Rule | Iterable[Rule] | RuleSet, KeyFunc | None]:
    """The limiter, rules and default key of a rate-limit middleware: from ``bastion`` (the
    runtime's limiter, ``rate_limits`` and a client-address key read through its proxies, as
    ``protect()`` builds them), else the middleware's own, both required."""
    if bastion is None:
        if limiter is None or rules is None:
            missing = "limiter" if limiter is None else "rules"
            raise ConfigurationError(
                f"RateLimitMiddleware needs {missing}= (or bastion=)", setting=missing
            )
        return limiter, rules, key
    shared = layer_settings(
        bastion, "RateLimitMiddleware", "rate_limits", limiter=limiter, rules=rules, key=key
    )
    from bastion.core.ratelimit.keys import client_ip_key  # noqa: PLC0415

    chosen = required_slice(shared.config.rate_limits, "RateLimitMiddleware", "rate_limits")
    return layer_limiter(shared), chosen, client_ip_key(shared.proxies)


def limits_arguments(
    limits: RequestLimits | None,
    *,
    bastion: object,
    auditor: Auditor | None,
    proxies: TrustedProxies | None,
    clock: Clock,
) -> tuple[LimitTable, Auditor, TrustedProxies, Clock]:
    """The limit table, auditor, proxies and clock of a request-limits middleware (ASGI and
    WSGI alike): from ``bastion`` (its ``limits`` slice and shared parts), else the arguments,
    with the documented defaults. A limit the default turns off (``None``) is logged once."""
    if bastion is not None:
        shared = layer_settings(
            bastion,
            "RequestLimitsMiddleware",
            "limits",
            limits=limits,
            auditor=auditor,
            proxies=proxies,
            clock=clock,
        )
        limits = required_slice(shared.config.limits, "RequestLimitsMiddleware", "limits")
        auditor, proxies, clock = shared.auditor, shared.proxies, shared.clock
    table = LimitTable(RequestLimits() if limits is None else limits)
    default = table.default
    for name, value in zip(default._fields, default, strict=True):
        if value is None:
            _limits_logger.warning("bastion request limits: %s=None; not limited by default", name)
    return (
        table,
        auditor if auditor is not None else Auditor.default(None, clock),
        proxies if proxies is not None else TrustedProxies(),
        clock,
    )


_limits_logger = logging.getLogger("bastion.security.limits")
