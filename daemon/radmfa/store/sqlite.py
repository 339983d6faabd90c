"""The default store: one SQLite file, safe across threads, processes and daemons on one host.

The queries are :class:`~radmfa.store.sql.SqlStore`'s, the connections, transactions
(``BEGIN IMMEDIATE`` around every read-judge-write) and migrations
:class:`~radmfa.store.engines.sqlite.SqliteEngine`'s. Token secrets are sealed with
:class:`~radmfa.store.crypto.SecretBox` before they reach the file.
"""

from __future__ import annotations

import sqlite3

from radmfa.store.crypto import SecretBox
from radmfa.store.engines.sqlite import SqliteEngine
from radmfa.store.rules import next_failure_state
from radmfa.store.schema.sqlite import MIGRATIONS, SCHEMA_VERSION
from radmfa.store.sql import SqlStore

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SqliteStore", "next_failure_state"]


class SqliteStore(SqlStore):
    """:class:`~radmfa.store.base.Store` on a SQLite file (WAL, one connection per thread)."""

    def __init__(self, path: str, box: SecretBox) -> None:
        engine = SqliteEngine(path)
        super().__init__(engine, box)
        self._sqlite = engine
        self.path = engine.path

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection."""
        return self._sqlite.connection()

    def forbid_waiting(self) -> None:
        """This thread (the reactor's) never waits for the file's lock: calls that find it
        taken raise :class:`~radmfa.store.base.StoreBusy` having done nothing (see
        :meth:`SqliteEngine.forbid_waiting`)."""
        self._sqlite.forbid_waiting()

    def checkpoint(self) -> None:
        """A PASSIVE WAL checkpoint, on a thread that may block (the store thread)."""
        self._sqlite.checkpoint()
