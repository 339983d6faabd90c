"""Users: the lockout counters (counted under the user's lock, the row locked while computed
on), the admin status, the preferred factor, notices and the enrolment grace period."""

from __future__ import annotations

from radmfa.store.engines.base import Row, Transaction
from radmfa.store.engines.dialect import Statement
from radmfa.store.model import USER_STATUSES, LockoutRule, LockState, UserSettings
from radmfa.store.queries.base import Queries
from radmfa.store.queries.devices import REVOKE_DEVICES
from radmfa.store.queries.portal import DELETE_USER_SESSIONS
from radmfa.store.queries.tokens import DELETE_USER_TOKENS
from radmfa.store.rules import next_failure_state

__all__ = [
    "CLEAR_FAILURES",
    "UserQueries",
    "count_failure",
    "lock_from_row",
    "settings_from_row",
]

# Statements spelled out in full (no string building), so every query is a reviewable literal.
SELECT_LOCK = Statement(
    "SELECT username, failures, locked_until, last_failure_at, last_success_at, total_failures "
    "FROM users WHERE username = ?"
)
#: The same row, locked until the end of the transaction: a counter read to be written back.
SELECT_LOCK_FOR_UPDATE = Statement(
    "SELECT username, failures, locked_until, last_failure_at, last_success_at, total_failures "
    "FROM users WHERE username = ?{for_update}"
)
UPSERT_FAILURE = Statement(
    "INSERT INTO users (username, failures, locked_until, last_failure_at, total_failures) "
    "VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (username) DO UPDATE SET failures = excluded.failures, "
    "locked_until = excluded.locked_until, last_failure_at = excluded.last_failure_at, "
    "total_failures = excluded.total_failures"
)
UPSERT_SUCCESS = Statement(
    "INSERT INTO users (username, failures, locked_until, last_success_at) "
    "VALUES (?, 0, NULL, ?) "
    "ON CONFLICT (username) DO UPDATE SET failures = 0, locked_until = NULL, "
    "total_failures = 0, last_success_at = excluded.last_success_at"
)
#: A success ends an attempt: clears failure counts that exist (no row for a user who never
#: failed, so a login's success writes nothing to users in the common case).
#: A success's clearing: (success time, user, success time). Nothing when a failure was
#: counted after the success (see AttemptEnd.at): the counts then stay, which only errs on
#: the safe side until the user's next success.
CLEAR_FAILURES = Statement(
    "UPDATE users SET failures = 0, locked_until = NULL, total_failures = 0, "
    "last_success_at = ? WHERE username = ? AND (failures > 0 OR total_failures > 0 "
    "OR locked_until IS NOT NULL) AND (last_failure_at IS NULL OR last_failure_at <= ?)"
)
UNLOCK = Statement(
    "UPDATE users SET failures = 0, locked_until = NULL, total_failures = 0 "
    "WHERE username = ? AND (failures > 0 OR locked_until IS NOT NULL OR total_failures > 0)"
)
KNOWN_USERS = Statement(
    "SELECT username FROM tokens UNION SELECT username FROM users ORDER BY username"
)
SELECT_SETTINGS = Statement(
    "SELECT preferred, notice, status, status_until, status_reason, first_seen_at, "
    "grace_logins FROM users WHERE username = ?"
)
SELECT_SETTINGS_FOR_UPDATE = Statement(
    "SELECT preferred, notice, status, status_until, status_reason, first_seen_at, "
    "grace_logins FROM users WHERE username = ?{for_update}"
)
SET_PREFERRED = Statement(
    "INSERT INTO users (username, preferred) VALUES (?, ?) "
    "ON CONFLICT (username) DO UPDATE SET preferred = excluded.preferred"
)
SET_NOTICE = Statement(
    "INSERT INTO users (username, notice) VALUES (?, ?) "
    "ON CONFLICT (username) DO UPDATE SET notice = excluded.notice"
)
SELECT_NOTICE_FOR_UPDATE = Statement("SELECT notice FROM users WHERE username = ?{for_update}")
CLEAR_NOTICE = Statement("UPDATE users SET notice = NULL WHERE username = ?")
SET_STATUS = Statement(
    "INSERT INTO users (username, status, status_until, status_reason) "
    "VALUES (?, ?, ?, ?) ON CONFLICT (username) DO UPDATE SET "
    "status = excluded.status, status_until = excluded.status_until, "
    "status_reason = excluded.status_reason"
)
NOTE_GRACE_LOGIN_RETURNING = Statement(
    "INSERT INTO users (username, first_seen_at, grace_logins) VALUES (?, ?, 1) "
    "ON CONFLICT (username) DO UPDATE SET "
    "first_seen_at = coalesce(users.first_seen_at, excluded.first_seen_at), "
    "grace_logins = users.grace_logins + 1 "
    "RETURNING preferred, notice, status, status_until, status_reason, first_seen_at, "
    "grace_logins"
)
#: The same without RETURNING (SQLite < 3.35), followed by SELECT_SETTINGS.
NOTE_GRACE_LOGIN = Statement(
    "INSERT INTO users (username, first_seen_at, grace_logins) VALUES (?, ?, 1) "
    "ON CONFLICT (username) DO UPDATE SET "
    "first_seen_at = coalesce(users.first_seen_at, excluded.first_seen_at), "
    "grace_logins = users.grace_logins + 1"
)
RESET_SETTINGS = Statement(
    "UPDATE users SET preferred = NULL, first_seen_at = NULL, grace_logins = 0 WHERE username = ?"
)


