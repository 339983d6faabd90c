"""The PostgreSQL schema: versioned migrations, applied once per database by whichever node
opens it first (under an advisory lock, so nodes that start together never race).

Version 1 is the SQLite engine's schema as of its version 6, in one step: PostgreSQL arrived
after those migrations. The differences are PostgreSQL's, not the data's:

- ``username`` where SQLite said ``user`` (until its version 7 took this name too): ``user``
  is a reserved word in PostgreSQL, and unquoted it silently means the session's role
  (``WHERE user = 'alice'`` would compare the role name), a trap for every ad-hoc query.
- ``bytea`` for blobs, ``double precision`` for times (``locked_until`` may be +Infinity: a
  lock for good), ``boolean`` for flags, identity columns where SQLite has a rowid (the order
  challenges were stored in, audit event ids).
- The names users, tokens, stations and clients are kept in the ``C`` collation: they are
  compared and sorted byte by byte, as in SQLite, whatever the database's locale.
- ``meta`` holds the key check (:mod:`radmfa.store.engines.postgres`): proof that every
  node seals secrets with the same key file.

Append only: never edit a migration that has shipped.
"""

from __future__ import annotations

__all__ = ["DATA_TABLES", "MIGRATIONS", "PORTAL_TABLES", "SCHEMA_VERSION"]

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the schema of SQLite version 6, and the key check.
    (
        """
        CREATE TABLE meta (
            name  text PRIMARY KEY,
            value bytea NOT NULL
        )
        """,
        """
        CREATE TABLE tokens (
            token_id    text COLLATE "C" PRIMARY KEY,
            username    text COLLATE "C" NOT NULL,
            type        text NOT NULL,
            secret_blob bytea NOT NULL,
            digits      integer NOT NULL,
            algorithm   text NOT NULL,
            period      integer NOT NULL,
            created_at  double precision NOT NULL,
            last_step   bigint,
            description text NOT NULL DEFAULT ''
        )
        """,
        "CREATE INDEX tokens_by_user_type ON tokens (username, type)",
        """
        CREATE TABLE users (
            username        text COLLATE "C" PRIMARY KEY,
            failures        integer NOT NULL DEFAULT 0,
            locked_until    double precision,
            last_failure_at double precision,
            last_success_at double precision,
            total_failures  integer NOT NULL DEFAULT 0,
            preferred       text,
            notice          text,
            status          text NOT NULL DEFAULT 'enabled',
            status_until    double precision,
            status_reason   text,
            first_seen_at   double precision,
            grace_logins    integer NOT NULL DEFAULT 0
        )
        """,
        """
        CREATE TABLE challenges (
            state_id       bytea PRIMARY KEY,
            seq            bigint GENERATED ALWAYS AS IDENTITY,
            username       text COLLATE "C" NOT NULL,
            client_name    text NOT NULL,
            client_address text NOT NULL,
            created_at     double precision NOT NULL,
            expires_at     double precision NOT NULL,
            factor         text,
            token_id       text,
            code_hash      bytea,
            phase          text NOT NULL DEFAULT 'code',
            started_at     double precision,
            rule           text
        )
        """,
        "CREATE INDEX challenges_by_expiry ON challenges (expires_at)",
        "CREATE INDEX challenges_by_user ON challenges (username, created_at)",
        """
        CREATE TABLE sends (
            username text COLLATE "C" NOT NULL,
            channel  text NOT NULL,
            sent_at  double precision NOT NULL
        )
        """,
        "CREATE INDEX sends_by_user ON sends (username, channel, sent_at)",
        "CREATE INDEX sends_by_channel ON sends (channel, sent_at)",
        """
        CREATE TABLE devices (
            username      text COLLATE "C" NOT NULL,
            device        text COLLATE "C" NOT NULL,
            client        text COLLATE "C" NOT NULL,
            nas_id        text COLLATE "C" NOT NULL,
            remembered_at double precision NOT NULL,
            expires_at    double precision NOT NULL,
            PRIMARY KEY (username, device, client, nas_id)
        )
        """,
        "CREATE INDEX devices_by_expiry ON devices (expires_at)",
        """
        CREATE TABLE failures (
            key text COLLATE "C" NOT NULL,
            at  double precision NOT NULL
        )
        """,
        "CREATE INDEX failures_by_key ON failures (key, at)",
        "CREATE INDEX failures_by_time ON failures (at)",
        """
        CREATE TABLE audit (
            id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at             double precision NOT NULL,
            kind           text NOT NULL,
            username       text COLLATE "C",
            reason         text,
            outcome        text,
            client         text,
            src            text,
            nas_id         text,
            station        text,
            method         text,
            factor         text,
            trusted_device boolean NOT NULL DEFAULT false,
            rule           text,
            latency_ms     double precision,
            actor          text,
            action         text,
            before         text,
            after          text
        )
        """,
        "CREATE INDEX audit_by_time ON audit (at)",
        "CREATE INDEX audit_by_user ON audit (username, at)",
        """
        CREATE TABLE attempts (
            attempt_id bytea PRIMARY KEY,
            username   text COLLATE "C" NOT NULL,
            source     text COLLATE "C",
            expires_at double precision NOT NULL,
            failed     boolean NOT NULL DEFAULT false
        )
        """,
        "CREATE INDEX attempts_by_user ON attempts (username, failed, expires_at)",
        "CREATE INDEX attempts_by_source ON attempts (source, failed, expires_at)",
    ),
    # 2: the step offset of a TOTP token's last accepted code (SQLite version 8).
    ("ALTER TABLE tokens ADD COLUMN drift integer",),
    # 3: the self-service portal's sessions (shared by every node, so any of them serves a
    #    browser) and one-time enrolment links; keys and links stored as hashes only.
    (
        """
        CREATE TABLE portal_sessions (
            session_key    bytea PRIMARY KEY,
            username       text COLLATE "C" NOT NULL,
            name           text NOT NULL,
            stage          text NOT NULL,
            csrf           text NOT NULL,
            created_at     double precision NOT NULL,
            last_seen      double precision NOT NULL,
            idle           double precision NOT NULL,
            ends_at        double precision NOT NULL,
            grace_ends_at  double precision,
            helpdesk       boolean NOT NULL DEFAULT false,
            link           bytea,
            notice         text,
            sent           text,
            pending_meta   text,
            pending_secret bytea
        )
        """,
        "CREATE INDEX portal_sessions_by_end ON portal_sessions (ends_at)",
        """
        CREATE TABLE enrol_links (
            link       bytea PRIMARY KEY,
            username   text COLLATE "C" NOT NULL,
            created_at double precision NOT NULL,
            expires_at double precision NOT NULL,
            created_by text NOT NULL,
            used_at    double precision
        )
        """,
        "CREATE INDEX enrol_links_by_expiry ON enrol_links (expires_at)",
    ),
    # 4: when a portal session's user last proved a second factor (SQLite version 10).
    ("ALTER TABLE portal_sessions ADD COLUMN proven_at double precision",),
)

#: The schema version this code writes and understands.
SCHEMA_VERSION = len(MIGRATIONS)

#: Every table ``radmfa store copy`` fills or counts (the key check in ``meta`` and the
#: version are not data).
DATA_TABLES = (
    "tokens",
    "users",
    "challenges",
    "sends",
    "devices",
    "failures",
    "audit",
    "attempts",
)
#: The portal's tables: browser sessions and enrolment links live minutes to days and are
#: not carried over by a copy (users sign in again; links are made anew).
PORTAL_TABLES = ("portal_sessions", "enrol_links")
