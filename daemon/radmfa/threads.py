"""The one seam through which blocking work (ldap3, SQLite, SMTP) leaves the reactor thread.

Production uses :class:`ThreadPoolRunner`; tests use :class:`radmfa.testing.InlineRunner`, which
runs the call synchronously so unit tests stay deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
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
        return deferToThreadPool(self._reactor, self.pool, fn, *args, **kwargs)  # type: ignore[arg-type]
