"""The one directory bind of a login, and what its answer means for the decision.

A wrong password or an unknown user counts as a failed credential; an unreachable directory
and the directory's own refusal of an account (disabled, expired, locked, ...) do not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from twisted.logger import Logger

from radmfa.auth.decisions import reject
from radmfa.auth.ledger import Ledger, UserView
from radmfa.auth.model import Decision, Reason
from radmfa.directory.base import ACCOUNT_STATES, DirectoryOutcome, PasswordChecker, UserEntry

log = Logger(namespace="radmfa.auth")

#: Directory account refusals (DirectoryResult.detail) and the reason each is logged with.
ACCOUNT_REASONS = {
    "account_disabled": Reason.ACCOUNT_DISABLED,
    "account_locked": Reason.ACCOUNT_LOCKED,
    "account_expired": Reason.ACCOUNT_EXPIRED,
    "password_expired": Reason.PASSWORD_EXPIRED,
    "password_must_change": Reason.PASSWORD_MUST_CHANGE,
    "logon_hours_restricted": Reason.ACCOUNT_RESTRICTED,
    "workstation_restricted": Reason.ACCOUNT_RESTRICTED,
}
assert set(ACCOUNT_REASONS) == ACCOUNT_STATES


class PasswordCheck:
    """Binds once as the user; records a failure with the ledger when the user got it wrong."""

    def __init__(self, directory: PasswordChecker, ledger: Ledger) -> None:
        self.directory = directory
        self.ledger = ledger

    async def check(
        self,
        view: UserView,
        user: str,
        password: str,
        *,
        entry: UserEntry | None = None,
    ) -> tuple[Decision | None, Mapping[str, Sequence[str]]]:
        """(None, attributes) when the password is right, else (the reject, {}).
        ``entry``: the user search a group lookup already made."""
        if entry is not None:
            result = await self.directory.check_password(user, password, entry=entry)
        else:
            result = await self.directory.check_password(user, password)
        if result.outcome is DirectoryOutcome.OK:
            return None, result.attributes
        if result.outcome is DirectoryOutcome.UNAVAILABLE:
            log.warn("directory unavailable: {detail}", detail=result.detail)
            return reject(Reason.DIRECTORY_UNAVAILABLE, user), {}
        account = ACCOUNT_REASONS.get(result.detail)
        if account is not None:  # the directory's own verdict on the account: not a guess
            log.info(
                "the directory refuses the account of {user} ({detail})",
                user=user,
                detail=result.detail,
            )
            return reject(account, user), {}
        await self.ledger.fail(view)
        reason = {
            DirectoryOutcome.NO_SUCH_USER: Reason.NO_SUCH_USER,
            DirectoryOutcome.AMBIGUOUS_USER: Reason.AMBIGUOUS_USER,
        }.get(result.outcome, Reason.BAD_PASSWORD)
        if result.outcome is DirectoryOutcome.AMBIGUOUS_USER:
            log.error("directory search found several entries for {user}", user=user)
        return reject(reason, user), {}
