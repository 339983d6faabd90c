"""Moved to :mod:`radmfa.store.schema.postgres`; these names stay importable from here."""

from __future__ import annotations

from radmfa.store.schema.postgres import DATA_TABLES, MIGRATIONS, SCHEMA_VERSION

__all__ = ["DATA_TABLES", "MIGRATIONS", "SCHEMA_VERSION"]
