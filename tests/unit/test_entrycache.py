"""The user-entry cache on its own: time to live on a fake clock, the size bound, drop, and
copies that no caller can change for another."""

from __future__ import annotations

import threading

import pytest
from twisted.internet.task import Clock

from radmfa.directory.entrycache import DEFAULT_MAX_ENTRIES, EntryCache

DN = "uid=alice,ou=people,dc=example,dc=org"


def make(ttl: float = 60.0, max_entries: int = DEFAULT_MAX_ENTRIES) -> tuple[EntryCache, Clock]:
    clock = Clock()
    clock.advance(1_800_000_000)
    return EntryCache(ttl, clock.seconds, max_entries), clock


def test_an_entry_is_returned_until_its_time_to_live_is_up() -> None:
    cache, clock = make(ttl=60)
    cache.put("alice", DN, {"mail": ["alice@example.org"]})
    assert cache.get("alice") == (DN, {"mail": ["alice@example.org"]})
    clock.advance(59.9)
    assert cache.get("alice") == (DN, {"mail": ["alice@example.org"]})
    clock.advance(0.1)
    assert cache.get("alice") is None
    assert len(cache) == 0  # the expired entry was removed, not just hidden


def test_absent_names_are_misses_and_found_ones_hits() -> None:
    cache, clock = make(ttl=10)
    assert cache.get("alice") is None
    cache.put("alice", DN, {})
    assert cache.get("alice") == (DN, {})
    assert cache.get("Alice") is None  # keys are the names as given
    clock.advance(10)
    assert cache.get("alice") is None
    assert (cache.hits, cache.misses) == (1, 3)


def test_putting_again_replaces_the_entry_and_restarts_its_time() -> None:
    cache, clock = make(ttl=60)
    cache.put("alice", "uid=old", {"memberOf": ["cn=a"]})
    clock.advance(50)
    cache.put("alice", DN, {"memberOf": ["cn=b"]})
    clock.advance(50)
    assert cache.get("alice") == (DN, {"memberOf": ["cn=b"]})
    assert len(cache) == 1


def test_drop_forgets_one_name() -> None:
    cache, _ = make()
    cache.put("alice", DN, {})
    cache.put("bob", "uid=bob", {})
    cache.drop("alice")
    cache.drop("nobody")  # no error for a name that is not there
    assert cache.get("alice") is None
    assert cache.get("bob") == ("uid=bob", {})


def test_when_full_the_oldest_insertion_goes_first() -> None:
    cache, clock = make(ttl=60, max_entries=3)
    for name in ("a", "b", "c"):
        cache.put(name, f"uid={name}", {})
        clock.advance(1)
    assert cache.get("a") is not None  # reading does not make an entry younger
    cache.put("d", "uid=d", {})
    assert len(cache) == 3
    assert [cache.get(n) is not None for n in "abcd"] == [False, True, True, True]
    cache.put("b", "uid=b2", {})  # re-inserted: now the newest
    cache.put("e", "uid=e", {})
    assert [cache.get(n) is not None for n in "bcde"] == [True, False, True, True]


def test_expired_entries_make_room_before_fresh_ones_are_evicted() -> None:
    cache, clock = make(ttl=10, max_entries=3)
    cache.put("a", "uid=a", {})
    cache.put("b", "uid=b", {})
    clock.advance(5)
    cache.put("c", "uid=c", {})
    clock.advance(5)  # a and b expired, c has 5 s left
    cache.put("d", "uid=d", {})
    assert len(cache) == 2
    assert cache.get("c") == ("uid=c", {})


def test_the_default_size_bound() -> None:
    cache, _ = make()
    assert cache.max_entries == DEFAULT_MAX_ENTRIES == 100_000


def test_a_clock_that_goes_back_does_not_stretch_an_entrys_life() -> None:
    clock = Clock()
    clock.advance(1000)
    now = [clock.seconds()]
    cache = EntryCache(60, lambda: now[0])
    cache.put("alice", DN, {})
    now[0] -= 3600  # the wall clock was set back an hour
    assert cache.get("alice") is None


def test_callers_cannot_change_what_is_cached() -> None:
    cache, _ = make()
    attributes = {"memberOf": ["cn=staff"], "mail": ["alice@example.org"]}
    cache.put("alice", DN, attributes)
    attributes["memberOf"].append("cn=admins")  # the caller's own dict and lists
    attributes["pwdReset"] = ["TRUE"]
    first = cache.get("alice")
    assert first is not None
    first[1]["memberOf"].append("cn=admins")  # what one caller got
    first[1].pop("mail")
    second = cache.get("alice")
    assert second == (DN, {"memberOf": ["cn=staff"], "mail": ["alice@example.org"]})
    assert second is not None and second[1] is not first[1]


def test_clear_forgets_everything() -> None:
    cache, _ = make()
    cache.put("alice", DN, {})
    cache.clear()
    assert len(cache) == 0 and cache.get("alice") is None


@pytest.mark.parametrize(("ttl", "max_entries"), [(0, 10), (-1, 10), (60, 0)])
def test_refuses_a_useless_configuration(ttl: float, max_entries: int) -> None:
    with pytest.raises(ValueError):
        EntryCache(ttl, Clock().seconds, max_entries)


def test_threads_may_share_it() -> None:
    """The ldap3 engine uses it from its worker threads: the bound holds under contention."""
    cache, _ = make(max_entries=50)

    def work(start: int) -> None:
        for i in range(start, start + 2000):
            cache.put(f"user{i % 120}", f"uid={i}", {"n": [str(i)]})
            cache.get(f"user{(i * 7) % 120}")
            if i % 5 == 0:
                cache.drop(f"user{i % 120}")

    threads = [threading.Thread(target=work, args=(n * 2000,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) <= 50
    assert cache.hits + cache.misses == 4 * 2000
