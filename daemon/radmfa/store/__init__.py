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
    "open_store",
]


def open_store(config: StoreConfig) -> Store:
    """Load (or create) the key file, then open the SQLite database, migrating it if needed.

    Every failure, key file problems included, is a :class:`StoreError` whose message says
    what to do (for example ``run: chmod 600 /var/lib/radmfa/secret.key``).
    """
    try:
        box = SecretBox.from_key_file(config.key_file)
    except SecretBoxError as e:
        raise StoreError(str(e)) from e
    return SqliteStore(config.path, box)
