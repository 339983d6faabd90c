"""What the query areas share: the engine they run on and the key that seals secrets."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from radmfa.store.crypto import SecretBox
from radmfa.store.engines.base import Engine, Transaction
from radmfa.store.model import StoreError

__all__ = ["Queries"]

T = TypeVar("T")


class Queries:
    """The base of every query area (a mixin of :class:`radmfa.store.sql.SqlStore`)."""

    _engine: Engine
    _box: SecretBox
    #: Whether statements with ``RETURNING`` can be used (SQLite >= 3.35, PostgreSQL).
    _use_returning: bool

    def _inserting(self, what: str, work: Callable[[Transaction], T], duplicate: str) -> T:
        """``work`` in a transaction, whose duplicate key (a token id, a State) is reported
        as ``duplicate``."""
        try:
            return self._engine.transaction(what, work)
        except StoreError as e:
            if isinstance(e.__cause__, self._engine.duplicate_key):
                raise StoreError(duplicate) from e.__cause__
            raise
