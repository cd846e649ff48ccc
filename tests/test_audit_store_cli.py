"""``bastion audit query|verify|purge`` on a real SQLite trail, with the app's key from the
environment as the app reads it."""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING

import pytest

from audit_store_support import open_trail, write_logins
from bastion.cli import main
from bastion.cli._common import CommandError
from bastion.cli.audit import parse_moment
from bastion.config import Bastion
from bastion.core.clock import FrozenClock
from bastion.core.keys import SecretKey

if TYPE_CHECKING:
    from pathlib import Path

START = 1_780_000_000.0


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    text = SecretKey.generate().to_text()
    monkeypatch.setenv("BASTION_SECRET_KEY", text)
    return text


@pytest.fixture
def url(tmp_path: Path, secret: str) -> str:
    """A trail of 10 events (segments of 4) under the environment's key."""
    ring = Bastion.from_env({"BASTION_SECRET_KEY": secret}).keyring
    assert ring is not None
    clock = FrozenClock(START)
    store = f"sqlite:///{tmp_path / 'audit.db'}"
    trail = open_trail(store, ring, clock, segment_events=4)
    write_logins(trail.auditor(aggregation=None), clock, 10)
    trail.flush()
    trail.backend.close()  # as a stopped app leaves it: segment 2 still open
    return store


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_passes_then_names_the_edited_row(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "audit", "verify", "--store", url)
    assert code == 0
    assert out.startswith("ok: 10 events in 3 segments (0 purged); head 10:")
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        conn.execute(
            "UPDATE bastion_audit_events SET body = replace(body, 'wrong_password', 'ok') "
            "WHERE seq = 5"
        )
    code, out, _ = run(capsys, "audit", "verify", "--store", url)
    assert code == 1
    assert out.startswith("BROKEN at segment 1, event 5: event_mac (MAC does not match)")


def test_verify_with_the_wrong_key_fails(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_SECRET_KEY", SecretKey.generate().to_text())
    code, out, _ = run(capsys, "audit", "verify", "--store", url)
    assert code == 1
    assert "unknown_key" in out


def test_query_filters_by_user_event_outcome_and_time(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "audit", "query", "--store", url, "--user", "alice", "--event", "authn_login_fail"
    )
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["seq"] for line in lines] == [10, 7, 4, 1]
    assert {line["outcome"] for line in lines} == {"failure"}
    since = "2026-05-28T20:26:43Z"  # START + 3
    assert parse_moment(since, now=0) == START + 3
    until = "2026-05-28T20:26:46"  # START + 6, no zone: UTC
    code, out, _ = run(
        capsys, "audit", "query", "--store", url, "--since", since, "--until", until,
        "--outcome", "success",
    )  # fmt: skip
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [6]


def test_query_formats(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "audit", "query", "--store", url, "--limit", "1", "--format", "ecs")
    document = json.loads(out)
    assert document["event"]["action"] == "authn_login_fail"
    assert document["event"]["category"] == ["authentication"]
    assert document["event"]["sequence"] == 10
    code, out, _ = run(
        capsys, "audit", "query", "--store", url, "--limit", "1", "--format", "table"
    )
    assert out.split("  ")[:4] == ["10", "2026-05-28T20:26:49.000Z", "authn_login_fail", "failure"]
    code, out, _ = run(capsys, "audit", "query", "--store", url, "--event", "nothing_here")
    assert (code, out) == (0, "(no events)\n")


def test_hostile_rows_are_printed_escaped(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    # An intruder writes terminal escapes and line breaks straight into the database.
    hostile = "\x1b[2J\x1b]0;owned\x07\r\nseq 99 authn_login_success\u2028\x7f"
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        conn.execute(
            "UPDATE bastion_audit_events SET request_id = ?, name = ?, "
            "body = replace(body, 'wrong_password', ?) WHERE seq = 10",
            (hostile, hostile, hostile),
        )
    for output in ("lines", "table", "ecs"):
        code, out, _ = run(
            capsys, "audit", "query", "--store", url, "--limit", "1", "--format", output
        )
        assert code == 0
        assert out.count("\n") == 1  # one event, one line
        assert out[:-1].isascii()
        assert out[:-1].isprintable()
    code, out, _ = run(capsys, "audit", "verify", "--store", url)
    assert code == 1
    assert "event 10: event_mac" in out


def test_purge_then_verify(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "audit", "purge", "--store", url, "--before", "2026-05-28T20:26:46Z")
    assert (code, out) == (0, "purged 1 sealed segments older than 2026-05-28T20:26:46Z\n")
    code, out, _ = run(capsys, "audit", "verify", "--store", url)
    assert code == 0
    assert "(1 purged)" in out


def test_missing_key_missing_file_and_bad_times(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run(capsys, "audit", "verify", "--store", f"sqlite:///{tmp_path / 'no.db'}")
    assert code == 1
    assert err.startswith("bastion audit verify: no SQLite database at ")
    assert not (tmp_path / "no.db").exists()
    code, _, err = run(capsys, "audit", "query", "--store", url, "--since", "yesterday")
    assert code == 2
    assert "neither ISO 8601" in err
    monkeypatch.delenv("BASTION_SECRET_KEY")
    code, _, err = run(capsys, "audit", "verify", "--store", url)
    assert code == 2
    assert "set BASTION_SECRET_KEY" in err


def test_relative_ages() -> None:
    assert parse_moment("90s", now=1000) == 910
    assert parse_moment("2h", now=10_000) == 2800
    assert parse_moment("7d", now=1_000_000) == 1_000_000 - 7 * 86_400
    with pytest.raises(CommandError):
        parse_moment("-5m", now=0)


def test_expect_head_catches_a_cut_tail(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "audit", "verify", "--store", url)
    head = out.split("head ", 1)[1].strip()
    assert run(capsys, "audit", "verify", "--store", url, "--expect-head", head)[0] == 0
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        # The tail cut together with the head, so the chain alone still verifies.
        row = conn.execute("SELECT body FROM bastion_audit_head").fetchone()
        data = json.loads(row[0])
        last_mac = conn.execute("SELECT mac FROM bastion_audit_events WHERE seq = 9").fetchone()
        conn.execute("DELETE FROM bastion_audit_events WHERE seq = 10")
        data.update(seq=9, count=1, last_ms=data["last_ms"] - 1000, last=last_mac[0])
        conn.execute("UPDATE bastion_audit_head SET body = ?", (json.dumps(data),))
    code, out, _ = run(capsys, "audit", "verify", "--store", url)
    assert (code, out.split(";")[0]) == (0, "ok: 9 events in 3 segments (0 purged)")
    code, out, _ = run(capsys, "audit", "verify", "--store", url, "--expect-head", head)
    assert code == 1
    assert out.startswith("BROKEN at segment 3, event 10: truncated (the trail ends at event 9)")
    code, _, err = run(capsys, "audit", "verify", "--store", url, "--expect-head", "10")
    assert code == 2
    assert "SEQ:MAC" in err
