"""A dict-backed :class:`~radmfa.store.base.Store`: a fake for unit tests, not for production.

It passes the same contract suite as the SQLite engine (tests/unit/store/test_store_contract.py),
so auth-pipeline tests can use it and trust that the real engine behaves the same. Nothing
survives the process, secrets are kept in plaintext, and one lock serialises every call.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence

from radmfa.store.base import (
    SEND_WINDOW,
    ChallengeRecord,
    LockState,
    SendGrant,
    StoreError,
    TokenRecord,
    UserSettings,
    send_verdict,
)
from radmfa.store.sqlite import next_failure_state

__all__ = ["MemoryStore"]


class MemoryStore:
    """In-memory store, thread-safe; every method is atomic under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, TokenRecord] = {}
        self._users: dict[str, LockState] = {}
        self._challenges: dict[bytes, ChallengeRecord] = {}
        self._settings: dict[str, UserSettings] = {}
        self._sends: dict[tuple[str, str], list[float]] = {}
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("memory store is closed")

    # tokens
    def add_token(self, token: TokenRecord) -> None:
        self.add_tokens([token])

    def add_tokens(self, tokens: Sequence[TokenRecord]) -> None:
        with self._lock:
            self._check_open()
            ids = [t.token_id for t in tokens]
            if len(set(ids)) != len(ids) or any(i in self._tokens for i in ids):
                raise StoreError(f"adding {len(ids)} token(s): a token id already exists")
            for token in tokens:
                self._tokens[token.token_id] = token

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

    def advance_step(self, token_id: str, step: int) -> bool:
        with self._lock:
            self._check_open()
            token = self._tokens.get(token_id)
            if token is None or (token.last_step is not None and token.last_step >= step):
                return False
            self._tokens[token_id] = dataclasses.replace(token, last_step=step)
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

    # lockout
    def lock_state(self, user: str) -> LockState:
        with self._lock:
            self._check_open()
            return self._users.get(user, LockState(user))

    def record_failure(
        self, user: str, now: float, max_failures: int, lock_seconds: float
    ) -> LockState:
        if max_failures < 1:
            raise ValueError(f"max_failures must be at least 1, got {max_failures}")
        with self._lock:
            self._check_open()
            state = next_failure_state(
                self._users.get(user, LockState(user)), now, max_failures, lock_seconds
            )
            self._users[user] = state
            return state

    def record_success(self, user: str, now: float) -> None:
        with self._lock:
            self._check_open()
            state = self._users.get(user, LockState(user))
            self._users[user] = dataclasses.replace(
                state, failures=0, locked_until=None, last_success_at=now
            )

    def unlock(self, user: str) -> bool:
        with self._lock:
            self._check_open()
            state = self._users.get(user)
            if state is None or (state.failures == 0 and state.locked_until is None):
                return False
            self._users[user] = dataclasses.replace(state, failures=0, locked_until=None)
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

    # out-of-band sends
    def reserve_send(
        self, user: str, channel: str, now: float, cooldown: float, per_hour: int
    ) -> SendGrant:
        with self._lock:
            self._check_open()
            times = [t for t in self._sends.get((user, channel), []) if t > now - SEND_WINDOW]
            grant = send_verdict(times, now, cooldown, per_hour)
            if grant.granted:
                times.append(now)
            self._sends[(user, channel)] = times
            return grant

    # challenges
    def put_challenge(self, challenge: ChallengeRecord) -> None:
        with self._lock:
            self._check_open()
            if challenge.state_id in self._challenges:
                raise StoreError("a challenge with this state id already exists")
            self._challenges[challenge.state_id] = challenge

    def take_challenge(self, state_id: bytes) -> ChallengeRecord | None:
        with self._lock:
            self._check_open()
            return self._challenges.pop(state_id, None)

    def purge_expired(self, now: float) -> int:
        with self._lock:
            self._check_open()
            expired = [s for s, c in self._challenges.items() if c.expires_at <= now]
            for state_id in expired:
                del self._challenges[state_id]
            for key, times in list(self._sends.items()):
                kept = [t for t in times if t > now - SEND_WINDOW]
                if kept:
                    self._sends[key] = kept
                else:
                    del self._sends[key]
            return len(expired)

    def close(self) -> None:
        with self._lock:
            self._closed = True
