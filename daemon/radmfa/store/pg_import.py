"""Filling an empty PostgreSQL store from a :class:`~radmfa.store.snapshot.Snapshot`
(``radmfa store copy``), inside one transaction the caller owns: all of it or nothing.

Every data table is locked against writers first (``EXCLUSIVE``: reads go on), then found
empty, then filled: two copies at once, or a node writing meanwhile, cannot slip rows in
between the check and the copy. Rows stream in with ``COPY``, so an audit trail of any
length costs neither memory nor a round trip per row. Audit rows keep their event ids (COPY
writes identity columns as given); the id sequence then continues after the highest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psycopg

from radmfa.store.model import AuditEvent, StoreError, TokenRecord
from radmfa.store.snapshot import Snapshot, SnapshotCounts, StoreNotEmpty, UserRow

__all__ = ["fill"]

Conn = psycopg.Connection[tuple[Any, ...]]

#: Every table of schema.postgres.DATA_TABLES (a unit test holds the two together).
_LOCK_DATA_TABLES = (
    "LOCK TABLE tokens, users, challenges, sends, devices, failures, audit, attempts "
    "IN EXCLUSIVE MODE"
)
_COUNT_DATA_TABLES = (
    "SELECT (SELECT COUNT(*) FROM tokens), (SELECT COUNT(*) FROM users), "
    "(SELECT COUNT(*) FROM devices), (SELECT COUNT(*) FROM failures), "
    "(SELECT COUNT(*) FROM sends), (SELECT COUNT(*) FROM audit), "
    "(SELECT COUNT(*) FROM challenges), (SELECT COUNT(*) FROM attempts)"
)
_COPY_USERS = (
    "COPY users (username, failures, locked_until, last_failure_at, last_success_at, "
    "total_failures, preferred, notice, status, status_until, status_reason, first_seen_at, "
    "grace_logins) FROM STDIN"
)
_COPY_TOKENS = (
    "COPY tokens (token_id, username, type, secret_blob, digits, algorithm, period, "
    "created_at, last_step, description, drift) FROM STDIN"
)
_COPY_DEVICES = (
    "COPY devices (username, device, client, nas_id, remembered_at, expires_at) FROM STDIN"
)
_COPY_FAILURES = "COPY failures (key, at) FROM STDIN"
_COPY_SENDS = "COPY sends (username, channel, sent_at) FROM STDIN"
_COPY_AUDIT_WITH_IDS = (
    "COPY audit (id, at, kind, username, reason, outcome, client, src, nas_id, station, "
    "method, factor, trusted_device, rule, latency_ms, actor, action, before, after) FROM STDIN"
)
_COPY_AUDIT = (
    "COPY audit (at, kind, username, reason, outcome, client, src, nas_id, station, "
    "method, factor, trusted_device, rule, latency_ms, actor, action, before, after) FROM STDIN"
)
_CONTINUE_AUDIT_IDS = (
    "SELECT setval(pg_get_serial_sequence('audit', 'id'), (SELECT MAX(id) FROM audit))"
)


def fill(
    conn: Conn,
    snapshot: Snapshot,
    token_row: Callable[[TokenRecord], Sequence[object]],
    notes: Sequence[AuditEvent] = (),
) -> SnapshotCounts:
    """Copy ``snapshot`` into the empty store on ``conn`` (in the caller's transaction),
    then append ``notes`` (the copy's own admin rows); the rows written per kind.

    ``token_row`` seals a token for this store (its key, its row's associated data). A store
    that holds anything is :class:`StoreNotEmpty`; a snapshot that yields other counts than
    it announced is a :class:`StoreError`: either way the caller's transaction rolls back.
    """
    conn.execute(_LOCK_DATA_TABLES)
    row = conn.execute(_COUNT_DATA_TABLES).fetchone()
    found = SnapshotCounts(*row) if row is not None else SnapshotCounts()
    if found.total:
        raise StoreNotEmpty(found)
    written = SnapshotCounts(
        users=_copy(conn, _COPY_USERS, (_user_values(u) for u in snapshot.users)),
        tokens=_copy(conn, _COPY_TOKENS, (token_row(t) for t in snapshot.tokens)),
        devices=_copy(
            conn,
            _COPY_DEVICES,
            (
                (d.user, d.device, d.client, d.nas_id, d.remembered_at, d.expires_at)
                for d in snapshot.devices
            ),
        ),
        failures=_copy(conn, _COPY_FAILURES, ((f.key, f.at) for f in snapshot.failures)),
        sends=_copy(conn, _COPY_SENDS, ((s.user, s.channel, s.sent_at) for s in snapshot.sends)),
        audit=_copy(
            conn, _COPY_AUDIT_WITH_IDS, ((e.event_id, *_audit_values(e)) for e in snapshot.audit)
        ),
    )
    if written != snapshot.counts.copied:
        raise StoreError(
            f"{snapshot.source} announced {snapshot.counts.copied.describe()} but gave "
            f"{written.describe()}"
        )
    if written.audit:
        conn.execute(_CONTINUE_AUDIT_IDS)
    if notes:
        _copy(conn, _COPY_AUDIT, (_audit_values(e) for e in notes))
    return written


def _copy(conn: Conn, statement: str, rows: Iterable[Sequence[object]]) -> int:
    """Stream ``rows`` into one ``COPY ... FROM STDIN``; how many there were."""
    n = 0
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for values in rows:
            copy.write_row(values)
            n += 1
    return n


def _user_values(row: UserRow) -> tuple[object, ...]:
    lock, settings = row.lock, row.settings
    return (
        lock.user, lock.failures, lock.locked_until, lock.last_failure_at,
        lock.last_success_at, lock.total_failures, settings.preferred, settings.notice,
        settings.status, settings.status_until, settings.status_reason,
        settings.first_seen_at, settings.grace_logins,
    )  # fmt: skip


def _audit_values(e: AuditEvent) -> tuple[object, ...]:
    return (
        e.at, e.kind, e.user, e.reason, e.outcome, e.client, e.src, e.nas_id, e.station,
        e.method, e.factor, bool(e.trusted_device), e.rule, e.latency_ms, e.actor, e.action,
        e.before, e.after,
    )  # fmt: skip
