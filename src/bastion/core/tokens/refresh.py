"""Refresh-token families, sans-I/O: the token text, the stored record, and the rotation decision.

A refresh token is opaque: ``brt_<family id>.<secret>``, a 128-bit random family id (the store
lookup, not a credential) and a 256-bit secret, both unpadded base64url. One family per login.
The store never holds a secret, only its keyed hash (HMAC-SHA256 under
``ring.lookup("tokens:refresh:secret")``, checked under every key of the ring so a rotation of
the ring keeps every family working; the family id is the store key, so no lookup name changes).

Each use rotates: the successor's secret is *derived*,
``HMAC(ring.derive("tokens:refresh:successor"), family id | generation | presented secret)``, so a
retry of exactly the previous token inside the grace window gets the same successor without the
plaintext being stored, and two parallel uses of one token can never yield two successors.

:func:`decide` is the whole policy as a pure function of (record, presented secret, now, policy,
user epoch, DPoP thumbprint). It answers :class:`Rotate` (write the new record, hand out the
successor), :class:`Replay` (the previous token inside the grace window: hand out the current
successor again, write nothing), :class:`Reuse` (a rotated token presented again: write the
revoked tombstone, audit, refuse ``REUSED``) or :class:`Refuse` (no write).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import secrets
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final, NoReturn

from bastion.core.tokens.reasons import TokenReason, TokenRejected
from bastion.errors import BadData

if TYPE_CHECKING:
    from bastion.core.keys import KeyRing

__all__ = [
    "HISTORY",
    "MAX_TOKEN_CHARS",
    "RECORD_VERSION",
    "FamilyRecord",
    "FamilySecrets",
    "Outcome",
    "ParsedToken",
    "Refuse",
    "Replay",
    "Reuse",
    "Rotate",
    "decide",
    "decode_record",
    "encode_record",
    "format_token",
    "is_known",
    "new_family_id",
    "new_secret",
    "parse_token",
]

RECORD_VERSION: Final = 1
HISTORY: Final = 16
"""Hashes of rotated secrets a family keeps (newest first): presenting any of them is a
verified reuse. An older secret than that matches nothing and is refused ``UNKNOWN`` without
revoking, so that a family id alone (it may appear in logs) never lets anyone revoke a family."""

MAX_TOKEN_CHARS: Final = 256
"""Longest token text looked at; longer is ``TOO_LARGE`` before any parsing."""

_FAMILY_CHARS: Final = 22  # 16 bytes
_SECRET_CHARS: Final = 43  # 32 bytes
_B64 = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str, chars: int) -> bytes | None:
    """Canonical unpadded base64url of exactly ``chars`` characters, else ``None``."""
    if len(text) != chars or _B64.fullmatch(text) is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if _b64(raw) == text else None  # refuses non-zero trailing bits


def new_family_id() -> str:
    return _b64(secrets.token_bytes(16))


def new_secret() -> str:
    return _b64(secrets.token_bytes(32))


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A syntactically valid refresh token. ``repr`` never shows the secret."""

    family_id: str
    secret: str

    def __repr__(self) -> str:
        return f"ParsedToken(family_id={self.family_id!r}, secret='**********')"


def format_token(prefix: str, family_id: str, secret: str) -> str:
    return f"{prefix}{family_id}.{secret}"


def parse_token(token: object, prefix: str) -> ParsedToken:
    """Split ``token``; raise ``TokenRejected`` (``TOO_LARGE`` first, else ``MALFORMED``)."""
    if isinstance(token, bytes):
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenRejected(TokenReason.TOO_LARGE)
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError:
            raise TokenRejected(TokenReason.MALFORMED) from None
    if not isinstance(token, str):
        raise TokenRejected(TokenReason.MALFORMED)
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenRejected(TokenReason.TOO_LARGE)
    if not token.startswith(prefix):
        raise TokenRejected(TokenReason.MALFORMED)
    family_id, dot, secret = token[len(prefix) :].partition(".")
    if not dot or _unb64(family_id, _FAMILY_CHARS) is None or _unb64(secret, _SECRET_CHARS) is None:
        raise TokenRejected(TokenReason.MALFORMED)
    return ParsedToken(family_id, secret)


