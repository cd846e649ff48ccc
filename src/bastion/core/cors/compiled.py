"""The CORS decisions of one :class:`~bastion.core.cors.policy.CORSPolicy`, compiled to bytes
once: :class:`CompiledCORS` answers preflights and says which headers a response carries;
:func:`apply_headers` puts them on the app's response. See :mod:`bastion.core.cors`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from bastion.core.cors.policy import (
    MAX_ORIGIN_BYTES,
    MAX_REQUEST_HEADERS_BYTES,
    PREFLIGHT_VARY,
    TOKEN,
    CORSPolicy,
    CORSReason,
)
from bastion.core.request import normalize_method
from bastion.core.vary import merge_vary
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["CompiledCORS", "Preflight", "apply_headers"]

_MAX_REQUESTED_HEADERS: Final = 64
_MAX_METHOD_BYTES: Final = 64
_LABELS: Final = re.compile(rb"[a-z0-9_\-]{1,63}(?:\.[a-z0-9_\-]{1,63})*")
_SERIALISED: Final = re.compile(
    rb"[a-z][a-z0-9+.\-]*://(?:[a-z0-9_\-]{1,63}(?:\.[a-z0-9_\-]{1,63})*|\[[0-9a-f:.]+\])"
    rb"(?::[1-9][0-9]{0,4})?"
)

_ACAO: Final = b"access-control-allow-origin"
_ACAC: Final = (b"access-control-allow-credentials", b"true")
_ACAPN: Final = (b"access-control-allow-private-network", b"true")
_PREFIX: Final = b"access-control-"
_TEXT: Final = (b"content-type", b"text/plain; charset=utf-8")
_VARY_ORIGIN: Final = (b"vary", b"Origin")
_FIRST: Final = frozenset(b"aAvV")
"""First bytes of the response header names the layer looks at (``Access-Control-*``, ``Vary``)."""


# -- decisions -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Preflight:
    """The whole answer to a preflight: sent by the middleware as it is, the app never runs."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    reason: CORSReason | None
    """Why it was refused; ``None`` for the ``204``."""


def _well_formed(origin: bytes) -> bool:
    return origin == b"null" or (
        len(origin) <= MAX_ORIGIN_BYTES and _SERIALISED.fullmatch(origin) is not None
    )


def _refusal(reason: CORSReason) -> Preflight:
    body = f"CORS preflight refused: {reason.value}".encode("ascii")
    headers = ((b"vary", PREFLIGHT_VARY), _TEXT, (b"content-length", str(len(body)).encode()))
    return Preflight(403, headers, body, reason)


