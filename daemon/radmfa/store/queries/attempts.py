"""The hot path of every login: the login state in one statement, and attempts reserved,
judged and ended ("may this user try now" and "count this try" as one atomic step)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from radmfa.store.engines.base import Row, Transaction
from radmfa.store.engines.dialect import Statement
from radmfa.store.model import (
    ATTEMPT_FAILED,
    ATTEMPT_LEASE,
    ATTEMPT_SUCCEEDED,
    DUPLICATE_FAILED,
    DUPLICATE_IN_FLIGHT,
    FAILED_ATTEMPT_MEMORY,
    AttemptEnd,
    AttemptStart,
    DeviceRef,
    FailureWindow,
    LockoutRule,
    LockState,
    LoginState,
    TokenRecord,
    TrustedDevice,
    UserSettings,
)
from radmfa.store.queries.base import Queries
from radmfa.store.queries.throttles import DELETE_FAILURES_UNTIL, INSERT_FAILURE
from radmfa.store.queries.users import CLEAR_FAILURES, count_failure, settings_from_row
from radmfa.store.rules import check_finish, user_failures_key

__all__ = ["AttemptQueries"]

#: The users row (if any), four indexed subqueries on the failure windows and the device.
_LOGIN_COLUMNS = (
    "SELECT u.failures, u.locked_until, u.last_failure_at, u.last_success_at, u.preferred, "
    "u.notice, u.status, u.status_until, u.status_reason, u.first_seen_at, u.grace_logins, "
    "u.total_failures, "
    "(SELECT COUNT(*) FROM failures WHERE key = :ukey AND at >= :usince), "
    "(SELECT MAX(at) FROM failures WHERE key = :ukey AND at >= :usince), "
    "(SELECT COUNT(*) FROM failures WHERE key = :skey AND at >= :ssince), "
    "(SELECT MAX(at) FROM failures WHERE key = :skey AND at >= :ssince), "
    "d.remembered_at, d.expires_at"
)
_LOGIN_FROM = (
    " FROM (SELECT 1) AS one "
    "LEFT JOIN users u ON u.username = :user "
    "LEFT JOIN devices d ON d.username = :user AND d.device = :device "
    "AND d.client = :dclient AND d.nas_id = :dnas AND d.expires_at > :now"
)
#: Store.login_state in one statement (one snapshot). A key that cannot exist (NULL)
#: switches a part off.
LOGIN_STATE = Statement(_LOGIN_COLUMNS + _LOGIN_FROM)
#: Store.begin_attempt's read, also in one statement: the login state, the attempts of the
#: user and of the source still pending, and whether this attempt id is known already. (Put
#: together from the constants above, once, at import: the two reads cannot drift apart.)
ATTEMPT_STATE = Statement(
    _LOGIN_COLUMNS  # noqa: S608
    + ", "
    "(SELECT COUNT(*) FROM attempts WHERE username = :user AND NOT failed "
    " AND expires_at > :now), "
    "(SELECT COUNT(*) FROM attempts WHERE source = :source AND NOT failed "
    " AND expires_at > :now), "
    "(SELECT failed FROM attempts WHERE username = :user AND attempt_id = :attempt "
    " AND expires_at > :now)" + _LOGIN_FROM
)
#: The attempts table is keyed differently: SQLite clusters it on (user, attempt id)
#: (WITHOUT ROWID: a reservation and its end touch one B-tree), PostgreSQL keys it on the
#: attempt id (an id names one user: it is a hash that includes the user's key).
RESERVE_ATTEMPT = Statement.per_engine(
    sqlite="INSERT OR REPLACE INTO attempts (username, attempt_id, source, expires_at, failed) "
    "VALUES (?, ?, ?, ?, false)",
    postgres="INSERT INTO attempts (username, attempt_id, source, expires_at, failed) "
    "VALUES (?, ?, ?, ?, false) ON CONFLICT (attempt_id) DO UPDATE SET "
    "username = excluded.username, source = excluded.source, "
    "expires_at = excluded.expires_at, failed = false",
)
FAIL_ATTEMPT = Statement(
    "UPDATE attempts SET failed = true, expires_at = ? WHERE username = ? AND attempt_id = ?"
)
FORGET_ATTEMPT = Statement("DELETE FROM attempts WHERE username = ? AND attempt_id = ?")


def _login_state_params(
    user: str,
    now: float,
    user_since: float | None,
    source: str | None,
    source_since: float | None,
    device: DeviceRef | None,
) -> dict[str, Any]:
    return {
        "user": user,
        "now": now,
        "ukey": user_failures_key(user) if user_since is not None else None,
        "usince": user_since,
        "skey": source if source_since is not None else None,
        "ssince": source_since,
        "device": device.station if device is not None else None,
        "dclient": device.client if device is not None else None,
        "dnas": device.nas_id if device is not None else None,
    }


def _login_state_from_row(
    user: str,
    device: DeviceRef | None,
    row: Row,
    pending_user: int = 0,
    pending_source: int = 0,
) -> LoginState:
    failures, locked_until, last_failure, last_success = row[:4]
    lock = (
        LockState(user)
        if failures is None
        else LockState(
            user, int(failures), locked_until, last_failure, last_success, int(row[11] or 0)
        )
    )
    settings = UserSettings(user) if failures is None else settings_from_row(user, row[4:11])
    user_count, user_last, source_count, source_last, remembered, expires = row[12:18]
    return LoginState(
        lock,
        settings,
        FailureWindow(int(user_count), user_last),
        FailureWindow(int(source_count), source_last),
        None
        if remembered is None or device is None
        else TrustedDevice(user, device.station, device.client, device.nas_id, remembered, expires),
        pending_user=int(pending_user),
        pending_source=int(pending_source),
    )


class AttemptQueries(Queries):
    def _user_tokens(self, tx: Transaction, user: str) -> list[TokenRecord]:
        """``user``'s tokens inside ``tx``: the token queries supply it (see SqlStore)."""
        raise NotImplementedError

    def login_state(
        self,
        user: str,
        now: float,
        *,
        user_since: float | None = None,
        source: str | None = None,
        source_since: float | None = None,
        device: DeviceRef | None = None,
    ) -> LoginState:
        params = _login_state_params(user, now, user_since, source, source_since, device)
        (row,) = self._engine.read(f"reading the login state of {user!r}", LOGIN_STATE, params)
        return _login_state_from_row(user, device, row)

    def begin_attempt(
        self,
        attempt_id: bytes,
        user: str,
        now: float,
        judge: Callable[[LoginState], object | None],
        *,
        user_since: float | None = None,
        source: str | None = None,
        source_since: float | None = None,
        device: DeviceRef | None = None,
        lease: float = ATTEMPT_LEASE,
        ends: Sequence[AttemptEnd] = (),
        with_tokens: bool = False,
    ) -> AttemptStart:
        params = _login_state_params(user, now, user_since, source, source_since, device)
        params["attempt"] = attempt_id
        params["source"] = source

        def work(tx: Transaction) -> AttemptStart:
            # The user's lock (and the source's) first: every begin_attempt and failing
            # finish_attempt of them waits here, so the state read next stays true until
            # the reservation is committed (on SQLite, BEGIN IMMEDIATE already made every
            # other writer wait). The read is one statement, one snapshot.
            tx.lock(("user", user), *([("source", source)] if source is not None else []))
            # Then the batched ends: row locks only, taken after the advisory locks as every
            # other transaction takes them (never an advisory lock while holding rows).
            _end_all(tx, ends, now)
            row = tx.one(ATTEMPT_STATE, params)
            assert row is not None  # selected from one row
            known = row[20]
            if known is not None:
                return AttemptStart(
                    None, duplicate=DUPLICATE_FAILED if known else DUPLICATE_IN_FLIGHT
                )
            state = _login_state_from_row(user, device, row, row[18], row[19])
            refusal = judge(state)
            if refusal is not None:
                return AttemptStart(state, refusal)
            tx.execute(RESERVE_ATTEMPT, (user, attempt_id, source, now + lease))
            tokens = self._user_tokens(tx, user) if with_tokens else None
            return AttemptStart(state, tokens=tokens)

        return self._engine.transaction(f"reserving an attempt of {user!r}", work)

    def finish_attempt(
        self,
        attempt_id: bytes,
        user: str,
        now: float,
        result: str,
        *,
        lockout: LockoutRule | None = None,
        failure_keys: Sequence[str] = (),
        clear_keys: Sequence[str] = (),
    ) -> LockState | None:
        check_finish(result, lockout)
        what = f"finishing an attempt of {user!r}"
        if result == ATTEMPT_FAILED:
            assert lockout is not None
            rule = lockout

            def fail(tx: Transaction) -> LockState:
                tx.lock(("user", user))
                tx.execute(FAIL_ATTEMPT, (now + FAILED_ATTEMPT_MEMORY, user, attempt_id))
                if failure_keys:
                    tx.many(INSERT_FAILURE, [(key, now) for key in failure_keys])
                return count_failure(tx, user, now, rule)

            return self._engine.transaction(what, fail)
        if result != ATTEMPT_SUCCEEDED:
            # Neutral: the reservation ends, nothing is counted. One statement, atomic.
            self._engine.write(what, FORGET_ATTEMPT, (user, attempt_id))
            return None

        def succeed(tx: Transaction) -> None:
            # Single statements on rows a failing finish locks (FOR UPDATE) before it
            # counts: they wait for each other, nothing is lost.
            tx.execute(FORGET_ATTEMPT, (user, attempt_id))
            tx.execute(CLEAR_FAILURES, (now, user, now))
            for key in clear_keys:
                tx.execute(DELETE_FAILURES_UNTIL, (key, now))

        self._engine.transaction(what, succeed)
        return None

    def end_attempts(self, ends: Sequence[AttemptEnd], now: float) -> None:
        if not ends:
            return
        self._engine.transaction(
            f"ending {len(ends)} attempt(s)", lambda tx: _end_all(tx, ends, now)
        )


def _end_all(tx: Transaction, ends: Sequence[AttemptEnd], now: float) -> None:
    """Attempts that failed nobody, ended. Single statements on rows a failing finish locks
    (FOR UPDATE) before it counts: they wait for each other, nothing is lost. Rows are
    taken in one order (by user, then attempt id) so two batches never wait on each other
    in a cycle."""
    if not ends:
        return
    ordered = sorted(ends, key=lambda end: (end.user, end.attempt_id))
    tx.many(FORGET_ATTEMPT, [(end.user, end.attempt_id) for end in ordered])
    succeeded = [end for end in ordered if end.succeeded]
    if succeeded:
        tx.many(
            CLEAR_FAILURES,
            [(at, end.user, at) for end in succeeded for at in (_success_time(end, now),)],
        )
        until: dict[str, float] = {}
        for end in succeeded:
            at = _success_time(end, now)
            for key in end.clear_keys:
                until[key] = max(at, until.get(key, at))
        if until:
            tx.many(DELETE_FAILURES_UNTIL, sorted(until.items()))


def _success_time(end: AttemptEnd, now: float) -> float:
    """When ``end``'s success was decided (never later than the batch)."""
    return now if end.at is None else min(end.at, now)
