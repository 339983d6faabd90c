"""Help-desk operations on a user's MFA settings, each recorded in the audit trail.

Shared by the CLI and the portal's help-desk pages; everything takes the store, the
:class:`~radmfa.admin.actor.Actor`, the subject and an explicit ``now``, and nothing prints.
Every change writes one admin row (who, whose, what, before, after, why) in the same store
the daemon reads.
"""

from __future__ import annotations

from datetime import UTC, datetime

from radmfa.admin.actor import Actor
from radmfa.store.base import (
    USER_DISABLED,
    USER_ENABLED,
    USER_SUSPENDED,
    Store,
    TrustedDevice,
    UserSettings,
    user_failures_key,
)

__all__ = [
    "STATUS_ACTIONS",
    "UserAdminError",
    "change_status",
    "describe_status",
    "device_place",
    "reset_user",
    "revoke_devices",
    "unlock_user",
]

#: ``radmfa user ACTION``: the status each one sets.
STATUS_ACTIONS = {
    "enable": USER_ENABLED,
    "disable": USER_DISABLED,
    "suspend": USER_SUSPENDED,
    "resume": USER_ENABLED,
}


class UserAdminError(ValueError):
    """Something an admin can fix; the message says what."""


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe_status(settings: UserSettings, now: float | None = None) -> str:
    """``enabled``, ``disabled``, ``suspended until 2030-01-01T00:00:00Z``, ``suspended``
    (until resumed), or ``enabled (suspension ended ...)`` once the time has passed."""
    if settings.status == USER_SUSPENDED:
        if settings.status_until is None:
            return "suspended (until resumed)"
        if now is not None and now >= settings.status_until:
            return f"enabled (suspension ended {_iso(settings.status_until)})"
        return f"suspended until {_iso(settings.status_until)}"
    return settings.status


def change_status(
    store: Store,
    actor: Actor,
    user: str,
    action: str,
    *,
    now: float,
    until: float | None = None,
) -> tuple[UserSettings, UserSettings, int]:
    """``enable``, ``disable``, ``suspend`` (second factor off until ``until``, or until
    resumed) or ``resume``. Disabling also forgets the user's trusted devices. Returns the
    settings before and after and how many devices were forgotten."""
    status = STATUS_ACTIONS.get(action)
    if status is None:
        raise UserAdminError(f"unknown action {action!r}")
    if until is not None and action != "suspend":
        raise UserAdminError("--until is only for suspend")
    if until is not None and until <= now:
        raise UserAdminError(f"--until {_iso(until)} is in the past")
    current = store.user_settings(user)
    if action == "resume" and current.status != USER_SUSPENDED:
        raise UserAdminError(
            f"{user} is not suspended ({describe_status(current, now)})"
            + ("; use 'radmfa user enable'" if current.status == USER_DISABLED else "")
        )
    before = store.set_status(user, status, until if action == "suspend" else None, actor.reason)
    revoked = store.revoke_devices(user) if status == USER_DISABLED else 0
    after = store.user_settings(user)
    note = f"; {revoked} trusted device(s) revoked" if revoked else ""
    store.append_audit(
        [
            actor.event(
                now,
                user,
                action,
                before=describe_status(before, now),
                after=describe_status(after, now) + note,
            )
        ]
    )
    return before, after, revoked


def reset_user(store: Store, actor: Actor, user: str, *, now: float) -> tuple[int, int]:
    """Every token (all factor types) and trusted device gone, so the next login enrolls
    afresh (with the enrolment grace period, if the policy grants one, starting again)."""
    tokens, devices = store.reset_user(user)
    store.append_audit(
        [
            actor.event(
                now,
                user,
                "reset",
                before=f"{tokens} token(s), {devices} trusted device(s)",
                after="no tokens, no trusted devices",
            )
        ]
    )
    return tokens, devices


def unlock_user(store: Store, actor: Actor, user: str, *, now: float) -> bool:
    """Lift a lock (and clear the user's throttle window); False when there was none."""
    before = store.lock_state(user)
    changed = store.unlock(user)
    store.clear_failures(user_failures_key(user))  # the throttle's window too
    if changed:
        store.append_audit(
            [
                actor.event(
                    now,
                    user,
                    "unlock",
                    before=f"{before.failures} failure(s)"
                    + (", locked" if before.is_locked(now) else ""),
                    after="unlocked",
                )
            ]
        )
    return changed


def device_place(device: TrustedDevice) -> str:
    """Where a device was remembered, for people: the client entry, and the NAS-Identifier
    when the request had one."""
    return f"{device.client} nas={device.nas_id}" if device.nas_id else device.client


def revoke_devices(
    store: Store, actor: Actor, user: str, device: str | None, *, now: float
) -> list[TrustedDevice]:
    """Forget one remembered station of ``user`` (normalised key), through every client and
    NAS that remembered it, or all of them."""
    known = [d for d in store.list_devices(user, now) if device is None or d.device == device]
    count = store.revoke_devices(user, device)
    if count:
        store.append_audit(
            [
                actor.event(
                    now,
                    user,
                    "device-revoke",
                    before=", ".join(f"{d.device} via {device_place(d)}" for d in known)
                    or f"{count} expired device(s)",
                    after="revoked",
                )
            ]
        )
    return known
