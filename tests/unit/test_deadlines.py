"""Deadlines: one reactor timer for many timeouts, each fired once, at its time, unless
cancelled."""

from __future__ import annotations

from twisted.internet.task import Clock

from radmfa.deadlines import Deadlines


def test_many_deadlines_share_one_timer_and_each_fires_at_its_time() -> None:
    clock = Clock()
    deadlines = Deadlines(clock)
    fired: list[int] = []
    for i in range(100):
        deadlines.add(10.0, lambda i=i: fired.append(i))
        clock.advance(0.01)
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(10.0 - 1.0 - 0.001)  # the first is due at 10.0, now is 9.999
    assert fired == []
    clock.advance(0.001)
    assert fired == [0]
    clock.advance(0.5)
    assert fired == list(range(51))
    clock.advance(1)
    assert fired == list(range(100)) and len(deadlines) == 0
    assert clock.getDelayedCalls() == []


def test_cancelled_deadlines_never_fire_and_the_oldest_leaves_the_queue_at_once() -> None:
    clock = Clock()
    deadlines = Deadlines(clock)
    fired: list[str] = []
    first = deadlines.add(5.0, lambda: fired.append("first"))
    second = deadlines.add(5.0, lambda: fired.append("second"))
    deadlines.add(5.0, lambda: fired.append("third"))
    deadlines.cancel(second)
    assert len(deadlines) == 3 and not second.active  # behind a live one: dropped later
    deadlines.cancel(first)
    assert len(deadlines) == 1  # the front was cleared: both go
    clock.advance(5.0)
    assert fired == ["third"]
    assert clock.getDelayedCalls() == []


def test_a_deadline_added_by_a_firing_one_keeps_the_timer_on_the_oldest() -> None:
    clock = Clock()
    deadlines = Deadlines(clock)
    fired: list[str] = []
    deadlines.add(1.0, lambda: deadlines.add(10.0, lambda: fired.append("late")))
    deadlines.add(2.0, lambda: fired.append("second"))
    clock.advance(1.0)
    assert [c.getTime() for c in clock.getDelayedCalls()] == [2.0]  # not 11.0
    clock.advance(1.0)
    assert fired == ["second"]
    clock.advance(9.0)
    assert fired == ["second", "late"]


def test_stop_forgets_everything() -> None:
    clock = Clock()
    deadlines = Deadlines(clock)
    fired: list[int] = []
    deadlines.add(1.0, lambda: fired.append(1))
    deadlines.stop()
    clock.advance(5)
    assert fired == [] and clock.getDelayedCalls() == [] and len(deadlines) == 0
