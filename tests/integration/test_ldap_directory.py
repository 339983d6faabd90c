"""LdapPasswordChecker against a real slapd on loopback, through a real thread pool."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from radmfa.config import LdapConfig
from radmfa.directory.base import DirectoryOutcome, DirectoryResult
from radmfa.directory.ldap import LdapPasswordChecker
from radmfa.threads import ThreadPoolRunner
from tests.support.ports import free_port
from tests.support.slapd import (
    ALICE,
    SERVICE_DN,
    SERVICE_PASSWORD,
    SUFFIX,
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


# Engine-independent behaviour is tested for both engines in test_ldap_engines.py; what stays
# here is specific to the thread-pool engine: refused input never even reaches the pool.


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
