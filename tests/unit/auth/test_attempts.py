"""Attacks on the lockout and on the identity rule, driven through the real pipeline.

A held directory keeps binds in flight, so many requests are inside the pipeline at once:
what an attacker with a burst of packets gets. The memory store passes the same contract
suite (including the concurrent one) as the SQLite engine.
"""

from __future__ import annotations

import base64
import dataclasses
import os

import pyotp
import pytest
from twisted.internet.task import Clock

from radmfa.auth.ledger import KEPT_ENDS_DELAY, AttemptEnds
from radmfa.auth.model import AccessRequest, AuthMethod, Decision, Outcome, Reason
from radmfa.auth.pipeline import Authenticator, PipelineSettings
from radmfa.auth.policy import Policy
from radmfa.config import (
    GraceConfig,
    LockoutConfig,
    OtpConfig,
    PolicyConfig,
    PolicyRule,
    RateLimitsConfig,
    RuleOutcome,
    UserLimitConfig,
)
from radmfa.factors.base import FactorRegistry
from radmfa.factors.totp import TotpFactor
from radmfa.store.base import StoreError, TokenRecord
from radmfa.store.facade import AsyncStore
from radmfa.store.memory import MemoryStore
from radmfa.testing import FakeDirectory, InlineRunner

SECRET = b"0123456789abcdefghij"
T0 = 1_800_000_000.0
NO_USER_DELAY = RateLimitsConfig(user=UserLimitConfig(delay=0))


class World:
    def __init__(
        self,
        *,
        max_failures: int = 5,
        max_total: int = 100,
        duration: float = 300,
        rate_limits: RateLimitsConfig = NO_USER_DELAY,
        password_only: bool = False,
        mode: str = "auto",
        policy: Policy | None = None,
    ) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.store = MemoryStore()
        self.directory = FakeDirectory(users={"alice": "hunter2", "bob": "b0bpass"})
        self.async_store = AsyncStore(self.store, InlineRunner())
        #: The daemon's batch of attempt ends, which outlives a reload.
        self.attempt_ends = AttemptEnds(self.async_store, self.clock)
        self.settings = PipelineSettings(
            otp=OtpConfig(mode=mode, allow_password_only=password_only),
            lockout=LockoutConfig(
                max_failures=max_failures, duration=duration, max_total_failures=max_total
            ),
            rate_limits=rate_limits,
            policy=policy,
        )
        self.auth = self.reloaded()

    def reloaded(self) -> Authenticator:
        """A pipeline as a reload builds it: new parts, the daemon's store and batch."""
        return Authenticator(
            settings=self.settings,
            directory=self.directory,
            store=self.async_store,
            factors=FactorRegistry([TotpFactor(skew=1)]),
            clock=self.clock,
            random_bytes=os.urandom,
            attempt_ends=self.attempt_ends,
        )

    def enroll(self, user: str = "alice") -> None:
        self.store.add_token(TokenRecord(f"tok-{user}", user, "totp", SECRET, 6, "SHA1", 30, T0))

    def code(self) -> str:
        return pyotp.TOTP(base64.b32encode(SECRET).decode()).at(self.clock.seconds())

    def request(
        self,
        user: bytes,
        password: bytes,
        *,
        authenticator: bytes | None = None,
        state: bytes | None = None,
        packet_id: int = 1,
    ) -> AccessRequest:
        return AccessRequest(
            user_name=user,
            password=password,
            method=AuthMethod.PAP,
            state=state,
            client_name="vpn",
            client_address="192.0.2.1",
            packet_id=packet_id,
            authenticator=authenticator if authenticator is not None else os.urandom(16),
        )

    def start(self, request: AccessRequest) -> list[Decision]:
        """Hand the request over; the list gets the decision whenever it is made."""
        results: list[Decision] = []
        self.auth.handle(request).addCallback(results.append)
        return results

    def settle(self, seconds: float) -> None:
        """Let ``seconds`` pass in small steps, so waiting attempts ask again on the way."""
        for _ in range(round(seconds / 0.005)):
            self.clock.advance(0.005)

    def send(self, user: bytes, password: bytes) -> Decision:
        results = self.start(self.request(user, password))
        assert results, "with nothing held the pipeline finishes at once"
        return results[0]


def burst(w: World, n: int, user: bytes, password: bytes) -> list[list[Decision]]:
    return [w.start(w.request(user, password)) for _ in range(n)]


