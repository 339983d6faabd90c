"""``radmfa store migrate`` and ``radmfa store copy --from FILE`` against a real PostgreSQL
server (a database of its own per test), the CLI run in-process."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from radmfa.audit import operator
from radmfa.cli.main import main
from radmfa.store.base import (
    AUDIT_ADMIN,
    AUDIT_AUTH,
    LOCKED_FOR_GOOD,
    USER_DISABLED,
    USER_SUSPENDED,
    AuditEvent,
    AuditQuery,
    ChallengeRecord,
    DeviceRef,
    StoreError,
    TokenRecord,
)
from radmfa.store.crypto import SecretBox
from radmfa.store.pg_schema import DATA_TABLES
from radmfa.store.pg_schema import SCHEMA_VERSION as PG_SCHEMA
from radmfa.store.postgres import PostgresStore
from radmfa.store.snapshot import FailureRecord, Snapshot, SnapshotCounts, StoreNotEmpty
from radmfa.store.sqlite import SCHEMA_VERSION as SQLITE_SCHEMA
from radmfa.store.sqlite import SqliteStore

pytestmark = pytest.mark.integration

NOW = 1_800_000_000.0
TOTP_SECRET = b"12345678901234567890"
DEVICE = DeviceRef("02-00-00-00-00-01", "vpn", "nas-1")

CLIENTS = """\
clients:
  - name: vpn
    address: 127.0.0.0/8
    secret: a-long-random-secret-0001
local_users:
  path: users
