"""At start-up and reload: do the groups that policy rules name exist in the directory?

A rule naming a group the directory does not have (a typo, a group that was renamed, or one
the ``ldap.groups`` filter does not admit, such as an Active Directory group under a
groupOfNames filter) never matches, so a ``deny`` on it fails open without a sound. The
directory is asked once, on the service connection, and every such group is logged as a
warning naming its rule. It never holds up start-up: an unreachable directory is one warning.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from radmfa.auth.policy import GroupSet
from radmfa.config import PolicyConfig
from radmfa.directory.base import DirectoryOutcome, GroupFinder, GroupResult

log = Logger(namespace="radmfa.policy")


def named_groups(policy: PolicyConfig) -> list[str]:
    """Every group the rules name, each once, in rule order."""
    return list(dict.fromkeys(group for rule in policy.rules for group in rule.groups))


def unknown_groups(policy: PolicyConfig, found: Iterable[str]) -> list[tuple[str, str]]:
    """(rule, group) for each group of a rule that is not among ``found``, matched the way a
    request's groups are (a name against a cn or a users-file name, a DN against a DN)."""
    have = GroupSet.of(found)
    return [
        (rule.name, group) for rule in policy.rules for group in rule.groups if not have.has(group)
    ]


def check_policy_groups(
    policy: PolicyConfig, finder: GroupFinder | None
) -> Deferred[list[tuple[str, str]]]:
    """Search for the groups the rules name and warn about each one missing. Fires with the
    (rule, group) pairs warned about; never fails."""
    names = named_groups(policy)
    if finder is None or not names:
        return succeed([])

    def judge(result: GroupResult) -> list[tuple[str, str]]:
        if result.outcome is not DirectoryOutcome.OK:
            log.warn(
                "could not check that the groups named by policy rules exist: {detail}",
                detail=result.detail or result.outcome.value,
            )
            return []
        missing = unknown_groups(policy, result.groups)
        for rule, group in missing:
            log.warn(
                "policy rule {rule!r} names group {group!r}, which the directory does not have "
                "(or ldap.groups.filter does not admit): the rule never matches",
                rule=rule,
                group=group,
            )
        return missing

    def failed(failure: Failure) -> list[tuple[str, str]]:
        log.warn(
            "could not check that the groups named by policy rules exist: {why}",
            why=failure.getErrorMessage(),
        )
        return []

    try:
        searching = finder.find_groups(names)
    except Exception:
        return succeed(failed(Failure()))
    return searching.addCallback(judge).addErrback(failed)
