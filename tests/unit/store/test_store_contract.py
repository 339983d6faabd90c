"""The Store contract, run against every engine.

A new engine joins by adding a factory to ``ENGINES``; every test here must then pass
unchanged. Times are explicit ``now`` values: nothing sleeps or reads the clock.

The PostgreSQL engine runs against a real server (the session's ``postgres`` fixture, started
once): every test opens a store on the one test database after emptying its tables.
"""

from __future__ import annotations

import dataclasses
import hmac
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from radmfa.store.base import Store
from radmfa.store.crypto import SecretBox
from radmfa.store.memory import MemoryStore
from radmfa.store.model import (
    ATTEMPT_FAILED,
    ATTEMPT_LEASE,
    ATTEMPT_NEUTRAL,
    ATTEMPT_SUCCEEDED,
    AUDIT_ADMIN,
    AUDIT_AUTH,
    DUPLICATE_FAILED,
    DUPLICATE_IN_FLIGHT,
    FAILED_ATTEMPT_MEMORY,
    KNOWN_SECRET,
    LINK_GONE,
    AuditEvent,
    AuditQuery,
    ChallengeRecord,
    DeviceRef,
    EnrolLink,
    FailureWindow,
    LockoutRule,
    LockState,
    LoginState,
    PendingEnrolment,
    PortalSession,
    StoreError,
    TokenChange,
    TokenRecord,
    TrustedDevice,
    UserSettings,
)
from radmfa.store.pg_schema import DATA_TABLES
from radmfa.store.postgres import PostgresStore
from radmfa.store.rules import next_failure_state
from radmfa.store.schema.postgres import PORTAL_TABLES
from radmfa.store.sqlite import SqliteStore
from tests.support.postgres import Postgres

NOW = 1_800_000_000.0