"""


def write_config(tmp_path: Path, store: str) -> str:
    (tmp_path / "users").write_text("")
    path = tmp_path / "radmfa.yaml"
    path.write_text(CLIENTS + "store:\n" + store)
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def key_file(tmp_path: Path) -> str:
    path = str(tmp_path / "secret.key")
    SecretBox.from_key_file(path)  # created
    return path


@pytest.fixture
def pg_config(tmp_path: Path, pg_dsn: str, key_file: str) -> str:
    return write_config(
        tmp_path, f'  engine: postgresql\n  dsn: "{pg_dsn}"\n  key_file: {key_file}\n'
    )


def radmfa(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def pg_store(dsn: str, key_file: str) -> PostgresStore:
    return PostgresStore(dsn, SecretBox.from_key_file(key_file, create=False))


def table_counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {
            table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in DATA_TABLES
        }


def populate(path: str, key_file: str, audit_rows: int = 50) -> list[AuditEvent]:
    """A SQLite store with something of every kind, written through the store API."""
    store = SqliteStore(path, SecretBox.from_key_file(key_file))
    try:
        store.add_tokens(
            [
                TokenRecord("t-alice", "alice", "totp", TOTP_SECRET, 6, "SHA1", 30, NOW,
                            description="phone"),
                TokenRecord("h-bob", "bob", "hotp", b"hotp-secret-bob-01", 8, "SHA256", 0, NOW + 1),
                TokenRecord("e-bob", "bob", "email", b"bob@example.org", 6, "SHA1", 0, NOW + 2),
                TokenRecord("b-carol-1", "carol", "backup", b"hash-one", 8, "SHA1", 0, NOW + 3),
                TokenRecord("b-carol-2", "carol", "backup", b"hash-two", 8, "SHA1", 0, NOW + 3),
            ]
        )  # fmt: skip
        assert store.advance_step("t-alice", 60_000_000)
        assert store.advance_step("h-bob", 41)
        assert store.advance_step("b-carol-1", 1)
        for i in range(3):  # locked for a while
            store.record_failure("mallory", NOW + i, 3, 900.0)
        for i in range(5):  # locked for good, after two locks that expired
            store.record_failure("oscar", NOW + 100 * i, 2, 60.0, max_total=5)
        store.record_failure("bob", NOW, 5, 900.0)
        store.record_success("alice", NOW + 10)
        store.set_status("dave", USER_DISABLED, None, "left the company")
        store.set_status("erin", USER_SUSPENDED, NOW + 86400, "lost phone")
        store.set_preferred("bob", "email")
        store.set_notice("bob", "the last code could not be sent")
        store.note_grace_login("frank", NOW)
        store.note_grace_login("frank", NOW + 5)
        store.remember_device("alice", DEVICE, NOW, NOW + 30 * 86400)
        store.note_failures(["user:mallory", "source:192.0.2.7"], NOW + 1)
        store.note_failures(["user:mallory"], NOW + 2)
        assert store.reserve_send("bob", "email", NOW, 30.0, 5).granted
        store.put_challenge(ChallengeRecord(b"s" * 16, "alice", "vpn", "127.0.0.1", NOW + 60, NOW))
        store.begin_attempt(b"a" * 16, "alice", NOW, lambda state: None)
        events = [
            AuditEvent(
                NOW + i,
                AUDIT_AUTH,
                f"user{i % 7}",
                reason="ok" if i % 2 else "bad_otp",
                outcome="accept" if i % 2 else "reject",
                client="vpn",
                src="127.0.0.1",
                nas_id="nas-1",
                station="02-00-00-00-00-01",
                method="append",
                factor="totp",
                trusted_device=i % 3 == 0,
                rule="default",
                latency_ms=12.5,
            )
            for i in range(audit_rows)
        ]
        events.append(
            AuditEvent(NOW + audit_rows, AUDIT_ADMIN, "dave", reason="left the company",
                       actor="ann", action="disable", before="enabled", after="disabled")
        )  # fmt: skip
        store.append_audit(events)
        return store.query_audit(AuditQuery())
    finally:
        store.close()


# -- migrate ----------------------------------------------------------------------------------


def test_store_migrate_creates_a_new_schema_then_finds_it_up_to_date(
    pg_config: str, pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = radmfa(capsys, "-c", pg_config, "store", "migrate")
    assert code == 0, err
    name = out.split(": migrated")[0]
    assert name.startswith("store: PostgreSQL database 't_") and "127.0.0.1:" in name
    assert out == f"{name}: migrated from 0 to {PG_SCHEMA}\n"
    assert "password" not in out

    code, out, err = radmfa(capsys, "-c", pg_config, "store", "migrate")
    assert (code, out) == (0, f"{name}: schema {PG_SCHEMA} (up to date)\n"), err


def test_store_migrate_works_for_sqlite_too(
    tmp_path: Path, key_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "state" / "radmfa.sqlite3"
    config = write_config(tmp_path, f"  path: {db}\n  key_file: {key_file}\n")
    code, out, _ = radmfa(capsys, "-c", config, "store", "migrate")
    assert (code, out) == (
        0,
        f"store: {db}: migrated from 0 to {SQLITE_SCHEMA}\n",
    )
    code, out, _ = radmfa(capsys, "-c", config, "store", "migrate")
    assert (code, out) == (0, f"store: {db}: schema {SQLITE_SCHEMA} (up to date)\n")


def test_store_migrate_refuses_a_schema_newer_than_the_code(
    pg_config: str, pg_dsn: str, key_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pg_store(pg_dsn, key_file).close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (PG_SCHEMA + 1,))
    code, out, err = radmfa(capsys, "-c", pg_config, "store", "migrate")
    assert code == 1 and out == ""
    assert f"has schema version {PG_SCHEMA + 1}, this radmfa knows up to {PG_SCHEMA}" in err


# -- copy -------------------------------------------------------------------------------------


def test_store_copy_carries_tokens_users_devices_and_the_audit_trail(
    tmp_path: Path, pg_config: str, pg_dsn: str, key_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = str(tmp_path / "old" / "radmfa.sqlite3")
    trail = populate(source, key_file)
    old = SqliteStore(source, SecretBox.from_key_file(key_file, create=False))
    try:
        tokens, users = old.list_tokens(), old.known_users()
        locks = {u: old.lock_state(u) for u in users}
        settings = {u: old.user_settings(u) for u in users}
    finally:
        old.close()

    code, out, err = radmfa(
        capsys, "-c", pg_config, "store", "copy", "--from", source, "--reason", "moving over"
    )
    assert code == 0, err
    assert out.splitlines()[0] == (
        "copied: 5 tokens, 7 users, 1 trusted device, 3 failure records, 1 send record, "
        "51 audit rows; skipped: 1 open challenge, 1 attempt in progress "
        "(short-lived: they end within minutes)"
    )

    store = pg_store(pg_dsn, key_file)
    try:
        assert store.list_tokens() == tokens
        (totp,) = store.list_tokens("alice")
        assert totp.secret == TOTP_SECRET and totp.description == "phone"
        # A used step stays used, the next one works once.
        assert not store.advance_step("t-alice", 60_000_000)
        assert store.advance_step("t-alice", 60_000_001)
        assert not store.advance_step("h-bob", 41)
        assert not store.advance_step("b-carol-1", 1) and store.advance_step("b-carol-2", 1)

        assert store.known_users() == users
        assert {u: store.lock_state(u) for u in users} == locks
        assert {u: store.user_settings(u) for u in users} == settings
        assert store.lock_state("mallory").is_locked(NOW + 10)
        assert store.lock_state("oscar").locked_until == LOCKED_FOR_GOOD
        assert store.user_settings("dave").status_reason == "left the company"
        assert store.user_settings("dave").disabled
        assert store.user_settings("erin").mfa_suspended(NOW)
        assert store.user_settings("frank").grace_logins == 2
        assert store.take_notice("bob") == "the last code could not be sent"

        (device,) = store.list_devices(None, NOW)
        assert store.trusted_device("alice", DEVICE, NOW + 1) == device
        assert store.failure_window("user:mallory", NOW).count == 2
        assert store.failure_window("source:192.0.2.7", NOW).count == 1
        assert not store.reserve_send("bob", "email", NOW + 1, 30.0, 5).granted  # cooldown

        # The trail: every row, in order, times and ids kept; then the copy's own row.
        events = store.query_audit(AuditQuery())
        (note,) = [e for e in events if e.action == "store-copy"]  # written now, sorts first
        assert [e for e in events if e is not note] == trail
        assert note.event_id is not None and note.event_id > trail[-1].event_id  # type: ignore[operator]
        assert (note.kind, note.user, note.action, note.actor, note.reason) == (
            AUDIT_ADMIN, None, "store-copy", operator(), "moving over"
        )  # fmt: skip
        assert note.after is not None and note.after.startswith(f"from {source}: copied: 5 tokens")
        store.append_audit([AuditEvent(NOW + 999, AUDIT_AUTH, "alice")])
        assert store.query_audit(AuditQuery(limit=1))[0].event_id == note.event_id + 1
    finally:
        store.close()
    counts = table_counts(pg_dsn)
    assert counts["challenges"] == counts["attempts"] == 0


def test_store_copy_reseals_secrets_for_the_destination_key(
    tmp_path: Path, pg_config: str, pg_dsn: str, key_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The source's key file given with --key-file; the destination's is store.key_file."""
    old_key = str(tmp_path / "old" / "secret.key")
    source = str(tmp_path / "old" / "radmfa.sqlite3")
    populate(source, old_key)
    code, _, err = radmfa(
        capsys, "-c", pg_config, "store", "copy", "--from", source, "--key-file", old_key
    )
    assert code == 0, err
    store = pg_store(pg_dsn, key_file)
    try:
        assert store.list_tokens("alice")[0].secret == TOTP_SECRET
    finally:
        store.close()
    with psycopg.connect(pg_dsn) as conn:
        blobs = [bytes(b) for (b,) in conn.execute("SELECT secret_blob FROM tokens")]
    key_id = SecretBox.from_key_file(key_file, create=False).key_id
    assert blobs and all(blob[1:9] == key_id for blob in blobs)


