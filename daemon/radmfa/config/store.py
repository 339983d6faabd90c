"""The ``store`` section: the SQLite database and the key that seals token secrets in it."""

from __future__ import annotations

from dataclasses import dataclass

from radmfa.config.load import Section

__all__ = ["STORE_KEYS", "StoreConfig", "parse_store"]

STORE_KEYS = ("path", "key_file")


@dataclass(frozen=True)
class StoreConfig:
    path: str = "/var/lib/radmfa/radmfa.sqlite3"
    key_file: str = "/var/lib/radmfa/secret.key"


def parse_store(s: Section) -> StoreConfig:
    d = StoreConfig()
    store = StoreConfig(
        path=s.get_path("path", d.path), key_file=s.get_path("key_file", d.key_file)
    )
    if store.path == store.key_file:
        s.error("key_file", "must be a separate file from the database (store.path)")
    return store
