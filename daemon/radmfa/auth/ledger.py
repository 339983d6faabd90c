"""A user's standing in the store: the one read a login starts with, the refusals it allows
before any directory traffic, and the bookkeeping once a credential was tried.

Callers report only failures of the user's own credential here (lockout counter, sliding
windows); infrastructure failures and the directory's account refusals are never recorded.
The functions handed to the db runner keep their names: the counting runner labels store
errors by them.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from radmfa.auth.decisions import reject
from radmfa.auth.model import AccessRequest, Decision, Reason
from radmfa.auth.policy import Verdict, device_key
from radmfa.config import LockoutConfig
from radmfa.factors.base import CodeMatch, FactorRegistry
from radmfa.policyconfig import RateLimitsConfig
from radmfa.store.base import (
    DeviceRef,
    FailureWindow,
    LockState,
    Store,
    TokenRecord,
    TrustedDevice,
    UserSettings,
    source_failures_key,
    user_failures_key,
)
from radmfa.threads import BlockingRunner

log = Logger(namespace="radmfa.auth")


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


def source_key(request: AccessRequest) -> str | None:
    """Where password spraying comes from: the station (Calling-Station-Id).

    Without one there is no per-source budget: the packet source is then the NAS, and
    throttling it would let anyone lock out every user behind that NAS with a few wrong
    passwords. The per-user window and the lockout still apply.
    """
    station = device_key(request.calling_station_id)
    return source_failures_key(station) if station is not None else None


class Ledger:
    """Reads and records a user's login standing through the db runner (off the reactor)."""

    def __init__(
        self,
        *,
        store: Store,
        db: BlockingRunner,
        clock: IReactorTime,
        factors: FactorRegistry,
        lockout: LockoutConfig,
        rate_limits: RateLimitsConfig,
        devices_on: bool,
    ) -> None:
        self.store = store
        self.db = db
        self.clock = clock
        self.factors = factors
        self.lockout = lockout
        self.rate_limits = rate_limits
        #: Whether any rule may trust devices (else their lookup is skipped).
        self.devices_on = devices_on

    def read(
        self, key: str, request: AccessRequest, device: DeviceRef | None, now: float
    ) -> Deferred[UserView]:
        """The user's view in one trip; ``device``: the remembered device to look for."""
        return self.db.run(self._user_view, key, source_key(request), device, now)

    def _user_view(
        self, key: str, source: str | None, device: DeviceRef | None, now: float
    ) -> UserView:
        """Tokens, then lock, settings, recent failures and the remembered device in one
        statement; parts that cannot matter under this configuration are not asked for."""
        store, limits = self.store, self.rate_limits
        tokens = [t for t in store.list_tokens(key) if t.type in self.factors]
        watch_source = source is not None and limits.source.max_failures > 0
        state = store.login_state(
            key,
            now,
            user_since=now - limits.user.window if limits.user.delay > 0 else None,
            source=source if watch_source else None,
            source_since=now - limits.source.window if watch_source else None,
            device=device if self.devices_on else None,
        )
        return UserView(
            state.lock,
            tokens,
            state.settings,
            state.user_window,
            state.source_window,
            state.device,
        )

    def refusal(self, user: str, view: UserView, now: float) -> Decision | None:
        """Disabled, locked or throttled: refused before any directory traffic."""
        if view.settings.disabled:
            return reject(Reason.USER_DISABLED, user)
        if view.lock.is_locked(now):
            return reject(Reason.LOCKED, user)
        limits = self.rate_limits
        window = view.user_window
        wait = limits.user.wait(window.count)
        if wait and window.last_at is not None and now < window.last_at + wait:
            return reject(Reason.THROTTLED, user)
        source_max = limits.source.max_failures
        if source_max and view.source_window.count >= source_max:
            return reject(Reason.SOURCE_THROTTLED, user)
        return None

    async def fail(self, key: str, request: AccessRequest) -> None:
        """A failed credential: the lockout counter and the sliding windows, in one trip."""
        now = self.clock.seconds()
        state = await self.db.run(self._record_failure, key, source_key(request), now)
        lockout = self.lockout
        if state.locked_until == now + lockout.duration:  # this failure set the lock
            log.warn(
                "{user} locked for {secs:.0f}s after {n} consecutive failures",
                user=key,
                secs=lockout.duration,
                n=state.failures,
            )

    def _record_failure(self, key: str, source: str | None, now: float) -> LockState:
        lockout, limits = self.lockout, self.rate_limits
        state = self.store.record_failure(key, now, lockout.max_failures, lockout.duration)
        keys = []
        if limits.user.delay > 0:
            keys.append(user_failures_key(key))
        if limits.source.max_failures and source is not None:
            keys.append(source)
        if keys:
            self.store.note_failures(keys, now)
        return state

    async def succeed(self, key: str, view: UserView) -> None:
        """Clear the failure count and the user's window, when there is anything to clear."""
        if view.lock.failures or view.user_window.count:
            await self.db.run(self._record_success, key, self.clock.seconds())

    def _record_success(self, key: str, now: float) -> None:
        self.store.record_success(key, now)
        self.store.clear_failures(user_failures_key(key))

    async def consume(self, token: TokenRecord, match: CodeMatch) -> bool:
        """Make a matched code stick (atomic in the store); False: someone used it first."""
        if match.step is None:  # a factor whose codes are not single-use
            return True
        return await self.db.run(self.store.advance_step, token.token_id, match.step)

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
        await self.db.run(self.store.remember_device, key, device, now, now + ttl)
