"""The pure rules every engine applies the same way: counting a failure, limiting sends,
telling an idle user row, recognising a secret already stored, the keys of failure windows.

Each engine calls them inside its own transaction, so that the memory fake and the SQL
engines decide identically.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence

from radmfa.store.model import (
    ATTEMPT_FAILED,
    ATTEMPT_NEUTRAL,
    ATTEMPT_SUCCEEDED,
    AUDIT_AUTH,
    LOCKED_FOR_GOOD,
    SEND_WINDOW,
    STALE_FAILURES,
    AuditEvent,
    AuditQuery,
    LockoutRule,
    LockState,
    SendGrant,
    TokenRecord,
    UserSettings,
)


def user_failures_key(user: str) -> str:
    """The ``failures`` key of a user's sliding window (rate_limits.user)."""
    return f"user:{user}"


def source_failures_key(source: str) -> str:
    """The ``failures`` key of a station or packet source (rate_limits.source)."""
    return f"source:{source}"


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
