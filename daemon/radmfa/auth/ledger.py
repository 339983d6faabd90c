"""A user's standing in the store: one atomic "may this user try now, and count the try",
the refusals it allows before any directory traffic, and the bookkeeping once a credential
was tried.

Every attempt that may reach a bind or a code check is reserved in the store first
(:meth:`Ledger.begin`): the reservation and the lock/throttle judgement are one transaction,
and a reserved attempt counts as a failure that may still happen. So a burst of concurrent
guesses gets at most as many binds and code checks as the lockout and the throttles have room
for; the rest are refused without directory traffic. Each reservation ends exactly once:
:meth:`Ledger.fail` (the user's own credential failed), :meth:`Ledger.succeed`, or
:meth:`Ledger.release` (anything else: infrastructure failures and the directory's account
refusals are never counted). A reservation whose request never ends (a crash) stops counting
after :data:`~radmfa.store.base.ATTEMPT_LEASE`.

Reserving, failing and ending go to the store as single calls (``begin_attempt``,
``finish_attempt``, ``end_attempts``), each one transaction: on SQLite they run on the
reactor unless another connection holds the lock (:class:`~radmfa.threads.InlineFirstRunner`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from radmfa.auth.decisions import reject
from radmfa.auth.model import AccessRequest, Decision, Outcome, Reason
from radmfa.auth.policy import Verdict, device_key
from radmfa.clocktrust import DriftWatch
from radmfa.config import LockoutConfig, RateLimitsConfig
from radmfa.factors.base import CodeMatch, FactorRegistry
from radmfa.store.base import (
    ATTEMPT_FAILED,
    ATTEMPT_LEASE,
    DUPLICATE_IN_FLIGHT,
    AttemptEnd,
    AttemptStart,
    DeviceRef,
    FailureWindow,
    LockoutRule,
    LockState,
    LoginState,
    StoreError,
    TokenRecord,
    TrustedDevice,
    UserSettings,
    source_failures_key,
    user_failures_key,
)
from radmfa.store.facade import AsyncStore

log = Logger(namespace="radmfa.auth")

#: The judgement when only attempts still in flight stand in the way: wait for them to end
#: (an honest user's parallel logins all go through), then judge again.
BUSY = "busy"
#: Longest an ended reservation waits to be handed to the store with others.
ENDS_DELAY = 0.05
#: How long an attempt waits for the user's attempts in flight before it is refused as
#: throttled; the first retry after 5 ms, then doubling up to 50 ms.
MAX_BUSY_WAIT = 2.0
#: Ends the store could not take (an outage) kept for the next trip, at most.
MAX_KEPT_ENDS = 10_000
#: When no login comes to carry them, how long kept ends wait before they are tried again.
KEPT_ENDS_DELAY = 1.0


@dataclass
class Attempt:
    """One reserved try of one user; ended once (fail, succeed or release)."""

    attempt_id: bytes
    key: str
    #: The station's failure key, when the request has a station.
    source: str | None
    ended: bool = field(default=False)
    #: Its failure is being written: only that write ends it (never a release), and if the
    #: write fails it stays pending, a failure that may still happen, until its lease ends.
    counting: bool = field(default=False)


@dataclass(frozen=True)
class UserView:
    """What one trip to the store thread tells about a user."""

    lock: LockState
    #: Tokens of the factors that are loaded (others cannot prove anything here).
    tokens: list[TokenRecord]
    settings: UserSettings
    #: Recent failures of the user (rate_limits.user) and from the station/source.
    user_window: FailureWindow
    source_window: FailureWindow
    #: The request's device, when it is remembered for this user.
    device: TrustedDevice | None
    #: The reservation this request holds (see the module docstring).
    attempt: Attempt


def source_key(request: AccessRequest) -> str | None:
    """Where password spraying comes from: the station (Calling-Station-Id).

    Without one there is no per-source budget: the packet source is then the NAS, and
    throttling it would let anyone lock out every user behind that NAS with a few wrong
    passwords. The per-user window and the lockout still apply.
    """
    station = device_key(request.calling_station_id)
    return source_failures_key(station) if station is not None else None


def fresh_attempt(key: str, address: str | None) -> Attempt:
    """The reservation of a try that is no RADIUS packet (a portal sign-in): nothing
    retransmits it, so its id is random. ``address`` (the browser's IP address) is its
    source: it shares the budget of a RADIUS station with the same address."""
    station = device_key(address)
    source = source_failures_key(station) if station is not None else None
    return Attempt(os.urandom(16), key, source)


def attempt_id_of(request: AccessRequest, key: str) -> bytes:
    """The request's identity across workers and daemons: a retransmission (same client,
    address, Identifier and Request Authenticator, RFC 5080) has the same one. Requests
    without an authenticator (built in tests) get a random one."""
    if not request.authenticator:
        return os.urandom(16)
    digest = hashlib.blake2b(digest_size=16)
    for part in (
        request.client_name.encode("utf-8", "surrogateescape"),
        request.client_address.encode("ascii", "replace"),
        bytes((request.packet_id & 0xFF,)),
        request.authenticator,
        key.encode("utf-8", "surrogateescape"),
        request.state or b"",
    ):
        digest.update(len(part).to_bytes(2, "big"))
        digest.update(part)
    return digest.digest()


def attempt_lease(request_timeout: float, ldap_timeout: float, ldap_servers: int) -> float:
    """How long a reservation must live: longer than any request can still be working, or a
    burst could start new binds while the first ones are still with a slow directory. A
    check may search and bind on every server in turn, each within ``ldap_timeout``, after
    waiting for a free connection; the pipeline goes on after the RADIUS deadline."""
    worst = request_timeout + 3 * ldap_timeout * max(1, ldap_servers)
    return max(ATTEMPT_LEASE, 2 * worst)


class Ledger:
    """Reads and records a user's login standing in the store (off the reactor)."""

    def __init__(
        self,
        *,
        store: AsyncStore,
        clock: IReactorTime,
        factors: FactorRegistry,
        lockout: LockoutConfig,
        rate_limits: RateLimitsConfig,
        devices_on: bool,
        lease: float = ATTEMPT_LEASE,
        drift: DriftWatch | None = None,
        ends: AttemptEnds | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.factors = factors
        self.lockout = lockout
        self.rule = LockoutRule(lockout.max_failures, lockout.duration, lockout.max_total_failures)
        self.rate_limits = rate_limits
        #: Whether any rule may trust devices (else their lookup is skipped).
        self.devices_on = devices_on
        self.lease = lease
        #: Told the step offset of every accepted TOTP code (a drifting server clock).
        self.drift = drift
        #: Ends waiting to go to the store; the daemon passes one batch that outlives a
        #: reload, so requests that end under the old configuration are not orphaned.
        self.ends = ends if ends is not None else AttemptEnds(store, clock)

    async def begin(
        self, user: str, key: str, request: AccessRequest, device: DeviceRef | None, now: float
    ) -> UserView | Decision:
        """:meth:`reserve` for an Access-Request (its retransmissions share one attempt)."""
        attempt = Attempt(attempt_id_of(request, key), key, source_key(request))
        return await self.reserve(user, attempt, device, now)

    async def reserve(
        self, user: str, attempt: Attempt, device: DeviceRef | None, now: float
    ) -> UserView | Decision:
        """Reserve this attempt, or the Decision that refuses it before any directory
        traffic (disabled, locked, throttled; a DROP for a request another worker or daemon
        already has). ``device``: the remembered device to look for."""
        start, tokens = await self._reserve(attempt, device, now)
        waited, step = 0.0, 0.005
        while start.refusal == BUSY and waited < MAX_BUSY_WAIT:
            await deferLater(self.clock, step, lambda: None)
            waited, step = waited + step, min(step * 2, 0.05)
            start, tokens = await self._reserve(attempt, device, self.clock.seconds())
        if start.refusal == BUSY:
            log.info("{user}: too many attempts in flight; throttled", user=user)
            return reject(Reason.THROTTLED, user)
        if start.duplicate == DUPLICATE_IN_FLIGHT:
            log.info(
                "{user}: a retransmission of a request another process is deciding; dropped",
                user=user,
            )
            return Decision(Outcome.DROP, Reason.DUPLICATE, user=user)
        if start.duplicate is not None:  # it failed: the same answer, not a second try
            log.info(
                "{user}: a retransmission of a request that failed in another process; "
                "rejected again without a bind",
                user=user,
            )
            return reject(Reason.DUPLICATE, user)
        state = start.state
        assert state is not None
        if start.refusal is not None:
            assert isinstance(start.refusal, Reason)
            return reject(start.refusal, user)
        return UserView(
            state.lock,
            tokens,
            state.settings,
            state.user_window,
            state.source_window,
            state.device,
            attempt,
        )

    async def _reserve(
        self, attempt: Attempt, device: DeviceRef | None, now: float
    ) -> tuple[AttemptStart, list[TokenRecord]]:
        """One store transaction: the batched ends, the judgement, the reservation and the
        user's tokens (parts that cannot matter under this configuration are not asked
        for); ends the store did not take are kept for the next trip."""
        batch = self.ends
        ends = batch.take()
        limits = self.rate_limits
        watch_source = attempt.source is not None and limits.source.max_failures > 0
        try:
            start = await self.store.begin_attempt(
                attempt.attempt_id,
                attempt.key,
                now,
                lambda state: self.judge(state, now),
                user_since=now - limits.user.window if limits.user.delay > 0 else None,
                source=attempt.source if watch_source else None,
                source_since=now - limits.source.window if watch_source else None,
                device=device if self.devices_on else None,
                lease=self.lease,
                ends=ends,
                with_tokens=True,
            )
        except StoreError:
            batch.keep(ends)
            raise
        batch.delivered()
        factors = self.factors
        tokens = [t for t in start.tokens or () if t.type in factors]
        return start, tokens

    def judge(self, state: LoginState, now: float) -> Reason | str | None:
        """May this attempt go on? Attempts still pending count as failures that may yet
        happen, so concurrent requests cannot outrun the lockout or the throttles: when only
        they stand in the way the answer is :data:`BUSY` (wait and ask again)."""
        if state.settings.disabled:
            return Reason.USER_DISABLED
        lock = state.lock
        if lock.is_locked(now):
            return Reason.LOCKED
        pending = state.pending_user
        if pending:
            failures = 0 if lock.locked_until is not None else lock.failures
            rule = self.rule
            if failures + pending >= rule.max_failures or (
                rule.max_total and lock.total_failures + pending >= rule.max_total
            ):
                return BUSY
        limits = self.rate_limits
        window = state.user_window
        wait = limits.user.wait(window.count)
        if wait and window.last_at is not None and now < window.last_at + wait:
            return Reason.THROTTLED
        if pending and limits.user.wait(window.count + pending):
            return BUSY
        source_max = limits.source.max_failures
        if source_max and state.source_window.count >= source_max:
            return Reason.SOURCE_THROTTLED
        if source_max and state.source_window.count + state.pending_source >= source_max:
            return BUSY
        return None

    async def fail(self, view: UserView) -> None:
        """A failed credential: the lockout counter and the sliding windows, and the end of
        the reservation, in one trip."""
        attempt = view.attempt
        if attempt.ended:
            return
        now = self.clock.seconds()
        # Ended only once written: if the store fails here, the reservation stays pending
        # (counted as a failure that may still happen) until its lease ends.
        attempt.counting = True
        limits = self.rate_limits
        keys = []
        if limits.user.delay > 0:
            keys.append(user_failures_key(attempt.key))
        if limits.source.max_failures and attempt.source is not None:
            keys.append(attempt.source)
        state = await self.store.finish_attempt(
            attempt.attempt_id,
            attempt.key,
            now,
            ATTEMPT_FAILED,
            lockout=self.rule,
            failure_keys=keys,
        )
        attempt.ended = True
        if state is not None and state.locked_until is not None and state.last_failure_at == now:
            if state.locked_for_good:
                log.warn(
                    "{user} locked until an admin unlocks it: {n} consecutive failures "
                    "across lock periods (lockout.max_total_failures)",
                    user=attempt.key,
                    n=state.total_failures,
                )
            elif state.locked_until == now + self.lockout.duration:  # this failure set it
                log.warn(
                    "{user} locked for {secs:.0f}s after {n} consecutive failures",
                    user=attempt.key,
                    secs=self.lockout.duration,
                    n=state.failures,
                )

    async def succeed(self, view: UserView) -> None:
        """Clear the failure counts and the user's window, and end the reservation."""
        attempt = view.attempt
        if attempt.ended:
            return
        attempt.ended = True
        # Always cleared, not only when the view showed failures: a concurrent attempt may have
        # failed since it was read. But only what was counted up to now: the end reaches the
        # store later, with a batch, and a guess counted in between must stay counted.
        clear = (user_failures_key(attempt.key),) if self.rate_limits.user.delay > 0 else ()
        now = self.clock.seconds()
        self.ends.add(AttemptEnd(attempt.attempt_id, attempt.key, True, clear, at=now))

    async def release(self, view: UserView) -> None:
        """End the reservation without counting anything (when neither fail nor succeed
        did: a refusal that is not a guess, a challenge issued, a store error on the way)."""
        attempt = view.attempt
        if attempt.ended or attempt.counting:
            return
        attempt.ended = True
        self.ends.add(AttemptEnd(attempt.attempt_id, attempt.key))

    def flush(self) -> Deferred[None]:
        """Hand over the ends still batched."""
        return self.ends.flush()

    async def consume(self, token: TokenRecord, match: CodeMatch) -> bool:
        """Make a matched code stick (atomic in the store); False: someone used it first."""
        if match.step is None:  # a factor whose codes are not single-use
            return True
        offset = None
        if token.type == "totp" and token.period > 0:
            offset = match.step - int(self.clock.seconds() // token.period)
        used = await self.store.advance_step(token.token_id, match.step, offset)
        if used and offset is not None and self.drift is not None:
            self.drift.record(token.user, offset)
        return used

    def log_use(self, user: str, token: TokenRecord) -> None:
        """The factor's own line about a use (e.g. backup codes left), when it has one."""
        line = self.factors.audit(token)
        if line:
            log.info("{user}: {line}", user=user, line=line)

    async def remember_device(self, key: str, device: DeviceRef | None, verdict: Verdict) -> None:
        """After a login with a second factor: this user on this device needs only the
        password for a while (each pair has its own timer)."""
        ttl = verdict.trusted_device_ttl
        if device is None or ttl <= 0:
            return
        now = self.clock.seconds()
        await self.store.remember_device(key, device, now, now + ttl)


class AttemptEnds:
    """Ends that count nothing against anyone, on their way to the store in batches: with the
    next login's reservation (the same trip to the store) or, when none comes, after
    :data:`ENDS_DELAY`. A reservation ended late only errs on the safe side (it counts as
    pending a little longer); a failure is never batched. Ends the store could not take (it
    is down) go with the next trip once it is back, so an outage leaves no reservation
    pending against its user until the lease ends.

    One batch serves every :class:`Ledger` a process builds (a reload builds a new one):
    requests still in flight under the old configuration end into the same batch the new
    one's logins carry, rather than into a ledger no login uses any more.
    """

    def __init__(self, store: AsyncStore, clock: IReactorTime) -> None:
        self.store = store
        self.clock = clock
        self._ends: list[AttemptEnd] = []
        self._timer: IDelayedCall | None = None
        self._lost_said = False

    def add(self, end: AttemptEnd) -> None:
        self._ends.append(end)
        if self._timer is None:
            self._timer = self.clock.callLater(ENDS_DELAY, self._flush)

    def take(self) -> list[AttemptEnd]:
        """The batch so far, for a login's trip. Its timer stays set: when it fires it
        flushes whatever has been batched since, so a steady stream of logins costs no
        timer per login."""
        ends, self._ends = self._ends, []
        return ends

    def delivered(self) -> None:
        """A trip the store took: a later loss is a new outage, worth a line again."""
        self._lost_said = False

    def keep(self, ends: list[AttemptEnd]) -> None:
        """Put back ends the store did not take, before the newer ones, as plain releases:
        a release is safe to repeat, but a success's clearing applied late could wipe out
        failures counted since (so a late success only stops counting its reservation).
        When no end is waiting for its timer, one is set for them: they go with the next
        login's trip or, if none comes, after :data:`KEPT_ENDS_DELAY`; never in a tight loop
        of failing calls while the store is down."""
        kept = [e if not e.succeeded else AttemptEnd(e.attempt_id, e.user) for e in ends]
        self._ends[:0] = kept
        del self._ends[:-MAX_KEPT_ENDS]
        if self._ends and self._timer is None:
            self._timer = self.clock.callLater(KEPT_ENDS_DELAY, self._flush)

    def _flush(self) -> Deferred[None]:
        self._timer = None
        ends = self.take()
        if not ends:
            return succeed(None)
        d = self.store.end_attempts(ends, self.clock.seconds())
        d.addCallbacks(lambda _: self.delivered(), self._lost, errbackArgs=(ends,))
        return d

    def flush(self) -> Deferred[None]:
        """Hand over the ends still batched (at shutdown)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        return self._flush()

    def _lost(self, failure: Failure, ends: list[AttemptEnd]) -> None:
        failure.trap(StoreError)
        self.keep(ends)
        if not self._lost_said:  # once per outage: the pipeline logs the outage itself
            self._lost_said = True
            log.warn(
                "{n} attempt reservation(s) could not be ended ({err}); they go with the "
                "next call to the store",
                n=len(ends),
                err=failure.getErrorMessage(),
            )
