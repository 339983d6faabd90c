"""The shared store: one PostgreSQL database behind every radmfa node.

The queries are :class:`~radmfa.store.sql.SqlStore`'s, the same as on SQLite; the pool,
transactions, advisory locks, retries, migrations and the key check are
:class:`~radmfa.store.engines.postgres.PostgresEngine`'s. ``radmfa store copy`` fills an empty
database from a SQLite file (:meth:`PostgresStore.import_snapshot`).
"""

from __future__ import annotations

from collections.abc import Sequence

from radmfa.store import pg_import
from radmfa.store.crypto import SecretBox
from radmfa.store.engines.postgres import (
    PoolSettings,
    PostgresEngine,
    PostgresTransaction,
    _connection_settings,
    describe_dsn,
    lock_number,
)
from radmfa.store.model import AuditEvent, TokenRecord
from radmfa.store.snapshot import Snapshot, SnapshotCounts
from radmfa.store.sql import SqlStore

__all__ = ["PostgresStore", "_connection_settings", "describe_dsn", "lock_number"]


class PostgresStore(SqlStore):
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
        engine = PostgresEngine(dsn, box, PoolSettings(pool_size, connect_timeout), password)
        super().__init__(engine, box)
        self._postgres = engine
        self.name = engine.name

    def __repr__(self) -> str:
        return f"PostgresStore({self.name!r})"

    def import_snapshot(
        self, snapshot: Snapshot, notes: Sequence[AuditEvent] = ()
    ) -> SnapshotCounts:
        """Copy another store's ``snapshot`` into this one, which must hold no data, and
        append ``notes`` (admin rows about the copy), in one transaction: all of it or,
        whatever fails, nothing. Token secrets are sealed again with this store's key.
        Returns the rows copied per kind; :class:`StoreNotEmpty` when there was data."""

        def token_row(token: TokenRecord) -> tuple[object, ...]:
            return self._token_rows([token])[0]

        def work(tx: PostgresTransaction) -> SnapshotCounts:
            return pg_import.fill(tx.connection, snapshot, token_row, notes)

        # Never retried: the snapshot's rows can be read only once.
        return self._postgres.transaction(f"copying {snapshot.source}", work, retry=False)
