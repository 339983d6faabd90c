"""The self-service portal's state: browser sessions (made whole, then changed one field at a
time, so two requests of one browser never overwrite each other's changes) and one-time
enrolment links.

A session's pending enrolment holds the secret of an authenticator app not enrolled yet: it
is sealed like a token secret, bound to the session's key and to the token it describes
(:func:`~radmfa.store.crypto.pending_secret_aad`). Taking it (and the record of a code sent
out of band) is a read and a delete in one write transaction: of two takers, one gets it.
"""

from __future__ import annotations

import json
from typing import Any

from radmfa.store.crypto import SecretBoxError, pending_secret_aad
from radmfa.store.engines.base import Row, Transaction
from radmfa.store.engines.dialect import Statement
from radmfa.store.model import EnrolLink, PendingEnrolment, PortalSession, StoreError, TokenRecord
from radmfa.store.queries.base import Queries

__all__ = ["PortalQueries"]

# Statements spelled out in full (no string building), so every query is a reviewable literal.
INSERT_SESSION = Statement(
    "INSERT INTO portal_sessions (session_key, username, name, stage, csrf, created_at, "
    "last_seen, idle, ends_at, grace_ends_at, helpdesk, link, notice, sent, pending_meta, "
    "pending_secret, proven_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: A live session's idle timer restarted, in one statement (RETURNING gives the new row).
TOUCH_SESSION = Statement(
    "UPDATE portal_sessions SET last_seen = :now WHERE session_key = :key "
    "AND last_seen + idle > :now AND ends_at > :now "
    "RETURNING session_key, username, name, stage, csrf, created_at, last_seen, idle, "
    "ends_at, grace_ends_at, helpdesk, link, notice, sent, pending_meta, pending_secret, "
    "proven_at"
)
#: Without RETURNING (SQLite < 3.35): the update, then a read, in one write transaction.
TOUCH_SESSION_ONLY = Statement(
    "UPDATE portal_sessions SET last_seen = :now WHERE session_key = :key "
    "AND last_seen + idle > :now AND ends_at > :now"
)
SELECT_SESSION = Statement(
    "SELECT session_key, username, name, stage, csrf, created_at, last_seen, idle, "
    "ends_at, grace_ends_at, helpdesk, link, notice, sent, pending_meta, pending_secret, "
    "proven_at FROM portal_sessions WHERE session_key = ?"
)
DELETE_SESSION = Statement("DELETE FROM portal_sessions WHERE session_key = ?")
#: Every session of one user (a reset: no browser keeps what it proved before).
DELETE_USER_SESSIONS = Statement("DELETE FROM portal_sessions WHERE username = ?")
SET_NOTICE = Statement("UPDATE portal_sessions SET notice = ? WHERE session_key = ?")
SET_SENT = Statement("UPDATE portal_sessions SET sent = ? WHERE session_key = ?")
SET_PROVEN = Statement("UPDATE portal_sessions SET proven_at = ? WHERE session_key = ?")
SELECT_SENT = Statement("SELECT sent FROM portal_sessions WHERE session_key = ?{for_update}")
SELECT_PENDING = Statement(
    "SELECT pending_meta, pending_secret FROM portal_sessions WHERE session_key = ?{for_update}"
)
SET_PENDING = Statement(
    "UPDATE portal_sessions SET pending_meta = ?, pending_secret = ? WHERE session_key = ?"
)
DELETE_EXPIRED_SESSIONS = Statement(
    "DELETE FROM portal_sessions WHERE ends_at <= :now OR last_seen + idle <= :now"
)

INSERT_LINK = Statement(
    "INSERT INTO enrol_links (link, username, created_at, expires_at, created_by, used_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
SELECT_LINK = Statement(
    "SELECT link, username, created_at, expires_at, created_by, used_at FROM enrol_links "
    "WHERE link = ?"
)
#: Spending a link: one conditional statement; of two concurrent spenders the second finds
#: ``used_at`` set (PostgreSQL checks the condition again on the row the first changed).
SPEND_LINK = Statement(
    "UPDATE enrol_links SET used_at = :now WHERE link = :link AND username = :user "
    "AND used_at IS NULL AND expires_at > :now"
)
DELETE_EXPIRED_LINKS = Statement("DELETE FROM enrol_links WHERE expires_at <= ?")

_TOKEN_FIELDS = ("token_id", "user", "type", "digits", "algorithm", "period", "created_at")


def _describe(pending: PendingEnrolment) -> str:
    """Everything of a pending enrolment but the secret, as the JSON text stored (and
    bound to the sealed secret as its associated data)."""
    token = pending.token
    fields: dict[str, object] = {name: getattr(token, name) for name in _TOKEN_FIELDS}
    fields.update(
        last_step=token.last_step, description=token.description, replacing=pending.replacing
    )
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


class PortalQueries(Queries):
    # -- sessions -------------------------------------------------------------------------------

    def _pending_columns(
        self, key: bytes, pending: PendingEnrolment | None
    ) -> tuple[str | None, bytes | None]:
        if pending is None:
            return None, None
        meta = _describe(pending)
        return meta, self._box.seal(pending.token.secret, pending_secret_aad(key, meta))

    def _pending_from(self, key: bytes, meta: str | None, blob: Any) -> PendingEnrolment | None:
        if meta is None or blob is None:
            return None
        try:
            secret = self._box.open(bytes(blob), pending_secret_aad(key, meta))
            fields = json.loads(meta)
            replacing = fields.pop("replacing")
            return PendingEnrolment(TokenRecord(secret=secret, **fields), replacing)
        except (SecretBoxError, ValueError, TypeError, KeyError) as e:
            raise StoreError(
                f"cannot open the pending enrolment of a portal session in {self._engine.name}: {e}"
            ) from e

    def _session_from(self, row: Row) -> PortalSession:
        key = bytes(row[0])
        return PortalSession(
            key=key,
            user=row[1],
            name=row[2],
            stage=row[3],
            csrf=row[4],
            created_at=row[5],
            last_seen=row[6],
            idle=row[7],
            ends_at=row[8],
            grace_ends_at=row[9],
            helpdesk=bool(row[10]),
            link=bytes(row[11]) if row[11] is not None else None,
            notice=row[12],
            sent=row[13],
            pending=self._pending_from(key, row[14], row[15]),
            proven_at=row[16],
        )

    def put_portal_session(self, session: PortalSession) -> None:
        meta, blob = self._pending_columns(session.key, session.pending)
        values = (
            session.key,
            session.user,
            session.name,
            session.stage,
            session.csrf,
            session.created_at,
            session.last_seen,
            session.idle,
            session.ends_at,
            session.grace_ends_at,
            session.helpdesk,
            session.link,
            session.notice,
            session.sent,
            meta,
            blob,
            session.proven_at,
        )

        def work(tx: Transaction) -> None:
            tx.execute(INSERT_SESSION, values)

        self._inserting(
            f"storing a portal session of {session.user!r}",
            work,
            "a portal session with this key already exists",
        )

    def touch_portal_session(self, key: bytes, now: float) -> PortalSession | None:
        what = "reading a portal session"
        params = {"now": now, "key": key}
        if self._use_returning:
            rows = self._engine.write_returning(what, TOUCH_SESSION, params)
        else:

            def work(tx: Transaction) -> list[Row]:
                if not tx.rowcount(TOUCH_SESSION_ONLY, params):
                    return []
                return tx.all(SELECT_SESSION, (key,))

            rows = self._engine.transaction(what, work)
        return self._session_from(rows[0]) if rows else None

    def delete_portal_session(self, key: bytes) -> bool:
        # Not retried: after a lost connection a second try would answer False although the
        # first one deleted it (and the caller would think another request rotated it).
        return (
            self._engine.write("ending a portal session", DELETE_SESSION, (key,), retry=False) == 1
        )

    def set_portal_notice(self, key: bytes, notice: str | None) -> bool:
        return self._engine.write("setting a portal notice", SET_NOTICE, (notice, key)) == 1

    def set_portal_sent(self, key: bytes, sent: str | None) -> bool:
        return self._engine.write("recording a sent code", SET_SENT, (sent, key)) == 1

    def set_portal_proven(self, key: bytes, at: float) -> bool:
        return self._engine.write("recording a proven factor", SET_PROVEN, (at, key)) == 1

    def take_portal_sent(self, key: bytes) -> str | None:
        def work(tx: Transaction) -> str | None:
            row = tx.one(SELECT_SENT, (key,))
            if row is None or row[0] is None:
                return None
            tx.execute(SET_SENT, (None, key))
            return str(row[0])

        return self._engine.transaction("taking a sent code", work, retry=False)

    def offer_portal_pending(
        self, key: bytes, pending: PendingEnrolment | None, *, only_if_empty: bool = False
    ) -> PendingEnrolment | None:
        meta, blob = self._pending_columns(key, pending)

        def work(tx: Transaction) -> PendingEnrolment | None:
            row = tx.one(SELECT_PENDING, (key,))
            if row is None:
                return None
            if only_if_empty and row[0] is not None:
                return self._pending_from(key, row[0], row[1])
            tx.execute(SET_PENDING, (meta, blob, key))
            return pending

        return self._engine.transaction("offering a pending enrolment", work)

    def take_portal_pending(self, key: bytes) -> PendingEnrolment | None:
        def work(tx: Transaction) -> tuple[str | None, Any]:
            row = tx.one(SELECT_PENDING, (key,))
            if row is None or row[0] is None:
                return None, None
            tx.execute(SET_PENDING, (None, None, key))
            return row[0], row[1]

        meta, blob = self._engine.transaction("taking a pending enrolment", work, retry=False)
        return self._pending_from(key, meta, blob)

    # -- enrolment links ------------------------------------------------------------------------

    def add_enrol_link(self, link: EnrolLink) -> None:
        values = (
            link.link,
            link.user,
            link.created_at,
            link.expires_at,
            link.created_by,
            link.used_at,
        )

        def work(tx: Transaction) -> None:
            tx.execute(INSERT_LINK, values)

        self._inserting(
            f"storing an enrolment link of {link.user!r}",
            work,
            "an enrolment link with this hash already exists",
        )

    def enrol_link(self, link: bytes) -> EnrolLink | None:
        rows = self._engine.read("reading an enrolment link", SELECT_LINK, (link,))
        if not rows:
            return None
        found, user, created_at, expires_at, created_by, used_at = rows[0]
        return EnrolLink(bytes(found), user, created_at, expires_at, created_by, used_at)
