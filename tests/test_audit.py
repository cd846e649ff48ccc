"""Audit events: vocabulary, hashed identifiers, secret-free details, one JSON line per event."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core.audit import (
    DEFAULT_LEVELS,
    MAX_DETAILS,
    MAX_TEXT_CHARS,
    SAFE_DETAIL_KEYS,
    AuditEvent,
    Auditor,
    AuditSink,
    EventName,
    HashedIdentifier,
    IdentifierHasher,
    Level,
    LoggingAuditSink,
    Outcome,
    clean_text,
    default_level,
)
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing, SecretKey
from bastion.errors import ConfigurationError
from bastion.testing.audit import RecordingAuditSink

KEY = SecretKey(b"audit-key-" * 4)
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
NAME_RE = re.compile(r"[a-z]+(_[a-z0-9]+)*")


@pytest.fixture
def hasher() -> IdentifierHasher:
    return IdentifierHasher(KEY)


@pytest.fixture
def sink() -> RecordingAuditSink:
    return RecordingAuditSink()


@pytest.fixture
def auditor(hasher: IdentifierHasher, sink: RecordingAuditSink) -> Auditor:
    return Auditor(hasher, FrozenClock(T0), sink)


def _event(**kwargs: object) -> AuditEvent:
    fields: dict[str, object] = {
        "name": EventName.AUTHZ_FAIL,
        "time": datetime.fromtimestamp(T0, tz=UTC),
        "outcome": Outcome.BLOCKED,
        "level": Level.CRITICAL,
    }
    fields.update(kwargs)
    return AuditEvent(**fields)  # type: ignore[arg-type]


# --- shape --------------------------------------------------------------------------------


def test_json_shape_is_exact(
    auditor: Auditor, hasher: IdentifierHasher, sink: RecordingAuditSink
) -> None:
    event = auditor.emit(
        EventName.AUTHN_LOGIN_FAIL,
        outcome=Outcome.FAILURE,
        request_id="req-1",
        user="alice",
        client_ip="203.0.113.9",
        details={"reason": "bad_password", "attempt": 3, "locked": False, "ratio": 0.5},
    )
    assert sink.events == [event]
    user = hasher.hash("alice").digest
    ip = hasher.hash("203.0.113.9", kind="client_ip").digest
    assert event.to_json() == (
        '{"time":"2023-11-14T22:13:20.000Z","event":"authn_login_fail","level":"warn",'
        f'"outcome":"failure","request_id":"req-1","user":"{user}","client_ip":"{ip}",'
        '"session":null,"user_agent":null,"details":{"attempt":3,"locked":false,"ratio":0.5,'
        '"reason":"bad_password"}}'
    )
    assert list(event.to_dict()) == [
        "time",
        "event",
        "level",
        "outcome",
        "request_id",
        "user",
        "client_ip",
        "session",
        "user_agent",
        "details",
    ]
    assert "\n" not in event.to_json()


def test_time_is_utc_with_milliseconds_and_z() -> None:
    plus_two = timezone(timedelta(hours=2))
    event = _event(time=datetime(2024, 2, 29, 12, 30, 15, 123456, tzinfo=plus_two))
    assert event.time.utcoffset() == timedelta(0)
    assert event.to_dict()["time"] == "2024-02-29T10:30:15.123Z"


def test_naive_time_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="timezone-aware") as info:
        _event(time=datetime(2024, 1, 1))  # noqa: DTZ001 (a naive datetime is the test)
    assert info.value.setting == "time"


def test_events_are_immutable() -> None:
    event = _event(details={"reason": "x"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.outcome = Outcome.SUCCESS  # type: ignore[misc]
    with pytest.raises(TypeError):
        event.details["reason"] = "y"  # type: ignore[index]
    assert hash(event) == hash(_event(details={"reason": "x"}))
    assert event == _event(details={"reason": "x"})


def test_outcome_and_level_accept_values_and_refuse_others() -> None:
    event = _event(outcome="blocked", level="warn")
    assert event.outcome is Outcome.BLOCKED
    assert event.level is Level.WARN
    for field, bad in (("outcome", "maybe"), ("level", "debug")):
        with pytest.raises(ConfigurationError, match="must be one of") as info:
            _event(**{field: bad})
        assert info.value.setting == field


# --- names and levels ---------------------------------------------------------------------


def test_vocabulary_names_are_well_formed_and_all_have_levels() -> None:
    assert set(DEFAULT_LEVELS) == set(EventName)
    for name in EventName:
        assert NAME_RE.fullmatch(name.value), name
    for required in (
        "authn_login_success",
        "authn_login_successafterfail",
        "authn_login_fail_max",
        "authn_token_reuse",
        "authz_admin",
        "excess_rate_limit_exceeded",
        "malicious_csrf",
        "malicious_direct_reference",
        "session_use_after_expire",
        "sys_shutdown",
        "user_deleted",
    ):
        assert EventName(required).value == required


@pytest.mark.parametrize(
    ("name", "level"),
    [
        (EventName.AUTHN_LOGIN_SUCCESS, Level.INFO),
        (EventName.AUTHN_LOGIN_FAIL, Level.WARN),
        (EventName.AUTHN_PASSWORD_CHANGE_FAIL, Level.CRITICAL),
        (EventName.AUTHN_TOKEN_REUSE, Level.CRITICAL),
        (EventName.AUTHZ_FAIL, Level.CRITICAL),
        (EventName.EXCESS_RATE_LIMIT_EXCEEDED, Level.WARN),
        (EventName.SESSION_CREATED, Level.INFO),
        (EventName.SESSION_USE_AFTER_EXPIRE, Level.CRITICAL),
        (EventName.SYS_STARTUP, Level.WARN),
    ],
)
def test_default_levels_follow_the_cheat_sheet(
    auditor: Auditor, name: EventName, level: Level
) -> None:
    assert auditor.emit(name, outcome=Outcome.SUCCESS).level is level
    assert default_level(name, Outcome.FAILURE) is level


def test_explicit_level_wins(auditor: Auditor) -> None:
    event = auditor.emit(EventName.SESSION_CREATED, outcome=Outcome.SUCCESS, level=Level.CRITICAL)
    assert event.level is Level.CRITICAL


@pytest.mark.parametrize("name", ["authn_mfa_fail", "app_export_2", "x", "bulk_delete"])
def test_custom_names_are_allowed(auditor: Auditor, name: str) -> None:
    ok = auditor.emit(name, outcome=Outcome.SUCCESS)
    assert ok.name == name
    assert ok.level is Level.INFO
    assert auditor.emit(name, outcome=Outcome.FAILURE).level is Level.WARN
    assert auditor.emit(name, outcome=Outcome.BLOCKED).level is Level.WARN


def test_a_vocabulary_string_becomes_the_enum(auditor: Auditor) -> None:
    event = auditor.emit("authz_fail", outcome=Outcome.BLOCKED)
    assert event.name is EventName.AUTHZ_FAIL
    assert event.level is Level.CRITICAL


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Authn_fail",
        "authn-fail",
        "_authn",
        "authn_",
        "authn__fail",
        "1authn",
        "authn fail",
        "authn_fail\n",
        "authn_fail\r\nFAKE",
        "x" * 65,
        "café",
        None,
        42,
    ],
)
def test_bad_custom_names_are_refused(auditor: Auditor, name: object) -> None:
    with pytest.raises(ConfigurationError, match="name") as info:
        auditor.emit(name, outcome=Outcome.SUCCESS)  # type: ignore[arg-type]
    assert info.value.setting == "name"
    assert "\n" not in str(info.value)


# --- identifiers --------------------------------------------------------------------------


def test_digest_is_keyed_truncated_hmac_sha256(hasher: IdentifierHasher) -> None:
    # Pinned: logs must stay correlatable across processes, hosts and releases.
    subkey = hmac.digest(KEY.reveal(), b"bastion.derive.v1\x00audit:identifiers", hashlib.sha256)
    expected = hmac.digest(subkey, b"user\x00alice", hashlib.sha256)[:16].hex()
    assert hasher.hash("alice").digest == expected
    assert len(expected) == 32


def test_raw_identifiers_never_reach_the_output(auditor: Auditor) -> None:
    event = auditor.emit(
        EventName.SESSION_CREATED,
        outcome=Outcome.SUCCESS,
        user="alice.wonderland@example.com",
        client_ip="198.51.100.77",
        session="sess-secret-value-0001",
    )
    for text in (event.to_json(), repr(event), str(event), json.dumps(event.to_dict())):
        assert "alice" not in text
        assert "198.51.100.77" not in text
        assert "sess-secret" not in text


def test_same_identifier_same_hash_other_key_other_hash(hasher: IdentifierHasher) -> None:
    assert hasher.hash("alice") == hasher.hash("alice")
    assert hasher.hash("alice") == IdentifierHasher(KeyRing(KEY)).hash("alice")
    assert hasher.hash("alice") != hasher.hash("bob")
    assert hasher.hash("alice") != IdentifierHasher(SecretKey(b"other-key-" * 4)).hash("alice")
    assert hasher.hash("alice") != IdentifierHasher(KEY, purpose="tenant-2").hash("alice")


def test_kind_separates_identifiers(hasher: IdentifierHasher) -> None:
    assert hasher.hash("10.0.0.1", kind="user") != hasher.hash("10.0.0.1", kind="client_ip")
    assert hasher.hash(42) == hasher.hash("42")


def test_audit_key_is_independent_of_signing_keys(hasher: IdentifierHasher) -> None:
    signing_subkey = KEY.derive("signer:identifiers").reveal()
    raw = hmac.digest(signing_subkey, b"user\x00alice", hashlib.sha256)[:16].hex()
    assert hasher.hash("alice").digest != raw


def test_candidates_span_a_rotation() -> None:
    new = SecretKey(b"new-audit-" * 4)
    before = IdentifierHasher(KEY).hash("alice").digest
    rotated = IdentifierHasher(KeyRing(new, previous=[KEY]))
    assert rotated.hash("alice").digest != before
    assert rotated.candidates("alice") == (rotated.hash("alice").digest, before)


def test_hashing_is_total_on_text(hasher: IdentifierHasher) -> None:
    assert len(hasher.hash("\ud800\n\x00").digest) == 32
    with pytest.raises(ConfigurationError, match="str or an int"):
        hasher.hash(b"alice")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="str or an int"):
        hasher.hash(True)
    with pytest.raises(ConfigurationError, match="snake_case"):
        hasher.hash("alice", kind="User-Name")


def test_events_hold_only_hashed_identifiers() -> None:
    with pytest.raises(ConfigurationError, match="raw identifiers are never logged") as info:
        _event(user="alice")
    assert info.value.setting == "user"
    with pytest.raises(ConfigurationError, match="32 lowercase hex"):
        HashedIdentifier("alice")


def test_hasher_repr_has_no_key(hasher: IdentifierHasher) -> None:
    assert repr(hasher) == "IdentifierHasher(keys=1)"
    assert "audit-key" not in repr(hasher)


# --- details ------------------------------------------------------------------------------

SECRET_LOOKING = [
    "password",
    "new_password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "csrf_token",
    "key",
    "api_key",
    "apikey",
    "private_key",
    "cookie",
    "set_cookie",
    "authorization",
    "auth",
    "session_id",
    "sessionid",
    "sid",
    "otp",
    "totp_code",
    "code",
    "pin",
    "jwt",
    "bearer",
    "credentials",
    "signature",
]


@pytest.mark.parametrize("key", SECRET_LOOKING)
def test_secret_looking_detail_keys_are_refused(auditor: Auditor, key: str) -> None:
    with pytest.raises(ConfigurationError, match="looks like it names a secret") as info:
        auditor.emit(EventName.AUTHN_LOGIN_FAIL, outcome=Outcome.FAILURE, details={key: "x"})
    assert info.value.setting == f"details.{key}"


@pytest.mark.parametrize(
    "key", [*sorted(SAFE_DETAIL_KEYS), "reason", "attempt", "route", "method", "limit", "roles"]
)
def test_ordinary_detail_keys_pass(auditor: Auditor, key: str) -> None:
    event = auditor.emit(EventName.AUTHZ_FAIL, outcome=Outcome.BLOCKED, details={key: "x"})
    assert event.details == {key: "x"}


@pytest.mark.parametrize("key", ["Reason", "x-forwarded-for", "", "1st", "a b", "é", "x" * 65, 3])
def test_detail_keys_must_be_snake_case(auditor: Auditor, key: object) -> None:
    with pytest.raises(ConfigurationError, match="snake_case"):
        auditor.emit(EventName.AUTHZ_FAIL, outcome=Outcome.BLOCKED, details={key: "x"})  # type: ignore[dict-item]


@pytest.mark.parametrize("value", [b"bytes", ["a"], {"a": 1}, object(), ("a",)])
def test_detail_values_must_be_scalars(auditor: Auditor, value: object) -> None:
    with pytest.raises(ConfigurationError, match="must be a str, int, float, bool or None") as info:
        auditor.emit(EventName.AUTHZ_FAIL, outcome=Outcome.BLOCKED, details={"reason": value})  # type: ignore[dict-item]
    assert info.value.setting == "details.reason"


def test_too_many_details_are_refused(auditor: Auditor) -> None:
    details = {f"k{i}": i for i in range(MAX_DETAILS + 1)}
    with pytest.raises(ConfigurationError, match=f"at most {MAX_DETAILS}"):
        auditor.emit(EventName.AUTHZ_FAIL, outcome=Outcome.BLOCKED, details=details)
    del details[f"k{MAX_DETAILS}"]
    assert len(auditor.emit("bulk", outcome=Outcome.SUCCESS, details=details).details) == 32


def test_odd_numbers_stay_valid_json(auditor: Auditor) -> None:
    event = auditor.emit(
        EventName.INPUT_VALIDATION_FAIL,
        outcome=Outcome.FAILURE,
        details={"nan": float("nan"), "inf": float("-inf"), "big": 10**5000, "ok": 2**62},
    )
    decoded = json.loads(event.to_json())["details"]
    assert decoded == {"big": "<int of 16610 bits>", "inf": "-inf", "nan": "nan", "ok": 2**62}


def test_long_text_is_truncated(auditor: Auditor) -> None:
    event = auditor.emit(
        EventName.INPUT_VALIDATION_FAIL,
        outcome=Outcome.FAILURE,
        request_id="r" * 1000,
        details={"reason": "a" * 100_000},
    )
    reason = event.details["reason"]
    assert isinstance(reason, str)
    assert reason == "a" * MAX_TEXT_CHARS + "...[truncated]"
    assert event.request_id == "r" * 128 + "...[truncated]"


def test_escaping_is_unambiguous() -> None:
    assert clean_text("a\nb") == "a\\x0ab"
    assert clean_text("a\\x0ab") == "a\\\\x0ab"  # a literal backslash cannot fake an escape
    assert clean_text("\u2028\u202e\x85\ud800\U000e0001") == "\\u2028\\u202e\\x85\\ud800\\U000e0001"
    assert clean_text("héllo wörld ✓") == "héllo wörld ✓"
    assert clean_text("\\" * 1000) == "\\\\" * (MAX_TEXT_CHARS // 2) + "...[truncated]"


def test_cr_lf_cannot_forge_a_second_log_line(
    hasher: IdentifierHasher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bastion.audit")
    auditor = Auditor(hasher, FrozenClock(T0), LoggingAuditSink())
    forged = '{"time":"2023-11-14T22:13:20.000Z","event":"authn_login_success","user":"admin"}'
    auditor.emit(
        EventName.AUTHN_LOGIN_FAIL,
        outcome=Outcome.FAILURE,
        request_id="r1\r\n" + forged,
        details={"reason": "bad\r\n" + forged, "agent": "x\u2028y\x85z"},
    )
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert all(" " <= char <= "~" for char in message), "only printable ASCII in the line"
    assert caplog.text.count("\n") == 1
    decoded = json.loads(message)
    assert decoded["event"] == "authn_login_fail"
    assert decoded["details"]["reason"].startswith("bad\\x0d\\x0a{")
    assert decoded["request_id"].startswith("r1\\x0d\\x0a")


@settings(max_examples=300)
@given(st.text(st.characters(exclude_categories=()), max_size=400))
def test_any_text_gives_one_printable_ascii_line(value: str) -> None:
    event = _event(request_id=value, details={"reason": value})
    line = event.to_json()
    assert all(" " <= char <= "~" for char in line)
    decoded = json.loads(line)["details"]["reason"]
    assert len(decoded) <= MAX_TEXT_CHARS + len("...[truncated]")
    assert decoded.isprintable()


# --- sinks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "level"),
    [
        (EventName.SESSION_CREATED, logging.INFO),
        (EventName.AUTHN_LOGIN_FAIL, logging.WARNING),
        (EventName.AUTHZ_FAIL, logging.CRITICAL),
    ],
)
def test_logging_sink_writes_one_record_at_the_event_level(
    hasher: IdentifierHasher, caplog: pytest.LogCaptureFixture, name: EventName, level: int
) -> None:
    caplog.set_level(logging.DEBUG, logger="bastion.audit")
    auditor = Auditor(hasher, FrozenClock(T0), LoggingAuditSink())
    event = auditor.emit(name, outcome=Outcome.FAILURE, user="alice")
    assert len(caplog.records) == 1
    record = caplog.records[0]
    assert record.name == "bastion.audit"
    assert record.levelno == level
    assert record.getMessage() == event.to_json()
    assert record.audit_event == event.to_dict()  # type: ignore[attr-defined]
    assert "alice" not in caplog.text


def test_logging_sink_uses_the_named_logger(
    hasher: IdentifierHasher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.security")
    sink = LoggingAuditSink("app.security")
    assert repr(sink) == "LoggingAuditSink(logger_name='app.security')"
    Auditor(hasher, FrozenClock(T0), sink).emit(EventName.SYS_STARTUP, outcome=Outcome.SUCCESS)
    assert [r.name for r in caplog.records] == ["app.security"]


def test_logging_sink_respects_the_logger_level(
    hasher: IdentifierHasher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bastion.audit")
    auditor = Auditor(hasher, FrozenClock(T0), LoggingAuditSink())
    auditor.emit(EventName.SESSION_CREATED, outcome=Outcome.SUCCESS)
    auditor.emit(EventName.AUTHZ_FAIL, outcome=Outcome.BLOCKED)
    assert [r.levelno for r in caplog.records] == [logging.CRITICAL]


def test_sinks_satisfy_the_protocol() -> None:
    assert isinstance(LoggingAuditSink(), AuditSink)
    assert isinstance(RecordingAuditSink(), AuditSink)
    assert not isinstance(object(), AuditSink)


def test_event_builds_without_sending(auditor: Auditor, sink: RecordingAuditSink) -> None:
    event = auditor.event(EventName.SESSION_EXPIRED, outcome=Outcome.SUCCESS, session="s1")
    assert sink.events == []
    assert event.session is not None
    assert event.time == datetime.fromtimestamp(T0, tz=UTC)


def test_the_recording_sink_keeps_events_in_order() -> None:
    sink = RecordingAuditSink()
    assert isinstance(sink, AuditSink)
    auditor = Auditor(IdentifierHasher(SecretKey(b"r" * 32)), FrozenClock(1_700_000_000.0), sink)
    auditor.emit(EventName.AUTHN_LOGIN_FAIL, outcome=Outcome.FAILURE, user="alice")
    auditor.emit(EventName.MALICIOUS_CSRF, outcome=Outcome.FAILURE)
    assert sink.names() == ["authn_login_fail", "malicious_csrf"]
    user = sink.events[0].user
    assert user is not None
    assert "alice" not in str(user)  # identifiers arrive hashed, as in a production sink
    assert repr(sink) == "RecordingAuditSink(2 events)"
    sink.clear()
    assert sink.names() == []


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("/reset-password/bot_" + "A" * 22 + "." + "b" * 43, "/reset-password/bot_[redacted]"),
        ("key bst_" + "x" * 30 + " used", "key bst_[redacted] used"),
        ("brt_" + "f" * 22 + "." + "s" * 43, "brt_[redacted]"),
        ("Bearer eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhIn0.c2ln", "Bearer [jwt]"),
        ("/about_us", "/about_us"),
        ("bot_short", "bot_short"),
    ],
)
def test_credential_shaped_detail_text_is_redacted(text: str, shown: str) -> None:
    from bastion.core.audit import redact_credentials  # noqa: PLC0415

    assert redact_credentials(text) == shown
    event = AuditEvent(
        name="malicious_csrf",
        time=datetime.now(UTC),
        outcome=Outcome.BLOCKED,
        level=Level.WARN,
        details={"path": text},
    )
    assert event.details["path"] == shown
