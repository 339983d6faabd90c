"""The policy's verdict for one request, as the pipeline asks for it: groups are looked up only
when a group rule could decide, and a refusing verdict is the reject to send.

Round one asks before any factor; the answer to a State asks again, since a reload may have
changed the rules (or the user's groups) since the State was issued: the fresh verdict
decides, and the rule named in the State is history.
"""

from __future__ import annotations

from dataclasses import replace

from twisted.logger import Logger

from radmfa.auth.decisions import reject
from radmfa.auth.ledger import Ledger, UserView
from radmfa.auth.model import AccessRequest, Decision, Reason
from radmfa.auth.policy import (
    IP_DENIED,
    NEEDS_GROUPS,
    GroupSet,
    Policy,
    Subject,
    Verdict,
    subject_address,
)
from radmfa.directory.base import DirectoryOutcome, GroupResolver, UserEntry

log = Logger(namespace="radmfa.auth")


def refusal(verdict: Verdict, user: str) -> Decision | None:
    """The reject a denying rule or an address list calls for, else None."""
    if verdict.deny:
        return reject(Reason.POLICY_DENY, user)
    if verdict.address_refusal is not None:
        refused = verdict.address_refusal
        return reject(Reason.IP_DENIED if refused == IP_DENIED else Reason.IP_NOT_ALLOWED, user)
    return None


class PolicyCheck:
    """Evaluates the policy for a request, looking groups up on demand."""

    def __init__(self, *, policy: Policy, groups: GroupResolver | None, ledger: Ledger) -> None:
        self.policy = policy
        self.groups = groups
        self.ledger = ledger

    async def evaluate(
        self, request: AccessRequest, user: str, key: str, view: UserView
    ) -> tuple[Verdict | Decision, UserEntry | None]:
        """The verdict (and the user entry a group lookup found, for the bind to reuse), or
        the reject to send when the lookup failed (an unknown user counts against ``view``'s
        attempt)."""
        address = None
        if self.policy.needs_address:
            address = subject_address(request.calling_station_id, request.client_address)
        subject = Subject(key, request.client_name, request.nas_identifier, address)
        return await self.evaluate_subject(subject, user, view)

    async def evaluate_subject(
        self, subject: Subject, user: str, view: UserView
    ) -> tuple[Verdict | Decision, UserEntry | None]:
        """:meth:`evaluate` for any channel: ``subject`` says who asks, and from where."""
        verdict = self.policy.evaluate(subject)
        if verdict is not NEEDS_GROUPS:
            assert isinstance(verdict, Verdict)
            return verdict, None
        assert self.groups is not None
        found = await self.groups.user_groups(user)
        if found.outcome is DirectoryOutcome.UNAVAILABLE:
            log.warn(
                "directory unavailable (groups of {user}): {detail}",
                user=user,
                detail=found.detail,
            )
            return reject(Reason.DIRECTORY_UNAVAILABLE, user), None
        if found.outcome is not DirectoryOutcome.OK:
            await self.ledger.fail(view)
            reason = (
                Reason.AMBIGUOUS_USER
                if found.outcome is DirectoryOutcome.AMBIGUOUS_USER
                else Reason.NO_SUCH_USER
            )
            return reject(reason, user), None
        verdict = self.policy.evaluate(replace(subject, groups=GroupSet.of(found.groups)))
        assert isinstance(verdict, Verdict)
        return verdict, found.entry
