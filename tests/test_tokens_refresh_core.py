"""Refresh-token families, sans-I/O: token text, record round trip, and the rotation decision
driven by hypothesis over arbitrary sequences of presentations."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core.keys import KeyRing, SecretKey
from bastion.core.tokens.reasons import TokenReason, TokenRejected
from bastion.core.tokens.refresh import (
    MAX_TOKEN_CHARS,
    FamilyRecord,
    FamilySecrets,
    ParsedToken,
    Refuse,
    Replay,
    Reuse,
    Rotate,
    decide,
    decode_record,
    encode_record,
    format_token,
    new_family_id,
    new_secret,
    parse_token,
)
from bastion.engine.tokens.refresh import RefreshPolicy
from bastion.errors import BadData, ConfigurationError

RING = KeyRing(SecretKey(b"k" * 32))
SECRETS = FamilySecrets(RING)
GRACE = 10.0


def _family(now: float = 1000.0, epoch: int = 3) -> tuple[FamilyRecord, ParsedToken]:
    fid, secret = new_family_id(), new_secret()
    record = FamilyRecord(
        user_id="alice",
        client_id="app",
        scopes=("read",),
        created_at=now,
        expires_at=now + 1000,
        epoch=epoch,
        cnf_jkt=None,
        generation=0,
        current=SECRETS.hash(fid, secret),
        last_used=now,
    )
    return record, ParsedToken(fid, secret)


def _decide(record: FamilyRecord | None, token: ParsedToken, now: float, **kw: object) -> object:
    options: dict[str, object] = {
        "now": now,
        "secrets_": SECRETS,
        "grace": GRACE,
        "idle": None,
        "user_epoch": 3,
    }
    options.update(kw)
    return decide(record, token, **options)  # type: ignore[arg-type]


# -- token text -------------------------------------------------------------------------------


def test_token_round_trip() -> None:
    fid, secret = new_family_id(), new_secret()
    assert parse_token(format_token("brt_", fid, secret), "brt_") == ParsedToken(fid, secret)
    assert secret not in repr(ParsedToken(fid, secret))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "brt_",
        "brt_.",
        "xyz_" + "A" * 22 + "." + "A" * 43,  # wrong prefix
        "brt_" + "A" * 22 + "A" * 43,  # no dot
        "brt_" + "A" * 21 + "." + "A" * 43,  # short id
        "brt_" + "A" * 22 + "." + "A" * 44,  # long secret
        "brt_" + "A" * 22 + "." + "A" * 42 + "B",  # non-zero trailing bits
        "brt_" + "A" * 22 + "." + "A" * 42 + "=",  # padding
        "brt_" + "A" * 22 + "." + "A" * 42 + "+",  # standard alphabet
        "brt_" + "A" * 21 + "/." + "A" * 43,
        "brt_" + "A" * 22 + ". " + "A" * 42,  # whitespace
        "brt_" + "A" * 22 + "." + "A" * 43 + ".x",  # extra segment
        "brt_" + "\u00e9" * 22 + "." + "A" * 43,  # non-ASCII
    ],
)
def test_malformed_tokens(text: str) -> None:
    with pytest.raises(TokenRejected) as caught:
        parse_token(text, "brt_")
    assert caught.value.reason is TokenReason.MALFORMED


@pytest.mark.parametrize("value", [None, 42, ["brt_"], b"\xff" * 10])
def test_not_text_is_malformed(value: object) -> None:
    with pytest.raises(TokenRejected) as caught:
        parse_token(value, "brt_")
    assert caught.value.reason is TokenReason.MALFORMED


@pytest.mark.parametrize("value", ["brt_" + "A" * MAX_TOKEN_CHARS, b"x" * (MAX_TOKEN_CHARS + 1)])
def test_oversized_is_too_large(value: str | bytes) -> None:
    with pytest.raises(TokenRejected) as caught:
        parse_token(value, "brt_")
    assert caught.value.reason is TokenReason.TOO_LARGE


# -- the record -------------------------------------------------------------------------------


def test_record_round_trip_and_version() -> None:
    record, _ = _family()
    assert decode_record(encode_record(record)) == record
    raw = encode_record(record).replace(b'"v":1', b'"v":2')
    with pytest.raises(BadData):
        decode_record(raw)
    for bad in (b"", b"[]", b"{", b'{"v":1}', encode_record(record).replace(b'"g":0', b'"g":-1')):
        with pytest.raises(BadData):
            decode_record(bad)
    assert record.current not in repr(record)


# -- the decision -----------------------------------------------------------------------------


def test_key_rotation_keeps_hashes_and_successors() -> None:
    record, token = _family()
    rotated = FamilySecrets(KeyRing(SecretKey(b"n" * 32), previous=[SecretKey(b"k" * 32)]))
    first = _decide(record, token, 1001.0)
    assert isinstance(first, Rotate)
    # the ring gains a new current key: the old family still rotates, and a retry within the
    # grace window still finds the successor it was given under the old key
    again = _decide(first.record, token, 1002.0, secrets_=rotated)
    assert isinstance(again, Replay)
    assert again.secret == first.secret
    nxt = _decide(
        first.record, ParsedToken(token.family_id, first.secret), 1003.0, secrets_=rotated
    )
    assert isinstance(nxt, Rotate)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"user_epoch": 4}, TokenReason.REVOKED),
        ({"user_epoch": None}, TokenReason.REVOKED),
        ({"epoch_known": False}, TokenReason.REVOKED),
        ({"now": 2000.0}, TokenReason.EXPIRED),
        ({"idle": 5.0, "now": 1006.0}, TokenReason.EXPIRED),
        ({"cnf_jkt": "x"}, None),  # an unbound family ignores a thumbprint
    ],
)
def test_refusals(change: dict[str, object], reason: TokenReason | None) -> None:
    record, token = _family()
    now = float(change.pop("now", 1001.0))  # type: ignore[arg-type]
    outcome = _decide(record, token, now, **change)
    if reason is None:
        assert isinstance(outcome, Rotate)
    else:
        assert outcome == Refuse(reason)


def test_dpop_binding() -> None:
    record, token = _family()
    bound = FamilyRecord(**{**_fields(record), "cnf_jkt": "thumb"})
    assert _decide(bound, token, 1001.0) == Refuse(TokenReason.DPOP_MISMATCH)
    assert _decide(bound, token, 1001.0, cnf_jkt="other") == Refuse(TokenReason.DPOP_MISMATCH)
    assert isinstance(_decide(bound, token, 1001.0, cnf_jkt="thumb"), Rotate)


def _fields(record: FamilyRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in FamilyRecord.__slots__}


def test_unknown_secret_changes_nothing() -> None:
    record, token = _family()
    forged = ParsedToken(token.family_id, new_secret())
    assert _decide(record, forged, 1001.0) == Refuse(TokenReason.UNKNOWN)
    assert _decide(None, token, 1001.0) == Refuse(TokenReason.UNKNOWN)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=6), st.floats(min_value=0, max_value=30)),
        min_size=1,
        max_size=25,
    )
)
def test_rotation_properties(steps: list[tuple[int, float]]) -> None:
    """Whatever tokens are presented when: the absolute expiry never moves; each generation
    has exactly one successor (a replay hands out the very one the rotation did); a reuse
    revokes for good; only the current or previous token ever rotates or replays."""
    record, first = _family()
    issued = [first.secret]  # issued[g] is the secret of generation g
    now = 1000.0
    revoked = False
    for back, delay in steps:
        now += delay
        index = max(0, len(issued) - 1 - back)
        token = ParsedToken(first.family_id, issued[index])
        outcome = _decide(record, token, now)
        age = len(issued) - 1 - index
        if isinstance(outcome, Rotate):
            assert not revoked
            assert age == 0
            assert outcome.record.expires_at == record.expires_at
            assert outcome.record.generation == record.generation + 1
            issued.append(outcome.secret)
            record = outcome.record
        elif isinstance(outcome, Replay):
            assert not revoked
            assert age == 1
            assert record.rotated_at is not None
            assert now - record.rotated_at <= GRACE
            assert outcome.secret == issued[-1]
        elif isinstance(outcome, Reuse):
            assert not revoked
            assert age >= 1
            assert outcome.record.revoked == "reused"
            assert outcome.record.expires_at == record.expires_at
            record, revoked = outcome.record, True
        else:
            assert isinstance(outcome, Refuse)
            if now >= record.expires_at:
                assert outcome.reason is TokenReason.EXPIRED
            else:
                assert revoked
                assert outcome.reason is TokenReason.REVOKED
    assert len(set(issued)) == len(issued)


def test_policy_validation() -> None:
    for bad in ({"grace": 61}, {"grace": -1}, {"lifetime": 0}, {"idle": 0}, {"prefix": "a.b"}):
        with pytest.raises(ConfigurationError):
            RefreshPolicy(**bad)  # type: ignore[arg-type]
