"""What only the PostgreSQL engine promises: processes (nodes) racing on one database, a
database that goes away and comes back, the key check, the schema's versions.

The behaviour every engine shares is in tests/unit/store/test_store_contract.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from radmfa.store.base import ChallengeRecord, StoreError, TokenRecord
from radmfa.store.crypto import SecretBox
from radmfa.store.pg_schema import SCHEMA_VERSION
from radmfa.store.postgres import PostgresStore
from tests.support.postgres import Postgres

pytestmark = pytest.mark.integration

NOW = 1_800_000_000.0
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
REPO = Path(__file__).resolve().parents[2]
RACERS = 6
ROUNDS = 15


def _token(token_id: str = "t1", user: str = "alice", secret: bytes = b"s" * 20) -> TokenRecord:
    return TokenRecord(token_id, user, "totp", secret, 6, "SHA1", 30, NOW)


@pytest.fixture
def store(pg_dsn: str) -> Iterator[PostgresStore]:
    s = PostgresStore(pg_dsn, SecretBox(KEY))
    yield s
    s.close()


def _concurrently(n: int, fn: Callable[[], object]) -> list[object]:
    barrier = threading.Barrier(n)

    def go() -> object:
        barrier.wait()
        return fn()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda _: go(), range(n)))


# -- processes racing ------------------------------------------------------------------------


def _race(dsn: str, op: str) -> list[list[int]]:
    """Start RACERS processes, release them together ROUNDS times; the wins of each round."""
    env = {**os.environ, "RADMFA_TEST_DSN": dsn}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.support.pg_racer", op],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(RACERS)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        rounds = []
        for _ in range(ROUNDS):
            for proc in procs:  # all released before any answer is read
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            rounds.append([int(proc.stdout.readline()) for proc in procs])  # type: ignore[union-attr]
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
            assert proc.wait(timeout=30) == 0
        return rounds
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_processes_racing_for_one_code_step_have_exactly_one_winner(
    store: PostgresStore, pg_dsn: str
) -> None:
    store.add_token(_token())
    rounds = _race(pg_dsn, "step")
    assert [sum(r) for r in rounds] == [1] * ROUNDS, rounds
    assert store.list_tokens()[0].last_step == 1000 + ROUNDS - 1


def test_processes_racing_for_one_attempt_slot_have_exactly_one_winner(
    store: PostgresStore, pg_dsn: str
) -> None:
    rounds = _race(pg_dsn, "attempt")
    assert [sum(r) for r in rounds] == [1] * ROUNDS, rounds
    state = store.login_state("racer0", NOW)
    assert state.lock.failures == 0


def test_processes_racing_for_one_state_have_exactly_one_winner(
    store: PostgresStore, pg_dsn: str
) -> None:
    for round_no in range(ROUNDS):
        store.put_challenge(
            ChallengeRecord(bytes([round_no]) * 16, "alice", "vpn", "192.0.2.1", NOW + 60, NOW)
        )
    rounds = _race(pg_dsn, "state")
    assert [sum(r) for r in rounds] == [1] * ROUNDS, rounds


def test_processes_racing_to_enroll_a_first_factor_add_exactly_one(
    store: PostgresStore, pg_dsn: str
) -> None:
    rounds = _race(pg_dsn, "first")
    assert [sum(r) for r in rounds] == [1] * ROUNDS, rounds
    assert all(len(store.list_tokens(f"first{n}")) == 1 for n in range(ROUNDS))


def test_batches_naming_users_in_opposite_orders_never_deadlock(store: PostgresStore) -> None:
    ids = iter(range(10_000))
    lock = threading.Lock()

    def add(users: tuple[str, ...]) -> None:
        for _ in range(20):
            with lock:
                batch = [_token(f"x{next(ids)}", user, os.urandom(20)) for user in users]
            store.add_tokens(batch)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for future in [
            pool.submit(add, ("alice", "bob", "carol")),
            pool.submit(add, ("carol", "bob", "alice")),
            pool.submit(add, ("bob", "alice", "carol")),
            pool.submit(add, ("carol", "alice", "bob")),
        ]:
            future.result()  # a deadlock would be a StoreError here
    assert len(store.list_tokens()) == 4 * 20 * 3


# -- the database goes away and comes back ---------------------------------------------------


@pytest.mark.timeout(120)
def test_a_stopped_database_fails_calls_and_the_same_store_works_again_when_it_returns(
    fresh_postgres: Postgres,
) -> None:
    store = PostgresStore(fresh_postgres.dsn, SecretBox(KEY), connect_timeout=2)
    try:
        store.add_token(_token())
        fresh_postgres.stop()
        took = []
        for call in (store.list_tokens, lambda: store.advance_step("t1", 5), store.list_tokens):
            started = time.monotonic()
            with pytest.raises(StoreError) as failed:
                call()
            took.append(time.monotonic() - started)
            assert fresh_postgres.password not in str(failed.value)
        fresh_postgres.start()
        back = time.monotonic()
        while True:  # by itself: the same object, never reopened
            try:
                tokens = store.list_tokens()
                break
            except StoreError:
                if time.monotonic() - back > 60:
                    raise
                time.sleep(0.05)
        print(
            f"calls while down took {', '.join(f'{t:.2f}' for t in took)} s; "
            f"working again {time.monotonic() - back:.2f} s after the database was back"
        )
        assert tokens == [_token()]
        assert store.advance_step("t1", 6) is True
    finally:
        store.close()


def test_a_restarted_database_costs_no_call_stale_connections_are_replaced(
    fresh_postgres: Postgres,
) -> None:
    store = PostgresStore(fresh_postgres.dsn, SecretBox(KEY), pool_size=4)
    try:
        store.add_token(_token())
        # Several pooled connections, all of which the restart kills.
        _concurrently(4, lambda: store.list_tokens())
        fresh_postgres.restart()
        assert store.list_tokens() == [_token()]  # a read
        assert store.begin_attempt(b"a1", "alice", NOW, lambda state: None).reserved
        assert store.advance_step("t1", 7) is True  # a single statement
        assert _concurrently(4, lambda: len(store.list_tokens())) == [1] * 4
    finally:
        store.close()


# -- opening: the key check, migrations, connection errors -------------------------------------


def test_a_database_sealed_with_another_key_file_is_refused(
    pg_dsn: str, postgres: Postgres
) -> None:
    first = PostgresStore(pg_dsn, SecretBox(KEY))
    first.add_token(_token())
    first.close()
    with pytest.raises(StoreError, match="different key file: every node needs the same") as e:
        PostgresStore(pg_dsn, SecretBox(OTHER_KEY))
    assert postgres.password not in str(e.value)
    again = PostgresStore(pg_dsn, SecretBox(KEY))  # the right key still opens it
    assert again.list_tokens() == [_token()]
    again.close()


def test_the_key_check_is_written_before_any_token(pg_dsn: str) -> None:
    PostgresStore(pg_dsn, SecretBox(KEY)).close()  # opened once, nothing stored
    with pytest.raises(StoreError, match="different key file"):
        PostgresStore(pg_dsn, SecretBox(OTHER_KEY))


def test_stores_opening_an_empty_database_together_make_one_schema(pg_dsn: str) -> None:
    stores = _concurrently(6, lambda: PostgresStore(pg_dsn, SecretBox(KEY), pool_size=1))
    try:
        assert all(s.schema_version() == SCHEMA_VERSION for s in stores)  # type: ignore[attr-defined]
        with psycopg.connect(pg_dsn) as conn:
            versions = conn.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()
            checks = conn.execute("SELECT COUNT(*) FROM meta").fetchone()
        assert [v for (v,) in versions] == list(range(1, SCHEMA_VERSION + 1))
        assert checks == (1,)
    finally:
        for s in stores:
            s.close()  # type: ignore[attr-defined]


def test_a_schema_newer_than_the_code_is_refused(pg_dsn: str) -> None:
    PostgresStore(pg_dsn, SecretBox(KEY)).close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError) as e:
        PostgresStore(pg_dsn, SecretBox(KEY))
    assert f"has schema version {SCHEMA_VERSION + 1}, this radmfa knows up to {SCHEMA_VERSION}" in (
        str(e.value)
    )
    assert "upgrade radmfa" in str(e.value)


def test_a_wrong_password_is_named_and_never_shown(postgres: Postgres) -> None:
    with pytest.raises(StoreError, match="password authentication failed") as e:
        PostgresStore(postgres.dsn_without_password(), SecretBox(KEY), password="not-it-42")
    assert "not-it-42" not in str(e.value)
    store = PostgresStore(
        postgres.dsn_without_password(), SecretBox(KEY), password=postgres.password
    )
    store.close()


def test_a_malformed_connection_string_does_not_echo_it(postgres: Postgres) -> None:
    with pytest.raises(StoreError, match="connection string is not valid") as e:
        PostgresStore("host=127.0.0.1 password=hunter2 secret", SecretBox(KEY))
    assert "hunter2" not in str(e.value) and "secret" not in str(e.value)
