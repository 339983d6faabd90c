"""Interpreter settings: start-up objects frozen, young passes less often, a short GIL switch."""

from __future__ import annotations

import gc
import sys

import pytest

from radmfa.tuning import SWITCH_INTERVAL, YOUNG_THRESHOLD, settle_heap, shorten_gil_switch


@pytest.fixture
def restore_gc():
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_settle_heap_freezes_start_up_objects_and_raises_the_young_threshold(restore_gc):
    _, middle, old = gc.get_threshold()
    marker = [["made before settling"]]  # a tracked object that exists at start-up
    assert gc.is_tracked(marker)
    settle_heap()
    assert gc.get_freeze_count() > 0
    assert all(obj is not marker for obj in gc.get_objects())  # frozen ones are not listed
    assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, old)
    made_after = [["made after"]]
    assert any(obj is made_after for obj in gc.get_objects())


def test_the_gil_switch_interval_is_shortened():
    before = sys.getswitchinterval()
    try:
        shorten_gil_switch()
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
        assert SWITCH_INTERVAL < before
    finally:
        sys.setswitchinterval(before)
