"""The store's records and constants: what every engine stores and hands back.

Plain frozen dataclasses and the values their fields take, with no behaviour beyond reading
themselves; the rules that compute on them are in :mod:`radmfa.store.rules`, the contract in
:mod:`radmfa.store.base`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


class StoreError(Exception):
    """The store could not complete an operation (I/O, corruption, lock timeout)."""


class StoreBusy(StoreError):
    """Another connection held the lock and this one may not wait (the reactor thread's
    SQLite connection): nothing was done, so the call may run again where waiting is
    allowed (the store thread)."""


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
    #: TOTP: how many steps the last accepted code sat from the server's clock (+1: the
    #: phone runs ahead); None until a code is accepted. ``radmfa user show`` shows it.
    drift: int | None = None


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
    releases the reservation.

    ``at`` is when the success was decided: ends reach the store in batches, later, and a
    failure counted in between (a guess running beside the honest login, on this node or
    another) must not be wiped by it, nor a lock it set lifted. The counts are cleared only
    when the user's last failure is not after ``at``, and only window entries up to ``at``
    go. None: the time the batch is ended."""

    attempt_id: bytes
    user: str
    succeeded: bool = False
    clear_keys: tuple[str, ...] = ()
    at: float | None = None


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
    #: The user's tokens, read in the same transaction when asked for (``with_tokens``) and
    #: the attempt was reserved; None otherwise.
    tokens: list[TokenRecord] | None = None

    @property
    def reserved(self) -> bool:
        return self.state is not None and self.refusal is None and self.duplicate is None


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


@dataclass(frozen=True, slots=True)
class SendGrant:
    """The answer of ``Store.reserve_send``: may a code be sent now, else how long to wait."""

    granted: bool
    retry_after: float = 0.0
    #: "cooldown", "hourly_cap" (this user) or "total_cap" (all users) when refused.
    limit: str | None = None


#: Idle users rows :meth:`Store.purge_expired` deletes at most per call (it runs every
#: minute), so one purge never holds the write lock for long.
IDLE_USERS_BATCH = 500


#: Failures of a name that never logged in, has no token and no admin state are forgotten
#: this long after the last one: user names sprayed at the server must not grow the store
#: for ever (and a guesser who waits a week between guesses is no threat to the total cap).
STALE_FAILURES = 7 * 86400.0

#: Send records older than this no longer count towards ``reserve_send``'s hourly cap.
SEND_WINDOW = 3600.0


# -- the portal ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PendingEnrolment:
    """An authenticator app shown to a portal session (its QR code), not stored as a token
    until a code from it comes back; ``replacing``: the token it is to replace."""

    token: TokenRecord
    replacing: str | None = None


@dataclass(frozen=True, slots=True)
class PortalSession:
    """One browser's session of the self-service portal, as the store keeps it.

    ``key`` is the SHA-256 of the cookie's value, never the value. ``pending`` holds a TOTP
    secret: engines seal it as they seal token secrets, bound to this session's key. ``sent``
    is the portal's own record of a code sent out of band (opaque here: a JSON text with the
    code's hash, never the code). Everything after ``last_seen`` changes only through the
    field-specific calls of the store contract, never by writing the whole record back.
    """

    key: bytes
    #: The store key of the user, and the canonical name pages show.
    user: str
    name: str
    stage: str
    #: The form token of this session.
    csrf: str
    created_at: float
    last_seen: float
    #: Seconds without a request after which the session ends ...
    idle: float
    #: ... and the moment it ends whatever happens (``session_max`` after sign-in).
    ends_at: float
    grace_ends_at: float | None = None
    helpdesk: bool = False
    #: The hash of the enrolment link this (password-only) session was started with.
    link: bytes | None = None
    notice: str | None = None
    pending: PendingEnrolment | None = None
    sent: str | None = None
    #: When the user last proved a second factor in this session (at sign-in, at enrolment,
    #: at a "confirm it is you" step); None: never (a password-only session). Security
    #: changes need it recent (``portal.reauth_after``).
    proven_at: float | None = None

    def expired(self, now: float) -> bool:
        return now >= self.last_seen + self.idle or now >= self.ends_at


@dataclass(frozen=True, slots=True)
class EnrolLink:
    """A one-time enrolment link (``radmfa enroll-link``): only the hash of its secret part
    is stored; it works for ``user`` alone, until ``expires_at``, once."""

    link: bytes
    user: str
    created_at: float
    expires_at: float
    #: Who made it, as the audit trail names them.
    created_by: str
    used_at: float | None = None

    def usable(self, user: str, now: float) -> bool:
        return self.user == user and self.used_at is None and now < self.expires_at


@dataclass(frozen=True, slots=True)
class TokenChange:
    """One change of one user's tokens, judged and made in one transaction
    (``Store.change_tokens``): remove the tokens named (by id, or every token of a type),
    add others, and spend an enrolment link, all or nothing."""

    user: str
    add: tuple[TokenRecord, ...] = ()
    remove_ids: tuple[str, ...] = ()
    remove_types: tuple[str, ...] = ()
    #: An enrolment link of ``user`` to spend in the same transaction (usable at ``now``).
    link: bytes | None = None
    now: float = 0.0


#: ``TokenChanged.refusal`` when a token to add has a secret the user already holds.
KNOWN_SECRET = "known_secret"
#: ``TokenChanged.refusal`` when the enrolment link is used, expired or not the user's.
LINK_GONE = "link_gone"


@dataclass(frozen=True, slots=True)
class TokenChanged:
    """The answer of ``Store.change_tokens``: what was removed, or why nothing changed."""

    #: What the judge returned, or :data:`KNOWN_SECRET` / :data:`LINK_GONE`; None: done.
    refusal: object | None
    removed: tuple[TokenRecord, ...] = ()

    @property
    def done(self) -> bool:
        return self.refusal is None
