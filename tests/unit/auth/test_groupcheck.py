"""The start-up check of the groups policy rules name, against a users file (the LDAP engines
are checked against a real slapd in tests/integration/test_ldap_groups.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from radmfa.auth.groupcheck import check_policy_groups
from radmfa.config import PolicyConfig, PolicyRule
from radmfa.directory.base import DirectoryOutcome, GroupResult
from radmfa.directory.local import LocalUsersChecker, hash_password
from radmfa.testing import InlineRunner

HASH = hash_password("pw", salt=b"\0" * 16)


def result_of(d: Deferred[Any]) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "not fired"
    return results[0]


def policy(*rules: tuple[str, tuple[str, ...]]) -> PolicyConfig:
    return PolicyConfig(rules=tuple(PolicyRule(name=n, groups=g) for n, g in rules))


class Warnings:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if (
            event.get("log_level") is LogLevel.warn
            and event.get("log_namespace") == "radmfa.policy"
        ):
            self.lines.append(formatEvent(event))

    def __enter__(self) -> Warnings:
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc: object) -> None:
        globalLogPublisher.removeObserver(self)


def local_checker(tmp_path: Path) -> LocalUsersChecker:
    (tmp_path / "users").write_text(f"alice:{HASH}:Staff\n")
    (tmp_path / "groups").write_text("vpn: @staff\nempty:\n")
    return LocalUsersChecker(tmp_path / "users", InlineRunner(), tmp_path / "groups")


def test_each_group_a_rule_names_that_the_directory_lacks_is_a_warning_naming_the_rule(
    tmp_path: Path,
):
    checker = local_checker(tmp_path)
    rules = policy(("leavers", ("staff", "leavers")), ("vpn", ("vpn", "empty", "vnp")))
    with Warnings() as warned:
        missing = result_of(check_policy_groups(rules, checker))
    assert missing == [("leavers", "leavers"), ("vpn", "vnp")]
    assert warned.lines == [
        "policy rule 'leavers' names group 'leavers', which the directory does not have "
        "(or ldap.groups.filter does not admit): the rule never matches",
        "policy rule 'vpn' names group 'vnp', which the directory does not have "
        "(or ldap.groups.filter does not admit): the rule never matches",
    ]


def test_no_group_rules_means_no_search():
    class Refuses:
        def find_groups(self, names: Any) -> Deferred[GroupResult]:
            raise AssertionError("searched")

    assert result_of(check_policy_groups(policy(("r", ())), Refuses())) == []
    assert result_of(check_policy_groups(policy(("r", ("staff",))), None)) == []


def test_an_unavailable_directory_or_a_failure_is_one_warning_never_an_error():
    class Down:
        def find_groups(self, names: Any) -> Deferred[GroupResult]:
            return succeed(GroupResult(DirectoryOutcome.UNAVAILABLE, detail="no LDAP server"))

    class Broken:
        def find_groups(self, names: Any) -> Deferred[GroupResult]:
            return fail(RuntimeError("boom"))

    class Raises:
        def find_groups(self, names: Any) -> Deferred[GroupResult]:
            raise RuntimeError("bang")

    rules = policy(("r", ("staff",)))
    with Warnings() as warned:
        for finder in (Down(), Broken(), Raises()):
            assert result_of(check_policy_groups(rules, finder)) == []
    assert warned.lines == [
        "could not check that the groups named by policy rules exist: no LDAP server",
        "could not check that the groups named by policy rules exist: boom",
        "could not check that the groups named by policy rules exist: bang",
    ]