def _memory(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return MemoryStore()


def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return SqliteStore(str(tmp_path / "db" / "radmfa.sqlite3"), SecretBox(bytes(range(32))))


def _postgres(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    server: Postgres = request.getfixturevalue("postgres")
    store = PostgresStore(server.dsn, SecretBox(bytes(range(32))), pool_size=8)
    with server.admin(dbname="radmfa_test") as conn:
        conn.execute(f"TRUNCATE {', '.join(DATA_TABLES + PORTAL_TABLES)} RESTART IDENTITY")
    return store


ENGINES: dict[str, Callable[[pytest.FixtureRequest, Path], Store]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "postgres": _postgres,
}
#: Engines that need a real server started by the tests.
SERVER_ENGINES = {"postgres"}


@pytest.fixture(
    params=[
        pytest.param(name, marks=[pytest.mark.integration] if name in SERVER_ENGINES else [])
        for name in sorted(ENGINES)
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    engine = ENGINES[request.param](request, tmp_path)
    yield engine
    engine.close()


def token(token_id: str = "t1", user: str = "alice", **kw: object) -> TokenRecord:
    fields: dict[str, object] = {
        "type": "totp",
        "secret": b"\x00\x01secret-bytes-" + token_id.encode(),
        "digits": 6,
        "algorithm": "SHA1",
        "period": 30,
        "created_at": NOW,
    }
    fields.update(kw)
    return TokenRecord(token_id=token_id, user=user, **fields)  # type: ignore[arg-type]


def challenge(state_id: bytes = b"s" * 16, user: str = "alice", **kw: object) -> ChallengeRecord:
    fields: dict[str, object] = {
        "client_name": "vpn",
        "client_address": "192.0.2.10",
        "created_at": NOW,
        "expires_at": NOW + 120,
    }
    fields.update(kw)
    return ChallengeRecord(state_id=state_id, user=user, **fields)  # type: ignore[arg-type]


def dev(station: str, client: str = "vpn", nas: str = "nas-1") -> DeviceRef:
    return DeviceRef(station, client, nas)


def run_concurrently(n: int, fn: Callable[[], object]) -> list[object]:
    """Call ``fn`` from ``n`` threads released together by a barrier."""
    barrier = threading.Barrier(n)

    def go() -> object:
        barrier.wait()
        return fn()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda _: go(), range(n)))


# -- tokens --------------------------------------------------------------------------------


def test_added_token_is_listed_with_every_field(store: Store) -> None:
    t = token(last_step=7, description="phone", digits=8, algorithm="SHA256", period=60)
    store.add_token(t)
    assert store.list_tokens() == [t]
    assert store.list_tokens("alice") == [t]


def test_list_tokens_filters_by_user_and_is_ordered(store: Store) -> None:
    b = token("b1", "bob", created_at=NOW)
    a2 = token("a2", "alice", created_at=NOW + 5)
    a1 = token("a1", "alice", created_at=NOW + 1)
    a0 = token("a0", "alice", created_at=NOW + 1)
    for t in (b, a2, a1, a0):
        store.add_token(t)
    assert store.list_tokens() == [a0, a1, a2, b]
    assert store.list_tokens("alice") == [a0, a1, a2]
    assert store.list_tokens("bob") == [b]
    assert store.list_tokens("carol") == []


def test_user_names_are_stored_as_given(store: Store) -> None:
    store.add_token(token("t1", "Alice"))
    assert store.list_tokens("alice") == []
    assert [t.user for t in store.list_tokens("Alice")] == ["Alice"]


def test_duplicate_token_id_is_refused(store: Store) -> None:
    store.add_token(token("t1", "alice"))
    with pytest.raises(StoreError, match="already exists"):
        store.add_token(token("t1", "bob"))
    assert [t.user for t in store.list_tokens()] == ["alice"]


def test_bulk_add_is_all_or_nothing(store: Store) -> None:
    store.add_tokens([token("b1", "bob"), token("c1", "carol")])
    assert [t.token_id for t in store.list_tokens()] == ["b1", "c1"]
    with pytest.raises(StoreError, match="already exists"):
        store.add_tokens([token("d1", "dave"), token("b1", "eve")])
    assert [t.token_id for t in store.list_tokens()] == ["b1", "c1"]
    assert store.list_tokens("bob")[0].secret == token("b1").secret


SHARED = b"\x00\x01one-secret-for-all"


def test_a_secret_the_user_already_has_is_skipped_not_added_twice(store: Store) -> None:
    first = token("a1", "alice", secret=SHARED)
    assert store.add_token(first) is True
    # The same secret again: as a retry, in a batch, twice in one batch.
    assert store.add_token(token("a2", "alice", secret=SHARED)) is False
    again, fresh, twice = (
        token("a3", "alice", secret=SHARED),
        token("b1", "bob", secret=SHARED),  # another user may hold the same secret
        token("b2", "bob", secret=SHARED),
    )
    assert store.add_tokens([again, fresh, twice]) == [again, twice]
    # Another type is another factor; a secret one byte longer is another secret.
    hotp = token("a4", "alice", secret=SHARED, type="hotp")
    longer = token("a5", "alice", secret=SHARED + b"!")
    assert store.add_tokens([hotp, longer]) == []
    assert [t.token_id for t in store.list_tokens()] == ["a1", "a4", "a5", "b1"]


def test_a_secret_padded_with_zero_bytes_is_the_same_secret(store: Store) -> None:
    """HMAC pads a key shorter than its block with zero bytes: SHARED and SHARED + b"\\0"
    give every code alike, so a re-run from an export that pads secrets would double them."""
    padded = SHARED + b"\x00" * 5
    assert hmac.new(SHARED, b"step", "sha1").digest() == hmac.new(padded, b"step", "sha1").digest()
    assert store.add_token(token("a1", "alice", secret=SHARED)) is True
    assert store.add_token(token("a2", "alice", secret=padded)) is False
    assert store.add_token(token("b1", "bob", secret=padded)) is True
    assert store.add_tokens([token("b2", "bob", secret=SHARED)]) != []
    assert [t.token_id for t in store.list_tokens()] == ["a1", "b1"]


def test_concurrent_adds_of_one_secret_store_it_once(store: Store) -> None:
    ids = iter(range(1000))
    lock = threading.Lock()

    def add() -> bool:
        with lock:
            n = next(ids)
        return store.add_token(token(f"c{n}", "carol", secret=SHARED))

    assert sorted(run_concurrently(8, add)) == [False] * 7 + [True]
    assert len(store.list_tokens("carol")) == 1


def test_remove_one_token_or_all_of_a_user(store: Store) -> None:
    for tid, user in (("a1", "alice"), ("a2", "alice"), ("a3", "alice"), ("b1", "bob")):
        store.add_token(token(tid, user))
    assert store.remove_tokens("alice", "a1") == 1
    assert store.remove_tokens("alice", "a1") == 0
    assert store.remove_tokens("alice", "b1") == 0  # not alice's token
    assert store.remove_tokens("alice") == 2
    assert [t.token_id for t in store.list_tokens()] == ["b1"]
    assert store.remove_tokens("nobody") == 0


def test_advance_step_only_moves_forward(store: Store) -> None:
    store.add_token(token())
    assert store.advance_step("t1", 100) is True
    assert store.advance_step("t1", 100) is False  # same code again: replay
    assert store.advance_step("t1", 99) is False  # older code after a newer one
    assert store.advance_step("t1", 101) is True
    assert store.list_tokens()[0].last_step == 101


def test_advance_step_respects_a_stored_last_step(store: Store) -> None:
    store.add_token(token(last_step=50))
    assert store.advance_step("t1", 50) is False
    assert store.advance_step("t1", 51) is True


def test_advance_step_records_the_drift_it_is_given_and_keeps_it_otherwise(store: Store) -> None:
    store.add_token(token())
    assert store.advance_step("t1", 10, drift=1) is True
    assert store.list_tokens("alice")[0].drift == 1
    assert store.advance_step("t1", 10, drift=-1) is False  # a replay changes nothing
    assert store.advance_step("t1", 11) is True  # no drift given: the last one stays
    assert store.list_tokens("alice")[0].drift == 1
    assert store.advance_step("t1", 12, drift=0) is True
    assert store.list_tokens("alice")[0].drift == 0


def test_advance_step_is_per_token(store: Store) -> None:
    store.add_token(token("t1"))
    store.add_token(token("t2"))
    assert store.advance_step("t1", 10) is True
    assert store.advance_step("t2", 10) is True


def test_advance_step_of_unknown_token_is_false(store: Store) -> None:
    assert store.advance_step("nope", 1) is False


def test_concurrent_advance_step_accepts_exactly_once(store: Store) -> None:
    """Protocol-security O-01(b): the same code in concurrent requests, 50 times."""
    store.add_token(token())
    for step in range(1000, 1050):
        results = run_concurrently(8, lambda step=step: store.advance_step("t1", step))
        assert results.count(True) == 1, f"step {step}: {results}"
    assert store.list_tokens()[0].last_step == 1049


# -- lockout -------------------------------------------------------------------------------


def test_unknown_user_has_default_lock_state(store: Store) -> None:
    assert store.lock_state("alice") == LockState("alice")
    assert not store.lock_state("alice").is_locked(NOW)


def test_failures_count_up_then_lock(store: Store) -> None:
    s1 = store.record_failure("alice", NOW, max_failures=3, lock_seconds=300)
    s2 = store.record_failure("alice", NOW + 1, max_failures=3, lock_seconds=300)
    assert (s1.failures, s1.locked_until, s1.last_failure_at) == (1, None, NOW)
    assert (s2.failures, s2.locked_until) == (2, None)
    s3 = store.record_failure("alice", NOW + 2, max_failures=3, lock_seconds=300)
    assert s3.failures == 3
    assert s3.locked_until == NOW + 2 + 300
    assert s3.is_locked(NOW + 2)
    assert store.lock_state("alice") == s3


def test_failure_while_locked_does_not_extend_the_lock(store: Store) -> None:
    for i in range(2):
        locked = store.record_failure("alice", NOW + i, max_failures=2, lock_seconds=300)
    assert locked.locked_until == NOW + 301
    again = store.record_failure("alice", NOW + 200, max_failures=2, lock_seconds=300)
    assert again == locked
    assert store.lock_state("alice") == locked


def test_lock_expires_at_locked_until(store: Store) -> None:
    locked = store.record_failure("alice", NOW, max_failures=1, lock_seconds=60)
    assert locked.is_locked(NOW + 59.999)
    assert not locked.is_locked(NOW + 60)


def test_failure_after_lock_expiry_starts_a_fresh_count(store: Store) -> None:
    store.record_failure("alice", NOW, max_failures=2, lock_seconds=60)
    store.record_failure("alice", NOW + 1, max_failures=2, lock_seconds=60)  # locked to +61
    after = store.record_failure("alice", NOW + 61, max_failures=2, lock_seconds=60)
    assert (after.failures, after.locked_until, after.last_failure_at) == (1, None, NOW + 61)
    relocked = store.record_failure("alice", NOW + 62, max_failures=2, lock_seconds=60)
    assert relocked.locked_until == NOW + 122


def test_failures_are_per_user(store: Store) -> None:
    store.record_failure("alice", NOW, max_failures=1, lock_seconds=60)
    assert store.lock_state("bob") == LockState("bob")
    assert store.record_failure("bob", NOW, max_failures=5, lock_seconds=60).failures == 1


def test_max_failures_below_one_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="max_failures"):
        store.record_failure("alice", NOW, max_failures=0, lock_seconds=60)


def test_success_resets_failures_and_lock(store: Store) -> None:
    store.record_failure("alice", NOW, max_failures=5, lock_seconds=60)
    store.record_failure("alice", NOW + 1, max_failures=5, lock_seconds=60)
    store.record_success("alice", NOW + 2)
    state = store.lock_state("alice")
    assert (state.failures, state.locked_until) == (0, None)
    assert (state.last_failure_at, state.last_success_at) == (NOW + 1, NOW + 2)
    # the count starts again from zero
    assert store.record_failure("alice", NOW + 3, max_failures=5, lock_seconds=60).failures == 1
    assert store.lock_state("alice").last_success_at == NOW + 2


def test_success_of_unknown_user_records_it(store: Store) -> None:
    store.record_success("alice", NOW)
    assert store.lock_state("alice") == LockState("alice", 0, None, None, NOW)


def test_unlock_clears_a_lock_and_says_whether_there_was_one(store: Store) -> None:
    assert store.unlock("alice") is False
    store.record_failure("alice", NOW, max_failures=1, lock_seconds=600)
    assert store.unlock("alice") is True
    state = store.lock_state("alice")
    assert (state.failures, state.locked_until, state.last_failure_at) == (0, None, NOW)
    assert not state.is_locked(NOW + 1)
    assert store.unlock("alice") is False


def test_unlock_counts_plain_failures_too(store: Store) -> None:
    store.record_failure("alice", NOW, max_failures=5, lock_seconds=600)
    assert store.unlock("alice") is True
    assert store.lock_state("alice").failures == 0


def test_concurrent_failures_are_each_counted_once(store: Store) -> None:
    def fail_five() -> None:
        for _ in range(5):
            store.record_failure("alice", NOW, max_failures=1000, lock_seconds=60)

    run_concurrently(8, fail_five)
    assert store.lock_state("alice").failures == 40


def test_concurrent_failures_lock_exactly_at_the_limit(store: Store) -> None:
    results = run_concurrently(
        8, lambda: store.record_failure("alice", NOW, max_failures=5, lock_seconds=60)
    )
    assert sorted(r.failures for r in results) == [1, 2, 3, 4, 5, 5, 5, 5]
    assert store.lock_state("alice").locked_until == NOW + 60


def test_known_users_lists_token_and_lock_users_once_sorted(store: Store) -> None:
    assert store.known_users() == []
    store.add_token(token("t1", "carol"))
    store.add_token(token("t2", "alice"))
    store.add_token(token("t3", "alice"))
    store.record_failure("bob", NOW, max_failures=5, lock_seconds=60)
    store.record_failure("alice", NOW, max_failures=5, lock_seconds=60)
    assert store.known_users() == ["alice", "bob", "carol"]


# -- challenges ----------------------------------------------------------------------------


def test_challenge_is_returned_once(store: Store) -> None:
    c = challenge()
    store.put_challenge(c)
    assert store.take_challenge(c.state_id) == c
    assert store.take_challenge(c.state_id) is None


def test_unknown_challenge_is_none(store: Store) -> None:
    assert store.take_challenge(b"\x00" * 16) is None


def test_challenges_are_keyed_by_state_bytes(store: Store) -> None:
    a = challenge(b"\x00" * 16, "alice")
    b = challenge(b"\x00" * 15 + b"\x01", "bob")
    store.put_challenge(a)
    store.put_challenge(b)
    assert store.take_challenge(b.state_id) == b
    assert store.take_challenge(a.state_id) == a


def test_duplicate_state_id_is_refused(store: Store) -> None:
    store.put_challenge(challenge(user="alice"))
    with pytest.raises(StoreError, match="already exists"):
        store.put_challenge(challenge(user="bob"))
    taken = store.take_challenge(b"s" * 16)
    assert taken is not None and taken.user == "alice"


def test_concurrent_takers_get_a_challenge_exactly_once(store: Store) -> None:
    store.put_challenge(challenge())
    results = run_concurrently(8, lambda: store.take_challenge(b"s" * 16))
    assert sum(r is not None for r in results) == 1


def test_purge_removes_only_expired_challenges(store: Store) -> None:
    store.put_challenge(challenge(b"a" * 16, expires_at=NOW + 10))
    store.put_challenge(challenge(b"b" * 16, expires_at=NOW + 20))
    store.put_challenge(challenge(b"c" * 16, expires_at=NOW + 30))
    assert store.purge_expired(NOW + 5) == 0
    assert store.purge_expired(NOW + 20) == 2  # expires_at == now counts as expired
    assert store.take_challenge(b"a" * 16) is None
    assert store.take_challenge(b"b" * 16) is None
    assert store.take_challenge(b"c" * 16) is not None
    assert store.purge_expired(NOW + 100) == 0


# -- metrics and housekeeping ----------------------------------------------------------------


def test_count_locked_counts_the_users_locked_at_that_time(store: Store) -> None:
    assert store.count_locked(NOW) == 0
    store.record_failure("alice", NOW, max_failures=1, lock_seconds=60)
    store.record_failure("bob", NOW, max_failures=1, lock_seconds=600)
    store.record_failure("carol", NOW, max_failures=5, lock_seconds=600)  # not locked
    store.add_token(token("d1", "dave"))
    assert store.count_locked(NOW) == 2
    assert store.count_locked(NOW + 60) == 1  # locked_until == now: no longer locked
    store.unlock("bob")
    assert store.count_locked(NOW + 60) == 0


def test_purge_deletes_users_rows_that_hold_nothing(store: Store) -> None:
    store.record_success("idle", NOW)  # a password-only login: a row, nothing in it
    store.record_failure("unlocked", NOW, max_failures=5, lock_seconds=60)
    store.unlock("unlocked")
    store.set_preferred("unpreferred", "totp")
    store.set_preferred("unpreferred", None)
    store.record_failure("failing", NOW, max_failures=5, lock_seconds=60)
    store.record_failure("locked", NOW, max_failures=1, lock_seconds=60)
    store.record_success("enrolled", NOW)
    store.add_token(token("e1", "enrolled"))
    store.set_preferred("preferring", "totp")
    store.set_notice("noticed", "your code was not delivered")
    store.set_status("disabled", "disabled", None, "left")
    store.set_status("enabled-with-reason", "enabled", None, "back from leave")
    store.note_grace_login("in-grace", NOW)
    keep = [
        "disabled",
        "enabled-with-reason",
        "enrolled",
        "failing",
        "in-grace",
        "locked",
        "noticed",
        "preferring",
    ]
    store.purge_expired(NOW + 3600)
    assert store.known_users() == keep
    assert store.lock_state("failing").failures == 1
    assert store.user_settings("noticed").notice == "your code was not delivered"
    assert store.count_locked(NOW) == 1


def test_purge_deletes_idle_users_rows_in_batches(store: Store) -> None:
    from radmfa.store.base import IDLE_USERS_BATCH

    for i in range(IDLE_USERS_BATCH + 3):
        store.record_success(f"u{i:04d}", NOW)
    store.purge_expired(NOW)
    assert len(store.known_users()) == 3
    store.purge_expired(NOW)
    assert store.known_users() == []


def _open_states(store: Store, ids: list[bytes]) -> list[bytes]:
    return [i for i in ids if store.take_challenge(i) is not None]


def test_a_user_keeps_at_most_max_open_challenges_the_oldest_go(store: Store) -> None:
    ids = [bytes([i]) * 16 for i in range(7)]
    for i, state in enumerate(ids[:6]):
        store.put_challenge(challenge(state, "alice", created_at=NOW + i), max_open=4)
    store.put_challenge(challenge(ids[6], "bob", created_at=NOW - 100), max_open=4)
    assert _open_states(store, ids) == [*ids[2:6], ids[6]]  # bob's old one is his own


def test_challenges_made_in_the_same_second_go_in_the_order_stored(store: Store) -> None:
    ids = [bytes([i]) * 16 for i in (9, 3, 7, 1)]  # state ids sort otherwise
    for state in ids:
        store.put_challenge(challenge(state, "alice"), max_open=2)
    assert _open_states(store, ids) == ids[2:]


def test_parallel_challenges_of_one_user_stay_within_the_cap(store: Store) -> None:
    states = iter(bytes([i]) * 16 for i in range(100, 116))
    lock = threading.Lock()

    def put() -> None:
        with lock:
            state = next(states)
        store.put_challenge(challenge(state, "alice"), max_open=3)

    run_concurrently(16, put)
    assert len(_open_states(store, [bytes([i]) * 16 for i in range(100, 116)])) == 3


def test_challenge_keeps_its_out_of_band_code_fields(store: Store) -> None:
    c = challenge(
        factor="email",
        token_id="t9",
        code_hash=b"\x01" * 32,
        phase="confirm",
        started_at=NOW - 30,
    )
    store.put_challenge(c)
    assert store.take_challenge(c.state_id) == c


def test_challenge_defaults_are_a_plain_code_prompt(store: Store) -> None:
    store.put_challenge(challenge())
    taken = store.take_challenge(b"s" * 16)
    assert taken is not None
    assert (taken.factor, taken.token_id, taken.code_hash, taken.phase, taken.started_at) == (
        None,
        None,
        None,
        "code",
        None,
    )


# -- replacing a user's tokens of one type --------------------------------------------------


def test_replace_tokens_swaps_one_type_of_one_user(store: Store) -> None:
    store.add_token(token("a-totp", "alice"))
    store.add_tokens([token(f"a-bk{i}", "alice", type="backup") for i in range(3)])
    store.add_token(token("b-bk0", "bob", type="backup"))
    removed = store.replace_tokens("alice", "backup", [token("a-new", "alice", type="backup")])
    assert removed == 3
    assert [t.token_id for t in store.list_tokens("alice")] == ["a-new", "a-totp"]
    assert [t.token_id for t in store.list_tokens("bob")] == ["b-bk0"]
    assert store.replace_tokens("alice", "backup", []) == 1
    assert [t.token_id for t in store.list_tokens("alice")] == ["a-totp"]


def test_replace_tokens_may_reuse_an_id_it_removes_but_not_another(store: Store) -> None:
    store.add_token(token("e1", "alice", type="emergency"))
    store.add_token(token("x1", "bob"))
    assert store.replace_tokens("alice", "emergency", [token("e1", "alice", type="emergency")])
    with pytest.raises(StoreError, match="already exists"):
        store.replace_tokens("alice", "emergency", [token("x1", "alice", type="emergency")])
    # all or nothing: the failed replacement removed nothing
    assert [t.token_id for t in store.list_tokens("alice")] == ["e1"]


def test_replaced_tokens_keep_their_secrets(store: Store) -> None:
    new = token("n1", "alice", type="email", secret=b'{"address": "a@example.org"}')
    store.replace_tokens("alice", "email", [new])
    assert store.list_tokens("alice") == [new]


def test_single_use_token_is_spent_exactly_once_under_concurrency(store: Store) -> None:
    """Protocol-security O-11: 20 parallel uses of one backup code, exactly one wins."""
    store.add_token(token("bk", "alice", type="backup"))
    results = run_concurrently(20, lambda: store.advance_step("bk", 1))
    assert results.count(True) == 1


# -- per-user settings ---------------------------------------------------------------------


def test_unknown_user_has_default_settings(store: Store) -> None:
    assert store.user_settings("alice") == UserSettings("alice")
    assert store.take_notice("alice") is None


def test_preferred_factor_is_set_and_cleared(store: Store) -> None:
    store.set_preferred("alice", "email")
    assert store.user_settings("alice").preferred == "email"
    assert store.user_settings("bob").preferred is None
    store.set_preferred("alice", None)
    assert store.user_settings("alice").preferred is None


def test_settings_do_not_disturb_the_lock_state(store: Store) -> None:
    store.record_failure("alice", NOW, max_failures=5, lock_seconds=60)
    store.set_preferred("alice", "sms")
    store.set_notice("alice", "hello")
    assert store.lock_state("alice").failures == 1
    store.record_success("alice", NOW + 1)
    assert store.user_settings("alice") == UserSettings("alice", "sms", "hello")
    assert store.lock_state("bob") == LockState("bob")


def test_notice_is_taken_once(store: Store) -> None:
    store.set_notice("alice", "The code could not be sent by email.")
    assert store.take_notice("alice") == "The code could not be sent by email."
    assert store.take_notice("alice") is None
    store.set_notice("alice", "again")
    store.set_notice("alice", None)
    assert store.take_notice("alice") is None


def test_concurrent_notice_takers_get_it_once(store: Store) -> None:
    store.set_notice("alice", "once")
    results = run_concurrently(8, lambda: store.take_notice("alice"))
    assert results.count("once") == 1


# -- send rate limits -----------------------------------------------------------------------


def test_reserve_send_enforces_the_cooldown(store: Store) -> None:
    assert store.reserve_send("alice", "email", NOW, 60, 5).granted
    refused = store.reserve_send("alice", "email", NOW + 10, 60, 5)
    assert (refused.granted, refused.limit, refused.retry_after) == (False, "cooldown", 50)
    assert store.reserve_send("alice", "email", NOW + 60, 60, 5).granted


def test_reserve_send_enforces_the_hourly_cap(store: Store) -> None:
    for i in range(3):
        assert store.reserve_send("alice", "sms", NOW + 100 * i, 60, 3).granted
    refused = store.reserve_send("alice", "sms", NOW + 1000, 60, 3)
    assert (refused.granted, refused.limit) == (False, "hourly_cap")
    assert refused.retry_after == pytest.approx(3600 - 1000)
    assert store.reserve_send("alice", "sms", NOW + 3600, 60, 3).granted


def test_reserve_send_counts_per_user_and_channel(store: Store) -> None:
    assert store.reserve_send("alice", "email", NOW, 60, 1).granted
    assert store.reserve_send("alice", "sms", NOW, 60, 1).granted
    assert store.reserve_send("bob", "email", NOW, 60, 1).granted
    assert not store.reserve_send("alice", "email", NOW + 120, 60, 1).granted


def test_concurrent_send_requests_are_granted_once(store: Store) -> None:
    results = run_concurrently(8, lambda: store.reserve_send("alice", "email", NOW, 60, 5))
    assert sum(r.granted for r in results) == 1


def test_reserve_send_enforces_a_total_cap_for_all_users_of_a_channel(store: Store) -> None:
    for i, user in enumerate(("alice", "bob", "carol")):
        assert store.reserve_send(user, "sms", NOW + 10 * i, 60, 5, total_per_hour=3).granted
    refused = store.reserve_send("dave", "sms", NOW + 100, 60, 5, total_per_hour=3)
    assert (refused.granted, refused.limit) == (False, "total_cap")
    assert refused.retry_after == pytest.approx(3600 - 100)
    assert not store.reserve_send("dave", "sms", NOW + 200, 60, 5, total_per_hour=3).granted
    assert store.reserve_send("dave", "email", NOW + 100, 60, 5, total_per_hour=3).granted
    # a refused send is not counted: alice's hour over, one send is free again
    assert store.reserve_send("dave", "sms", NOW + 3600, 60, 5, total_per_hour=3).granted
    assert not store.reserve_send("erin", "sms", NOW + 3601, 60, 5, total_per_hour=3).granted


def test_concurrent_sends_of_many_users_stay_within_the_total_cap(store: Store) -> None:
    users = iter(f"user{i}" for i in range(12))
    lock = threading.Lock()

    def send() -> object:
        with lock:
            user = next(users)
        return store.reserve_send(user, "email", NOW, 60, 5, total_per_hour=5)

    results = run_concurrently(12, send)
    assert sum(r.granted for r in results) == 5  # type: ignore[attr-defined]


def test_purge_drops_send_records_older_than_an_hour(store: Store) -> None:
    assert store.reserve_send("alice", "email", NOW, 0, 1).granted
    store.purge_expired(NOW + 3600)
    assert store.reserve_send("alice", "email", NOW + 3600, 0, 1).granted


# -- admin status and enrolment grace ------------------------------------------------------


def test_status_is_set_with_until_and_reason_and_returns_the_old_settings(store: Store) -> None:
    before = store.set_status("alice", "suspended", NOW + 3600, "lost phone")
    assert before == UserSettings("alice")
    settings = store.user_settings("alice")
    assert (settings.status, settings.status_until, settings.status_reason) == (
        "suspended",
        NOW + 3600,
        "lost phone",
    )
    assert settings.mfa_suspended(NOW) and not settings.mfa_suspended(NOW + 3600)
    before = store.set_status("alice", "disabled", None, "left the company")
    assert before.status == "suspended"
    assert store.user_settings("alice").disabled
    store.set_status("alice", "enabled", None, None)
    assert store.user_settings("alice") == UserSettings("alice")


def test_suspension_without_an_end_lasts(store: Store) -> None:
    store.set_status("alice", "suspended", None, None)
    assert store.user_settings("alice").mfa_suspended(NOW + 10**9)


def test_unknown_status_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="unknown user status"):
        store.set_status("alice", "frozen", None, None)


