"""The session engine: load, save, rotate and revoke sessions as store flows.

:class:`Session` (:mod:`~bastion.engine.sessions.session`) is the mapping a handler sees
(``request.session``, ``flask.session``); it holds a core
:class:`~bastion.core.sessions.SessionState` and does no I/O of its own.
:class:`SessionEngine` (:mod:`~bastion.engine.sessions.engine`) loads and saves it; the save
flows are in :mod:`~bastion.engine.sessions.saving` (over the pure decisions of
:mod:`bastion.core.sessions.state`), and the per-user registry and revocation epochs in
:mod:`~bastion.engine.sessions.registry`.
"""

from __future__ import annotations

from bastion.engine.sessions.engine import SessionEngine
from bastion.engine.sessions.registry import SessionInfo, epoch_key, index_key
from bastion.engine.sessions.saving import SaveResult
from bastion.engine.sessions.session import Session

__all__ = [
    "SaveResult",
    "Session",
    "SessionEngine",
    "SessionInfo",
    "epoch_key",
    "index_key",
]
