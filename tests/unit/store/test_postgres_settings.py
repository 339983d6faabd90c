"""The PostgreSQL engine's pure parts: connection settings, lock numbers, messages.

Everything that needs a server is in the contract suite and tests/integration.
"""

from __future__ import annotations

import pytest

from radmfa.store.model import StoreError
from radmfa.store.postgres import _connection_settings, lock_number


@pytest.fixture(autouse=True)
def _no_pg_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGSSLMODE", raising=False)


@pytest.mark.parametrize(
    "dsn",
    [
        "host=db.example.org dbname=radmfa",
        "postgresql://radmfa@192.0.2.7/radmfa",
        "host=127.0.0.1,db2.example.org dbname=radmfa",  # one of them leaves the machine
        "host=db.example.org hostaddr=192.0.2.7",
    ],
)
def test_a_database_on_another_machine_gets_tls_with_its_certificate_checked(dsn: str) -> None:
    params, _ = _connection_settings(dsn, None, 5.0)
    assert params["sslmode"] == "verify-full"


@pytest.mark.parametrize(
    "dsn",
    [
        "host=127.0.0.1 dbname=radmfa",
        "host=::1 dbname=radmfa",
        "host=localhost dbname=radmfa",
        "host=/run/postgresql dbname=radmfa",
        "dbname=radmfa",  # the local socket
    ],
)
def test_a_local_database_keeps_libpqs_default(dsn: str) -> None:
    params, _ = _connection_settings(dsn, None, 5.0)
    assert "sslmode" not in params


def test_an_explicit_sslmode_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    params, _ = _connection_settings("host=db.example.org sslmode=require", None, 5.0)
    assert params["sslmode"] == "require"
    monkeypatch.setenv("PGSSLMODE", "disable")
    params, _ = _connection_settings("host=db.example.org", None, 5.0)
    assert "sslmode" not in params  # libpq reads PGSSLMODE itself


def test_the_password_argument_wins_and_the_name_never_shows_one() -> None:
    params, name = _connection_settings(
        "postgresql://radmfa:in-the-dsn@db.example.org:5433/mfa", "from-a-credential", 5.0
    )
    assert params["password"] == "from-a-credential"
    assert name == "PostgreSQL database 'mfa' on db.example.org:5433"
    assert "in-the-dsn" not in name and "credential" not in name


def test_our_session_settings_come_before_the_dsns_options() -> None:
    params, _ = _connection_settings("host=/tmp options='-c lock_timeout=100'", None, 5.0)
    assert params["options"].startswith("-c lock_timeout=5000 ")
    assert params["options"].endswith("-c lock_timeout=100")  # the DSN's, later, wins
    assert params["autocommit"] is True and params["client_encoding"] == "UTF8"


def test_a_malformed_dsn_is_refused_without_echoing_pieces_of_it() -> None:
    with pytest.raises(StoreError, match="not valid") as e:
        _connection_settings("host=x password=hunter2 secret-tail", None, 5.0)
    assert "secret-tail" not in str(e.value) and "hunter2" not in str(e.value)


def test_lock_numbers_are_stable_signed_64_bit_and_distinct_per_key() -> None:
    numbers = {lock_number("user", f"u{i}") for i in range(1000)}
    assert len(numbers) == 1000
    assert all(-(2**63) <= n < 2**63 for n in numbers)
    assert lock_number("user", "alice") == lock_number("user", "alice")
    assert lock_number("user", "alice") != lock_number("source", "alice")
