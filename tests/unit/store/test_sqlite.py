"""What only the SQLite engine promises: files, modes, encryption at rest, migrations, processes.

The behaviour every engine shares is in test_store_contract.py.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from radmfa.config import StoreConfig
from radmfa.store import open_store
from radmfa.store.busy import PatientConnection
from radmfa.store.crypto import KeyFileError, SecretBox, SecretBoxError, token_secret_aad
from radmfa.store.model import (
    AuditQuery,
    ChallengeRecord,
    DeviceRef,
    PendingEnrolment,
    PortalSession,
    StoreError,
    TokenRecord,
)
from radmfa.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteStore

NOW = 1_800_000_000.0
SECRET_A = bytes.fromhex("3132333435363738393031323334353637383930")  # RFC 6238 test key
SECRET_B = bytes(range(100, 120))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _token(token_id: str, user: str, secret: bytes) -> TokenRecord:
    return TokenRecord(token_id, user, "totp", secret, 6, "SHA1", 30, NOW)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "secret.key"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "radmfa.sqlite3"


@pytest.fixture
def store(db_path: Path, key_file: Path):
    s = SqliteStore(str(db_path), SecretBox.from_key_file(key_file))
    yield s
    s.close()


def _raw(db_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(db_path, isolation_level=None)


def _at_version(db_path: Path, version: int) -> sqlite3.Connection:
    """A new database file migrated to ``version`` only, as an older radmfa left it."""
    db_path.parent.mkdir(parents=True)
    conn = _raw(db_path)
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY)")
    for number, statements in enumerate(MIGRATIONS[:version], start=1):
        for statement in statements:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
    return conn


# -- files and modes -----------------------------------------------------------------------


def test_open_store_creates_key_and_database_private(tmp_path: Path) -> None:
    config = StoreConfig(
        path=str(tmp_path / "a" / "db.sqlite3"), key_file=str(tmp_path / "k" / "key")
    )
    old = os.umask(0o022)
    try:
        s = open_store(config)
        s.add_token(_token("t1", "alice", SECRET_A))
    finally:
        os.umask(old)
    try:
        assert _mode(Path(config.key_file)) == 0o600
        assert _mode(Path(config.path)) == 0o600
        assert _mode(Path(config.path).parent) == 0o700
        for suffix in ("-wal", "-shm"):
            side = Path(config.path + suffix)
            if side.exists():
                assert _mode(side) == 0o600, suffix
    finally:
        s.close()


def test_key_file_is_reused_so_secrets_survive_a_restart(db_path: Path, key_file: Path) -> None:
    first = SqliteStore(str(db_path), SecretBox.from_key_file(key_file))
    first.add_token(_token("t1", "alice", SECRET_A))
    first.close()
    second = SqliteStore(str(db_path), SecretBox.from_key_file(key_file))
    assert second.list_tokens()[0].secret == SECRET_A
    second.close()


def test_world_readable_key_file_is_refused(tmp_path: Path, key_file: Path) -> None:
    SecretBox.from_key_file(key_file)
    key_file.chmod(0o644)
    with pytest.raises(StoreError, match="chmod 600") as info:
        open_store(StoreConfig(path=str(tmp_path / "db"), key_file=str(key_file)))
    assert isinstance(info.value.__cause__, KeyFileError)
    assert not (tmp_path / "db").exists()


def test_in_memory_database_is_refused() -> None:
    with pytest.raises(StoreError, match="file path"):
        SqliteStore(":memory:", SecretBox(bytes(32)))


def test_a_file_that_is_not_a_database_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=str(path)):
        SqliteStore(str(path), SecretBox(bytes(32)))


def test_connection_settings(store: SqliteStore) -> None:
    conn = store._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    # SQLite's own busy handler is off: PatientConnection waits, in shorter steps, as long.
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 0
    assert isinstance(conn, PatientConnection) and conn.patience == 5.0
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


# -- secrets at rest -----------------------------------------------------------------------


def test_database_files_and_dump_hold_no_secret(store: SqliteStore, db_path: Path) -> None:
    store.add_token(_token("t1", "alice", SECRET_A))
    store.add_token(_token("t2", "bob", SECRET_B))
    raw = b"".join(p.read_bytes() for p in db_path.parent.iterdir())
    dump = "\n".join(_raw(db_path).iterdump())
    assert "tokens" in dump  # the dump did see the rows
    for secret in (SECRET_A, SECRET_B):
        b32 = base64.b32encode(secret).decode()
        for form in (b32, b32.lower(), b32.rstrip("="), secret.hex(), secret.hex().upper()):
            assert form.encode() not in raw
            assert form not in dump
        assert secret not in raw


def _portal_session(key: bytes, secret: bytes) -> PortalSession:
    pending = PendingEnrolment(_token("p-" + key.hex()[:6], "alice", secret), None)
    return PortalSession(
        key, "alice", "alice", "enroll", "csrf", 1.0, 1.0, 600.0, 3601.0, pending=pending
    )


def test_a_pending_enrolment_is_sealed_and_bound_to_its_session(
    store: SqliteStore, db_path: Path
) -> None:
    store.put_portal_session(_portal_session(b"a" * 32, SECRET_A))
    store.put_portal_session(_portal_session(b"b" * 32, SECRET_B))
    raw = b"".join(p.read_bytes() for p in db_path.parent.iterdir())
    dump = "\n".join(_raw(db_path).iterdump())
    for secret in (SECRET_A, SECRET_B):
        b32 = base64.b32encode(secret).decode()
        assert secret not in raw and b32.encode() not in raw and b32 not in dump
    # A sealed secret moved to another session (or a changed description) does not open.
    conn = _raw(db_path)
    (blob_b,) = conn.execute(
        "SELECT pending_secret FROM portal_sessions WHERE session_key=?", (b"b" * 32,)
    ).fetchone()
    conn.execute("UPDATE portal_sessions SET pending_secret=? WHERE session_key=?",
                 (blob_b, b"a" * 32))  # fmt: skip
    conn.close()
    with pytest.raises(StoreError, match="pending enrolment"):
        store.take_portal_pending(b"a" * 32)
    taken = store.take_portal_pending(b"b" * 32)
    assert taken is not None and taken.token.secret == SECRET_B


def test_swapped_secret_blobs_fail_to_decrypt(store: SqliteStore, db_path: Path) -> None:
    store.add_token(_token("t1", "alice", SECRET_A))
    store.add_token(_token("t2", "bob", SECRET_B))
    conn = _raw(db_path)
    (blob_a,) = conn.execute("SELECT secret_blob FROM tokens WHERE token_id='t1'").fetchone()
    (blob_b,) = conn.execute("SELECT secret_blob FROM tokens WHERE token_id='t2'").fetchone()
    conn.execute("UPDATE tokens SET secret_blob=? WHERE token_id='t1'", (blob_b,))
    conn.execute("UPDATE tokens SET secret_blob=? WHERE token_id='t2'", (blob_a,))
    conn.close()
    with pytest.raises(
        StoreError, match="cannot decrypt the secret of token 't1' of user 'alice'"
    ) as info:
        store.list_tokens("alice")
    assert isinstance(info.value.__cause__, SecretBoxError)
    assert SECRET_A.hex() not in str(info.value) and SECRET_B.hex() not in str(info.value)
    with pytest.raises(StoreError):
        store.list_tokens("bob")


def test_moving_a_token_to_another_user_fails_to_decrypt(store: SqliteStore, db_path: Path) -> None:
    store.add_token(_token("t1", "alice", SECRET_A))
    conn = _raw(db_path)
    conn.execute("UPDATE tokens SET username='mallory' WHERE token_id='t1'")
    conn.close()
    with pytest.raises(StoreError, match="mallory"):
        store.list_tokens()


def test_tampering_is_caught_after_the_secret_was_read_once(
    store: SqliteStore, db_path: Path
) -> None:
    """Opened secrets are remembered per (token, user, blob): a changed row is opened again."""
    store.add_token(_token("t1", "alice", SECRET_A))
    store.add_token(_token("t2", "bob", SECRET_B))
    assert [t.secret for t in store.list_tokens()] == [SECRET_A, SECRET_B]
    conn = _raw(db_path)
    (blob_b,) = conn.execute("SELECT secret_blob FROM tokens WHERE token_id='t2'").fetchone()
    conn.execute("UPDATE tokens SET secret_blob=? WHERE token_id='t1'", (blob_b,))
    conn.execute("UPDATE tokens SET username='mallory' WHERE token_id='t2'")
    conn.close()
    with pytest.raises(StoreError, match="token 't1' of user 'alice'"):
        store.list_tokens("alice")
    with pytest.raises(StoreError, match="mallory"):
        store.list_tokens("mallory")


def test_opened_secrets_are_kept_for_recent_tokens_only(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from radmfa.store.queries import tokens as sqlite_store

    monkeypatch.setattr(sqlite_store, "_MAX_OPENED", 3)
    for i in range(5):
        store.add_token(_token(f"t{i}", f"user{i}", SECRET_A))
    assert [t.secret for t in store.list_tokens()] == [SECRET_A] * 5
    assert len(store._opened) <= 3


def test_a_store_used_after_fork_is_refused_in_the_child(store: SqliteStore) -> None:
    store.add_token(_token("t1", "alice", SECRET_A))
    pid = os.fork()
    if pid == 0:  # the child: any query must refuse, whatever happens exit at once
        code = 3
        try:
            store.list_tokens()
        except StoreError as e:
            code = 0 if "open a new store in each process" in str(e) else 4
        except BaseException:
            code = 5
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [t.token_id for t in store.list_tokens()] == ["t1"]  # the parent goes on


def test_wrong_key_file_is_reported(db_path: Path, key_file: Path, tmp_path: Path) -> None:
    s = SqliteStore(str(db_path), SecretBox.from_key_file(key_file))
    s.add_token(_token("t1", "alice", SECRET_A))
    s.close()
    other = SqliteStore(str(db_path), SecretBox.from_key_file(tmp_path / "other.key"))
    with pytest.raises(StoreError, match="wrong key file"):
        other.list_tokens()
    other.close()


# -- schema versions -----------------------------------------------------------------------


def test_fresh_database_is_at_the_latest_version(store: SqliteStore, db_path: Path) -> None:
    assert store.schema_version() == SCHEMA_VERSION == len(MIGRATIONS)
    conn = _raw(db_path)
    versions = [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY version")]
    tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    assert {"schema_version", "tokens", "users", "challenges"} <= tables


def test_reopening_keeps_data_and_version(db_path: Path, key_file: Path) -> None:
    box = SecretBox.from_key_file(key_file)
    s = SqliteStore(str(db_path), box)
    s.add_token(_token("t1", "alice", SECRET_A))
    s.close()
    again = SqliteStore(str(db_path), box)
    assert again.schema_version() == SCHEMA_VERSION
    assert [t.token_id for t in again.list_tokens()] == ["t1"]
    again.close()


def test_devices_remembered_by_station_alone_are_forgotten_by_the_upgrade(
    db_path: Path, key_file: Path
) -> None:
    """Schema 3 kept (user, station) only: nobody knows through which client such a device
    was remembered, so none of them may skip a code after the upgrade."""
    conn = _at_version(db_path, 3)
    conn.execute(
        "INSERT INTO devices (user, device, remembered_at, expires_at) VALUES (?, ?, ?, ?)",
        ("alice", "02:00:5e:10:00:01", NOW, NOW + 86400),
    )
    conn.close()
    store = SqliteStore(str(db_path), SecretBox.from_key_file(key_file))
    try:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.list_devices(None, NOW) == []
        for client in ("vpn", ""):
            device = DeviceRef("02:00:5e:10:00:01", client, "")
            assert store.trusted_device("alice", device, NOW) is None
            assert store.login_state("alice", NOW, device=device).device is None
        device = DeviceRef("02:00:5e:10:00:01", "vpn", "nas-1")
        store.remember_device("alice", device, NOW, NOW + 60)  # remembering works afresh
        assert [d.ref for d in store.list_devices("alice", NOW)] == [device]
    finally:
        store.close()


def test_a_portal_session_from_before_step_up_has_proven_nothing_after_the_upgrade(
    db_path: Path, key_file: Path
) -> None:
    """Version 9 kept no ``proven_at``: a session signed in before the upgrade must prove a
    factor again before a security change, never count as proven just now."""
    conn = _at_version(db_path, 9)
    conn.execute(
        "INSERT INTO portal_sessions (session_key, username, name, stage, csrf, created_at, "
        "last_seen, idle, ends_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (b"k" * 32, "alice", "alice", "full", "csrf", NOW, NOW, 600.0, NOW + 3600),
    )
    conn.close()
    store = SqliteStore(str(db_path), SecretBox.from_key_file(key_file))
    try:
        assert store.schema_at_open == 9 and store.schema_version() == SCHEMA_VERSION
        found = store.touch_portal_session(b"k" * 32, NOW + 1)
        assert found is not None and found.stage == "full" and found.proven_at is None
        store._use_returning = False  # the path for SQLite < 3.35 reads the new column too
        assert store.set_portal_proven(b"k" * 32, NOW + 2) is True
        found = store.touch_portal_session(b"k" * 32, NOW + 3)
        assert found is not None and found.proven_at == NOW + 2
    finally:
        store.close()


def test_a_version_6_file_with_data_in_every_table_is_readable_after_the_upgrade(
    db_path: Path, key_file: Path
) -> None:
    """Version 7 renames the ``user`` columns to ``username``: every row written before (by
    the statements of version 6) must read back the same afterwards."""
    box = SecretBox.from_key_file(key_file)
    conn = _at_version(db_path, 6)
    blob = box.seal(SECRET_A, token_secret_aad("alice", "t1"))
    conn.execute(
        "INSERT INTO tokens (token_id, user, type, secret_blob, digits, algorithm, period, "
        "created_at, last_step, description) VALUES ('t1', 'alice', 'totp', ?, 6, 'SHA1', 30, "
        "?, 7, 'phone')",
        (blob, NOW),
    )
    conn.execute(
        "INSERT INTO users (user, failures, locked_until, last_failure_at, total_failures, "
        "preferred, notice, status, status_reason, grace_logins) "
        "VALUES ('alice', 2, NULL, ?, 4, 'totp', 'hello', 'suspended', 'lost phone', 1)",
        (NOW - 5,),
    )
    conn.execute(
        "INSERT INTO challenges (state_id, user, client_name, client_address, created_at, "
        "expires_at, phase, rule) VALUES (?, 'alice', 'vpn', '192.0.2.1', ?, ?, 'code', 'r1')",
        (b"s" * 16, NOW, NOW + 60),
    )
    conn.execute("INSERT INTO sends (user, channel, sent_at) VALUES ('alice', 'sms', ?)", (NOW,))
    conn.execute(
        "INSERT INTO devices (user, device, client, nas_id, remembered_at, expires_at) "
        "VALUES ('alice', 'aa:bb', 'vpn', 'nas-1', ?, ?)",
        (NOW, NOW + 3600),
    )
    conn.execute("INSERT INTO failures (key, at) VALUES ('user:alice', ?)", (NOW - 5,))
    conn.execute(
        "INSERT INTO audit (at, kind, user, reason, outcome) "
        "VALUES (?, 'auth', 'alice', 'ok', 'accept')",
        (NOW,),
    )
    conn.execute(
        "INSERT INTO attempts (user, attempt_id, source, expires_at, failed) "
        "VALUES ('alice', ?, NULL, ?, 1)",
        (b"a1", NOW + 30),
    )
    conn.close()

    store = SqliteStore(str(db_path), box)
    try:
        assert store.schema_at_open == 6 and store.schema_version() == SCHEMA_VERSION
        assert store.list_tokens("alice") == [
            TokenRecord("t1", "alice", "totp", SECRET_A, 6, "SHA1", 30, NOW, 7, "phone")
        ]
        assert store.known_users() == ["alice"]
        lock = store.lock_state("alice")
        assert (lock.failures, lock.total_failures, lock.last_failure_at) == (2, 4, NOW - 5)
        settings = store.user_settings("alice")
        assert (settings.preferred, settings.notice, settings.status) == (
            "totp",
            "hello",
            "suspended",
        )
        assert (settings.status_reason, settings.grace_logins) == ("lost phone", 1)
        device = DeviceRef("aa:bb", "vpn", "nas-1")
        assert store.trusted_device("alice", device, NOW) is not None
        assert store.failure_window("user:alice", NOW - 60).count == 1
        assert [(e.user, e.reason) for e in store.query_audit(AuditQuery())] == [("alice", "ok")]
        # The send record still counts (cooldown), the failed attempt is still known.
        assert store.reserve_send("alice", "sms", NOW + 1, 60, 5).limit == "cooldown"
        again = store.begin_attempt(b"a1", "alice", NOW + 1, lambda state: None)
        assert again.duplicate == "failed"
        taken = store.take_challenge(b"s" * 16)
        assert taken is not None and (taken.user, taken.rule) == ("alice", "r1")
    finally:
        store.close()


def test_database_from_a_newer_radmfa_is_refused(store: SqliteStore, db_path: Path) -> None:
    store.add_token(_token("t1", "alice", SECRET_A))
    store.close()
    conn = _raw(db_path)
    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}.*upgrade radmfa"):
        SqliteStore(str(db_path), SecretBox(bytes(32)))
    # refused without touching it
    conn = _raw(db_path)
    assert (
        conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION + 1
    )
    assert conn.execute("SELECT COUNT(*) FROM tokens").fetchone()[0] == 1
    conn.close()


# -- threads and processes -----------------------------------------------------------------


def test_each_thread_gets_its_own_connection_and_close_closes_all(store: SqliteStore) -> None:
    seen: list[sqlite3.Connection] = []

    def work() -> None:
        store.list_tokens()
        seen.append(store._conn())

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    main = store._conn()
    assert len({id(c) for c in [*seen, main]}) == 4
    store.close()
    for conn in [*seen, main]:
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")
    with pytest.raises(StoreError, match="closed"):
        store.list_tokens()


def test_connections_of_finished_threads_are_closed(store: SqliteStore) -> None:
    seen: list[sqlite3.Connection] = []
    worker = threading.Thread(target=lambda: seen.append(store._conn()))
    worker.start()
    worker.join()
    seen[0].execute("SELECT 1")  # still open: its thread has ended but nobody noticed yet
    done = threading.Thread(target=store.list_tokens)  # a new thread opens a connection
    done.start()
    done.join()
    with pytest.raises(sqlite3.ProgrammingError):
        seen[0].execute("SELECT 1")


def test_take_challenge_without_returning_is_still_single_use(store: SqliteStore) -> None:
    store._use_returning = False  # the path for SQLite < 3.35
    c = ChallengeRecord(b"x" * 16, "alice", "vpn", "192.0.2.1", NOW + 60, NOW)
    store.put_challenge(c)
    barrier = threading.Barrier(8)
    results: list[object] = []

    def take() -> None:
        barrier.wait()
        results.append(store.take_challenge(c.state_id))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r for r in results if r is not None] == [c]


def test_grace_logins_without_returning_are_each_counted_once(store: SqliteStore) -> None:
    store._use_returning = False  # the path for SQLite < 3.35
    barrier = threading.Barrier(8)
    counts: list[int] = []

    def note() -> None:
        barrier.wait()
        counts.append(store.note_grace_login("alice", NOW).grace_logins)

    threads = [threading.Thread(target=note) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(counts) == list(range(1, 9))
    assert store.user_settings("alice").first_seen_at == NOW


WORKER = """
import json, sys
from radmfa.store.crypto import SecretBox
from radmfa.store.sqlite import SqliteStore

