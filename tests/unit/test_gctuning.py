"""settle_heap: what exists at start-up is frozen, and young passes run less often."""

from __future__ import annotations

import gc

import pytest

from radmfa.gctuning import YOUNG_THRESHOLD, settle_heap


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
