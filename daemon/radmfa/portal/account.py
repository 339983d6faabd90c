"""What the portal reads and changes in the store for the signed-in user, in one place.

Every change is an admin use case (:mod:`radmfa.admin`) run through the pipeline's store
runner with the user as the actor on the portal (``alice (portal)``), so the audit trail
has the same rows the CLI writes. A token is stored only when its confirmation code is
right (:func:`radmfa.admin.tokens.confirm_token`); an email or SMS address only when the
code sent to it came back.

The rules that must hold against two tabs (or two workers, or two nodes) at once are
judged by the store in the transaction that makes the change
(:meth:`~radmfa.store.base.Store.change_tokens`): "add this factor only while the user has
none" for a session that proved no factor, and "remove this factor only if another
standing factor remains"; an enrolment link is spent in the same transaction.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.interfaces import IReactorTime

from radmfa.admin.actor import CHANNEL_PORTAL, portal_actor
from radmfa.admin.factors import (
    ChangeRefused,
    FactorAdminError,
    backup_codes_left,
    change_address,
    prefer_factor,
    regenerate_backup_codes,
)
from radmfa.admin.tokens import (
    GONE,
    HAS_FACTOR,
    LastFactor,
    TokenSpec,
    build_token,
    confirm_token,
    enroll_judged,
    only_first_factor,
    remove_tokens,
)
from radmfa.admin.users import revoke_devices
from radmfa.auth.outofband import destination_of
from radmfa.auth.policy import NEEDS_GROUPS, GroupSet, Policy, Subject, Verdict
from radmfa.config import Config, TotpConfig
from radmfa.directory.base import DirectoryOutcome, GroupResolver
from radmfa.factors.base import FactorRegistry
from radmfa.store.base import (
    AUDIT_AUTH,
    KNOWN_SECRET,
    LINK_GONE,
    USER_DISABLED,
    AuditEvent,
    AuditQuery,
    Store,
    TokenRecord,
    TrustedDevice,
)
from radmfa.store.facade import AsyncStore

__all__ = [
    "Account",
    "AccountParts",
    "Confirmed",
    "FactorView",
    "Overview",
    "Removed",
    "actor_of",
]

#: Sign-ins a user's own page lists, newest first.
RECENT_SIGN_INS = 20


def actor_of(user: str) -> str:
    """Who the audit trail says made a change through the portal: the user, on the portal."""
    return f"{user} ({CHANNEL_PORTAL})"


class Confirmed(enum.Enum):
    ADDED = "added"
    #: The code does not belong to the pending token (or came too late or too early).
    WRONG_CODE = "wrong_code"
    #: A password-only session, and the user has a factor by now: sign in with it first.
    HAS_FACTOR = "has_factor"
    #: The user already has this secret (cannot happen with a fresh one; kept honest).
    DUPLICATE = "duplicate"
    #: The enrolment link of the session is used up, expired (or not the user's).
    LINK_GONE = "link_gone"
    #: The token to replace is gone meanwhile.
    GONE = "gone"


class Removed(enum.Enum):
    REMOVED = "removed"
    #: The user's last standing factor, and the policy asks for one: refused.
    LAST = "last"
    #: Not (or no longer) the user's token.
    GONE = "gone"


@dataclass(frozen=True)
class FactorView:
    """One factor as the user's own page lists it."""

    token_id: str
    type: str
    label: str
    created_at: float
    description: str
    #: The masked address of an email/SMS factor, and whether it still waits to be confirmed.
    address: str | None = None
    pending: bool = False


@dataclass(frozen=True)
class Overview:
    """The user's home page: factors (backup codes counted, not listed), the preferred one."""

    factors: list[FactorView]
    backup_left: int
    backup_total: int
    preferred: str | None
    devices: int


class AccountParts(Protocol):
    """What the account pages use of the running pipeline (the Authenticator has them)."""

    store: AsyncStore
    factors: FactorRegistry
    policy: Policy
    groups: GroupResolver | None


