"""``Content-Security-Policy``: a validated builder and parser, and the :data:`NONCE` pseudo-source.

A directive name the browser does not know and an unquoted keyword (``self`` for ``'self'``) are
both silent no-ops in a browser, so both are refused here, at start-up. :data:`NONCE` in a
script or style directive is replaced per response by ``'nonce-<32 hex digits>'``
(:class:`~bastion.core.headers.NonceSource`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from bastion.core.headers.vocabulary import _SOURCE, _check_value, _short
from bastion.errors import ConfigurationError

__all__ = ["NONCE", "ContentSecurityPolicy"]

NONCE: Final = "'nonce'"
"""Pseudo-source for a CSP directive: replaced per response by ``'nonce-<value>'``."""

# Keywords that browsers only recognise when single-quoted; unquoted they are host names.
_CSP_KEYWORDS = frozenset(
    {
        "self",
        "none",
        "unsafe-inline",
        "unsafe-eval",
        "strict-dynamic",
        "unsafe-hashes",
        "report-sample",
        "wasm-unsafe-eval",
        "inline-speculation-rules",
    }
)
_CSP_DIRECTIVES = frozenset(
    {
        "default-src",
        "script-src",
        "script-src-elem",
        "script-src-attr",
        "style-src",
        "style-src-elem",
        "style-src-attr",
        "img-src",
        "font-src",
        "connect-src",
        "media-src",
        "object-src",
        "frame-src",
        "child-src",
        "worker-src",
        "manifest-src",
        "fenced-frame-src",
        "base-uri",
        "form-action",
        "frame-ancestors",
        "sandbox",
        "report-uri",
        "report-to",
        "upgrade-insecure-requests",
        "require-trusted-types-for",
        "trusted-types",
        "webrtc",
    }
)
_VALUELESS = frozenset({"upgrade-insecure-requests"})


@dataclass(frozen=True, slots=True, init=False)
class ContentSecurityPolicy:
    """A CSP as validated directives, in the order given. Build from keywords or a mapping::

        ContentSecurityPolicy(default_src="'none'", script_src=[NONCE, "'strict-dynamic'"])
        ContentSecurityPolicy({"default-src": ["'self'"]}, upgrade_insecure_requests=True)
        ContentSecurityPolicy.parse("default-src 'self'; img-src 'self' https:")

    Keyword arguments use ``_`` for ``-``. A value is a sequence of sources, a string of
    whitespace-separated sources, or ``True`` for a directive without sources. Unknown directive
    names and unquoted keywords (``self`` for ``'self'``) are refused: both are silent no-ops in a
    browser.
    """

    directives: tuple[tuple[str, tuple[str, ...]], ...]

    def __init__(
        self,
        directives: Mapping[str, Iterable[str] | str | bool] | None = None,
        /,
        **more: Iterable[str] | str | bool,
    ) -> None:
        merged: dict[str, tuple[str, ...]] = {}
        items = [*(directives or {}).items(), *((k.replace("_", "-"), v) for k, v in more.items())]
        for raw_name, raw_sources in items:
            name = _check_directive(raw_name)
            if name in merged:
                raise ConfigurationError(
                    f"CSP directive {name!r} is given twice; browsers use only the first, so "
                    "merge the sources into one entry",
                    setting=f"csp.{name}",
                )
            merged[name] = _check_sources(name, raw_sources)
        object.__setattr__(self, "directives", tuple(merged.items()))

    @classmethod
    def parse(cls, text: str) -> ContentSecurityPolicy:
        """Validate a CSP written as a header value (``"default-src 'self'; img-src *"``)."""
        _check_value("csp", text)
        found: dict[str, Iterable[str] | str | bool] = {}
        for piece in text.split(";"):
            words = piece.split()
            if not words:
                continue
            name = words[0].lower()
            if name in found:
                raise ConfigurationError(
                    f"CSP directive {name!r} appears twice in {_short(text)}", setting="csp"
                )
            found[name] = words[1:] or True
        return cls(found)

    def get(self, name: str) -> tuple[str, ...] | None:
        for directive, sources in self.directives:
            if directive == name:
                return sources
        return None

    def with_directives(
        self, **changes: Iterable[str] | str | bool | None
    ) -> ContentSecurityPolicy:
        """A copy with directives replaced, added, or (given ``None``) removed."""
        updated: dict[str, Iterable[str] | str | bool] = dict(self.directives)
        for key, value in changes.items():
            name = key.replace("_", "-")
            if value is None:
                updated.pop(name, None)
            else:
                updated[name] = value
        return ContentSecurityPolicy(updated)

    @property
    def uses_nonce(self) -> bool:
        return any(NONCE in sources for _, sources in self.directives)

    def render(self, nonce: str | None = None) -> str:
        """The header value; :data:`NONCE` becomes ``'nonce-<nonce>'`` (kept as is if ``None``)."""
        parts = []
        for name, sources in self.directives:
            shown = sources
            if nonce is not None:
                shown = tuple(f"'nonce-{nonce}'" if s == NONCE else s for s in sources)
            parts.append(" ".join((name, *shown)))
        return "; ".join(parts)


def _check_directive(name: object) -> str:
    if not isinstance(name, str) or name.lower() not in _CSP_DIRECTIVES:
        raise ConfigurationError(
            f"unknown CSP directive {_short(name)}; use one of "
            f"{', '.join(sorted(_CSP_DIRECTIVES))} (keyword arguments use '_' for '-')",
            setting="csp",
        )
    return name.lower()


def _source_list(setting: str, raw: object) -> list[object]:
    if isinstance(raw, str):
        sources: list[object] = list(raw.split(" "))
        if any(not s for s in sources):
            raise ConfigurationError(
                f"{setting}={_short(raw)}: separate sources with single spaces", setting=setting
            )
        return sources
    if isinstance(raw, Iterable) and not isinstance(raw, bytes | bool):
        return list(raw)
    raise ConfigurationError(
        f"{setting} must be a list of sources, a str or True, got {type(raw).__name__}",
        setting=setting,
    )


def _check_sources(name: str, raw: object) -> tuple[str, ...]:
    setting = f"csp.{name}"
    if raw is True:
        if name not in _VALUELESS and name != "sandbox":
            raise ConfigurationError(
                f"CSP directive {name!r} needs sources, not True", setting=setting
            )
        return ()
    sources = _source_list(setting, raw)
    if name in _VALUELESS and sources:
        raise ConfigurationError(f"CSP directive {name!r} takes no sources", setting=setting)
    if not sources and name != "sandbox":
        raise ConfigurationError(
            f"{setting} is empty; write \"'none'\" to allow nothing", setting=setting
        )
    checked: list[str] = []
    for source in sources:
        if not isinstance(source, str) or _SOURCE.fullmatch(source) is None:
            raise ConfigurationError(
                f"{setting}: source {_short(source)} is not a CSP source expression (visible "
                "ASCII without spaces, ';' or ',')",
                setting=setting,
            )
        if source.lower() in _CSP_KEYWORDS:
            raise ConfigurationError(
                f"{setting}: {source!r} must be single-quoted (\"'{source}'\"); unquoted it is a "
                "host name",
                setting=setting,
            )
        if source == NONCE and name not in {
            "script-src",
            "script-src-elem",
            "style-src",
            "style-src-elem",
            "default-src",
        }:
            raise ConfigurationError(
                f"{setting}: NONCE belongs in script-src or style-src", setting=setting
            )
        checked.append(source)
    if "'none'" in checked and len(checked) > 1:
        raise ConfigurationError(
            f"{setting}: \"'none'\" cannot be combined with other sources (it would be ignored)",
            setting=setting,
        )
    return tuple(checked)