db, key, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = SqliteStore(db, SecretBox.from_key_file(key, create=False))
print("ready", flush=True)
sys.stdin.readline()  # the start gun: every worker is connected
won = []
for step in range(1, rounds + 1):
    if store.advance_step("t1", step):
        won.append(step)
    store.record_failure("alice", 1800000000.0, 100000, 60)
store.close()
print(json.dumps(won), flush=True)
"""


def test_processes_accept_each_step_exactly_once(
    store: SqliteStore, db_path: Path, key_file: Path
) -> None:
    store.add_token(_token("t1", "alice", SECRET_A))
    rounds, workers = 200, 4
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(db_path), str(key_file), str(rounds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(workers)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0] * workers
    won = [step for out in outputs for step in json.loads(out.strip().splitlines()[-1])]
    assert sorted(won) == list(range(1, rounds + 1))  # every step accepted once, no step twice
    assert store.list_tokens()[0].last_step == rounds
    assert store.lock_state("alice").failures == rounds * workers


def _allow(state: object) -> object | None:
    return None


def test_a_thread_that_may_not_wait_is_refused_at_once_and_nothing_is_done(
    store: SqliteStore, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reactor's connection (forbid_waiting): a taken lock is StoreBusy with nothing
    written, never a sleep on that thread; other threads still wait their turn."""
    from radmfa.store.base import StoreBusy

    store.add_token(_token("t1", "alice", SECRET_A))
    store.forbid_waiting()
    conn = store._conn()
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0  # no fsync here

    def no_sleeping(seconds: float) -> None:
        raise AssertionError(f"the reactor's connection slept {seconds}s")

    monkeypatch.setattr(PatientConnection, "sleep", staticmethod(no_sleeping))
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreBusy):
            store.begin_attempt(b"a1", "alice", NOW, _allow, with_tokens=True)
        with pytest.raises(StoreBusy):
            store.advance_step("t1", 5)
        assert not conn.in_transaction
    finally:
        holder.execute("COMMIT")
        holder.close()
    assert store.list_tokens("alice")[0].last_step is None  # the refused write left nothing
    start = store.begin_attempt(b"a1", "alice", NOW, _allow, with_tokens=True)
    assert start.reserved and start.state is not None and start.state.pending_user == 0
    assert start.tokens is not None and [t.token_id for t in start.tokens] == ["t1"]
    assert store.advance_step("t1", 5)

    seen: list[object] = []
    other = threading.Thread(target=lambda: seen.append(store._conn().patience))
    other.start()
    other.join()
    assert seen == [5.0]  # the store thread's connection still waits for the lock
