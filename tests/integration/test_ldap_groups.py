"""Group lookups and account state against a real slapd, with every LDAP engine.

The directory has groupOfNames groups nested three deep (bob is in staff, staff is in
vpn-users, vpn-users is in everyone), the memberof overlay (so ``membership: memberof`` is
tested for real) and, in its own slapd, the ppolicy overlay (an admin password reset and a
lockout). OpenLDAP has no in-chain matching rule: the ``ad_chain`` filter is checked against a
scripted server in the unit tests.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from radmfa.auth.groupcheck import check_policy_groups
from radmfa.config import LdapConfig, LdapGroupsConfig, PolicyConfig, PolicyRule
from radmfa.directory.base import DirectoryOutcome
from radmfa.directory.ldap import LdapPasswordChecker
from radmfa.directory.ldap_libldap import LibldapPasswordChecker
from radmfa.threads import ThreadPoolRunner
from tests.support.daemon import RadmfaDaemon
from tests.support.ports import free_port
from tests.support.slapd import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    GROUPS_DN,
    POLICIES_DN,
    SERVICE_DN,
    SERVICE_PASSWORD,
    SUFFIX,
    LdapUser,
    Slapd,
    ad_group_ldif,
    ad_user_ldif,
    group_ldif,
    ldif_entry,
    ou_ldif,
    ssha,
    write_ad_schema,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

OK = DirectoryOutcome.OK
STAFF, VPN, EVERYONE, CONTRACTORS = (
    f"cn={name},{GROUPS_DN}" for name in ("staff", "vpn-users", "everyone", "contractors")
)


def groups_ldif() -> str:
    return ou_ldif(GROUPS_DN) + "".join(
        (
            group_ldif("staff", [BOB.dn]),
            group_ldif("vpn-users", [ALICE.dn, STAFF]),
            group_ldif("everyone", [VPN]),
            group_ldif("contractors", [CAROL.dn]),
        )
    )


@pytest.fixture(scope="module")
def group_slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    server = Slapd(tmp_path_factory.mktemp("slapd-groups"), overlays=["memberof"])
    try:
        server.start()
        server.add_ldif(groups_ldif())  # while running: memberof fills in memberOf
        yield server
    finally:
        server.kill()


def config(server: Slapd, **groups: Any) -> tuple[LdapConfig, LdapGroupsConfig]:
    return (
        LdapConfig(
            servers=(server.url,),
            base_dn=SUFFIX,
            bind_dn=SERVICE_DN,
            bind_password=SERVICE_PASSWORD,
            timeout=2.0,
        ),
        LdapGroupsConfig(**groups),
    )


@pytest.fixture(params=["libldap", "ldap3"])
def make_checker(
    request: pytest.FixtureRequest, ldap_runner: ThreadPoolRunner
) -> Iterator[Callable[..., Any]]:
    made: list[Any] = []

    def make(ldap: LdapConfig, groups: LdapGroupsConfig | None = None) -> Any:
        checker: Any
        if request.param == "libldap":
            checker = LibldapPasswordChecker(ldap, reactor, ldap_runner, groups=groups)
        else:
            checker = LdapPasswordChecker(ldap, ldap_runner, reactor, groups=groups)
        made.append(checker)
        return checker

    yield make
    for checker in made:
        checker.close()


def lower(dns: tuple[str, ...]) -> set[str]:
    return {dn.lower() for dn in dns}


@pytest_twisted.ensureDeferred
async def test_nested_groups_are_expanded_level_by_level(group_slapd, make_checker):
    checker = make_checker(*config(group_slapd))
    expected = {
        BOB.uid: {STAFF, VPN, EVERYONE},
        ALICE.uid: {VPN, EVERYONE},
        CAROL.uid: {CONTRACTORS},
        DAVE.uid: set(),
    }
    for uid, groups in expected.items():
        found = await checker.user_groups(uid)
        assert found.outcome is OK, found
        assert lower(found.groups) == {g.lower() for g in groups}, uid
    missing = await checker.user_groups("nobody")
    assert missing.outcome is DirectoryOutcome.NO_SUCH_USER


@pytest_twisted.ensureDeferred
async def test_nesting_can_be_limited(group_slapd, make_checker):
    flat = make_checker(*config(group_slapd, nested=False))
    assert lower((await flat.user_groups(BOB.uid)).groups) == {STAFF.lower()}
    two = make_checker(*config(group_slapd, max_depth=2))
    assert lower((await two.user_groups(BOB.uid)).groups) == {STAFF.lower(), VPN.lower()}


def user_searches(server: Slapd, uid: str) -> int:
    pattern = rf'SRCH base="[^"]*" scope=2 deref=\d filter="\(uid={uid}\)"'
    return len(re.findall(pattern, server.log_text()))


async def settled(count: Callable[[], int], expected: int) -> int:
    """``count()`` once it reaches ``expected`` (slapd logs a little later) or after 2 s, plus a
    0.1 s grace in which an extra one would show up too."""
    deadline = time.monotonic() + 2.0
    while count() < expected and time.monotonic() < deadline:
        await deferLater(reactor, 0.02, lambda: None)
    await deferLater(reactor, 0.1, lambda: None)
    return count()


@pytest_twisted.ensureDeferred
async def test_memberof_comes_with_the_user_search_and_the_bind_reuses_it(
    group_slapd, make_checker
):
    checker = make_checker(*config(group_slapd, membership="memberof"))
    searches = user_searches(group_slapd, BOB.uid)
    binds = group_slapd.binds().count(BOB.dn)
    found = await checker.user_groups(BOB.uid)
    assert lower(found.groups) == {STAFF.lower(), VPN.lower(), EVERYONE.lower()}
    assert found.entry is not None
    checked = await checker.check_password(BOB.uid, BOB.password, entry=found.entry)
    assert checked.outcome is OK
    assert await settled(lambda: group_slapd.binds().count(BOB.dn), binds + 1) == binds + 1
    # one user search served the group lookup and the bind
    assert await settled(lambda: user_searches(group_slapd, BOB.uid), searches + 1) == searches + 1


# -- Active Directory groups (objectClass=group) ---------------------------------------------

AD_STAFF, AD_LEAVERS = (f"cn={name},{GROUPS_DN}" for name in ("ad-staff", "ad-leavers"))
AD_USER = LdapUser("aduser", "ad-Password-1")


@pytest.fixture(scope="module")
def ad_slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """AD-shaped: objectClass=group groups, ad-staff nested in ad-leavers, and the user's
    memberOf naming only its direct group, as AD's does."""
    workdir = tmp_path_factory.mktemp("slapd-ad")
    server = Slapd(workdir, users=(), schemas=[write_ad_schema(workdir)])
    server.add_ldif(
        ou_ldif(GROUPS_DN)
        + ad_user_ldif(AD_USER, [AD_STAFF])
        + ad_group_ldif("ad-staff", [AD_USER.dn])
        + ad_group_ldif("ad-leavers", [AD_STAFF])
    )
    try:
        server.start()
        yield server
    finally:
        server.kill()


