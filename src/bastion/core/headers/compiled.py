"""A :class:`~bastion.core.headers.HeaderPolicy` rendered to bytes, and the per-response nonces.

This is the per-response path of both adapters: :attr:`CompiledHeaders.apply` is a set lookup
per response header and a list concatenation, plus one ``bytes.join`` per nonce header when the
CSP carries a nonce drawn from :class:`NonceSource`.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterable, Iterator

from bastion.errors import ConfigurationError

__all__ = ["CompiledHeaders", "NonceSource"]

_NONCE_MISSING = "this policy's CSP uses NONCE: pass a nonce from NonceSource to apply()"
_NONCE_MARK = "\x00"  # never valid in a value, so it cannot collide with configured text
_NONCE_BYTES = 16
_NONCE_BATCH = 1024
# Usual mixed-case spellings that bytes.title() does not produce.
_CANONICAL = {
    b"x-xss-protection": b"X-XSS-Protection",
    b"content-security-policy-report-only": b"Content-Security-Policy-Report-Only",
}

_Apply = Callable[[list[tuple[bytes, bytes]], bool, "bytes | None"], list[tuple[bytes, bytes]]]


def _encode(pairs: Iterable[tuple[str, str]]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((n.encode("ascii"), v.encode("ascii")) for n, v in pairs)


class CompiledHeaders:
    """A :class:`HeaderPolicy` rendered to bytes, applied per response by :attr:`apply`.

    ``uses_nonce`` says whether a nonce must be drawn for each response. Instances are
    immutable after construction and safe to share between threads and event loops.
    """

    __slots__ = (
        "_force",
        "_remove",
        "apply",
        "http_extra",
        "https_extra",
        "nonce_headers",
        "owned",
        "uses_nonce",
    )

    owned: frozenset[bytes]
    """Response header names (in lowercase, Title-Case and UPPERCASE spellings) that send a
    response down the slow path of :attr:`apply`: kept, dropped or replaced there. A response
    without any of them gets ``headers + extra`` and the nonce headers appended, nothing else."""
    https_extra: list[tuple[bytes, bytes]]
    """The static headers appended over HTTPS (with HSTS). Danger: shared; never mutate it."""
    http_extra: list[tuple[bytes, bytes]]
    """The static headers appended over plain HTTP. Danger: shared; never mutate it."""
    nonce_headers: tuple[tuple[bytes, tuple[bytes, ...]], ...]
    """``(name, parts)`` per header that carries the nonce, in order: its value is
    ``nonce.join(parts)``, appended after the static headers."""

    apply: _Apply
    """``apply(headers, https, nonce)``: a new list, the response's ``headers`` with the policy
    applied (the input list is not modified).

    Positional arguments only: this is the per-response path, built as a closure in
    ``__init__``. Names of the policy are found in lowercase (as ASGI requires), Title-Case or
    UPPERCASE; the WSGI adapter lowercases names first. A header of the policy that the response
    already has is kept (unless forced); removed names are dropped. ``nonce`` (ASCII bytes from
    :class:`NonceSource`) is required when :attr:`uses_nonce` is true.
    """

    def __init__(
        self,
        *,
        plain: Iterable[tuple[str, str]],
        dynamic: Iterable[tuple[str, str]],
        hsts: Iterable[tuple[str, str]],
        hsts_over_http: bool,
        remove: Iterable[str],
        force: Iterable[str],
    ) -> None:
        split = [
            (name.encode("ascii"), tuple(part.encode("ascii") for part in value.split(_NONCE_MARK)))
            for name, value in dynamic
        ]
        # A CSP without a nonce is as static as any other header.
        static = _encode(plain) + tuple((n, parts[0]) for n, parts in split if len(parts) == 1)
        secure = static + _encode(hsts)
        # Lists, concatenated onto each response's list; never mutated after this point.
        self.https_extra = list(secure)
        self.http_extra = list(secure if hsts_over_http else static)
        self.nonce_headers = tuple((n, parts) for n, parts in split if len(parts) > 1)
        self.uses_nonce = bool(self.nonce_headers)
        self._remove = frozenset(n.encode("ascii") for n in remove)
        self._force = frozenset(n.encode("ascii") for n in force)
        names = {n for n, _ in secure} | {n for n, _ in self.nonce_headers} | self._remove
        # A response header named in this set takes the slow path (kept, dropped or replaced).
        # ASGI requires lowercase names; Title-Case and UPPERCASE spellings are listed too, so
        # the per-response check is a set lookup per header, without lowercasing each name.
        self.owned = frozenset(
            variant for n in names for variant in (n, n.title(), n.upper(), _CANONICAL.get(n, n))
        )
        self.apply = self._specialise()

    def _specialise(self) -> _Apply:
        """The per-response function, with everything it reads bound as closure variables."""
        owned, secure, plain, slow = self.owned, self.https_extra, self.http_extra, self._apply_slow
        if not self.nonce_headers:

            def apply_static(
                headers: list[tuple[bytes, bytes]], https: bool, nonce: bytes | None, /
            ) -> list[tuple[bytes, bytes]]:
                for name, _ in headers:
                    if name in owned:
                        return slow(headers, https, nonce)
                return headers + (secure if https else plain)

            return apply_static
        dynamic = self.nonce_headers

        def apply_with_nonce(
            headers: list[tuple[bytes, bytes]], https: bool, nonce: bytes | None, /
        ) -> list[tuple[bytes, bytes]]:
            for name, _ in headers:
                if name in owned:
                    return slow(headers, https, nonce)
            if nonce is None:
                raise ConfigurationError(_NONCE_MISSING, setting="nonce")
            result = headers + (secure if https else plain)
            for name, parts in dynamic:
                result.append((name, nonce.join(parts)))
            return result

        return apply_with_nonce

    def _apply_slow(
        self, existing: list[tuple[bytes, bytes]], https: bool, nonce: bytes | None
    ) -> list[tuple[bytes, bytes]]:
        drop = self._remove | self._force
        result = [item for item in existing if item[0].lower() not in drop]
        kept = {item[0].lower() for item in result}
        result.extend(
            item for item in (self.https_extra if https else self.http_extra) if item[0] not in kept
        )
        for name, parts in self.nonce_headers:
            if name not in kept:
                if nonce is None:
                    raise ConfigurationError(_NONCE_MISSING, setting="nonce")
                result.append((name, nonce.join(parts)))
        return result

    def __repr__(self) -> str:
        names = sorted(
            {n.decode() for n, _ in self.https_extra} | {n.decode() for n, _ in self.nonce_headers}
        )
        return f"CompiledHeaders({', '.join(names)})"


class NonceSource:
    """128-bit CSP nonces, as ``(text, ascii_bytes)`` pairs of 32 hex digits.

    ``os.urandom`` is called once per 1024 nonces and the batch is cut up at once, so drawing a
    nonce is one C-level ``next()``: ``next(source.batch, None) or source.refill()``. The batch
    is dropped in a forked child (``os.register_at_fork``), so two worker processes never hand
    out the same nonces.

    Drawing is one C-level ``next()``, atomic under the GIL, so two threads never get the same
    nonce; a race at the end of a batch only makes both threads start a fresh one. (The WSGI
    middleware uses :func:`secrets.token_hex` anyway: its budget is not in microseconds.)
    """

    __slots__ = ("__weakref__", "batch")

    def __init__(self) -> None:
        self.batch: Iterator[tuple[str, bytes]] = iter(())
        ref = weakref.ref(self)

        def _forget() -> None:
            source = ref()
            if source is not None:
                source.batch = iter(())

        os.register_at_fork(after_in_child=_forget)

    def refill(self) -> tuple[str, bytes]:
        """Start a fresh batch and return its first nonce."""
        # hex() with a separator every 16 bytes, then split(): the batch is cut up in C. An
        # explicit separator takes CPython's faster single-character split path.
        digits = os.urandom(_NONCE_BYTES * _NONCE_BATCH).hex(" ", _NONCE_BYTES)
        self.batch = zip(digits.split(" "), digits.encode("ascii").split(b" "), strict=True)
        return next(self.batch)

    def __call__(self) -> tuple[str, bytes]:
        return next(self.batch, None) or self.refill()

    def __repr__(self) -> str:
        return "NonceSource()"
