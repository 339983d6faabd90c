"""The state that must survive restarts and be shared by workers, behind one interface.

Every method is blocking and atomic on its own; the daemon calls them through a
:class:`radmfa.threads.BlockingRunner`, the CLI calls them directly. Engines: SQLite (default);
PostgreSQL follows the same contract and the same test suite.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class StoreError(Exception):
    """The store could not complete an operation (I/O, corruption, lock timeout)."""


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A second-factor credential. ``secret`` is plaintext only in memory, never at rest."""

    token_id: str
    user: str
    type: str  # "totp" (more in later factors)
    secret: bytes
    digits: int
    algorithm: str  # SHA1 | SHA256 | SHA512
    period: int
    created_at: float
    #: Highest TOTP time step (or next HOTP counter) accepted so far; replay protection.
    last_step: int | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class LockState:
    user: str
    failures: int = 0
    locked_until: float | None = None
    last_failure_at: float | None = None
    last_success_at: float | None = None

    def is_locked(self, now: float) -> bool:
        return self.locked_until is not None and now < self.locked_until


@dataclass(frozen=True, slots=True)
class ChallengeRecord:
    """Server-side half of an Access-Challenge: the State is only a random handle to this."""

    state_id: bytes
    user: str
    client_name: str
    client_address: str
    expires_at: float
    created_at: float


class Store(Protocol):
    # tokens
    def add_token(self, token: TokenRecord) -> None: ...
    def add_tokens(self, tokens: Sequence[TokenRecord]) -> None:
        """All or nothing, in one transaction (bulk import)."""
        ...

    def list_tokens(self, user: str | None = None) -> list[TokenRecord]: ...
    def remove_tokens(self, user: str, token_id: str | None = None) -> int: ...
    def advance_step(self, token_id: str, step: int) -> bool:
        """Atomically raise ``last_step`` to ``step`` if it is higher; True when it was.

        This compare-and-set is the replay protection: two concurrent requests (threads,
        processes, or daemons on one database) with the same code get exactly one True.
        """
        ...

    # lockout
    def lock_state(self, user: str) -> LockState: ...
    def record_failure(
        self, user: str, now: float, max_failures: int, lock_seconds: float
    ) -> LockState: ...
    def record_success(self, user: str, now: float) -> None: ...
    def unlock(self, user: str) -> bool: ...
    def known_users(self) -> list[str]: ...

    # challenges
    def put_challenge(self, challenge: ChallengeRecord) -> None: ...
    def take_challenge(self, state_id: bytes) -> ChallengeRecord | None:
        """Remove and return the challenge: a State works once, whatever the answer."""
        ...

    def purge_expired(self, now: float) -> int: ...

    def close(self) -> None: ...
