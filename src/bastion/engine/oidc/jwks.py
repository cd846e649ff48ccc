"""The provider's discovery document and signing keys, fetched over httpx and cached.

``ProviderKeys(issuer, http=httpx.AsyncClient(), clock=...)``:

* :meth:`~ProviderKeys.metadata`: the discovery document, checked by
  :func:`bastion.core.oidc.discovery.parse_discovery`, cached for ``metadata_ttl`` seconds
  (or fixed, when ``metadata=`` is given: explicit endpoints, no discovery request);
* :meth:`~ProviderKeys.key`: the public key for an ID token's ``kid`` and ``alg``, from the
  provider's JWKS only. A ``kid`` not in the cached set triggers one refetch, at most once per
  ``refresh_interval`` (60 s): a flood of tokens with random ``kid`` values cannot turn into a
  flood of JWKS requests.

Every request has ``timeout`` seconds and reads at most ``max_bytes`` of body. Refusals
(:class:`~bastion.core.oidc.reasons.OIDCRejected`): ``provider_unavailable`` for a connection
failure, a timeout or a 5xx; ``bad_response`` for any other status, an oversized or non-JSON
body, a document that fails its checks, or a JWKS without one usable signing key;
``id_token_invalid`` (detail ``kid`` / ``alg``) when no key fits the token.

JWKS entries that are symmetric (``kty=oct``), for encryption (``use=enc``), of an unknown
type, or unreadable are skipped: only RSA, EC and OKP public keys verify ID tokens, and a key
is only used with the algorithm family of its type (and its own ``alg`` when it names one).
"""

from __future__ import annotations

import asyncio
import json
import threading
import weakref
from typing import TYPE_CHECKING, Final

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, OKPKey, RSAKey

from bastion.core.clock import system_clock
from bastion.core.oidc.discovery import discovery_url, parse_discovery
from bastion.core.oidc.reasons import OIDCReason, OIDCRejected
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from bastion.core.clock import Clock
    from bastion.core.oidc.discovery import ProviderMetadata

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_METADATA_TTL",
    "DEFAULT_REFRESH_INTERVAL",
    "DEFAULT_TIMEOUT",
    "ProviderKeys",
    "PublicKey",
    "fetch_json",
]

DEFAULT_REFRESH_INTERVAL: Final = 60.0
DEFAULT_METADATA_TTL: Final = 3600.0
_LOCKS_GUARD: Final = threading.Lock()  # the per-loop lock table, across loop threads
DEFAULT_TIMEOUT: Final = 10.0
DEFAULT_MAX_BYTES: Final = 512 * 1024

PublicKey = RSAKey | ECKey | OKPKey

_KTY_FOR_ALG: Final = {
    "RS": "RSA",
    "PS": "RSA",
    "ES": "EC",
    "Ed": "OKP",
}
_CURVE_FOR_ALG: Final = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