class FamilySecrets:
    """The two keyed functions of the family secrets, from one key ring.

    ``hash`` names a secret under the current key (what new records store); ``matches`` checks
    a stored hash under every key of the ring; ``successors`` gives the derived successor under
    every key, current first (a retry after a ring rotation still finds the one it was given).
    """

    __slots__ = ("_hash_keys", "_successor_keys")

    def __init__(self, ring: KeyRing) -> None:
        self._hash_keys = tuple(k.reveal() for k in ring.derive("tokens:refresh:secret"))
        self._successor_keys = tuple(k.reveal() for k in ring.derive("tokens:refresh:successor"))

    @staticmethod
    def _message(family_id: str, secret: str) -> bytes:
        return family_id.encode("ascii") + b"\x00" + secret.encode("ascii")

    def hash(self, family_id: str, secret: str) -> str:
        return _b64(hmac.digest(self._hash_keys[0], self._message(family_id, secret), "sha256"))

    def hashes(self, family_id: str, secret: str) -> tuple[str, ...]:
        message = self._message(family_id, secret)
        return tuple(_b64(hmac.digest(k, message, hashlib.sha256)) for k in self._hash_keys)

    def successors(self, family_id: str, generation: int, secret: str) -> tuple[str, ...]:
        message = f"{family_id}\x00{generation}\x00{secret}".encode("ascii")
        return tuple(_b64(hmac.digest(k, message, hashlib.sha256)) for k in self._successor_keys)

    def __repr__(self) -> str:
        return "FamilySecrets(<redacted>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("FamilySecrets cannot be pickled: it holds secrets")


@dataclass(frozen=True, slots=True)
class FamilyRecord:
    """The stored state of one family. ``current`` is the hash of the live secret; ``history``
    the hashes of rotated ones, newest first (``history[0]`` is the previous token, rotated at
    ``rotated_at``). ``revoked`` is ``None`` or why (``"reused"``, ``"revoked"``, ``"epoch"``)."""

    user_id: str
    client_id: str
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float
    epoch: int
    cnf_jkt: str | None
    generation: int
    current: str
    history: tuple[str, ...] = ()
    rotated_at: float | None = None
    last_used: float = 0.0
    revoked: str | None = None

    def __repr__(self) -> str:
        return (
            f"FamilyRecord(user_id={self.user_id!r}, generation={self.generation}, "
            f"revoked={self.revoked!r}, hashes=<redacted>)"
        )


def encode_record(record: FamilyRecord) -> bytes:
    payload = {
        "v": RECORD_VERSION,
        "u": record.user_id,
        "c": record.client_id,
        "s": list(record.scopes),
        "t": record.created_at,
        "x": record.expires_at,
        "e": record.epoch,
        "j": record.cnf_jkt,
        "g": record.generation,
        "h": record.current,
        "p": list(record.history),
        "r": record.rotated_at,
        "l": record.last_used,
        "k": record.revoked,
    }
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadData("refresh family record has a malformed time")
    return float(value)


def _text(value: object) -> str:
    if type(value) is not str:
        raise BadData("refresh family record has a malformed text field")
    return value


def decode_record(raw: bytes) -> FamilyRecord:
    """Parse a stored family; anything unexpected is :class:`~bastion.errors.BadData`."""
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadData("refresh family record is not JSON") from None
    if type(payload) is not dict or payload.get("v") != RECORD_VERSION:
        raise BadData("refresh family record has an unknown format version")
    scopes, history = payload.get("s"), payload.get("p")
    if type(scopes) is not list or type(history) is not list:
        raise BadData("refresh family record has malformed lists")
    generation, epoch = payload.get("g"), payload.get("e")
    if type(generation) is not int or type(epoch) is not int or generation < 0 or epoch < 0:
        raise BadData("refresh family record has a malformed counter")
    jkt, rotated, revoked = payload.get("j"), payload.get("r"), payload.get("k")
    return FamilyRecord(
        user_id=_text(payload.get("u")),
        client_id=_text(payload.get("c")),
        scopes=tuple(_text(s) for s in scopes),
        created_at=_number(payload.get("t")),
        expires_at=_number(payload.get("x")),
        epoch=epoch,
        cnf_jkt=None if jkt is None else _text(jkt),
        generation=generation,
        current=_text(payload.get("h")),
        history=tuple(_text(h) for h in history),
        rotated_at=None if rotated is None else _number(rotated),
        last_used=_number(payload.get("l")),
        revoked=None if revoked is None else _text(revoked),
    )


