"""The ``store`` section: where state lives (SQLite, or PostgreSQL shared by several nodes)
and the key that seals token secrets in it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from radmfa.config.credentials import read_text_secret
from radmfa.config.load import Section

__all__ = ["STORE_ENGINES", "STORE_KEYS", "StoreConfig", "parse_store"]

STORE_KEYS = (
    "engine",
    "path",
    "dsn",
    "password_file",
    "password_credential",
    "pool_size",
    "key_file",
)
STORE_ENGINES = ("sqlite", "postgresql")
#: Keys that only mean something for one engine.
_POSTGRES_ONLY = ("dsn", "password_file", "password_credential", "pool_size")


@dataclass(frozen=True)
class StoreConfig:
    path: str = "/var/lib/radmfa/radmfa.sqlite3"
    key_file: str = "/var/lib/radmfa/secret.key"
    #: "sqlite" (one node, the default) or "postgresql" (any number of nodes, one database).
    engine: Literal["sqlite", "postgresql"] = "sqlite"
    #: libpq connection string (``host=... dbname=... user=... sslmode=verify-full``).
    dsn: str | None = None
    #: From password_file / password_credential; never in a repr.
    password: str | None = field(default=None, repr=False)
    #: Database connections per process.
    pool_size: int = 8


def parse_store(s: Section) -> StoreConfig:
    d = StoreConfig()
    engine = s.get_choice("engine", d.engine, STORE_ENGINES, fold=str.lower)
    key_file = s.get_path("key_file", d.key_file)
    if engine == "sqlite":
        for key in _POSTGRES_ONLY:
            if key in s:
                s.error(key, "is only used with engine: postgresql")
        path = s.get_path("path", d.path)
        if path == key_file:
            s.error("key_file", "must be a separate file from the database (store.path)")
        return StoreConfig(engine="sqlite", path=path, key_file=key_file)

    if "path" in s:
        s.error("path", "is only used with engine: sqlite (PostgreSQL is reached by dsn)")
    dsn = s.get_str("dsn", None, secret=True)
    if "dsn" not in s:
        s.error("dsn", "missing: engine postgresql needs a dsn, e.g. \"host=db1 dbname=radmfa "
                "user=radmfa sslmode=verify-full\"")  # fmt: skip
    elif dsn is not None:
        problem = _dsn_problem(dsn)
        if problem is not None:
            s.error("dsn", problem)
    sources = [key for key in ("password_file", "password_credential") if key in s]
    password = None
    if len(sources) > 1:
        s.error(sources[1], f"give {sources[0]} or {sources[1]}, not both")
    elif sources:
        password = read_text_secret(s, sources[0])
        if password is not None:
            password = password.rstrip("\r\n")
    return StoreConfig(
        engine="postgresql",
        key_file=key_file,
        dsn=dsn,
        password=password,
        pool_size=s.get_int("pool_size", d.pool_size, 1, 256),
    )


def _dsn_problem(dsn: str) -> str | None:
    """Why libpq would refuse this connection string (without echoing it: it may hold a
    password), or None."""
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return None
    try:
        conninfo_to_dict(dsn)
    except Exception:  # psycopg.ProgrammingError: libpq's own parser refused it
        return (
            "is not a valid libpq connection string (key=value pairs separated by spaces, "
            "or a postgresql:// URI)"
        )
    return None