def test_status_keeps_the_other_settings(store: Store) -> None:
    store.set_preferred("alice", "sms")
    store.record_failure("alice", NOW, max_failures=5, lock_seconds=60)
    store.set_status("alice", "disabled", None, "x")
    assert store.user_settings("alice").preferred == "sms"
    assert store.lock_state("alice").failures == 1


def test_grace_logins_remember_the_first_and_count(store: Store) -> None:
    first = store.note_grace_login("alice", NOW)
    assert (first.first_seen_at, first.grace_logins) == (NOW, 1)
    second = store.note_grace_login("alice", NOW + 50)
    assert (second.first_seen_at, second.grace_logins) == (NOW, 2)
    assert store.user_settings("alice").grace_logins == 2
    assert store.user_settings("bob").first_seen_at is None


def test_concurrent_grace_logins_are_each_counted(store: Store) -> None:
    run_concurrently(8, lambda: store.note_grace_login("alice", NOW))
    assert store.user_settings("alice").grace_logins == 8


def test_reset_removes_every_token_and_device_and_restarts_the_grace(store: Store) -> None:
    store.add_tokens([token("a1"), token("a2", type="backup"), token("b1", "bob")])
    store.remember_device("alice", dev("10.0.0.1"), NOW, NOW + 100)
    store.remember_device("alice", dev("10.0.0.2"), NOW, NOW + 100)
    store.remember_device("bob", dev("10.0.0.1"), NOW, NOW + 100)
    store.set_preferred("alice", "backup")
    store.note_grace_login("alice", NOW)
    store.set_status("alice", "suspended", None, "lost phone")
    assert store.reset_user("alice") == (2, 2)
    assert [t.token_id for t in store.list_tokens()] == ["b1"]
    assert [d.user for d in store.list_devices(None, NOW)] == ["bob"]
    settings = store.user_settings("alice")
    assert (settings.preferred, settings.first_seen_at, settings.grace_logins) == (None, None, 0)
    assert settings.status == "suspended"  # the admin status is its own command
    assert store.reset_user("nobody") == (0, 0)


