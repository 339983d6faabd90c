"""The ldap3 engine's own promise: input it refuses never even reaches its thread pool.

Engine-independent behaviour is tested for both engines in test_ldap_engines.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from radmfa.config import LdapConfig
from radmfa.directory.ldap import LdapPasswordChecker
from radmfa.threads import ThreadPoolRunner
from tests.integration.test_ldap_engines import BOTH_MODES, INVALID, search
from tests.support.slapd import ALICE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


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

    def make(config: LdapConfig, runner: Any = None) -> LdapPasswordChecker:
        checker = LdapPasswordChecker(config, runner or ldap_runner, reactor)
        made.append(checker)
        return checker

    yield make
    for checker in made:
        checker.close()


@BOTH_MODES
@pytest_twisted.ensureDeferred
async def test_empty_password_never_reaches_ldap(blackhole, ldap_runner, make_checker, mode):
    runner = CountingRunner(ldap_runner)
    checker = make_checker(mode(blackhole.url), runner=runner)
    result = await checker.check_password(ALICE.uid, "")
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
        assert (await checker.check_password(name, ALICE.password)).outcome is INVALID
    assert runner.calls == 0
    assert blackhole.connections == 0
