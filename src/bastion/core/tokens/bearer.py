"""Access tokens over HTTP, sans I/O: the ``Authorization`` header in, ``WWW-Authenticate`` out.

Reading (RFC 6750 section 2.1, RFC 9449 section 7.1, RFC 9110 section 11.4):
:func:`parse_authorization` checks the raw header's size before anything else (8 KiB by
default; over it is ``HEADER_TOO_LARGE``, refused without looking inside), then wants exactly
``<scheme> 1*SP <token68>`` with the scheme ``Bearer`` or ``DPoP`` in any case. A second
token, a comma (two credentials joined by a server), another scheme, or a character outside
token68 is ``MALFORMED_HEADER``. Both are ``invalid_request``, answered 400. A request with two
``Authorization`` headers is refused the same way by the adapters, which see the header list.

Answering (RFC 6750 section 3, RFC 9449 section 7.1): :class:`BearerChallenge` renders the
``WWW-Authenticate`` value of a refusal. No credentials: ``Bearer realm="..."`` and nothing
else (section 3.1: no error code when the request had no authentication). Otherwise ``error``,
a fixed ``error_description`` per :class:`~bastion.core.tokens.reasons.TokenReason`
(:data:`DESCRIPTIONS`; never a word of the token, a claim or a key), and ``scope`` for
``insufficient_scope``. With DPoP enabled a ``DPoP`` challenge with ``algs="..."`` follows the
``Bearer`` one (or comes first, carrying the error, when the client used the ``DPoP``
scheme). :func:`refusal` gives the response body through :mod:`bastion.core.refusal`.

Deciding (:class:`BearerRules`): which paths need a token (fail closed), which scopes, and the
refusal of each case, shared by the ASGI and WSGI middlewares and the framework helpers, so
that every adapter refuses the same request with the same status and challenge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, Protocol

from bastion.core.audit import EventName, Outcome
from bastion.core.paths import EVERYWHERE, PathPattern, parse_patterns
from bastion.core.refusal import Refusal
from bastion.core.request import match_forms
from bastion.core.tokens.reasons import TokenReason, TokenRejected
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from bastion.core.audit import Auditor
    from bastion.core.client import TrustedProxies
    from bastion.core.tokens.principal import Principal

__all__ = [
    "DESCRIPTIONS",
    "MAX_AUTHORIZATION_BYTES",
    "OUTAGE",
    "BearerChallenge",
    "BearerRefused",
    "BearerRules",
    "Credentials",
    "NonceSource",
    "Presented",
    "Route",
    "check_scopes",
    "description",
    "parse_authorization",
    "public_url",
    "quote_path",
    "refusal",
]

MAX_AUTHORIZATION_BYTES: Final = 8192
"""The default cap on the raw ``Authorization`` (and ``DPoP``) header, in bytes."""

Scheme = Literal["bearer", "dpop"]

_CREDENTIALS: Final = re.compile(r"([A-Za-z]+) +([A-Za-z0-9\-._~+/]+=*)", re.ASCII)
_SCHEMES: Final[dict[str, Scheme]] = {"bearer": "bearer", "dpop": "dpop"}
_SCHEME_NAME: Final = re.compile(r"[A-Za-z]+", re.ASCII)
_SCOPE_TOKEN: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+", re.ASCII)
_REALM: Final = re.compile(r"[\x20-\x7e]*", re.ASCII)
_ALG: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-_.]{0,31}", re.ASCII)


@dataclass(frozen=True, slots=True)
class Credentials:
    """A well-formed ``Authorization`` header: its scheme (lower case) and token (not in
    ``repr``)."""

    scheme: Scheme
    token: str = field(repr=False)


def parse_authorization(
    value: str | bytes | None, *, max_bytes: int = MAX_AUTHORIZATION_BYTES
) -> Credentials | None:
    """The credentials of a raw ``Authorization`` value; ``None`` when there is none.

    The size is checked on the raw value first (a ``bytes`` value is counted as sent, a
    ``str`` as its Latin-1 or UTF-8 length), so an oversized header costs no parsing. Leading
    and trailing spaces and tabs are optional whitespace around the field value (RFC 9110
    section 5.5) and are ignored; anything else must be ``<scheme> 1*SP <token68>``.
    Raises ``TokenRejected(HEADER_TOO_LARGE)`` or ``TokenRejected(MALFORMED_HEADER)``.
    """
    if value is None:
        return None
    if len(value) > max_bytes:
        raise TokenRejected(TokenReason.HEADER_TOO_LARGE, "Authorization header over the size cap")
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            raise TokenRejected(
                TokenReason.MALFORMED_HEADER, "Authorization header is not ASCII"
            ) from None
    elif len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        raise TokenRejected(TokenReason.HEADER_TOO_LARGE, "Authorization header over the size cap")
    found = _CREDENTIALS.fullmatch(value.strip(" \t"))
    if found is None:
        raise TokenRejected(
            TokenReason.MALFORMED_HEADER,
            "Authorization header is not '<scheme> <token68>' with one token",
        )
    scheme = _SCHEMES.get(found.group(1).lower())
    if scheme is None:
        raise TokenRejected(
            TokenReason.MALFORMED_HEADER, "Authorization scheme is not Bearer or DPoP"
        )
    return Credentials(scheme, found.group(2))


def check_scopes(scopes: Iterable[str], *, setting: str = "scopes") -> tuple[str, ...]:
    """``scopes`` as a tuple, each an RFC 6749 scope-token (printable ASCII without space,
    ``"`` or ``\\``), else :class:`ConfigurationError` naming ``setting``."""
    if isinstance(scopes, str):
        scopes = (scopes,)
    checked: list[str] = []
    for scope in scopes:
        if not isinstance(scope, str) or _SCOPE_TOKEN.fullmatch(scope) is None:
            raise ConfigurationError(
                f"{setting}: {scope!r} is not a scope: write printable ASCII without spaces, "
                "quotes or backslashes ('posts:read')",
                setting=setting,
            )
        if scope not in checked:
            checked.append(scope)
    return tuple(checked)


DESCRIPTIONS: Final[dict[TokenReason, str]] = {
    TokenReason.MISSING: "Authentication required: send an access token",
    TokenReason.MALFORMED_HEADER: "The Authorization header is malformed",
    TokenReason.HEADER_TOO_LARGE: "The Authorization header is too large",
    TokenReason.EXPIRED: "The access token expired",
    TokenReason.NOT_YET_VALID: "The access token is not valid yet",
    TokenReason.ISSUED_IN_FUTURE: "The access token is not valid yet",
    TokenReason.REVOKED: "The access token was revoked",
    TokenReason.INSUFFICIENT_SCOPE: "The access token lacks a required scope",
    TokenReason.DPOP_REQUIRED: "The access token is bound to a key: use the DPoP scheme with a "
    "DPoP proof",
    TokenReason.DPOP_NONCE: "The DPoP proof must carry the nonce sent in the DPoP-Nonce header",
}
"""The fixed ``error_description`` of each reason that has its own; every other reason reads
``"The access token is invalid"`` or, for a DPoP proof, ``"The DPoP proof is invalid"``. Kept
coarse on purpose: which check failed (a signature, a key id, an algorithm) is for the audit
trail, not for the client."""

_INVALID: Final = "The access token is invalid"
_INVALID_PROOF: Final = "The DPoP proof is invalid"

OUTAGE: Final = Refusal(
    "token_store_unavailable",
    "Service unavailable: access tokens cannot be checked now. Please try again shortly.\n",
)
"""The 503 body when the verifier's store cannot be read (``Retry-After`` goes with it)."""


def description(reason: TokenReason) -> str:
    """The fixed text of ``reason`` (see :data:`DESCRIPTIONS`)."""
    text = DESCRIPTIONS.get(reason)
    if text is not None:
        return text
    return _INVALID_PROOF if reason.error_code == "invalid_dpop_proof" else _INVALID


def refusal(reason: TokenReason) -> Refusal:
    """The body of a refusal for ``reason``: the RFC 6750 error code (``"unauthorized"`` for
    a request without credentials) and the fixed description."""
    return Refusal(reason.error_code or "unauthorized", description(reason))


def _quoted(text: str) -> str:
    """``text`` as an RFC 9110 quoted-string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class NonceSource(Protocol):
    """What gives the server's current DPoP nonce
    (:class:`~bastion.core.tokens.dpop_nonce.DPoPNonces` is one)."""

    def current(self) -> str: ...


@dataclass(frozen=True, slots=True)
class BearerChallenge:
    """How refusals challenge the client: the ``realm`` and, when DPoP is accepted, the proof
    algorithms to announce (``dpop_algorithms=("EdDSA", "ES256")``; empty: no DPoP challenge).

    ``nonces`` is the server's nonce source when the DPoP verifier requires server nonces (the
    same :class:`~bastion.core.tokens.dpop_nonce.DPoPNonces`): a ``use_dpop_nonce`` refusal
    then carries the current nonce in a ``DPoP-Nonce`` header (RFC 9449 section 9), without
    which no client could learn the nonce its proof must hold.

    Validated at construction: the realm is printable ASCII of at most 128 characters (it is
    quoted and escaped on output), each algorithm a JOSE ``alg`` name.
    """

    realm: str = "api"
    dpop_algorithms: tuple[str, ...] = ()
    nonces: NonceSource | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (
            not isinstance(self.realm, str)
            or len(self.realm) > 128
            or not _REALM.fullmatch(self.realm)
        ):
            raise ConfigurationError(
                f"realm {self.realm!r} must be printable ASCII of at most 128 characters",
                setting="realm",
            )
        algorithms = self.dpop_algorithms
        if isinstance(algorithms, str):
            algorithms = (algorithms,)
        algorithms = tuple(algorithms)
        for alg in algorithms:
            if not isinstance(alg, str) or _ALG.fullmatch(alg) is None or alg.lower() == "none":
                raise ConfigurationError(
                    f"dpop_algorithms: {alg!r} is not a JOSE signature algorithm name "
                    "('EdDSA', 'ES256')",
                    setting="dpop_algorithms",
                )
        object.__setattr__(self, "dpop_algorithms", algorithms)
        if self.nonces is not None and not callable(getattr(self.nonces, "current", None)):
            raise ConfigurationError(
                "nonces must be the DPoPNonces the DPoP verifier checks (a current() method)",
                setting="nonces",
            )

    def extra_headers(self, reason: TokenReason) -> list[tuple[str, str]]:
        """The headers a refusal for ``reason`` carries besides ``WWW-Authenticate``: the
        ``DPoP-Nonce`` of a ``use_dpop_nonce`` refusal (a nonce outside the RFC 9449 syntax
        is left out rather than sent)."""
        if self.nonces is None or reason is not TokenReason.DPOP_NONCE:
            return []
        nonce = self.nonces.current()
        if not isinstance(nonce, str) or _SCOPE_TOKEN.fullmatch(nonce) is None:
            return []
        return [("DPoP-Nonce", nonce)]

    def header(
        self,
        reason: TokenReason,
        *,
        scopes: Iterable[str] = (),
        scheme: Scheme | None = None,
    ) -> str:
        """The ``WWW-Authenticate`` value refusing a request for ``reason``.

        ``scopes`` (already checked with :func:`check_scopes`) are the scopes the resource
        needs, listed for ``insufficient_scope``. ``scheme`` is the scheme the client used:
        the error goes in that scheme's challenge (RFC 9449 section 7.1), the other follows
        without one.
        """
        realm = "realm=" + _quoted(self.realm)
        code = reason.error_code
        error = ""
        if code is not None:
            error = f', error="{code}", error_description={_quoted(description(reason))}'
            if code == "insufficient_scope":
                wanted = " ".join(scopes)
                if wanted:
                    error += ", scope=" + _quoted(wanted)
        if not self.dpop_algorithms:
            return f"Bearer {realm}{error}"
        algs = "algs=" + _quoted(" ".join(self.dpop_algorithms))
        if scheme == "dpop":
            return f"DPoP {realm}{error}, {algs}, Bearer {realm}"
        return f"Bearer {realm}{error}, DPoP {realm}, {algs}"


_UNRESERVED: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/!$&'()*+,;=:@"
)


_PERCENT: Final = frozenset(b"%")
_NOT_IN_HOST: Final = frozenset("/?#@\\")


def quote_path(path: str | bytes, *, encoded: bool = False) -> str:
    """``path`` percent-encoded as it goes in a URL (RFC 3986 ``path`` characters kept); a
    ``str`` is encoded as UTF-8 first, ``bytes`` as given (a WSGI ``PATH_INFO`` is Latin-1 of
    the raw bytes: pass ``path.encode("latin-1")``). ``encoded=True`` is for a path as sent
    (ASGI ``raw_path``): its ``%`` escapes are kept, not encoded again."""
    raw = path.encode("utf-8", "surrogateescape") if isinstance(path, str) else path
    keep = _UNRESERVED | _PERCENT if encoded else _UNRESERVED
    if all(byte in keep for byte in raw):
        return raw.decode("ascii")
    return "".join(chr(byte) if byte in keep else f"%{byte:02X}" for byte in raw)


def public_url(
    scheme: str,
    host: str | None,
    path: str,
    *,
    peer: str | None = None,
    forwarded_proto: str | None = None,
    forwarded_host: str | None = None,
    forwarded_for: Sequence[str] = (),
    proxies: TrustedProxies | None = None,
) -> str:
    """``scheme://host/path`` of the request as the client addressed it, for DPoP's ``htu``.

    ``path`` is already percent-encoded (:func:`quote_path`). ``X-Forwarded-Proto`` and
    ``X-Forwarded-Host`` (the item the first trusted proxy wrote:
    :meth:`~bastion.core.client.TrustedProxies.forwarded_value`, the proxies counted in
    ``forwarded_for``, the ``X-Forwarded-For`` values) replace the connection's scheme and
    ``Host`` only when ``peer`` is one of ``proxies``; from anyone else they are ignored, and a
    client's own first item is never read, so a client cannot choose the URL its proof is
    checked against. ``ws``/``wss`` read as ``http``/``https``
    (a WebSocket handshake is an HTTP ``GET``). No host reads as ``localhost``. A host with
    a ``/``, ``?``, ``#``, ``@`` or ``\\`` in it (a forged ``Host``) would move text into the
    path or userinfo, so that a proof made for another path matched: the URL is then empty,
    which no proof's ``htu`` matches.
    """
    if (forwarded_proto or forwarded_host) and proxies is not None and proxies.trusts(peer):
        scheme = proxies.forwarded_value(peer, forwarded_proto, forwarded_for) or scheme
        host = proxies.forwarded_value(peer, forwarded_host, forwarded_for) or host
    if host and any(char in host for char in _NOT_IN_HOST):
        return ""
    scheme = scheme.lower()
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    return f"{scheme}://{(host or 'localhost').lower()}{path or '/'}"


class BearerRefused(TokenRejected):
    """A refusal ready to answer: the reason, the scheme the client used (``None`` before it
    was known) and the scopes the resource needs (listed for ``insufficient_scope``)."""

    def __init__(
        self,
        reason: TokenReason,
        *,
        scheme: Scheme | None = None,
        scopes: tuple[str, ...] = (),
        local: bool = True,
        principal: Principal | None = None,
    ) -> None:
        super().__init__(reason)
        self.scheme = scheme
        self.scopes = scopes
        self.local = local
        """Decided by the adapter (header syntax, size, scopes), not by the verifier, which
        audits its own refusals."""
        self.principal = principal
        """The verified principal an ``insufficient_scope`` refusal is about."""


@dataclass(frozen=True, slots=True)
class Route:
    """What a path needs: ``required`` (fail closed without a valid token) and ``scopes``."""

    required: bool
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Presented:
    """The credentials of a request, checked for syntax and ready for the verifier."""

    authorization: str = field(repr=False)
    dpop: str | None = field(repr=False)
    scheme: Scheme


class BearerRules:
    """Which paths need a token and which scopes, and how refusals read: the decisions the
    ASGI and WSGI middlewares share (their module docstrings describe the behaviour).

    ``protected``, ``optional`` and the keys of ``scopes`` are path patterns
    (:mod:`bastion.core.paths`), matched with :meth:`~bastion.core.paths.PathPattern.covers`
    (every reading of the path). A path under a ``scopes`` rule is protected. Checked at
    construction: a bad pattern, scope or cap is a :class:`ConfigurationError`.

    ``auditor`` receives an event for each refusal the adapter decides itself:
    ``input_validation_fail`` for a malformed or oversized header, ``authz_fail`` for a
    missing scope (with the subject and the token's ``jti``, never the token). Refusals of the
    verifier are the verifier's to audit; a request without credentials is not an event.
    """

    __slots__ = ("auditor", "challenge", "max_header_bytes", "optional", "protected", "scopes")

    def __init__(
        self,
        *,
        protected: str | Iterable[str | PathPattern] = (EVERYWHERE,),
        optional: str | Iterable[str | PathPattern] = (EVERYWHERE,),
        scopes: Mapping[str, Iterable[str]] | None = None,
        challenge: BearerChallenge | None = None,
        max_header_bytes: int = MAX_AUTHORIZATION_BYTES,
        auditor: Auditor | None = None,
    ) -> None:
        self.auditor = auditor
        self.protected = parse_patterns(protected, setting="protected")
        self.optional = parse_patterns(optional, setting="optional")
        self.scopes = _scope_rules(scopes)
        self.challenge = challenge or BearerChallenge()
        if (
            isinstance(max_header_bytes, bool)
            or not isinstance(max_header_bytes, int)
            or not 256 <= max_header_bytes <= 65536
        ):
            raise ConfigurationError(
                f"max_header_bytes must be a whole number from 256 to 65536, got "
                f"{max_header_bytes!r}",
                setting="max_header_bytes",
            )
        self.max_header_bytes = max_header_bytes

    def route(self, path: str) -> Route | None:
        """What ``path`` (the full request path) needs; ``None``: not ours, leave it alone."""
        forms = match_forms(path)
        needed: tuple[str, ...] = ()
        for pattern, wanted in self.scopes:
            if pattern.covers(forms):
                needed += tuple(scope for scope in wanted if scope not in needed)
        if needed or any(pattern.covers(forms) for pattern in self.protected):
            return Route(required=True, scopes=needed)
        if any(pattern.covers(forms) for pattern in self.optional):
            return Route(required=False)
        return None

    def present(
        self,
        route: Route,
        authorization: Sequence[str | bytes],
        dpop: Sequence[str | bytes] = (),
    ) -> Presented | None:
        """The request's credentials from every ``Authorization`` and ``DPoP`` header value
        it sent; ``None`` when it sent none (or, on an optional path, only a header of another
        scheme). Raises :class:`BearerRefused`: ``MISSING`` on a required route,
        ``MALFORMED_HEADER`` for two headers or bad syntax, ``HEADER_TOO_LARGE``, and
        ``DPOP_INVALID`` for two ``DPoP`` headers (RFC 9449 section 4.3)."""
        if not authorization:
            if route.required:
                raise BearerRefused(TokenReason.MISSING, scopes=route.scopes)
            return None
        first = authorization[0]
        if not route.required and len(authorization) == 1 and _scheme_of(first) not in _SCHEMES:
            return None  # another scheme on an optional path: the app's business
        if len(authorization) > 1:
            raise BearerRefused(TokenReason.MALFORMED_HEADER, scopes=route.scopes)
        try:
            credentials = parse_authorization(first, max_bytes=self.max_header_bytes)
        except TokenRejected as rejected:
            raise BearerRefused(rejected.reason, scopes=route.scopes) from None
        if credentials is None:  # pragma: no cover - first is not None
            raise BearerRefused(TokenReason.MISSING, scopes=route.scopes)
        scheme = credentials.scheme
        if len(dpop) > 1:
            raise BearerRefused(TokenReason.DPOP_INVALID, scheme=scheme, scopes=route.scopes)
        proof = dpop[0] if dpop else None
        if proof is not None and len(proof) > self.max_header_bytes:
            raise BearerRefused(TokenReason.HEADER_TOO_LARGE, scheme=scheme, scopes=route.scopes)
        text = first.decode("ascii") if isinstance(first, bytes) else first
        if isinstance(proof, bytes):
            proof = proof.decode("latin-1")
        return Presented(text, proof, scheme)

    @staticmethod
    def rejected(route: Route, presented: Presented, rejected: TokenRejected) -> BearerRefused:
        """The verifier's refusal, with the scheme the client used."""
        return BearerRefused(
            rejected.reason, scheme=presented.scheme, scopes=route.scopes, local=False
        )

    @staticmethod
    def admit(route: Route, principal: Principal, scheme: Scheme | None = None) -> Principal:
        """``principal`` when it holds the route's scopes, else ``BearerRefused``
        (``INSUFFICIENT_SCOPE``)."""
        if route.scopes and not principal.has_scopes(route.scopes):
            raise BearerRefused(
                TokenReason.INSUFFICIENT_SCOPE,
                scheme=scheme,
                scopes=route.scopes,
                principal=principal,
            )
        return principal

    def audit(self, refused: BearerRefused, *, path: str, client_ip: str | None) -> None:
        """Send the audit event of ``refused`` (see the class docstring), if it has one."""
        auditor = self.auditor
        reason = refused.reason
        if auditor is None or not refused.local or reason is TokenReason.MISSING:
            return
        details: dict[str, str | None] = {"reason": reason.value, "path": path}
        if reason is TokenReason.INSUFFICIENT_SCOPE:
            found = refused.principal
            details["scopes"] = " ".join(refused.scopes)
            details["token_id"] = None if found is None else found.token_id
            auditor.emit(
                EventName.AUTHZ_FAIL,
                outcome=Outcome.BLOCKED,
                user=None if found is None else found.subject,
                client_ip=client_ip,
                details=details,
            )
            return
        auditor.emit(
            EventName.INPUT_VALIDATION_FAIL,
            outcome=Outcome.BLOCKED,
            client_ip=client_ip,
            details=details,
        )

    def extra_headers(self, refused: TokenRejected) -> list[tuple[str, str]]:
        """The headers of a refusal besides ``WWW-Authenticate`` (``DPoP-Nonce``; see
        :meth:`BearerChallenge.extra_headers`)."""
        return self.challenge.extra_headers(refused.reason)

    def answer(self, refused: TokenRejected) -> tuple[int, str, Refusal]:
        """``(status, WWW-Authenticate value, body)`` of a refusal."""
        reason = refused.reason
        scheme = refused.scheme if isinstance(refused, BearerRefused) else None
        scopes = refused.scopes if isinstance(refused, BearerRefused) else ()
        header = self.challenge.header(reason, scopes=scopes, scheme=scheme)
        return reason.status, header, refusal(reason)


def _scheme_of(value: str | bytes) -> str:
    """The scheme name a value starts with: its leading letters, lower-cased. Whatever follows
    them (a space, a tab, a comma) does not change the scheme, so ``Bearer<TAB><token>`` is a
    malformed Bearer header, not another scheme an optional path would let through."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    found = _SCHEME_NAME.match(text.strip(" \t"))
    return "" if found is None else found.group().lower()


def _scope_rules(
    scopes: Mapping[str, Iterable[str]] | None,
) -> tuple[tuple[PathPattern, tuple[str, ...]], ...]:
    if scopes is None:
        return ()
    if not hasattr(scopes, "items") or isinstance(scopes, str):
        raise ConfigurationError(
            "scopes must map path patterns to the scopes they need: {'/api/admin/*': ('admin',)}",
            setting="scopes",
        )
    return tuple(
        (PathPattern.parse(pattern, setting="scopes"), check_scopes(needed, setting="scopes"))
        for pattern, needed in scopes.items()
    )