def reasons(results: list[list[Decision]]) -> list[Reason]:
    return [r[0].reason for r in results if r]


def test_a_burst_of_wrong_passwords_gets_at_most_max_failures_binds():
    w = World(max_failures=5, password_only=True)
    w.directory.hold = True
    results = burst(w, 200, b"alice", b"wrong")
    assert len(w.directory.binds) == 5  # the rest wait for these, without directory traffic
    assert reasons(results) == []
    w.directory.release()
    assert reasons(results).count(Reason.BAD_PASSWORD) == 5
    assert w.store.lock_state("alice").is_locked(w.clock.seconds())
    w.settle(0.1)  # the waiting attempts are judged again: the account is locked now
    assert reasons(results).count(Reason.LOCKED) == 195
    assert w.send(b"alice", b"hunter2").reason is Reason.LOCKED
    assert len(w.directory.binds) == 5


def test_attempts_waiting_too_long_for_those_in_flight_are_throttled():
    w = World(max_failures=5, password_only=True)
    w.directory.hold = True
    results = burst(w, 20, b"alice", b"wrong")
    w.settle(1.9)
    assert reasons(results) == []
    w.settle(0.3)
    assert reasons(results) == [Reason.THROTTLED] * 15
    assert len(w.directory.binds) == 5


def test_a_burst_of_right_passwords_with_wrong_codes_gets_at_most_max_failures_tries():
    w = World(max_failures=5, mode="append")
    w.enroll()
    w.directory.hold = True
    results = burst(w, 200, b"alice", b"hunter2999999")
    # Append mode checks the code first: wrong codes cost no bind, and each counts at once.
    assert reasons(results).count(Reason.BAD_OTP) == 5
    assert w.directory.binds == []
    assert set(reasons(results)) == {Reason.BAD_OTP, Reason.LOCKED}


def test_many_open_challenges_answered_with_wrong_codes_get_max_failures_tries():
    w = World(max_failures=3, mode="challenge")
    w.enroll()
    states = [w.send(b"alice", b"hunter2").state for _ in range(5)]  # otp.max_open_challenges
    assert all(states)
    results = [w.start(w.request(b"alice", b"000000", state=s)) for s in states]
    assert reasons(results).count(Reason.BAD_OTP) == 3
    assert set(reasons(results)) == {Reason.BAD_OTP, Reason.LOCKED}


def test_the_default_user_throttle_allows_fewer_attempts_in_flight_than_the_lockout():
    w = World(max_failures=5, password_only=True, rate_limits=RateLimitsConfig())
    w.directory.hold = True
    results = burst(w, 50, b"alice", b"wrong")
    free = RateLimitsConfig().user.free_failures
    assert len(w.directory.binds) == free
    w.directory.release()
    assert reasons(results).count(Reason.BAD_PASSWORD) == free


def test_a_success_in_flight_ends_its_reservation():
    w = World(max_failures=2, password_only=True)
    w.directory.hold = True
    first = w.start(w.request(b"alice", b"hunter2"))
    second = w.start(w.request(b"alice", b"hunter2"))
    third = w.start(w.request(b"alice", b"hunter2"))
    assert third == [] and len(w.directory.binds) == 2  # two in flight could lock it: wait
    w.directory.hold = False
    w.directory.release()
    assert first[0].outcome is second[0].outcome is Outcome.ACCEPT
    w.settle(0.01)
    assert third[0].outcome is Outcome.ACCEPT  # an honest user's parallel logins all pass


def test_the_directory_being_down_releases_the_reservation_without_counting():
    w = World(max_failures=2, password_only=True)
    w.directory.unavailable = True
    for _ in range(5):
        assert w.send(b"alice", b"hunter2").reason is Reason.DIRECTORY_UNAVAILABLE
    assert w.store.lock_state("alice").failures == 0
    w.directory.unavailable = False
    assert w.send(b"alice", b"hunter2").outcome is Outcome.ACCEPT


def test_a_retransmission_reaching_another_process_is_never_decided_twice():
    w = World(password_only=True)
    w.directory.hold = True
    authenticator = os.urandom(16)
    first = w.start(w.request(b"alice", b"wrong", authenticator=authenticator))
    again = w.start(w.request(b"alice", b"wrong", authenticator=authenticator))
    assert (again[0].outcome, again[0].reason) == (Outcome.DROP, Reason.DUPLICATE)
    w.directory.release()
    assert first[0].reason is Reason.BAD_PASSWORD
    w.directory.hold = False
    late = w.start(w.request(b"alice", b"wrong", authenticator=authenticator))
    assert (late[0].outcome, late[0].reason) == (Outcome.REJECT, Reason.DUPLICATE)
    assert w.store.lock_state("alice").failures == 1  # counted once
    assert len(w.directory.binds) == 1  # bound once
    # another Identifier with the same authenticator is another request
    other = w.start(w.request(b"alice", b"wrong", authenticator=authenticator, packet_id=2))
    assert other[0].reason is Reason.BAD_PASSWORD


