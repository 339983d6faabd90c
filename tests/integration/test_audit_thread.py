"""The daemon writes the audit trail on a thread of its own: a batch never holds up a login's
store call (which used to queue behind it on the one store thread)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor, threads

from radmfa.audit import admin_event
from radmfa.config import load_config
from radmfa.service import Daemon
from radmfa.store.base import AUDIT_ADMIN, AuditQuery
from tests.support.ports import free_port


def _config(tmp_path: Path):
    (tmp_path / "users").write_text("")
    (tmp_path / "radius-secret").write_text("audit-thread-secret-0123\n")
    (tmp_path / "radmfa.yaml").write_text(
        f"""
listen:
  - 127.0.0.1:{free_port("udp")}
clients:
  - name: localhost
    address: 127.0.0.1/32
    secret_file: radius-secret
local_users:
  path: users
store:
  path: radmfa.sqlite3
  key_file: secret.key
"""
    )
    return load_config(tmp_path / "radmfa.yaml")


@pytest_twisted.ensureDeferred
async def test_a_slow_audit_batch_does_not_hold_up_store_calls(tmp_path: Path) -> None:
    daemon = Daemon(_config(tmp_path), reactor)
    daemon.start()
    try:
        store, recorder = daemon.store, daemon.recorder
        assert store is not None and recorder is not None
        writing, release = threading.Event(), threading.Event()
        threads_seen: list[str] = []
        append = store.append_audit

        def slow_append(events):  # a batch that holds its transaction for a while
            threads_seen.append(threading.current_thread().name)
            writing.set()
            release.wait(10)
            return append(events)

        store.append_audit = slow_append  # type: ignore[method-assign]
        recorder.add(admin_event(reactor.seconds(), "alice", "test", actor="test"))
        flushed = recorder.flush()
        assert await threads.deferToThread(writing.wait, 10)

        # While the batch is still being written, a login's store call is answered.
        settings = await daemon.store_calls.run(store.user_settings, "alice")
        assert settings is not None and not flushed.called

        release.set()
        await flushed
        assert threads_seen == ["radmfa-audit"]
        assert [e.user for e in store.query_audit(AuditQuery(kind=AUDIT_ADMIN))] == ["alice"]
    finally:
        release.set()
        await daemon.stop()
