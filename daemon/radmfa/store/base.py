"""The store contract: what every engine (SQLite, PostgreSQL, the memory fake) promises.

Every method is blocking and atomic on its own; the daemon calls them through a
:class:`radmfa.threads.BlockingRunner`, the CLI calls them directly. Engines: SQLite (default);
PostgreSQL follows the same contract and the same test suite.

The records and constants live in :mod:`radmfa.store.model`, the pure rules in
:mod:`radmfa.store.rules`; both are re-exported here, where callers have always found them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from radmfa.store.model import (
    ATTEMPT_FAILED,
    ATTEMPT_LEASE,
    ATTEMPT_NEUTRAL,
    ATTEMPT_SUCCEEDED,
    AUDIT_ADMIN,
    AUDIT_AUTH,
    DUPLICATE_FAILED,
    DUPLICATE_IN_FLIGHT,
    FAILED_ATTEMPT_MEMORY,
    IDLE_USERS_BATCH,
    KNOWN_SECRET,
    LINK_GONE,
    LOCKED_FOR_GOOD,
    SEND_WINDOW,
    STALE_FAILURES,
    USER_DISABLED,
    USER_ENABLED,
    USER_STATUSES,
    USER_SUSPENDED,
    AttemptEnd,
    AttemptStart,
    AuditEvent,
    AuditQuery,
    ChallengeRecord,
    DeviceRef,
    EnrolLink,
    FailureWindow,
    LockoutRule,
    LockState,
    LoginState,
    PendingEnrolment,
    PortalSession,
    SendGrant,
    StoreBusy,
    StoreError,
    TokenChange,
    TokenChanged,
    TokenRecord,
    TrustedDevice,
    UserSettings,
)
from radmfa.store.rules import (
    audit_matches,
    check_finish,
    idle_user,
    next_failure_state,
    send_verdict,
    source_failures_key,
    split_known_secrets,
    total_verdict,
    user_failures_key,
)

__all__ = [
    "ATTEMPT_FAILED",
    "ATTEMPT_LEASE",
    "ATTEMPT_NEUTRAL",
    "ATTEMPT_SUCCEEDED",
    "AUDIT_ADMIN",
    "AUDIT_AUTH",
    "DUPLICATE_FAILED",
    "DUPLICATE_IN_FLIGHT",
    "FAILED_ATTEMPT_MEMORY",
    "IDLE_USERS_BATCH",
    "KNOWN_SECRET",
    "LINK_GONE",
    "LOCKED_FOR_GOOD",
    "SEND_WINDOW",
    "STALE_FAILURES",
    "USER_DISABLED",
    "USER_ENABLED",
    "USER_STATUSES",
    "USER_SUSPENDED",
    "AttemptEnd",
    "AttemptStart",
    "AuditEvent",
    "AuditQuery",
    "ChallengeRecord",
    "DeviceRef",
    "EnrolLink",
    "FailureWindow",
    "LockState",
    "LockoutRule",
    "LoginState",
    "PendingEnrolment",
    "PortalSession",
    "SendGrant",
    "Store",
    "StoreBusy",
    "StoreError",
    "TokenChange",
    "TokenChanged",
    "TokenRecord",
    "TrustedDevice",
    "UserSettings",
    "VersionedStore",
    "audit_matches",
    "check_finish",
    "idle_user",
    "next_failure_state",
    "send_verdict",
    "source_failures_key",
    "split_known_secrets",
    "total_verdict",
    "user_failures_key",
]


@runtime_checkable
class VersionedStore(Protocol):
    """An engine with a versioned schema (SQLite, PostgreSQL; not the memory fake), which
    it migrates when it is opened."""

    #: The version found when the store was opened, before migrating it (0: a new store).
    schema_at_open: int

    def schema_version(self) -> int:
        """The version now (after any migration)."""
        ...


class Store(Protocol):
    # tokens
    def add_token(self, token: TokenRecord) -> bool:
        """:meth:`add_tokens` for one token: False when it was skipped (a known secret)."""
        ...

    def add_tokens(self, tokens: Sequence[TokenRecord]) -> list[TokenRecord]:
        """Add ``tokens`` in one transaction (all or nothing on an error), except those whose
        user already has a token of that type with the same secret: those are skipped and
        returned (see :func:`split_known_secrets`). The check runs inside the transaction,
        so two concurrent imports of one file add each token once."""
        ...

    def list_tokens(self, user: str | None = None) -> list[TokenRecord]: ...
    def remove_tokens(self, user: str, token_id: str | None = None) -> int: ...
    def advance_step(self, token_id: str, step: int, drift: int | None = None) -> bool:
        """Atomically raise ``last_step`` to ``step`` if it is higher; True when it was.
        ``drift`` (when given) is recorded with it: the TOTP step offset of the code.

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

    def change_tokens(
        self,
        change: TokenChange,
        judge: Callable[[list[TokenRecord], list[TokenRecord]], object | None],
    ) -> TokenChanged:
        """Change one user's tokens if ``judge`` approves, in one transaction that no other
        change of the user's tokens interleaves with (threads, workers and nodes alike).

        ``judge(tokens, doomed)`` sees every token of ``change.user`` as stored now and the
        ones the change would remove; a refusal it returns is handed back and nothing is
        written. Then ``change.link`` is spent (:data:`LINK_GONE` when it is not usable for
        the user at ``change.now``), and a token to add with a secret the user keeps is
        :data:`KNOWN_SECRET`: either way nothing is written. The rules "add this factor only
        while the user has none" and "remove this one only if another remains" are judges.
        ``judge`` must be pure and quick: it runs inside the transaction."""
        ...

    # lockout
    def lock_state(self, user: str) -> LockState: ...
    def record_failure(
        self, user: str, now: float, max_failures: int, lock_seconds: float, max_total: int = 0
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

    def set_status(
        self, user: str, status: str, until: float | None, reason: str | None
    ) -> UserSettings:
        """Set the admin status (one of :data:`USER_STATUSES`); returns the settings before."""
        ...

    def note_grace_login(self, user: str, now: float) -> UserSettings:
        """A login on the password alone during the enrolment grace period: sets
        ``first_seen_at`` (if unset) and counts it, atomically; returns the settings after."""
        ...

    def reset_user(self, user: str) -> tuple[int, int]:
        """Remove every token (all factors) and trusted device of ``user``, the preferred
        factor, the grace-period record and every portal session, in one transaction, so the
        next login enrolls afresh (and no browser signed in before, perhaps with the lost
        phone, may enroll one of its own). Returns (tokens removed, devices removed)."""
        ...

    # trusted devices
    def remember_device(self, user: str, device: DeviceRef, now: float, expires_at: float) -> None:
        """Remember (or re-remember, restarting its own timer) one user on one device, as
        that client and NAS report it."""
        ...

    def trusted_device(self, user: str, device: DeviceRef, now: float) -> TrustedDevice | None:
        """The pair if it is remembered from the same station, client and NAS-Identifier and
        not expired at ``now``."""
        ...

    def list_devices(self, user: str | None, now: float) -> list[TrustedDevice]:
        """Unexpired pairs, by user, station, client, NAS-Identifier."""
        ...

    def revoke_devices(self, user: str, device: str | None = None) -> int:
        """Forget one station of ``user`` (through every client and NAS) or all of them; how
        many pairs were forgotten."""
        ...

    # sliding-window throttles
    def note_failures(self, keys: Sequence[str], now: float) -> None:
        """One failure at ``now`` under each key ("user:alice", "source:192.0.2.7")."""
        ...

    def failure_window(self, key: str, since: float) -> FailureWindow:
        """The failures under ``key`` at or after ``since``."""
        ...

    def clear_failures(self, key: str) -> None: ...

    # audit trail: the daemon only appends (and prunes by age)
    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        """All rows in one transaction."""
        ...

    def query_audit(self, query: AuditQuery) -> list[AuditEvent]: ...
    def prune_audit(self, before: float, limit: int) -> int:
        """Delete at most ``limit`` of the oldest rows older than ``before``; how many went.
        Small batches keep each transaction, and so each hold of the write lock, short."""
        ...

    def login_state(
        self,
        user: str,
        now: float,
        *,
        user_since: float | None = None,
        source: str | None = None,
        source_since: float | None = None,
        device: DeviceRef | None = None,
    ) -> LoginState:
        """Lock, settings, the user's and the source's failure windows and the remembered
        device, in one read (on the hot path of every login). A part whose argument is None
        is not looked up and reads as empty."""
        ...

    # out-of-band sends
    def reserve_send(
        self,
        user: str,
        channel: str,
        now: float,
        cooldown: float,
        per_hour: int,
        total_per_hour: int | None = None,
    ) -> SendGrant:
        """Record a send of ``channel`` to ``user`` unless it breaks a limit, atomically.

        Refused when the last send was less than ``cooldown`` seconds ago, ``per_hour`` sends
        to this user or ``total_per_hour`` sends of this channel to anyone (None: no such cap)
        happened in the last hour. Workers and daemons on one store share the counts.
        """
        ...

    # attempts: "may this user try now" and "count this try" as one atomic step
    def begin_attempt(
        self,
        attempt_id: bytes,
        user: str,
        now: float,
        judge: Callable[[LoginState], object | None],
        *,
        user_since: float | None = None,
        source: str | None = None,
        source_since: float | None = None,
        device: DeviceRef | None = None,
        lease: float = ATTEMPT_LEASE,
        ends: Sequence[AttemptEnd] = (),
        with_tokens: bool = False,
    ) -> AttemptStart:
        """Read the login state (as :meth:`login_state`, plus the attempts of ``user`` and
        ``source`` still pending), ask ``judge`` whether this attempt may go on, and if it
        returns None reserve it under ``attempt_id`` until ``now + lease``, all in one
        transaction that no other ``begin_attempt`` or ``finish_attempt`` of the same user or
        source interleaves with (threads, workers and daemons on one store alike).

        ``judge`` must be pure and quick: it runs inside the transaction. An ``attempt_id``
        still reserved (within its lease) or failed within :data:`FAILED_ATTEMPT_MEMORY` is a
        duplicate: nothing else is read or written.

        ``ends`` (of any users) are ended first, in the same transaction, as
        :meth:`end_attempts` would (a duplicate or a refusal ends them too): a login's one
        trip to the store carries the ends batched since the last one. ``with_tokens``:
        ``AttemptStart.tokens`` holds ``user``'s tokens (as :meth:`list_tokens`) when the
        attempt was reserved, read in the same transaction.
        """
        ...

    def finish_attempt(
        self,
        attempt_id: bytes,
        user: str,
        now: float,
        result: str,
        *,
        lockout: LockoutRule | None = None,
        failure_keys: Sequence[str] = (),
        clear_keys: Sequence[str] = (),
    ) -> LockState | None:
        """End a reserved attempt, in one transaction with what its result records:
        ``ATTEMPT_FAILED`` counts a failure (``lockout`` required) and notes one under each of
        ``failure_keys``; ``ATTEMPT_SUCCEEDED`` clears the failure counts (when there are any:
        ``last_success_at`` is written with them) and the windows under ``clear_keys``;
        ``ATTEMPT_NEUTRAL`` records nothing. A failed attempt is remembered for
        :data:`FAILED_ATTEMPT_MEMORY`, any other is forgotten at once (a success keeps nothing
        per login). Returns the lock state after a failure (None otherwise)."""
        ...

    def end_attempts(self, ends: Sequence[AttemptEnd], now: float) -> None:
        """End attempts that failed nobody (as ``finish_attempt`` with ``ATTEMPT_SUCCEEDED``
        or ``ATTEMPT_NEUTRAL`` does for one), all in one transaction: the daemon hands
        them over in batches, since a reservation a few milliseconds late to end only
        errs on the safe side."""
        ...

    # challenges
    def put_challenge(self, challenge: ChallengeRecord, max_open: int | None = None) -> None:
        """Store a new State. With ``max_open``, the user keeps at most that many open ones:
        the oldest beyond it (by ``created_at``, then the order stored) go, in the same
        transaction, so parallel logins cannot pile States up."""
        ...

    def take_challenge(self, state_id: bytes) -> ChallengeRecord | None:
        """Remove and return the challenge: a State works once, whatever the answer."""
        ...

    def purge_expired(self, now: float, failures_before: float | None = None) -> int:
        """Drop expired challenges (the count returned), send records older than an hour,
        expired portal sessions and enrolment links, expired trusted devices, attempts past
        their lease, failure records older than ``failures_before``, and at most
        :data:`IDLE_USERS_BATCH` users rows that hold nothing (see :func:`idle_user`)."""
        ...

    # portal sessions: created whole, then changed one field at a time
    def put_portal_session(self, session: PortalSession) -> None:
        """Store a new session (its key must be new: :class:`StoreError` otherwise)."""
        ...

    def touch_portal_session(self, key: bytes, now: float) -> PortalSession | None:
        """The session under ``key`` with ``last_seen`` set to ``now``, in one step; None
        when there is none or it has expired (:meth:`PortalSession.expired`)."""
        ...

    def delete_portal_session(self, key: bytes) -> bool:
        """End a session; False when it was gone already (of two concurrent ends, one
        True: a sign-in step rotating the session id does it once)."""
        ...

    def set_portal_notice(self, key: bytes, notice: str | None) -> bool:
        """Set (or clear) the one-time message of the session's next page."""
        ...

    def set_portal_sent(self, key: bytes, sent: str | None) -> bool:
        """Record (or clear) the code sent out of band for this session."""
        ...

    def set_portal_proven(self, key: bytes, at: float) -> bool:
        """Record that the session's user proved a second factor at ``at`` (a step-up);
        False when there is no such session."""
        ...

    def take_portal_sent(self, key: bytes) -> str | None:
        """Remove and return the sent code's record: of two concurrent takers, one gets it."""
        ...

    def offer_portal_pending(
        self, key: bytes, pending: PendingEnrolment | None, *, only_if_empty: bool = False
    ) -> PendingEnrolment | None:
        """Set (or clear) the session's pending enrolment; ``only_if_empty``: only when it
        has none. Returns the pending enrolment stored afterwards (None: none, or no such
        session), so two tabs asking for a QR code at once are shown the same one."""
        ...

    def take_portal_pending(self, key: bytes) -> PendingEnrolment | None:
        """Remove and return the pending enrolment: a confirmation sent twice (two tabs, a
        double click) finds it once."""
        ...

    # enrolment links
    def add_enrol_link(self, link: EnrolLink) -> None:
        """Store a new link (its hash must be new: :class:`StoreError` otherwise)."""
        ...

    def enrol_link(self, link: bytes) -> EnrolLink | None:
        """The link with this hash (used or not, expired or not), or None."""
        ...

    # metrics
    def count_locked(self, now: float) -> int:
        """How many users are locked at ``now``, in one query (the metrics gauge)."""
        ...

    def close(self) -> None: ...
