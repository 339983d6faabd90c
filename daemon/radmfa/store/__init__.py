"""Persistent state behind one interface: tokens, lockout counters, challenge sessions.

``open_store`` builds the configured engine; :class:`radmfa.store.memory.MemoryStore` is the
fake for unit tests and is deliberately not re-exported here.
"""

from __future__ import annotations

from radmfa.config import StoreConfig
from radmfa.store.base import ChallengeRecord, LockState, Store, StoreError, TokenRecord
from radmfa.store.crypto import KeyFileError, SecretBox, SecretBoxError
from radmfa.store.sqlite import SqliteStore

__all__ = [
    "ChallengeRecord",
    "KeyFileError",
    "LockState",
    "SecretBox",
    "SecretBoxError",
    "SqliteStore",
    "Store",
    "StoreError",
    "TokenRecord",
    "describe",
    "open_store",
]


def describe(config: StoreConfig) -> str:
    """The store for messages: the SQLite file, or the PostgreSQL host and database (never
    the connection string, which may hold a password)."""
    if config.engine == "sqlite":
        return config.path
    from radmfa.store.postgres import describe_dsn

    return describe_dsn(config.dsn or "")


def open_store(config: StoreConfig) -> Store:
    """Load (or create) the key file, then open the database (SQLite or PostgreSQL),
    migrating it if needed.

    Every failure, key file problems included, is a :class:`StoreError` whose message says
    what to do (for example ``run: chmod 600 /var/lib/radmfa/secret.key``).
    """
    try:
        box = SecretBox.from_key_file(config.key_file)
    except SecretBoxError as e:
        raise StoreError(str(e)) from e
    if config.engine == "postgresql":
        from radmfa.store.postgres import PostgresStore  # psycopg only where it is used

        assert config.dsn is not None
        return PostgresStore(config.dsn, box, pool_size=config.pool_size, password=config.password)
    return SqliteStore(config.path, box)
