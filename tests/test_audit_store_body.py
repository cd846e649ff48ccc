"""The writer's fast serialiser writes exactly what ``AuditEvent.to_json`` writes."""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from hypothesis import given, reject
from hypothesis import strategies as st

from bastion.core.audit import (
    AuditEvent,
    EventName,
    IdentifierHasher,
    Level,
    Outcome,
    _looks_secret,
)
from bastion.core.keys import KeyRing, SecretKey
from bastion.engine.audit.body import event_body

HASHER = IdentifierHasher(KeyRing(SecretKey.generate()))
ROTATED = IdentifierHasher(KeyRing(SecretKey.generate(), previous=[SecretKey.generate()]))

keys = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True).filter(
    lambda key: not any(word in key for word in ("key", "pass", "token", "secret", "code"))
)
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=300),
)


class Colour(enum.IntEnum):
    RED = 1


@given(
    name=st.sampled_from([*EventName, "app_step", "authn_mfa_fail"]),
    outcome=st.sampled_from(list(Outcome)),
    level=st.sampled_from(list(Level)),
    micros=st.integers(min_value=0, max_value=4_000_000_000_000_000),
    request_id=st.none() | st.text(max_size=200),
    user=st.none() | st.text(max_size=40),
    client_ip=st.none() | st.text(max_size=40),
    session=st.none() | st.text(max_size=40),
    details=st.dictionaries(keys, values, max_size=8),
    rotated=st.booleans(),
)
def test_the_body_is_to_json(
    name: str,
    outcome: Outcome,
    level: Level,
    micros: int,
    request_id: str | None,
    user: str | None,
    client_ip: str | None,
    session: str | None,
    details: dict[str, object],
    rotated: bool,
) -> None:
    hasher = ROTATED if rotated else HASHER
    if any(_looks_secret(key) for key in details):
        reject()  # refused by AuditEvent (a secret-looking key): not an event at all
    event = AuditEvent(
        name=name,
        time=datetime.fromtimestamp(micros / 1_000_000, tz=UTC),
        outcome=outcome,
        level=level,
        request_id=request_id,
        user=None if user is None else hasher.hash(user),
        client_ip=None if client_ip is None else hasher.hash(client_ip, kind="client_ip"),
        session=None if session is None else hasher.hash(session, kind="session"),
        details={**details, "colour": Colour.RED},  # type: ignore[dict-item]
    )
    assert event_body(event) == event.to_json()