def test_a_retransmission_of_a_success_is_decided_again():
    w = World(password_only=True)
    authenticator = os.urandom(16)
    for _ in range(2):
        done = w.start(w.request(b"alice", b"hunter2", authenticator=authenticator))
        assert done[0].outcome is Outcome.ACCEPT
    assert len(w.directory.binds) == 2


def test_failures_across_lock_expiries_lock_for_good_at_the_total_cap():
    w = World(max_failures=3, duration=60, max_total=9, password_only=True)
    for _round in range(3):
        for _ in range(3):
            assert w.send(b"alice", b"wrong").reason is Reason.BAD_PASSWORD
        assert w.send(b"alice", b"hunter2").reason is Reason.LOCKED
        w.clock.advance(61)
    lock = w.store.lock_state("alice")
    assert lock.locked_for_good and lock.total_failures == 9
    w.clock.advance(365 * 86400)
    assert w.send(b"alice", b"hunter2").reason is Reason.LOCKED
    assert w.store.unlock("alice")
    assert w.send(b"alice", b"hunter2").outcome is Outcome.ACCEPT


def test_a_success_between_lock_periods_resets_the_total():
    w = World(max_failures=3, duration=60, max_total=9, password_only=True)
    for _ in range(3):
        w.send(b"alice", b"wrong")
    w.clock.advance(61)
    assert w.send(b"alice", b"hunter2").outcome is Outcome.ACCEPT
    w.auth.ledger.flush()  # a success reaches the store with the next batch
    assert w.store.lock_state("alice").total_failures == 0


def test_parallel_logins_get_no_more_grace_logins_than_granted():
    """grace_logins is checked when the attempt begins and counted after the bind: logins in
    flight together must not all pass on the count read before any of them was counted."""
    w = World(policy=Policy(PolicyConfig(unenrolled=GraceConfig(logins=2))))
    w.directory.hold = True
    results = burst(w, 4, b"alice", b"hunter2")
    w.directory.release()
    w.settle(0.1)
    outcomes = [r[0].outcome for r in results]
    assert outcomes.count(Outcome.ACCEPT) == 2
    assert reasons(results).count(Reason.GRACE_EXPIRED) == 2
    assert w.send(b"alice", b"hunter2").reason is Reason.GRACE_EXPIRED


def test_a_login_on_the_password_alone_does_not_wipe_the_failed_codes_of_an_enrolled_user():
    """A client where the password alone is enough (an exempt rule) proves nothing about the
    user's codes: were its success to clear the counts, code guesses on the VPN between
    such logins would never reach the lock nor lockout.max_total_failures."""
    exempt_wifi = PolicyRule(name="wifi", clients=("wifi",), outcome=RuleOutcome(mfa="exempt"))
    w = World(max_failures=5, max_total=10, policy=Policy(PolicyConfig(rules=(exempt_wifi,))))
    w.enroll()
    guesses = 0
    for _cycle in range(6):
        wrong = f"{(int(w.code()) + 500_000) % 10**6:06d}"
        for _ in range(4):
            d = w.send(b"alice", b"hunter2" + wrong.encode())
            guesses += d.reason in (Reason.BAD_OTP, Reason.BAD_PASSWORD)
        wifi = dataclasses.replace(w.request(b"alice", b"hunter2"), client_name="wifi")
        w.start(wifi)
        w.clock.advance(301)  # past any lock of this cycle
    assert guesses == 10
    lock = w.store.lock_state("alice")
    assert lock.locked_for_good
    # A full login (password and code) still clears the counts, as before.
    assert w.store.unlock("alice")
    w.send(b"alice", b"hunter2" + f"{(int(w.code()) + 500_000) % 10**6:06d}".encode())
    assert w.store.lock_state("alice").total_failures == 1
    assert w.send(b"alice", b"hunter2" + w.code().encode()).outcome is Outcome.ACCEPT
    w.auth.ledger.flush()  # a success reaches the store with the next batch
    assert w.store.lock_state("alice").total_failures == 0


