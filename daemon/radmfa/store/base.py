"""The state that must survive restarts and be shared by workers, behind one interface.

Every method is blocking and atomic on its own; the daemon calls them through a
:class:`radmfa.threads.BlockingRunner`, the CLI calls them directly. Engines: SQLite (default);
PostgreSQL follows the same contract and the same test suite.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


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


#: ``LockState.locked_until`` of a lock that only an admin (``radmfa user unlock``) lifts.
LOCKED_FOR_GOOD = math.inf


@dataclass(frozen=True, slots=True)
class LockState:
    user: str
    #: Consecutive failures since the last lock expired (what ``max_failures`` counts).
    failures: int = 0
    locked_until: float | None = None
    last_failure_at: float | None = None
    last_success_at: float | None = None
    #: Consecutive failures since the last success or unlock, across lock expiries (what
    #: ``lockout.max_total_failures`` counts: NIST SP 800-63B 5.2.2).
    total_failures: int = 0

    def is_locked(self, now: float) -> bool:
        return self.locked_until is not None and now < self.locked_until

    @property
    def locked_for_good(self) -> bool:
        return self.locked_until == LOCKED_FOR_GOOD


@dataclass(frozen=True, slots=True)
class LockoutRule:
    """How failures lock an account (``lockout`` in the config)."""

    max_failures: int
    lock_seconds: float
    #: Consecutive failures across lock expiries after which only an admin unlocks; 0: off.
    max_total: int = 0

    def __post_init__(self) -> None:
        if self.max_failures < 1:
            raise ValueError(f"max_failures must be at least 1, got {self.max_failures}")


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
    #: The policy rule that decided round one (the audit trail and trusted devices need it).
    rule: str | None = None


#: ``UserSettings.status`` values, set with ``radmfa user enable|disable|suspend|resume``.
USER_ENABLED = "enabled"
#: Refused outright, before any directory traffic.
USER_DISABLED = "disabled"
#: Second factor suspended (a lost phone): the password alone until ``status_until``.
USER_SUSPENDED = "suspended"
USER_STATUSES = (USER_ENABLED, USER_DISABLED, USER_SUSPENDED)


@dataclass(frozen=True, slots=True)
class UserSettings:
    """Per-user choices, messages and admin state that are not credentials."""

    user: str
    #: The factor type to use first (``radmfa user prefer``); email/sms are sent at once.
    preferred: str | None = None
    #: A message for the next prompt (a code that could not be delivered).
    notice: str | None = None
    #: One of :data:`USER_STATUSES`.
    status: str = USER_ENABLED
    #: Suspended until then (None: until ``radmfa user resume``).
    status_until: float | None = None
    #: Why the admin set the status (also in the audit trail).
    status_reason: str | None = None
    #: First login on the password alone during an enrolment grace period.
    first_seen_at: float | None = None
    #: Logins on the password alone so far during the grace period.
    grace_logins: int = 0

    @property
    def disabled(self) -> bool:
        return self.status == USER_DISABLED

    def mfa_suspended(self, now: float) -> bool:
        """Suspended and not yet past ``status_until``."""
        return self.status == USER_SUSPENDED and (
            self.status_until is None or now < self.status_until
        )


@dataclass(frozen=True, slots=True)
class DeviceRef:
    """A device as one NAS reports it. A Calling-Station-Id is whatever the NAS says (a MAC
    anyone can set, an address a NAT shares): it identifies a device only together with the
    RADIUS client entry and NAS-Identifier that reported it, so a remembered device counts
    only for requests from those."""

    #: The normalised Calling-Station-Id (see :func:`radmfa.auth.stations.device_key`).
    station: str
    #: The name of the client entry (``clients[].name``) the request came from.
    client: str
    #: The NAS-Identifier as received; "" without one.
    nas_id: str = ""


@dataclass(frozen=True, slots=True)
class TrustedDevice:
    """A (user, device) pair remembered after a login with a second factor."""

    user: str
    #: The normalised Calling-Station-Id (see :func:`radmfa.auth.stations.device_key`).
    device: str
    #: Where it was remembered: the client entry and NAS-Identifier ("" without one).
    client: str
    nas_id: str
    #: The login with a second factor that (last) remembered it.
    remembered_at: float
    expires_at: float

    def valid(self, now: float) -> bool:
        return now < self.expires_at

    @property
    def ref(self) -> DeviceRef:
        return DeviceRef(self.device, self.client, self.nas_id)


@dataclass(frozen=True, slots=True)
class FailureWindow:
    """Failures recorded under one key since a point in time (sliding-window throttles)."""

    count: int = 0
    last_at: float | None = None


@dataclass(frozen=True, slots=True)
class LoginState:
    """What a login needs to know about a user besides the tokens (``Store.login_state``)."""

    lock: LockState
    settings: UserSettings
    #: Failures under the user's key since ``user_since`` (empty when not asked).
    user_window: FailureWindow
    #: Failures under the source's key since ``source_since`` (empty when not asked).
    source_window: FailureWindow
    #: The request's device, when remembered for this user and not expired.
    device: TrustedDevice | None = None
    #: Attempts of this user, and from this source, reserved and not yet finished
    #: (``Store.begin_attempt``); 0 when read by ``login_state``.
    pending_user: int = 0
    pending_source: int = 0


#: How long an attempt reservation lives at least. A request that never finishes (its process
#: died) counts as a pending failure until then; the daemon makes it longer than the longest
#: a request can take (:func:`radmfa.auth.ledger.attempt_lease`).
ATTEMPT_LEASE = 60.0
#: How long a failed attempt is remembered: a retransmission of it that reaches another
#: worker or daemon within this time (RFC 5080 keeps duplicates 5-30 s) is answered with a
#: reject at once, without a second bind and without being counted again.
FAILED_ATTEMPT_MEMORY = 30.0

#: ``Store.finish_attempt`` results.
ATTEMPT_FAILED = "failed"
ATTEMPT_SUCCEEDED = "succeeded"
#: Neither: a refusal that is not a guess (policy, directory down, the account refused by the
#: directory, a challenge issued): only the reservation ends.
ATTEMPT_NEUTRAL = "neutral"

#: ``AttemptStart.duplicate``: the same request is being decided by another process ...
DUPLICATE_IN_FLIGHT = "in_flight"
#: ... or was, and failed.
DUPLICATE_FAILED = "failed"


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """An attempt that ended without a failure (``Store.end_attempts``): a success clears
    the user's failure counts and the windows under ``clear_keys``; any other end only
    releases the reservation."""

    attempt_id: bytes
    user: str
    succeeded: bool = False
    clear_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AttemptStart:
    """The answer of ``Store.begin_attempt``."""

    #: The login state the judgement saw (None for a duplicate).
    state: LoginState | None
    #: What ``judge`` returned: None when the attempt was reserved.
    refusal: object | None = None
    #: This very request (the same attempt id) is already reserved by another worker or
    #: daemon (:data:`DUPLICATE_IN_FLIGHT`), or failed lately (:data:`DUPLICATE_FAILED`).
    duplicate: str | None = None

    @property
    def reserved(self) -> bool:
        return self.state is not None and self.refusal is None and self.duplicate is None


def user_failures_key(user: str) -> str:
    """The ``failures`` key of a user's sliding window (rate_limits.user)."""
    return f"user:{user}"


