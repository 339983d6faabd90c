"""The PostgreSQL engine: one database behind every radmfa node.

The same queries as on SQLite (:mod:`radmfa.store.queries`), but many nodes write at once,
under PostgreSQL's READ COMMITTED (every statement sees what was committed when it began).
Where the SQLite engine gets atomicity from one write lock per file, the queries get it here
from:

- single conditional statements where one is enough: ``UPDATE ... WHERE`` for the replay
  check (``advance_step``), ``DELETE ... RETURNING`` for taking a State,
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
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from radmfa.store.crypto import SecretBox, SecretBoxError
from radmfa.store.engines.base import Params, Row, forks_seen
from radmfa.store.engines.dialect import Statement
from radmfa.store.model import StoreError
from radmfa.store.schema.postgres import MIGRATIONS, SCHEMA_VERSION

__all__ = [
    "MIGRATION_LOCK",
    "PoolSettings",
    "PostgresEngine",
    "PostgresTransaction",
    "describe_dsn",
    "lock_number",
]

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

_KEY_CHECK = "key_check"
_KEY_CHECK_PLAINTEXT = b"radmfa: the key file of this store"
_KEY_CHECK_AAD = b"radmfa/key-check/v1"

#: The pool warns once per connection attempt, and while the database is down every call
#: makes one: the callers report an outage themselves, one line when it starts and one when it
#: ends (:class:`radmfa.outage.Outage`). The pool's errors still get a line.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


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


class PostgresTransaction:
    """Statements on one pooled connection, in the transaction the engine opened."""

    __slots__ = ("connection",)

    def __init__(self, connection: Conn) -> None:
        self.connection = connection

    def execute(self, statement: Statement, params: Params = ()) -> None:
        self.connection.execute(statement.postgres, params)

    def rowcount(self, statement: Statement, params: Params = ()) -> int:
        return self.connection.execute(statement.postgres, params).rowcount

    def one(self, statement: Statement, params: Params = ()) -> Row | None:
        return self.connection.execute(statement.postgres, params).fetchone()

    def all(self, statement: Statement, params: Params = ()) -> list[Row]:
        return self.connection.execute(statement.postgres, params).fetchall()

    def many(self, statement: Statement, rows: Sequence[Params]) -> None:
        """One statement for each of ``rows`` (psycopg sends them in one pipeline)."""
        with self.connection.cursor() as cur:
            cur.executemany(statement.postgres, rows)

    def lock(self, *keys: tuple[str, ...]) -> None:
        """Take the transaction-scoped advisory locks of ``keys``, in the order of their
        numbers: two transactions that need some of the same locks wait for each other in one
        direction only, never in a circle."""
        self.connection.execute(_LOCKS, (sorted({lock_number(*key) for key in keys}),))


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """The connections of this process: at most ``size``; ``connect_timeout`` bounds both
    connecting and waiting for a pooled connection (a database that is down fails a call
    after that long)."""

    size: int = 8
    connect_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.size < 1:
            raise StoreError(f"a PostgreSQL store needs pool_size >= 1, got {self.size}")
        if not self.connect_timeout > 0:
            raise StoreError(f"connect_timeout must be positive, got {self.connect_timeout}")


class PostgresEngine:
    """A PostgreSQL database through a bounded pool of this process's connections.

    ``dsn`` is a libpq connection string or URI; ``password``, when given, is used instead of
    one in ``dsn``.

    Opening connects, creates or upgrades the schema (refusing one newer than this code) and
    checks the key: a database written with another key file than ``box``'s is refused.
    """

    duplicate_key: tuple[type[BaseException], ...] = (pg_errors.UniqueViolation,)
    returning = True

    def __init__(self, dsn: str, box: SecretBox, pool: PoolSettings, password: str | None) -> None:
        self._box = box
        self._timeout = float(pool.connect_timeout)
        self._kwargs, self.name = _connection_settings(dsn, password, self._timeout)
        self._forks = forks_seen()
        self._pid = os.getpid()
        self._closed = False
        #: When (monotonic) the pool last had no connection for a call: the database is
        #: down, and calls wait only :data:`DOWN_WAIT` for one until a connection is seen.
        self._down_at: float | None = None
        #: The schema version found when this store was opened, before migrating it.
        self.schema_at_open = 0
        self._migrate()
        self._pool: ConnectionPool[Conn] = ConnectionPool(
            kwargs=self._kwargs,
            min_size=1,
            max_size=pool.size,
            open=True,
            timeout=self._timeout,
            # The pool's reconnection attempts back off from 1 s, doubling; giving up after
            # the call timeout keeps the gap between attempts below it (and a new call
            # starts a fresh series), so the database is found again within a second or two
            # of its return instead of after a back-off grown to minutes.
            reconnect_timeout=self._timeout,
            name="radmfa-store",
        )

    # -- connections ------------------------------------------------------------------------

    def _usable(self) -> None:
        if self._closed:
            raise StoreError(f"store {self.name} is closed")
        if forks_seen() != self._forks:
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

    # -- statements and transactions --------------------------------------------------------

    def read(self, what: str, statement: Statement, params: Params = ()) -> list[Row]:
        """One read statement, outside a transaction (safe to retry)."""
        sql = statement.postgres
        return self._run(what, lambda conn: conn.execute(sql, params).fetchall(), transaction=False)

    def write(
        self, what: str, statement: Statement, params: Params = (), *, retry: bool = True
    ) -> int:
        """One write statement on its own (atomic by itself); its row count."""
        sql = statement.postgres
        return self._run(
            what, lambda conn: conn.execute(sql, params).rowcount, transaction=False, retry=retry
        )

    def write_returning(
        self, what: str, statement: Statement, params: Params = (), *, retry: bool = True
    ) -> list[Row]:
        """One write statement on its own, with the rows it returns."""
        sql = statement.postgres
        return self._run(
            what, lambda conn: conn.execute(sql, params).fetchall(), transaction=False, retry=retry
        )

    def transaction(
        self, what: str, work: Callable[[PostgresTransaction], T], *, retry: bool = True
    ) -> T:
        return self._run(what, lambda conn: work(PostgresTransaction(conn)), retry=retry)

    # -- opening ----------------------------------------------------------------------------

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
        (row,) = self.read("reading the schema version", _SCHEMA_VERSION)
        return int(row[0])

    def close(self) -> None:
        """Close the pool and every connection in it. Call at shutdown only."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._pool.close(timeout=self._timeout)


_SCHEMA_VERSION = Statement("SELECT MAX(version) FROM schema_version")


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
