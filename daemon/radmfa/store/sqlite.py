"""The default engine: one SQLite file, safe across threads, processes and daemons on one host.

Every write runs in ``BEGIN IMMEDIATE`` (take the write lock first, wait up to the busy timeout
in short steps: :mod:`radmfa.store.busy`)
so read-then-write sequences never race and never hit WAL snapshot conflicts. Each thread gets
its own connection, because the daemon calls the store from a thread pool. Token secrets are
sealed with :class:`~radmfa.store.crypto.SecretBox` before they reach the file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

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
from radmfa.store.busy import PatientConnection
from radmfa.store.crypto import SecretBox, SecretBoxError, token_secret_aad
from radmfa.store.schema.sqlite import MIGRATIONS, SCHEMA_VERSION

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SqliteStore", "next_failure_state"]

BUSY_TIMEOUT_MS = 5000

# Statements spelled out in full (no string building), so every query is a reviewable literal.
_INSERT_TOKEN = (
    "INSERT INTO tokens (token_id, username, type, secret_blob, digits, algorithm, period, "
    "created_at, last_step, description) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_ALL_TOKENS = (
    "SELECT token_id, username, type, secret_blob, digits, algorithm, period, created_at, "
    "last_step, description FROM tokens ORDER BY username, created_at, token_id"
)
#: Decrypted secrets kept at most, for the users seen most recently (~300 bytes each with the
#: key), so memory does not grow with the number of enrolled users.
_MAX_OPENED = 10_000
_forks = [0]


def _count_fork() -> None:
    _forks[0] += 1


os.register_at_fork(after_in_child=_count_fork)


def _forks_seen() -> int:
    """How many forks led to this process since the module was loaded (0 in the parent)."""
    return _forks[0]


_ADVANCE_STEP = (
    "UPDATE tokens SET last_step = ? WHERE token_id = ? AND (last_step IS NULL OR last_step < ?)"
)
_SELECT_USER_TOKENS = (
    "SELECT token_id, username, type, secret_blob, digits, algorithm, period, created_at, "
    "last_step, description FROM tokens WHERE username = ? ORDER BY created_at, token_id"
)
_SELECT_USER_TYPE_TOKENS = (
    "SELECT token_id, username, type, secret_blob, digits, algorithm, period, created_at, "
    "last_step, description FROM tokens WHERE username = ? AND type = ?"
)
_SELECT_LOCK = (
    "SELECT username, failures, locked_until, last_failure_at, last_success_at, total_failures "
    "FROM users WHERE username = ?"
)
_UPSERT_FAILURE = (
    "INSERT INTO users (username, failures, locked_until, last_failure_at, total_failures) "
    "VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (username) DO UPDATE SET failures = excluded.failures, "
    "locked_until = excluded.locked_until, last_failure_at = excluded.last_failure_at, "
    "total_failures = excluded.total_failures"
)
_UPSERT_SUCCESS = (
    "INSERT INTO users (username, failures, locked_until, last_success_at) "
    "VALUES (?, 0, NULL, ?) "
    "ON CONFLICT (username) DO UPDATE SET failures = 0, locked_until = NULL, total_failures = 0, "
    "last_success_at = excluded.last_success_at"
)
#: A success ends an attempt: clears failure counts that exist (no row for a user who never
#: failed, so a login's success writes nothing to users in the common case).
_CLEAR_FAILURES = (
    "UPDATE users SET failures = 0, locked_until = NULL, total_failures = 0, "
    "last_success_at = ? WHERE username = ? AND (failures > 0 OR total_failures > 0 "
    "OR locked_until IS NOT NULL)"
)
#: Whether this very request is known (its failed flag), and the attempts pending for the
#: user and for the source, in one statement.
_ATTEMPTS_NOW = (
    "SELECT (SELECT failed FROM attempts WHERE username = :user AND attempt_id = :id "
    "        AND expires_at > :now), "
    "       (SELECT COUNT(*) FROM attempts WHERE username = :user AND failed = 0 "
    "        AND expires_at > :now), "
    "       (SELECT COUNT(*) FROM attempts WHERE source = :source AND failed = 0 "
    "        AND expires_at > :now)"
)
_RESERVE_ATTEMPT = (
    "INSERT OR REPLACE INTO attempts (username, attempt_id, source, expires_at, failed) "
    "VALUES (?, ?, ?, ?, 0)"
)
_FAIL_ATTEMPT = (
    "UPDATE attempts SET failed = 1, expires_at = ? WHERE username = ? AND attempt_id = ?"
)
_FORGET_ATTEMPT = "DELETE FROM attempts WHERE username = ? AND attempt_id = ?"
_PURGE_ATTEMPTS = (
    "DELETE FROM attempts WHERE (username, attempt_id) IN "
    "(SELECT username, attempt_id FROM attempts WHERE expires_at <= ? LIMIT ?)"
)
#: Attempt rows past their lease deleted per transaction.
ATTEMPTS_PURGE_BATCH = 2000
_INSERT_CHALLENGE = (
    "INSERT INTO challenges (state_id, username, client_name, client_address, expires_at, "
    "created_at, factor, token_id, code_hash, phase, started_at, rule) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_TAKE_CHALLENGE = (
    "DELETE FROM challenges WHERE state_id = ? "
    "RETURNING state_id, username, client_name, client_address, expires_at, created_at, "
    "factor, token_id, code_hash, phase, started_at, rule"
)
_SELECT_CHALLENGE = (
    "SELECT state_id, username, client_name, client_address, expires_at, created_at, "
    "factor, token_id, code_hash, phase, started_at, rule FROM challenges WHERE state_id = ?"
)
_SELECT_SETTINGS = (
    "SELECT preferred, notice, status, status_until, status_reason, first_seen_at, "
    "grace_logins FROM users WHERE username = ?"
)
#: Store.login_state in one statement: the users row (if any) and four indexed subqueries.
#: A key that cannot exist ("", or NULL) switches a part off.
_LOGIN_STATE = (
    "SELECT u.failures, u.locked_until, u.last_failure_at, u.last_success_at, u.preferred, "
    "u.notice, u.status, u.status_until, u.status_reason, u.first_seen_at, u.grace_logins, "
    "u.total_failures, "
    "(SELECT COUNT(*) FROM failures WHERE key = :ukey AND at >= :usince), "
    "(SELECT MAX(at) FROM failures WHERE key = :ukey AND at >= :usince), "
    "(SELECT COUNT(*) FROM failures WHERE key = :skey AND at >= :ssince), "
    "(SELECT MAX(at) FROM failures WHERE key = :skey AND at >= :ssince), "
    "d.remembered_at, d.expires_at "
    "FROM (SELECT 1) "
    "LEFT JOIN users u ON u.username = :user "
    "LEFT JOIN devices d ON d.username = :user AND d.device = :device AND d.client = :dclient "
    "AND d.nas_id = :dnas AND d.expires_at > :now"
)
_AUDIT_COLUMNS = (
    "at, kind, user, reason, outcome, client, src, nas_id, station, method, factor, "
    "trusted_device, rule, latency_ms, actor, action, before, after"
)
_INSERT_AUDIT = (
    "INSERT INTO audit (at, kind, username, reason, outcome, client, src, nas_id, station, method, "
    "factor, trusted_device, rule, latency_ms, actor, action, before, after) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: Every filter is in the statement; a None parameter switches its condition off.
_QUERY_AUDIT = (
    "SELECT id, at, kind, username, reason, outcome, client, src, nas_id, station, method, factor, "
    "trusted_device, rule, latency_ms, actor, action, before, after FROM audit "
    "WHERE (:user IS NULL OR username = :user) "
    "AND (:since IS NULL OR at >= :since) "
    "AND (:until IS NULL OR at < :until) "
    "AND (:kind IS NULL OR kind = :kind) "
    "AND (:outcome IS NULL OR (kind = 'auth' AND outcome = :outcome)) "
    "AND (:reason IS NULL OR (kind = 'auth' AND reason = :reason) "
    "     OR (kind <> 'auth' AND instr(lower(coalesce(reason, '')), lower(:reason)) > 0)) "
    "ORDER BY at DESC, id DESC LIMIT :limit"
)
_COUNT_LOCKED = "SELECT COUNT(*) FROM users WHERE locked_until > ?"
#: Users rows that hold nothing (:func:`radmfa.store.base.idle_user`), a batch at a time.
_DELETE_IDLE_USERS = (
    "DELETE FROM users WHERE username IN (SELECT u.username FROM users u "
    "WHERE ((u.failures = 0 AND u.total_failures = 0 AND u.locked_until IS NULL) "
    "       OR (u.last_success_at IS NULL AND u.last_failure_at < :stale "
    "           AND (u.locked_until IS NULL OR u.locked_until <= :now))) "
    "AND u.status = 'enabled' "
    "AND u.status_until IS NULL AND u.status_reason IS NULL AND u.preferred IS NULL "
    "AND u.notice IS NULL AND u.first_seen_at IS NULL AND u.grace_logins = 0 "
    "AND NOT EXISTS (SELECT 1 FROM tokens t WHERE t.username = u.username) LIMIT :batch)"
)
_SELECT_RECENT_SENDS = (
    "SELECT sent_at FROM sends WHERE username = ? AND channel = ? AND sent_at > ?"
)
#: The n-th most recent send of a channel within the window (OFFSET n - 1), for the total cap.
_SELECT_NTH_SEND = (
    "SELECT sent_at FROM sends WHERE channel = ? AND sent_at > ? "
    "ORDER BY sent_at DESC LIMIT 1 OFFSET ?"
)
#: A user's challenges beyond the newest ``max_open`` (by created_at, then the order stored).
_DROP_OLDEST_CHALLENGES = (
    "DELETE FROM challenges WHERE rowid IN (SELECT rowid FROM challenges WHERE username = ? "
    "ORDER BY created_at DESC, rowid DESC LIMIT -1 OFFSET ?)"
)

# DELETE ... RETURNING arrived in SQLite 3.35.0.
_HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)


class SqliteStore:
    """:class:`~radmfa.store.base.Store` on a SQLite file (WAL, one connection per thread)."""

    def __init__(self, path: str, box: SecretBox) -> None:
        if not path or path == ":memory:" or path.startswith("file:"):
            raise StoreError(
                f"SQLite store needs a file path, got {path!r} (each thread opens its own "
                "connection, so in-memory databases cannot be shared)"
            )
        self.path = os.path.abspath(path)
        self._box = box
        self._pid = os.getpid()
        self._forks = _forks_seen()
        self._local = threading.local()
        #: Decrypted token secrets by (token id, user, sealed blob): a login reads the sealed
        #: secret every time, and an unchanged row need not be opened again (a changed one is,
        #: so tampering is still caught by the AEAD check).
        self._opened: dict[tuple[str, str, bytes], bytes] = {}
        self._lock = threading.Lock()
        #: Every open connection with the thread that owns it, so close() can reach them all.
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._closed = False
        self._use_returning = _HAS_RETURNING
        #: The schema version found when this store was opened, before migrating it.
        self.schema_at_open = 0
        self._create_file()
        self._migrate()

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    # -- connections and transactions -------------------------------------------------------

    def _create_file(self) -> None:
        """Create the directory (0700) and an empty database file (0600) if missing.

        SQLite gives the -wal and -shm files the mode of the database file, so creating the
        file ourselves keeps all three private whatever the process umask is.
        """
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            return
        except OSError as e:
            raise StoreError(f"cannot create database {self.path}: {e.strerror}") from None
        os.close(fd)

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        if _forks_seen() != self._forks:  # a counter, not getpid(): no syscall per query
            raise StoreError(
                f"store {self.path} was opened in process {self._pid}; open a new store in "
                "each process (SQLite connections must not cross fork)"
            )
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _connect(self) -> sqlite3.Connection:
        try:
            # isolation_level=None: no implicit transactions; we issue BEGIN/COMMIT ourselves.
            # check_same_thread=False only so close() may close other threads' connections.
            conn = sqlite3.connect(
                self.path,
                timeout=0,  # PatientConnection waits for the lock instead, in shorter steps
                isolation_level=None,
                check_same_thread=False,
                factory=PatientConnection,
            )
        except sqlite3.Error as e:
            raise StoreError(f"cannot open database {self.path}: {e}") from e
        try:
            conn.patience = BUSY_TIMEOUT_MS / 1000  # type: ignore[attr-defined]
            conn.execute("PRAGMA busy_timeout = 0")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"database {self.path} refused WAL journal mode (got {mode!r}); "
                    "is it on a network file system?"
                )
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as e:
            conn.close()
            raise StoreError(f"cannot open database {self.path}: {e}") from e
        except StoreError:
            conn.close()
            raise
        with self._lock:
            if self._closed:
                conn.close()
                raise StoreError(f"store {self.path} is closed")
            # Threads come and go in a pool: close what finished threads left behind.
            orphans = [c for t, c in self._connections if not t.is_alive()]
            self._connections = [(t, c) for t, c in self._connections if t.is_alive()]
            self._connections.append((threading.current_thread(), conn))
        for orphan in orphans:
            with contextlib.suppress(sqlite3.Error):
                orphan.close()
        return conn

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction; sqlite3 errors become StoreError naming ``what``."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            raise StoreError(f"{what} failed on {self.path}: {e}") from e

    def _rows(self, sql: str, params: Any, what: str) -> list[Any]:
        """One autocommit statement's rows: :meth:`_read` without the context manager, for
        the statements every login runs."""
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"{what} failed on {self.path}: {e}") from e

    @contextlib.contextmanager
    def _read(self, what: str) -> Iterator[sqlite3.Connection]:
        """Single statements in autocommit mode; sqlite3 errors become StoreError."""
        conn = self._conn()
        try:
            yield conn
        except sqlite3.Error as e:
            raise StoreError(f"{what} failed on {self.path}: {e}") from e

    def _migrate(self) -> None:
        """Bring the schema to :data:`SCHEMA_VERSION` in one transaction; refuse newer DBs."""
        with self._write("schema migration") as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)")
            current = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
            self.schema_at_open = int(current)
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"database {self.path} has schema version {current}, but this radmfa only "
                    f"knows versions up to {SCHEMA_VERSION}; upgrade radmfa (or restore a "
                    "backup made by this version)"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version - 1]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    def schema_version(self) -> int:
        with self._read("reading the schema version") as conn:
            return int(conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0])

    def close(self) -> None:
        """Close every connection this store opened, in any thread. Call at shutdown only."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for _, conn in connections:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

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
        try:
            with self._write(what) as conn:
                # The stored secrets are sealed with random nonces: compare them opened, inside
                # this transaction, so a concurrent import cannot add the same one meanwhile.
                mine = [
                    self._token_from_row(row)
                    for user, type_ in sorted({(t.user, t.type) for t in tokens})
                    for row in conn.execute(_SELECT_USER_TYPE_TOKENS, (user, type_))
                ]
                new, skipped = split_known_secrets(mine, tokens)
                conn.executemany(_INSERT_TOKEN, self._token_rows(new))
        except StoreError as e:
            if isinstance(e.__cause__, sqlite3.IntegrityError):
                raise StoreError(f"{what}: a token id already exists") from e.__cause__
            raise
        return skipped

    def list_tokens(self, user: str | None = None) -> list[TokenRecord]:
        if user is None:
            rows = self._rows(_SELECT_ALL_TOKENS, (), "listing tokens")
        else:
            rows = self._rows(_SELECT_USER_TOKENS, (user,), "listing tokens")
        return [self._token_from_row(row) for row in rows]

    def _token_from_row(self, row: tuple) -> TokenRecord:
        token_id, user, type_, blob, digits, algorithm, period, created_at, last_step, desc = row
        sealed = bytes(blob)
        secret = self._opened.get((token_id, user, sealed))
        if secret is None:
            try:
                secret = self._box.open(sealed, token_secret_aad(user, token_id))
            except SecretBoxError as e:
                raise StoreError(
                    f"cannot decrypt the secret of token {token_id!r} of user {user!r} in "
                    f"{self.path}: {e}"
                ) from e
            if len(self._opened) >= _MAX_OPENED:
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
        with self._write(f"removing tokens of {user!r}") as conn:
            if token_id is None:
                cur = conn.execute("DELETE FROM tokens WHERE username = ?", (user,))
            else:
                cur = conn.execute(
                    "DELETE FROM tokens WHERE username = ? AND token_id = ?", (user, token_id)
                )
            return cur.rowcount

    def advance_step(self, token_id: str, step: int) -> bool:
        # One statement in autocommit mode is its own transaction: atomic, and cheaper than
        # BEGIN IMMEDIATE ... COMMIT on the hottest write path (every accepted code).
        try:
            cur = self._conn().execute(_ADVANCE_STEP, (step, token_id, step))
        except sqlite3.Error as e:
            raise StoreError(
                f"advancing the step of token {token_id!r} failed on {self.path}: {e}"
            ) from e
        # execute() returns after the implicit commit: a failed commit raises, never accepts.
        return cur.rowcount == 1

    def replace_tokens(self, user: str, type: str, tokens: Sequence[TokenRecord]) -> int:
        rows = self._token_rows(tokens)
        what = f"replacing the {type} tokens of {user!r}"
        try:
            with self._write(what) as conn:
                removed = conn.execute(
                    "DELETE FROM tokens WHERE username = ? AND type = ?", (user, type)
                ).rowcount
                conn.executemany(_INSERT_TOKEN, rows)
        except StoreError as e:
            if isinstance(e.__cause__, sqlite3.IntegrityError):
                raise StoreError(f"{what}: a token id already exists") from e.__cause__
            raise
        return removed

    # -- lockout ----------------------------------------------------------------------------

    @staticmethod
    def _lock_from_row(row: tuple) -> LockState:
        user, failures, locked_until, last_failure_at, last_success_at, total = row
        return LockState(
            user, failures, locked_until, last_failure_at, last_success_at, int(total or 0)
        )

    def lock_state(self, user: str) -> LockState:
        with self._read(f"reading the lock state of {user!r}") as conn:
            row = conn.execute(_SELECT_LOCK, (user,)).fetchone()
        return LockState(user) if row is None else self._lock_from_row(row)

    def record_failure(
        self, user: str, now: float, max_failures: int, lock_seconds: float, max_total: int = 0
    ) -> LockState:
        rule = LockoutRule(max_failures, lock_seconds, max_total)  # refuses max_failures < 1
        with self._write(f"recording a failure for {user!r}") as conn:
            return self._count_failure(conn, user, now, rule)

    def _count_failure(
        self, conn: sqlite3.Connection, user: str, now: float, rule: LockoutRule
    ) -> LockState:
        row = conn.execute(_SELECT_LOCK, (user,)).fetchone()
        state = LockState(user) if row is None else self._lock_from_row(row)
        new = next_failure_state(state, now, rule)
        if new is not state:
            conn.execute(
                _UPSERT_FAILURE,
                (user, new.failures, new.locked_until, new.last_failure_at, new.total_failures),
            )
        return new

    def record_success(self, user: str, now: float) -> None:
        with self._write(f"recording a success for {user!r}") as conn:
            conn.execute(_UPSERT_SUCCESS, (user, now))

    def unlock(self, user: str) -> bool:
        with self._write(f"unlocking {user!r}") as conn:
            cur = conn.execute(
                "UPDATE users SET failures = 0, locked_until = NULL, total_failures = 0 "
                "WHERE username = ? AND (failures > 0 OR locked_until IS NOT NULL "
                "OR total_failures > 0)",
                (user,),
            )
            return cur.rowcount == 1

    def known_users(self) -> list[str]:
        with self._read("listing users") as conn:
            rows = conn.execute(
                "SELECT username FROM tokens UNION SELECT username FROM users ORDER BY username"
            ).fetchall()
        return [row[0] for row in rows]

    # -- per-user settings ------------------------------------------------------------------

    def user_settings(self, user: str) -> UserSettings:
        with self._read(f"reading the settings of {user!r}") as conn:
            row = conn.execute(_SELECT_SETTINGS, (user,)).fetchone()
        return UserSettings(user) if row is None else _settings_from_row(user, row)

    def set_preferred(self, user: str, factor: str | None) -> None:
        with self._write(f"setting the preferred factor of {user!r}") as conn:
            conn.execute(
                "INSERT INTO users (username, preferred) VALUES (?, ?) "
                "ON CONFLICT (username) DO UPDATE SET preferred = excluded.preferred",
                (user, factor),
            )

    def set_notice(self, user: str, notice: str | None) -> None:
        with self._write(f"setting a notice for {user!r}") as conn:
            conn.execute(
                "INSERT INTO users (username, notice) VALUES (?, ?) "
                "ON CONFLICT (username) DO UPDATE SET notice = excluded.notice",
                (user, notice),
            )

    def take_notice(self, user: str) -> str | None:
        with self._write(f"taking the notice of {user!r}") as conn:
            row = conn.execute("SELECT notice FROM users WHERE username = ?", (user,)).fetchone()
            if row is None or row[0] is None:
                return None
            conn.execute("UPDATE users SET notice = NULL WHERE username = ?", (user,))
            return str(row[0])

    def set_status(
        self, user: str, status: str, until: float | None, reason: str | None
    ) -> UserSettings:
        if status not in USER_STATUSES:
            raise ValueError(f"unknown user status {status!r}")
        with self._write(f"setting the status of {user!r}") as conn:
            row = conn.execute(_SELECT_SETTINGS, (user,)).fetchone()
            conn.execute(
                "INSERT INTO users (username, status, status_until, status_reason) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (username) DO UPDATE SET "
                "status = excluded.status, status_until = excluded.status_until, "
                "status_reason = excluded.status_reason",
                (user, status, until, reason),
            )
        return UserSettings(user) if row is None else _settings_from_row(user, row)

    def note_grace_login(self, user: str, now: float) -> UserSettings:
        with self._write(f"counting a grace-period login of {user!r}") as conn:
            conn.execute(
                "INSERT INTO users (username, first_seen_at, grace_logins) VALUES (?, ?, 1) "
                "ON CONFLICT (username) DO UPDATE SET "
                "first_seen_at = coalesce(first_seen_at, excluded.first_seen_at), "
                "grace_logins = grace_logins + 1",
                (user, now),
            )
            row = conn.execute(_SELECT_SETTINGS, (user,)).fetchone()
        return _settings_from_row(user, row)

    def reset_user(self, user: str) -> tuple[int, int]:
        with self._write(f"resetting {user!r}") as conn:
            tokens = conn.execute("DELETE FROM tokens WHERE username = ?", (user,)).rowcount
            devices = conn.execute("DELETE FROM devices WHERE username = ?", (user,)).rowcount
            conn.execute(
                "UPDATE users SET preferred = NULL, first_seen_at = NULL, grace_logins = 0 "
                "WHERE username = ?",
                (user,),
            )
        return tokens, devices

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
        (row,) = self._rows(_LOGIN_STATE, params, f"reading the login state of {user!r}")
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
        # BEGIN IMMEDIATE: every writer of this file (threads, workers, daemons) waits for
        # the lock, so no other attempt is judged or finished between the read and the insert.
        with self._write(f"reserving an attempt of {user!r}") as conn:
            known, pending_user, pending_source = conn.execute(
                _ATTEMPTS_NOW, {"user": user, "id": attempt_id, "source": source, "now": now}
            ).fetchone()
            if known is not None:
                return AttemptStart(
                    None, duplicate=DUPLICATE_FAILED if known else DUPLICATE_IN_FLIGHT
                )
            params = _login_state_params(user, now, user_since, source, source_since, device)
            (row,) = conn.execute(_LOGIN_STATE, params).fetchall()
            state = _login_state_from_row(user, device, row, pending_user, pending_source)
            refusal = judge(state)
            if refusal is None:
                conn.execute(_RESERVE_ATTEMPT, (user, attempt_id, source, now + lease))
        return AttemptStart(state, refusal)

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
        with self._write(f"finishing an attempt of {user!r}") as conn:
            if result == ATTEMPT_FAILED:
                assert lockout is not None
                conn.execute(_FAIL_ATTEMPT, (now + FAILED_ATTEMPT_MEMORY, user, attempt_id))
                if failure_keys:
                    conn.executemany(
                        "INSERT INTO failures (key, at) VALUES (?, ?)",
                        [(key, now) for key in failure_keys],
                    )
                return self._count_failure(conn, user, now, lockout)
            conn.execute(_FORGET_ATTEMPT, (user, attempt_id))
            if result == ATTEMPT_SUCCEEDED:
                conn.execute(_CLEAR_FAILURES, (now, user))
                for key in clear_keys:
                    conn.execute("DELETE FROM failures WHERE key = ?", (key,))
        return None

    def end_attempts(self, ends: Sequence[AttemptEnd], now: float) -> None:
        if not ends:
            return
        with self._write(f"ending {len(ends)} attempt(s)") as conn:
            conn.executemany(_FORGET_ATTEMPT, [(end.user, end.attempt_id) for end in ends])
            succeeded = [end for end in ends if end.succeeded]
            if succeeded:
                conn.executemany(_CLEAR_FAILURES, [(now, end.user) for end in succeeded])
                keys = [(key,) for end in succeeded for key in end.clear_keys]
                if keys:
                    conn.executemany("DELETE FROM failures WHERE key = ?", keys)

    # -- trusted devices --------------------------------------------------------------------

    def remember_device(self, user: str, device: DeviceRef, now: float, expires_at: float) -> None:
        with self._read(f"remembering a device of {user!r}") as conn:
            conn.execute(
                "INSERT INTO devices (username, device, client, nas_id, remembered_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (username, device, client, nas_id) "
                "DO UPDATE SET remembered_at = excluded.remembered_at, "
                "expires_at = excluded.expires_at",
                (user, device.station, device.client, device.nas_id, now, expires_at),
            )

    def trusted_device(self, user: str, device: DeviceRef, now: float) -> TrustedDevice | None:
        with self._read(f"reading a device of {user!r}") as conn:
            row = conn.execute(
                "SELECT remembered_at, expires_at FROM devices WHERE username = ? AND device = ? "
                "AND client = ? AND nas_id = ? AND expires_at > ?",
                (user, device.station, device.client, device.nas_id, now),
            ).fetchone()
        if row is None:
            return None
        return TrustedDevice(user, device.station, device.client, device.nas_id, row[0], row[1])

    def list_devices(self, user: str | None, now: float) -> list[TrustedDevice]:
        with self._read("listing devices") as conn:
            rows = conn.execute(
                "SELECT username, device, client, nas_id, remembered_at, expires_at FROM devices "
                "WHERE (? IS NULL OR username = ?) AND expires_at > ? "
                "ORDER BY username, device, client, nas_id",
                (user, user, now),
            ).fetchall()
        return [TrustedDevice(*row) for row in rows]

    def revoke_devices(self, user: str, device: str | None = None) -> int:
        with self._read(f"revoking devices of {user!r}") as conn:
            cur = conn.execute(
                "DELETE FROM devices WHERE username = ? AND (? IS NULL OR device = ?)",
                (user, device, device),
            )
        return cur.rowcount

    # -- sliding-window throttles -----------------------------------------------------------

    def note_failures(self, keys: Sequence[str], now: float) -> None:
        with self._write("recording failures") as conn:
            conn.executemany(
                "INSERT INTO failures (key, at) VALUES (?, ?)", [(key, now) for key in keys]
            )

    def failure_window(self, key: str, since: float) -> FailureWindow:
        with self._read("reading failures") as conn:
            count, last = conn.execute(
                "SELECT COUNT(*), MAX(at) FROM failures WHERE key = ? AND at >= ?", (key, since)
            ).fetchone()
        return FailureWindow(int(count), last)

    def clear_failures(self, key: str) -> None:
        with self._read("clearing failures") as conn:
            conn.execute("DELETE FROM failures WHERE key = ?", (key,))

    # -- audit trail ------------------------------------------------------------------------

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        rows = [
            (
                e.at, e.kind, e.user, e.reason, e.outcome, e.client, e.src, e.nas_id, e.station,
                e.method, e.factor, int(e.trusted_device), e.rule, e.latency_ms, e.actor,
                e.action, e.before, e.after,
            )
            for e in events
        ]  # fmt: skip
        with self._write(f"appending {len(rows)} audit row(s)") as conn:
            conn.executemany(_INSERT_AUDIT, rows)

    def query_audit(self, query: AuditQuery) -> list[AuditEvent]:
        params = {
            "user": query.user,
            "since": query.since,
            "until": query.until,
            "kind": query.kind,
            "outcome": query.outcome,
            "reason": query.reason,
            "limit": -1 if query.limit is None else max(0, query.limit),
        }
        with self._read("reading the audit trail") as conn:
            rows = conn.execute(_QUERY_AUDIT, params).fetchall()
        events = []
        for row in reversed(rows):
            event_id, *values = row
            fields = dict(zip(_AUDIT_COLUMNS.split(", "), values, strict=True))
            fields["trusted_device"] = bool(fields["trusted_device"])
            events.append(AuditEvent(**fields, event_id=event_id))
        return events

    def prune_audit(self, before: float, limit: int) -> int:
        with self._write("pruning the audit trail") as conn:
            return conn.execute(
                "DELETE FROM audit WHERE id IN "
                "(SELECT id FROM audit WHERE at < ? ORDER BY at, id LIMIT ?)",
                (before, max(0, limit)),
            ).rowcount

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
        with self._write(f"reserving a {channel} send for {user!r}") as conn:
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
                conn.execute(
                    "INSERT INTO sends (username, channel, sent_at) VALUES (?, ?, ?)",
                    (user, channel, now),
                )
        return grant

    # -- challenges -------------------------------------------------------------------------

    def put_challenge(self, challenge: ChallengeRecord, max_open: int | None = None) -> None:
        try:
            with self._write(f"storing a challenge for {challenge.user!r}") as conn:
                conn.execute(
                    _INSERT_CHALLENGE,
                    (
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
                    ),
                )
                if max_open is not None:
                    conn.execute(_DROP_OLDEST_CHALLENGES, (challenge.user, max(1, max_open)))
        except StoreError as e:
            if isinstance(e.__cause__, sqlite3.IntegrityError):
                raise StoreError("a challenge with this state id already exists") from e.__cause__
            raise

    def take_challenge(self, state_id: bytes) -> ChallengeRecord | None:
        with self._write("taking a challenge") as conn:
            if self._use_returning:
                row = conn.execute(_TAKE_CHALLENGE, (state_id,)).fetchone()
            else:
                row = conn.execute(_SELECT_CHALLENGE, (state_id,)).fetchone()
                if row is not None:
                    conn.execute("DELETE FROM challenges WHERE state_id = ?", (state_id,))
        if row is None:
            return None
        state, user, client_name, client_address, expires_at, created_at = row[:6]
        factor, token_id, code_hash, phase, started_at, rule = row[6:]
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
        with self._write("purging expired challenges") as conn:
            conn.execute("DELETE FROM sends WHERE sent_at <= ?", (now - SEND_WINDOW,))
            conn.execute("DELETE FROM devices WHERE expires_at <= ?", (now,))
            if failures_before is not None:
                conn.execute("DELETE FROM failures WHERE at < ?", (failures_before,))
            conn.execute(
                _DELETE_IDLE_USERS,
                {"now": now, "stale": now - STALE_FAILURES, "batch": IDLE_USERS_BATCH},
            )
            purged = conn.execute("DELETE FROM challenges WHERE expires_at <= ?", (now,)).rowcount
        # Failed attempts live half a minute: after a guessing storm, one DELETE of them all
        # would hold the write lock that every login needs for a noticeable time.
        while True:
            with self._write("purging past attempts") as conn:
                gone = conn.execute(_PURGE_ATTEMPTS, (now, ATTEMPTS_PURGE_BATCH)).rowcount
            if gone < ATTEMPTS_PURGE_BATCH:
                return purged

    # -- metrics ----------------------------------------------------------------------------

    def count_locked(self, now: float) -> int:
        (row,) = self._rows(_COUNT_LOCKED, (now,), "counting locked users")
        return int(row[0])


def _settings_from_row(user: str, row: tuple) -> UserSettings:
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
    row: tuple,
    pending_user: int = 0,
    pending_source: int = 0,
) -> LoginState:
    failures, locked_until, last_failure, last_success = row[:4]
    lock = (
        LockState(user)
        if failures is None
        else LockState(user, failures, locked_until, last_failure, last_success, int(row[11] or 0))
    )
    settings = UserSettings(user) if failures is None else _settings_from_row(user, row[4:11])
    user_count, user_last, source_count, source_last, remembered, expires = row[12:]
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
