"""What the help-desk pages read and change in the store: another user's status, factors,
devices, lock and sign-ins, and the admin use cases the CLI runs (unlock, disable/enable,
suspend, reset, revoke devices, an emergency code, an enrolment link), with the help-desk
member as the actor on the portal and the reason they gave.

The subject is named by the page (a help-desk member acts on others); the actor always comes
from the session. A member never acts on their own account here (another member does, or an
admin with the CLI): help-desk rights must not lift one's own lock or mint one's own
emergency code.
"""

from __future__ import annotations

from dataclasses import dataclass

from radmfa.admin.actor import portal_actor
from radmfa.admin.factors import FactorAdminError, backup_codes_left, issue_emergency
from radmfa.admin.links import LinkError, create_enrol_link, link_url
from radmfa.admin.users import (
    UserAdminError,
    change_status,
    describe_status,
    reset_user,
    revoke_devices,
    unlock_user,
)
from radmfa.auth.identity import name_key
from radmfa.config import Config
from radmfa.portal.account import Account, FactorView, factor_views
from radmfa.store.base import AuditEvent, LockState, TokenRecord, TrustedDevice, UserSettings

__all__ = ["ACTIONS", "DeskError", "HelpDesk", "SubjectView"]

#: The actions of the help-desk pages (``emergency`` has its own method: it shows a code).
ACTIONS = ("unlock", "disable", "enable", "suspend", "resume", "reset", "forget")
#: Users a search lists at most.
MAX_FOUND = 25


class DeskError(ValueError):
    """An action the help desk cannot take as asked; the message says why."""


@dataclass(frozen=True)
class SubjectView:
    """One user as the help desk sees them."""

    user: str
    status: str
    status_reason: str | None
    mfa_suspended: bool
    locked: bool
    #: Locked until an admin unlocks (``lockout.max_total_failures``).
    locked_for_good: bool
    locked_until: float | None
    failures: int
    factors: list[FactorView]
    backup_left: int
    backup_total: int
    preferred: str | None
    devices: list[TrustedDevice]
    sign_ins: list[AuditEvent]
    #: Nothing is stored about this user (never signed in, no factor).
    unknown: bool


class HelpDesk:
    """The help-desk half of the portal's store access."""

    def __init__(self, account: Account) -> None:
        self.account = account

    async def find(self, text: str) -> list[str]:
        """Users the store knows whose name contains ``text`` (compared as user names are)."""
        wanted = name_key(text)
        if not wanted:
            return []
        users = await self.account.current().store.known_users()
        exact = [u for u in users if u == wanted]
        partial = [u for u in users if wanted in u and u != wanted]
        return (exact + partial)[:MAX_FOUND]

    async def view(self, user: str) -> SubjectView:
        parts = self.account.current()
        now = self.account.clock.seconds()
        tokens: list[TokenRecord] = await parts.store.list_tokens(user)
        lock: LockState = await parts.store.lock_state(user)
        settings: UserSettings = await parts.store.user_settings(user)
        devices = await self.account.devices(user)
        sign_ins = await self.account.recent(user)
        left, total = backup_codes_left(tokens)
        locked = lock.is_locked(now)
        unknown = (
            not tokens
            and not sign_ins
            and lock.failures == 0
            and lock.locked_until is None
            and settings == UserSettings(user)
        )
        return SubjectView(
            user=user,
            status=describe_status(settings, now),
            status_reason=settings.status_reason,
            mfa_suspended=settings.mfa_suspended(now),
            locked=locked,
            locked_for_good=locked and lock.locked_for_good,
            locked_until=lock.locked_until if locked and not lock.locked_for_good else None,
            failures=lock.failures,
            factors=factor_views(parts.factors, tokens),
            backup_left=left,
            backup_total=total,
            preferred=settings.preferred,
            devices=devices,
            sign_ins=sign_ins,
            unknown=unknown,
        )

    async def act(
        self,
        member: str,
        user: str,
        action: str,
        reason: str,
        *,
        until: float | None = None,
        device: str | None = None,
    ) -> str:
        """Do ``action`` to ``user`` as help-desk ``member``; what happened, for the page."""
        if action not in ACTIONS:
            raise DeskError("unknown action")
        self._not_self(member, user)
        parts = self.account.current()
        actor = portal_actor(member, reason)
        now = self.account.clock.seconds()

        async def work() -> str:
            store = parts.store
            if action == "unlock":
                changed = await store.interaction(unlock_user, actor, user, now=now)
                return f"{user} unlocked." if changed else f"{user} was not locked."
            if action == "reset":
                tokens, devices = await store.interaction(reset_user, actor, user, now=now)
                return (
                    f"{user}: {tokens} factor(s) and {devices} trusted device(s) removed; "
                    "the next sign-in enrolls afresh."
                )
            if action == "forget":
                known = await store.interaction(revoke_devices, actor, user, device, now=now)
                if not known:
                    raise DeskError(f"{user} has no such trusted device.")
                return f"{user}: forgot {', '.join(dict.fromkeys(d.device for d in known))}."
            try:
                before, after, revoked = await store.interaction(
                    change_status, actor, user, action, now=now, until=until
                )
            except UserAdminError as e:
                raise DeskError(str(e).replace("'radmfa user enable'", "Enable")) from None
            was, is_now = describe_status(before, now), describe_status(after, now)
            text = f"{user}: {was} → {is_now}" if was != is_now else f"{user}: already {is_now}"
            return text + (f"; {revoked} trusted device(s) revoked." if revoked else ".")

        return await work()

    async def emergency(
        self, member: str, user: str, reason: str, config: Config
    ) -> tuple[str, float]:
        """A single-use emergency code for ``user`` (the code, until when it works): shown
        once to the member, never stored in clear."""
        self._not_self(member, user)
        parts = self.account.current()
        actor = portal_actor(member, reason)
        now = self.account.clock.seconds()
        try:
            code, token = await parts.store.interaction(
                issue_emergency, actor, config, user, None, now=now
            )
        except FactorAdminError as e:
            raise DeskError(str(e)) from None
        return code, token.created_at + token.period

    async def link(
        self, member: str, user: str, reason: str, public_url: str, ttl: float
    ) -> tuple[str, float]:
        """A one-time enrolment link for ``user`` (its URL, until when it works): shown once
        to the member, stored as a hash. None for a user who can sign in with a factor."""
        self._not_self(member, user)
        parts = self.account.current()
        now = self.account.clock.seconds()
        has_factor = await self.account.has_factor(user)
        try:
            made = await parts.store.interaction(
                create_enrol_link,
                portal_actor(member, reason),
                user,
                now=now,
                ttl=ttl,
                has_factor=has_factor,
            )
        except LinkError as e:
            raise DeskError(str(e)) from None
        return link_url(public_url, made.secret), made.record.expires_at

    @staticmethod
    def _not_self(member: str, user: str) -> None:
        if member == user:
            raise DeskError(
                "Help-desk actions on your own account are not allowed: ask a colleague."
            )