def source_failures_key(source: str) -> str:
    """The ``failures`` key of a station or packet source (rate_limits.source)."""
    return f"source:{source}"


#: ``AuditEvent.kind``: an Access-Request decision, or a change made by an administrator.
AUDIT_AUTH = "auth"
AUDIT_ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One row of the audit trail. Authentication rows fill the request fields, admin rows
    ``actor``, ``action``, ``before``, ``after``; ``reason`` is the reason code of a decision
    or the text an admin gave. ``event_id`` is set by the store (insertion order)."""

    at: float
    kind: str
    user: str | None
    reason: str | None = None
    # authentication
    outcome: str | None = None
    client: str | None = None
    src: str | None = None
    nas_id: str | None = None
    station: str | None = None
    method: str | None = None
    factor: str | None = None
    trusted_device: bool = False
    rule: str | None = None
    latency_ms: float | None = None
    # admin changes
    actor: str | None = None
    action: str | None = None
    before: str | None = None
    after: str | None = None
    event_id: int | None = None


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters of ``Store.query_audit``; None means "any". Rows come oldest first."""

    user: str | None = None
    since: float | None = None
    #: Exclusive upper bound.
    until: float | None = None
    #: accept / reject / challenge: authentication rows with that outcome only.
    outcome: str | None = None
    #: A decision's reason code (exact), or a word in an admin change's reason.
    reason: str | None = None
    kind: str | None = None
    #: The newest ``limit`` rows matching (still returned oldest first).
    limit: int | None = None


