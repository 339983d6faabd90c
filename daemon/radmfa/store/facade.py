"""The store as code on the reactor uses it: every call returns a Deferred.

A :class:`~radmfa.store.base.Store` blocks (a SQLite lock, a PostgreSQL round trip), so the
reactor never calls it directly: each call runs on a :class:`~radmfa.threads.BlockingRunner`
(the store thread, the PostgreSQL pool's threads, the audit thread). :class:`AsyncStore` holds
the pair, so callers hold one object instead of passing ``(store, runner)`` through every
constructor and spelling ``db.run(store.method, ...)`` at every call (synapse's data stores
over ``runInteraction``, in the small).

:meth:`AsyncStore.interaction` runs several store calls in one trip to the runner, for work
that must not pay one thread hop per call (a login's reservation reads tokens and reserves
the attempt in one trip). :meth:`AsyncStore.on` gives the same store on another lane (the
background lane for purging, the audit thread).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from twisted.internet.defer import Deferred

from radmfa.store.base import (
    ATTEMPT_LEASE,
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
    Store,
    TokenChange,
    TokenChanged,
    TokenRecord,
    TrustedDevice,
    UserSettings,
)
from radmfa.threads import BlockingRunner

__all__ = ["AsyncStore"]

P = ParamSpec("P")
T = TypeVar("T")


class AsyncStore:
    """:class:`~radmfa.store.base.Store`'s calls, each run on ``runner``; same arguments,
    same results, as Deferreds. Store errors arrive as failed Deferreds (``StoreError``)."""

    def __init__(
        self, store: Store, runner: BlockingRunner, *, quick: BlockingRunner | None = None
    ) -> None:
        #: The blocking store, for work already off the reactor (an :meth:`interaction`).
        self.store = store
        self.runner = runner
        #: Where a login's quick calls run (one transaction on a few rows: reserving,
        #: ending and failing an attempt, consuming a code): on SQLite in front of
        #: ``runner``, on the reactor unless the lock is taken
        #: (:class:`~radmfa.threads.InlineFirstRunner`); else ``runner`` itself.
        self.quick = quick if quick is not None else runner

    def __repr__(self) -> str:
        return f"AsyncStore({self.store!r})"

    def on(self, runner: BlockingRunner) -> AsyncStore:
        """The same store, every call run on ``runner`` (another lane or thread)."""
        return AsyncStore(self.store, runner)

    def interaction(
        self, work: Callable[Concatenate[Store, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> Deferred[T]:
        """``work(store, *args, **kwargs)`` in one trip to the runner: several store calls
        for the price of one thread hop. ``work`` runs off the reactor: it may block, and
        must not touch reactor state."""
        return self.runner.run(work, self.store, *args, **kwargs)

    def _call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        return self.runner.run(method, *args, **kwargs)

    def _quick(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        return self.quick.run(method, *args, **kwargs)

    # -- tokens ---------------------------------------------------------------------------------

    def add_token(self, token: TokenRecord) -> Deferred[bool]:
        return self._call(self.store.add_token, token)

    def add_tokens(self, tokens: Sequence[TokenRecord]) -> Deferred[list[TokenRecord]]:
        return self._call(self.store.add_tokens, tokens)

    def list_tokens(self, user: str | None = None) -> Deferred[list[TokenRecord]]:
        return self._call(self.store.list_tokens, user)

    def remove_tokens(self, user: str, token_id: str | None = None) -> Deferred[int]:
        return self._call(self.store.remove_tokens, user, token_id)

    def advance_step(self, token_id: str, step: int, drift: int | None = None) -> Deferred[bool]:
        return self._quick(self.store.advance_step, token_id, step, drift)

    def replace_tokens(self, user: str, type: str, tokens: Sequence[TokenRecord]) -> Deferred[int]:
        return self._call(self.store.replace_tokens, user, type, tokens)

    def change_tokens(
        self,
        change: TokenChange,
        judge: Callable[[list[TokenRecord], list[TokenRecord]], object | None],
    ) -> Deferred[TokenChanged]:
        """``judge`` runs on the runner's thread, inside the store's transaction."""
        return self._call(self.store.change_tokens, change, judge)

    # -- lockout and per-user settings ----------------------------------------------------------

    def lock_state(self, user: str) -> Deferred[LockState]:
        return self._call(self.store.lock_state, user)

    def record_failure(
        self, user: str, now: float, max_failures: int, lock_seconds: float, max_total: int = 0
    ) -> Deferred[LockState]:
        return self._call(
            self.store.record_failure, user, now, max_failures, lock_seconds, max_total
        )

    def record_success(self, user: str, now: float) -> Deferred[None]:
        return self._call(self.store.record_success, user, now)

    def unlock(self, user: str) -> Deferred[bool]:
        return self._call(self.store.unlock, user)

    def known_users(self) -> Deferred[list[str]]:
        return self._call(self.store.known_users)

    def user_settings(self, user: str) -> Deferred[UserSettings]:
        return self._call(self.store.user_settings, user)

    def set_preferred(self, user: str, factor: str | None) -> Deferred[None]:
        return self._call(self.store.set_preferred, user, factor)

    def set_notice(self, user: str, notice: str | None) -> Deferred[None]:
        return self._call(self.store.set_notice, user, notice)

    def take_notice(self, user: str) -> Deferred[str | None]:
        return self._call(self.store.take_notice, user)

    def set_status(
        self, user: str, status: str, until: float | None, reason: str | None
    ) -> Deferred[UserSettings]:
        return self._call(self.store.set_status, user, status, until, reason)

    def note_grace_login(self, user: str, now: float) -> Deferred[UserSettings]:
        return self._call(self.store.note_grace_login, user, now)

    def reset_user(self, user: str) -> Deferred[tuple[int, int]]:
        return self._call(self.store.reset_user, user)

    # -- trusted devices ------------------------------------------------------------------------

    def remember_device(
        self, user: str, device: DeviceRef, now: float, expires_at: float
    ) -> Deferred[None]:
        return self._call(self.store.remember_device, user, device, now, expires_at)

    def trusted_device(
        self, user: str, device: DeviceRef, now: float
    ) -> Deferred[TrustedDevice | None]:
        return self._call(self.store.trusted_device, user, device, now)

    def list_devices(self, user: str | None, now: float) -> Deferred[list[TrustedDevice]]:
        return self._call(self.store.list_devices, user, now)

    def revoke_devices(self, user: str, device: str | None = None) -> Deferred[int]:
        return self._call(self.store.revoke_devices, user, device)

    # -- throttles, attempts, login state -------------------------------------------------------

    def note_failures(self, keys: Sequence[str], now: float) -> Deferred[None]:
        return self._call(self.store.note_failures, keys, now)

    def failure_window(self, key: str, since: float) -> Deferred[FailureWindow]:
        return self._call(self.store.failure_window, key, since)

    def clear_failures(self, key: str) -> Deferred[None]:
        return self._call(self.store.clear_failures, key)

    def login_state(
        self,
        user: str,
        now: float,
        *,
        user_since: float | None = None,
        source: str | None = None,
        source_since: float | None = None,
        device: DeviceRef | None = None,
    ) -> Deferred[LoginState]:
        return self._call(
            self.store.login_state,
            user,
            now,
            user_since=user_since,
            source=source,
            source_since=source_since,
            device=device,
        )

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
    ) -> Deferred[AttemptStart]:
        """``judge`` runs inside the store's transaction (on the reactor or the runner's
        thread): pure and quick."""
        return self._quick(
            self.store.begin_attempt,
            attempt_id,
            user,
            now,
            judge,
            user_since=user_since,
            source=source,
            source_since=source_since,
            device=device,
            lease=lease,
            ends=ends,
            with_tokens=with_tokens,
        )

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
    ) -> Deferred[LockState | None]:
        return self._quick(
            self.store.finish_attempt,
            attempt_id,
            user,
            now,
            result,
            lockout=lockout,
            failure_keys=failure_keys,
            clear_keys=clear_keys,
        )

    def end_attempts(self, ends: Sequence[AttemptEnd], now: float) -> Deferred[None]:
        return self._quick(self.store.end_attempts, ends, now)

    # -- sends and challenges -------------------------------------------------------------------

    def reserve_send(
        self,
        user: str,
        channel: str,
        now: float,
        cooldown: float,
        per_hour: int,
        total_per_hour: int | None = None,
    ) -> Deferred[SendGrant]:
        return self._call(
            self.store.reserve_send, user, channel, now, cooldown, per_hour, total_per_hour
        )

    def put_challenge(
        self, challenge: ChallengeRecord, max_open: int | None = None
    ) -> Deferred[None]:
        return self._call(self.store.put_challenge, challenge, max_open)

    def take_challenge(self, state_id: bytes) -> Deferred[ChallengeRecord | None]:
        return self._call(self.store.take_challenge, state_id)

    # -- portal sessions and enrolment links ----------------------------------------------------

    def put_portal_session(self, session: PortalSession) -> Deferred[None]:
        return self._call(self.store.put_portal_session, session)

    def touch_portal_session(self, key: bytes, now: float) -> Deferred[PortalSession | None]:
        return self._call(self.store.touch_portal_session, key, now)

    def delete_portal_session(self, key: bytes) -> Deferred[bool]:
        return self._call(self.store.delete_portal_session, key)

    def set_portal_notice(self, key: bytes, notice: str | None) -> Deferred[bool]:
        return self._call(self.store.set_portal_notice, key, notice)

    def set_portal_sent(self, key: bytes, sent: str | None) -> Deferred[bool]:
        return self._call(self.store.set_portal_sent, key, sent)

    def set_portal_proven(self, key: bytes, at: float) -> Deferred[bool]:
        return self._call(self.store.set_portal_proven, key, at)

    def take_portal_sent(self, key: bytes) -> Deferred[str | None]:
        return self._call(self.store.take_portal_sent, key)

    def offer_portal_pending(
        self, key: bytes, pending: PendingEnrolment | None, *, only_if_empty: bool = False
    ) -> Deferred[PendingEnrolment | None]:
        return self._call(
            self.store.offer_portal_pending, key, pending, only_if_empty=only_if_empty
        )

    def take_portal_pending(self, key: bytes) -> Deferred[PendingEnrolment | None]:
        return self._call(self.store.take_portal_pending, key)

    def add_enrol_link(self, link: EnrolLink) -> Deferred[None]:
        return self._call(self.store.add_enrol_link, link)

    def enrol_link(self, link: bytes) -> Deferred[EnrolLink | None]:
        return self._call(self.store.enrol_link, link)

    # -- audit and maintenance ------------------------------------------------------------------

    def append_audit(self, events: Sequence[AuditEvent]) -> Deferred[None]:
        return self._call(self.store.append_audit, events)

    def query_audit(self, query: AuditQuery) -> Deferred[list[AuditEvent]]:
        return self._call(self.store.query_audit, query)

    def prune_audit(self, before: float, limit: int) -> Deferred[int]:
        return self._call(self.store.prune_audit, before, limit)

    def purge_expired(self, now: float, failures_before: float | None = None) -> Deferred[int]:
        return self._call(self.store.purge_expired, now, failures_before)

    def count_locked(self, now: float) -> Deferred[int]:
        return self._call(self.store.count_locked, now)
