"""The SQLite schema: numbered migrations, applied in one transaction when a store is opened
(:class:`radmfa.store.engines.sqlite.SqliteEngine`).

Append only: never edit a migration that has shipped. A store file records the versions it
went through in ``schema_version``; a file newer than this code is refused, not touched.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]

#: Ordered schema migrations; entry N-1 brings the schema from version N-1 to N.
#: Append only: never edit a migration that has shipped.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: initial schema
    (
        """
        CREATE TABLE tokens (
            token_id    TEXT PRIMARY KEY,
            user        TEXT NOT NULL,
            type        TEXT NOT NULL,
            secret_blob BLOB NOT NULL,
            digits      INTEGER NOT NULL,
            algorithm   TEXT NOT NULL,
            period      INTEGER NOT NULL,
            created_at  REAL NOT NULL,
            last_step   INTEGER,
            description TEXT NOT NULL DEFAULT ''
        )
        """,
        "CREATE INDEX tokens_by_user ON tokens (user)",
        """
        CREATE TABLE users (
            user            TEXT PRIMARY KEY,
            failures        INTEGER NOT NULL DEFAULT 0,
            locked_until    REAL,
            last_failure_at REAL,
            last_success_at REAL
        )
        """,
        """
        CREATE TABLE challenges (
            state_id       BLOB PRIMARY KEY,
            user           TEXT NOT NULL,
            client_name    TEXT NOT NULL,
            client_address TEXT NOT NULL,
            created_at     REAL NOT NULL,
            expires_at     REAL NOT NULL
        )
        """,
        "CREATE INDEX challenges_by_expiry ON challenges (expires_at)",
    ),
    # 2: second factors: out-of-band codes bound to a State, follow-up challenge rounds,
    #    preferred factor and delivery notices per user, send records for rate limits.
    (
        "ALTER TABLE challenges ADD COLUMN factor TEXT",
        "ALTER TABLE challenges ADD COLUMN token_id TEXT",
        "ALTER TABLE challenges ADD COLUMN code_hash BLOB",
        "ALTER TABLE challenges ADD COLUMN phase TEXT NOT NULL DEFAULT 'code'",
        "ALTER TABLE challenges ADD COLUMN started_at REAL",
        "ALTER TABLE users ADD COLUMN preferred TEXT",
        "ALTER TABLE users ADD COLUMN notice TEXT",
        """
        CREATE TABLE sends (
            user    TEXT NOT NULL,
            channel TEXT NOT NULL,
            sent_at REAL NOT NULL
        )
        """,
        "CREATE INDEX sends_by_user ON sends (user, channel, sent_at)",
        "CREATE INDEX tokens_by_user_type ON tokens (user, type)",
    ),
    # 3: policy, trusted devices and audit: admin status and enrolment grace per user, the
    #    rule that decided a challenge, remembered devices, sliding-window failure records,
    #    the audit trail (authentications and admin changes).
    (
        "ALTER TABLE users ADD COLUMN status TEXT NOT NULL DEFAULT 'enabled'",
        "ALTER TABLE users ADD COLUMN status_until REAL",
        "ALTER TABLE users ADD COLUMN status_reason TEXT",
        "ALTER TABLE users ADD COLUMN first_seen_at REAL",
        "ALTER TABLE users ADD COLUMN grace_logins INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE challenges ADD COLUMN rule TEXT",
        """
        CREATE TABLE devices (
            user          TEXT NOT NULL,
            device        TEXT NOT NULL,
            remembered_at REAL NOT NULL,
            expires_at    REAL NOT NULL,
            PRIMARY KEY (user, device)
        )
        """,
        "CREATE INDEX devices_by_expiry ON devices (expires_at)",
        """
        CREATE TABLE failures (
            key TEXT NOT NULL,
            at  REAL NOT NULL
        )
        """,
        "CREATE INDEX failures_by_key ON failures (key, at)",
        "CREATE INDEX failures_by_time ON failures (at)",
        """
        CREATE TABLE audit (
            id             INTEGER PRIMARY KEY,
            at             REAL NOT NULL,
            kind           TEXT NOT NULL,
            user           TEXT,
            reason         TEXT,
            outcome        TEXT,
            client         TEXT,
            src            TEXT,
            nas_id         TEXT,
            station        TEXT,
            method         TEXT,
            factor         TEXT,
            trusted_device INTEGER NOT NULL DEFAULT 0,
            rule           TEXT,
            latency_ms     REAL,
            actor          TEXT,
            action         TEXT,
            before         TEXT,
            after          TEXT
        )
        """,
        "CREATE INDEX audit_by_time ON audit (at)",
        "CREATE INDEX audit_by_user ON audit (user, at)",
    ),
    # 4: attempts reserved before any bind or code check (one atomic "may this user try now
    #    and count the try"), the consecutive-failure total across lock expiries.
    (
        """
        CREATE TABLE attempts (
            user       TEXT NOT NULL,
            attempt_id BLOB NOT NULL,
            source     TEXT,
            expires_at REAL NOT NULL,
            failed     INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (user, attempt_id)
        ) WITHOUT ROWID
        """,
        # Clustered on the user: a reservation and its end touch one B-tree, plus this
        # index only when the request has a station.
        "CREATE INDEX attempts_by_source ON attempts (source) WHERE source IS NOT NULL",
        "ALTER TABLE users ADD COLUMN total_failures INTEGER NOT NULL DEFAULT 0",
    ),
    # 5: a trusted device is remembered with the client entry and NAS-Identifier that
    #    reported its station, and counts only for requests from them. Devices remembered
    #    before (the station alone) are forgotten: nobody knows through which client.
    (
        "DROP TABLE devices",
        """
        CREATE TABLE devices (
            user          TEXT NOT NULL,
            device        TEXT NOT NULL,
            client        TEXT NOT NULL,
            nas_id        TEXT NOT NULL,
            remembered_at REAL NOT NULL,
            expires_at    REAL NOT NULL,
            PRIMARY KEY (user, device, client, nas_id)
        )
        """,
        "CREATE INDEX devices_by_expiry ON devices (expires_at)",
    ),
    # 6: caps on open challenge States per
    #    user and on sends per channel for all users, each counted by an index.
    (
        "CREATE INDEX challenges_by_user ON challenges (user, created_at)",
        "CREATE INDEX sends_by_channel ON sends (channel, sent_at)",
    ),
    # 7: the column of the user name is ``username`` in every table, as in PostgreSQL (where
    #    ``user`` is a reserved word), so that both engines run the same statements.
    (
        "ALTER TABLE tokens RENAME COLUMN user TO username",
        "ALTER TABLE users RENAME COLUMN user TO username",
        "ALTER TABLE challenges RENAME COLUMN user TO username",
        "ALTER TABLE sends RENAME COLUMN user TO username",
        "ALTER TABLE devices RENAME COLUMN user TO username",
        "ALTER TABLE audit RENAME COLUMN user TO username",
        "ALTER TABLE attempts RENAME COLUMN user TO username",
    ),
    # 8: the step offset of a TOTP token's last accepted code (``radmfa user show``: a phone
    #    whose clock drifts).
    ("ALTER TABLE tokens ADD COLUMN drift INTEGER",),
    # 9: the self-service portal's sessions (shared by every worker, so any of them serves
    #    a browser) and one-time enrolment links; keys and links stored as hashes only.
    (
        """
        CREATE TABLE portal_sessions (
            session_key    BLOB PRIMARY KEY,
            username       TEXT NOT NULL,
            name           TEXT NOT NULL,
            stage          TEXT NOT NULL,
            csrf           TEXT NOT NULL,
            created_at     REAL NOT NULL,
            last_seen      REAL NOT NULL,
            idle           REAL NOT NULL,
            ends_at        REAL NOT NULL,
            grace_ends_at  REAL,
            helpdesk       INTEGER NOT NULL DEFAULT 0,
            link           BLOB,
            notice         TEXT,
            sent           TEXT,
            pending_meta   TEXT,
            pending_secret BLOB
        )
        """,
        "CREATE INDEX portal_sessions_by_end ON portal_sessions (ends_at)",
        """
        CREATE TABLE enrol_links (
            link       BLOB PRIMARY KEY,
            username   TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            created_by TEXT NOT NULL,
            used_at    REAL
        )
        """,
        "CREATE INDEX enrol_links_by_expiry ON enrol_links (expires_at)",
    ),
    # 10: when a portal session's user last proved a second factor (step-up before a
    #     security change); sessions from before have none and are asked for a code.
    ("ALTER TABLE portal_sessions ADD COLUMN proven_at REAL",),
)

#: The schema version this code writes and understands.
SCHEMA_VERSION = len(MIGRATIONS)
