"""What the portal reads and changes in the store, in one place: a user's factors, and the
enrolment of an authenticator app (through the admin use cases the CLI runs too).

Every call goes through the pipeline's store runner, off the reactor. A token is stored only
when its confirmation code is right (:func:`radmfa.admin.tokens.confirm_token`), with its
admin row in the audit trail naming the user and the portal as the actor.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import DeferredLock
from twisted.internet.interfaces import IReactorTime

from radmfa.admin.actor import portal_actor
from radmfa.admin.tokens import (
    DuplicateSecret,
    TokenSpec,
    build_token,
    confirm_token,
    enroll_token,
)
from radmfa.auth.signin import CHANNEL_PORTAL
from radmfa.config import TotpConfig
from radmfa.factors.base import FactorRegistry
from radmfa.store.base import TokenRecord
from radmfa.store.facade import AsyncStore

__all__ = ["Account", "AccountParts", "Confirmed", "FactorView", "actor_of"]


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


@dataclass(frozen=True)
class FactorView:
    """One factor as the user's own page lists it."""

    token_id: str
    type: str
    label: str
    created_at: float
    description: str


class AccountParts(Protocol):
    """What the account pages use of the running pipeline (the Authenticator has them)."""

    store: AsyncStore
    factors: FactorRegistry


class Account:
    """A user's factors through the store runner; enrolments of one user one at a time.
    ``current`` gives the running pipeline's parts (a reload may replace the factors)."""

    def __init__(self, current: Callable[[], AccountParts], clock: IReactorTime) -> None:
        self.current = current
        self.clock = clock
        #: Confirmations of one user wait for each other in this process (the portal runs in
        #: one): "has no factor yet" and "add one" then cannot interleave.
        self._locks: defaultdict[str, DeferredLock] = defaultdict(DeferredLock)

    async def factors_of(self, user: str) -> list[FactorView]:
        parts = self.current()
        tokens = await parts.store.list_tokens(user)
        return [
            FactorView(t.token_id, t.type, parts.factors.label(t.type), t.created_at, t.description)
            for t in tokens
            if t.type in parts.factors
        ]

    async def has_factor(self, user: str) -> bool:
        """Whether the user has any factor that can prove something now."""
        parts = self.current()
        tokens = await parts.store.list_tokens(user)
        now = self.clock.seconds()
        return any(parts.factors.usable(t, now) for t in tokens)

    def new_app_token(self, user: str, totp: TotpConfig, description: str) -> TokenRecord:
        """A fresh TOTP token under the configured defaults; not stored (see :meth:`confirm`)."""
        spec = TokenSpec.from_defaults(totp, type="totp", description=description)
        return build_token(user, spec, self.clock.seconds())

    async def confirm(
        self, user: str, pending: TokenRecord, code: str, *, password_only: bool
    ) -> Confirmed:
        """Store ``pending`` if ``code`` is a fresh code of it. ``password_only``: the session
        never proved a factor, so the enrolment is only for a user who still has none (a
        password alone must not add a factor next to one the user already has)."""
        if pending.user != user:  # a session's token is always its own user's
            return Confirmed.WRONG_CODE
        parts = self.current()
        now = self.clock.seconds()
        token = confirm_token(pending, code, now, parts.factors)
        if token is None:
            return Confirmed.WRONG_CODE
        lock = self._locks[user]
        await lock.acquire()
        try:
            if password_only and await self.has_factor(user):
                return Confirmed.HAS_FACTOR
            await parts.store.interaction(
                enroll_token, portal_actor(user, "self-service enrolment"), token, now=now
            )
        except DuplicateSecret:
            return Confirmed.DUPLICATE
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(user, None)
        return Confirmed.ADDED