# -- the decision ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rotate:
    record: FamilyRecord
    secret: str  # the successor's secret

    def __repr__(self) -> str:
        return f"Rotate(generation={self.record.generation}, secret='**********')"


@dataclass(frozen=True, slots=True)
class Replay:
    record: FamilyRecord
    secret: str  # the current secret, handed out again

    def __repr__(self) -> str:
        return f"Replay(generation={self.record.generation}, secret='**********')"


@dataclass(frozen=True, slots=True)
class Reuse:
    record: FamilyRecord  # the revoked tombstone to write


@dataclass(frozen=True, slots=True)
class Refuse:
    reason: TokenReason


Outcome = Rotate | Replay | Reuse | Refuse


def _known(stored: str, candidates: tuple[str, ...]) -> bool:
    found = False
    for candidate in candidates:
        found |= hmac.compare_digest(stored, candidate)
    return found


def decide(  # noqa: PLR0911, PLR0912 (one decision table, in check order)
    record: FamilyRecord | None,
    token: ParsedToken,
    *,
    now: float,
    secrets_: FamilySecrets,
    grace: float,
    idle: float | None,
    user_epoch: int | None,
    epoch_known: bool = True,
    cnf_jkt: str | None = None,
    history: int = HISTORY,
) -> Outcome:
    """What a presentation of ``token`` does to the family ``record`` (see the module docstring).

    ``user_epoch`` is the user's current revocation epoch; ``None`` means it could not be read
    (refused ``REVOKED``), and ``epoch_known=False`` that the epoch record is absent: then only
    a family made under epoch 0 is accepted (an absent record under a family of a later epoch
    means the record expired or was lost, and the family is refused rather than revived).
    Order: an unrecognised secret is ``UNKNOWN`` (no state change, so a family id alone does
    nothing), then expiry, revocation, epoch, DPoP binding, idle time, then the generation.
    """
    if record is None:
        return Refuse(TokenReason.UNKNOWN)
    names = secrets_.hashes(token.family_id, token.secret)
    if _known(record.current, names):
        position = 0
    else:
        position = next((i + 1 for i, old in enumerate(record.history) if _known(old, names)), -1)
    if position < 0:
        return Refuse(TokenReason.UNKNOWN)
    if now >= record.expires_at:
        return Refuse(TokenReason.EXPIRED)
    if record.revoked is not None:
        return Refuse(TokenReason.REVOKED)
    if user_epoch is None or record.epoch < user_epoch or (record.epoch and not epoch_known):
        return Refuse(TokenReason.REVOKED)
    if record.cnf_jkt is not None and (
        cnf_jkt is None or not hmac.compare_digest(record.cnf_jkt, cnf_jkt)
    ):
        return Refuse(TokenReason.DPOP_MISMATCH)
    if idle is not None and now - record.last_used > idle:
        return Refuse(TokenReason.EXPIRED)
    if position == 0:
        successor = secrets_.successors(token.family_id, record.generation, token.secret)[0]
        return Rotate(
            replace(
                record,
                generation=record.generation + 1,
                current=secrets_.hash(token.family_id, successor),
                history=(record.current, *record.history)[:history],
                rotated_at=now,
                last_used=now,
            ),
            successor,
        )
    if position == 1 and record.rotated_at is not None and now - record.rotated_at <= grace:
        for successor in secrets_.successors(token.family_id, record.generation - 1, token.secret):
            if _known(record.current, secrets_.hashes(token.family_id, successor)):
                return Replay(record, successor)
    return Reuse(replace(record, revoked="reused", last_used=now))


def is_known(record: FamilyRecord, token: ParsedToken, secrets_: FamilySecrets) -> bool:
    """Whether ``token`` is the family's current token or one of its remembered rotated ones."""
    names = secrets_.hashes(token.family_id, token.secret)
    return _known(record.current, names) or any(_known(old, names) for old in record.history)
