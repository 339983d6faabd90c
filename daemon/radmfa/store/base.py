"""The state that must survive restarts and be shared by workers, behind one interface.

Every method is blocking and atomic on its own; the daemon calls them through a
:class:`radmfa.threads.BlockingRunner`, the CLI calls them directly. Engines: SQLite (default);
PostgreSQL follows the same contract and the same test suite.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


class StoreError(Exception):
    """The store could not complete an operation (I/O, corruption, lock timeout)."""


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A second-factor credential. ``secret`` is plaintext only in memory, never at rest."""

    token_id: str
    user: str
    #: The factor that reads it: "totp", "hotp", "backup", "emergency", "email", "sms", or a
    #: plugin's type. What ``secret``, ``digits`` and ``period`` mean is the factor's business.
    type: str
    secret: bytes
    digits: int
    algorithm: str  # SHA1 | SHA256 | SHA512 for OTP tokens
    #: TOTP: seconds per step. Emergency codes: lifetime in seconds. Unused (0) by others.
    period: int
    created_at: float
    #: The highest step used so far, moved only forward by ``Store.advance_step``: the TOTP
    #: time step, the HOTP counter last accepted, 1 once a single-use code is spent (backup,
    #: emergency) or an out-of-band address is confirmed (email, sms).
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
    #: An out-of-band code sent for this State: the factor type, the token (address) it went
    #: to, and its hash (never the code). A code works only with the State it was sent for.
    factor: str | None = None
    token_id: str | None = None
    code_hash: bytes | None = field(default=None, repr=False)
    #: "code": any code or keyword; "confirm": the code confirms a new address;
    #: "another": an address was just confirmed, now a different factor must follow.
    phase: str = "code"
    #: When the first challenge of this login went out; follow-up States keep it, so a login
    #: cannot be stretched forever by asking for new codes.
    started_at: float | None = None


@dataclass(frozen=True, slots=True)
class UserSettings:
    """Per-user choices and messages that are not credentials."""

    user: str
    #: The factor type to use first (``radmfa user prefer``); email/sms are sent at once.
    preferred: str | None = None
    #: A message for the next prompt (a code that could not be delivered).
    notice: str | None = None


@dataclass(frozen=True, slots=True)
class SendGrant:
    """The answer of ``Store.reserve_send``: may a code be sent now, else how long to wait."""

    granted: bool
    retry_after: float = 0.0
    #: "cooldown" or "hourly_cap" when refused.
    limit: str | None = None


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

    def replace_tokens(self, user: str, type: str, tokens: Sequence[TokenRecord]) -> int:
        """Remove every ``type`` token of ``user`` and add ``tokens``, in one transaction.

        Returns how many were removed. Regenerating backup codes, issuing an emergency code and
        changing an address use it: the old set is dead the moment the new one exists.
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

    # per-user settings
    def user_settings(self, user: str) -> UserSettings: ...
    def set_preferred(self, user: str, factor: str | None) -> None: ...
    def set_notice(self, user: str, notice: str | None) -> None: ...
    def take_notice(self, user: str) -> str | None:
        """Return and clear the user's notice (shown once, at the next prompt)."""
        ...

    # out-of-band sends
    def reserve_send(
        self, user: str, channel: str, now: float, cooldown: float, per_hour: int
    ) -> SendGrant:
        """Record a send of ``channel`` to ``user`` unless it breaks a limit, atomically.

        Refused when the last send was less than ``cooldown`` seconds ago or ``per_hour`` sends
        happened in the last hour. Workers and daemons on one store share the count.
        """
        ...

    # challenges
    def put_challenge(self, challenge: ChallengeRecord) -> None: ...
    def take_challenge(self, state_id: bytes) -> ChallengeRecord | None:
        """Remove and return the challenge: a State works once, whatever the answer."""
        ...

    def purge_expired(self, now: float) -> int:
        """Drop expired challenges (the count returned) and send records older than an hour."""
        ...

    def close(self) -> None: ...


#: Send records older than this no longer count towards ``reserve_send``'s hourly cap.
SEND_WINDOW = 3600.0


def send_verdict(recent: Sequence[float], now: float, cooldown: float, per_hour: int) -> SendGrant:
    """Shared by every engine so they limit identically: ``recent`` are the send times of the
    last :data:`SEND_WINDOW` seconds for one user and channel."""
    if recent:
        last = max(recent)
        if now - last < cooldown:
            return SendGrant(False, last + cooldown - now, "cooldown")
    in_window = sorted(t for t in recent if now - t < SEND_WINDOW)
    if len(in_window) >= per_hour:
        oldest = in_window[len(in_window) - per_hour]
        return SendGrant(False, oldest + SEND_WINDOW - now, "hourly_cap")
    return SendGrant(True)
