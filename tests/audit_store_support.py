"""Helpers for the stored audit trail's tests (tests/test_audit_store*.py)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from bastion.audit import AuditPolicy, AuditTrail
from bastion.core.audit import EventName, Outcome
from bastion.testing.postgres_server import INSTALL_HINT, find_initdb

if TYPE_CHECKING:
    from typing import Any

    from bastion.core.audit import Auditor
    from bastion.core.clock import FrozenClock
    from bastion.core.keys import KeyRing

__all__ = ["open_trail", "require_postgres", "write_logins"]


def require_postgres() -> None:
    """Skip (or, under CI=true, fail) when PostgreSQL is not installed."""
    if find_initdb() is not None:
        return
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{INSTALL_HINT} (CI=true: a missing service fails the run)")
    pytest.skip(INSTALL_HINT)


def open_trail(store: str, ring: KeyRing, clock: FrozenClock, **settings: Any) -> AuditTrail:
    """A trail without a writer thread (events wait for flush) and without log lines."""
    settings.setdefault("log", False)
    return AuditTrail(
        AuditPolicy(store=store, **settings), keyring=ring, clock=clock, background=False
    )


def write_logins(auditor: Auditor, clock: FrozenClock, count: int) -> None:
    """``count`` events, one second apart: failures of alice and bob, then a success."""
    for number in range(count):
        if number % 3 == 2:  # every third event
            auditor.emit(EventName.AUTHN_LOGIN_SUCCESS, outcome=Outcome.SUCCESS, user="alice")
        else:
            user = "alice" if number % 3 == 0 else "bob"
            auditor.emit(
                EventName.AUTHN_LOGIN_FAIL,
                outcome=Outcome.FAILURE,
                user=user,
                client_ip="203.0.113.7",
                details={"reason": "wrong_password", "attempt": number},
            )
        clock.advance(1)
