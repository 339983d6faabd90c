"""A dict-backed :class:`~radmfa.store.base.Store`: a fake for unit tests, not for production.

It passes the same contract suite as the SQLite engine (tests/unit/store/test_store_contract.py),
so auth-pipeline tests can use it and trust that the real engine behaves the same. Nothing
survives the process, secrets are kept in plaintext, and one lock serialises every call.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence

from radmfa.store.model import (
    ATTEMPT_FAILED,
    ATTEMPT_LEASE,
    ATTEMPT_NEUTRAL,
    ATTEMPT_SUCCEEDED,
    DUPLICATE_FAILED,
    DUPLICATE_IN_FLIGHT,
    FAILED_ATTEMPT_MEMORY,
    IDLE_USERS_BATCH,
    KNOWN_SECRET,
    LINK_GONE,
    SEND_WINDOW,
    USER_STATUSES,
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
    split_known_secrets,
    total_verdict,
    user_failures_key,
)

__all__ = ["MemoryStore"]


class MemoryStore:
    """In-memory store, thread-safe; every method is atomic under one lock."""

    def __init__(self) -> None:
        #: Re-entrant: begin_attempt holds it across the reads it shares with login_state.
        self._lock = threading.RLock()
        self._tokens: dict[str, TokenRecord] = {}
        self._users: dict[str, LockState] = {}
        self._challenges: dict[bytes, ChallengeRecord] = {}
        self._settings: dict[str, UserSettings] = {}
        self._sends: dict[tuple[str, str], list[float]] = {}
        self._devices: dict[tuple[str, DeviceRef], TrustedDevice] = {}
        self._failures: dict[str, list[float]] = {}
        self._audit: list[AuditEvent] = []
        #: attempt id -> (user, source, expires_at, failed)
        self._attempts: dict[bytes, tuple[str, str | None, float, bool]] = {}
        self._portal: dict[bytes, PortalSession] = {}
        self._links: dict[bytes, EnrolLink] = {}
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("memory store is closed")

    # tokens
    def add_token(self, token: TokenRecord) -> bool:
        return not self.add_tokens([token])

    def add_tokens(self, tokens: Sequence[TokenRecord]) -> list[TokenRecord]:
        with self._lock:
            self._check_open()
            ids = [t.token_id for t in tokens]
            if len(set(ids)) != len(ids) or any(i in self._tokens for i in ids):
                raise StoreError(f"adding {len(ids)} token(s): a token id already exists")
            kinds = {(t.user, t.type) for t in tokens}
            mine = [t for t in self._tokens.values() if (t.user, t.type) in kinds]
            new, skipped = split_known_secrets(mine, tokens)
            for token in new:
                self._tokens[token.token_id] = token
            return skipped

    def list_tokens(self, user: str | None = None) -> list[TokenRecord]:
        with self._lock:
            self._check_open()
            tokens = [t for t in self._tokens.values() if user is None or t.user == user]
        return sorted(tokens, key=lambda t: (t.user, t.created_at, t.token_id))

    def remove_tokens(self, user: str, token_id: str | None = None) -> int:
        with self._lock:
            self._check_open()
            doomed = [
                t.token_id
                for t in self._tokens.values()
                if t.user == user and (token_id is None or t.token_id == token_id)
            ]
            for tid in doomed:
                del self._tokens[tid]
            return len(doomed)

    def advance_step(self, token_id: str, step: int, drift: int | None = None) -> bool:
        with self._lock:
            self._check_open()
            token = self._tokens.get(token_id)
            if token is None or (token.last_step is not None and token.last_step >= step):
                return False
            kept = token.drift if drift is None else drift
            self._tokens[token_id] = dataclasses.replace(token, last_step=step, drift=kept)
            return True

    def replace_tokens(self, user: str, type: str, tokens: Sequence[TokenRecord]) -> int:
        with self._lock:
            self._check_open()
            doomed = [
                t.token_id for t in self._tokens.values() if t.user == user and t.type == type
            ]
            ids = [t.token_id for t in tokens]
            if len(set(ids)) != len(ids) or any(i in self._tokens and i not in doomed for i in ids):
                raise StoreError(
                    f"replacing the {type} tokens of {user!r}: a token id already exists"
                )
            for tid in doomed:
                del self._tokens[tid]
            for token in tokens:
                self._tokens[token.token_id] = token
            return len(doomed)

    def change_tokens(
        self,
        change: TokenChange,
        judge: Callable[[list[TokenRecord], list[TokenRecord]], object | None],
    ) -> TokenChanged:
        with self._lock:
            self._check_open()
            mine = self.list_tokens(change.user)
            doomed = [
                t for t in mine if t.token_id in change.remove_ids or t.type in change.remove_types
            ]
            refusal = judge(mine, doomed)
            if refusal is not None:
                return TokenChanged(refusal)
            if change.link is not None:
                link = self._links.get(change.link)
                if link is None or not link.usable(change.user, change.now):
                    return TokenChanged(LINK_GONE)
            kept = [t for t in mine if t not in doomed]
            _new, skipped = split_known_secrets(kept, change.add)
            if skipped:
                return TokenChanged(KNOWN_SECRET)
            ids = [t.token_id for t in change.add]
            gone = {t.token_id for t in doomed}
            if len(set(ids)) != len(ids) or any(i in self._tokens and i not in gone for i in ids):
                raise StoreError(f"changing the tokens of {change.user!r}: a token id exists")
            if change.link is not None:
                self._links[change.link] = dataclasses.replace(
                    self._links[change.link], used_at=change.now
                )
            for token in doomed:
                del self._tokens[token.token_id]
            for token in change.add:
                self._tokens[token.token_id] = token
            return TokenChanged(None, tuple(doomed))

    # lockout
    def lock_state(self, user: str) -> LockState:
        with self._lock:
            self._check_open()
            return self._users.get(user, LockState(user))

    def record_failure(
        self, user: str, now: float, max_failures: int, lock_seconds: float, max_total: int = 0
    ) -> LockState:
        rule = LockoutRule(max_failures, lock_seconds, max_total)  # refuses max_failures < 1
        with self._lock:
            self._check_open()
            state = next_failure_state(self._users.get(user, LockState(user)), now, rule)
            self._users[user] = state
            return state

    def record_success(self, user: str, now: float) -> None:
        with self._lock:
            self._check_open()
            state = self._users.get(user, LockState(user))
            self._users[user] = dataclasses.replace(
                state, failures=0, locked_until=None, last_success_at=now, total_failures=0
            )

    def unlock(self, user: str) -> bool:
        with self._lock:
            self._check_open()
            state = self._users.get(user)
            if state is None or (
                state.failures == 0 and state.locked_until is None and not state.total_failures
            ):
                return False
            self._users[user] = dataclasses.replace(
                state, failures=0, locked_until=None, total_failures=0
            )
            return True

    def known_users(self) -> list[str]:
        with self._lock:
            self._check_open()
            users = {t.user for t in self._tokens.values()} | set(self._users)
            return sorted(users | set(self._settings))

    # per-user settings
    def user_settings(self, user: str) -> UserSettings:
        with self._lock:
            self._check_open()
            return self._settings.get(user, UserSettings(user))

    def set_preferred(self, user: str, factor: str | None) -> None:
        with self._lock:
            self._check_open()
            current = self._settings.get(user, UserSettings(user))
            self._settings[user] = dataclasses.replace(current, preferred=factor)

    def set_notice(self, user: str, notice: str | None) -> None:
        with self._lock:
            self._check_open()
            current = self._settings.get(user, UserSettings(user))
            self._settings[user] = dataclasses.replace(current, notice=notice)

    def take_notice(self, user: str) -> str | None:
        with self._lock:
            self._check_open()
            current = self._settings.get(user)
            if current is None or current.notice is None:
                return None
            self._settings[user] = dataclasses.replace(current, notice=None)
            return current.notice

    def set_status(
        self, user: str, status: str, until: float | None, reason: str | None
    ) -> UserSettings:
        if status not in USER_STATUSES:
            raise ValueError(f"unknown user status {status!r}")
        with self._lock:
            self._check_open()
            before = self._settings.get(user, UserSettings(user))
            self._settings[user] = dataclasses.replace(
                before, status=status, status_until=until, status_reason=reason
            )
            return before

    def note_grace_login(self, user: str, now: float) -> UserSettings:
        with self._lock:
            self._check_open()
            current = self._settings.get(user, UserSettings(user))
            after = dataclasses.replace(
                current,
                first_seen_at=current.first_seen_at if current.first_seen_at is not None else now,
                grace_logins=current.grace_logins + 1,
            )
            self._settings[user] = after
            return after

    def reset_user(self, user: str) -> tuple[int, int]:
        with self._lock:
            self._check_open()
            doomed = [tid for tid, t in self._tokens.items() if t.user == user]
            for tid in doomed:
                del self._tokens[tid]
            devices = [k for k in self._devices if k[0] == user]
            for k in devices:
                del self._devices[k]
            current = self._settings.get(user)
            if current is not None:
                self._settings[user] = dataclasses.replace(
                    current, preferred=None, first_seen_at=None, grace_logins=0
                )
            for session_key in [k for k, p in self._portal.items() if p.user == user]:
                del self._portal[session_key]
            return len(doomed), len(devices)

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
        return LoginState(
            self.lock_state(user),
            self.user_settings(user),
            self.failure_window(user_failures_key(user), user_since)
            if user_since is not None
            else FailureWindow(),
            self.failure_window(source, source_since)
            if source is not None and source_since is not None
            else FailureWindow(),
            self.trusted_device(user, device, now) if device is not None else None,
        )

    # attempts
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
        with self._lock:
            self._check_open()
            self._end_all(ends, now)
            known = self._attempts.get(attempt_id)
            if known is not None and known[2] > now:
                return AttemptStart(
                    None, duplicate=DUPLICATE_FAILED if known[3] else DUPLICATE_IN_FLIGHT
                )
            live = [a for a in self._attempts.values() if not a[3] and a[2] > now]
            state = dataclasses.replace(
                self.login_state(
                    user,
                    now,
                    user_since=user_since,
                    source=source,
                    source_since=source_since,
                    device=device,
                ),
                pending_user=sum(1 for a in live if a[0] == user),
                pending_source=sum(1 for a in live if source is not None and a[1] == source),
            )
            refusal = judge(state)
            if refusal is not None:
                return AttemptStart(state, refusal)
            self._attempts[attempt_id] = (user, source, now + lease, False)
            return AttemptStart(state, tokens=self.list_tokens(user) if with_tokens else None)

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
        check_finish(result, lockout)
        with self._lock:
            self._check_open()
            known = self._attempts.pop(attempt_id, None)
            if result == ATTEMPT_FAILED and known is not None:
                self._attempts[attempt_id] = (known[0], known[1], now + FAILED_ATTEMPT_MEMORY, True)
            if result == ATTEMPT_FAILED:
                assert lockout is not None
                for key in failure_keys:
                    self._failures.setdefault(key, []).append(now)
                state = next_failure_state(self._users.get(user, LockState(user)), now, lockout)
                self._users[user] = state
                return state
            if result == ATTEMPT_SUCCEEDED:
                current = self._users.get(user)
                if (
                    current is not None
                    and (
                        current.failures
                        or current.total_failures
                        or current.locked_until is not None
                    )
                    and (current.last_failure_at is None or current.last_failure_at <= now)
                ):
                    self.record_success(user, now)
                for key in clear_keys:  # the entries up to the success only (AttemptEnd.at)
                    later = [at for at in self._failures.get(key, ()) if at > now]
                    if later:
                        self._failures[key] = later
                    else:
                        self._failures.pop(key, None)
            return None

    def end_attempts(self, ends: Sequence[AttemptEnd], now: float) -> None:
        self._end_all(ends, now)

    def _end_all(self, ends: Sequence[AttemptEnd], now: float) -> None:
        with self._lock:
            for end in ends:
                self.finish_attempt(
                    end.attempt_id,
                    end.user,
                    now if end.at is None else min(end.at, now),
                    ATTEMPT_SUCCEEDED if end.succeeded else ATTEMPT_NEUTRAL,
                    clear_keys=end.clear_keys,
                )

    # trusted devices
    def remember_device(self, user: str, device: DeviceRef, now: float, expires_at: float) -> None:
        with self._lock:
            self._check_open()
            self._devices[(user, device)] = TrustedDevice(
                user, device.station, device.client, device.nas_id, now, expires_at
            )

    def trusted_device(self, user: str, device: DeviceRef, now: float) -> TrustedDevice | None:
        with self._lock:
            self._check_open()
            found = self._devices.get((user, device))
        return found if found is not None and found.valid(now) else None

    def list_devices(self, user: str | None, now: float) -> list[TrustedDevice]:
        with self._lock:
            self._check_open()
            found = [
                d
                for d in self._devices.values()
                if (user is None or d.user == user) and d.valid(now)
            ]
        return sorted(found, key=lambda d: (d.user, d.device, d.client, d.nas_id))

    def revoke_devices(self, user: str, device: str | None = None) -> int:
        with self._lock:
            self._check_open()
            doomed = [
                k
                for k in self._devices
                if k[0] == user and (device is None or k[1].station == device)
            ]
            for k in doomed:
                del self._devices[k]
            return len(doomed)

    # sliding-window throttles
    def note_failures(self, keys: Sequence[str], now: float) -> None:
        with self._lock:
            self._check_open()
            for key in keys:
                self._failures.setdefault(key, []).append(now)

    def failure_window(self, key: str, since: float) -> FailureWindow:
        with self._lock:
            self._check_open()
            times = [t for t in self._failures.get(key, ()) if t >= since]
        return FailureWindow(len(times), max(times) if times else None)

    def clear_failures(self, key: str) -> None:
        with self._lock:
            self._check_open()
            self._failures.pop(key, None)

    # audit trail
    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        with self._lock:
            self._check_open()
            start = len(self._audit) + 1
            self._audit.extend(
                dataclasses.replace(e, event_id=start + i) for i, e in enumerate(events)
            )

    def query_audit(self, query: AuditQuery) -> list[AuditEvent]:
        with self._lock:
            self._check_open()
            found = [e for e in self._audit if audit_matches(e, query)]
        found.sort(key=lambda e: (e.at, e.event_id or 0))
        if query.limit is not None:
            found = found[-query.limit :] if query.limit > 0 else []
        return found

    def prune_audit(self, before: float, limit: int) -> int:
        with self._lock:
            self._check_open()
            old = sorted(
                (e for e in self._audit if e.at < before), key=lambda e: (e.at, e.event_id or 0)
            )[: max(0, limit)]
            doomed = {e.event_id for e in old}
            self._audit = [e for e in self._audit if e.event_id not in doomed]
            return len(old)

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
        with self._lock:
            self._check_open()
            times = [t for t in self._sends.get((user, channel), []) if t > now - SEND_WINDOW]
            grant = send_verdict(times, now, cooldown, per_hour)
            if grant.granted and total_per_hour is not None:
                everyone = sorted(
                    (
                        t
                        for (_, c), ts in self._sends.items()
                        if c == channel
                        for t in ts
                        if t > now - SEND_WINDOW
                    ),
                    reverse=True,
                )
                nth = everyone[total_per_hour - 1] if len(everyone) >= total_per_hour else None
                grant = total_verdict(nth, now)
            if grant.granted:
                times.append(now)
            self._sends[(user, channel)] = times
            return grant

    # challenges
    def put_challenge(self, challenge: ChallengeRecord, max_open: int | None = None) -> None:
        with self._lock:
            self._check_open()
            if challenge.state_id in self._challenges:
                raise StoreError("a challenge with this state id already exists")
            self._challenges[challenge.state_id] = challenge
            if max_open is None:
                return
            # dicts keep insertion order: a stable sort by created_at breaks ties by it
            mine = sorted(
                (c for c in self._challenges.values() if c.user == challenge.user),
                key=lambda c: c.created_at,
            )
            for old in mine[: max(0, len(mine) - max(1, max_open))]:
                del self._challenges[old.state_id]

    def take_challenge(self, state_id: bytes) -> ChallengeRecord | None:
        with self._lock:
            self._check_open()
            return self._challenges.pop(state_id, None)

    def purge_expired(self, now: float, failures_before: float | None = None) -> int:
        with self._lock:
            self._check_open()
            expired = [s for s, c in self._challenges.items() if c.expires_at <= now]
            for state_id in expired:
                del self._challenges[state_id]
            for device in [k for k, d in self._devices.items() if not d.valid(now)]:
                del self._devices[device]
            for attempt in [a for a, v in self._attempts.items() if v[2] <= now]:
                del self._attempts[attempt]
            for session_key in [k for k, p in self._portal.items() if p.expired(now)]:
                del self._portal[session_key]
            for link_key in [k for k, link in self._links.items() if link.expires_at <= now]:
                del self._links[link_key]
            if failures_before is not None:
                for failure_key, times in list(self._failures.items()):
                    kept = [t for t in times if t >= failures_before]
                    if kept:
                        self._failures[failure_key] = kept
                    else:
                        del self._failures[failure_key]
            for send_key, times in list(self._sends.items()):
                kept = [t for t in times if t > now - SEND_WINDOW]
                if kept:
                    self._sends[send_key] = kept
                else:
                    del self._sends[send_key]
            self._prune_idle_users(now)
            return len(expired)

    def _prune_idle_users(self, now: float) -> None:
        """The idle users rows (:func:`idle_user`), at most a batch (call with the lock)."""
        enrolled = {t.user for t in self._tokens.values()}
        idle = [
            user
            for user in sorted(set(self._users) | set(self._settings))
            if idle_user(
                self._users.get(user, LockState(user)),
                self._settings.get(user, UserSettings(user)),
                user in enrolled,
                now,
            )
        ][:IDLE_USERS_BATCH]
        for user in idle:
            self._users.pop(user, None)
            self._settings.pop(user, None)

    # portal sessions
    def put_portal_session(self, session: PortalSession) -> None:
        with self._lock:
            self._check_open()
            if session.key in self._portal:
                raise StoreError("a portal session with this key already exists")
            self._portal[session.key] = session

    def touch_portal_session(self, key: bytes, now: float) -> PortalSession | None:
        with self._lock:
            self._check_open()
            session = self._portal.get(key)
            if session is None or session.expired(now):
                return None
            session = self._portal[key] = dataclasses.replace(session, last_seen=now)
            return session

    def delete_portal_session(self, key: bytes) -> bool:
        with self._lock:
            self._check_open()
            return self._portal.pop(key, None) is not None

    def _set_portal(self, key: bytes, **changes: object) -> bool:
        with self._lock:
            self._check_open()
            session = self._portal.get(key)
            if session is None:
                return False
            self._portal[key] = dataclasses.replace(session, **changes)  # type: ignore[arg-type]
            return True

    def set_portal_notice(self, key: bytes, notice: str | None) -> bool:
        return self._set_portal(key, notice=notice)

    def set_portal_sent(self, key: bytes, sent: str | None) -> bool:
        return self._set_portal(key, sent=sent)

    def set_portal_proven(self, key: bytes, at: float) -> bool:
        return self._set_portal(key, proven_at=at)

    def take_portal_sent(self, key: bytes) -> str | None:
        with self._lock:
            self._check_open()
            session = self._portal.get(key)
            if session is None or session.sent is None:
                return None
            self._set_portal(key, sent=None)
            return session.sent

    def offer_portal_pending(
        self, key: bytes, pending: PendingEnrolment | None, *, only_if_empty: bool = False
    ) -> PendingEnrolment | None:
        with self._lock:
            self._check_open()
            session = self._portal.get(key)
            if session is None:
                return None
            if only_if_empty and session.pending is not None:
                return session.pending
            self._set_portal(key, pending=pending)
            return pending

    def take_portal_pending(self, key: bytes) -> PendingEnrolment | None:
        with self._lock:
            self._check_open()
            session = self._portal.get(key)
            if session is None or session.pending is None:
                return None
            self._set_portal(key, pending=None)
            return session.pending

    # enrolment links
    def add_enrol_link(self, link: EnrolLink) -> None:
        with self._lock:
            self._check_open()
            if link.link in self._links:
                raise StoreError("an enrolment link with this hash already exists")
            self._links[link.link] = link

    def enrol_link(self, link: bytes) -> EnrolLink | None:
        with self._lock:
            self._check_open()
            return self._links.get(link)

    # metrics
    def count_locked(self, now: float) -> int:
        with self._lock:
            self._check_open()
            return sum(1 for state in self._users.values() if state.is_locked(now))

    def close(self) -> None:
        with self._lock:
            self._closed = True
