"""The interface the domain queries run on, which each engine implements.

An engine runs a statement on its own (``read``, ``write``, ``write_returning``) or a
function in a transaction (``transaction``) and turns driver errors into
:class:`~radmfa.store.model.StoreError`. The function gets a :class:`Transaction`: statements,
and the locks a read-judge-write needs (advisory locks on PostgreSQL; nothing on SQLite,
whose write transaction already holds the file's one write lock).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from radmfa.store.engines.dialect import Statement

__all__ = ["Engine", "Params", "Row", "Transaction", "forks_seen"]

Row = tuple[Any, ...]
#: Positional (``?`` in a statement) or named (``:name``) parameters.
Params = Sequence[Any] | Mapping[str, Any]
T = TypeVar("T")


class Transaction(Protocol):
    """Statements inside one transaction of an engine."""

    def execute(self, statement: Statement, params: Params = ()) -> None: ...
    def rowcount(self, statement: Statement, params: Params = ()) -> int:
        """Run a write; how many rows it changed."""
        ...

    def one(self, statement: Statement, params: Params = ()) -> Row | None: ...
    def all(self, statement: Statement, params: Params = ()) -> list[Row]: ...
    def many(self, statement: Statement, rows: Sequence[Params]) -> None:
        """The statement once for each of ``rows``."""
        ...

    def lock(self, *keys: tuple[str, ...]) -> None:
        """Hold the locks of ``keys`` until the transaction ends, taken in one fixed order
        (so two transactions never wait for each other in a circle)."""
        ...


class Engine(Protocol):
    """A database behind :class:`radmfa.store.sql.SqlStore`.

    ``what`` names the operation in a :class:`StoreError` ("reserving an attempt of 'alice'
    failed on ..."). ``retry``: whether running the work again after a connection found dead
    midway is harmless (PostgreSQL retries then; SQLite has no connection to lose).
    """

    #: The store for messages: the file, or the database and its host.
    name: str
    #: The schema version found when the store was opened, before migrating it.
    schema_at_open: int
    #: Whether ``DELETE ... RETURNING`` and ``INSERT ... RETURNING`` work (SQLite >= 3.35).
    returning: bool
    #: The driver's errors for a duplicate key, as the ``__cause__`` of a StoreError.
    duplicate_key: tuple[type[BaseException], ...]

    def read(self, what: str, statement: Statement, params: Params = ()) -> list[Row]:
        """One read statement, outside any transaction."""
        ...

    def write(
        self, what: str, statement: Statement, params: Params = (), *, retry: bool = True
    ) -> int:
        """One write statement, atomic on its own; its row count."""
        ...

    def write_returning(
        self, what: str, statement: Statement, params: Params = (), *, retry: bool = True
    ) -> list[Row]:
        """One write statement with ``RETURNING``, atomic on its own; the rows it returned."""
        ...

    def transaction(self, what: str, work: Callable[[Transaction], T], *, retry: bool = True) -> T:
        """``work`` in one write transaction: committed when it returns, rolled back when
        it raises."""
        ...

    def schema_version(self) -> int: ...
    def close(self) -> None: ...


_forks = [0]


def _count_fork() -> None:
    _forks[0] += 1


os.register_at_fork(after_in_child=_count_fork)


def forks_seen() -> int:
    """How many forks led to this process since the module was loaded (0 in the parent): a
    counter, not getpid(), so that checking it costs no system call per query."""
    return _forks[0]
