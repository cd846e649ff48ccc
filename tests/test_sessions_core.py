"""The sans-I/O session model: IDs, handles, the record format, deadlines (property-tested)."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.core.sessions import (
    SESSION_ID_CHARS,
    Liveness,
    RecordDecoder,
    SessionConfig,
    SessionRecord,
    Tombstone,
    cookie_max_age,
    data_slice,
    decode_record,
    encode_data,
    encode_record,
    encode_tombstone,
    is_session_id,
    liveness,
    needs_renewal,
    needs_touch,
    new_session_id,
    record_key,
    replace_data,
    session_handle,
    stored_data,
)
from bastion.core.sessions import record as sessions_module
from bastion.engine.sessions import SaveResult
from bastion.errors import BadData, ConfigurationError, SessionDataError

CONFIG = SessionConfig()
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def record(**data: object) -> SessionRecord:
    return SessionRecord(
        data=dict(data), created_at=1000.0, issued_at=1000.0, last_seen=1000.0, csrf_secret="c"
    )


def test_ids_are_256_bit_and_distinct() -> None:
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == SESSION_ID_CHARS and is_session_id(i) for i in ids)


def test_the_store_key_is_a_hash_of_the_id() -> None:
    session_id = new_session_id()
    key = record_key(session_handle(session_id))
    assert key.startswith("session:")
    assert session_id not in key
    assert session_handle(session_id) == session_handle(session_id)
    assert session_handle(session_id) != session_handle(new_session_id())


@given(st.dictionaries(st.text(), JSON, max_size=6), st.text(), st.text())
def test_records_round_trip_and_data_is_last(data: dict[str, object], ip: str, ua: str) -> None:
    made = SessionRecord(
        data=data,
        created_at=1.5,
        issued_at=2.0,
        last_seen=3,
        csrf_secret="secret",
        user_id="u",
        authenticated_at=4.0,
        persistent=True,
        ip=ip,
        user_agent=ua,
    )
    raw = encode_record(made, max_bytes=1024 * 1024)
    back = decode_record(raw)
    assert isinstance(back, SessionRecord)
    assert back.data == data
    assert (back.ip, back.user_agent) == (ip[:256], ua[:256])
    assert data_slice(raw) == encode_data(data)


@given(st.dictionaries(st.text(), JSON, max_size=5), st.dictionaries(st.text(), JSON, max_size=5))
def test_replacing_the_data_bytes_keeps_the_metadata_and_decodes_to_the_new_data(
    old: dict[str, object], new: dict[str, object]
) -> None:
    made = record(**old)
    made.user_id, made.ip, made.epoch = "u", "198.51.100.7", 3
    raw = encode_record(made, max_bytes=1024 * 1024)
    old_data = data_slice(raw)
    assert old_data is not None
    replaced = replace_data(raw, old_data, encode_data(new))
    assert replaced == encode_record(
        dataclasses.replace(made, data=new), max_bytes=1024 * 1024
    )  # byte for byte what a full encode gives
    assert stored_data(replaced) == new
    assert stored_data(replaced) is not new  # a fresh copy


@given(st.binary(max_size=300))
def test_decoding_arbitrary_bytes_never_raises_anything_but_bad_data(raw: bytes) -> None:
    with contextlib.suppress(BadData):
        decode_record(raw)


@given(st.dictionaries(st.sampled_from("vdcisxuapt") | st.text(max_size=3), JSON, max_size=10))
def test_decoding_arbitrary_json_objects_is_total(payload: dict[str, object]) -> None:
    try:
        found = decode_record(json.dumps(payload).encode())
    except BadData:
        return
    assert isinstance(found, SessionRecord | Tombstone)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_times_are_refused(constant: str) -> None:
    raw = encode_record(record(), max_bytes=4096).replace(b'"s":1000.0', f'"s":{constant}'.encode())
    with pytest.raises(BadData):
        decode_record(raw)


def test_tombstones_round_trip() -> None:
    handle = session_handle(new_session_id())
    assert decode_record(encode_tombstone(Tombstone(successor=handle, until=5.0))) == Tombstone(
        successor=handle, until=5.0
    )
    assert decode_record(encode_tombstone(Tombstone(successor=None, until=5.0))) == Tombstone(
        successor=None, until=5.0
    )


def test_deadlines() -> None:
    made = record()
    assert liveness(made, 1000.0 + CONFIG.idle_timeout - 1, CONFIG) is Liveness.LIVE
    assert liveness(made, 1000.0 + CONFIG.idle_timeout, CONFIG) is Liveness.IDLE_EXPIRED
    made.last_seen = 1000.0 + CONFIG.absolute_lifetime - 10
    assert liveness(made, 1000.0 + CONFIG.absolute_lifetime, CONFIG) is Liveness.ABSOLUTE_EXPIRED
    fresh = record()
    assert not needs_touch(fresh, 1000.0 + CONFIG.touch_interval - 1, CONFIG)
    assert needs_touch(fresh, 1000.0 + CONFIG.touch_interval, CONFIG)
    assert CONFIG.renew_every is not None
    assert needs_renewal(fresh, 1000.0 + CONFIG.renew_every, CONFIG)
    assert not needs_renewal(fresh, 1000.0 + CONFIG.renew_every, SessionConfig(renew_every=None))
    assert cookie_max_age(fresh, 1000.0, CONFIG) is None
    fresh.persistent = True
    assert cookie_max_age(fresh, 1100.0, CONFIG) == math.floor(CONFIG.persistent_idle_timeout - 100)


def test_save_results_do_not_show_the_cookie_in_their_repr() -> None:
    session_id = new_session_id()
    result = SaveResult(set_cookie=f"__Host-session={session_id}; Path=/", vary=True)
    assert session_id not in repr(result)


# -- the fast codec and the head-remembering decoder --------------------------------------------


@given(st.dictionaries(st.text(), JSON, max_size=6))
def test_encode_data_is_byte_for_byte_json_dumps(data: dict[str, object]) -> None:
    assert encode_data(data) == json.dumps(data, separators=(",", ":")).encode("ascii")


def test_handles_are_unpadded_base64url_sha256() -> None:
    session_id = new_session_id()
    digest = hashlib.sha256(session_id.encode("ascii")).digest()
    assert session_handle(session_id) == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "raw",
    [b"", b" ", b"{", b'{"v":1} x', b"[" * 100_000, b"\xff", b'{"v":1,"until":1}{}'],
)
def test_malformed_records_are_bad_data_never_another_error(raw: bytes) -> None:
    with pytest.raises(BadData):
        decode_record(raw)
    with pytest.raises(BadData):
        RecordDecoder().decode(raw)


def test_a_cycle_made_after_assignment_is_a_session_data_error() -> None:
    looped: list[object] = []
    looped.append(looped)
    with pytest.raises(SessionDataError, match="'loop'"):
        encode_data({"ok": 1, "loop": looped})


@given(st.lists(st.dictionaries(st.text(), JSON, max_size=4), min_size=1, max_size=4))
def test_the_decoder_gives_what_a_full_decode_gives(datas: list[dict[str, object]]) -> None:
    decoder = RecordDecoder()
    for data in datas:  # one head, several data: the head is remembered after the first
        raw = encode_record(_with(data), max_bytes=1024 * 1024)
        assert decoder.decode(raw) == decode_record(raw)


def _with(data: dict[str, object]) -> SessionRecord:
    return SessionRecord(
        data=data, created_at=1000.0, issued_at=1000.0, last_seen=1000.0, csrf_secret="c"
    )


def test_a_remembered_head_never_hides_fields_after_the_data() -> None:
    decoder = RecordDecoder()
    raw = encode_record(record(n=1), max_bytes=4096)
    assert isinstance(decoder.decode(raw), SessionRecord)  # head remembered
    forged = raw[:-1] + b',"u":"admin"}'  # same head, a field after the data
    found = decoder.decode(forged)
    assert found == decode_record(forged)
    assert isinstance(found, SessionRecord)
    assert found.user_id == "admin"  # read as a full decode reads it, not from the memory


def test_each_decode_gets_its_own_data_dict() -> None:
    decoder = RecordDecoder()
    raw = encode_record(record(cart=["a"]), max_bytes=4096)
    first, second = decoder.decode(raw), decoder.decode(raw)
    assert isinstance(first, SessionRecord)
    assert isinstance(second, SessionRecord)
    first.data["cart"].append("b")
    assert second.data == {"cart": ["a"]}


def test_the_decoder_memory_is_bounded() -> None:
    decoder = RecordDecoder(capacity=2)
    for n in range(5):
        raw = encode_record(
            SessionRecord(data={}, created_at=n, issued_at=n, last_seen=n, csrf_secret=f"c{n}"),
            max_bytes=4096,
        )
        decoder.decode(raw)
        assert len(decoder._heads) <= 2
    assert RecordDecoder(capacity=0).decode(raw) == decode_record(raw)
    with pytest.raises(ConfigurationError, match="capacity"):
        RecordDecoder(capacity=-1)


def test_pure_python_json_fallback_matches_the_accelerated_encoder() -> None:
    """Where json's C encoder is missing (not CPython), the fallback must give the same bytes."""
    value = {"cart": ["a", "é", '"q"', 1, 2.5, None, True], "n": {"x": []}}
    accelerated = "".join(sessions_module._ENCODE(value, 0))
    assert sessions_module._FALLBACK_ENCODER.encode(value) == accelerated
    assert accelerated == '{"cart":["a","\\u00e9","\\"q\\"",1,2.5,null,true],"n":{"x":[]}}'
