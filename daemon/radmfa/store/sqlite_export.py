"""Reading a SQLite store file as a :class:`~radmfa.store.snapshot.Snapshot`, without writing
to it: the source of ``radmfa store copy``.

:class:`~radmfa.store.sqlite.SqliteStore` creates a missing file and migrates whatever it
opens; a copy's source must be neither created nor changed (a mistyped path, or some other
application's database, must stay as it is). So the file is opened read-only, must already
be a radmfa store at this code's schema version, and is read in one transaction: the counts
and every row come from one consistent view, even while a daemon still writes to it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator
from typing import Any

from radmfa.store.crypto import SecretBox, SecretBoxError, token_secret_aad
from radmfa.store.model import (
    AuditEvent,
    LockState,
    StoreError,
    TokenRecord,
    TrustedDevice,
)
from radmfa.store.queries.tokens import token_record
from radmfa.store.queries.users import settings_from_row
from radmfa.store.schema.sqlite import SCHEMA_VERSION
from radmfa.store.snapshot import FailureRecord, SendRecord, Snapshot, SnapshotCounts, UserRow

__all__ = ["read_sqlite_snapshot"]

#: Rows fetched from SQLite at a time.
BATCH = 1000
#: How long a read waits for a writer that holds SQLite's lock (a WAL reader rarely does).
BUSY_TIMEOUT = 5.0

_COUNTS = (
    "SELECT (SELECT COUNT(*) FROM tokens), (SELECT COUNT(*) FROM users), "
    "(SELECT COUNT(*) FROM devices), (SELECT COUNT(*) FROM failures), "
    "(SELECT COUNT(*) FROM sends), (SELECT COUNT(*) FROM audit), "
    "(SELECT COUNT(*) FROM challenges), (SELECT COUNT(*) FROM attempts)"
)
_USERS = (
    "SELECT username, failures, locked_until, last_failure_at, last_success_at, total_failures, "
    "preferred, notice, status, status_until, status_reason, first_seen_at, grace_logins "
    "FROM users ORDER BY username"
)
_TOKENS = (
    "SELECT token_id, username, type, secret_blob, digits, algorithm, period, created_at, "
    "last_step, description, drift FROM tokens ORDER BY username, created_at, token_id"
)
_DEVICES = (
    "SELECT username, device, client, nas_id, remembered_at, expires_at FROM devices "
    "ORDER BY username, device, client, nas_id"
)
_FAILURES = "SELECT key, at FROM failures ORDER BY at, rowid"
_SENDS = "SELECT username, channel, sent_at FROM sends ORDER BY sent_at, rowid"
_AUDIT = (
    "SELECT id, at, kind, username, reason, outcome, client, src, nas_id, station, method, factor, "
    "trusted_device, rule, latency_ms, actor, action, before, after FROM audit ORDER BY id"
)


@contextlib.contextmanager
def read_sqlite_snapshot(path: str, box: SecretBox) -> Iterator[Snapshot]:
    """The store in the SQLite file ``path`` (token secrets opened with ``box``), readable
    until the ``with`` block ends.

    A missing file, a file that is not a radmfa store, or one at another schema version is a
    :class:`StoreError` that says so; so is a token secret that does not open (another key
    file, a damaged row), raised while the tokens are read.
    """
    conn = _open_read_only(path)
    try:
        try:
            conn.execute("BEGIN")  # deferred: the first read fixes the view for all the rest
            _check_store(conn, path)
            counts = SnapshotCounts(*conn.execute(_COUNTS).fetchone())
        except sqlite3.Error as e:
            raise StoreError(f"cannot read {path}: {e}") from e
        yield Snapshot(
            source=path,
            counts=counts,
            users=(_user(row) for row in _rows(conn, path, _USERS)),
            tokens=(_token(box, path, row) for row in _rows(conn, path, _TOKENS)),
            devices=(TrustedDevice(*row) for row in _rows(conn, path, _DEVICES)),
            failures=(FailureRecord(*row) for row in _rows(conn, path, _FAILURES)),
            sends=(SendRecord(*row) for row in _rows(conn, path, _SENDS)),
            audit=(_event(row) for row in _rows(conn, path, _AUDIT)),
        )
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.close()  # ends the read transaction; nothing was written


def _open_read_only(path: str) -> sqlite3.Connection:
    if not os.path.exists(path):
        raise StoreError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise StoreError(f"{path} is not a file")
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    try:
        return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT, isolation_level=None)
    except sqlite3.Error as e:
        raise StoreError(f"cannot open {path}: {e}") from e


def _check_store(conn: sqlite3.Connection, path: str) -> None:
    """Refuse anything but a radmfa store at this code's schema version."""
    try:
        tables = {
            name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path} is not a radmfa store (not a SQLite database: {e})") from None
    if not {"schema_version", "tokens", "users", "audit"} <= tables:
        raise StoreError(f"{path} is not a radmfa store (a SQLite database without its tables)")
    (version,) = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    if version != SCHEMA_VERSION:
        if isinstance(version, int) and version < SCHEMA_VERSION:
            advice = (
                "open it once with this radmfa first (radmfa store migrate, with a config "
                "whose store.path names it)"
            )
        else:
            advice = "copy it with the radmfa that wrote it"
        raise StoreError(
            f"{path} has schema version {version}, this radmfa reads version "
            f"{SCHEMA_VERSION}: {advice}"
        )


def _rows(conn: sqlite3.Connection, path: str, sql: str) -> Iterator[Any]:
    """The rows of ``sql``, fetched :data:`BATCH` at a time."""
    try:
        cursor = conn.execute(sql)
        while batch := cursor.fetchmany(BATCH):
            yield from batch
    except sqlite3.Error as e:
        raise StoreError(f"reading {path} failed: {e}") from e


def _user(row: tuple[Any, ...]) -> UserRow:
    user, failures, locked_until, last_failure, last_success, total = row[:6]
    return UserRow(
        LockState(user, failures, locked_until, last_failure, last_success, int(total or 0)),
        settings_from_row(user, row[6:]),
    )


def _token(box: SecretBox, path: str, row: tuple[Any, ...]) -> TokenRecord:
    token_id, user, blob = row[0], row[1], row[3]
    try:
        if not isinstance(blob, bytes):  # SQLite keeps any type in any column
            raise SecretBoxError(f"the sealed secret is stored as {type(blob).__name__}")
        secret = box.open(blob, token_secret_aad(user, token_id))
    except SecretBoxError as e:
        raise StoreError(
            f"cannot decrypt the secret of token {token_id!r} of user {user!r} in {path}: {e}"
        ) from e
    return token_record(row, secret)


def _event(row: tuple[Any, ...]) -> AuditEvent:
    event_id, at, kind, user, reason, outcome, client, src, nas_id, station = row[:10]
    method, factor, trusted, rule, latency_ms, actor, action, before, after = row[10:]
    return AuditEvent(
        at=at,
        kind=kind,
        user=user,
        reason=reason,
        outcome=outcome,
        client=client,
        src=src,
        nas_id=nas_id,
        station=station,
        method=method,
        factor=factor,
        trusted_device=bool(trusted),
        rule=rule,
        latency_ms=latency_ms,
        actor=actor,
        action=action,
        before=before,
        after=after,
        event_id=event_id,
    )