# -- trusted devices -----------------------------------------------------------------------


def test_remembered_device_is_trusted_until_it_expires(store: Store) -> None:
    store.remember_device("alice", dev("10.0.0.1"), NOW, NOW + 60)
    assert store.trusted_device("alice", dev("10.0.0.1"), NOW + 59) == TrustedDevice(
        "alice", "10.0.0.1", "vpn", "nas-1", NOW, NOW + 60
    )
    assert store.trusted_device("alice", dev("10.0.0.1"), NOW + 60) is None
    assert store.trusted_device("alice", dev("10.0.0.2"), NOW) is None
    assert store.trusted_device("bob", dev("10.0.0.1"), NOW) is None


def test_each_user_device_pair_has_its_own_timer(store: Store) -> None:
    store.remember_device("alice", dev("kiosk"), NOW, NOW + 60)
    store.remember_device("bob", dev("kiosk"), NOW + 30, NOW + 90)
    store.remember_device("alice", dev("kiosk"), NOW + 40, NOW + 100)  # restarts alice's timer only
    assert store.trusted_device("alice", dev("kiosk"), NOW + 95) is not None
    assert store.trusted_device("bob", dev("kiosk"), NOW + 89) is not None
    assert store.trusted_device("bob", dev("kiosk"), NOW + 90) is None


def test_devices_are_listed_unexpired_and_revoked_one_or_all(store: Store) -> None:
    store.remember_device("bob", dev("d1"), NOW, NOW + 60)
    store.remember_device("alice", dev("d2"), NOW, NOW + 60)
    store.remember_device("alice", dev("d1"), NOW, NOW + 60)
    store.remember_device("alice", dev("old"), NOW - 100, NOW - 1)
    assert [(d.user, d.device) for d in store.list_devices(None, NOW)] == [
        ("alice", "d1"),
        ("alice", "d2"),
        ("bob", "d1"),
    ]
    assert [d.device for d in store.list_devices("alice", NOW)] == ["d1", "d2"]
    assert store.revoke_devices("alice", "d1") == 1
    assert store.revoke_devices("alice", "d1") == 0
    assert store.revoke_devices("alice") == 2  # d2 and the expired one
    assert [d.user for d in store.list_devices(None, NOW)] == ["bob"]


def test_a_device_counts_only_through_the_client_and_nas_that_remembered_it(
    store: Store,
) -> None:
    store.remember_device("alice", dev("02:00:5e:10:00:01", "vpn", "nas-a"), NOW, NOW + 60)
    assert store.trusted_device("alice", dev("02:00:5e:10:00:01", "vpn", "nas-a"), NOW)
    for other in (
        dev("02:00:5e:10:00:01", "wifi", "nas-a"),  # same station, another client
        dev("02:00:5e:10:00:01", "vpn", "nas-b"),  # another NAS of the same client
        dev("02:00:5e:10:00:01", "vpn", ""),  # a request without NAS-Identifier
        dev("02:00:5e:10:00:01", "VPN", "nas-a"),
        dev("02:00:5e:10:00:01", "vpn", "NAS-A"),
    ):
        assert store.trusted_device("alice", other, NOW) is None, other
        assert store.login_state("alice", NOW, device=other).device is None, other
    state = store.login_state("alice", NOW, device=dev("02:00:5e:10:00:01", "vpn", "nas-a"))
    assert state.device is not None and (state.device.client, state.device.nas_id) == (
        "vpn",
        "nas-a",
    )


def test_one_station_through_two_clients_is_two_devices_with_their_own_timers(
    store: Store,
) -> None:
    store.remember_device("alice", dev("10.0.0.1", "vpn", ""), NOW, NOW + 60)
    store.remember_device("alice", dev("10.0.0.1", "wifi", "ap-1"), NOW + 30, NOW + 90)
    listed = store.list_devices("alice", NOW + 40)
    assert [(d.device, d.client, d.nas_id, d.expires_at) for d in listed] == [
        ("10.0.0.1", "vpn", "", NOW + 60),
        ("10.0.0.1", "wifi", "ap-1", NOW + 90),
    ]
    assert [d.ref for d in listed] == [dev("10.0.0.1", "vpn", ""), dev("10.0.0.1", "wifi", "ap-1")]
    assert store.trusted_device("alice", dev("10.0.0.1", "vpn", ""), NOW + 70) is None
    assert store.trusted_device("alice", dev("10.0.0.1", "wifi", "ap-1"), NOW + 70) is not None
    assert store.revoke_devices("alice", "10.0.0.1") == 2  # the station, through every client
    assert store.list_devices("alice", NOW) == []


