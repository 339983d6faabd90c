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