def lock_from_row(row: Row) -> LockState:
    user, failures, locked_until, last_failure_at, last_success_at, total = row
    return LockState(
        user, int(failures), locked_until, last_failure_at, last_success_at, int(total or 0)
    )


def settings_from_row(user: str, row: Row) -> UserSettings:
    preferred, notice, status, until, reason, first_seen_at, grace_logins = row
    return UserSettings(
        user,
        preferred,
        notice,
        status=status,
        status_until=until,
        status_reason=reason,
        first_seen_at=first_seen_at,
        grace_logins=int(grace_logins or 0),
    )


def count_failure(tx: Transaction, user: str, now: float, rule: LockoutRule) -> LockState:
    """One more failure of ``user``, in the caller's transaction (which holds the user's
    lock); the row is locked while it is computed on, so an unlock cannot be lost."""
    row = tx.one(SELECT_LOCK_FOR_UPDATE, (user,))
    state = LockState(user) if row is None else lock_from_row(row)
    new = next_failure_state(state, now, rule)
    if new is not state:
        tx.execute(
            UPSERT_FAILURE,
            (user, new.failures, new.locked_until, new.last_failure_at, new.total_failures),
        )
    return new


class UserQueries(Queries):
    # -- lockout ----------------------------------------------------------------------------

    def lock_state(self, user: str) -> LockState:
        rows = self._engine.read(f"reading the lock state of {user!r}", SELECT_LOCK, (user,))
        return LockState(user) if not rows else lock_from_row(rows[0])

    def record_failure(
        self, user: str, now: float, max_failures: int, lock_seconds: float, max_total: int = 0
    ) -> LockState:
        rule = LockoutRule(max_failures, lock_seconds, max_total)  # refuses max_failures < 1

        def work(tx: Transaction) -> LockState:
            tx.lock(("user", user))
            return count_failure(tx, user, now, rule)

        return self._engine.transaction(f"recording a failure for {user!r}", work)

    def record_success(self, user: str, now: float) -> None:
        self._engine.write(f"recording a success for {user!r}", UPSERT_SUCCESS, (user, now))

    def unlock(self, user: str) -> bool:
        return self._engine.write(f"unlocking {user!r}", UNLOCK, (user,)) == 1

    def known_users(self) -> list[str]:
        return [row[0] for row in self._engine.read("listing users", KNOWN_USERS)]

    # -- per-user settings ------------------------------------------------------------------

    def user_settings(self, user: str) -> UserSettings:
        rows = self._engine.read(f"reading the settings of {user!r}", SELECT_SETTINGS, (user,))
        return UserSettings(user) if not rows else settings_from_row(user, rows[0])

    def set_preferred(self, user: str, factor: str | None) -> None:
        what = f"setting the preferred factor of {user!r}"
        self._engine.write(what, SET_PREFERRED, (user, factor))

    def set_notice(self, user: str, notice: str | None) -> None:
        self._engine.write(f"setting a notice for {user!r}", SET_NOTICE, (user, notice))

    def take_notice(self, user: str) -> str | None:
        def work(tx: Transaction) -> str | None:
            # FOR UPDATE: a second taker waits, then reads the row as the first left it.
            row = tx.one(SELECT_NOTICE_FOR_UPDATE, (user,))
            if row is None or row[0] is None:
                return None
            tx.execute(CLEAR_NOTICE, (user,))
            return str(row[0])

        return self._engine.transaction(f"taking the notice of {user!r}", work)

    def set_status(
        self, user: str, status: str, until: float | None, reason: str | None
    ) -> UserSettings:
        if status not in USER_STATUSES:
            raise ValueError(f"unknown user status {status!r}")

        def work(tx: Transaction) -> Row | None:
            tx.lock(("user", user))
            row = tx.one(SELECT_SETTINGS_FOR_UPDATE, (user,))
            tx.execute(SET_STATUS, (user, status, until, reason))
            return row

        row = self._engine.transaction(f"setting the status of {user!r}", work)
        return UserSettings(user) if row is None else settings_from_row(user, row)

    def note_grace_login(self, user: str, now: float) -> UserSettings:
        what = f"counting a grace-period login of {user!r}"
        if self._use_returning:
            # Counted by one statement; not retried, so a lost answer never counts twice.
            rows = self._engine.write_returning(
                what, NOTE_GRACE_LOGIN_RETURNING, (user, now), retry=False
            )
            return settings_from_row(user, rows[0])  # an upsert returns its row

        def work(tx: Transaction) -> Row | None:
            tx.execute(NOTE_GRACE_LOGIN, (user, now))
            return tx.one(SELECT_SETTINGS, (user,))

        row = self._engine.transaction(what, work, retry=False)
        assert row is not None  # the upsert made it
        return settings_from_row(user, row)

    def reset_user(self, user: str) -> tuple[int, int]:
        def work(tx: Transaction) -> tuple[int, int]:
            tokens = tx.rowcount(DELETE_USER_TOKENS, (user,))
            devices = tx.rowcount(REVOKE_DEVICES, {"user": user, "device": None})
            tx.execute(RESET_SETTINGS, (user,))
            tx.execute(DELETE_USER_SESSIONS, (user,))
            return tokens, devices

        return self._engine.transaction(f"resetting {user!r}", work)