def audit_matches(event: AuditEvent, query: AuditQuery) -> bool:
    """The filter every engine applies (the SQL of the SQLite engine says the same)."""
    if query.user is not None and event.user != query.user:
        return False
    if query.since is not None and event.at < query.since:
        return False
    if query.until is not None and event.at >= query.until:
        return False
    if query.kind is not None and event.kind != query.kind:
        return False
    if query.outcome is not None and (event.kind != AUDIT_AUTH or event.outcome != query.outcome):
        return False
    if query.reason is not None:
        if event.kind == AUDIT_AUTH:
            return event.reason == query.reason
        return query.reason.casefold() in (event.reason or "").casefold()
    return True


@dataclass(frozen=True, slots=True)
class SendGrant:
    """The answer of ``Store.reserve_send``: may a code be sent now, else how long to wait."""

    granted: bool
    retry_after: float = 0.0
    #: "cooldown", "hourly_cap" (this user) or "total_cap" (all users) when refused.
    limit: str | None = None


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
        factor and the grace-period record, in one transaction, so the next login enrolls
        afresh. Returns (tokens removed, devices removed)."""
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
    ) -> AttemptStart:
        """Read the login state (as :meth:`login_state`, plus the attempts of ``user`` and
        ``source`` still pending), ask ``judge`` whether this attempt may go on, and if it
        returns None reserve it under ``attempt_id`` until ``now + lease``, all in one
        transaction that no other ``begin_attempt`` or ``finish_attempt`` of the same user or
        source interleaves with (threads, workers and daemons on one store alike).

        ``judge`` must be pure and quick: it runs inside the transaction. An ``attempt_id``
        still reserved (within its lease) or failed within :data:`FAILED_ATTEMPT_MEMORY` is a
        duplicate: nothing else is read or written.
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
        expired trusted devices, attempts past their lease, failure records older than
        ``failures_before``, and at most :data:`IDLE_USERS_BATCH` users rows that hold nothing
        (see :func:`idle_user`)."""
        ...

    # metrics
    def count_locked(self, now: float) -> int:
        """How many users are locked at ``now``, in one query (the metrics gauge)."""
        ...

    def close(self) -> None: ...


def check_finish(result: str, lockout: LockoutRule | None) -> None:
    """The arguments every engine's ``finish_attempt`` refuses (ValueError)."""
    if result == ATTEMPT_FAILED:
        if lockout is None:
            raise ValueError("a failed attempt needs the lockout rule")
    elif result not in (ATTEMPT_SUCCEEDED, ATTEMPT_NEUTRAL):
        raise ValueError(f"unknown attempt result {result!r}")