# -- one identity per account ------------------------------------------------------------------

FULLWIDTH_ALICE = "\uff41\uff4c\uff49\uff43\uff45".encode()  # what the directory binds as alice


def test_a_disabled_user_cannot_log_in_with_a_fullwidth_spelling():
    w = World(password_only=True)
    w.store.set_status("alice", "disabled", None, "left")
    for spelling in (FULLWIDTH_ALICE, "a\uff4cice".encode(), b"ALICE", b" alice "):
        assert w.send(spelling, b"hunter2").reason is Reason.USER_DISABLED
    assert w.directory.binds == []


def test_a_locked_user_cannot_log_in_with_another_spelling():
    w = World(max_failures=2, password_only=True)
    w.send(b"alice", b"wrong")
    w.send(FULLWIDTH_ALICE, b"wrong")  # counts towards alice's lock
    assert w.store.lock_state("alice").is_locked(w.clock.seconds())
    assert w.send(b"ALICE", b"hunter2").reason is Reason.LOCKED


def test_an_enrolled_user_needs_the_code_under_every_spelling():
    w = World()
    w.enroll()
    d = w.send(FULLWIDTH_ALICE, b"hunter2")
    assert d.outcome is Outcome.CHALLENGE  # the token of alice is found


def test_names_without_a_safe_key_are_refused_before_any_state_or_bind():
    w = World(password_only=True)
    for name in ("AL\u0130CE", "stra\u00dfe"):
        d = w.send(name.encode(), b"hunter2")
        assert (d.outcome, d.reason) == (Outcome.REJECT, Reason.UNSAFE_USER_NAME)
    assert w.directory.binds == []


def test_a_reservation_outlives_the_slowest_request_the_configuration_allows():
    from radmfa.auth.ledger import attempt_lease
    from radmfa.store.base import ATTEMPT_LEASE

    assert attempt_lease(10, 3, 1) == ATTEMPT_LEASE  # the defaults: a minute is plenty
    slow = attempt_lease(request_timeout=10, ldap_timeout=60, ldap_servers=2)
    assert slow >= 10 + 3 * 60 * 2
    w = World(password_only=True)
    w.auth.ledger.lease = slow
    w.directory.hold = True
    burst(w, 5, b"alice", b"wrong")
    w.clock.advance(ATTEMPT_LEASE + 1)  # the binds are still with a slow directory
    later = burst(w, 5, b"alice", b"wrong")
    w.settle(2.1)
    assert len(w.directory.binds) == 5  # no new binds once a minute has passed
    assert reasons(later) == [Reason.THROTTLED] * 5


def test_ended_reservations_ride_with_the_next_login_or_a_short_timer():
    w = World(password_only=True, rate_limits=RateLimitsConfig())
    w.store.record_failure("alice", T0 - 10, 5, 300)
    db_calls = w.auth.store.runner.calls
    assert w.send(b"alice", b"hunter2").outcome is Outcome.ACCEPT
    assert w.store.lock_state("alice").failures == 1  # the end is batched ...
    assert w.auth.store.runner.calls == db_calls + 1  # ... so the login took one trip to the store
    assert w.send(b"bob", b"b0bpass").outcome is Outcome.ACCEPT
    assert w.store.lock_state("alice").failures == 0  # ... and went with bob's reservation
    w.clock.advance(0.05)  # bob's end: the timer
    state = w.store.login_state("bob", w.clock.seconds())
    assert state.lock.failures == 0
    assert w.store.begin_attempt(b"probe", "bob", T0, lambda s: None).state.pending_user == 0


# -- the store going away in the middle of a login --------------------------------------------


def pending(w: World, user: str) -> int:
    """The user's reservations still pending, as the next login's judgement sees them."""
    start = w.store.begin_attempt(os.urandom(16), user, w.clock.seconds(), lambda s: "look")
    return start.state.pending_user


def store_down(w: World, monkeypatch, *methods: str) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise StoreError("the database is gone")

    for method in methods:
        monkeypatch.setattr(w.store, method, fail)


