"""Who makes a change, as the audit trail names them: the use cases in :mod:`radmfa.admin`
take an :class:`Actor` and a subject (the store key of the user changed), whatever surface
(the command line, the portal, a help-desk page) asked for the change."""

from __future__ import annotations

from dataclasses import dataclass, replace

from radmfa.audit import admin_event, operator
from radmfa.auth.signin import CHANNEL_PORTAL
from radmfa.store.base import AuditEvent

__all__ = ["CHANNEL_PORTAL", "Actor", "cli_actor", "portal_actor"]


@dataclass(frozen=True)
class Actor:
    """The one who acts, through what, and why."""

    #: As the audit trail shows it: ``alice`` (an OS account), ``alice (portal)``.
    name: str
    #: The surface the change came through (``portal``); None: the command line.
    channel: str | None = None
    #: The text the person gave (required on the help-desk pages).
    reason: str | None = None

    def event(
        self, at: float, user: str, action: str, *, before: str | None = None,
        after: str | None = None,
    ) -> AuditEvent:  # fmt: skip
        """The admin row of one change of ``user`` by this actor."""
        row = admin_event(
            at, user, action, actor=self.name, before=before, after=after, reason=self.reason
        )
        return replace(row, client=self.channel) if self.channel is not None else row


def cli_actor(reason: str | None = None) -> Actor:
    """The operating-system account running a command (the one behind sudo, if any)."""
    return Actor(operator(), None, reason)


def portal_actor(user: str, reason: str | None = None) -> Actor:
    """A person signed in to the portal: the user on their own pages, or a help-desk member."""
    return Actor(f"{user} ({CHANNEL_PORTAL})", CHANNEL_PORTAL, reason)
