"""PatientConnection: a statement that finds the database locked waits in short steps."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from radmfa.store.busy import RETRY_SLEEPS, PatientConnection, is_busy


def _open(path: Path) -> PatientConnection:
    conn = sqlite3.connect(
        path, timeout=0, isolation_level=None, check_same_thread=False, factory=PatientConnection
    )
    assert isinstance(conn, PatientConnection)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA busy_timeout = 0")
    return conn


@pytest.fixture
def pair(tmp_path: Path):
    path = tmp_path / "busy.db"
    first, second = _open(path), _open(path)
    first.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER)")
    first.execute("INSERT INTO t VALUES ('a', 0)")
    yield first, second
    first.close()
    second.close()


def test_an_autocommit_write_waits_for_the_lock_then_succeeds(pair):
    holder, waiter = pair
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("UPDATE t SET n = 1")
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 4:  # the holder commits while the waiter sleeps
            holder.execute("COMMIT")

    waiter.sleep = sleep  # type: ignore[method-assign]
    cur = waiter.execute("UPDATE t SET n = n + 10 WHERE k = 'a'")
    assert cur.rowcount == 1
    assert waiter.execute("SELECT n FROM t").fetchone()[0] == 11  # applied once, after
    assert sleeps == list(RETRY_SLEEPS[:4])  # short steps, not SQLite's 1, 2, 5 ms


def test_begin_immediate_and_executemany_wait_too(pair):
    holder, waiter = pair
    holder.execute("BEGIN IMMEDIATE")
    released = threading.Timer(0.05, lambda: holder.execute("COMMIT"))
    released.start()
    try:
        waiter.execute("BEGIN IMMEDIATE")
        waiter.executemany("INSERT INTO t VALUES (?, ?)", iter([("b", 1), ("c", 2)]))
        waiter.execute("COMMIT")
    finally:
        released.join()
    assert waiter.execute("SELECT count(*) FROM t").fetchone()[0] == 3

    holder.execute("BEGIN IMMEDIATE")
    released = threading.Timer(0.05, lambda: holder.execute("COMMIT"))
    released.start()
    try:  # autocommit executemany: rows from a generator survive the retry
        waiter.executemany("INSERT INTO t VALUES (?, ?)", ((k, 0) for k in "def"))
    finally:
        released.join()
    assert waiter.execute("SELECT count(*) FROM t").fetchone()[0] == 6


def test_it_gives_up_after_its_patience_with_the_busy_error(pair):
    holder, waiter = pair
    holder.execute("BEGIN IMMEDIATE")
    now = [0.0]
    waiter.monotonic = lambda: now[0]  # type: ignore[method-assign]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    waiter.sleep = sleep  # type: ignore[method-assign]
    waiter.patience = 0.05
    with pytest.raises(sqlite3.OperationalError) as raised:
        waiter.execute("UPDATE t SET n = 5")
    assert is_busy(raised.value)
    assert 0.04 <= now[0] <= 0.05
    holder.execute("ROLLBACK")


def test_inside_a_transaction_a_busy_statement_is_not_retried(pair):
    holder, waiter = pair
    waiter.execute("BEGIN")  # deferred: a read snapshot, the lock only at the first write
    waiter.execute("SELECT n FROM t").fetchone()
    holder.execute("UPDATE t SET n = 7")  # committed after the snapshot
    slept: list[float] = []
    waiter.sleep = slept.append  # type: ignore[method-assign]
    with pytest.raises(sqlite3.OperationalError) as raised:
        waiter.execute("UPDATE t SET n = 8")  # stale snapshot: waiting cannot help
    assert is_busy(raised.value) and slept == []
    waiter.execute("ROLLBACK")


def test_other_errors_pass_straight_through(pair):
    _, conn = pair
    conn.sleep = pytest.fail  # type: ignore[method-assign]
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        conn.execute("SELECT * FROM missing")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO t VALUES ('a', 1)")
