"""How a statement written once is spelled for each database.

The domain queries write every statement in one neutral spelling: ``?`` for positional
parameters, ``:name`` for named ones, and a few words in braces where SQLite and PostgreSQL
spell the same thing differently:

- ``{for_update}``: ``FOR UPDATE`` on PostgreSQL, where a row read to be written back must
  be locked against writers of single statements; nothing on SQLite, whose write transaction
  already excludes every other writer.
- ``{find}``: the position of a substring: ``instr`` (SQLite), ``strpos`` (PostgreSQL).
- ``{all_rows}``: a LIMIT that limits nothing (SQLite wants a LIMIT before an OFFSET): ``-1``,
  ``ALL``.
- ``{stored_order}``: the order rows were stored in: SQLite's ``rowid``, PostgreSQL's
  identity column ``seq``.

A :class:`Statement` renders both spellings once, when the query module is imported: nothing
is built per call. Where the databases truly differ, a statement carries an explicit variant
per engine (spelled the same neutral way).
"""

from __future__ import annotations

import re

__all__ = ["POSTGRES_WORDS", "SQLITE_WORDS", "Statement"]

SQLITE_WORDS = {"for_update": "", "find": "instr", "all_rows": "-1", "stored_order": "rowid"}
POSTGRES_WORDS = {
    "for_update": " FOR UPDATE",
    "find": "strpos",
    "all_rows": "ALL",
    "stored_order": "seq",
}

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def _sqlite(neutral: str) -> str:
    """SQLite reads ``?`` and ``:name`` itself."""
    return neutral.format_map(SQLITE_WORDS)


def _postgres(neutral: str) -> str:
    """psycopg reads ``%s`` and ``%(name)s`` (and ``%%`` for a literal percent sign)."""
    text = neutral.format_map(POSTGRES_WORDS).replace("%", "%%")
    named = _NAMED.sub(r"%(\1)s", text)
    if named != text and "?" in text:
        raise ValueError(f"a statement mixes ? and :name parameters: {neutral}")
    return named.replace("?", "%s")


class Statement:
    """One statement, spelled for every engine."""

    __slots__ = ("neutral", "postgres", "sqlite")

    def __init__(self, neutral: str) -> None:
        self.neutral = neutral
        self.sqlite = _sqlite(neutral)
        self.postgres = _postgres(neutral)

    @classmethod
    def per_engine(cls, *, sqlite: str, postgres: str) -> Statement:
        """A statement the databases cannot share, each variant in the neutral spelling."""
        statement = cls(sqlite)
        statement.postgres = _postgres(postgres)
        return statement

    def __repr__(self) -> str:
        return f"Statement({self.neutral!r})"