def test_purge_forgets_expired_devices(store: Store) -> None:
    store.remember_device("alice", dev("d1"), NOW, NOW + 60)
    store.remember_device("alice", dev("d2"), NOW, NOW + 600)
    store.purge_expired(NOW + 60)
    assert store.revoke_devices("alice") == 1


# -- sliding-window failures ---------------------------------------------------------------


def test_failure_window_counts_since_a_time(store: Store) -> None:
    store.note_failures(["user:alice", "source:10.0.0.1"], NOW)
    store.note_failures(["user:alice"], NOW + 10)
    store.note_failures(["user:bob", "source:10.0.0.1"], NOW + 20)
    assert store.failure_window("user:alice", NOW) == FailureWindow(2, NOW + 10)
    assert store.failure_window("user:alice", NOW + 5) == FailureWindow(1, NOW + 10)
    assert store.failure_window("source:10.0.0.1", NOW) == FailureWindow(2, NOW + 20)
    assert store.failure_window("user:carol", NOW) == FailureWindow()
    store.clear_failures("user:alice")
    assert store.failure_window("user:alice", 0) == FailureWindow()
    assert store.failure_window("user:bob", 0).count == 1


def test_concurrent_failures_are_all_recorded(store: Store) -> None:
    run_concurrently(8, lambda: store.note_failures(["source:x"], NOW))
    assert store.failure_window("source:x", NOW).count == 8


def test_purge_drops_failure_records_older_than_asked(store: Store) -> None:
    store.note_failures(["user:alice"], NOW)
    store.note_failures(["user:alice"], NOW + 100)
    store.purge_expired(NOW + 200, failures_before=NOW + 50)
    assert store.failure_window("user:alice", 0) == FailureWindow(1, NOW + 100)
    store.purge_expired(NOW + 300)  # without failures_before they stay
    assert store.failure_window("user:alice", 0).count == 1


# -- the login state in one read ------------------------------------------------------------


def test_login_state_of_an_unknown_user_is_all_defaults(store: Store) -> None:
    state = store.login_state(
        "alice", NOW, user_since=0, source="source:x", source_since=0, device=dev("d1")
    )
    assert state == LoginState(
        LockState("alice"), UserSettings("alice"), FailureWindow(), FailureWindow(), None
    )


def test_login_state_reads_every_part_at_once(store: Store) -> None:
    store.record_failure("alice", NOW - 50, max_failures=5, lock_seconds=60)
    store.set_status("alice", "suspended", NOW + 10, "trip")
    store.set_preferred("alice", "totp")
    store.note_failures(["user:alice", "source:10.0.0.9"], NOW - 50)
    store.note_failures(["user:alice"], NOW - 500)  # before the window
    store.note_failures(["source:10.0.0.9"], NOW - 10)
    store.remember_device("alice", dev("d1"), NOW - 100, NOW + 100)
    state = store.login_state(
        "alice",
        NOW,
        user_since=NOW - 100,
        source="source:10.0.0.9",
        source_since=NOW - 100,
        device=dev("d1"),
    )
    assert state.lock == store.lock_state("alice")
    assert state.settings == store.user_settings("alice")
    assert state.user_window == FailureWindow(1, NOW - 50)
    assert state.source_window == FailureWindow(2, NOW - 10)
    assert state.device == TrustedDevice("alice", "d1", "vpn", "nas-1", NOW - 100, NOW + 100)


def test_login_state_skips_what_is_not_asked_for(store: Store) -> None:
    store.note_failures(["user:alice", "source:s"], NOW)
    store.remember_device("alice", dev("d1"), NOW, NOW + 100)
    state = store.login_state("alice", NOW)
    assert (state.user_window, state.source_window, state.device) == (
        FailureWindow(),
        FailureWindow(),
        None,
    )
    assert store.login_state("alice", NOW + 100, device=dev("d1")).device is None  # expired
    assert store.login_state("bob", NOW, device=dev("d1")).device is None  # another user's


# -- audit trail ---------------------------------------------------------------------------


def auth_event(at: float, user: str = "alice", outcome: str = "accept", **kw: object) -> AuditEvent:
    fields: dict[str, object] = {"reason": "ok", "client": "vpn", "src": "192.0.2.1"}
    fields.update(kw)
    return AuditEvent(at=at, kind=AUDIT_AUTH, user=user, outcome=outcome, **fields)  # type: ignore[arg-type]


def admin_event(at: float, user: str = "alice", **kw: object) -> AuditEvent:
    fields: dict[str, object] = {"actor": "root", "action": "disable", "reason": "Left the team"}
    fields.update(kw)
    return AuditEvent(at=at, kind=AUDIT_ADMIN, user=user, **fields)  # type: ignore[arg-type]


def test_audit_rows_come_back_with_every_field_oldest_first(store: Store) -> None:
    full = auth_event(
        NOW + 1,
        nas_id="vpn-1",
        station="10.1.2.3",
        method="append",
        factor="totp",
        trusted_device=True,
        rule="staff",
        latency_ms=12.5,
    )
    change = admin_event(NOW, before="enabled", after="disabled")
    store.append_audit([full, change])
    rows = store.query_audit(AuditQuery())
    assert [dataclasses.replace(r, event_id=None) for r in rows] == [change, full]
    assert rows[0].event_id is not None and rows[1].event_id is not None
    assert rows[0].event_id != rows[1].event_id


def test_audit_filters(store: Store) -> None:
    store.append_audit(
        [
            auth_event(NOW, "alice"),
            auth_event(NOW + 1, "bob", "reject", reason="bad_password"),
            auth_event(NOW + 2, "alice", "reject", reason="bad_otp"),
            auth_event(NOW + 3, "alice", "challenge", reason="challenge_issued"),
            admin_event(NOW + 4, "alice", reason="Lost phone, ticket 42"),
        ]
    )

    def times(**kw: object) -> list[float]:
        return [e.at - NOW for e in store.query_audit(AuditQuery(**kw))]  # type: ignore[arg-type]

    assert times(user="alice") == [0, 2, 3, 4]
    assert times(since=NOW + 1, until=NOW + 3) == [1, 2]
    assert times(outcome="reject") == [1, 2]
    assert times(reason="bad_otp") == [2]
    assert times(reason="bad") == []  # reason codes match exactly
    assert times(reason="LOST PHONE") == [4]  # an admin's reason by a word in it
    assert times(kind=AUDIT_ADMIN) == [4]
    assert times(limit=2) == [3, 4]
    assert times(user="alice", outcome="reject", limit=5) == [2]


def test_prune_audit_deletes_old_rows_in_batches(store: Store) -> None:
    store.append_audit([auth_event(NOW + i) for i in range(10)])
    assert store.prune_audit(NOW + 7, limit=3) == 3
    assert [e.at - NOW for e in store.query_audit(AuditQuery())][:2] == [3, 4]
    assert store.prune_audit(NOW + 7, limit=3) == 3
    assert store.prune_audit(NOW + 7, limit=3) == 1
    assert store.prune_audit(NOW + 7, limit=3) == 0
    assert len(store.query_audit(AuditQuery())) == 3


def test_challenge_keeps_the_rule(store: Store) -> None:
    store.put_challenge(challenge(rule="contractors"))
    taken = store.take_challenge(b"s" * 16)
    assert taken is not None and taken.rule == "contractors"


# -- lifecycle -----------------------------------------------------------------------------


def test_closed_store_refuses_calls(store: Store) -> None:
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.list_tokens()
    store.close()  # idempotent


# -- attempts: "may this user try now" and "count this try" in one step --------------------

RULE = LockoutRule(max_failures=3, lock_seconds=300, max_total=10)


def allow_up_to(limit: int) -> Callable[[LoginState], object | None]:
    """A judge that lets an attempt through while fewer than ``limit`` are pending or failed."""

    def judge(state: LoginState) -> object | None:
        if state.lock.is_locked(NOW) or state.lock.failures + state.pending_user >= limit:
            return "busy"
        return None

    return judge


def test_begin_attempt_reserves_and_the_reservation_counts_as_pending(store: Store) -> None:
    first = store.begin_attempt(b"a1", "alice", NOW, allow_up_to(5))
    assert first.reserved and first.state is not None and first.state.pending_user == 0
    second = store.begin_attempt(b"a2", "alice", NOW, allow_up_to(5), source="source:s1")
    assert second.reserved and second.state is not None and second.state.pending_user == 1
    third = store.begin_attempt(b"a3", "bob", NOW, allow_up_to(5), source="source:s1")
    assert third.state is not None
    assert (third.state.pending_user, third.state.pending_source) == (0, 1)


def test_begin_attempt_refused_by_the_judge_reserves_nothing(store: Store) -> None:
    refused = store.begin_attempt(b"a1", "alice", NOW, lambda state: "no")
    assert refused.refusal == "no" and not refused.reserved
    again = store.begin_attempt(b"a2", "alice", NOW, allow_up_to(5))
    assert again.state is not None and again.state.pending_user == 0
    # a refused attempt id is not remembered: it may be tried again
    assert store.begin_attempt(b"a1", "alice", NOW, allow_up_to(5)).reserved


