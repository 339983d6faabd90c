"""The one seam through which blocking work (ldap3, SQLite, SMTP) leaves the reactor thread.

Production uses :class:`ThreadPoolRunner` (several threads, e.g. ldap3) or
:class:`SerialThreadRunner` (one thread: the store), with :class:`InlineFirstRunner` in
front of it for the quick calls of a login on SQLite (run on the reactor unless the file's
lock is taken); tests use
:class:`radmfa.testing.InlineRunner`, which runs the call synchronously so unit tests stay
deterministic.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class BlockingRunner(Protocol):
    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Run ``fn`` off the reactor thread and fire with its result."""
        ...


class ThreadPoolRunner:
    """A named, bounded thread pool. Started and stopped with the service."""

    def __init__(self, reactor: IReactorFromThreads, name: str, max_threads: int) -> None:
        self._reactor = reactor
        self.pool = ThreadPool(minthreads=0, maxthreads=max_threads, name=name)

    def start(self) -> None:
        self.pool.start()

    def stop(self) -> None:
        self.pool.stop()

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self.pool, fn, *args, **kwargs)


class PooledRunner(ThreadPoolRunner):
    """The store runner for a database that serves calls concurrently (PostgreSQL): up to
    ``max_threads`` calls at once, each on a pooled connection of its own. One thread would
    make every login wait for the database round trips of all the logins ahead of it.
    Background work (purging, counting) shares the pool."""

    def __init__(self, reactor: IReactorFromThreads, name: str, max_threads: int) -> None:
        super().__init__(reactor, name, max_threads)
        self.background: BlockingRunner = self


class InlineFirstRunner:
    """Runs a call right here, on the reactor thread, and hands it to ``fallback`` (a
    thread) only when it raised ``busy``: for quick store calls on SQLite, whose commit takes
    microseconds when no other connection holds the lock, where a trip to the store thread
    costs two thread wake-ups and a pass of the event loop.

    Only for calls that never wait on the calling thread (the store refuses with ``busy``
    instead, having done nothing, so running them again on ``fallback`` is safe) and do
    little work: one transaction or statement on a few rows.
    """

    def __init__(
        self,
        fallback: BlockingRunner,
        busy: type[BaseException],
        crowded: Callable[[], bool] | None = None,
    ) -> None:
        self._fallback = fallback
        self._busy = busy
        #: When it says so, calls go to ``fallback`` without a try here: under saturation the
        #: fallback's thread runs them beside the reactor (SQLite releases the GIL), where
        #: inline they would queue behind it.
        self._crowded = crowded
        #: Calls run here / handed to the fallback because the store was busy / because
        #: the reactor was crowded.
        self.inline = 0
        self.handed_over = 0
        self.offloaded = 0

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        if self._crowded is not None and self._crowded():
            self.offloaded += 1
            return self._fallback.run(fn, *args, **kwargs)
        try:
            result = fn(*args, **kwargs)
        except self._busy:
            self.handed_over += 1
            return self._fallback.run(fn, *args, **kwargs)
        except BaseException:
            return fail(Failure())
        self.inline += 1
        return succeed(result)


class SerialThreadRunner:
    """One worker thread and a queue: calls run one after another, in submission order.

    For the store: SQLite serialises writers anyway, so more threads only add lock contention;
    and a plain queue costs far less per call than Twisted's general-purpose ThreadPool
    (measured: the thread hop was ~10% of the CPU of an authentication).

    Under load, results go back to the reactor in batches (one wake-up for several calls):
    a result is held only while more work is already queued, and never for longer than
    ``hold`` seconds or ``batch`` results, so an idle daemon answers as fast as before.

    :attr:`background` is a second, lower lane for work nobody waits on (purging
    expired records): its calls run when no ordinary call is waiting, or once one has waited
    ``patience`` seconds, so a busy store cannot starve them. A login that arrives while a
    background call runs still waits for it; keep those calls short.
    """

    def __init__(
        self,
        reactor: IReactorFromThreads,
        name: str,
        *,
        batch: int = 32,
        hold: float = 0.002,
        patience: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reactor = reactor
        self._name = name
        self._batch = batch
        self._hold = hold
        self._patience = patience
        self._monotonic = monotonic
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        #: Background calls with the time they were submitted (appended by the reactor
        #: thread, taken by the worker: deque operations are atomic).
        self._later: collections.deque[tuple[float, _Job]] = collections.deque()
        self._thread: threading.Thread | None = None
        self.background: BlockingRunner = _BackgroundLane(self)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Finish what is queued (background calls too), then end the thread (blocks)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        d = self._job_deferred()
        self._queue.put((d, fn, args, kwargs))
        return d

    def run_in_background(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        d = self._job_deferred()
        self._later.append((self._monotonic(), (d, fn, args, kwargs)))
        self._queue.put(_WAKE)  # so an idle worker notices
        return d

    def _job_deferred(self) -> Deferred[Any]:
        if self._thread is None:
            raise RuntimeError(f"{self._name} runner is not started")
        return Deferred()

    def _work(self) -> None:
        done: list[tuple[Deferred[Any], bool, Any]] = []
        first_done: float | None = None
        stopping = False
        while not stopping:
            job = self._queue.get()
            if job is None:
                stopping = True
            elif job is not _WAKE:
                self._call(job, done)
            later = self._later
            while later and (
                stopping or self._queue.empty() or self._monotonic() - later[0][0] >= self._patience
            ):
                self._call(later.popleft()[1], done)
            if not done:
                continue
            if first_done is None:
                first_done = self._monotonic()
            if (
                stopping
                or self._queue.empty()
                or len(done) >= self._batch
                or self._monotonic() - first_done >= self._hold
            ):
                self._reactor.callFromThread(_deliver, done)
                done, first_done = [], None

    @staticmethod
    def _call(job: _Job, done: list[tuple[Deferred[Any], bool, Any]]) -> None:
        d, fn, args, kwargs = job
        try:
            done.append((d, True, fn(*args, **kwargs)))
        except BaseException:
            done.append((d, False, Failure()))


class _BackgroundLane:
    """:class:`SerialThreadRunner`'s lower lane, as a plain :class:`BlockingRunner`."""

    def __init__(self, runner: SerialThreadRunner) -> None:
        self._runner = runner

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        return self._runner.run_in_background(fn, *args, **kwargs)


def _deliver(done: list[tuple[Deferred[Any], bool, Any]]) -> None:
    """On the reactor thread: fire each call's Deferred, in submission order."""
    for d, ok, outcome in done:
        if ok:
            d.callback(outcome)
        else:
            d.errback(outcome)


_Job = tuple[Deferred[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]
#: Queued by a background call: wakes the worker without being a call itself.
_WAKE: Any = object()
