"""RFC 5080 duplicate detection driven by a fake clock (R-12)."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from radmfa.radius.dupcache import IN_FLIGHT, NEW, Answered, CacheFull, DuplicateCache

KEY = ("192.0.2.1", 40000, 7)
AUTH_A = b"A" * 16
AUTH_B = b"B" * 16


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(clock: Clock) -> DuplicateCache:
    return DuplicateCache(clock, window=30.0, max_entries=8)


def test_unseen_request_is_new(cache: DuplicateCache) -> None:
    assert cache.lookup(KEY, AUTH_A) is NEW


def test_duplicate_while_in_flight_is_reported_in_flight(cache: DuplicateCache) -> None:
    cache.begin(KEY, AUTH_A)
    assert cache.lookup(KEY, AUTH_A) is IN_FLIGHT
    assert cache.in_flight == 1


def test_duplicate_after_answer_returns_identical_bytes(cache: DuplicateCache) -> None:
    token = cache.begin(KEY, AUTH_A)
    assert cache.finish(token, b"reply-bytes")
    assert cache.lookup(KEY, AUTH_A) == Answered(b"reply-bytes")
    assert cache.in_flight == 0


def test_same_key_other_port_or_id_is_a_different_request(cache: DuplicateCache) -> None:
    cache.begin(KEY, AUTH_A)
    assert cache.lookup(("192.0.2.1", 40001, 7), AUTH_A) is NEW
    assert cache.lookup(("192.0.2.1", 40000, 8), AUTH_A) is NEW
    assert cache.lookup(("192.0.2.2", 40000, 7), AUTH_A) is NEW


def test_new_authenticator_supersedes_and_late_finish_is_ignored(cache: DuplicateCache) -> None:
    old = cache.begin(KEY, AUTH_A)
    assert cache.lookup(KEY, AUTH_B) is NEW
    assert not cache.is_current(old)
    new = cache.begin(KEY, AUTH_B)
    assert cache.finish(old, b"stale") is False
    assert cache.lookup(KEY, AUTH_B) is IN_FLIGHT
    assert cache.finish(new, b"fresh")
    assert cache.lookup(KEY, AUTH_B) == Answered(b"fresh")
    # The old authenticator now counts as new again and purges the answer.
    assert cache.lookup(KEY, AUTH_A) is NEW
    assert len(cache) == 0


def test_begin_on_a_live_key_supersedes_directly(cache: DuplicateCache) -> None:
    old = cache.begin(KEY, AUTH_A)
    new = cache.begin(KEY, AUTH_B)
    assert cache.finish(old, b"stale") is False
    assert cache.finish(new, b"fresh") is True
    assert len(cache) == 1


def test_abandon_lets_a_retransmission_be_processed(cache: DuplicateCache) -> None:
    token = cache.begin(KEY, AUTH_A)
    cache.abandon(token)
    assert cache.lookup(KEY, AUTH_A) is NEW
    assert cache.finish(token, b"late") is False


def test_abandon_of_a_superseded_token_keeps_the_new_entry(cache: DuplicateCache) -> None:
    old = cache.begin(KEY, AUTH_A)
    cache.begin(KEY, AUTH_B)
    cache.abandon(old)
    assert cache.lookup(KEY, AUTH_B) is IN_FLIGHT


def test_answer_expires_after_the_window(cache: DuplicateCache, clock: Clock) -> None:
    token = cache.begin(KEY, AUTH_A)
    clock.advance(5)  # processing time does not count against the window
    cache.finish(token, b"reply")
    clock.advance(29.9)
    assert cache.lookup(KEY, AUTH_A) == Answered(b"reply")
    clock.advance(0.1)
    assert cache.lookup(KEY, AUTH_A) is NEW


def test_expired_answers_are_swept_without_traffic(cache: DuplicateCache, clock: Clock) -> None:
    for port in range(3):
        token = cache.begin(("192.0.2.1", port, 1), AUTH_A)
        cache.finish(token, b"r")
        clock.advance(1)
    assert len(cache) == 3
    clock.advance(28)
    assert len(cache) == 1  # the first two expired on the sweep timer
    clock.advance(2)
    assert len(cache) == 0
    assert clock.getDelayedCalls() == []


def test_in_flight_entries_never_expire(cache: DuplicateCache, clock: Clock) -> None:
    cache.begin(KEY, AUTH_A)
    clock.advance(3600)
    assert cache.lookup(KEY, AUTH_A) is IN_FLIGHT


def test_size_is_bounded_by_evicting_the_oldest_answer(cache: DuplicateCache) -> None:
    for port in range(8):
        cache.finish(cache.begin(("192.0.2.1", port, 1), AUTH_A), b"r%d" % port)
    cache.begin(("192.0.2.1", 100, 1), AUTH_A)
    assert len(cache) == 8
    assert cache.lookup(("192.0.2.1", 0, 1), AUTH_A) is NEW  # oldest answer evicted
    assert cache.lookup(("192.0.2.1", 1, 1), AUTH_A) == Answered(b"r1")


def test_full_of_in_flight_requests_refuses_new_ones(cache: DuplicateCache) -> None:
    answered = cache.begin(("192.0.2.1", 0, 1), AUTH_A)
    cache.finish(answered, b"r")
    for port in range(1, 8):
        cache.begin(("192.0.2.1", port, 1), AUTH_A)
    cache.begin(("192.0.2.1", 50, 1), AUTH_A)  # evicts the only answered entry
    with pytest.raises(CacheFull):
        cache.begin(("192.0.2.1", 51, 1), AUTH_A)
    assert len(cache) == 8
    assert cache.in_flight == 8


def test_zero_window_caches_nothing(clock: Clock) -> None:
    cache = DuplicateCache(clock, window=0)
    token = cache.begin(KEY, AUTH_A)
    assert cache.finish(token, b"r") is True
    assert cache.lookup(KEY, AUTH_A) is NEW


def test_stop_cancels_the_sweep_timer(cache: DuplicateCache, clock: Clock) -> None:
    cache.finish(cache.begin(KEY, AUTH_A), b"r")
    assert len(clock.getDelayedCalls()) == 1
    cache.stop()
    assert clock.getDelayedCalls() == []