def test_a_reserved_attempt_id_is_a_duplicate_in_flight_until_it_ends(store: Store) -> None:
    assert store.begin_attempt(b"a1", "alice", NOW, allow_up_to(5)).reserved
    assert store.begin_attempt(b"a1", "alice", NOW + 1, allow_up_to(5)).duplicate == (
        DUPLICATE_IN_FLIGHT
    )
    store.finish_attempt(b"a1", "alice", NOW + 2, ATTEMPT_SUCCEEDED)
    assert store.begin_attempt(b"a1", "alice", NOW + 3, allow_up_to(5)).reserved  # forgotten
    later = NOW + 3 + ATTEMPT_LEASE + 1  # a reservation that never ended is no duplicate
    assert store.begin_attempt(b"a1", "alice", later, allow_up_to(5)).reserved


def test_a_failed_attempt_id_is_a_failed_duplicate_for_a_while(store: Store) -> None:
    store.begin_attempt(b"a1", "alice", NOW, allow_up_to(5))
    store.finish_attempt(b"a1", "alice", NOW + 1, ATTEMPT_FAILED, lockout=RULE)
    again = store.begin_attempt(b"a1", "alice", NOW + 2, allow_up_to(5))
    assert again.duplicate == DUPLICATE_FAILED and not again.reserved
    assert store.lock_state("alice").failures == 1
    other = store.begin_attempt(b"a2", "alice", NOW + 2, allow_up_to(5)).state
    assert other is not None and other.pending_user == 0  # a failed one is not pending
    after = NOW + 1 + FAILED_ATTEMPT_MEMORY + 1
    assert store.begin_attempt(b"a1", "alice", after, allow_up_to(5)).reserved


def test_neutral_and_successful_attempts_leave_nothing_behind(store: Store) -> None:
    for i in range(50):
        store.begin_attempt(bytes([i]), "alice", NOW, allow_up_to(100))
        store.finish_attempt(
            bytes([i]), "alice", NOW, ATTEMPT_SUCCEEDED if i % 2 else ATTEMPT_NEUTRAL
        )
    state = store.begin_attempt(b"x", "alice", NOW, allow_up_to(100)).state
    assert state is not None and state.pending_user == 0
    assert store.known_users() == []  # a success without failures writes no users row
    assert all(
        store.begin_attempt(bytes([i]), "alice", NOW, allow_up_to(100)).reserved for i in range(3)
    )


def test_a_reservation_that_never_finishes_stops_counting_after_its_lease(store: Store) -> None:
    store.begin_attempt(b"a1", "alice", NOW, allow_up_to(5))
    during = store.begin_attempt(b"a2", "alice", NOW + ATTEMPT_LEASE - 1, allow_up_to(5))
    assert during.state is not None and during.state.pending_user == 1
    after = store.begin_attempt(b"a3", "alice", NOW + ATTEMPT_LEASE + 1, allow_up_to(5))
    assert after.state is not None and after.state.pending_user == 1  # a1 gone, a2 left
    assert store.purge_expired(NOW + 3 * ATTEMPT_LEASE) == 0
    assert store.begin_attempt(b"a1", "alice", NOW + 3 * ATTEMPT_LEASE, allow_up_to(5)).reserved


def test_finish_attempt_failed_counts_and_ends_the_reservation(store: Store) -> None:
    store.begin_attempt(b"a1", "alice", NOW, allow_up_to(5), source="source:s1")
    lock = store.finish_attempt(
        b"a1",
        "alice",
        NOW + 1,
        ATTEMPT_FAILED,
        lockout=RULE,
        failure_keys=["user:alice", "source:s1"],
    )
    assert lock is not None and (lock.failures, lock.total_failures) == (1, 1)
    state = store.begin_attempt(
        b"a2",
        "alice",
        NOW + 2,
        allow_up_to(5),
        user_since=NOW - 60,
        source="source:s1",
        source_since=NOW - 60,
    ).state
    assert state is not None
    assert (state.pending_user, state.pending_source) == (0, 0)
    assert state.user_window.count == 1 and state.source_window.count == 1
    assert state.lock.failures == 1


def test_finish_attempt_succeeded_clears_the_counts(store: Store) -> None:
    for i in range(2):
        store.begin_attempt(bytes([i]), "alice", NOW, allow_up_to(5))
        store.finish_attempt(
            bytes([i]), "alice", NOW, ATTEMPT_FAILED, lockout=RULE, failure_keys=["user:alice"]
        )
    store.begin_attempt(b"ok", "alice", NOW + 1, allow_up_to(5))
    assert (
        store.finish_attempt(b"ok", "alice", NOW + 1, ATTEMPT_SUCCEEDED, clear_keys=["user:alice"])
        is None
    )
    lock = store.lock_state("alice")
    assert (lock.failures, lock.total_failures, lock.locked_until) == (0, 0, None)
    assert lock.last_success_at == NOW + 1
    assert store.failure_window("user:alice", NOW - 60).count == 0


def test_finish_attempt_neutral_counts_nothing(store: Store) -> None:
    store.begin_attempt(b"a1", "alice", NOW, allow_up_to(5))
    assert store.finish_attempt(b"a1", "alice", NOW, ATTEMPT_NEUTRAL) is None
    assert store.lock_state("alice") == LockState("alice")
    with pytest.raises(ValueError):
        store.finish_attempt(b"a1", "alice", NOW, ATTEMPT_FAILED)  # no lockout rule
    with pytest.raises(ValueError):
        store.finish_attempt(b"a1", "alice", NOW, "maybe")


def test_concurrent_attempts_never_outrun_the_judge(store: Store) -> None:
    """Many threads at once: only as many reservations as the judge allows, never more."""
    ids = iter(range(10_000))
    lock = threading.Lock()

    def attempt() -> bool:
        with lock:
            attempt_id = next(ids).to_bytes(4, "big")
        return store.begin_attempt(attempt_id, "alice", NOW, allow_up_to(5)).reserved

    results = run_concurrently(32, attempt)
    assert sum(results) == 5


def test_the_failure_total_survives_lock_expiry_and_locks_for_good(store: Store) -> None:
    rule = LockoutRule(max_failures=2, lock_seconds=60, max_total=5)
    now = NOW
    states = []
    for _ in range(5):
        states.append(store.record_failure("alice", now, 2, 60, 5))
        now += 61  # past any lock
    assert [s.total_failures for s in states] == [1, 2, 3, 4, 5]
    assert [s.failures for s in states] == [1, 2, 1, 2, 1]
    final = store.lock_state("alice")
    assert final.locked_for_good and final.is_locked(now + 10 * 365 * 86400)
    assert next_failure_state(final, now + 1000, rule) is final  # never extended or reset
    assert store.unlock("alice")
    after = store.lock_state("alice")
    assert (after.failures, after.total_failures, after.is_locked(now)) == (0, 0, False)


def test_a_success_resets_the_failure_total(store: Store) -> None:
    store.record_failure("alice", NOW, 2, 60, 5)
    store.record_failure("alice", NOW + 1, 2, 60, 5)  # locked until +61
    store.record_success("alice", NOW + 100)
    assert store.lock_state("alice").total_failures == 0


def test_purge_forgets_failures_of_names_that_never_logged_in_after_a_week(store: Store) -> None:
    from radmfa.store.base import STALE_FAILURES

    store.record_failure("sprayed", NOW, max_failures=5, lock_seconds=60)
    store.record_failure("locked-for-good", NOW, 1, 60, max_total=1)
    store.record_failure("known", NOW - 10, max_failures=5, lock_seconds=60)
    store.record_success("known", NOW - 5)
    store.record_failure("known", NOW, max_failures=5, lock_seconds=60)
    store.record_failure("enrolled", NOW, max_failures=5, lock_seconds=60)
    store.add_token(token("e1", "enrolled"))
    store.record_failure("recent", NOW + STALE_FAILURES - 10, max_failures=5, lock_seconds=60)
    store.purge_expired(NOW + STALE_FAILURES - 1)
    assert "sprayed" in store.known_users()  # not stale yet
    store.purge_expired(NOW + STALE_FAILURES + 1)
    assert store.known_users() == ["enrolled", "known", "locked-for-good", "recent"]


def test_a_reservation_lives_as_long_as_asked(store: Store) -> None:
    store.begin_attempt(b"a1", "alice", NOW, allow_up_to(5), lease=600)
    state = store.begin_attempt(b"a2", "alice", NOW + 599, allow_up_to(5)).state
    assert state is not None and state.pending_user == 1
    state = store.begin_attempt(b"a3", "alice", NOW + 601, allow_up_to(5)).state
    assert state is not None and state.pending_user == 1  # a1 lapsed, a2 pending


def test_end_attempts_ends_a_batch_in_one_call(store: Store) -> None:
    from radmfa.store.base import AttemptEnd

    store.record_failure("alice", NOW - 5, max_failures=5, lock_seconds=60)
    store.note_failures(["user:alice"], NOW - 5)
    for i, user in enumerate(("alice", "bob", "carol")):
        store.begin_attempt(bytes([i]), user, NOW, allow_up_to(5))
    store.end_attempts(
        [
            AttemptEnd(bytes([0]), "alice", succeeded=True, clear_keys=("user:alice",)),
            AttemptEnd(bytes([1]), "bob"),
        ],
        NOW + 1,
    )
    lock = store.lock_state("alice")
    assert (lock.failures, lock.last_success_at) == (0, NOW + 1)
    assert store.failure_window("user:alice", NOW - 60).count == 0
    for i, user in enumerate(("alice", "bob", "carol")):
        state = store.begin_attempt(b"x" + bytes([i]), user, NOW + 2, allow_up_to(5)).state
        assert state is not None and state.pending_user == (1 if user == "carol" else 0)
    assert store.known_users() == ["alice"]  # bob's release wrote nothing
    store.end_attempts([], NOW)  # nothing to do


