"""An app that exits without ``runtime.close()`` loses none of the events it queued: the
writer is a daemon thread, and the sink is closed at interpreter exit instead. A real
interpreter in a subprocess, a real SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from bastion.audit import AuditPolicy, AuditTrail
from bastion.core.keys import KeyRing, SecretKey

_SCRIPT = textwrap.dedent(
    """
    import sys
    from bastion.audit import AuditPolicy, AuditTrail
    from bastion.core.audit import EventName, Outcome
    from bastion.core.keys import KeyRing, SecretKey

    ring = KeyRing(SecretKey(bytes.fromhex(sys.argv[2])))
    # A minute between flushes and batches larger than the run: without the exit hook every
    # event would still be queued when the interpreter exits.
    policy = AuditPolicy(store=sys.argv[1], flush_interval=60, batch_size=512, log=False)
    trail = AuditTrail(policy, keyring=ring)
    auditor = trail.auditor(aggregation=None)
    for number in range(int(sys.argv[3])):
        auditor.emit(EventName.AUTHN_LOGIN_FAIL, outcome=Outcome.FAILURE, user=f"u{number}")
    assert trail.sink._queue, "the events must still be queued here"
    print("queued", len(trail.sink._queue), flush=True)
    # no trail.close(): the app just ends
    """
)


def test_events_queued_at_exit_are_written_and_sealed(tmp_path: Path) -> None:
    material = os.urandom(32)
    key = SecretKey(material)
    store = f"sqlite:///{tmp_path / 'audit.db'}"
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, store, material.hex(), "300"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "queued 300"
    trail = AuditTrail(AuditPolicy(store=store, log=False), keyring=KeyRing(key), background=False)
    try:
        assert len(trail.query(limit=1000)) == 300
        report = trail.verify()
        assert report.ok, report
    finally:
        trail.close()
