"""The audit trail: every decision and every admin change, in the store, queryable later.

Writing a row per request on the request path would put a transaction on every login. Instead
:class:`AuditRecorder` is a :class:`~radmfa.auth.decisionlog.DecisionObserver` that only
builds the row and queues it (microseconds on the reactor); a timer writes the queue every
``flush_interval`` (or as soon as ``batch_size`` rows wait) in one transaction, on a thread
of its own, so logins never queue behind a batch. A store that is down does not slow
logins: rows wait in a bounded queue and the oldest are dropped, counted and logged, once it
is full. :meth:`AuditRecorder.stop` writes what is left at shutdown.

The CLI records admin changes directly (:func:`admin_event`, ``Store.append_audit``).
Pruning by age runs in small batches off the reactor (:func:`prune`), never blocking a login.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from radmfa.auth.decisionlog import sanitize
from radmfa.auth.identity import store_key
from radmfa.auth.model import AccessRequest, Decision
from radmfa.outage import Outage
from radmfa.store.base import AUDIT_ADMIN, AUDIT_AUTH, AuditEvent
from radmfa.store.facade import AsyncStore

__all__ = ["AuditRecorder", "admin_event", "auth_event", "operator", "prune"]

log = Logger(namespace="radmfa.audit")

#: Rows kept while the store cannot take them; beyond this the oldest are dropped (and counted).
MAX_QUEUE = 50_000
#: Rows one pruning transaction deletes.
PRUNE_BATCH = 500


def auth_event(request: AccessRequest, decision: Decision, at: float, elapsed: float) -> AuditEvent:
    """The row of one decision. The user is the store key (what ``--user`` matches); a name
    that never became one (bad UTF-8, control characters) is kept sanitised."""
    user = store_key(decision.user) if decision.user else sanitize(request.user_name)
    return AuditEvent(
        at=at,
        kind=AUDIT_AUTH,
        user=user,
        reason=decision.reason.value,
        outcome=decision.outcome.value,
        client=request.client_name,
        src=request.client_address,
        nas_id=sanitize(request.nas_identifier) if request.nas_identifier else None,
        station=sanitize(request.calling_station_id) if request.calling_station_id else None,
        method=decision.method,
        factor=decision.factor,
        trusted_device=decision.trusted_device,
        rule=decision.rule,
        latency_ms=round(elapsed * 1000.0, 1),
    )


def operator() -> str:
    """Who runs an admin command: the OS account, and the one behind sudo when there is one."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    sudo = os.environ.get("SUDO_USER")
    return f"{sudo} (as {name})" if sudo and sudo != name else name


def admin_event(
    at: float,
    target: str,
    action: str,
    *,
    actor: str | None = None,
    before: str | None = None,
    after: str | None = None,
    reason: str | None = None,
) -> AuditEvent:
    """The row of one admin change; ``actor`` defaults to :func:`operator`."""
    return AuditEvent(
        at=at,
        kind=AUDIT_ADMIN,
        user=target,
        actor=actor if actor is not None else operator(),
        action=action,
        before=before,
        after=after,
        reason=reason,
    )


class AuditRecorder:
    """Queues audit rows on the reactor and writes them in batches to ``store`` (the
    daemon gives the trail a thread, and so a SQLite connection, of its own)."""

    def __init__(
        self,
        store: AsyncStore,
        clock: IReactorTime,
        *,
        flush_interval: float = 0.5,
        batch_size: int = 250,
        max_queue: int = MAX_QUEUE,
    ) -> None:
        self.store = store
        self.clock = clock
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.max_queue = max_queue
        self._queue: list[AuditEvent] = []
        self._writing: Deferred[Any] | None = None
        self._soon: Any = None
        self._dropped = 0
        self._outage = Outage("the store (audit trail)", clock, log)
        self._loop = LoopingCall(self.flush)
        self._loop.clock = clock
        #: Rows written so far (tests and status output).
        self.written = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        if not self._loop.running:
            self._loop.start(self.flush_interval, now=False)

    # -- DecisionObserver ------------------------------------------------------------------

    def record(self, request: AccessRequest, decision: Decision, elapsed: float) -> None:
        self.add(auth_event(request, decision, self.clock.seconds(), elapsed))

    def add(self, event: AuditEvent) -> None:
        """Queue one row (a decision, or a change the daemon itself made)."""
        self._queue.append(event)
        if len(self._queue) > self.max_queue:
            excess = len(self._queue) - self.max_queue
            del self._queue[:excess]
            self._dropped += excess
        if len(self._queue) >= self.batch_size and self._writing is None and self._soon is None:
            self._soon = self.clock.callLater(0, self._flush_soon)

    def _flush_soon(self) -> None:
        self._soon = None
        self.flush()

    # -- writing ---------------------------------------------------------------------------

    def flush(self) -> Deferred[None]:
        """Write what is queued (one transaction); fires when written or given up on."""
        if self._writing is not None:
            return self._chain(self._writing)
        if not self._queue:
            return succeed(None)
        rows, self._queue = self._queue[: self.batch_size], self._queue[self.batch_size :]
        writing: Deferred[Any] = self.store.append_audit(rows)
        self._writing = writing
        writing.addCallbacks(
            self._written, self._not_written, callbackArgs=(rows,), errbackArgs=(rows,)
        )
        return self._chain(writing)

    @staticmethod
    def _chain(d: Deferred[Any]) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()

        def settle(result: object) -> object:
            waiter.callback(None)
            return result

        d.addBoth(settle)
        return waiter

    def _written(self, _result: object, rows: Sequence[AuditEvent]) -> None:
        self._writing = None
        self.written += len(rows)
        self._outage.ok()
        if self._dropped:
            log.warn(
                "{n} audit row(s) were dropped while the store was unavailable", n=self._dropped
            )
            self._dropped = 0
        if len(self._queue) >= self.batch_size and self._soon is None:
            self._soon = self.clock.callLater(0, self._flush_soon)

    def _not_written(self, failure: Failure, rows: Sequence[AuditEvent]) -> None:
        self._writing = None
        self._queue[:0] = rows  # keep them for the next flush (bounded by max_queue)
        if len(self._queue) > self.max_queue:
            excess = len(self._queue) - self.max_queue
            del self._queue[:excess]
            self._dropped += excess
        self._outage.failed(
            f"{len(rows)} audit row(s) kept for the next try ({failure.getErrorMessage()})"
        )

    def stop(self) -> Deferred[None]:
        """Stop the timer and write what is left (a failure is logged, not raised)."""
        if self._loop.running:
            self._loop.stop()
        if self._soon is not None and self._soon.active():
            self._soon.cancel()
        self._soon = None
        return Deferred.fromCoroutine(self._drain())

    async def _drain(self) -> None:
        if self._writing is not None:
            await self._chain(self._writing)
        while self._queue:
            before = self.written
            await self.flush()
            if self.written == before:  # the store refused: the rows stay queued, give up
                return


async def prune(store: AsyncStore, before: float) -> int:
    """Delete rows older than ``before`` in batches of :data:`PRUNE_BATCH`, one store call
    each, so no transaction holds the write lock (which logins' writes wait for) for long."""
    total = 0
    while True:
        deleted = await store.prune_audit(before, PRUNE_BATCH)
        total += deleted
        if deleted < PRUNE_BATCH:
            return total
