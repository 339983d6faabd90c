"""SerialThreadRunner: results and errors come back on the reactor thread, in order."""

from __future__ import annotations

import threading

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults

from radmfa.threads import SerialThreadRunner


@pytest.fixture
def runner():
    r = SerialThreadRunner(reactor, "test-serial")
    r.start()
    yield r
    r.stop()


@pytest_twisted.ensureDeferred
async def test_calls_run_off_the_reactor_thread_in_order_and_results_come_back_on_it(runner):
    seen: list[int] = []
    main = threading.get_ident()

    def work(i: int) -> tuple[int, bool]:
        seen.append(i)
        return i * 2, threading.get_ident() != main

    results = await gatherResults([runner.run(work, i) for i in range(50)])
    assert [r[0] for r in results] == [i * 2 for i in range(50)]
    assert all(off for _, off in results)
    assert seen == list(range(50))


@pytest_twisted.ensureDeferred
async def test_exceptions_become_failures(runner):
    def boom() -> None:
        raise ValueError("store broke")

    with pytest.raises(ValueError, match="store broke"):
        await runner.run(boom)
    assert await runner.run(lambda: "still working") == "still working"


def test_run_before_start_is_refused():
    with pytest.raises(RuntimeError, match="not started"):
        SerialThreadRunner(reactor, "idle").run(lambda: None)


def test_stop_finishes_queued_work_first():
    r = SerialThreadRunner(reactor, "drain")
    r.start()
    done: list[int] = []
    for i in range(20):
        r.run(done.append, i)
    r.stop()
    assert done == list(range(20))


class _CountingReactor:
    """The real reactor, counting the wake-ups the runner asks for."""

    def __init__(self) -> None:
        self.wakeups = 0

    def callFromThread(self, fn, *args, **kwargs) -> None:
        self.wakeups += 1
        reactor.callFromThread(fn, *args, **kwargs)


@pytest_twisted.ensureDeferred
async def test_results_of_queued_work_come_back_in_batches_in_order():
    counting = _CountingReactor()
    r = SerialThreadRunner(counting, "batch", batch=32, monotonic=lambda: 0.0)
    r.start()
    try:
        gate = threading.Event()
        first = r.run(gate.wait, 5)
        rest = [r.run(lambda i=i: i, i) for i in range(49)]
        gate.set()
        results = await gatherResults([first, *rest])
    finally:
        r.stop()
    assert results == [True, *range(49)]
    assert counting.wakeups == 2  # 32 results, then the last 18


@pytest_twisted.ensureDeferred
async def test_a_result_is_not_held_longer_than_the_hold_time():
    counting = _CountingReactor()
    ticks = iter(range(1000))  # every reading of the clock is 1 s later than the last
    r = SerialThreadRunner(counting, "hold", batch=32, hold=0.5, monotonic=lambda: next(ticks))
    r.start()
    try:
        gate = threading.Event()
        first = r.run(gate.wait, 5)
        rest = [r.run(lambda i=i: i, i) for i in range(9)]
        gate.set()
        await gatherResults([first, *rest])
    finally:
        r.stop()
    assert counting.wakeups == 10  # the hold time passes after every call: no batching


@pytest_twisted.ensureDeferred
async def test_background_calls_wait_until_no_ordinary_call_is_queued():
    r = SerialThreadRunner(reactor, "lanes")
    r.start()
    try:
        order: list[str] = []
        gate = threading.Event()
        first = r.run(gate.wait, 5)
        later = r.background.run(order.append, "audit")
        logins = [r.run(order.append, f"login{i}") for i in range(3)]
        gate.set()
        await gatherResults([first, later, *logins])
    finally:
        r.stop()
    assert order == ["login0", "login1", "login2", "audit"]


