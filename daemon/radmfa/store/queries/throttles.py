"""Sliding-window throttles: failures recorded under a key ("user:alice", "source:...")."""

from __future__ import annotations

from collections.abc import Sequence

from radmfa.store.engines.base import Transaction
from radmfa.store.engines.dialect import Statement
from radmfa.store.model import FailureWindow
from radmfa.store.queries.base import Queries

__all__ = ["DELETE_FAILURES", "INSERT_FAILURE", "ThrottleQueries"]

INSERT_FAILURE = Statement("INSERT INTO failures (key, at) VALUES (?, ?)")
DELETE_FAILURES = Statement("DELETE FROM failures WHERE key = ?")
#: A success's clearing of a window: the entries up to its time only (AttemptEnd.at).
DELETE_FAILURES_UNTIL = Statement("DELETE FROM failures WHERE key = ? AND at <= ?")
FAILURE_WINDOW = Statement("SELECT COUNT(*), MAX(at) FROM failures WHERE key = ? AND at >= ?")


class ThrottleQueries(Queries):
    def note_failures(self, keys: Sequence[str], now: float) -> None:
        rows = [(key, now) for key in keys]
        if rows:

            def work(tx: Transaction) -> None:
                tx.many(INSERT_FAILURE, rows)

            self._engine.transaction("recording failures", work)

    def failure_window(self, key: str, since: float) -> FailureWindow:
        ((count, last),) = self._engine.read("reading failures", FAILURE_WINDOW, (key, since))
        return FailureWindow(int(count), last)

    def clear_failures(self, key: str) -> None:
        self._engine.write("clearing failures", DELETE_FAILURES, (key,))
