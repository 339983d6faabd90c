"""LdapPasswordChecker against a real slapd on loopback, through a real thread pool."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults

from radmfa.config import LdapConfig
from radmfa.directory.base import DirectoryOutcome, DirectoryResult
from radmfa.directory.ldap import LdapPasswordChecker
from radmfa.threads import ThreadPoolRunner
from tests.support.certs import make_ca, make_server_cert
from tests.support.ports import free_port
from tests.support.slapd import (
    ADMINISTRATOR,
    ALICE,
    BOB,
    DAVE,
    SERVICE_DN,
    SERVICE_PASSWORD,
    SMITH_JR,
    SUFFIX,
    TWIN_PEOPLE,
    TWIN_STAFF,
    URSULA,
    USER_DN_TEMPLATE,
    USER_FILTER,
    USERS_BY_UID,
    Slapd,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

OK = DirectoryOutcome.OK
INVALID = DirectoryOutcome.INVALID_CREDENTIALS
NO_SUCH_USER = DirectoryOutcome.NO_SUCH_USER
AMBIGUOUS = DirectoryOutcome.AMBIGUOUS_USER
UNAVAILABLE = DirectoryOutcome.UNAVAILABLE

ALL_PASSWORDS = sorted({user.password for user in USERS_BY_UID.values()})


def direct(*servers: str, **options: Any) -> LdapConfig:
    options.setdefault("timeout", 2.0)
    return LdapConfig(servers=servers, user_dn=USER_DN_TEMPLATE, **options)


def search(*servers: str, **options: Any) -> LdapConfig:
    options.setdefault("timeout", 2.0)
    return LdapConfig(
        servers=servers,
        base_dn=SUFFIX,
        user_filter=USER_FILTER,
        bind_dn=SERVICE_DN,
        bind_password=SERVICE_PASSWORD,
        **options,
    )


BOTH_MODES = pytest.mark.parametrize("mode", [direct, search], ids=["direct", "search"])


def closed_url() -> str:
    return f"ldap://127.0.0.1:{free_port()}"


class CountingRunner:
    """Wraps a runner and counts the blocking calls that went through it."""

    def __init__(self, inner: ThreadPoolRunner) -> None:
        self.inner = inner
        self.calls = 0

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.inner.run(fn, *args, **kwargs)


@pytest.fixture
def make_checker(ldap_runner: ThreadPoolRunner) -> Iterator[Callable[..., LdapPasswordChecker]]:
    made: list[LdapPasswordChecker] = []

    def make(config: LdapConfig, runner: Any = None, **options: Any) -> LdapPasswordChecker:
        checker = LdapPasswordChecker(config, runner or ldap_runner, reactor, **options)
        made.append(checker)
        return checker

    yield make
    for checker in made:
        checker.close()


async def check(checker: LdapPasswordChecker, username: str, password: str) -> DirectoryResult:
    return await checker.check_password(username, password)


def same_dn(a: str | None, b: str) -> bool:
    r"""Equal after undoing hex escapes (slapd returns ``smith\2C jr`` for ``smith\, jr``)."""

    def norm(dn: str) -> str:
        return re.sub(r"\\([0-9a-fA-F]{2})", lambda m: "\\" + chr(int(m[1], 16)), dn).lower()

    return a is not None and norm(a) == norm(b)


def user_binds(server: Slapd, dn: str, at_least: int = 0) -> int:
    """How many binds as ``dn`` slapd has logged (waits briefly for ``at_least``)."""
    deadline = time.monotonic() + 2.0
    while True:
        count = sum(1 for bound in server.binds() if bound.lower() == dn.lower())
        if count >= at_least or time.monotonic() > deadline:
            return count
        time.sleep(0.02)


# -- direct bind --------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_direct_bind_accepts_the_right_password(slapd, make_checker):
    result = await check(make_checker(direct(slapd.url)), ALICE.uid, ALICE.password)
    assert result.outcome is OK
    assert result.dn == ALICE.dn
    assert result.server == slapd.url


@pytest_twisted.ensureDeferred
async def test_direct_bind_rejects_a_wrong_password(slapd, make_checker):
    result = await check(make_checker(direct(slapd.url)), ALICE.uid, BOB.password)
    assert result.outcome is INVALID
    assert result.detail == "bad_password"


@pytest_twisted.ensureDeferred
async def test_direct_bind_unknown_user_is_invalid_credentials(slapd, make_checker):
    result = await check(make_checker(direct(slapd.url)), "nobody", ALICE.password)
    assert result.outcome is INVALID


@pytest_twisted.ensureDeferred
async def test_direct_bind_escapes_the_user_name_into_the_dn(slapd, make_checker):
    checker = make_checker(direct(slapd.url))
    jr = await check(checker, SMITH_JR.uid, SMITH_JR.password)  # uid=smith\, jr,...
    dave = await check(checker, DAVE.uid, DAVE.password)
    assert (jr.outcome, dave.outcome) == (OK, OK)


# -- search then bind ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_search_then_bind_accepts_the_right_password(slapd, make_checker):
    result = await check(make_checker(search(slapd.url)), BOB.uid, BOB.password)
    assert result.outcome is OK
    assert result.dn == BOB.dn


@pytest_twisted.ensureDeferred
async def test_search_then_bind_rejects_a_wrong_password(slapd, make_checker):
    result = await check(make_checker(search(slapd.url)), BOB.uid, ALICE.password)
    assert result.outcome is INVALID
    assert result.dn == BOB.dn


@pytest_twisted.ensureDeferred
async def test_search_then_bind_unknown_user(slapd, make_checker):
    result = await check(make_checker(search(slapd.url)), "nobody", ALICE.password)
    assert result.outcome is NO_SUCH_USER


@pytest_twisted.ensureDeferred
async def test_duplicate_uid_is_ambiguous_and_binds_neither(slapd, make_checker):
    checker = make_checker(search(slapd.url))
    before = user_binds(slapd, TWIN_PEOPLE.dn) + user_binds(slapd, TWIN_STAFF.dn)
    for twin in (TWIN_PEOPLE, TWIN_STAFF):
        result = await check(checker, twin.uid, twin.password)
        assert result.outcome is AMBIGUOUS
    time.sleep(0.1)
    assert user_binds(slapd, TWIN_PEOPLE.dn) + user_binds(slapd, TWIN_STAFF.dn) == before


@pytest_twisted.ensureDeferred
async def test_search_returns_requested_attributes(slapd, make_checker):
    checker = make_checker(search(slapd.url), attributes=("mail", "cn"))
    result = await check(checker, ALICE.uid, ALICE.password)
    assert result.outcome is OK
    assert result.attributes == {"mail": [ALICE.mail], "cn": [ALICE.uid]}


@pytest_twisted.ensureDeferred
async def test_search_then_bind_does_exactly_one_user_bind(slapd, make_checker):
    checker = make_checker(search(slapd.url))
    before = user_binds(slapd, ALICE.dn)
    result = await check(checker, ALICE.uid, "wrong")
    assert result.outcome is INVALID
    assert user_binds(slapd, ALICE.dn, at_least=before + 1) == before + 1
    time.sleep(0.1)
    assert user_binds(slapd, ALICE.dn) == before + 1


# -- passwords and user names -------------------------------------------------------------------


@BOTH_MODES
@pytest_twisted.ensureDeferred
async def test_utf8_password(slapd, make_checker, mode):
    checker = make_checker(mode(slapd.url))
    assert (await check(checker, URSULA.uid, URSULA.password)).outcome is OK
    # The same text decomposed (NFD) is other bytes: no SASLprep/normalisation is applied.
    decomposed = "pa\u0308sswo\u0308rd€"
    assert (await check(checker, URSULA.uid, decomposed)).outcome is INVALID
    assert (await check(checker, URSULA.uid, "passwörd€")).outcome is INVALID


@BOTH_MODES
@pytest_twisted.ensureDeferred
async def test_empty_password_never_reaches_ldap(blackhole, ldap_runner, make_checker, mode):
    runner = CountingRunner(ldap_runner)
    checker = make_checker(mode(blackhole.url), runner=runner)
    result = await check(checker, ALICE.uid, "")
    assert result.outcome is INVALID
    assert result.detail == "empty_password"
    assert runner.calls == 0
    assert blackhole.connections == 0


@pytest.mark.parametrize("name", ["*", "adm*", "a)(uid=*", "x\\", "*)(|(uid=*", "alice)(uid=*"])
@pytest_twisted.ensureDeferred
async def test_filter_injection_finds_nobody(slapd, make_checker, name):
    checker = make_checker(search(slapd.url))
    for password in ALL_PASSWORDS:
        result = await check(checker, name, password)
        assert result.outcome is NO_SUCH_USER, (name, password, result)


@pytest.mark.parametrize("name", ["*", "adm*", "a)(uid=*", "x\\"])
@pytest_twisted.ensureDeferred
async def test_filter_characters_in_direct_bind_are_rejected(slapd, make_checker, name):
    checker = make_checker(direct(slapd.url))
    for password in (ALICE.password, ADMINISTRATOR.password):
        assert (await check(checker, name, password)).outcome is INVALID


DN_TRICKS = [
    ",",
    "+",
    '"',
    "\\",
    "<",
    ">",
    ";",
    "=",
    "alice,ou=people",
    "bob,ou=staff",
    "alice+uid=bob",
    "uid=alice",
    f"alice,{SUFFIX}",
    '"alice"',
    "alice\\",
    "alice;bob",
    "#alice",
    "<alice>",
    "alice\\,ou=people",
    " alice",
    "alice ",
    "  bob",
]


@BOTH_MODES
@pytest_twisted.ensureDeferred
async def test_dn_special_user_names_never_bind_as_someone_else(slapd, make_checker, mode):
    """Only a name the directory itself equates with a user (``" alice"`` is uid alice under
    caseIgnoreIA5Match's space rules) may get in, and only with that user's password."""
    checker = make_checker(mode(slapd.url))
    for name in DN_TRICKS:
        for user in USERS_BY_UID.values():
            result = await check(checker, name, user.password)
            if result.outcome is OK:
                assert name.strip() == user.uid, (name, user.uid, result)
            else:
                assert result.outcome in (INVALID, NO_SUCH_USER), (name, user.uid, result)


@pytest_twisted.ensureDeferred
async def test_control_characters_in_user_name_are_refused_without_ldap(
    blackhole, ldap_runner, make_checker
):
    runner = CountingRunner(ldap_runner)
    checker = make_checker(search(blackhole.url), runner=runner)
    for name in ("a\x00b", "alice\n", "al\rice", "\x7f", "a\u2028b"):
        assert (await check(checker, name, ALICE.password)).outcome is INVALID
    assert runner.calls == 0
    assert blackhole.connections == 0


# -- failover and recovery ----------------------------------------------------------------------


@BOTH_MODES
@pytest_twisted.ensureDeferred
async def test_fails_over_from_a_closed_port(slapd, make_checker, mode):
    dead = closed_url()
    checker = make_checker(mode(dead, slapd.url))
    result = await check(checker, ALICE.uid, ALICE.password)
    assert result.outcome is OK
    assert result.server == slapd.url
    assert checker.servers_down() == [dead]
    # While it is marked down the dead server is tried last, and the answer does not change.
    assert (await check(checker, ALICE.uid, ALICE.password)).outcome is OK


@BOTH_MODES
@pytest_twisted.ensureDeferred
async def test_all_servers_down_is_unavailable_quickly(make_checker, mode):
    first, second = closed_url(), closed_url()
    checker = make_checker(mode(first, second))
    started = time.monotonic()
    result = await check(checker, ALICE.uid, ALICE.password)
    assert result.outcome is UNAVAILABLE
    assert first in result.detail and second in result.detail
    assert time.monotonic() - started < 2.0


@BOTH_MODES
@pytest_twisted.ensureDeferred
async def test_recovers_after_slapd_crash_and_restart(fresh_slapd, make_checker, mode):
    checker = make_checker(mode(fresh_slapd.url))  # retry_after keeps its 10 s default
    assert (await check(checker, ALICE.uid, ALICE.password)).outcome is OK
    fresh_slapd.kill()
    assert (await check(checker, ALICE.uid, ALICE.password)).outcome is UNAVAILABLE
    fresh_slapd.start()
    result = await check(checker, ALICE.uid, ALICE.password)
    assert result.outcome is OK, result
    assert (await check(checker, ALICE.uid, "wrong")).outcome is INVALID


@pytest_twisted.ensureDeferred
async def test_pooled_search_connections_survive_a_restart(fresh_slapd, make_checker):
    """Every idle service connection is dead after a restart; none of that reaches the user."""
    checker = make_checker(search(fresh_slapd.url))
    warm = [checker.check_password(u.uid, u.password) for u in USERS_BY_UID.values()] * 3
    assert {r.outcome for r in await gatherResults(warm)} == {OK}
    fresh_slapd.restart()
    again = [checker.check_password(u.uid, u.password) for u in USERS_BY_UID.values()] * 3
    assert {r.outcome for r in await gatherResults(again)} == {OK}


@pytest_twisted.ensureDeferred
async def test_blackhole_server_gives_unavailable_within_the_deadline(blackhole, make_checker):
    # Both modes at once: the receive timeout is at least 1 s and this keeps the file fast.
    checkers = [make_checker(mode(blackhole.url, timeout=1.0)) for mode in (direct, search)]
    started = time.monotonic()
    results = await gatherResults([c.check_password(ALICE.uid, ALICE.password) for c in checkers])
    elapsed = time.monotonic() - started
    assert [r.outcome for r in results] == [UNAVAILABLE, UNAVAILABLE]
    assert blackhole.connections >= 2
    assert elapsed < checkers[0].deadline + 0.5


@pytest_twisted.ensureDeferred
async def test_fails_over_from_a_blackhole_after_the_receive_timeout(
    blackhole, slapd, make_checker
):
    checker = make_checker(search(blackhole.url, slapd.url, timeout=1.0))
    result = await check(checker, ALICE.uid, ALICE.password)
    assert result.outcome is OK
    assert result.server == slapd.url


@BOTH_MODES
@pytest_twisted.ensureDeferred
async def test_invalid_credentials_do_not_fail_over(slapd, blackhole, make_checker, mode):
    checker = make_checker(mode(slapd.url, blackhole.url))
    before = user_binds(slapd, ALICE.dn)
    result = await check(checker, ALICE.uid, "not-alices-password")
    assert result.outcome is INVALID
    assert result.server == slapd.url
    assert user_binds(slapd, ALICE.dn, at_least=before + 1) == before + 1
    time.sleep(0.1)
    assert blackhole.connections == 0
    assert user_binds(slapd, ALICE.dn) == before + 1


@pytest_twisted.ensureDeferred
async def test_wrong_service_password_is_unavailable_not_invalid(slapd, make_checker):
    config = replace(search(slapd.url), bind_password="wrong")
    result = await check(make_checker(config), ALICE.uid, ALICE.password)
    assert result.outcome is UNAVAILABLE
    assert "service account" in result.detail


# -- concurrency --------------------------------------------------------------------------------


@BOTH_MODES
@pytest_twisted.ensureDeferred
async def test_200_concurrent_checks_each_get_their_own_answer(slapd, make_checker, mode):
    checker = make_checker(mode(slapd.url))
    users = list(USERS_BY_UID.values())
    cases = []
    for i in range(200):
        user = users[i % len(users)]
        good = i % 2 == 0
        cases.append((user, good))
    results = await gatherResults(
        [
            checker.check_password(u.uid, u.password if good else u.password + "x")
            for u, good in cases
        ]
    )
    for (user, good), result in zip(cases, results, strict=True):
        assert result.outcome is (OK if good else INVALID), (user.uid, good, result)
        assert same_dn(result.dn, user.dn)


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base: Path = tmp_path_factory.mktemp("pki")
    ca = make_ca(base / "ca")
    other_ca = make_ca(base / "other", name="someone else")
    return {
        "ca": ca,
        "other_ca": other_ca,
        "good": make_server_cert(base / "good", ca),
        "wrong_name": make_server_cert(base / "wrong", ca, ["ldap.elsewhere.example"]),
        "expired": make_server_cert(base / "expired", ca, expired=True),
    }


def tls_slapd(factory: Callable[..., Slapd], cert: Any) -> Slapd:
    return factory(tls_cert=cert.cert_path, tls_key=cert.key_path, ldaps=True)


@pytest_twisted.ensureDeferred
async def test_starttls_and_ldaps_with_a_trusted_certificate(slapd_factory, pki, make_checker):
    server = tls_slapd(slapd_factory, pki["good"])
    ca_file = str(pki["ca"].cert_path)
    starttls = make_checker(search(server.url, start_tls=True, ca_file=ca_file))
    ldaps = make_checker(direct(server.ldaps_url, ca_file=ca_file))
    assert (await check(starttls, ALICE.uid, ALICE.password)).outcome is OK
    assert (await check(starttls, ALICE.uid, "wrong")).outcome is INVALID
    assert (await check(ldaps, ALICE.uid, ALICE.password)).outcome is OK


@pytest.mark.parametrize("problem", ["untrusted", "wrong_name", "expired", "no_starttls"])
@pytest_twisted.ensureDeferred
async def test_tls_problems_are_unavailable_and_never_bind_in_clear(
    slapd_factory, pki, make_checker, problem
):
    cert = {"untrusted": "good", "no_starttls": None}.get(problem, problem)
    ca = pki["other_ca"] if problem == "untrusted" else pki["ca"]
    server = slapd_factory() if cert is None else tls_slapd(slapd_factory, pki[cert])
    checker = make_checker(direct(server.url, start_tls=True, ca_file=str(ca.cert_path)))
    result = await check(checker, ALICE.uid, ALICE.password)
    assert result.outcome is UNAVAILABLE
    assert "StartTLS" in result.detail
    if cert is not None:
        ldaps = make_checker(direct(server.ldaps_url, ca_file=str(ca.cert_path)))
        assert (await check(ldaps, ALICE.uid, ALICE.password)).outcome is UNAVAILABLE
    time.sleep(0.1)
    assert user_binds(server, ALICE.dn) == 0