def next_failure_state(state: LockState, now: float, rule: LockoutRule) -> LockState:
    """The lock state after one more failure; ``state`` itself when locked (never extended).

    Shared by every engine so they count identically: an expired lock starts a fresh count
    towards ``max_failures``, which locks until ``now + lock_seconds``; the total across
    expiries only a success or an admin resets, and at ``max_total`` the lock is for good.
    """
    if state.is_locked(now):
        return state
    failures = 0 if state.locked_until is not None else state.failures
    failures += 1
    total = state.total_failures + 1
    locked_until = None
    if rule.max_total and total >= rule.max_total:
        locked_until = LOCKED_FOR_GOOD
    elif failures >= rule.max_failures:
        locked_until = now + rule.lock_seconds
    return LockState(
        user=state.user,
        failures=failures,
        locked_until=locked_until,
        last_failure_at=now,
        last_success_at=state.last_success_at,
        total_failures=total,
    )


#: Idle users rows :meth:`Store.purge_expired` deletes at most per call (it runs every
#: minute), so one purge never holds the write lock for long.
IDLE_USERS_BATCH = 500


#: Failures of a name that never logged in, has no token and no admin state are forgotten
#: this long after the last one: user names sprayed at the server must not grow the store
#: for ever (and a guesser who waits a week between guesses is no threat to the total cap).
STALE_FAILURES = 7 * 86400.0


def idle_user(lock: LockState, settings: UserSettings, has_tokens: bool, now: float) -> bool:
    """True when a user's row holds nothing a default row would not: the default status
    (without a reason), no preferred factor, no notice, no grace-period record, no tokens,
    and either no failures and no lock, or only failures of a name that never logged in, none
    for :data:`STALE_FAILURES` and no lock now. Such rows (a name that once logged in with
    the password alone, an unlocked user, a reset, a sprayed name) are deleted by
    ``purge_expired``: the answer for that name is the same without them."""
    if has_tokens or settings != UserSettings(settings.user):
        return False
    if lock.failures == 0 and lock.total_failures == 0 and lock.locked_until is None:
        return True
    return (
        lock.last_success_at is None
        and lock.last_failure_at is not None
        and lock.last_failure_at < now - STALE_FAILURES
        and not lock.is_locked(now)
    )


def split_known_secrets(
    existing: Iterable[TokenRecord], tokens: Sequence[TokenRecord]
) -> tuple[list[TokenRecord], list[TokenRecord]]:
    """``tokens`` split into (new, skipped): a token is skipped when its user already has a
    token of its type with the same secret, in ``existing`` or earlier in ``tokens``.

    Two tokens with one secret would accept every code twice (replay protection is per
    token), so re-running an import or ``token add --secret`` must not add one. Secrets are
    compared in constant time, as HMAC keys: trailing zero bytes are no part of one (HMAC pads
    a short key with them, so ``K`` and ``K + b"\\0"`` give the same codes). Shared by every
    engine, which calls it inside the transaction that inserts, with ``existing`` = the stored
    tokens of those users and types.
    """
    seen: dict[tuple[str, str], list[bytes]] = {}
    for token in existing:
        seen.setdefault((token.user, token.type), []).append(_as_key(token.secret))
    new: list[TokenRecord] = []
    skipped: list[TokenRecord] = []
    for token in tokens:
        secrets = seen.setdefault((token.user, token.type), [])
        wanted = _as_key(token.secret)
        known = False
        for secret in secrets:  # no early exit: every comparison is made
            known |= hmac.compare_digest(secret, wanted)
        (skipped if known else new).append(token)
        if not known:
            secrets.append(wanted)
    return new, skipped


def _as_key(secret: bytes) -> bytes:
    """A secret as the HMAC key it is, without the zero padding HMAC would add itself."""
    return secret.rstrip(b"\x00")


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


def total_verdict(nth_newest: float | None, now: float) -> SendGrant:
    """The cap for all users of a channel: ``nth_newest`` is the time of the
    ``total_per_hour``-th most recent send of the last :data:`SEND_WINDOW` seconds (None when
    there were fewer): while it is in the window, the cap is reached."""
    if nth_newest is not None and now - nth_newest < SEND_WINDOW:
        return SendGrant(False, nth_newest + SEND_WINDOW - now, "total_cap")
    return SendGrant(True)