def factor_views(factors: FactorRegistry, tokens: Sequence[TokenRecord]) -> list[FactorView]:
    """The factors a page lists (backup codes are counted, not listed)."""
    views = []
    for t in tokens:
        if t.type not in factors or t.type == "backup":
            continue
        destination = destination_of(factors, t)
        views.append(
            FactorView(
                t.token_id,
                t.type,
                factors.label(t.type),
                t.created_at,
                t.description,
                destination.masked if destination is not None else None,
                destination is not None and not destination.confirmed,
            )
        )
    return views


class Account:
    """A user's factors, devices and history through the store runner. ``current`` gives the
    running pipeline's parts (a reload may replace the factors)."""

    def __init__(self, current: Callable[[], AccountParts], clock: IReactorTime) -> None:
        self.current = current
        self.clock = clock

    # -- reading --------------------------------------------------------------------------------

    async def factors_of(self, user: str) -> list[FactorView]:
        parts = self.current()
        return factor_views(parts.factors, await parts.store.list_tokens(user))

    async def overview(self, user: str) -> Overview:
        parts = self.current()
        tokens = await parts.store.list_tokens(user)
        settings = await parts.store.user_settings(user)
        devices = await parts.store.list_devices(user, self.clock.seconds())
        left, total = backup_codes_left(tokens)
        return Overview(
            factor_views(parts.factors, tokens), left, total, settings.preferred, len(devices)
        )

    async def has_factor(self, user: str) -> bool:
        """Whether the user has any factor that can prove something now."""
        parts = self.current()
        tokens = await parts.store.list_tokens(user)
        now = self.clock.seconds()
        return any(parts.factors.usable(t, now) for t in tokens)

    async def in_good_standing(self, user: str) -> bool:
        """Whether a session of ``user`` may go on: not disabled, not locked (what a new
        login is refused for before any password check), read in one trip."""
        return await self.current().store.interaction(_in_good_standing, user, self.clock.seconds())

    async def devices(self, user: str) -> list[TrustedDevice]:
        return await self.current().store.list_devices(user, self.clock.seconds())

    async def recent(self, user: str, limit: int = RECENT_SIGN_INS) -> list[AuditEvent]:
        """The user's own sign-ins (RADIUS and portal), newest first."""
        rows = await self.current().store.query_audit(
            AuditQuery(user=user, kind=AUDIT_AUTH, limit=limit)
        )
        return list(reversed(rows))

    async def mfa_required(self, name: str, user: str, clients: Sequence[str]) -> bool:
        """Whether the policy asks ``user`` for a second factor through any client (or the
        portal). Groups are looked up when a group rule could decide; a failed lookup counts
        as "required" (removing the last factor is refused rather than allowed blind)."""
        parts = self.current()
        groups: GroupSet | None = None
        for client in (*clients, CHANNEL_PORTAL):
            verdict = parts.policy.evaluate(Subject(user, client))
            if verdict is NEEDS_GROUPS:
                if groups is None:
                    if parts.groups is None:
                        return True
                    found = await parts.groups.user_groups(name)
                    if found.outcome is not DirectoryOutcome.OK:
                        return True
                    groups = GroupSet.of(found.groups)
                verdict = parts.policy.evaluate(Subject(user, client, groups=groups))
            assert isinstance(verdict, Verdict)
            if not verdict.deny and verdict.mfa == "required":
                return True
        return False

    # -- enrolment ------------------------------------------------------------------------------

    def new_app_token(self, user: str, totp: TotpConfig, description: str) -> TokenRecord:
        """A fresh TOTP token under the configured defaults; not stored (see :meth:`confirm`)."""
        spec = TokenSpec.from_defaults(totp, type="totp", description=description)
        return build_token(user, spec, self.clock.seconds())

    async def confirm(
        self,
        user: str,
        pending: TokenRecord,
        code: str,
        *,
        password_only: bool,
        replacing: str | None = None,
        link: bytes | None = None,
    ) -> Confirmed:
        """Store ``pending`` if ``code`` is a fresh code of it (in place of the user's token
        ``replacing``, in one step). ``password_only``: the session never proved a factor,
        so the enrolment is only for a user who still has none (a password alone must not
        add a factor next to one the user already has), judged in the transaction that adds
        it; ``link``: the enrolment link to spend with it."""
        if pending.user != user:  # a session's token is always its own user's
            return Confirmed.WRONG_CODE
        parts = self.current()
        now = self.clock.seconds()
        token = confirm_token(pending, code, now, parts.factors)
        if token is None:
            return Confirmed.WRONG_CODE
        actor = portal_actor(user, "self-service enrolment")
        result = await parts.store.interaction(
            enroll_judged,
            actor,
            token,
            now=now,
            judge=only_first_factor(parts.factors, now) if password_only else None,
            replacing=replacing,
            link=link if password_only else None,
        )
        if result.refusal == GONE:  # the app it replaces went meanwhile: add it alone
            result = await parts.store.interaction(enroll_judged, actor, token, now=now)
        return _confirmed(result.refusal)

    async def save_address(
        self,
        user: str,
        config: Config,
        token_type: str,
        address: str,
        *,
        password_only: bool,
        link: bytes | None = None,
    ) -> Confirmed:
        """Store a new email address or phone number whose code came back (so confirmed);
        the earlier one of that type goes, and with it the user's trusted devices.
        ``password_only`` and ``link`` as for :meth:`confirm`."""
        parts = self.current()
        now = self.clock.seconds()
        try:
            await parts.store.interaction(
                change_address,
                portal_actor(user, "self-service, confirmed by a code sent there"),
                config,
                token_type,
                user,
                address,
                now=now,
                confirmed=True,
                judge=only_first_factor(parts.factors, now) if password_only else None,
                link=link if password_only else None,
            )
        except ChangeRefused as e:
            return _confirmed(e.refusal)
        except FactorAdminError:
            return Confirmed.WRONG_CODE
        return Confirmed.ADDED

    # -- changes --------------------------------------------------------------------------------

    async def backup_codes(self, user: str, config: Config) -> list[str]:
        """A new set of backup codes (the old set dies); shown once, never kept here."""
        return await self.current().store.interaction(
            regenerate_backup_codes,
            portal_actor(user, "self-service"),
            config,
            user,
            now=self.clock.seconds(),
        )

    async def remove(self, user: str, token_id: str, *, keep_one: bool) -> Removed:
        """Remove one of the user's tokens (never a backup code: those are regenerated);
        ``keep_one``: not the last standing factor (judged in the removal's transaction)."""
        parts = self.current()
        tokens = await parts.store.list_tokens(user)
        if not any(t.token_id == token_id and t.type != "backup" for t in tokens):
            return Removed.GONE
        try:
            removed = await parts.store.interaction(
                remove_tokens,
                portal_actor(user, "self-service"),
                user,
                token_id,
                now=self.clock.seconds(),
                keep_one=parts.factors if keep_one else None,
            )
        except LastFactor:
            return Removed.LAST
        return Removed.REMOVED if removed else Removed.GONE

    async def prefer(self, user: str, factor: str) -> bool:
        """Set the preferred factor (``none``: no preference); False when the user has no
        factor of that type."""
        try:
            await self.current().store.interaction(
                prefer_factor,
                portal_actor(user, "self-service"),
                user,
                factor,
                now=self.clock.seconds(),
            )
        except FactorAdminError:
            return False
        return True

    async def forget(self, user: str, device: str | None) -> int:
        """Forget one of the user's trusted devices (through every client), or all; how many
        stations were forgotten."""
        known = await self.current().store.interaction(
            revoke_devices,
            portal_actor(user, "self-service"),
            user,
            device,
            now=self.clock.seconds(),
        )
        return len({d.device for d in known})


def _in_good_standing(store: Store, user: str, now: float) -> bool:
    if store.user_settings(user).status == USER_DISABLED:
        return False
    return not store.lock_state(user).is_locked(now)


def _confirmed(refusal: object | None) -> Confirmed:
    """What a judged enrolment's refusal means to the page."""
    if refusal is None:
        return Confirmed.ADDED
    return {
        HAS_FACTOR: Confirmed.HAS_FACTOR,
        LINK_GONE: Confirmed.LINK_GONE,
        KNOWN_SECRET: Confirmed.DUPLICATE,
        GONE: Confirmed.GONE,
    }.get(str(refusal), Confirmed.WRONG_CODE)
