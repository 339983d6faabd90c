"""What the metrics gauges read."""

from __future__ import annotations

from radmfa.store.engines.dialect import Statement
from radmfa.store.queries.base import Queries

__all__ = ["MetricsQueries"]

COUNT_LOCKED = Statement("SELECT COUNT(*) FROM users WHERE locked_until > ?")


class MetricsQueries(Queries):
    def count_locked(self, now: float) -> int:
        (row,) = self._engine.read("counting locked users", COUNT_LOCKED, (now,))
        return int(row[0])