def test_a_success_ended_late_keeps_what_was_counted_after_it(store: Store) -> None:
    """Ends reach the store in batches, after the success was decided (AttemptEnd.at): a
    failure counted in between stays, with its lock and its window entry; what came before
    the success goes."""
    from radmfa.store.base import AttemptEnd

    store.record_failure("alice", NOW - 5, max_failures=2, lock_seconds=60)
    store.note_failures(["user:alice"], NOW - 5)
    store.begin_attempt(b"a0", "alice", NOW, allow_up_to(5))
    store.record_failure("alice", NOW + 2, max_failures=2, lock_seconds=60)  # after the success
    store.note_failures(["user:alice"], NOW + 2)
    late = AttemptEnd(b"a0", "alice", succeeded=True, clear_keys=("user:alice",), at=NOW + 1)
    store.end_attempts([late], NOW + 3)
    lock = store.lock_state("alice")
    assert lock.failures == 2 and lock.is_locked(NOW + 3)
    window = store.failure_window("user:alice", NOW - 60)
    assert (window.count, window.last_at) == (1, NOW + 2)  # NOW - 5 went, NOW + 2 stays
    # A success decided after the last failure clears everything, as before.
    store.begin_attempt(b"a1", "alice", NOW + 70, allow_up_to(5))
    later = AttemptEnd(b"a1", "alice", succeeded=True, clear_keys=("user:alice",), at=NOW + 70)
    store.end_attempts([later], NOW + 71)
    assert store.lock_state("alice").failures == 0
    assert store.failure_window("user:alice", NOW - 60).count == 0


def test_begin_attempt_ends_the_batched_ends_first_in_its_transaction(store: Store) -> None:
    from radmfa.store.base import AttemptEnd

    store.record_failure("alice", NOW - 5, max_failures=5, lock_seconds=60)
    store.note_failures(["user:alice"], NOW - 5)
    store.begin_attempt(b"a0", "alice", NOW, allow_up_to(5))
    store.begin_attempt(b"b0", "bob", NOW, allow_up_to(5))
    ends = [
        AttemptEnd(b"b0", "bob"),
        AttemptEnd(b"a0", "alice", succeeded=True, clear_keys=("user:alice",)),
    ]
    start = store.begin_attempt(
        b"a1", "alice", NOW + 1, allow_up_to(5), user_since=NOW - 60, ends=ends
    )
    # The judgement already saw the ends: nothing pending, the success cleared the counts.
    assert start.reserved and start.state is not None
    assert (start.state.pending_user, start.state.lock.failures) == (0, 0)
    assert start.state.user_window.count == 0
    state = store.begin_attempt(b"b1", "bob", NOW + 2, allow_up_to(5)).state
    assert state is not None and state.pending_user == 0


def test_begin_attempt_ends_the_batch_even_when_it_reserves_nothing(store: Store) -> None:
    from radmfa.store.base import AttemptEnd

    store.begin_attempt(b"a0", "alice", NOW, allow_up_to(5))
    store.begin_attempt(b"b0", "bob", NOW, allow_up_to(5))
    duplicate = store.begin_attempt(
        b"a0", "alice", NOW + 1, allow_up_to(5), ends=[AttemptEnd(b"b0", "bob")]
    )
    assert duplicate.duplicate == DUPLICATE_IN_FLIGHT
    refused = store.begin_attempt(
        b"c0", "carol", NOW + 1, lambda state: "no", ends=[AttemptEnd(b"a0", "alice")]
    )
    assert refused.refusal == "no" and refused.tokens is None
    for user in ("alice", "bob"):
        state = store.begin_attempt(b"x-" + user.encode(), user, NOW + 2, allow_up_to(5)).state
        assert state is not None and state.pending_user == 0


def test_begin_attempt_reads_the_tokens_of_a_reserved_attempt_when_asked(store: Store) -> None:
    store.add_token(token("t2", created_at=NOW + 1))
    store.add_token(token("t1"))
    store.add_token(token("t3", user="bob"))
    start = store.begin_attempt(b"a1", "alice", NOW, allow_up_to(5), with_tokens=True)
    assert start.reserved and start.tokens == store.list_tokens("alice")
    assert [t.token_id for t in start.tokens] == ["t1", "t2"]
    assert start.tokens[0].secret == token("t1").secret  # opened, as list_tokens gives them
    assert store.begin_attempt(b"a2", "alice", NOW, allow_up_to(5)).tokens is None
    nobody = store.begin_attempt(b"a3", "nobody", NOW, allow_up_to(5), with_tokens=True)
    assert nobody.tokens == []


# -- changing a user's tokens under a rule ---------------------------------------------------


def no_tokens_yet(tokens: list[TokenRecord], doomed: list[TokenRecord]) -> object | None:
    return "has_factor" if tokens else None


def another_remains(tokens: list[TokenRecord], doomed: list[TokenRecord]) -> object | None:
    if not doomed:
        return "gone"
    return None if len(tokens) > len(doomed) else "last"


def test_change_tokens_adds_and_removes_in_one_step(store: Store) -> None:
    store.add_tokens([token("a1"), token("a2", type="email"), token("b1", "bob")])
    done = store.change_tokens(
        TokenChange("alice", add=(token("a3"),), remove_ids=("a1",), remove_types=("email",)),
        lambda tokens, doomed: None,
    )
    assert done.done and sorted(t.token_id for t in done.removed) == ["a1", "a2"]
    assert [t.token_id for t in store.list_tokens()] == ["a3", "b1"]


def test_a_refused_change_writes_nothing(store: Store) -> None:
    store.add_token(token("a1"))
    seen: list[object] = []

    def refuse(tokens: list[TokenRecord], doomed: list[TokenRecord]) -> object | None:
        seen.append(([t.token_id for t in tokens], [t.token_id for t in doomed]))
        return "no"

    result = store.change_tokens(
        TokenChange("alice", add=(token("a2"),), remove_ids=("a1",)), refuse
    )
    assert result.refusal == "no" and not result.done and result.removed == ()
    assert seen == [(["a1"], ["a1"])]
    assert [t.token_id for t in store.list_tokens()] == ["a1"]


def test_a_change_adding_a_secret_the_user_keeps_is_refused(store: Store) -> None:
    store.add_token(token("a1", secret=SHARED))
    result = store.change_tokens(
        TokenChange("alice", add=(token("a2", secret=SHARED),)), lambda t, d: None
    )
    assert result.refusal == KNOWN_SECRET
    # ... unless the change removes the token that holds it (a replacement).
    result = store.change_tokens(
        TokenChange("alice", add=(token("a2", secret=SHARED),), remove_ids=("a1",)),
        lambda t, d: None,
    )
    assert result.done and [t.token_id for t in store.list_tokens()] == ["a2"]


def test_concurrent_first_enrolments_add_one_factor(store: Store) -> None:
    """Two tabs of a password-only session confirming two apps at once: "add this factor
    only while the user has none" lets one of them in."""
    ids = iter(range(1000))
    lock = threading.Lock()

    def enroll() -> bool:
        with lock:
            n = next(ids)
        change = TokenChange("carol", add=(token(f"c{n}", "carol", secret=bytes([n]) * 20),))
        return store.change_tokens(change, no_tokens_yet).done

    assert sorted(run_concurrently(8, enroll)) == [False] * 7 + [True]
    assert len(store.list_tokens("carol")) == 1


def test_concurrent_removals_of_two_factors_keep_one(store: Store) -> None:
    """Two tabs each removing one of the user's two factors: "only if another remains"
    removes one of them."""
    lock = threading.Lock()

    def remover(targets: Iterator[str]) -> Callable[[], bool]:
        def remove() -> bool:
            with lock:
                target = next(targets)
            change = TokenChange("alice", remove_ids=(target,))
            return store.change_tokens(change, another_remains).done

        return remove

    for _round in range(5):
        store.remove_tokens("alice")
        store.add_tokens([token("a1", secret=b"1" * 20), token("a2", secret=b"2" * 20)])
        assert sorted(run_concurrently(2, remover(iter(["a1", "a2"])))) == [False, True]
        assert len(store.list_tokens("alice")) == 1


def link(secret: bytes = b"L" * 32, user: str = "alice", **kw: object) -> EnrolLink:
    fields: dict[str, object] = {
        "created_at": NOW,
        "expires_at": NOW + 7 * 86400,
        "created_by": "root",
    }
    fields.update(kw)
    return EnrolLink(link=secret, user=user, **fields)  # type: ignore[arg-type]


def test_enrol_links_are_stored_and_read_back(store: Store) -> None:
    store.add_enrol_link(link())
    assert store.enrol_link(b"L" * 32) == link()
    assert store.enrol_link(b"M" * 32) is None
    with pytest.raises(StoreError, match="already exists"):
        store.add_enrol_link(link(user="bob"))


