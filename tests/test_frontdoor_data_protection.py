"""``Bastion(crypto=..., audit=...)``: checked at start-up, built once into ``runtime.crypto`` and
``runtime.audit``; every layer's events land in the stored trail through ``runtime.auditor``."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import pytest
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.responses import PlainTextResponse
from starlette.routing import Route

with warnings.catch_warnings():
    # Starlette >= 1.x announces a move of its test client at import time.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from bastion import Bastion
from bastion.asgi import protect
from bastion.audit import AuditPolicy, AuditTrail
from bastion.core.crypto.keys import DataKey, DataKeyRing
from bastion.core.keys import KeyRing, SecretKey
from bastion.crypto import CryptoPolicy, EncryptionService
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from pathlib import Path

    from starlette.requests import Request


def _crypto() -> CryptoPolicy:
    return CryptoPolicy(keys=DataKeyRing(DataKey(1, SecretKey.generate())))


def test_runtime_crypto_is_built_once_and_encrypts_bound_to_the_row() -> None:
    runtime = Bastion(crypto=_crypto(), csrf=None).build()
    service = runtime.crypto
    assert isinstance(service, EncryptionService)
    assert runtime.crypto is service
    stored = service.encrypt_field("+44 20 7946 0000", table="users", row=7, column="phone")
    assert stored is not None
    assert "7946" not in stored
    assert service.decrypt_field(stored, table="users", row=7, column="phone") == (
        "+44 20 7946 0000"
    )


def test_the_slices_are_checked_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="crypto must be a CryptoPolicy") as raised:
        Bastion(crypto="secret", csrf=None)  # type: ignore[arg-type]
    assert raised.value.setting == "crypto"
    with pytest.raises(ConfigurationError, match="audit must be an AuditPolicy"):
        Bastion(audit="sqlite:///x.db", csrf=None)  # type: ignore[arg-type]
    runtime = Bastion(csrf=None).build()
    with pytest.raises(ConfigurationError, match=r"runtime\.crypto needs") as missing:
        _ = runtime.crypto
    assert missing.value.setting == "crypto"
    with pytest.raises(ConfigurationError, match=r"runtime\.audit needs"):
        _ = runtime.audit
    with pytest.raises(ConfigurationError, match="give one") as both:
        Bastion(
            audit=AuditPolicy(store=f"sqlite:///{tmp_path / 'a.db'}"),
            auditor=runtime.auditor,
            csrf=None,
        )
    assert both.value.setting == "audit"


def test_a_refusal_is_stored_in_the_trail_and_queryable(tmp_path: Path) -> None:
    """A cross-site POST refused by the CSRF layer: its ``malicious_csrf`` event is in the
    stored trail after shutdown, and the trail verifies."""
    ring = KeyRing.generate()
    audit_url = f"sqlite:///{tmp_path / 'audit.db'}"
    config = Bastion(
        store=f"sqlite:///{tmp_path / 'app.db'}",
        keyring=ring,
        audit=AuditPolicy(store=audit_url, log=False),
    )

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = protect(Starlette(routes=[Route("/", home, methods=["GET", "POST"])]), config)
    with TestClient(app, base_url="https://app.example") as client:
        refused = client.post(
            "/", headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
        )
        assert refused.status_code == 403
    trail = AuditTrail(AuditPolicy(store=audit_url, log=False), keyring=ring)
    try:
        found = trail.query(event="malicious_csrf")
        assert len(found) == 1
        assert found[0].outcome == "blocked"
        assert trail.verify().ok
    finally:
        trail.close()


def test_login_monitor_is_wired_to_the_runtimes_auditor() -> None:
    from bastion.core.audit import EventName, Outcome  # noqa: PLC0415
    from bastion.core.login_monitor import LoginMonitorPolicy, Suspicion  # noqa: PLC0415

    found: list[Suspicion] = []
    runtime = Bastion(
        csrf=None, login_monitor=LoginMonitorPolicy(account_failures=3), on_suspicion=found.append
    ).build()
    assert runtime.login_monitor is not None
    for _ in range(3):
        runtime.auditor.emit(
            EventName.AUTHN_LOGIN_FAIL, outcome=Outcome.FAILURE, user="alice", client_ip="192.0.2.7"
        )
    assert [s.pattern for s in found] == ["account_burst"]
    with pytest.raises(ConfigurationError, match="nothing would call it") as raised:
        Bastion(csrf=None, on_suspicion=found.append)
    assert raised.value.setting == "on_suspicion"
    with pytest.raises(ConfigurationError, match="LoginMonitorPolicy"):
        Bastion(csrf=None, login_monitor={"window": 60})  # type: ignore[arg-type]
