"""``ldap.user_cache`` in the ldap3 engine, over the scripted fake directory of
test_ldap_unit (inline runner, fake clock): which checks search, and that every check still
binds as the user exactly once. The libldap engine is covered against slapd in
tests/integration/test_ldap_user_cache.py."""

from __future__ import annotations

from radmfa.config import LdapGroupsConfig
from radmfa.directory.base import DirectoryOutcome
from tests.unit.test_ldap_unit import (
    ALICE_DN,
    ALICE_PW,
    SVC_DN,
    A,
    FakeDirectory,
    direct_config,
    entry,
    groups_of,
    make,
    result_of,
    search_config,
    server,
)

OK = DirectoryOutcome.OK
INVALID = DirectoryOutcome.INVALID_CREDENTIALS
NO_SUCH_USER = DirectoryOutcome.NO_SUCH_USER
UNAVAILABLE = DirectoryOutcome.UNAVAILABLE


def user_searches(directory: FakeDirectory) -> int:
    return [flt for flt, _attrs, _user in directory.ops("search")].count("(uid=alice)")


def user_binds(directory: FakeDirectory) -> int:
    return [user for user, _password in directory.ops("bind")].count(ALICE_DN)


def test_a_repeat_login_skips_the_search_but_not_the_bind():
    checker, directory, clock = make(search_config(A, user_cache=60.0), server(A))
    for _ in range(3):
        assert result_of(checker.check_password("alice", ALICE_PW)).outcome is OK
        clock.advance(10)
    assert (user_searches(directory), user_binds(directory)) == (1, 3)
    assert (checker.user_cache_hits, checker.user_cache_misses) == (2, 1)


def test_the_attributes_come_from_the_cache_too():
    checker, _, _ = make(search_config(A, user_cache=60.0), server(A), attributes=["mail"])
    first = result_of(checker.check_password("alice", ALICE_PW))
    first.attributes["mail"].append("mallory@x")  # a caller changing its result
    second = result_of(checker.check_password("alice", ALICE_PW))
    assert second.attributes == {"mail": ["alice@x"]}
    assert checker.user_cache_hits == 1


def test_the_entry_expires():
    checker, directory, clock = make(search_config(A, user_cache=60.0), server(A))
    result_of(checker.check_password("alice", ALICE_PW))
    clock.advance(60)
    assert result_of(checker.check_password("alice", ALICE_PW)).outcome is OK
    assert user_searches(directory) == 2


def test_a_wrong_password_is_rejected_by_the_bind_and_forgets_the_entry():
    checker, directory, _ = make(search_config(A, user_cache=60.0), server(A))
    assert result_of(checker.check_password("alice", ALICE_PW)).outcome is OK
    wrong = result_of(checker.check_password("alice", "not-alices"))
    assert (wrong.outcome, wrong.detail) == (INVALID, "bad_password")
    assert (user_searches(directory), user_binds(directory)) == (1, 2)  # the hit still bound
    assert result_of(checker.check_password("alice", ALICE_PW)).outcome is OK
    assert (user_searches(directory), user_binds(directory)) == (2, 3)


def test_an_account_state_refusal_forgets_the_entry():
    """pwdReset on the entry: refused without a bind; once the admin clears it, the next
    login searches again instead of trusting the cached refusal."""
    reset = {"(uid=alice)": [entry(ALICE_DN, pwdReset=[b"TRUE"])]}
    fake = server(A, search_results=reset)
    checker, directory, _ = make(search_config(A, user_cache=60.0), fake)
    refused = result_of(checker.check_password("alice", ALICE_PW))
    assert (refused.outcome, refused.detail) == (INVALID, "password_must_change")
    fake.search_results["(uid=alice)"] = [entry(ALICE_DN)]
    assert result_of(checker.check_password("alice", ALICE_PW)).outcome is OK
    assert (user_searches(directory), user_binds(directory)) == (2, 1)


def test_only_one_found_entry_is_remembered():
    checker, directory, _ = make(search_config(A, user_cache=60.0), server(A))
    for _ in range(2):
        assert result_of(checker.check_password("nobody", ALICE_PW)).outcome is NO_SUCH_USER
    assert [flt for flt, _a, _u in directory.ops("search")].count("(uid=nobody)") == 2
    assert checker.user_cache_hits == 0


def test_an_unanswered_search_caches_nothing():
    fake = server(A, "busy")
    checker, directory, _ = make(search_config(A, user_cache=60.0, retry_after=0), fake)
    assert result_of(checker.check_password("alice", ALICE_PW)).outcome is UNAVAILABLE
    fake.behaviour = "ok"
    assert result_of(checker.check_password("alice", ALICE_PW)).outcome is OK
    assert user_binds(directory) == 1
    assert checker.user_cache_hits == 0


def test_an_unanswered_bind_keeps_the_entry():
    """A transport failure says nothing about the entry: it is neither dropped nor changed."""
    fake = server(A)
    checker, directory, _ = make(search_config(A, user_cache=60.0, retry_after=0), fake)
    assert result_of(checker.check_password("alice", ALICE_PW)).outcome is OK
    fake.behaviour = "silent"
    assert result_of(checker.check_password("alice", ALICE_PW)).outcome is UNAVAILABLE
    fake.behaviour = "ok"
    assert result_of(checker.check_password("alice", ALICE_PW)).outcome is OK
    assert user_searches(directory) == 1
    assert checker.user_cache_hits == 2


def test_group_lookups_use_the_cached_entry():
    found = {"(uid=alice)": [entry(ALICE_DN, memberOf=[b"cn=staff,dc=x"])]}
    settings = LdapGroupsConfig(membership="memberof", nested=False)
    checker, directory, _ = make(
        search_config(A, user_cache=60.0), server(A, search_results=found), groups=settings
    )
    assert result_of(checker.check_password("alice", ALICE_PW)).outcome is OK
    groups = groups_of(checker.user_groups("alice"))
    assert groups.groups == ("cn=staff,dc=x",)
    assert groups.entry is not None
    checked = result_of(checker.check_password("alice", ALICE_PW, entry=groups.entry))
    assert checked.outcome is OK
    assert (user_searches(directory), user_binds(directory)) == (1, 2)


def test_off_by_default():
    checker, directory, _ = make(search_config(A), server(A))
    for _ in range(2):
        assert result_of(checker.check_password("alice", ALICE_PW)).outcome is OK
    assert user_searches(directory) == 2
    assert (checker.user_cache_hits, checker.user_cache_misses) == (0, 0)


def test_unused_with_a_direct_bind():
    checker, directory, _ = make(direct_config(A, user_cache=60.0), server(A))
    for password in (ALICE_PW, "wrong", ALICE_PW):
        result_of(checker.check_password("alice", password))
    assert directory.ops("search") == []
    assert [user for user, _ in directory.ops("bind")] == [ALICE_DN] * 3
    assert (checker.user_cache_hits, checker.user_cache_misses) == (0, 0)


def test_the_service_account_still_binds_only_for_its_connection():
    checker, directory, _ = make(search_config(A, user_cache=60.0), server(A))
    for _ in range(3):
        result_of(checker.check_password("alice", ALICE_PW))
    assert [user for user, _ in directory.ops("bind")] == [SVC_DN, ALICE_DN, ALICE_DN, ALICE_DN]
