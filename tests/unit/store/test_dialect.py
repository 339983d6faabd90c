"""Statements written once, spelled for each engine (radmfa.store.engines.dialect)."""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest

import radmfa.store.queries
from radmfa.store.engines.dialect import Statement


def test_a_statement_is_spelled_for_each_engine() -> None:
    s = Statement("SELECT notice FROM users WHERE username = ?{for_update}")
    assert s.sqlite == "SELECT notice FROM users WHERE username = ?"
    assert s.postgres == "SELECT notice FROM users WHERE username = %s FOR UPDATE"
    named = Statement("SELECT {find}(a, :needle) FROM t LIMIT {all_rows} OFFSET :skip")
    assert named.sqlite == "SELECT instr(a, :needle) FROM t LIMIT -1 OFFSET :skip"
    assert named.postgres == "SELECT strpos(a, %(needle)s) FROM t LIMIT ALL OFFSET %(skip)s"


def test_a_percent_sign_is_no_placeholder_on_postgresql() -> None:
    assert Statement("SELECT '100%' WHERE a = ?").postgres == "SELECT '100%%' WHERE a = %s"


def test_a_statement_mixing_placeholder_styles_is_refused() -> None:
    with pytest.raises(ValueError, match="mixes"):
        Statement("SELECT 1 WHERE a = ? AND b = :b")


def _statements() -> list[tuple[str, Statement]]:
    found = []
    for info in pkgutil.iter_modules(radmfa.store.queries.__path__):
        module = importlib.import_module(f"radmfa.store.queries.{info.name}")
        for name, value in vars(module).items():
            if isinstance(value, Statement):
                found.append((f"{info.name}.{name}", value))
    return found


def test_every_query_renders_completely_for_both_engines() -> None:
    statements = _statements()
    assert len(statements) > 40
    for name, statement in statements:
        for text in (statement.sqlite, statement.postgres):
            assert "{" not in text and "}" not in text, name
            assert not re.search(r"(?<![:(\w])user\b", text), name  # the column is username
        assert "?" not in statement.postgres, name
        assert not re.search(r"(?<![:\w]):[a-z]", statement.postgres), name
        assert "FOR UPDATE" not in statement.sqlite, name