class CompiledCORS:
    """A :class:`CORSPolicy` rendered to header bytes, with the decisions of the module
    docstring. Build one per middleware, at start-up; ``production`` is checked here
    (:meth:`CORSPolicy.check_environment`)."""

    __slots__ = (
        "_exact",
        "_methods",
        "_patterns",
        "_preflight_rest",
        "_preflights",
        "_refusals",
        "_requestable",
        "_simple_rest",
        "_static",
        "any_origin",
        "policy",
        "vary",
    )

    def __init__(self, policy: CORSPolicy, *, production: bool) -> None:
        if not isinstance(policy, CORSPolicy):
            raise ConfigurationError("policy must be a CORSPolicy", setting="policy")
        policy.check_environment(production=production)
        self.policy = policy
        self.any_origin = policy.any_origin
        self.vary = not self.any_origin
        """Whether every response gets ``Vary: Origin`` (all but the bare ``"*"``)."""
        simple: list[tuple[bytes, bytes]] = []
        if policy.allow_credentials:
            simple.append(_ACAC)
        if policy.expose_headers:
            simple.append(
                (b"access-control-expose-headers", ", ".join(policy.expose_headers).encode())
            )
        self._simple_rest = tuple(simple)
        # Expose-Headers is for actual responses only; a preflight has nothing to expose.
        rest = [_ACAC] if policy.allow_credentials else []
        rest.append((b"access-control-allow-methods", ", ".join(policy.allow_methods).encode()))
        if policy.allow_headers:
            rest.append((b"access-control-allow-headers", ", ".join(policy.allow_headers).encode()))
        rest.append((b"access-control-max-age", str(policy.max_age).encode()))
        self._preflight_rest = tuple(rest)
        self._methods = frozenset(policy.allow_methods)
        self._requestable = frozenset(h.encode() for h in policy.allow_headers)
        self._refusals = {reason: _refusal(reason) for reason in CORSReason}
        self._static: tuple[tuple[bytes, bytes], ...] = ()
        self._exact: dict[bytes, tuple[tuple[bytes, bytes], ...]] = {}
        self._preflights: dict[tuple[bytes, bool], Preflight] = {}
        patterns: list[tuple[bytes, bytes]] = []
        exact = [o.encode() for o in policy.allow_origins if "*" not in o]
        if policy.allow_null:
            exact.append(b"null")
        if self.any_origin:
            self._static = ((_ACAO, b"*"), *self._simple_rest)
        for origin in exact:
            self._exact[origin] = ((_ACAO, origin), *self._simple_rest)
        for origin in [*exact, b"*"] if self.any_origin else exact:
            for private in (False, True):
                self._preflights[origin, private] = self._allowed(origin, private=private)
        for pattern in policy.allow_origins:
            if "://*." in pattern:
                scheme, _, suffix = pattern.partition("://*")
                patterns.append(((scheme + "://").encode(), suffix.encode()))
        self._patterns = tuple(patterns)

    def _allowed(self, origin: bytes, *, private: bool) -> Preflight:
        headers = [(_ACAO, origin), *self._preflight_rest]
        if private:
            headers.append(_ACAPN)
        headers += [(b"vary", PREFLIGHT_VARY), (b"content-length", b"0")]
        return Preflight(204, tuple(headers), b"", None)

    def matches_pattern(self, origin: bytes) -> bool:
        """Whether ``origin`` (as sent) is one or more DNS labels under a pattern's suffix."""
        for prefix, suffix in self._patterns:
            if (
                len(origin) <= MAX_ORIGIN_BYTES
                and origin.startswith(prefix)
                and origin.endswith(suffix)
                and _LABELS.fullmatch(origin, len(prefix), len(origin) - len(suffix))
            ):
                return True
        return False

    def allows(self, origin: bytes | None) -> bool:
        """Whether a request's ``Origin`` (``None``: absent) passes a preflight's origin check:
        a configured origin, a pattern's, or ``null`` with ``allow_null``; for the bare
        ``"*"``, any serialised origin (an actual response gets ``*`` whatever it sent)."""
        if origin is None:
            return False
        if self.any_origin:
            return _well_formed(origin)
        return origin in self._exact or (bool(self._patterns) and self.matches_pattern(origin))

    def simple(self, origin: bytes | None) -> tuple[tuple[bytes, bytes], ...]:
        """The CORS headers of an actual response to a request with ``origin`` (``None``:
        absent); empty for a disallowed one. ``Vary`` is separate (:attr:`vary`)."""
        if self.any_origin:
            return self._static
        if origin is None:
            return ()
        found = self._exact.get(origin)
        if found is not None:
            return found
        if self._patterns and self.matches_pattern(origin):
            return ((_ACAO, origin), *self._simple_rest)
        return ()

    def preflight(  # noqa: PLR0911 (one exit per verdict)
        self,
        origin: bytes,
        method: bytes,
        headers: bytes | None = None,
        private_network: bytes | None = None,
    ) -> Preflight:
        """The answer to a preflight from ``origin`` asking for ``method``, the requested
        ``headers`` (``Access-Control-Request-Headers``; repeated ones joined with ``,``) and
        ``private_network`` (``Access-Control-Request-Private-Network``)."""
        refusals = self._refusals
        if self.any_origin:
            if not _well_formed(origin):
                return refusals[CORSReason.ORIGIN_MALFORMED]
            key = b"*"
        elif origin in self._exact or (self._patterns and self.matches_pattern(origin)):
            key = origin
        elif _well_formed(origin):
            return refusals[CORSReason.ORIGIN_DISALLOWED]
        else:
            return refusals[CORSReason.ORIGIN_MALFORMED]
        text = normalize_method(method.decode("latin-1"))
        if len(method) > _MAX_METHOD_BYTES or TOKEN.fullmatch(text) is None:
            return refusals[CORSReason.METHOD_MALFORMED]
        if text not in self._methods:
            return refusals[CORSReason.METHOD_DISALLOWED]
        if headers:
            reason = self._check_headers(headers)
            if reason is not None:
                return refusals[reason]
        private = private_network is not None and private_network.strip().lower() == b"true"
        if private and not self.policy.allow_private_network:
            return refusals[CORSReason.PRIVATE_NETWORK_DISALLOWED]
        found = self._preflights.get((key, private))
        return found if found is not None else self._allowed(origin, private=private)

    def _check_headers(self, headers: bytes) -> CORSReason | None:
        if len(headers) > MAX_REQUEST_HEADERS_BYTES:
            return CORSReason.HEADERS_MALFORMED
        allowed = self._requestable
        parts = headers.split(b",", _MAX_REQUESTED_HEADERS)
        if len(parts) > _MAX_REQUESTED_HEADERS:
            return CORSReason.HEADERS_MALFORMED
        for part in parts:
            name = part.strip(b" \t").lower()
            if not name:
                continue  # an empty list element (RFC 9110, section 5.6.1)
            if name not in allowed:
                if TOKEN.fullmatch(name.decode("latin-1")) is None:
                    return CORSReason.HEADERS_MALFORMED
                return CORSReason.HEADER_DISALLOWED
        return None

    def __repr__(self) -> str:
        return f"CompiledCORS({self.policy!r})"