def test_a_link_is_spent_once_with_the_enrolment(store: Store) -> None:
    store.add_enrol_link(link())
    first = TokenChange("alice", add=(token("a1"),), link=b"L" * 32, now=NOW + 60)
    assert store.change_tokens(first, no_tokens_yet).done
    assert store.enrol_link(b"L" * 32) == link(used_at=NOW + 60)
    store.remove_tokens("alice")
    again = TokenChange("alice", add=(token("a2"),), link=b"L" * 32, now=NOW + 61)
    assert store.change_tokens(again, no_tokens_yet).refusal == LINK_GONE
    assert store.list_tokens("alice") == []


def test_a_link_works_for_its_user_only_and_until_it_expires(store: Store) -> None:
    store.add_enrol_link(link())
    bob = TokenChange("bob", add=(token("b1", "bob"),), link=b"L" * 32, now=NOW)
    assert store.change_tokens(bob, no_tokens_yet).refusal == LINK_GONE
    late = TokenChange("alice", add=(token("a1"),), link=b"L" * 32, now=NOW + 7 * 86400)
    assert store.change_tokens(late, no_tokens_yet).refusal == LINK_GONE
    unknown = TokenChange("alice", add=(token("a1"),), link=b"X" * 32, now=NOW)
    assert store.change_tokens(unknown, no_tokens_yet).refusal == LINK_GONE
    assert store.list_tokens() == [] and store.enrol_link(b"L" * 32) == link()


def test_a_refused_enrolment_does_not_spend_the_link(store: Store) -> None:
    store.add_enrol_link(link())
    store.add_token(token("a0"))
    change = TokenChange("alice", add=(token("a1"),), link=b"L" * 32, now=NOW)
    assert store.change_tokens(change, no_tokens_yet).refusal == "has_factor"
    assert store.enrol_link(b"L" * 32) == link()


def test_two_tabs_with_one_link_enroll_once(store: Store) -> None:
    store.add_enrol_link(link())
    ids = iter(range(1000))
    lock = threading.Lock()

    def enroll() -> object:
        with lock:
            n = next(ids)
        change = TokenChange(
            "alice", add=(token(f"a{n}", secret=bytes([n]) * 20),), link=b"L" * 32, now=NOW
        )
        return store.change_tokens(change, lambda t, d: None).refusal

    assert sorted(map(str, run_concurrently(6, enroll))) == sorted([LINK_GONE] * 5 + ["None"])
    assert len(store.list_tokens("alice")) == 1


def test_purge_drops_expired_links(store: Store) -> None:
    store.add_enrol_link(link(b"A" * 32, expires_at=NOW + 10))
    store.add_enrol_link(link(b"B" * 32, expires_at=NOW + 100))
    store.purge_expired(NOW + 10)
    assert store.enrol_link(b"A" * 32) is None
    assert store.enrol_link(b"B" * 32) is not None


# -- portal sessions -------------------------------------------------------------------------


def portal_session(key: bytes = b"k" * 32, user: str = "alice", **kw: object) -> PortalSession:
    fields: dict[str, object] = {
        "name": user,
        "stage": "full",
        "csrf": "form-token",
        "created_at": NOW,
        "last_seen": NOW,
        "idle": 600.0,
        "ends_at": NOW + 3600,
    }
    fields.update(kw)
    return PortalSession(key=key, user=user, **fields)  # type: ignore[arg-type]


def pending(token_id: str = "p1", replacing: str | None = None) -> PendingEnrolment:
    return PendingEnrolment(
        token(token_id, description="added in the portal", created_at=NOW + 0.5), replacing
    )


def test_a_portal_session_comes_back_with_every_field(store: Store) -> None:
    full = portal_session(
        grace_ends_at=NOW + 86400,
        helpdesk=True,
        link=b"L" * 32,
        notice="Saved.",
        sent='{"factor": "email"}',
        pending=pending(replacing="old"),
        proven_at=NOW - 2.5,
    )
    store.put_portal_session(full)
    assert store.touch_portal_session(full.key, NOW + 5) == dataclasses.replace(
        full, last_seen=NOW + 5
    )
    with pytest.raises(StoreError, match="already exists"):
        store.put_portal_session(portal_session(user="bob"))


def test_a_portal_session_ends_when_idle_or_too_old(store: Store) -> None:
    store.put_portal_session(portal_session())
    assert store.touch_portal_session(b"k" * 32, NOW + 599) is not None
    assert store.touch_portal_session(b"k" * 32, NOW + 599 + 600) is None  # idle
    store.put_portal_session(portal_session(b"j" * 32))
    for minute in range(1, 60):
        assert store.touch_portal_session(b"j" * 32, NOW + 60 * minute) is not None
    assert store.touch_portal_session(b"j" * 32, NOW + 3600) is None  # session_max
    assert store.touch_portal_session(b"x" * 32, NOW) is None


def test_purge_drops_expired_portal_sessions(store: Store) -> None:
    store.put_portal_session(portal_session(b"a" * 32))
    store.put_portal_session(portal_session(b"b" * 32, last_seen=NOW + 500))
    store.purge_expired(NOW + 600)
    assert store.delete_portal_session(b"a" * 32) is False
    assert store.delete_portal_session(b"b" * 32) is True


def test_a_reset_ends_every_portal_session_of_the_user(store: Store) -> None:
    store.put_portal_session(portal_session(b"a" * 32))
    store.put_portal_session(portal_session(b"b" * 32, stage="code"))
    store.put_portal_session(portal_session(b"c" * 32, user="bob"))
    store.reset_user("alice")
    assert store.touch_portal_session(b"a" * 32, NOW) is None
    assert store.touch_portal_session(b"b" * 32, NOW) is None
    assert store.touch_portal_session(b"c" * 32, NOW) is not None


def test_a_portal_session_is_ended_once(store: Store) -> None:
    store.put_portal_session(portal_session())
    assert sorted(run_concurrently(4, lambda: store.delete_portal_session(b"k" * 32))) == [
        False,
        False,
        False,
        True,
    ]
    assert store.touch_portal_session(b"k" * 32, NOW) is None


def test_portal_fields_change_one_at_a_time(store: Store) -> None:
    """Two requests of one browser, one setting a notice and one offering a QR code, both
    stick: nothing writes the whole record back."""
    store.put_portal_session(portal_session())
    key = b"k" * 32
    changes = iter(
        [
            lambda: store.set_portal_notice(key, "Saved."),
            lambda: store.offer_portal_pending(key, pending()),
            lambda: store.set_portal_sent(key, "sent"),
        ]
    )
    lock = threading.Lock()

    def change() -> object:
        with lock:
            work = next(changes)
        return work()

    assert run_concurrently(3, change).count(None) == 0
    found = store.touch_portal_session(key, NOW)
    assert found is not None
    assert (found.notice, found.pending, found.sent) == ("Saved.", pending(), "sent")
    assert store.set_portal_notice(key, None) is True
    found = store.touch_portal_session(key, NOW)
    assert found is not None and found.notice is None and found.pending == pending()
    assert store.set_portal_notice(b"x" * 32, "nobody") is False


def test_an_offered_enrolment_stays_unless_replaced(store: Store) -> None:
    store.put_portal_session(portal_session())
    key = b"k" * 32
    assert store.offer_portal_pending(key, pending("p1"), only_if_empty=True) == pending("p1")
    # A second tab asking for a QR code is shown the first one.
    assert store.offer_portal_pending(key, pending("p2"), only_if_empty=True) == pending("p1")
    assert store.offer_portal_pending(key, pending("p3", "old")) == pending("p3", "old")
    assert store.offer_portal_pending(key, None) is None
    assert store.take_portal_pending(key) is None
    assert store.offer_portal_pending(b"x" * 32, pending()) is None


def test_concurrent_confirmations_take_the_pending_enrolment_once(store: Store) -> None:
    store.put_portal_session(portal_session())
    key = b"k" * 32
    for _round in range(5):
        store.offer_portal_pending(key, pending())
        taken = run_concurrently(4, lambda: store.take_portal_pending(key))
        assert sorted(map(repr, taken)) == sorted([repr(pending())] + ["None"] * 3)


def test_a_step_up_records_when_a_factor_was_proven(store: Store) -> None:
    """A password-only session has proven nothing; a step-up sets the time, and only that
    field: a notice or a pending enrolment set meanwhile stays."""
    store.put_portal_session(portal_session(stage="enroll"))
    key = b"k" * 32
    found = store.touch_portal_session(key, NOW)
    assert found is not None and found.proven_at is None
    store.set_portal_notice(key, "Saved.")
    store.offer_portal_pending(key, pending())
    assert store.set_portal_proven(key, NOW + 400.25) is True
    found = store.touch_portal_session(key, NOW + 401)
    assert found is not None
    assert (found.proven_at, found.notice, found.pending) == (NOW + 400.25, "Saved.", pending())
    assert found.last_seen == NOW + 401
    assert store.set_portal_proven(b"x" * 32, NOW) is False
    store.delete_portal_session(key)
    assert store.set_portal_proven(key, NOW) is False


def test_a_sent_code_is_taken_once(store: Store) -> None:
    store.put_portal_session(portal_session())
    key = b"k" * 32
    assert store.take_portal_sent(key) is None
    store.set_portal_sent(key, "code record")
    assert sorted(map(str, run_concurrently(4, lambda: store.take_portal_sent(key)))) == [
        "None",
        "None",
        "None",
        "code record",
    ]