@pytest_twisted.ensureDeferred
async def test_a_background_call_that_waited_its_patience_runs_between_ordinary_calls():
    ticks = iter(range(0, 10_000, 10))  # every clock reading is 10 s after the last
    r = SerialThreadRunner(reactor, "patience", patience=1.0, monotonic=lambda: next(ticks))
    r.start()
    try:
        order: list[str] = []
        gate = threading.Event()
        first = r.run(gate.wait, 5)
        later = r.background.run(order.append, "audit")
        logins = [r.run(order.append, f"login{i}") for i in range(3)]
        gate.set()
        await gatherResults([first, later, *logins])
    finally:
        r.stop()
    assert order[0] == "audit"  # it had waited long enough: run before the queued logins


def test_stop_runs_queued_background_calls_too():
    r = SerialThreadRunner(reactor, "drain-later")
    r.start()
    done: list[int] = []
    for i in range(5):
        r.background.run(done.append, i)
        r.run(done.append, 100 + i)
    r.stop()
    assert sorted(done) == [0, 1, 2, 3, 4, 100, 101, 102, 103, 104]


def test_background_before_start_is_refused():
    with pytest.raises(RuntimeError, match="not started"):
        SerialThreadRunner(reactor, "idle").background.run(lambda: None)


@pytest_twisted.ensureDeferred
async def test_a_pooled_runner_serves_calls_at_once_and_its_background_is_the_pool():
    from radmfa.threads import PooledRunner

    pooled = PooledRunner(reactor, "test-pooled", 4)
    pooled.start()
    try:
        arrived = threading.Barrier(3, timeout=10)  # three calls must be inside at once

        def meet() -> str:
            arrived.wait()
            return threading.current_thread().name

        names = await gatherResults(
            [pooled.run(meet), pooled.run(meet), pooled.background.run(meet)]
        )
        assert len(set(names)) == 3
    finally:
        pooled.stop()


class _Busy(Exception):
    pass


class _RecordingRunner:
    """A fallback that keeps the calls handed to it, to run them when the test says."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, tuple[object, ...]]] = []

    def run(self, fn, *args, **kwargs):
        from twisted.internet.defer import Deferred

        d: Deferred[object] = Deferred()
        self.calls.append((fn, args))
        d.callback("from the fallback")
        return d


def test_inline_first_runs_the_call_here_and_hands_a_busy_one_to_the_fallback():
    from radmfa.threads import InlineFirstRunner

    fallback = _RecordingRunner()
    runner = InlineFirstRunner(fallback, _Busy)
    main = threading.get_ident()
    results: list[object] = []
    runner.run(lambda x: (x, threading.get_ident() == main), 7).addCallback(results.append)
    assert results == [(7, True)]  # already fired: no hop, no pass of the event loop
    assert fallback.calls == []

    def busy(x: int) -> int:
        raise _Busy()

    runner.run(busy, 8).addCallback(results.append)
    assert fallback.calls == [(busy, (8,))] and results[-1] == "from the fallback"
    assert (runner.inline, runner.handed_over) == (1, 1)

    failures: list[object] = []

    def broken() -> None:
        raise ValueError("store broke")

    runner.run(broken).addErrback(lambda f: failures.append(f.value))
    assert [type(e) for e in failures] == [ValueError] and len(fallback.calls) == 1


def test_inline_first_runner_hands_everything_to_the_thread_while_crowded():
    """Under saturation the store thread runs the calls beside the reactor (SQLite releases
    the GIL) instead of each one queueing on the reactor; below the mark they run inline."""
    from radmfa.threads import InlineFirstRunner

    fallback = _RecordingRunner()
    crowded = [False]
    runner = InlineFirstRunner(fallback, _Busy, lambda: crowded[0])
    ran_here: list[int] = []
    runner.run(ran_here.append, 1)
    crowded[0] = True
    runner.run(ran_here.append, 2)
    crowded[0] = False
    runner.run(ran_here.append, 3)
    assert ran_here == [1, 3] and fallback.calls == [(ran_here.append, (2,))]
    assert (runner.inline, runner.handed_over, runner.offloaded) == (2, 0, 1)
