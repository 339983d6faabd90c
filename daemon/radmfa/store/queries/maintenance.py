"""Purging what expired: challenges, send records past the hourly window, trusted devices,
old failure records, users rows that hold nothing, portal sessions and enrolment links, and
attempts past their lease."""

from __future__ import annotations

from radmfa.store.engines.base import Transaction
from radmfa.store.engines.dialect import Statement
from radmfa.store.model import IDLE_USERS_BATCH, SEND_WINDOW, STALE_FAILURES
from radmfa.store.queries.base import Queries
from radmfa.store.queries.portal import DELETE_EXPIRED_LINKS, DELETE_EXPIRED_SESSIONS

__all__ = ["ATTEMPTS_PURGE_BATCH", "MaintenanceQueries"]

#: Attempt rows past their lease deleted per transaction.
ATTEMPTS_PURGE_BATCH = 2000

DELETE_OLD_SENDS = Statement("DELETE FROM sends WHERE sent_at <= ?")
DELETE_EXPIRED_DEVICES = Statement("DELETE FROM devices WHERE expires_at <= ?")
DELETE_OLD_FAILURES = Statement("DELETE FROM failures WHERE at < ?")
DELETE_EXPIRED_CHALLENGES = Statement("DELETE FROM challenges WHERE expires_at <= ?")
#: Users rows that hold nothing (:func:`radmfa.store.rules.idle_user`), a batch at a time.
#: The outer conditions repeat the inner ones: PostgreSQL checks them again on a row that
#: another transaction changed after the subquery saw it (a failure counted meanwhile keeps
#: the row); on SQLite, whose write lock excludes any such change, they hold anyway.
DELETE_IDLE_USERS = Statement(
    "DELETE FROM users WHERE username IN (SELECT u.username FROM users u "
    "WHERE ((u.failures = 0 AND u.total_failures = 0 AND u.locked_until IS NULL) "
    "       OR (u.last_success_at IS NULL AND u.last_failure_at < :stale "
    "           AND (u.locked_until IS NULL OR u.locked_until <= :now))) "
    "AND u.status = 'enabled' "
    "AND u.status_until IS NULL AND u.status_reason IS NULL AND u.preferred IS NULL "
    "AND u.notice IS NULL AND u.first_seen_at IS NULL AND u.grace_logins = 0 "
    "AND NOT EXISTS (SELECT 1 FROM tokens t WHERE t.username = u.username) "
    "LIMIT :batch) "
    "AND ((failures = 0 AND total_failures = 0 AND locked_until IS NULL) "
    "     OR (last_success_at IS NULL AND last_failure_at < :stale "
    "         AND (locked_until IS NULL OR locked_until <= :now))) "
    "AND status = 'enabled' AND status_until IS NULL AND status_reason IS NULL "
    "AND preferred IS NULL AND notice IS NULL AND first_seen_at IS NULL AND grace_logins = 0"
)
#: The outer condition is checked again on a row another transaction changed meanwhile
#: (PostgreSQL): an expired attempt id that was just reserved anew is not deleted.
PURGE_ATTEMPTS = Statement(
    "DELETE FROM attempts WHERE (username, attempt_id) IN (SELECT username, attempt_id "
    "FROM attempts WHERE expires_at <= :now LIMIT :batch) AND expires_at <= :now"
)


class MaintenanceQueries(Queries):
    def purge_expired(self, now: float, failures_before: float | None = None) -> int:
        def work(tx: Transaction) -> int:
            tx.execute(DELETE_OLD_SENDS, (now - SEND_WINDOW,))
            tx.execute(DELETE_EXPIRED_DEVICES, (now,))
            tx.execute(DELETE_EXPIRED_SESSIONS, {"now": now})
            tx.execute(DELETE_EXPIRED_LINKS, (now,))
            if failures_before is not None:
                tx.execute(DELETE_OLD_FAILURES, (failures_before,))
            tx.execute(
                DELETE_IDLE_USERS,
                {"now": now, "stale": now - STALE_FAILURES, "batch": IDLE_USERS_BATCH},
            )
            return tx.rowcount(DELETE_EXPIRED_CHALLENGES, (now,))

        purged = self._engine.transaction("purging expired challenges", work)
        # Attempts in batches: failed attempts live half a minute, and after a guessing storm
        # one DELETE of them all would hold the write lock (SQLite) or be one long transaction.
        while True:
            gone = self._engine.write(
                "purging past attempts",
                PURGE_ATTEMPTS,
                {"now": now, "batch": ATTEMPTS_PURGE_BATCH},
            )
            if gone < ATTEMPTS_PURGE_BATCH:
                return purged