@pytest.mark.parametrize("membership", ["member", "memberof"])
@pytest_twisted.ensureDeferred
async def test_nested_active_directory_groups_are_found_with_the_default_filter(
    ad_slapd, make_checker, membership
):
    """Without a filter of its own an AD directory must still yield its nested groups: a deny
    rule on ad-leavers has to reach members of ad-staff."""
    checker = make_checker(*config(ad_slapd, membership=membership))
    found = await checker.user_groups(AD_USER.uid)
    assert found.outcome is OK, found
    assert lower(found.groups) == {AD_STAFF.lower(), AD_LEAVERS.lower()}


def policy_naming(*rules: tuple[str, tuple[str, ...]]) -> PolicyConfig:
    return PolicyConfig(rules=tuple(PolicyRule(name=n, groups=g) for n, g in rules))


@pytest_twisted.ensureDeferred
async def test_groups_named_by_rules_are_searched_and_the_missing_ones_named(
    group_slapd, make_checker
):
    checker = make_checker(*config(group_slapd))
    policy = policy_naming(
        ("leavers", ("staff", "no-such-group")),
        ("by-dn", (CONTRACTORS.lower(), f"cn=ghost,{GROUPS_DN}".lower())),
        ("star", ("*",)),  # escaped: not a wildcard that would match every group
    )
    missing = await check_policy_groups(policy, checker)
    assert missing == [
        ("leavers", "no-such-group"),
        ("by-dn", f"cn=ghost,{GROUPS_DN}".lower()),
        ("star", "*"),
    ]


@pytest_twisted.ensureDeferred
async def test_an_ad_group_the_filter_does_not_admit_is_reported_missing(ad_slapd, make_checker):
    """The fail-open case itself: a groupOfNames filter against AD finds no AD group."""
    narrow = make_checker(*config(ad_slapd, filter="(objectClass=groupOfNames)"))
    policy = policy_naming(("leavers", ("ad-leavers",)))
    assert await check_policy_groups(policy, narrow) == [("leavers", "ad-leavers")]
    default = make_checker(*config(ad_slapd))
    assert await check_policy_groups(policy, default) == []


