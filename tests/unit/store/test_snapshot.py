"""What a store copy says, and the statements that guard its destination."""

from __future__ import annotations

import re

from radmfa.store import pg_import
from radmfa.store.pg_schema import DATA_TABLES
from radmfa.store.snapshot import SnapshotCounts


def test_the_copy_locks_and_counts_every_data_table() -> None:
    """A table added to the schema but not to these would let a copy into a store holding
    rows of it go ahead, or a writer slip rows in between the check and the copy."""
    locked = re.fullmatch(r"LOCK TABLE (.*) IN EXCLUSIVE MODE", pg_import._LOCK_DATA_TABLES)
    assert locked is not None and sorted(locked.group(1).split(", ")) == sorted(DATA_TABLES)
    counted = re.findall(r"COUNT\(\*\) FROM (\w+)", pg_import._COUNT_DATA_TABLES)
    assert sorted(counted) == sorted(DATA_TABLES)


def test_the_summary_names_every_kind_copied_and_what_was_skipped() -> None:
    counts = SnapshotCounts(tokens=1234, users=1, audit=98765, challenges=3)
    assert counts.copy_summary() == (
        "copied: 1,234 tokens, 1 user, 0 trusted devices, 0 failure records, 0 send records, "
        "98,765 audit rows; skipped: 3 open challenges (short-lived: they end within minutes)"
    )
    assert SnapshotCounts(users=2).copy_summary().endswith("0 audit rows")
    assert SnapshotCounts(audit=1, attempts=1).describe(include_empty=False) == (
        "1 audit row, 1 attempt in progress"
    )
    assert SnapshotCounts().describe(include_empty=False) == "nothing"
