"""DPoP proof replay refusal (RFC 9449 section 11.1): each accepted proof's ``jti`` is
remembered in the store, and a proof whose ``jti`` is already there is refused.

:class:`~bastion.core.tokens.dpop.DPoPVerifier` is stateless; a proof it accepts goes through
:meth:`DPoPReplayCache.check_and_remember` before the request is acted on. Remembering is one
create-if-absent compare-and-set (``expected=None``), so of any number of concurrent requests
carrying one proof, on any number of processes sharing the store, exactly one is accepted.

Keys: ``dpop-jti:{<jkt>}:<SHA-256 of the jti, base64url>``. The thumbprint is the hash tag, so
one client key's entries share a Redis Cluster slot; the jti is hashed so any text makes a
bounded, brace-free key. Keying on the key *and* the jti means one client cannot burn another
client's jti. Each entry lives ``max_age + leeway`` seconds, the longest a proof stays
acceptable to the verifier (:attr:`~bastion.core.tokens.dpop.DPoPVerifier.replay_ttl`), plus
one second: a store expires an entry *at* its TTL, while the verifier still accepts a proof
exactly ``max_age`` old, so without the margin a replay at that instant would find the entry
gone. By the time an entry expires, its proof is refused as expired anyway. Danger: the store
counts the TTL on its own clock (Redis: the server's); app servers whose clocks run more than
that second apart from it need a larger ``margin``.

With an ``auditor``, a replay emits ``authn_dpop_replay`` (outcome ``failure``, level
``warn``) with the key's thumbprint (public, not a credential) and the client address; never
the proof or its claims.

Order: remember a jti last, after the proof verified *and* the access token it accompanies
verified and is bound to the proof's key (``expected_jkt``), so only a token's holder can
write entries. Danger: anyone holding a key pair can mint valid proofs, each one entry for
``ttl`` seconds; where no token is needed yet (the token endpoint), rate-limit the route, and
size a memory store for it (its replay entries are security state, never evicted: when full,
writes fail with ``StoreFull``, a 503, rather than forget a jti).

A store outage raises :class:`~bastion.errors.StoreUnavailable` (503), never an acceptance:
a proof that cannot be remembered is not accepted.

Every async method has a blocking ``*_sync`` twin running the same flow on ``store.sync``
(:mod:`bastion.engine.flows`), for WSGI apps.
"""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING, Final

from bastion.core.audit import Outcome
from bastion.core.tokens.dpop import (
    DEFAULT_LEEWAY,
    DEFAULT_MAX_AGE,
    DPoPCheck,
    DPoPProof,
    DPoPRejected,
    DPoPVerifier,
)
from bastion.engine.flows import CompareAndSet, Flow, drive_async, drive_sync
from bastion.errors import ConfigurationError
from bastion.stores.base import SyncStore, require_sync, sync_side
from bastion.stores.keyspace import hash_tag

if TYPE_CHECKING:
    from bastion.core.audit import Auditor
    from bastion.stores.base import Store

__all__ = ["REPLAY_EVENT", "DPoPReplayCache"]

_SEEN: Final = b"1"
REPLAY_EVENT: Final = "authn_dpop_replay"


class DPoPReplayCache:
    """Remembers the ``jti`` of every accepted DPoP proof for ``max_age + leeway + margin``
    seconds (use the verifier's values: :meth:`for_verifier`), in ``store``."""

    __slots__ = ("_auditor", "_namespace", "_store", "_sync", "ttl")

    def __init__(
        self,
        store: Store,
        *,
        max_age: float = DEFAULT_MAX_AGE,
        leeway: float = DEFAULT_LEEWAY,
        margin: float = 1.0,
        namespace: str = "dpop-jti",
        auditor: Auditor | None = None,
    ) -> None:
        for setting, value in (("max_age", max_age), ("leeway", leeway), ("margin", margin)):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 <= value < 86400
            ):
                raise ConfigurationError(
                    f"{setting} must be a non-negative number of seconds (the verifier's), "
                    f"got {value!r}",
                    setting=setting,
                )
        if max_age + leeway + margin <= 0:
            raise ConfigurationError(
                "max_age + leeway + margin must be positive: it is how long a jti is remembered",
                setting="max_age",
            )
        if not isinstance(namespace, str) or not namespace or "{" in namespace or "}" in namespace:
            raise ConfigurationError(
                f"namespace must be non-empty text without braces, got {namespace!r}",
                setting="namespace",
            )
        self._store = store
        self._sync: SyncStore | None = sync_side(store)
        self._namespace = namespace
        self._auditor = auditor
        self.ttl = float(max_age + leeway + margin)

    @classmethod
    def for_verifier(
        cls,
        store: Store,
        verifier: DPoPVerifier,
        *,
        margin: float = 1.0,
        namespace: str = "dpop-jti",
        auditor: Auditor | None = None,
    ) -> DPoPReplayCache:
        """A cache that remembers each jti as long as ``verifier`` accepts its proof, and
        ``margin`` seconds more."""
        return cls(
            store,
            max_age=verifier.max_age,
            leeway=verifier.leeway,
            margin=margin,
            namespace=namespace,
            auditor=auditor,
        )

    def __repr__(self) -> str:
        return f"DPoPReplayCache(ttl={self.ttl!r}, namespace={self._namespace!r})"

    def key(self, proof: DPoPProof) -> str:
        """The store key of ``proof``'s jti (see the module docstring)."""
        digest = hashlib.sha256(proof.jti.encode("utf-8", "surrogatepass")).digest()
        name = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
        return f"{hash_tag(self._namespace, proof.jkt)}:{name}"

    def _remember_flow(self, proof: DPoPProof) -> Flow[None]:
        if not isinstance(proof, DPoPProof):
            raise ConfigurationError(
                "check_and_remember takes the DPoPProof that DPoPVerifier.verify returned",
                setting="proof",
            )
        created = yield CompareAndSet(self.key(proof), None, _SEEN, self.ttl)
        if not created:
            raise DPoPRejected(DPoPCheck.REPLAYED)

    def _replayed(self, proof: DPoPProof, client_ip: str | None) -> None:
        if self._auditor is not None:
            self._auditor.emit(
                REPLAY_EVENT,
                outcome=Outcome.FAILURE,
                client_ip=client_ip,
                details={"method": "dpop", "jkt": proof.jkt, "reason": "dpop_replayed"},
            )

    async def check_and_remember(self, proof: DPoPProof, *, client_ip: str | None = None) -> None:
        """Remember ``proof``'s jti; raise :class:`~bastion.core.tokens.dpop.DPoPRejected`
        (``DPOP_REPLAYED``) if it was remembered already. One store round trip."""
        try:
            await drive_async(self._remember_flow(proof), self._store)
        except DPoPRejected:
            self._replayed(proof, client_ip)
            raise

    def check_and_remember_sync(self, proof: DPoPProof, *, client_ip: str | None = None) -> None:
        """:meth:`check_and_remember` on ``store.sync``, for WSGI apps."""
        try:
            drive_sync(self._remember_flow(proof), require_sync(self._sync, self._store))
        except DPoPRejected:
            self._replayed(proof, client_ip)
            raise
