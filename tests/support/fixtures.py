"""pytest fixtures for tests that need a directory server or misbehaving peers.

Use them from a conftest with ``from tests.support.fixtures import *  # noqa: F403``:

- ``slapd``: one running :class:`~tests.support.slapd.Slapd` with the fixture users, shared
  by the module (do not stop or kill it; use ``fresh_slapd`` for that).
- ``fresh_slapd``: a running slapd of its own, for stop/kill/restart tests.
- ``slapd_factory``: ``slapd_factory(users=..., start=True, **Slapd options)`` makes more.
- ``blackhole``: a :class:`~tests.support.netfaults.Blackhole` TCP server.
- ``ldap_runner``: a started :class:`~radmfa.threads.ThreadPoolRunner` (16 threads) on the
  real reactor, for pytest-twisted tests.
- ``postgres``: one running :class:`~tests.support.postgres.Postgres` for the whole session
  (``.dsn`` connects to its test database; do not stop it: use ``fresh_postgres`` for that).
  Unit and integration tests share it: tests/conftest.py registers it once, for the whole
  suite (a second registration here would start a second server), so it is not in
  ``__all__``.
- ``pg_dsn``: the DSN of an empty database of its own on that server, dropped afterwards.
- ``fresh_postgres``: a running cluster of its own, for stop/start/restart tests.

Every slapd and PostgreSQL is stopped in the fixture's teardown, also when the test fails.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from radmfa.threads import ThreadPoolRunner
from tests.support.netfaults import Blackhole
from tests.support.postgres import Postgres
from tests.support.slapd import FIXTURE_USERS, LdapUser, Slapd

__all__ = [
    "blackhole",
    "fresh_postgres",
    "fresh_slapd",
    "ldap_runner",
    "pg_dsn",
    "slapd",
    "slapd_factory",
]

LDAP_TEST_THREADS = 16


def _started(workdir: Path, users: Iterable[LdapUser] = FIXTURE_USERS) -> Slapd:
    server = Slapd(workdir, users=users)
    try:
        server.start()
    except BaseException:
        server.kill()
        raise
    return server


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    server = _started(tmp_path_factory.mktemp("slapd"))
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def fresh_slapd(tmp_path: Path) -> Iterator[Slapd]:
    server = _started(tmp_path / "slapd")
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def slapd_factory(tmp_path: Path) -> Iterator[Callable[..., Slapd]]:
    made: list[Slapd] = []

    def make(
        users: Iterable[LdapUser] = FIXTURE_USERS, *, start: bool = True, **options: Any
    ) -> Slapd:
        """More slapds; ``options`` go to :class:`Slapd` (``tls_cert``, ``ldaps``, ...)."""
        server = Slapd(tmp_path / f"slapd-{len(made)}", users=users, **options)
        made.append(server)
        if start:
            server.start()
        return server

    try:
        yield make
    finally:
        for server in made:
            server.kill()


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    with Blackhole() as hole:
        yield hole


@pytest.fixture
def ldap_runner() -> Iterator[ThreadPoolRunner]:
    from twisted.internet import reactor
    from twisted.internet.interfaces import IReactorFromThreads

    runner = ThreadPoolRunner(IReactorFromThreads(reactor), "ldap-test", LDAP_TEST_THREADS)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


def _running_postgres() -> Postgres:
    server = Postgres()
    try:
        server.start()
    except BaseException:
        server.cleanup()
        raise
    return server


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    server = _running_postgres()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def pg_dsn(postgres: Postgres) -> Iterator[str]:
    name = f"t_{secrets.token_hex(6)}"
    dsn = postgres.new_database(name)
    try:
        yield dsn
    finally:
        postgres.drop_database(name)


@pytest.fixture
def fresh_postgres() -> Iterator[Postgres]:
    server = _running_postgres()
    try:
        yield server
    finally:
        server.cleanup()
