"""The pure save decisions of bastion.core.sessions.state, driven by hypothesis.

No store and no engine: a SessionState adopts an encoded record as a load would, the test
edits it as a handler would, and the planning functions say what a save does.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from bastion.core.sessions import (
    SessionConfig,
    SessionRecord,
    SessionState,
    Tombstone,
    decode_record,
    encode_data,
    encode_record,
    merge,
    new_session_id,
    plan_save,
    record_key,
    resolve,
    rotated_record,
    session_handle,
    tombstone_for,
)
from bastion.core.sessions.state import Plan, diff, renewal_due

CONFIG = SessionConfig()
CREATED = 1_700_000_000.0
KEYS = st.text(alphabet="abcdefgh", min_size=1, max_size=3)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)
DATA = st.dictionaries(KEYS, VALUES, max_size=6)
# Seconds after the load within which neither the idle refresh nor renewal is due.
QUIET = st.floats(min_value=0.0, max_value=CONFIG.touch_interval - 1.0)


def loaded(data: dict[str, Any], *, user: str | None = None) -> SessionState:
    """A state that has loaded a stored record holding ``data`` (as the engine's load does)."""
    record = SessionRecord(
        data=data,
        created_at=CREATED,
        issued_at=CREATED,
        last_seen=CREATED,
        csrf_secret="c" * 43,
        user_id=user,
        authenticated_at=None if user is None else CREATED,
    )
    raw = encode_record(record, max_bytes=CONFIG.max_bytes)
    found = decode_record(raw)
    assert isinstance(found, SessionRecord)
    state = SessionState("cookie")
    session_id = new_session_id()
    state.adopt(session_id, record_key(session_handle(session_id)), raw, found, follower=False)
    return state


def edit(state: SessionState, changes: dict[str, Any], removals: set[str]) -> None:
    for key in removals:
        state.data.pop(key, None)
    state.data.update(changes)


@given(DATA, QUIET)
def test_an_unmodified_session_plans_no_write(data: dict[str, Any], later: float) -> None:
    state = loaded(data)
    state.accessed = True
    _ = dict(state.data)  # read, not changed
    assert plan_save(state, CREATED + later, CONFIG) is Plan.UNCHANGED


@given(DATA, QUIET)
def test_an_idle_refresh_or_a_due_renewal_is_never_skipped(
    data: dict[str, Any], later: float
) -> None:
    state = loaded(data)
    assert plan_save(state, CREATED + CONFIG.touch_interval + later, CONFIG) is Plan.GENERAL
    renew = CONFIG.renew_every
    assert renew is not None
    assert renewal_due(state, CREATED + renew + later, CONFIG)


@given(DATA, st.dictionaries(KEYS, VALUES, min_size=1, max_size=3), QUIET)
def test_the_common_write_replaces_only_the_data(
    data: dict[str, Any], changes: dict[str, Any], later: float
) -> None:
    state = loaded(data)
    before = state.record
    assert before is not None
    edit(state, changes, set())
    plan = plan_save(state, CREATED + later, CONFIG)
    if encode_data(state.data) == state.pristine:  # the "changes" rewrote the same values
        assert plan is Plan.UNCHANGED
        return
    assert isinstance(plan, tuple)
    key, expected, value, ttl = plan
    assert key == state.key
    assert expected == state.raw  # a compare-and-set on exactly what was loaded
    written = decode_record(value)
    assert isinstance(written, SessionRecord)
    assert written.data == state.data
    assert (written.created_at, written.last_seen, written.csrf_secret, written.epoch) == (
        before.created_at,
        before.last_seen,
        before.csrf_secret,
        before.epoch,
    )
    assert ttl > 0


@given(
    DATA,
    st.dictionaries(st.sampled_from("abcd"), VALUES, max_size=4),
    st.sets(st.sampled_from("abcd"), max_size=2),
    st.dictionaries(st.sampled_from("wxyz"), VALUES, max_size=4),
    st.sets(st.sampled_from("wxyz"), max_size=2),
)
def test_two_concurrent_edits_of_different_keys_both_survive_the_merge(
    data: dict[str, Any],
    ours: dict[str, Any],
    our_removals: set[str],
    theirs: dict[str, Any],
    their_removals: set[str],
) -> None:
    mine, other = loaded(dict(data)), loaded(dict(data))
    edit(mine, ours, our_removals)
    edit(other, theirs, their_removals)
    stored_by_other = merge(other, data)  # the other request saved first
    result = merge(mine, stored_by_other)  # ours lost the race and merges onto theirs
    for key in set(result) | set(data) | set(ours) | set(theirs):
        if key in "abcd" and (key in ours or key in our_removals):
            expected = mine.data.get(key, "<gone>")
        elif key in "wxyz" and (key in theirs or key in their_removals):
            expected = other.data.get(key, "<gone>")
        else:
            expected = data.get(key, "<gone>")
        assert result.get(key, "<gone>") == expected, key


@given(DATA, DATA)
def test_the_diff_applied_to_what_was_loaded_gives_the_handlers_data(
    data: dict[str, Any], replacement: dict[str, Any]
) -> None:
    state = loaded(dict(data))
    state.data.clear()
    state.data.update(replacement)
    changed, removed = diff(state)
    assert not removed & set(changed)
    assert merge(state, data) == replacement


@given(
    st.one_of(
        st.none(),
        st.builds(Tombstone, successor=st.none(), until=st.floats(0, 2 * CREATED)),
        st.builds(
            Tombstone,
            successor=st.just(session_handle(new_session_id())),
            until=st.floats(0, CREATED),
        ),
    ),
    st.floats(CREATED, 2 * CREATED),
)
def test_a_destroyed_or_dead_session_is_never_written_back(
    found: Tombstone | None, now: float
) -> None:
    assert resolve(found, now) is None


@given(st.floats(1.0, CONFIG.renew_grace - 0.5))
def test_a_live_renewal_is_followed_to_its_successor(elapsed: float) -> None:
    successor = session_handle(new_session_id())
    grave = Tombstone(successor=successor, until=CREATED + CONFIG.renew_grace)
    assert resolve(grave, CREATED + elapsed) == record_key(successor)


@given(DATA, QUIET)
def test_a_logout_leaves_nothing_to_write_back_under_the_old_id(
    data: dict[str, Any], later: float
) -> None:
    state = loaded(data, user="alice")
    old_key = state.key
    state.end()
    assert state.ended == (old_key, "alice")  # the record is deleted by the save
    assert state.key is None
    assert state.id is None
    assert state.data == {}
    assert plan_save(state, CREATED + later, CONFIG) is Plan.GENERAL
    assert state.keep_only_lifecycle()  # a 5xx still deletes it


@given(DATA, st.sampled_from(["login", "regenerate", "renew"]), QUIET)
def test_a_rotation_never_resurrects_the_old_id(
    data: dict[str, Any], kind: str, later: float
) -> None:
    state = loaded(data, user="alice")
    old_id, old_handle = state.id, state.handle
    now = CREATED + later
    if kind == "login":
        state.login("bob", now, remember=None)
    elif kind == "regenerate":
        state.regenerate()
    else:
        state.rotate, state.id = "renew", new_session_id()
    assert state.rotate == kind
    assert state.id not in {None, old_id}
    assert state.id is not None
    new_handle = session_handle(state.id)
    grave = tombstone_for(state.rotate, new_handle, now, CONFIG)
    if kind == "renew":
        assert grave.successor == new_handle != old_handle
    else:
        assert grave.successor is None  # a fixated ID never reaches the new session
    record = rotated_record(state, state.rotate, now, client_ip=None, user_agent=None)
    assert record.issued_at == now
    assert record.data == state.data
    assert record.user_id == ("bob" if kind == "login" else "alice")
    if kind == "login":
        assert record.created_at == now  # a new login starts a new absolute lifetime
        assert record.csrf_secret == state.csrf_secret != "c" * 43


@given(DATA, st.dictionaries(KEYS, VALUES, min_size=1, max_size=2))
def test_a_login_on_a_5xx_is_not_committed_but_the_old_id_still_dies(
    data: dict[str, Any], changes: dict[str, Any]
) -> None:
    state = loaded(dict(data))
    old_id = state.id
    edit(state, changes, set())
    state.login("mallory", CREATED, remember=True)
    assert state.keep_only_lifecycle()
    assert state.user_id is None  # the failed view's login is not granted
    assert state.data == data  # nor its data changes
    assert state.rotate == "regenerate"  # but the ID still moves
    assert state.id != old_id