# -- response headers ------------------------------------------------------------------------------


def apply_headers(
    headers: Iterable[tuple[bytes, bytes]],
    extra: tuple[tuple[bytes, bytes], ...],
    *,
    vary: bool,
) -> list[tuple[bytes, bytes]]:
    """A response's headers with the app's ``Access-Control-*`` ones removed, ``extra``
    appended and, when ``vary``, ``Origin`` merged into its ``Vary`` (the first one, unless a
    ``Vary`` already lists it)."""
    out = list(headers)
    for name, _ in out:
        if name and name[0] in _FIRST:
            break
    else:  # the common case: neither a Vary nor a CORS header from the app
        if vary:
            out.append(_VARY_ORIGIN)
        out += extra
        return out
    return _merged(out, extra, vary=vary)


def _merged(
    headers: list[tuple[bytes, bytes]], extra: tuple[tuple[bytes, bytes], ...], *, vary: bool
) -> list[tuple[bytes, bytes]]:
    """:func:`apply_headers` for a response that has a ``Vary`` or an ``Access-Control-*``."""
    kept: list[tuple[bytes, bytes]] = []
    first_vary = -1
    covered = False
    for pair in headers:
        name = pair[0]
        if name and name[0] in _FIRST:
            lowered = name.lower()
            if lowered.startswith(_PREFIX):
                continue
            if vary and lowered == b"vary":
                if first_vary < 0:
                    first_vary = len(kept)
                if not covered and merge_vary(pair[1], b"Origin") is None:
                    covered = True
        kept.append(pair)
    if vary and not covered:
        if first_vary < 0:
            kept.append(_VARY_ORIGIN)
        else:
            name, value = kept[first_vary]
            kept[first_vary] = (name, merge_vary(value, b"Origin") or value)
    kept += extra
    return kept
