"""The shared engine: one PostgreSQL database behind every radmfa node.

Same contract, same semantics as :mod:`radmfa.store.sqlite`, but many nodes write at once, under
PostgreSQL's READ COMMITTED (every statement sees what was committed when it began). Where the
SQLite engine gets atomicity from one write lock per file, this engine gets it from:

- single conditional statements where one is enough: ``UPDATE ... WHERE`` for the replay
  check (:meth:`PostgresStore.advance_step`), ``DELETE ... RETURNING`` for taking a State,
  ``INSERT ... ON CONFLICT DO UPDATE`` for counters;
- transaction-scoped advisory locks per key (a user, a source, a user's send channel) where a
  judgement must see a stable state: every lock a transaction needs is taken first, in the
  order of the lock numbers, so two transactions can never wait for each other in a circle;
- ``SELECT ... FOR UPDATE`` where a counter is read, computed on and written back, so that
  single-statement writers of the same row (an unlock, a success) are not lost.

Connections come from a bounded :class:`psycopg_pool.ConnectionPool`. A dead database fails a
call within ``connect_timeout`` seconds (a :class:`StoreError`); the pool reconnects by itself
when it returns. A call that finds its pooled connection dead before anything could have been
committed is tried once more on a fresh one, so the first logins after a database restart do
not fail. Token secrets are sealed with :class:`~radmfa.store.crypto.SecretBox` before they
leave the process; a key check in the database refuses a node with another key file.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from radmfa.store import pg_import
from radmfa.store.base import (
    ATTEMPT_FAILED,
    ATTEMPT_LEASE,
    ATTEMPT_SUCCEEDED,
    DUPLICATE_FAILED,
    DUPLICATE_IN_FLIGHT,
    FAILED_ATTEMPT_MEMORY,
    IDLE_USERS_BATCH,
    SEND_WINDOW,
    STALE_FAILURES,
    USER_STATUSES,
    AttemptEnd,
    AttemptStart,
    AuditEvent,
    AuditQuery,
    ChallengeRecord,
    DeviceRef,
    FailureWindow,
    LockoutRule,
    LockState,
    LoginState,
    SendGrant,
    StoreError,
    TokenRecord,
    TrustedDevice,
    UserSettings,
    check_finish,
    next_failure_state,
    send_verdict,
    split_known_secrets,
    total_verdict,
    user_failures_key,
)
from radmfa.store.crypto import SecretBox, SecretBoxError, token_secret_aad
from radmfa.store.pg_schema import MIGRATIONS, SCHEMA_VERSION
from radmfa.store.snapshot import Snapshot, SnapshotCounts

__all__ = ["PostgresStore"]

Conn = psycopg.Connection[tuple[Any, ...]]
T = TypeVar("T")

#: How long a statement waits for a lock (an advisory lock another node holds) before it
#: fails: the SQLite engine's busy timeout. A node frozen inside a transaction then costs
#: the logins of its users this long, not for ever.
LOCK_TIMEOUT_MS = 5000
#: A session idle inside a transaction this long is ended by the server, with its locks.
IDLE_IN_TRANSACTION_TIMEOUT_MS = 30_000
#: How long a call waits for a connection while the database is known to be down.
DOWN_WAIT = 0.25
#: Decrypted secrets kept at most (as in the SQLite engine).
_MAX_OPENED = 10_000
#: Attempt rows past their lease deleted per transaction.
ATTEMPTS_PURGE_BATCH = 2000

_KEY_CHECK = "key_check"
_KEY_CHECK_PLAINTEXT = b"radmfa: the key file of this store"
_KEY_CHECK_AAD = b"radmfa/key-check/v1"

#: The pool warns once per connection attempt, and while the database is down every call
#: makes one: the callers report an outage themselves, one line when it starts and one when it
#: ends (:class:`radmfa.outage.Outage`). The pool's errors still get a line.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

_forks = [0]


def _count_fork() -> None:
    _forks[0] += 1


os.register_at_fork(after_in_child=_count_fork)


def lock_number(*parts: str) -> int:
    """The advisory lock number of a key: 64 bits of BLAKE2b, as PostgreSQL's signed bigint.

    Computed here rather than with ``hashtextextended`` on the server so that a transaction
    can sort the numbers of every lock it needs before taking the first one: sorting the keys
    would not prevent a deadlock between two keys whose numbers happened to collide.
    """
    digest = hashlib.blake2b(
        "\x00".join(parts).encode("utf-8"), digest_size=8, person=b"radmfa-lock"
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


#: Held (per session) while a node creates or upgrades the schema.
MIGRATION_LOCK = lock_number("schema-migration")

# Statements spelled out in full (no string building), so every query is a reviewable literal.
#: Several locks in one statement: a function scan hands the array's elements to the
#: projection one at a time, in array order, so each lock is taken after the one before it.
_LOCKS = "SELECT pg_advisory_xact_lock(n) FROM unnest(%s::bigint[]) AS n"
_INSERT_TOKEN = (
    "INSERT INTO tokens (token_id, username, type, secret_blob, digits, algorithm, period, "
    "created_at, last_step, description) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_SELECT_ALL_TOKENS = (
    "SELECT token_id, username, type, secret_blob, digits, algorithm, period, created_at, "
    "last_step, description FROM tokens ORDER BY username, created_at, token_id"
)
_SELECT_USER_TOKENS = (
    "SELECT token_id, username, type, secret_blob, digits, algorithm, period, created_at, "
    "last_step, description FROM tokens WHERE username = %s ORDER BY created_at, token_id"
)
_SELECT_USER_TYPE_TOKENS = (
    "SELECT token_id, username, type, secret_blob, digits, algorithm, period, created_at, "
    "last_step, description FROM tokens WHERE username = %s AND type = %s"
)
_ADVANCE_STEP = (
    "UPDATE tokens SET last_step = %s WHERE token_id = %s AND (last_step IS NULL OR last_step < %s)"
)
_SELECT_LOCK = (
    "SELECT username, failures, locked_until, last_failure_at, last_success_at, total_failures "
    "FROM users WHERE username = %s"
)
#: The same row, locked until the end of the transaction: a counter read to be written back.
_SELECT_LOCK_FOR_UPDATE = (
    "SELECT username, failures, locked_until, last_failure_at, last_success_at, total_failures "
    "FROM users WHERE username = %s FOR UPDATE"
)
_UPSERT_FAILURE = (
    "INSERT INTO users (username, failures, locked_until, last_failure_at, total_failures) "
    "VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT (username) DO UPDATE SET failures = excluded.failures, "
    "locked_until = excluded.locked_until, last_failure_at = excluded.last_failure_at, "
    "total_failures = excluded.total_failures"
)
_UPSERT_SUCCESS = (
    "INSERT INTO users (username, failures, locked_until, last_success_at) "
    "VALUES (%s, 0, NULL, %s) "
    "ON CONFLICT (username) DO UPDATE SET failures = 0, locked_until = NULL, "
    "total_failures = 0, last_success_at = excluded.last_success_at"
)
_CLEAR_FAILURES = (
    "UPDATE users SET failures = 0, locked_until = NULL, total_failures = 0, "
    "last_success_at = %s WHERE username = %s AND (failures > 0 OR total_failures > 0 "
    "OR locked_until IS NOT NULL)"
)
_UNLOCK = (
    "UPDATE users SET failures = 0, locked_until = NULL, total_failures = 0 "
    "WHERE username = %s AND (failures > 0 OR locked_until IS NOT NULL OR total_failures > 0)"
)
_KNOWN_USERS = "SELECT username FROM tokens UNION SELECT username FROM users ORDER BY username"
_SELECT_SETTINGS = (
    "SELECT preferred, notice, status, status_until, status_reason, first_seen_at, "
    "grace_logins FROM users WHERE username = %s"
)
_SELECT_SETTINGS_FOR_UPDATE = (
    "SELECT preferred, notice, status, status_until, status_reason, first_seen_at, "
    "grace_logins FROM users WHERE username = %s FOR UPDATE"
)
_SET_PREFERRED = (
    "INSERT INTO users (username, preferred) VALUES (%s, %s) "
    "ON CONFLICT (username) DO UPDATE SET preferred = excluded.preferred"
)
_SET_NOTICE = (
    "INSERT INTO users (username, notice) VALUES (%s, %s) "
    "ON CONFLICT (username) DO UPDATE SET notice = excluded.notice"
)
_SELECT_NOTICE_FOR_UPDATE = "SELECT notice FROM users WHERE username = %s FOR UPDATE"
_SET_STATUS = (
    "INSERT INTO users (username, status, status_until, status_reason) "
    "VALUES (%s, %s, %s, %s) ON CONFLICT (username) DO UPDATE SET "
    "status = excluded.status, status_until = excluded.status_until, "
    "status_reason = excluded.status_reason"
)
_NOTE_GRACE_LOGIN = (
    "INSERT INTO users (username, first_seen_at, grace_logins) VALUES (%s, %s, 1) "
    "ON CONFLICT (username) DO UPDATE SET "
    "first_seen_at = coalesce(users.first_seen_at, excluded.first_seen_at), "
    "grace_logins = users.grace_logins + 1 "
    "RETURNING preferred, notice, status, status_until, status_reason, first_seen_at, "
    "grace_logins"
)
_RESET_SETTINGS = (
    "UPDATE users SET preferred = NULL, first_seen_at = NULL, grace_logins = 0 WHERE username = %s"
)
#: Store.login_state in one statement (one snapshot): the users row (if any) and four
#: indexed subqueries. A key that cannot exist (NULL) switches a part off.
_LOGIN_STATE = (
    "SELECT u.failures, u.locked_until, u.last_failure_at, u.last_success_at, u.preferred, "
    "u.notice, u.status, u.status_until, u.status_reason, u.first_seen_at, u.grace_logins, "
    "u.total_failures, "
    "(SELECT COUNT(*) FROM failures WHERE key = %(ukey)s AND at >= %(usince)s), "
    "(SELECT MAX(at) FROM failures WHERE key = %(ukey)s AND at >= %(usince)s), "
    "(SELECT COUNT(*) FROM failures WHERE key = %(skey)s AND at >= %(ssince)s), "
    "(SELECT MAX(at) FROM failures WHERE key = %(skey)s AND at >= %(ssince)s), "
    "d.remembered_at, d.expires_at "
    "FROM (SELECT 1) AS one "
    "LEFT JOIN users u ON u.username = %(user)s "
    "LEFT JOIN devices d ON d.username = %(user)s AND d.device = %(device)s "
    "AND d.client = %(dclient)s AND d.nas_id = %(dnas)s AND d.expires_at > %(now)s"
)
#: Store.begin_attempt's read, also in one statement: the login state, the attempts of the
#: user and of the source still pending, and whether this attempt id is known already.
_ATTEMPT_STATE = (
    "SELECT u.failures, u.locked_until, u.last_failure_at, u.last_success_at, u.preferred, "
    "u.notice, u.status, u.status_until, u.status_reason, u.first_seen_at, u.grace_logins, "
    "u.total_failures, "
    "(SELECT COUNT(*) FROM failures WHERE key = %(ukey)s AND at >= %(usince)s), "
    "(SELECT MAX(at) FROM failures WHERE key = %(ukey)s AND at >= %(usince)s), "
    "(SELECT COUNT(*) FROM failures WHERE key = %(skey)s AND at >= %(ssince)s), "
    "(SELECT MAX(at) FROM failures WHERE key = %(skey)s AND at >= %(ssince)s), "
    "d.remembered_at, d.expires_at, "
    "(SELECT COUNT(*) FROM attempts WHERE username = %(user)s AND NOT failed "
    " AND expires_at > %(now)s), "
    "(SELECT COUNT(*) FROM attempts WHERE source = %(source)s AND NOT failed "
    " AND expires_at > %(now)s), "
    "(SELECT failed FROM attempts WHERE attempt_id = %(attempt)s AND expires_at > %(now)s) "
    "FROM (SELECT 1) AS one "
    "LEFT JOIN users u ON u.username = %(user)s "
    "LEFT JOIN devices d ON d.username = %(user)s AND d.device = %(device)s "
    "AND d.client = %(dclient)s AND d.nas_id = %(dnas)s AND d.expires_at > %(now)s"
)
_RESERVE_ATTEMPT = (
    "INSERT INTO attempts (attempt_id, username, source, expires_at, failed) "
    "VALUES (%s, %s, %s, %s, false) ON CONFLICT (attempt_id) DO UPDATE SET "
    "username = excluded.username, source = excluded.source, "
    "expires_at = excluded.expires_at, failed = false"
)
_FAIL_ATTEMPT = "UPDATE attempts SET failed = true, expires_at = %s WHERE attempt_id = %s"
_FORGET_ATTEMPT = "DELETE FROM attempts WHERE attempt_id = %s"
#: The outer condition is checked again on a row another transaction changed meanwhile: an
#: expired attempt id that was just reserved anew is not deleted.
_PURGE_ATTEMPTS = (
    "DELETE FROM attempts WHERE attempt_id IN (SELECT attempt_id FROM attempts "
    "WHERE expires_at <= %(now)s LIMIT %(batch)s) AND expires_at <= %(now)s"
)
_INSERT_FAILURE = "INSERT INTO failures (key, at) VALUES (%s, %s)"
_DELETE_FAILURES = "DELETE FROM failures WHERE key = %s"
_FAILURE_WINDOW = "SELECT COUNT(*), MAX(at) FROM failures WHERE key = %s AND at >= %s"
_INSERT_CHALLENGE = (
    "INSERT INTO challenges (state_id, username, client_name, client_address, expires_at, "
    "created_at, factor, token_id, code_hash, phase, started_at, rule) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
#: A user's challenges beyond the newest ``max_open`` (by created_at, then the order stored).
_DROP_OLDEST_CHALLENGES = (
    "DELETE FROM challenges WHERE state_id IN (SELECT state_id FROM challenges "
    "WHERE username = %s ORDER BY created_at DESC, seq DESC OFFSET %s)"
)
_TAKE_CHALLENGE = (
    "DELETE FROM challenges WHERE state_id = %s "
    "RETURNING state_id, username, client_name, client_address, expires_at, created_at, "
    "factor, token_id, code_hash, phase, started_at, rule"
)
_REMEMBER_DEVICE = (
    "INSERT INTO devices (username, device, client, nas_id, remembered_at, expires_at) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (username, device, client, nas_id) "
    "DO UPDATE SET remembered_at = excluded.remembered_at, expires_at = excluded.expires_at"
)
_TRUSTED_DEVICE = (
    "SELECT remembered_at, expires_at FROM devices WHERE username = %s AND device = %s "
    "AND client = %s AND nas_id = %s AND expires_at > %s"
)
_LIST_DEVICES = (
    "SELECT username, device, client, nas_id, remembered_at, expires_at FROM devices "
    "WHERE (%(user)s::text IS NULL OR username = %(user)s) AND expires_at > %(now)s "
    "ORDER BY username, device, client, nas_id"
)
_REVOKE_DEVICES = (
    "DELETE FROM devices WHERE username = %(user)s "
    "AND (%(device)s::text IS NULL OR device = %(device)s)"
)
_INSERT_AUDIT = (
    "INSERT INTO audit (at, kind, username, reason, outcome, client, src, nas_id, station, "
    "method, factor, trusted_device, rule, latency_ms, actor, action, before, after) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
#: Every filter is in the statement; a NULL parameter switches its condition off.
_QUERY_AUDIT = (
    "SELECT id, at, kind, username, reason, outcome, client, src, nas_id, station, method, "
    "factor, trusted_device, rule, latency_ms, actor, action, before, after FROM audit "
    "WHERE (%(user)s::text IS NULL OR username = %(user)s) "
    "AND (%(since)s::double precision IS NULL OR at >= %(since)s) "
    "AND (%(until)s::double precision IS NULL OR at < %(until)s) "
    "AND (%(kind)s::text IS NULL OR kind = %(kind)s) "
    "AND (%(outcome)s::text IS NULL OR (kind = 'auth' AND outcome = %(outcome)s)) "
    "AND (%(reason)s::text IS NULL OR (kind = 'auth' AND reason = %(reason)s) "
    "     OR (kind <> 'auth' "
    "         AND strpos(lower(coalesce(reason, '')), lower(%(reason)s::text)) > 0)) "
    "ORDER BY at DESC, id DESC LIMIT %(limit)s::bigint"
)
_AUDIT_FIELDS = (
    "at", "kind", "user", "reason", "outcome", "client", "src", "nas_id", "station", "method",
    "factor", "trusted_device", "rule", "latency_ms", "actor", "action", "before", "after",
)  # fmt: skip
_PRUNE_AUDIT = (
    "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < %s ORDER BY at, id LIMIT %s)"
)
_COUNT_LOCKED = "SELECT COUNT(*) FROM users WHERE locked_until > %s"
#: Users rows that hold nothing (:func:`radmfa.store.base.idle_user`), a batch at a time. The
#: outer conditions repeat the inner ones: PostgreSQL checks them again on a row that another
#: transaction changed after the subquery saw it (a failure counted meanwhile keeps the row).
_DELETE_IDLE_USERS = (
    "DELETE FROM users WHERE username IN (SELECT u.username FROM users u "
    "WHERE ((u.failures = 0 AND u.total_failures = 0 AND u.locked_until IS NULL) "
    "       OR (u.last_success_at IS NULL AND u.last_failure_at < %(stale)s "
    "           AND (u.locked_until IS NULL OR u.locked_until <= %(now)s))) "
    "AND u.status = 'enabled' "
    "AND u.status_until IS NULL AND u.status_reason IS NULL AND u.preferred IS NULL "
    "AND u.notice IS NULL AND u.first_seen_at IS NULL AND u.grace_logins = 0 "
    "AND NOT EXISTS (SELECT 1 FROM tokens t WHERE t.username = u.username) "
    "LIMIT %(batch)s) "
    "AND ((failures = 0 AND total_failures = 0 AND locked_until IS NULL) "
    "     OR (last_success_at IS NULL AND last_failure_at < %(stale)s "
    "         AND (locked_until IS NULL OR locked_until <= %(now)s))) "
    "AND status = 'enabled' AND status_until IS NULL AND status_reason IS NULL "
    "AND preferred IS NULL AND notice IS NULL AND first_seen_at IS NULL AND grace_logins = 0"
)
_SELECT_RECENT_SENDS = (
    "SELECT sent_at FROM sends WHERE username = %s AND channel = %s AND sent_at > %s"
)
#: The n-th most recent send of a channel within the window (OFFSET n - 1), for the total cap.
_SELECT_NTH_SEND = (
    "SELECT sent_at FROM sends WHERE channel = %s AND sent_at > %s "
    "ORDER BY sent_at DESC LIMIT 1 OFFSET %s"
)
_INSERT_SEND = "INSERT INTO sends (username, channel, sent_at) VALUES (%s, %s, %s)"


class PostgresStore:
    """:class:`~radmfa.store.base.Store` on a PostgreSQL database shared by every node.

    ``dsn`` is a libpq connection string or URI; ``password``, when given, is used instead of
    one in ``dsn`` (so the DSN can live in the config and the password in a credential).
    ``pool_size`` bounds the connections of this process; ``connect_timeout`` bounds both
    connecting and waiting for a pooled connection: a database that is down fails a call
    after that long with a :class:`StoreError`.

    Opening connects, creates or upgrades the schema (refusing one newer than this code) and
    checks the key: a database written with another key file is refused.
    """

    def __init__(
        self,
        dsn: str,
        box: SecretBox,
        *,
        pool_size: int = 8,
        password: str | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        if pool_size < 1:
            raise StoreError(f"a PostgreSQL store needs pool_size >= 1, got {pool_size}")
        if not connect_timeout > 0:
            raise StoreError(f"connect_timeout must be positive, got {connect_timeout}")
        self._box = box
        self._timeout = float(connect_timeout)
        self._kwargs, self.name = _connection_settings(dsn, password, self._timeout)
        self._forks = _forks[0]
        self._pid = os.getpid()
        self._closed = False
        #: When (monotonic) the pool last had no connection for a call: the database is
        #: down, and calls wait only :data:`DOWN_WAIT` for one until a connection is seen.
        self._down_at: float | None = None
        #: Decrypted token secrets by (token id, user, sealed blob), as in the SQLite engine.
        self._opened: dict[tuple[str, str, bytes], bytes] = {}
        #: The schema version found when this store was opened, before migrating it.
        self.schema_at_open = 0
        self._migrate()
        self._pool: ConnectionPool[Conn] = ConnectionPool(
            kwargs=self._kwargs,
            min_size=1,
            max_size=pool_size,
            open=True,
            timeout=self._timeout,
            # The pool's reconnection attempts back off from 1 s, doubling; giving up after
            # the call timeout keeps the gap between attempts below it (and a new call
            # starts a fresh series), so the database is found again within a second or two
            # of its return instead of after a back-off grown to minutes.
            reconnect_timeout=self._timeout,
            name="radmfa-store",
        )

    def __repr__(self) -> str:
        return f"PostgresStore({self.name!r})"

    # -- connections and transactions -------------------------------------------------------

    def _usable(self) -> None:
        if self._closed:
            raise StoreError(f"store {self.name} is closed")
        if _forks[0] != self._forks:
            raise StoreError(
                f"store {self.name} was opened in process {self._pid}; open a new store in "
                "each process (database connections must not cross fork)"
            )

    def _run(
        self,
        what: str,
        work: Callable[[Conn], T],
        *,
        transaction: bool = True,
        retry: bool = True,
    ) -> T:
        """Run ``work`` on a pooled connection, in a transaction unless told otherwise.

        Driver errors become a StoreError naming ``what``. A connection found dead while
        ``work`` ran (a database restarted since it was pooled) is retried once on a fresh
        one when that cannot do anything twice: a transaction that never reached its commit
        left nothing behind; a single statement (``transaction=False``) is retried only
        when its callers said running it again is harmless (``retry``).
        """
        self._usable()
        for last_try in (False, True):
            conn: Conn | None = None
            running = False
            wait = self._connection_wait()
            try:
                with self._pool.connection(timeout=wait) as conn:
                    self._down_at = None
                    running = True
                    if not transaction:
                        return work(conn)
                    with conn.transaction():
                        result = work(conn)
                        running = False  # committing: the outcome could be unknown
                    return result
            except PoolTimeout:
                self._down_at = time.monotonic()
                raise StoreError(
                    f"{what} failed: no connection to {self.name} within {wait:g} s "
                    "(is PostgreSQL running and reachable?)"
                ) from None
            except psycopg.Error as e:
                lost = conn is not None and conn.broken
                if lost:
                    self._drop_dead_connections()
                if lost and running and retry and not last_try:
                    continue
                raise StoreError(f"{what} failed on {self.name}: {_describe(e)}") from e
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection_wait(self) -> float:
        """How long a call waits for a pooled connection: ``connect_timeout``, but only
        :data:`DOWN_WAIT` while the database is known to be down, so that calls queued
        behind one another (the daemon's one store thread) fail fast instead of each waiting
        the whole timeout. Each such call still asks the pool to connect: the first after
        the database's return finds it."""
        down_at = self._down_at
        if down_at is not None and time.monotonic() - down_at < self._timeout:
            return min(DOWN_WAIT, self._timeout)
        return self._timeout

    def _drop_dead_connections(self) -> None:
        """After one dead connection, test the idle ones: after a database restart they are
        all dead, and each would otherwise fail one call."""
        with contextlib.suppress(Exception):
            self._pool.check()

    def _rows(self, what: str, sql: str, params: Any) -> list[tuple[Any, ...]]:
        """One read statement, outside a transaction (safe to retry)."""
        return self._run(what, lambda conn: conn.execute(sql, params).fetchall(), transaction=False)

    def _write(self, what: str, sql: str, params: Any, *, retry: bool = True) -> int:
        """One write statement on its own (atomic by itself); its row count."""
        return self._run(
            what, lambda conn: conn.execute(sql, params).rowcount, transaction=False, retry=retry
        )

    def _connect_once(self) -> Conn:
        """A connection outside the pool, for opening: its errors are the real reason
        (a wrong password, a missing database), where the pool would only time out."""
        try:
            return psycopg.connect(**self._kwargs)
        except psycopg.Error as e:
            raise StoreError(f"cannot connect to {self.name}: {_describe(e)}") from e

    def _migrate(self) -> None:
        """Create or upgrade the schema, then check the key, under a session advisory lock so
        that nodes opening one database together take turns."""
        conn = self._connect_once()
        try:
            with conn:
                conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
                try:
                    with conn.transaction():
                        self._upgrade(conn)
                        self._check_key(conn)
                finally:
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
        except psycopg.Error as e:
            raise StoreError(f"opening {self.name} failed: {_describe(e)}") from e

    def _upgrade(self, conn: Conn) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY)")
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        current = int(row[0] or 0) if row is not None else 0
        self.schema_at_open = current
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"database {self.name} has schema version {current}, this radmfa knows up to "
                f"{SCHEMA_VERSION}: upgrade radmfa"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))

    def _check_key(self, conn: Conn) -> None:
        """The first node stores a blob sealed with its key; every later one must open it."""
        conn.execute(
            "INSERT INTO meta (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
            (_KEY_CHECK, self._box.seal(_KEY_CHECK_PLAINTEXT, _KEY_CHECK_AAD)),
        )
        row = conn.execute("SELECT value FROM meta WHERE name = %s", (_KEY_CHECK,)).fetchone()
        try:
            opened = self._box.open(bytes(row[0]), _KEY_CHECK_AAD) if row is not None else None
        except SecretBoxError:
            opened = None
        if opened != _KEY_CHECK_PLAINTEXT:
            raise StoreError(
                f"database {self.name} was sealed with a different key file: every node "
                "needs the same store.key_file (copy it from the first node)"
            )

    def schema_version(self) -> int:
        (row,) = self._rows(
            "reading the schema version", "SELECT MAX(version) FROM schema_version", ()
        )
        return int(row[0])

    def import_snapshot(
        self, snapshot: Snapshot, notes: Sequence[AuditEvent] = ()
    ) -> SnapshotCounts:
        """Copy another store's ``snapshot`` into this one, which must hold no data, and
        append ``notes`` (admin rows about the copy), in one transaction: all of it or,
        whatever fails, nothing. Token secrets are sealed again with this store's key.
        Returns the rows copied per kind; :class:`StoreNotEmpty` when there was data."""

        def token_row(token: TokenRecord) -> tuple[object, ...]:
            return self._token_rows([token])[0]

        # Never retried: the snapshot's rows can be read only once.
        return self._run(
            f"copying {snapshot.source}",
            lambda conn: pg_import.fill(conn, snapshot, token_row, notes),
            retry=False,
        )

    def close(self) -> None:
        """Close the pool and every connection in it. Call at shutdown only."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._pool.close(timeout=self._timeout)

    # -- tokens -----------------------------------------------------------------------------

    def add_token(self, token: TokenRecord) -> bool:
        return not self.add_tokens([token])

    def _token_rows(self, tokens: Sequence[TokenRecord]) -> list[tuple[object, ...]]:
        return [
            (
                token.token_id,
                token.user,
                token.type,
                self._box.seal(token.secret, token_secret_aad(token.user, token.token_id)),
                token.digits,
                token.algorithm,
                token.period,
                token.created_at,
                token.last_step,
                token.description,
            )
            for token in tokens
        ]

    def add_tokens(self, tokens: Sequence[TokenRecord]) -> list[TokenRecord]:
        what = f"adding {len(tokens)} token(s)"
        pairs = sorted({(t.user, t.type) for t in tokens})

        def work(conn: Conn) -> list[TokenRecord]:
            # Secrets are sealed with random nonces: they are compared opened, with every
            # user of the batch locked, so a concurrent import cannot add one meanwhile.
            _lock(conn, *[("tokens", user) for user, _ in pairs])
            mine = [
                self._token_from_row(row)
                for user, type_ in pairs
                for row in conn.execute(_SELECT_USER_TYPE_TOKENS, (user, type_)).fetchall()
            ]
            new, skipped = split_known_secrets(mine, tokens)
            if new:
                _many(conn, _INSERT_TOKEN, self._token_rows(new))
            return skipped

        try:
            return self._run(what, work)
        except StoreError as e:
            if isinstance(e.__cause__, pg_errors.UniqueViolation):
                raise StoreError(f"{what}: a token id already exists") from e.__cause__
            raise

    def list_tokens(self, user: str | None = None) -> list[TokenRecord]:
        if user is None:
            rows = self._rows("listing tokens", _SELECT_ALL_TOKENS, ())
        else:
            rows = self._rows("listing tokens", _SELECT_USER_TOKENS, (user,))
        return [self._token_from_row(row) for row in rows]

    def _token_from_row(self, row: tuple[Any, ...]) -> TokenRecord:
        token_id, user, type_, blob, digits, algorithm, period, created_at, last_step, desc = row
        sealed = bytes(blob)
        secret = self._opened.get((token_id, user, sealed))
        if secret is None:
            try:
                secret = self._box.open(sealed, token_secret_aad(user, token_id))
            except SecretBoxError as e:
                raise StoreError(
                    f"cannot decrypt the secret of token {token_id!r} of user {user!r} in "
                    f"{self.name}: {e}"
                ) from e
            if len(self._opened) >= _MAX_OPENED:
                with contextlib.suppress(StopIteration, KeyError, RuntimeError):  # other threads
                    del self._opened[next(iter(self._opened))]  # the oldest insertion
            self._opened[(token_id, user, sealed)] = secret
        return TokenRecord(
            token_id=token_id,
            user=user,
            type=type_,
            secret=secret,
            digits=digits,
            algorithm=algorithm,
            period=period,
            created_at=created_at,
            last_step=last_step,
            description=desc,
        )

    def remove_tokens(self, user: str, token_id: str | None = None) -> int:
        what = f"removing tokens of {user!r}"
        if token_id is None:
            return self._write(what, "DELETE FROM tokens WHERE username = %s", (user,))
        return self._write(
            what, "DELETE FROM tokens WHERE username = %s AND token_id = %s", (user, token_id)
        )

    def advance_step(self, token_id: str, step: int) -> bool:
        # One statement on its own is atomic: of two concurrent updates the second waits for
        # the first and then finds last_step no longer below ``step``. Retrying it after a
        # lost connection can only answer False (fail closed), never accept twice.
        return (
            self._write(
                f"advancing the step of token {token_id!r}",
                _ADVANCE_STEP,
                (step, token_id, step),
            )
            == 1
        )

    def replace_tokens(self, user: str, type: str, tokens: Sequence[TokenRecord]) -> int:
        rows = self._token_rows(tokens)
        what = f"replacing the {type} tokens of {user!r}"

        def work(conn: Conn) -> int:
            _lock(conn, ("tokens", user))
            removed = conn.execute(
                "DELETE FROM tokens WHERE username = %s AND type = %s", (user, type)
            ).rowcount
            if rows:
                _many(conn, _INSERT_TOKEN, rows)
            return removed

        try:
            return self._run(what, work)
        except StoreError as e:
            if isinstance(e.__cause__, pg_errors.UniqueViolation):
                raise StoreError(f"{what}: a token id already exists") from e.__cause__
            raise

    # -- lockout ----------------------------------------------------------------------------

    def lock_state(self, user: str) -> LockState:
        rows = self._rows(f"reading the lock state of {user!r}", _SELECT_LOCK, (user,))
        return LockState(user) if not rows else _lock_from_row(rows[0])

    def record_failure(
        self, user: str, now: float, max_failures: int, lock_seconds: float, max_total: int = 0
    ) -> LockState:
        rule = LockoutRule(max_failures, lock_seconds, max_total)  # refuses max_failures < 1

        def work(conn: Conn) -> LockState:
            _lock(conn, ("user", user))
            return _count_failure(conn, user, now, rule)

        return self._run(f"recording a failure for {user!r}", work)

    def record_success(self, user: str, now: float) -> None:
        self._write(f"recording a success for {user!r}", _UPSERT_SUCCESS, (user, now))

    def unlock(self, user: str) -> bool:
        return self._write(f"unlocking {user!r}", _UNLOCK, (user,)) == 1

    def known_users(self) -> list[str]:
        return [row[0] for row in self._rows("listing users", _KNOWN_USERS, ())]

    # -- per-user settings ------------------------------------------------------------------

    def user_settings(self, user: str) -> UserSettings:
        rows = self._rows(f"reading the settings of {user!r}", _SELECT_SETTINGS, (user,))
        return UserSettings(user) if not rows else _settings_from_row(user, rows[0])

    def set_preferred(self, user: str, factor: str | None) -> None:
        self._write(f"setting the preferred factor of {user!r}", _SET_PREFERRED, (user, factor))

    def set_notice(self, user: str, notice: str | None) -> None:
        self._write(f"setting a notice for {user!r}", _SET_NOTICE, (user, notice))

    def take_notice(self, user: str) -> str | None:
        def work(conn: Conn) -> str | None:
            # FOR UPDATE: a second taker waits, then reads the row as the first left it.
            row = conn.execute(_SELECT_NOTICE_FOR_UPDATE, (user,)).fetchone()
            if row is None or row[0] is None:
                return None
            conn.execute("UPDATE users SET notice = NULL WHERE username = %s", (user,))
            return str(row[0])

        return self._run(f"taking the notice of {user!r}", work)

    def set_status(
        self, user: str, status: str, until: float | None, reason: str | None
    ) -> UserSettings:
        if status not in USER_STATUSES:
            raise ValueError(f"unknown user status {status!r}")

        def work(conn: Conn) -> tuple[Any, ...] | None:
            _lock(conn, ("user", user))
            row = conn.execute(_SELECT_SETTINGS_FOR_UPDATE, (user,)).fetchone()
            conn.execute(_SET_STATUS, (user, status, until, reason))
            return row

        row = self._run(f"setting the status of {user!r}", work)
        return UserSettings(user) if row is None else _settings_from_row(user, row)

    def note_grace_login(self, user: str, now: float) -> UserSettings:
        def work(conn: Conn) -> tuple[Any, ...] | None:
            return conn.execute(_NOTE_GRACE_LOGIN, (user, now)).fetchone()

        # Counted by one statement; not retried, so a lost answer never counts twice.
        row = self._run(
            f"counting a grace-period login of {user!r}", work, transaction=False, retry=False
        )
        assert row is not None  # an upsert with RETURNING returns its row
        return _settings_from_row(user, row)

    def reset_user(self, user: str) -> tuple[int, int]:
        def work(conn: Conn) -> tuple[int, int]:
            tokens = conn.execute("DELETE FROM tokens WHERE username = %s", (user,)).rowcount
            devices = conn.execute("DELETE FROM devices WHERE username = %s", (user,)).rowcount
            conn.execute(_RESET_SETTINGS, (user,))
            return tokens, devices

        return self._run(f"resetting {user!r}", work)

    def login_state(
        self,
        user: str,
        now: float,
        *,
        user_since: float | None = None,
        source: str | None = None,
        source_since: float | None = None,
        device: DeviceRef | None = None,
    ) -> LoginState:
        params = _login_state_params(user, now, user_since, source, source_since, device)
        (row,) = self._rows(f"reading the login state of {user!r}", _LOGIN_STATE, params)
        return _login_state_from_row(user, device, row)

    # -- attempts ---------------------------------------------------------------------------

    def begin_attempt(
        self,
        attempt_id: bytes,
        user: str,
        now: float,
        judge: Callable[[LoginState], object | None],
        *,
        user_since: float | None = None,
        source: str | None = None,
        source_since: float | None = None,
        device: DeviceRef | None = None,
        lease: float = ATTEMPT_LEASE,
    ) -> AttemptStart:
        params = _login_state_params(user, now, user_since, source, source_since, device)
        params["attempt"] = attempt_id
        params["source"] = source

        def work(conn: Conn) -> AttemptStart:
            # The user's lock (and the source's) first: every begin_attempt and failing
            # finish_attempt of them waits here, so the state read next stays true until
            # the reservation is committed. The read is one statement, one snapshot.
            _lock(conn, ("user", user), *([("source", source)] if source is not None else []))
            (row,) = conn.execute(_ATTEMPT_STATE, params).fetchall()
            known = row[20]
            if known is not None:
                return AttemptStart(
                    None, duplicate=DUPLICATE_FAILED if known else DUPLICATE_IN_FLIGHT
                )
            state = _login_state_from_row(user, device, row[:18], row[18], row[19])
            refusal = judge(state)
            if refusal is None:
                conn.execute(_RESERVE_ATTEMPT, (attempt_id, user, source, now + lease))
            return AttemptStart(state, refusal)

        return self._run(f"reserving an attempt of {user!r}", work)

    def finish_attempt(
        self,
        attempt_id: bytes,
        user: str,
        now: float,
        result: str,
        *,
        lockout: LockoutRule | None = None,
        failure_keys: Sequence[str] = (),
        clear_keys: Sequence[str] = (),
    ) -> LockState | None:
        check_finish(result, lockout)
        what = f"finishing an attempt of {user!r}"
        if result == ATTEMPT_FAILED:
            assert lockout is not None

            def fail(conn: Conn) -> LockState:
                _lock(conn, ("user", user))
                conn.execute(_FAIL_ATTEMPT, (now + FAILED_ATTEMPT_MEMORY, attempt_id))
                if failure_keys:
                    _many(conn, _INSERT_FAILURE, [(key, now) for key in failure_keys])
                return _count_failure(conn, user, now, lockout)

            return self._run(what, fail)
        if result != ATTEMPT_SUCCEEDED:
            # Neutral: the reservation ends, nothing is counted. One statement, atomic.
            self._write(what, _FORGET_ATTEMPT, (attempt_id,))
            return None

        def succeed(conn: Conn) -> None:
            # Single statements on rows a failing finish locks (FOR UPDATE) before it
            # counts: they wait for each other, nothing is lost.
            conn.execute(_FORGET_ATTEMPT, (attempt_id,))
            conn.execute(_CLEAR_FAILURES, (now, user))
            for key in clear_keys:
                conn.execute(_DELETE_FAILURES, (key,))

        self._run(what, succeed)
        return None

    def end_attempts(self, ends: Sequence[AttemptEnd], now: float) -> None:
        if not ends:
            return

        def end_all(conn: Conn) -> None:
            # Single statements on rows a failing finish locks (FOR UPDATE) before it
            # counts: they wait for each other, nothing is lost.
            _many(conn, _FORGET_ATTEMPT, [(end.attempt_id,) for end in ends])
            succeeded = [end for end in ends if end.succeeded]
            if succeeded:
                _many(conn, _CLEAR_FAILURES, [(now, end.user) for end in succeeded])
                keys = [(key,) for end in succeeded for key in end.clear_keys]
                if keys:
                    _many(conn, _DELETE_FAILURES, keys)

        self._run(f"ending {len(ends)} attempt(s)", end_all)

    # -- trusted devices --------------------------------------------------------------------

    def remember_device(self, user: str, device: DeviceRef, now: float, expires_at: float) -> None:
        self._write(
            f"remembering a device of {user!r}",
            _REMEMBER_DEVICE,
            (user, device.station, device.client, device.nas_id, now, expires_at),
        )

    def trusted_device(self, user: str, device: DeviceRef, now: float) -> TrustedDevice | None:
        rows = self._rows(
            f"reading a device of {user!r}",
            _TRUSTED_DEVICE,
            (user, device.station, device.client, device.nas_id, now),
        )
        if not rows:
            return None
        remembered_at, expires_at = rows[0]
        return TrustedDevice(
            user, device.station, device.client, device.nas_id, remembered_at, expires_at
        )

    def list_devices(self, user: str | None, now: float) -> list[TrustedDevice]:
        rows = self._rows("listing devices", _LIST_DEVICES, {"user": user, "now": now})
        return [TrustedDevice(*row) for row in rows]

    def revoke_devices(self, user: str, device: str | None = None) -> int:
        return self._write(
            f"revoking devices of {user!r}", _REVOKE_DEVICES, {"user": user, "device": device}
        )

    # -- sliding-window throttles -----------------------------------------------------------

    def note_failures(self, keys: Sequence[str], now: float) -> None:
        rows = [(key, now) for key in keys]
        if rows:
            self._run(
                "recording failures",
                lambda conn: _many(conn, _INSERT_FAILURE, rows),
            )

    def failure_window(self, key: str, since: float) -> FailureWindow:
        ((count, last),) = self._rows("reading failures", _FAILURE_WINDOW, (key, since))
        return FailureWindow(int(count), last)

    def clear_failures(self, key: str) -> None:
        self._write("clearing failures", _DELETE_FAILURES, (key,))

    # -- audit trail ------------------------------------------------------------------------

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        rows = [
            (
                e.at, e.kind, e.user, e.reason, e.outcome, e.client, e.src, e.nas_id, e.station,
                e.method, e.factor, bool(e.trusted_device), e.rule, e.latency_ms, e.actor,
                e.action, e.before, e.after,
            )
            for e in events
        ]  # fmt: skip
        if rows:
            self._run(
                f"appending {len(rows)} audit row(s)",
                lambda conn: _many(conn, _INSERT_AUDIT, rows),
            )

    def query_audit(self, query: AuditQuery) -> list[AuditEvent]:
        params = {
            "user": query.user,
            "since": query.since,
            "until": query.until,
            "kind": query.kind,
            "outcome": query.outcome,
            "reason": query.reason,
            "limit": None if query.limit is None else max(0, query.limit),
        }
        rows = self._rows("reading the audit trail", _QUERY_AUDIT, params)
        events = []
        for row in reversed(rows):
            event_id, *values = row
            fields = dict(zip(_AUDIT_FIELDS, values, strict=True))
            fields["trusted_device"] = bool(fields["trusted_device"])
            events.append(AuditEvent(**fields, event_id=int(event_id)))
        return events

    def prune_audit(self, before: float, limit: int) -> int:
        return self._write("pruning the audit trail", _PRUNE_AUDIT, (before, max(0, limit)))

    # -- out-of-band sends ------------------------------------------------------------------

    def reserve_send(
        self,
        user: str,
        channel: str,
        now: float,
        cooldown: float,
        per_hour: int,
        total_per_hour: int | None = None,
    ) -> SendGrant:
        def work(conn: Conn) -> SendGrant:
            # This user's sends of this channel, and with a total cap every send of the
            # channel, wait for each other: the counts read stay true until the insert.
            keys = [("send", user, channel)]
            if total_per_hour is not None:
                keys.append(("send-channel", channel))
            _lock(conn, *keys)
            recent = [
                float(t)
                for (t,) in conn.execute(
                    _SELECT_RECENT_SENDS, (user, channel, now - SEND_WINDOW)
                ).fetchall()
            ]
            grant = send_verdict(recent, now, cooldown, per_hour)
            if grant.granted and total_per_hour is not None:
                row = conn.execute(
                    _SELECT_NTH_SEND, (channel, now - SEND_WINDOW, max(0, total_per_hour - 1))
                ).fetchone()
                grant = total_verdict(float(row[0]) if row is not None else None, now)
            if grant.granted:
                conn.execute(_INSERT_SEND, (user, channel, now))
            return grant

        return self._run(f"reserving a {channel} send for {user!r}", work)

    # -- challenges -------------------------------------------------------------------------

    def put_challenge(self, challenge: ChallengeRecord, max_open: int | None = None) -> None:
        values = (
            challenge.state_id,
            challenge.user,
            challenge.client_name,
            challenge.client_address,
            challenge.expires_at,
            challenge.created_at,
            challenge.factor,
            challenge.token_id,
            challenge.code_hash,
            challenge.phase,
            challenge.started_at,
            challenge.rule,
        )

        def work(conn: Conn) -> None:
            if max_open is not None:
                # One user's new States take turns, so each sees the others' when it trims.
                _lock(conn, ("challenges", challenge.user))
            conn.execute(_INSERT_CHALLENGE, values)
            if max_open is not None:
                conn.execute(_DROP_OLDEST_CHALLENGES, (challenge.user, max(1, max_open)))

        try:
            self._run(f"storing a challenge for {challenge.user!r}", work)
        except StoreError as e:
            if isinstance(e.__cause__, pg_errors.UniqueViolation):
                raise StoreError("a challenge with this state id already exists") from e.__cause__
            raise

    def take_challenge(self, state_id: bytes) -> ChallengeRecord | None:
        # DELETE ... RETURNING: of two concurrent takers, the second finds the row gone.
        rows = self._run(
            "taking a challenge",
            lambda conn: conn.execute(_TAKE_CHALLENGE, (state_id,)).fetchall(),
            transaction=False,
        )
        if not rows:
            return None
        state, user, client_name, client_address, expires_at, created_at = rows[0][:6]
        factor, token_id, code_hash, phase, started_at, rule = rows[0][6:]
        return ChallengeRecord(
            bytes(state),
            user,
            client_name,
            client_address,
            expires_at,
            created_at,
            factor=factor,
            token_id=token_id,
            code_hash=bytes(code_hash) if code_hash is not None else None,
            phase=phase,
            started_at=started_at,
            rule=rule,
        )

    def purge_expired(self, now: float, failures_before: float | None = None) -> int:
        def work(conn: Conn) -> int:
            conn.execute("DELETE FROM sends WHERE sent_at <= %s", (now - SEND_WINDOW,))
            conn.execute("DELETE FROM devices WHERE expires_at <= %s", (now,))
            if failures_before is not None:
                conn.execute("DELETE FROM failures WHERE at < %s", (failures_before,))
            conn.execute(
                _DELETE_IDLE_USERS,
                {"now": now, "stale": now - STALE_FAILURES, "batch": IDLE_USERS_BATCH},
            )
            return conn.execute("DELETE FROM challenges WHERE expires_at <= %s", (now,)).rowcount

        purged = self._run("purging expired challenges", work)
        # Attempts in batches: after a guessing storm, one DELETE of them all would be one
        # long transaction.
        while True:
            gone = self._write(
                "purging past attempts",
                _PURGE_ATTEMPTS,
                {"now": now, "batch": ATTEMPTS_PURGE_BATCH},
            )
            if gone < ATTEMPTS_PURGE_BATCH:
                return purged

    # -- metrics ----------------------------------------------------------------------------

    def count_locked(self, now: float) -> int:
        (row,) = self._rows("counting locked users", _COUNT_LOCKED, (now,))
        return int(row[0])


def _many(conn: Conn, sql: str, rows: Sequence[Sequence[object]]) -> None:
    """One statement for each of ``rows`` (psycopg sends them in one pipeline)."""
    with conn.cursor() as cur:
        cur.executemany(sql, rows)


def _lock(conn: Conn, *keys: tuple[str, ...]) -> None:
    """Take the transaction-scoped advisory locks of ``keys``, in the order of their numbers:
    two transactions that need some of the same locks wait for each other in one direction
    only, never in a circle."""
    conn.execute(_LOCKS, (sorted({lock_number(*key) for key in keys}),))


def _count_failure(conn: Conn, user: str, now: float, rule: LockoutRule) -> LockState:
    """One more failure of ``user``, in the caller's transaction (which holds the user's
    lock); the row is locked while it is computed on, so an unlock cannot be lost."""
    row = conn.execute(_SELECT_LOCK_FOR_UPDATE, (user,)).fetchone()
    state = LockState(user) if row is None else _lock_from_row(row)
    new = next_failure_state(state, now, rule)
    if new is not state:
        conn.execute(
            _UPSERT_FAILURE,
            (user, new.failures, new.locked_until, new.last_failure_at, new.total_failures),
        )
    return new


def _lock_from_row(row: tuple[Any, ...]) -> LockState:
    user, failures, locked_until, last_failure_at, last_success_at, total = row
    return LockState(
        user, int(failures), locked_until, last_failure_at, last_success_at, int(total or 0)
    )


def _settings_from_row(user: str, row: tuple[Any, ...]) -> UserSettings:
    preferred, notice, status, until, reason, first_seen_at, grace_logins = row
    return UserSettings(
        user,
        preferred,
        notice,
        status=status,
        status_until=until,
        status_reason=reason,
        first_seen_at=first_seen_at,
        grace_logins=int(grace_logins or 0),
    )


def _login_state_params(
    user: str,
    now: float,
    user_since: float | None,
    source: str | None,
    source_since: float | None,
    device: DeviceRef | None,
) -> dict[str, object]:
    return {
        "user": user,
        "now": now,
        "ukey": user_failures_key(user) if user_since is not None else None,
        "usince": user_since,
        "skey": source if source_since is not None else None,
        "ssince": source_since,
        "device": device.station if device is not None else None,
        "dclient": device.client if device is not None else None,
        "dnas": device.nas_id if device is not None else None,
    }


def _login_state_from_row(
    user: str,
    device: DeviceRef | None,
    row: Sequence[Any],
    pending_user: int = 0,
    pending_source: int = 0,
) -> LoginState:
    failures, locked_until, last_failure, last_success = row[:4]
    lock = (
        LockState(user)
        if failures is None
        else LockState(
            user, int(failures), locked_until, last_failure, last_success, int(row[11] or 0)
        )
    )
    settings = UserSettings(user) if failures is None else _settings_from_row(user, row[4:11])
    user_count, user_last, source_count, source_last, remembered, expires = row[12:18]
    return LoginState(
        lock,
        settings,
        FailureWindow(int(user_count), user_last),
        FailureWindow(int(source_count), source_last),
        None
        if remembered is None or device is None
        else TrustedDevice(user, device.station, device.client, device.nas_id, remembered, expires),
        pending_user=int(pending_user),
        pending_source=int(pending_source),
    )


def _connection_settings(
    dsn: str, password: str | None, connect_timeout: float
) -> tuple[dict[str, Any], str]:
    """The keyword arguments of every connection, and a name for messages (no password).

    The DSN's own settings are kept, except the password (``password`` wins when given) and
    the connect timeout (the constructor's). Ours: autocommit (transactions are explicit),
    UTF-8, the lock and idle-in-transaction timeouts (before the DSN's ``options``, which may
    override them), and a TCP user timeout so a peer that vanished fails a call, not hangs it.

    A database on another machine is reached over TLS with its certificate checked
    (``sslmode=verify-full``) unless the DSN (or ``PGSSLMODE``) says otherwise: libpq's own
    default, ``prefer``, falls back to clear text when anyone between the nodes and the
    database says so, and never checks who answered.
    """
    try:
        params: dict[str, Any] = dict(conninfo_to_dict(dsn))
    except psycopg.Error as e:
        raise StoreError(
            f"the PostgreSQL connection string is not valid: {_redact(_describe(e))}"
        ) from None
    if password is not None:
        params["password"] = password
    params["connect_timeout"] = str(max(2, math.ceil(connect_timeout)))
    params.setdefault("tcp_user_timeout", str(max(1000, int(connect_timeout * 1000))))
    params.setdefault("fallback_application_name", "radmfa")
    params["client_encoding"] = "UTF8"
    ours = (
        f"-c lock_timeout={LOCK_TIMEOUT_MS} "
        f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT_MS}"
    )
    params["options"] = f"{ours} {params['options']}" if params.get("options") else ours
    if "sslmode" not in params and "PGSSLMODE" not in os.environ and _remote(params):
        params["sslmode"] = "verify-full"
    params["autocommit"] = True
    host = str(params.get("host") or params.get("hostaddr") or "the local socket")
    port = str(params.get("port") or "5432")
    dbname = str(params.get("dbname") or params.get("user") or "(default)")
    return params, f"PostgreSQL database {dbname!r} on {host}:{port}"


def _remote(params: dict[str, Any]) -> bool:
    """Whether a connection may leave this machine: a host that is not a unix socket
    directory, ``localhost`` or a loopback address (without a host: the local socket)."""
    for host in str(params.get("hostaddr") or params.get("host") or "").split(","):
        host = host.strip()
        if not host or host.startswith(("/", "@")) or host.lower() == "localhost":
            continue
        try:
            if ipaddress.ip_address(host).is_loopback:
                continue
        except ValueError:
            pass
        return True
    return False


def _describe(e: BaseException) -> str:
    """A driver error on one line: the server's message, or libpq's."""
    diag = getattr(e, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or str(e) or type(e).__name__
    return " ".join(text.split())


def _redact(text: str) -> str:
    """libpq quotes pieces of a connection string it cannot parse; one may be a password."""
    return re.sub(r'"[^"]*"', '"..."', text)


def describe_dsn(dsn: str) -> str:
    """A connection string as messages name it: the database, host and port, never the
    password (or the string itself when libpq cannot read it)."""
    try:
        return _connection_settings(dsn, None, 5.0)[1]
    except StoreError:
        return "a PostgreSQL database (the dsn is not valid)"
