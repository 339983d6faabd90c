"""``ldap.user_cache`` against a real slapd, with every LDAP engine: a repeat login sends no
user search (slapd's log shows it) but still one user bind; a refused bind forgets the entry;
an entry renamed, moved or deleted after it was cached costs one refused attempt, then the
next login searches again and finds the truth."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from radmfa.config import LdapConfig
from radmfa.directory.base import DirectoryOutcome
from radmfa.directory.ldap import LdapPasswordChecker
from radmfa.directory.ldap_libldap import LibldapPasswordChecker
from radmfa.threads import ThreadPoolRunner
from tests.integration.test_ldap_engines import search
from tests.integration.test_ldap_groups import settled, user_searches
from tests.support.slapd import ALICE, BOB, CAROL, STAFF_DN, SUFFIX, URSULA, Slapd

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

OK = DirectoryOutcome.OK
INVALID = DirectoryOutcome.INVALID_CREDENTIALS
NO_SUCH_USER = DirectoryOutcome.NO_SUCH_USER


@pytest.fixture(params=["libldap", "ldap3"])
def make_checker(
    request: pytest.FixtureRequest, ldap_runner: ThreadPoolRunner
) -> Iterator[Callable[[LdapConfig], Any]]:
    """``make_checker(config)``: a checker of the engine under test, closed after the test."""
    made: list[Any] = []

    def make(config: LdapConfig) -> Any:
        checker: Any
        if request.param == "libldap":
            checker = LibldapPasswordChecker(config, reactor, ldap_runner)
        else:
            checker = LdapPasswordChecker(config, ldap_runner, reactor)
        made.append(checker)
        return checker

    yield make
    for checker in made:
        checker.close()


def cached(server: Slapd) -> LdapConfig:
    return search(server.url, user_cache=60.0)


async def settled_searches(server: Slapd, uid: str, expected: int) -> int:
    return await settled(lambda: user_searches(server, uid), expected)


async def settled_binds(server: Slapd, dn: str, expected: int) -> int:
    return await settled(lambda: server.binds().count(dn), expected)


@pytest_twisted.ensureDeferred
async def test_a_repeat_login_sends_no_search_but_binds_every_time(slapd, make_checker):
    checker = make_checker(cached(slapd))
    searches, binds = user_searches(slapd, BOB.uid), slapd.binds().count(BOB.dn)
    for _ in range(3):
        assert (await checker.check_password(BOB.uid, BOB.password)).outcome is OK
    assert await settled_binds(slapd, BOB.dn, binds + 3) == binds + 3
    assert await settled_searches(slapd, BOB.uid, searches + 1) == searches + 1
    assert (checker.user_cache_hits, checker.user_cache_misses) == (2, 1)


@pytest_twisted.ensureDeferred
async def test_a_wrong_password_with_a_cached_entry_is_rejected_and_forgets_it(slapd, make_checker):
    checker = make_checker(cached(slapd))
    searches, binds = user_searches(slapd, CAROL.uid), slapd.binds().count(CAROL.dn)
    assert (await checker.check_password(CAROL.uid, CAROL.password)).outcome is OK
    wrong = await checker.check_password(CAROL.uid, BOB.password)  # a cache hit...
    assert (wrong.outcome, wrong.detail) == (INVALID, "bad_password")  # ...judged by slapd
    assert await settled_binds(slapd, CAROL.dn, binds + 2) == binds + 2
    assert await settled_searches(slapd, CAROL.uid, searches + 1) == searches + 1
    # The refusal dropped the entry: the next login searches again.
    assert (await checker.check_password(CAROL.uid, CAROL.password)).outcome is OK
    assert await settled_searches(slapd, CAROL.uid, searches + 2) == searches + 2
    assert await settled_binds(slapd, CAROL.dn, binds + 3) == binds + 3
    assert (checker.user_cache_hits, checker.user_cache_misses) == (1, 2)


@pytest_twisted.ensureDeferred
async def test_without_the_cache_every_login_searches(slapd, make_checker):
    checker = make_checker(search(slapd.url))
    searches = user_searches(slapd, URSULA.uid)
    for _ in range(2):
        assert (await checker.check_password(URSULA.uid, URSULA.password)).outcome is OK
    assert await settled_searches(slapd, URSULA.uid, searches + 2) == searches + 2
    assert (checker.user_cache_hits, checker.user_cache_misses) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_a_user_renamed_after_caching_fails_once_then_is_searched_again(
    fresh_slapd, make_checker
):
    checker = make_checker(cached(fresh_slapd))
    assert (await checker.check_password(ALICE.uid, ALICE.password)).outcome is OK
    fresh_slapd.modify(
        f"dn: {ALICE.dn}\nchangetype: modrdn\nnewrdn: uid=alice-renamed\ndeleteoldrdn: 1\n"
    )
    # The cached DN no longer exists: slapd refuses the bind, whatever the password.
    stale = await checker.check_password(ALICE.uid, ALICE.password)
    assert stale.outcome is INVALID
    assert stale.dn == ALICE.dn
    again = await checker.check_password(ALICE.uid, ALICE.password)
    assert again.outcome is NO_SUCH_USER
    renamed = await checker.check_password("alice-renamed", ALICE.password)
    assert (renamed.outcome, renamed.dn) == (OK, f"uid=alice-renamed,ou=people,{SUFFIX}")
    assert await settled_searches(fresh_slapd, ALICE.uid, 2) == 2
    assert (checker.user_cache_hits, checker.user_cache_misses) == (1, 3)


@pytest_twisted.ensureDeferred
async def test_a_user_moved_after_caching_is_found_at_the_new_place(fresh_slapd, make_checker):
    checker = make_checker(cached(fresh_slapd))
    assert (await checker.check_password(BOB.uid, BOB.password)).outcome is OK
    fresh_slapd.modify(
        f"dn: {BOB.dn}\nchangetype: modrdn\nnewrdn: uid={BOB.uid}\ndeleteoldrdn: 1\n"
        f"newsuperior: {STAFF_DN}\n"
    )
    assert (await checker.check_password(BOB.uid, BOB.password)).outcome is INVALID
    moved = await checker.check_password(BOB.uid, BOB.password)
    assert (moved.outcome, moved.dn) == (OK, f"uid={BOB.uid},{STAFF_DN}")
    assert await settled_searches(fresh_slapd, BOB.uid, 2) == 2


@pytest_twisted.ensureDeferred
async def test_a_user_deleted_after_caching_is_refused(fresh_slapd, make_checker):
    checker = make_checker(cached(fresh_slapd))
    assert (await checker.check_password(ALICE.uid, ALICE.password)).outcome is OK
    fresh_slapd.modify(f"dn: {ALICE.dn}\nchangetype: delete\n")
    assert (await checker.check_password(ALICE.uid, ALICE.password)).outcome is INVALID
    assert (await checker.check_password(ALICE.uid, ALICE.password)).outcome is NO_SUCH_USER
    assert await settled_binds(fresh_slapd, ALICE.dn, 2) == 2
    assert await settled_searches(fresh_slapd, ALICE.uid, 2) == 2