@pytest_twisted.ensureDeferred
async def test_a_directory_that_is_down_makes_the_group_check_a_warning(make_checker):
    ldap, groups = config_for_url(f"ldap://127.0.0.1:{free_port('tcp')}")
    checker = make_checker(ldap, groups)
    assert await check_policy_groups(policy_naming(("r", ("staff",))), checker) == []


def config_for_url(url: str) -> tuple[LdapConfig, LdapGroupsConfig]:
    return (
        LdapConfig(
            servers=(url,),
            base_dn=SUFFIX,
            bind_dn=SERVICE_DN,
            bind_password=SERVICE_PASSWORD,
            timeout=1.0,
        ),
        LdapGroupsConfig(),
    )


def daemon_config(url: str, groups: list[str]) -> dict[str, Any]:
    return {
        "clients": [{"name": "local", "address": "127.0.0.0/8", "secret": "groups-secret-0123456"}],
        "ldap": {
            "servers": [url],
            "base_dn": SUFFIX,
            "bind_dn": SERVICE_DN,
            "bind_password": SERVICE_PASSWORD,
            "timeout": 1,
        },
        "policy": {"rules": [{"name": "leavers", "groups": groups, "deny": True}]},
    }


def test_the_daemon_warns_at_start_and_reload_about_groups_the_directory_lacks(
    group_slapd, tmp_path
):
    daemon = RadmfaDaemon(tmp_path / "radmfa", daemon_config(group_slapd.url, ["staff", "Gone"]))
    daemon.start()
    try:
        daemon.wait_for_log("policy rule 'leavers' names group 'gone', which the directory")
        assert "group 'staff'" not in daemon.log()
        daemon.write_config(daemon_config(group_slapd.url, ["staff", "ghost"]))
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("policy rule 'leavers' names group 'ghost', which the directory")
    finally:
        daemon.stop()


def test_the_daemon_starts_when_the_directory_is_down_and_says_it_could_not_check(tmp_path):
    url = f"ldap://127.0.0.1:{free_port('tcp')}"
    daemon = RadmfaDaemon(tmp_path / "radmfa", daemon_config(url, ["staff"]))
    daemon.start()  # ready although no directory answers
    try:
        daemon.wait_for_log("could not check that the groups named by policy rules exist")
    finally:
        daemon.stop()


# -- ppolicy ----------------------------------------------------------------------------------

RESET = LdapUser("resetme", "first-Password-1")
LOCKED = LdapUser("lockme", "lock-Password-2")


@pytest.fixture(scope="module")
def ppolicy_slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    server = Slapd(
        tmp_path_factory.mktemp("slapd-ppolicy"), users=(RESET, LOCKED), overlays=["ppolicy"]
    )
    server.add_ldif(
        ou_ldif(POLICIES_DN)
        + ldif_entry(
            f"cn=default,{POLICIES_DN}",
            [
                ("objectClass", "device"),
                ("objectClass", "pwdPolicy"),
                ("cn", "default"),
                ("pwdAttribute", "userPassword"),
                ("pwdMustChange", "TRUE"),
                ("pwdLockout", "TRUE"),
                ("pwdMaxFailure", "2"),
                ("pwdLockoutDuration", "300"),
            ],
        )
    )
    try:
        server.start()
        yield server
    finally:
        server.kill()


@pytest_twisted.ensureDeferred
async def test_a_password_reset_by_an_admin_is_refused_without_a_bind(ppolicy_slapd, make_checker):
    ppolicy_slapd.modify(
        f"dn: {RESET.dn}\nchangetype: modify\nreplace: userPassword\n"
        f"userPassword: {ssha('temporary-Password-9')}\n"
    )
    checker = make_checker(config(ppolicy_slapd)[0])
    binds = ppolicy_slapd.binds().count(RESET.dn)
    result = await checker.check_password(RESET.uid, "temporary-Password-9")
    assert (result.outcome, result.detail) == (
        DirectoryOutcome.INVALID_CREDENTIALS,
        "password_must_change",
    )
    assert await settled(lambda: ppolicy_slapd.binds().count(RESET.dn), binds) == binds


@pytest_twisted.ensureDeferred
async def test_a_ppolicy_lock_is_reported_as_locked(ppolicy_slapd, make_checker):
    checker = make_checker(config(ppolicy_slapd)[0])
    for _ in range(2):
        wrong = await checker.check_password(LOCKED.uid, "wrong-password")
        assert wrong.outcome is DirectoryOutcome.INVALID_CREDENTIALS
    result = await checker.check_password(LOCKED.uid, LOCKED.password)
    assert (result.outcome, result.detail) == (
        DirectoryOutcome.INVALID_CREDENTIALS,
        "account_locked",
    )
