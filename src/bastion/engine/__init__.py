"""Async orchestration, written once: store flows, their drivers, and the session engine."""

from __future__ import annotations

from bastion.engine.flows import drive_async, drive_sync
from bastion.engine.sessions import SaveResult, Session, SessionEngine, SessionInfo

__all__ = ["SaveResult", "Session", "SessionEngine", "SessionInfo", "drive_async", "drive_sync"]
