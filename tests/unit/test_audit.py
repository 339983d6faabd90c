"""The audit recorder: decisions queued on the reactor, written in batches, never lost to a
short store outage, never slowing a login; pruning in small batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from radmfa.audit import PRUNE_BATCH, AuditRecorder, admin_event, auth_event, operator, prune
from radmfa.auth.model import AccessRequest, AuthMethod, Decision, Outcome, Reason
from radmfa.store.base import AuditEvent, AuditQuery, StoreError
from radmfa.store.facade import AsyncStore
from radmfa.store.memory import MemoryStore
from radmfa.testing import InlineRunner

T0 = 1_800_000_000.0


class CountingStore(MemoryStore):
    """A memory store that counts audit writes and can refuse them."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[int] = []
        self.broken = False

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        if self.broken:
            raise StoreError("database is locked")
        self.writes.append(len(events))
        super().append_audit(events)


def request(user: bytes = b"Alice", **kw: Any) -> AccessRequest:
    fields: dict[str, Any] = {
        "password": b"x",
        "method": AuthMethod.PAP,
        "state": None,
        "client_name": "vpn",
        "client_address": "192.0.2.1",
        "nas_identifier": "gw-1",
        "calling_station_id": "10.1.2.3",
    }
    fields.update(kw)
    return AccessRequest(user_name=user, **fields)


ACCEPT = Decision(
    Outcome.ACCEPT, Reason.OK, user="Alice", method="append", factor="totp", rule="staff"
)


def make(**kw: Any) -> tuple[AuditRecorder, CountingStore, Clock]:
    clock = Clock()
    clock.advance(T0)
    store = CountingStore()
    recorder = AuditRecorder(AsyncStore(store, InlineRunner()), clock, **kw)
    recorder.start()
    return recorder, store, clock


def test_decision_row_carries_every_field():
    event = auth_event(request(), ACCEPT, T0, 0.0123)
    assert event == AuditEvent(
        at=T0,
        kind="auth",
        user="alice",  # the store key: what --user matches
        reason="ok",
        outcome="accept",
        client="vpn",
        src="192.0.2.1",
        nas_id="gw-1",
        station="10.1.2.3",
        method="append",
        factor="totp",
        trusted_device=False,
        rule="staff",
        latency_ms=12.3,
    )


def test_a_name_that_never_became_a_user_is_kept_sanitised():
    bad = Decision(Outcome.REJECT, Reason.BAD_USER_NAME)
    event = auth_event(request(b"evil\r\nline"), bad, T0, 0)
    assert event.user == "evil\\r\\nline"


def test_rows_are_written_together_every_flush_interval():
    recorder, store, clock = make(flush_interval=0.5, batch_size=100)
    for _ in range(7):
        recorder.record(request(), ACCEPT, 0.001)
    assert store.writes == []  # nothing on the request path
    clock.advance(0.5)
    assert store.writes == [7]
    assert len(store.query_audit(AuditQuery())) == 7
    clock.advance(0.5)
    assert store.writes == [7]  # nothing queued, nothing written


def test_a_full_batch_is_written_at_once_in_batches():
    recorder, store, clock = make(flush_interval=10, batch_size=4)
    for _ in range(10):
        recorder.record(request(), ACCEPT, 0.001)
    clock.advance(0)
    assert store.writes == [4, 4]  # the third batch is not full yet
    clock.advance(10)
    assert store.writes == [4, 4, 2]


@pytest.mark.logs_errors
def test_rows_survive_a_store_outage_and_are_written_later():
    recorder, store, clock = make(flush_interval=0.5, batch_size=100)
    store.broken = True
    recorder.record(request(), ACCEPT, 0.001)
    clock.advance(0.5)
    assert recorder.queued == 1
    store.broken = False
    recorder.record(request(), ACCEPT, 0.001)
    clock.advance(0.5)
    assert store.writes == [2] and recorder.queued == 0


@pytest.mark.logs_errors
def test_a_long_outage_drops_the_oldest_rows_and_says_so():
    recorder, store, clock = make(flush_interval=0.5, batch_size=100, max_queue=5)
    store.broken = True
    for i in range(8):
        recorder.record(request(), ACCEPT, i / 1000)
    clock.advance(0.5)
    assert recorder.queued == 5
    store.broken = False
    clock.advance(0.5)
    kept = [e.latency_ms for e in store.query_audit(AuditQuery())]
    assert kept == [3.0, 4.0, 5.0, 6.0, 7.0]


def test_stop_writes_what_is_left():
    recorder, store, _clock = make(flush_interval=60, batch_size=3)
    for _ in range(8):
        recorder.record(request(), ACCEPT, 0.001)
    done: list[object] = []
    recorder.stop().addCallback(done.append)
    assert done and sum(store.writes) == 8


def test_daemon_changes_are_queued_like_decisions():
    recorder, store, clock = make()
    recorder.add(admin_event(T0, "alice", "email-address", actor="directory", after="n***@x"))
    clock.advance(0.5)
    (row,) = store.query_audit(AuditQuery(kind="admin"))
    assert (row.user, row.actor, row.action) == ("alice", "directory", "email-address")


def test_operator_names_the_account_behind_sudo(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("getpass.getuser", lambda: "root")
    monkeypatch.setenv("SUDO_USER", "helpdesk")
    assert operator() == "helpdesk (as root)"
    monkeypatch.delenv("SUDO_USER")
    assert operator() == "root"
    assert admin_event(T0, "bob", "disable").actor == "root"


def test_prune_deletes_in_small_batches_each_its_own_store_call():
    store = MemoryStore()
    store.append_audit(
        [auth_event(request(), ACCEPT, T0 + i, 0) for i in range(2 * PRUNE_BATCH + 3)]
    )
    store.append_audit([auth_event(request(), ACCEPT, T0 + 10**6, 0)])
    runner = InlineRunner()
    results: list[int] = []
    Deferred.fromCoroutine(prune(AsyncStore(store, runner), T0 + 10**5)).addCallback(results.append)
    assert results == [2 * PRUNE_BATCH + 3]
    assert runner.calls == 3
    assert len(store.query_audit(AuditQuery())) == 1
