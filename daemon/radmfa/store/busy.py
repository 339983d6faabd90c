"""Waiting for SQLite's write lock in steps of a tenth of a millisecond, not of milliseconds.

Workers (and the CLI) share one database file, so a write sometimes finds another
connection holding the lock for the few microseconds of its own write. SQLite's built-in
busy handler then sleeps 1 ms, then 2, 5, 10...: a wait thousands of times longer than the
lock is held, and with two busy workers it hit about one login in a hundred, which was the
whole p99 of a loaded daemon. :class:`PatientConnection` turns the built-in handler off and
retries a statement that found the database busy after short, growing sleeps, up to the
same overall limit.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

__all__ = ["RETRY_SLEEPS", "PatientConnection", "is_busy"]

#: Sleeps between attempts, in seconds; the last repeats until the time limit is reached.
RETRY_SLEEPS = (0.0001, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005)

_SQLITE_BUSY = 5


def is_busy(error: sqlite3.Error) -> bool:
    """SQLITE_BUSY or one of its extended codes: another connection holds the lock."""
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == _SQLITE_BUSY


class PatientConnection(sqlite3.Connection):
    """A connection whose ``execute`` / ``executemany`` outside a transaction (autocommit
    statements and ``BEGIN``) retry on SQLITE_BUSY for up to ``patience`` seconds.

    Inside a transaction nothing is retried: ``BEGIN IMMEDIATE`` took the lock already, and
    a busy answer there would need the whole transaction again, which is the caller's call.
    Use with ``PRAGMA busy_timeout = 0``.
    """

    patience: float = 5.0
    monotonic: Callable[[], float] = staticmethod(time.monotonic)
    sleep: Callable[[float], None] = staticmethod(time.sleep)

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        return self._patiently(super().execute, sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        if not self.in_transaction:
            parameters = list(parameters)  # an iterator would be used up by the first attempt
        return self._patiently(super().executemany, sql, parameters)

    def _patiently(
        self, run: Callable[[str, Any], sqlite3.Cursor], sql: str, parameters: Any
    ) -> sqlite3.Cursor:
        try:
            return run(sql, parameters)
        except sqlite3.OperationalError as error:
            if self.in_transaction or not is_busy(error):
                raise
            return self._retry(run, sql, parameters, error)

    def _retry(
        self,
        run: Callable[[str, Any], sqlite3.Cursor],
        sql: str,
        parameters: Any,
        error: sqlite3.OperationalError,
    ) -> sqlite3.Cursor:
        give_up = self.monotonic() + self.patience
        attempt = 0
        while True:
            pause = RETRY_SLEEPS[min(attempt, len(RETRY_SLEEPS) - 1)]
            if self.monotonic() + pause > give_up:
                raise error
            self.sleep(pause)
            attempt += 1
            try:
                return run(sql, parameters)
            except sqlite3.OperationalError as again:
                if self.in_transaction or not is_busy(again):
                    raise
                error = again
