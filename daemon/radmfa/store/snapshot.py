"""A whole store in engine-neutral records, for moving it to another engine
(``radmfa store copy``): read by :func:`radmfa.store.sqlite_export.read_sqlite_snapshot`,
written by :meth:`radmfa.store.postgres.PostgresStore.import_snapshot`.

The records are the store's own types (token secrets opened, so the destination seals them
with its key); the rows come as iterables read while they are written, so an audit trail of
any length never sits in memory. Open challenges and attempts in progress are not part of a
snapshot: they live seconds to minutes, and are only counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields

from radmfa.store.model import (
    AuditEvent,
    LockState,
    StoreError,
    TokenRecord,
    TrustedDevice,
    UserSettings,
)

__all__ = [
    "FailureRecord",
    "SendRecord",
    "Snapshot",
    "SnapshotCounts",
    "StoreNotEmpty",
    "UserRow",
]


class StoreNotEmpty(StoreError):
    """The destination of a copy already holds data: a copy only fills an empty store."""

    def __init__(self, found: SnapshotCounts) -> None:
        super().__init__(f"it holds {found.describe(include_empty=False)}")
        self.found = found


@dataclass(frozen=True, slots=True)
class UserRow:
    """One user's row: the lockout counters and the admin state and settings."""

    lock: LockState
    settings: UserSettings


@dataclass(frozen=True, slots=True)
class FailureRecord:
    """One failure under a sliding-window key ("user:alice", "source:192.0.2.7")."""

    key: str
    at: float


@dataclass(frozen=True, slots=True)
class SendRecord:
    """One out-of-band code sent (what the hourly caps count)."""

    user: str
    channel: str
    sent_at: float


#: How each count is named in messages (singular, plural).
_NAMES = {
    "tokens": ("token", "tokens"),
    "users": ("user", "users"),
    "devices": ("trusted device", "trusted devices"),
    "failures": ("failure record", "failure records"),
    "sends": ("send record", "send records"),
    "audit": ("audit row", "audit rows"),
    "challenges": ("open challenge", "open challenges"),
    "attempts": ("attempt in progress", "attempts in progress"),
}


@dataclass(frozen=True, slots=True)
class SnapshotCounts:
    """Rows per kind: what a snapshot holds (and what was written), or what a store holds."""

    tokens: int = 0
    users: int = 0
    devices: int = 0
    failures: int = 0
    sends: int = 0
    audit: int = 0
    #: Not copied: short-lived (a challenge State lives minutes, an attempt seconds).
    challenges: int = 0
    attempts: int = 0

    @property
    def copied(self) -> SnapshotCounts:
        """The kinds a copy carries over (the short-lived ones zero)."""
        return SnapshotCounts(**{name: getattr(self, name) for name in _COPIED})

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))

    def describe(self, *, include_empty: bool = True) -> str:
        """``1,234 tokens, 1 user, ...``: every kind, or only those with rows."""
        parts = [
            _count(f.name, getattr(self, f.name))
            for f in fields(self)
            if include_empty or getattr(self, f.name)
        ]
        return ", ".join(parts) or "nothing"

    def copy_summary(self) -> str:
        """What a copy of a snapshot with these counts says it did."""
        text = "copied: " + ", ".join(_count(name, getattr(self, name)) for name in _COPIED)
        skipped = SnapshotCounts(challenges=self.challenges, attempts=self.attempts)
        if skipped.total:
            text += (
                f"; skipped: {skipped.describe(include_empty=False)} "
                "(short-lived: they end within minutes)"
            )
        return text


#: The kinds a copy carries over.
_COPIED = ("tokens", "users", "devices", "failures", "sends", "audit")


def _count(kind: str, n: int) -> str:
    singular, plural = _NAMES[kind]
    return f"{n:,} {singular if n == 1 else plural}"


@dataclass(frozen=True)
class Snapshot:
    """A store's data, read in one consistent view. Each iterable can be read once, while
    the reader that made it is open; ``counts`` were taken in the same view, and a writer
    checks that it wrote exactly that many rows of each kind."""

    #: Where it comes from, for messages (a file name: never a secret).
    source: str
    counts: SnapshotCounts
    users: Iterable[UserRow]
    #: Secrets opened with the source's key.
    tokens: Iterable[TokenRecord]
    devices: Iterable[TrustedDevice]
    failures: Iterable[FailureRecord]
    sends: Iterable[SendRecord]
    #: Oldest first (insertion order), each with its ``event_id``.
    audit: Iterable[AuditEvent]