@pytest.mark.logs_errors  # the outage's one line
def test_a_store_outage_after_the_reservation_leaves_nothing_pending_once_it_is_back(
    monkeypatch,
):
    w = World(max_failures=4)
    w.enroll()
    for _ in range(3):
        w.store.record_failure("alice", T0 - 10, 4, 300)
    with monkeypatch.context() as m:  # down after the reservation: no State, no end
        store_down(w, m, "put_challenge", "end_attempts")
        assert w.send(b"alice", b"hunter2").reason is Reason.STORE_UNAVAILABLE
        w.clock.advance(0.05)  # the batched end meets the outage too
    results = w.start(w.request(b"alice", b"hunter2"))  # back: the end goes first
    w.settle(2.1)
    assert results[0].outcome is Outcome.CHALLENGE  # not throttled by its own lost try
    assert w.store.lock_state("alice").failures == 3  # and nothing counted
    w.clock.advance(0.05)
    assert pending(w, "alice") == 0


def test_a_success_whose_end_was_lost_releases_later_without_clearing_newer_failures(
    monkeypatch,
):
    w = World(password_only=True)
    with monkeypatch.context() as m:
        store_down(w, m, "end_attempts")
        assert w.send(b"alice", b"hunter2").outcome is Outcome.ACCEPT
        w.clock.advance(0.05)  # its end (clear alice's failures) is not taken
    for _ in range(2):  # failures counted since, on another node
        w.store.record_failure("alice", w.clock.seconds(), 5, 300)
    assert w.send(b"bob", b"b0bpass").outcome is Outcome.ACCEPT  # takes the kept end along
    assert pending(w, "alice") == 0
    assert w.store.lock_state("alice").failures == 2


def test_ends_the_store_could_not_take_go_later_without_waiting_for_another_login(monkeypatch):
    w = World(password_only=True)
    with monkeypatch.context() as m:
        store_down(w, m, "end_attempts")
        assert w.send(b"alice", b"hunter2").outcome is Outcome.ACCEPT
        w.clock.advance(0.05)  # its end is not taken
    assert pending(w, "alice") == 1
    w.clock.advance(KEPT_ENDS_DELAY)  # no login comes to carry it: it goes by itself
    assert pending(w, "alice") == 0


def test_a_guess_counted_while_an_honest_success_waits_in_the_batch_stays_counted():
    """An attacker's wrong password and the user's right one are in flight together; the
    user's success is decided first, its end waits for the batch, the guess fails in the
    meantime: the batch must not wipe that failure (nor lift a lock it set)."""
    w = World(max_failures=3, password_only=True)
    w.store.record_failure("alice", T0 - 10, 3, 300)  # an earlier failure
    w.directory.hold = True
    guess = w.start(w.request(b"alice", b"wrong"))
    honest = w.start(w.request(b"alice", b"hunter2"))
    (guess_bind, guess_result), (honest_bind, honest_result) = w.directory.pending
    w.directory.pending.clear()
    honest_bind.callback(honest_result)
    assert honest[0].outcome is Outcome.ACCEPT  # its end is batched, not yet in the store
    w.clock.advance(0.001)
    guess_bind.callback(guess_result)
    assert guess[0].reason is Reason.BAD_PASSWORD
    w.clock.advance(0.05)  # the batch goes to the store
    assert w.store.lock_state("alice").failures == 2  # the guess still counts (and the one
    # before it: a count cannot be cleared in part; the next success clears both)


def test_requests_in_flight_at_a_reload_end_into_the_batch_the_new_pipeline_carries():
    """A reload builds a new pipeline while requests are in flight under the old one: their
    ends must not wait in a batch no login carries any more (honest parallel logins would
    then wait as if they were guesses still pending, and be throttled if it never went)."""
    w = World(max_failures=4, password_only=True)
    w.directory.hold = True
    in_flight = burst(w, 4, b"alice", b"hunter2")
    old, w.auth = w.auth, w.reloaded()
    w.directory.hold = False
    w.directory.release()
    assert reasons(in_flight) == [Reason.PASSWORD_ONLY] * 4  # ended under the old pipeline
    after = w.start(w.request(b"alice", b"hunter2"))
    assert after and after[0].outcome is Outcome.ACCEPT  # at once: the ends went along
    assert w.attempt_ends is old.ledger.ends is w.auth.ledger.ends


@pytest.mark.logs_errors  # the outage's one line
def test_a_failure_whose_count_could_not_be_written_stays_pending_until_its_lease(
    monkeypatch,
):
    w = World(password_only=True)
    with monkeypatch.context() as m:
        store_down(w, m, "finish_attempt")
        assert w.send(b"alice", b"wrong").reason is Reason.STORE_UNAVAILABLE
    w.clock.advance(0.05)
    assert pending(w, "alice") == 1  # a guess the store did not count still counts
