"""What the query areas share: the engine they run on and the key that seals secrets."""

from __future__ import annotations

from radmfa.store.crypto import SecretBox
from radmfa.store.engines.base import Engine
from radmfa.store.model import StoreError

__all__ = ["Queries"]


class Queries:
    """The base of every query area (a mixin of :class:`radmfa.store.sql.SqlStore`)."""

    _engine: Engine
    _box: SecretBox
    #: Whether statements with ``RETURNING`` can be used (SQLite >= 3.35, PostgreSQL).
    _use_returning: bool

    def _is_duplicate(self, error: StoreError) -> bool:
        """Whether ``error`` came from a duplicate key (a token id, a State)."""
        return isinstance(error.__cause__, self._engine.duplicate_key)