def test_store_copy_with_the_wrong_key_copies_nothing(
    tmp_path: Path, pg_config: str, pg_dsn: str, key_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = str(tmp_path / "old" / "radmfa.sqlite3")
    populate(source, str(tmp_path / "old" / "secret.key"))
    code, out, err = radmfa(capsys, "-c", pg_config, "store", "copy", "--from", source)
    assert code == 1 and out == ""
    assert "nothing copied: cannot decrypt the secret of token" in err and "wrong key file?" in err
    assert set(table_counts(pg_dsn).values()) == {0}


def test_store_copy_into_a_store_that_holds_data_is_refused_and_changes_nothing(
    tmp_path: Path, pg_config: str, pg_dsn: str, key_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = str(tmp_path / "old" / "radmfa.sqlite3")
    populate(source, key_file)
    store = pg_store(pg_dsn, key_file)
    try:
        store.append_audit([AuditEvent(NOW, AUDIT_AUTH, "zoe", reason="ok", outcome="accept")])
    finally:
        store.close()
    before = table_counts(pg_dsn)

    code, out, err = radmfa(capsys, "-c", pg_config, "store", "copy", "--from", source)

    assert code == 1 and out == ""
    assert "is not empty (it holds 1 audit row); store copy only fills an empty store" in err
    assert table_counts(pg_dsn) == before


@pytest.mark.parametrize(
    "damage",
    [
        "randomblob(45)",  # bytes that are no sealed blob
        "x'01' || zeroblob(40)",  # a TEXT value (|| makes text), not even bytes
    ],
)
def test_a_copy_that_fails_midway_leaves_the_destination_empty(
    tmp_path: Path,
    pg_config: str,
    pg_dsn: str,
    key_file: str,
    damage: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Users and the first tokens are written before the damaged last tokens are read."""
    source = str(tmp_path / "old" / "radmfa.sqlite3")
    populate(source, key_file)
    with sqlite3.connect(source) as conn:
        conn.execute(f"UPDATE tokens SET secret_blob = {damage} WHERE username = 'carol'")
    code, _, err = radmfa(capsys, "-c", pg_config, "store", "copy", "--from", source)
    assert code == 1
    assert "nothing copied: cannot decrypt the secret of token 'b-carol-1' of user 'carol'" in err
    assert set(table_counts(pg_dsn).values()) == {0}


def _failures_snapshot(n: int, midway: Callable[[], None] | None = None) -> Snapshot:
    """A snapshot of ``n`` failure records (a table without a unique key, where nothing but
    the copy's own lock keeps two copies apart); ``midway`` runs halfway through."""

    def rows() -> Iterator[FailureRecord]:
        for i in range(n):
            if i == n // 2 and midway is not None:
                midway()
            yield FailureRecord("user:alice", NOW + i)

    return Snapshot("test", SnapshotCounts(failures=n), (), (), (), rows(), (), ())


def test_two_copies_at_once_fill_the_store_once(pg_dsn: str, key_file: str) -> None:
    """Halfway through the first copy, a second one starts; the first goes on only once the
    second waits for a lock (or has finished). The tables are locked from the emptiness check
    to the commit, so the second finds the store full."""
    first, second = pg_store(pg_dsn, key_file), pg_store(pg_dsn, key_file)
    halfway, done = threading.Event(), threading.Event()
    outcome: list[object] = []

    def copy_second() -> None:
        halfway.wait(60)
        try:
            outcome.append(second.import_snapshot(_failures_snapshot(10)))
        except StoreError as e:
            outcome.append(e)
        finally:
            done.set()

    def let_the_second_start() -> None:
        halfway.set()
        deadline = time.monotonic() + 60
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            while time.monotonic() < deadline and not done.is_set():
                row = conn.execute(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                ).fetchone()
                if row is not None and row[0]:
                    return
                time.sleep(0.01)

    racer = threading.Thread(target=copy_second)
    racer.start()
    try:
        written = first.import_snapshot(_failures_snapshot(10, let_the_second_start))
        racer.join(60)
    finally:
        first.close()
        second.close()
    assert written == SnapshotCounts(failures=10)
    (refused,) = outcome
    assert isinstance(refused, StoreNotEmpty), refused
    assert refused.found == SnapshotCounts(failures=10)
    assert table_counts(pg_dsn)["failures"] == 10


def test_an_error_while_the_rows_stream_in_writes_nothing(pg_dsn: str, key_file: str) -> None:
    def audit() -> Iterator[AuditEvent]:
        for i in range(1, 2001):
            yield AuditEvent(NOW + i, AUDIT_AUTH, "alice", event_id=i)
        raise OSError("the source disk went away")

    snapshot = Snapshot(
        "test", SnapshotCounts(failures=1, audit=5000), (), (), (),
        [FailureRecord("user:alice", NOW)], (), audit(),
    )  # fmt: skip
    store = pg_store(pg_dsn, key_file)
    try:
        with pytest.raises(OSError, match="went away"):
            store.import_snapshot(snapshot)
    finally:
        store.close()
    assert set(table_counts(pg_dsn).values()) == {0}


def test_a_snapshot_that_yields_fewer_rows_than_it_counted_is_not_copied(
    pg_dsn: str, key_file: str
) -> None:
    snapshot = Snapshot(
        "test", SnapshotCounts(failures=3), (), (), (), [FailureRecord("k", NOW)], (), ()
    )
    store = pg_store(pg_dsn, key_file)
    try:
        with pytest.raises(StoreError, match=r"announced .*3 failure records.* but gave"):
            store.import_snapshot(snapshot)
    finally:
        store.close()
    assert set(table_counts(pg_dsn).values()) == {0}


@pytest.mark.parametrize("kind", ["missing", "not sqlite", "other sqlite", "older schema"])
def test_store_copy_from_a_file_that_is_no_radmfa_store_fails_and_leaves_it_as_it_was(
    tmp_path: Path, pg_config: str, pg_dsn: str, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "source.db"
    if kind == "not sqlite":
        source.write_bytes(b"just some text\n" * 100)
    elif kind == "other sqlite":
        with sqlite3.connect(source) as conn:
            conn.execute("CREATE TABLE notes (body TEXT)")
    elif kind == "older schema":
        with sqlite3.connect(source) as conn:
            conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY)")
            conn.execute("INSERT INTO schema_version VALUES (2)")
            for table in ("tokens", "users", "audit"):
                conn.execute(f"CREATE TABLE {table} (x)")
    before = source.read_bytes() if source.exists() else None

    code, out, err = radmfa(capsys, "-c", pg_config, "store", "copy", "--from", str(source))

    assert code == 1 and out == ""
    expected = {
        "missing": f"nothing copied: {source}: no such file",
        "not sqlite": f"nothing copied: {source} is not a radmfa store (not a SQLite database",
        "other sqlite": f"nothing copied: {source} is not a radmfa store (a SQLite database "
        "without its tables)",
        "older schema": f"nothing copied: {source} has schema version 2, this radmfa reads "
        f"version {SQLITE_SCHEMA}: open it once with this radmfa first",
    }[kind]
    assert expected in err
    assert (source.read_bytes() if source.exists() else None) == before
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["radmfa.yaml", "users", "secret.key"] + ([] if kind == "missing" else ["source.db"])
    )


def test_store_copy_never_creates_a_missing_key_file(
    tmp_path: Path, pg_config: str, key_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = str(tmp_path / "old" / "radmfa.sqlite3")
    populate(source, key_file)
    missing = tmp_path / "nowhere.key"
    code, _, err = radmfa(
        capsys, "-c", pg_config, "store", "copy", "--from", source, "--key-file", str(missing)
    )
    assert code == 1 and f"key file {missing} does not exist" in err
    assert not missing.exists()


def test_store_copy_needs_a_postgresql_destination(
    tmp_path: Path, key_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = str(tmp_path / "old" / "radmfa.sqlite3")
    populate(source, key_file)
    config = write_config(tmp_path, f"  path: {tmp_path / 'new.sqlite3'}\n  key_file: {key_file}\n")
    code, out, err = radmfa(capsys, "-c", config, "store", "copy", "--from", source)
    assert code == 2 and out == ""
    assert "store copy needs store.engine: postgresql" in err
    assert not (tmp_path / "new.sqlite3").exists()


def test_radmfa_help_names_the_store_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "store" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["store", "--help"])
    text = capsys.readouterr().out
    assert "migrate" in text and "copy" in text and "PostgreSQL" in text