async def fetch_json(
    http: httpx.AsyncClient,
    url: str,
    *,
    timeout_s: float,
    max_bytes: int,
    what: str,
    bearer: str | None = None,
) -> object:
    """GET ``url`` and decode its JSON body (see the module docstring for the refusals);
    ``bearer`` sends that access token (the userinfo endpoint)."""
    headers = {"Accept": "application/json"}
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    try:
        async with http.stream("GET", url, timeout=timeout_s, headers=headers) as response:
            if response.status_code >= 500:
                raise OIDCRejected(
                    OIDCReason.PROVIDER_UNAVAILABLE, f"{what}: HTTP {response.status_code}"
                )
            if response.status_code != 200:
                raise OIDCRejected(OIDCReason.BAD_RESPONSE, f"{what}: HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise OIDCRejected(OIDCReason.BAD_RESPONSE, f"{what}: over {max_bytes} bytes")
    except httpx.HTTPError as exc:
        raise OIDCRejected(
            OIDCReason.PROVIDER_UNAVAILABLE, f"{what}: {type(exc).__name__}"
        ) from exc
    try:
        return json.loads(bytes(body))
    except ValueError as exc:
        raise OIDCRejected(OIDCReason.BAD_RESPONSE, f"{what}: not JSON") from exc


def _entry(data: object) -> tuple[str | None, str | None, PublicKey] | None:
    """``(kid, alg, key)`` of one usable JWKS entry, or ``None`` to skip it."""
    if not isinstance(data, dict) or data.get("kty") not in ("RSA", "EC", "OKP"):
        return None
    if data.get("use", "sig") != "sig":
        return None
    kid, alg = data.get("kid"), data.get("alg")
    if (kid is not None and not isinstance(kid, str)) or (
        alg is not None and not isinstance(alg, str)
    ):
        return None
    public = {k: v for k, v in data.items() if k not in ("d", "p", "q", "dp", "dq", "qi", "oth")}
    try:
        key = JWKRegistry.import_key(public)
    except (JoseError, ValueError, TypeError, KeyError):
        return None
    if not isinstance(key, RSAKey | ECKey | OKPKey):
        return None
    return kid, alg, key


def key_fits(key: PublicKey, alg: str, key_alg: str | None) -> bool:
    """Whether ``key`` may verify a signature made with ``alg``."""
    if key_alg is not None and key_alg != alg:
        return False
    if _KTY_FOR_ALG.get(alg[:2]) != key.key_type:
        return False
    curve = _CURVE_FOR_ALG.get(alg)
    return curve is None or (isinstance(key, ECKey) and key.curve_name == curve)


class ProviderKeys:
    """Discovery and JWKS of one issuer (see the module docstring)."""

    __slots__ = (
        "_clock",
        "_fetched_keys_at",
        "_fixed",
        "_http",
        "_issuer",
        "_keys",
        "_locks",
        "_max_bytes",
        "_metadata",
        "_metadata_at",
        "_metadata_ttl",
        "_refresh_interval",
        "_timeout",
    )

    def __init__(
        self,
        issuer: str,
        *,
        http: httpx.AsyncClient,
        clock: Clock = system_clock,
        metadata: ProviderMetadata | None = None,
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
        metadata_ttl: float = DEFAULT_METADATA_TTL,
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._issuer = issuer
        self._http = http
        self._clock = clock
        self._fixed = metadata is not None
        self._metadata = metadata
        self._metadata_at = float("-inf")
        self._metadata_ttl = float(metadata_ttl)
        self._refresh_interval = float(refresh_interval)
        self._timeout = float(timeout)
        self._max_bytes = int(max_bytes)
        self._keys: list[tuple[str | None, str | None, PublicKey]] | None = None
        self._fetched_keys_at = float("-inf")
        # One lock per event loop: an asyncio.Lock binds to the first loop it is contended on,
        # and one service may serve several (the Flask blueprint's loop thread beside an ASGI
        # server, one test client after another); a shared lock then raised RuntimeError.
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"ProviderKeys(issuer={self._issuer!r})"

    def _lock(self) -> asyncio.Lock:
        """The running loop's lock (made on its first use there; see ``__init__``)."""
        loop = asyncio.get_running_loop()
        with _LOCKS_GUARD:
            lock = self._locks.get(loop)
            if lock is None:
                lock = self._locks[loop] = asyncio.Lock()
        return lock

    async def metadata(self) -> ProviderMetadata:
        """The checked discovery document (cached; see the module docstring)."""
        now = self._clock.now()
        cached = self._metadata
        if cached is not None and (self._fixed or now - self._metadata_at < self._metadata_ttl):
            return cached
        async with self._lock():
            if self._metadata is not None and self._metadata is not cached:
                return self._metadata
            document = await fetch_json(
                self._http,
                discovery_url(self._issuer),
                timeout_s=self._timeout,
                max_bytes=self._max_bytes,
                what="discovery",
            )
            fresh = parse_discovery(document, issuer=self._issuer)
            self._metadata, self._metadata_at = fresh, self._clock.now()
            return fresh

    async def _refresh_keys(self) -> None:
        metadata = await self.metadata()
        if metadata.jwks_uri is None:
            raise ConfigurationError(
                f"{self._issuer}: no jwks_uri, so no ID token can be verified", setting="jwks_uri"
            )
        jwks_uri = metadata.jwks_uri
        async with self._lock():
            if self._clock.now() - self._fetched_keys_at < self._refresh_interval:
                return  # refreshed just now, by this or a parallel caller
            self._fetched_keys_at = self._clock.now()
            try:
                document = await fetch_json(
                    self._http,
                    jwks_uri,
                    timeout_s=self._timeout,
                    max_bytes=self._max_bytes,
                    what="jwks",
                )
            except OIDCRejected:
                if self._keys is None:  # never had keys: the next login may try again
                    self._fetched_keys_at = float("-inf")
                raise
            entries = document.get("keys") if isinstance(document, dict) else None
            if not isinstance(entries, list):
                raise OIDCRejected(OIDCReason.BAD_RESPONSE, "jwks: no keys member")
            usable = [found for found in map(_entry, entries) if found is not None]
            if not usable:
                raise OIDCRejected(OIDCReason.BAD_RESPONSE, "jwks: no usable signing key")
            self._keys = usable

    def _find(self, kid: str | None, alg: str) -> PublicKey | None:
        fitting = [key for key_id, key_alg, key in self._keys or () if key_fits(key, alg, key_alg)]
        if kid is None:
            # Without a kid only an unambiguous set may answer (Core section 10.1).
            return fitting[0] if len(fitting) == 1 else None
        for key_id, key_alg, key in self._keys or ():
            if key_id == kid and key_fits(key, alg, key_alg):
                return key
        return None

    async def key(self, kid: str | None, alg: str) -> PublicKey:
        """The provider key for a token signed with ``alg`` under ``kid``; a token's ``alg``
        must already be one of :attr:`ProviderMetadata.id_token_algs`."""
        if self._keys is None:
            await self._refresh_keys()
        found = self._find(kid, alg)
        if found is None and self._clock.now() - self._fetched_keys_at >= self._refresh_interval:
            await self._refresh_keys()
            found = self._find(kid, alg)
        if found is None:
            raise OIDCRejected(
                OIDCReason.ID_TOKEN_INVALID, "id token: no provider key fits", detail="kid"
            )
        return found
