"""The SQLite engine: one file, safe across threads, processes and daemons on one host.

Every write transaction runs in ``BEGIN IMMEDIATE`` (take the write lock first, wait up to the
busy timeout in short steps: :mod:`radmfa.store.busy`), so read-then-write sequences never
race and never hit WAL snapshot conflicts; a write of one statement runs on its own
(autocommit), which is just as atomic and cheaper. Each thread gets its own connection,
because the daemon calls the store from a thread pool.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from radmfa.store.busy import PatientConnection, is_busy
from radmfa.store.engines.base import Params, Row, forks_seen
from radmfa.store.engines.dialect import Statement
from radmfa.store.model import StoreBusy, StoreError
from radmfa.store.schema.sqlite import MIGRATIONS, SCHEMA_VERSION

__all__ = ["BUSY_TIMEOUT_MS", "SqliteEngine", "SqliteTransaction"]

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000

# DELETE ... RETURNING arrived in SQLite 3.35.0.
_HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)


class SqliteTransaction:
    """Statements on one connection, in the transaction the engine opened."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, statement: Statement, params: Params = ()) -> None:
        self.conn.execute(statement.sqlite, params)

    def rowcount(self, statement: Statement, params: Params = ()) -> int:
        return self.conn.execute(statement.sqlite, params).rowcount

    def one(self, statement: Statement, params: Params = ()) -> Row | None:
        row: Row | None = self.conn.execute(statement.sqlite, params).fetchone()
        return row

    def all(self, statement: Statement, params: Params = ()) -> list[Row]:
        return self.conn.execute(statement.sqlite, params).fetchall()

    def many(self, statement: Statement, rows: Sequence[Params]) -> None:
        self.conn.executemany(statement.sqlite, rows)

    def lock(self, *keys: tuple[str, ...]) -> None:
        """Nothing to take: ``BEGIN IMMEDIATE`` holds the file's one write lock already, so
        no other writer (thread, process or daemon) runs until this transaction ends."""


class SqliteEngine:
    """A SQLite file in WAL mode, one connection per thread, migrated when opened."""

    duplicate_key: tuple[type[BaseException], ...] = (sqlite3.IntegrityError,)

    def __init__(self, path: str) -> None:
        if not path or path == ":memory:" or path.startswith("file:"):
            raise StoreError(
                f"SQLite store needs a file path, got {path!r} (each thread opens its own "
                "connection, so in-memory databases cannot be shared)"
            )
        self.path = os.path.abspath(path)
        self.name = self.path
        self.returning = _HAS_RETURNING
        self._pid = os.getpid()
        self._forks = forks_seen()
        self._local = threading.local()
        self._lock = threading.Lock()
        #: Every open connection with the thread that owns it, so close() can reach them all.
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._closed = False
        #: The schema version found when this store was opened, before migrating it.
        self.schema_at_open = 0
        self._create_file()
        self._migrate()

    # -- connections ------------------------------------------------------------------------

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

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        return self._tx().conn

    def forbid_waiting(self) -> None:
        """From now on this thread (the reactor's) never waits for SQLite: a statement or a
        ``BEGIN IMMEDIATE`` that finds another connection holding the lock raises
        :class:`StoreBusy` at once, after rolling back, and its connection leaves WAL
        checkpoints (an fsync) to the other threads' connections."""
        self._local.no_wait = True
        tx: SqliteTransaction | None = getattr(self._local, "tx", None)
        if tx is not None:
            self._never_wait(tx.conn)

    @staticmethod
    def _never_wait(conn: sqlite3.Connection) -> None:
        if isinstance(conn, PatientConnection):
            conn.patience = 0.0
        conn.execute("PRAGMA wal_autocheckpoint = 0")

    def checkpoint(self) -> None:
        """Copy the WAL back into the database file without waiting for anyone (PASSIVE):
        for the thread whose connection may block, when writers that may not (see
        :meth:`forbid_waiting`) leave checkpoints to others."""
        try:
            self._tx().conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"checkpointing {self.path} failed: {e}") from e

    def _error(self, what: str, error: sqlite3.Error) -> StoreError:
        """The StoreError for a failed statement: :class:`StoreBusy` on a thread that may
        not wait, when the lock was the problem."""
        if is_busy(error) and getattr(self._local, "no_wait", False):
            return StoreBusy(f"{what}: {self.path} is busy")
        return StoreError(f"{what} failed on {self.path}: {error}")

    def _tx(self) -> SqliteTransaction:
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        if forks_seen() != self._forks:
            raise StoreError(
                f"store {self.path} was opened in process {self._pid}; open a new store in "
                "each process (SQLite connections must not cross fork)"
            )
        tx: SqliteTransaction | None = getattr(self._local, "tx", None)
        if tx is None:
            tx = SqliteTransaction(self._connect())
            self._local.tx = tx
        return tx

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
            conn.patience = BUSY_TIMEOUT_MS / 1000
            conn.execute("PRAGMA busy_timeout = 0")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"database {self.path} refused WAL journal mode (got {mode!r}); "
                    "is it on a network file system?"
                )
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            if getattr(self._local, "no_wait", False):
                self._never_wait(conn)
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

    # -- statements and transactions --------------------------------------------------------

    def read(self, what: str, statement: Statement, params: Params = ()) -> list[Row]:
        try:
            return self._tx().conn.execute(statement.sqlite, params).fetchall()
        except sqlite3.Error as e:
            raise self._error(what, e) from e

    def write(
        self, what: str, statement: Statement, params: Params = (), *, retry: bool = True
    ) -> int:
        # One statement in autocommit mode is its own transaction: execute() returns after
        # the implicit commit, so a failed commit raises, never reports a change.
        try:
            return self._tx().conn.execute(statement.sqlite, params).rowcount
        except sqlite3.Error as e:
            raise self._error(what, e) from e

    def write_returning(
        self, what: str, statement: Statement, params: Params = (), *, retry: bool = True
    ) -> list[Row]:
        # Every row fetched: the statement (and its implicit commit) ends with the last one.
        return self.read(what, statement, params)

    def transaction(
        self, what: str, work: Callable[[SqliteTransaction], T], *, retry: bool = True
    ) -> T:
        """``work`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT``."""
        tx = self._tx()
        conn = tx.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(tx)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            raise self._error(what, e) from e

    # -- schema -----------------------------------------------------------------------------

    def _migrate(self) -> None:
        """Bring the schema to :data:`SCHEMA_VERSION` in one transaction; refuse newer DBs."""

        def upgrade(tx: SqliteTransaction) -> None:
            conn = tx.conn
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

        self.transaction("schema migration", upgrade)

    def schema_version(self) -> int:
        (row,) = self.read("reading the schema version", _SCHEMA_VERSION)
        return int(row[0])

    def close(self) -> None:
        """Close every connection this store opened, in any thread. Call at shutdown only."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for _, conn in connections:
            with contextlib.suppress(sqlite3.Error):
                conn.close()


_SCHEMA_VERSION = Statement("SELECT MAX(version) FROM schema_version")
