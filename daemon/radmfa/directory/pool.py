"""Connections to one LDAP server for one purpose, shared by the checks in flight.

A :class:`ConnectionPool` knows nothing of LDAP: it hands a :class:`PooledConnection` with
room to an operation, opens one more (up to ``size``) when all are busy, queues what does not
fit (FIFO, bounded across pools by a :class:`Gauge`), forgets connections that die and fails
its queue when the server cannot be reached. The errors here are the ones every engine's
connections raise, so the check above can tell "nothing was sent" from "sent, no answer".
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from radmfa.directory.answers import LdapAnswer

__all__ = [
    "ConnectionFailed",
    "ConnectionPool",
    "Gauge",
    "LdapError",
    "NotSent",
    "OperationFailed",
    "PooledConnection",
    "QueueFull",
    "ServiceBindRefused",
]

log = Logger(namespace="radmfa.directory.pool")

T = TypeVar("T")


class LdapError(Exception):
    """Base of the connection-level errors of the pooled LDAP engine."""


class ConnectionFailed(LdapError):
    """No usable connection: connect, TLS, StartTLS or the service bind did not work out.

    Nothing of the caller's operation was sent, so another server may be tried.
    """


class ServiceBindRefused(LdapError):
    """The server judged the service account's credentials and said no: a final answer."""

    def __init__(self, answer: LdapAnswer) -> None:
        super().__init__(f"{answer.description} ({answer.code})")
        self.answer = answer


class NotSent(LdapError):
    """The connection was gone before the request was written; it may go on another one."""


class OperationFailed(LdapError):
    """The request was written but no answer came (timeout, connection lost, garbage)."""

    def __init__(self, reason: str, *, retriable: bool) -> None:
        super().__init__(reason)
        #: The server closed a connection that looked fine: a stale pooled connection, worth
        #: one more try on another. False after a timeout (that server is not answering).
        self.retriable = retriable


class QueueFull(LdapError):
    """Too many operations already wait for a connection."""


class PooledConnection(Protocol):
    """What a pool needs of a connection: whether it is usable, how many operations it
    carries, closing it, and the two hooks through which it reports back."""

    alive: bool
    on_idle: Callable[[Any], None] | None
    on_lost: Callable[[Any], None] | None

    @property
    def outstanding(self) -> int: ...

    def close(self) -> None: ...


C = TypeVar("C", bound=PooledConnection)


class Gauge:
    """Operations waiting for a connection, across all pools of one checker."""

    __slots__ = ("limit", "waiting")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waiting = 0


class _Waiter(Generic[C]):
    """One submitted operation; ``queued`` while it waits in the pool's FIFO."""

    __slots__ = ("operation", "queued", "result")

    def __init__(self, operation: Callable[[C], Deferred[Any]], pool: ConnectionPool[C]) -> None:
        self.operation = operation
        self.queued = False
        self.result: Deferred[Any] = Deferred(lambda _d: pool._cancel(self))


class ConnectionPool(Generic[C]):
    """Connections to one server for one purpose; each carries at most ``depth`` operations.

    :meth:`submit` runs ``operation(connection)`` on the least busy live connection, opening
    one more (up to ``size``) when all are busy, and otherwise queues it (FIFO, bounded by the
    shared gauge). Connections that die are forgotten at once and replaced on demand. When the
    server cannot be reached and no connection is left, every queued operation fails with the
    reason, so a dead server costs one connect attempt per burst, not one per request.

    Cancelling the Deferred from :meth:`submit` removes a queued operation; one already sent
    runs to completion (its connection stays busy until the answer or the timeout).
    """

    def __init__(
        self,
        open_connection: Callable[[], Deferred[C]],
        *,
        size: int,
        depth: int,
        gauge: Gauge,
        name: str = "",
    ) -> None:
        self._open = open_connection
        self.size = max(1, size)
        self.depth = max(1, depth)
        self._gauge = gauge
        self.name = name
        self._ready: list[C] = []
        self._opening: set[Deferred[C]] = set()
        self._queue: deque[_Waiter[C]] = deque()
        self._closed = False
        #: The connection that answered last (a cheap first guess for :meth:`_pick`).
        self._spare: C | None = None

    @property
    def connections(self) -> int:
        return len(self._ready)

    def submit(self, operation: Callable[[C], Deferred[T]]) -> Deferred[T]:
        if self._closed:
            return fail(ConnectionFailed("LDAP checker is closed"))
        if not self._queue:
            conn = self._pick()
            if conn is not None:
                if conn.outstanding:  # sharing a pipelined connection: add one if allowed
                    self._grow()
                # Sent at once: the caller waits on the request's own Deferred (the usual
                # case, one Deferred less). Cancelling it only stops the waiting; the request
                # keeps its connection busy until the answer or the timeout, as when queued.
                try:
                    return operation(conn)
                except NotSent:  # died since its last answer; nothing left: pick again
                    self._lost(conn)
                    return self.submit(operation)
                except Exception:
                    return fail(Failure())
        waiter: _Waiter[C] = _Waiter(operation, self)
        if self._gauge.waiting >= self._gauge.limit:
            return fail(QueueFull("LDAP queue full"))
        waiter.queued = True
        self._gauge.waiting += 1
        self._queue.append(waiter)
        self._grow()
        return waiter.result

    def close(self) -> None:
        self._closed = True
        for opening in list(self._opening):
            opening.cancel()
        ready, self._ready, self._spare = self._ready, [], None
        for conn in ready:
            conn.close()
        self._fail_queue(Failure(ConnectionFailed("LDAP checker is closed")))

    # -- internals --

    def _pick(self) -> C | None:
        """The least busy live connection with room, if any."""
        spare = self._spare  # the one that answered last: under load, nearly always free
        if spare is not None and spare.alive and not spare.outstanding:
            return spare
        best: C | None = None
        for conn in self._ready:
            load = conn.outstanding
            if load == 0:
                return conn
            if load < self.depth and (best is None or load < best.outstanding):
                best = conn
        return best

    def _grow(self) -> None:
        if self._closed or len(self._ready) + len(self._opening) >= self.size:
            return
        opening = self._open()
        if opening.called:  # failed at once (or a test double): handle synchronously
            opening.addCallbacks(self._opened, self._open_failed)
            return
        self._opening.add(opening)
        opening.addBoth(self._forget_opening, opening)
        opening.addCallbacks(self._opened, self._open_failed)

    def _forget_opening(self, result: Any, opening: Deferred[Any]) -> Any:
        self._opening.discard(opening)
        return result

    def _opened(self, conn: C) -> None:
        if self._closed:
            conn.close()
            return
        if not conn.alive:  # lost in the moment it became ready: a failed attempt like any other
            self._open_failed(Failure(ConnectionFailed("connection lost during set-up")))
            return
        conn.on_idle = self._idle
        conn.on_lost = self._lost
        self._ready.append(conn)
        self._serve()

    def _open_failed(self, failure: Failure) -> None:
        if failure.check(CancelledError) and self._closed:
            return None
        if not failure.check(LdapError):
            log.failure("LDAP: opening a connection failed unexpectedly", failure)
        if not self._ready and not self._opening:
            self._fail_queue(failure)
        return None

    def _fail_queue(self, failure: Failure) -> None:
        queue, self._queue = self._queue, deque()
        for waiter in queue:
            if waiter.queued:
                waiter.queued = False
                self._gauge.waiting -= 1
                waiter.result.errback(failure)

    def _idle(self, conn: C) -> None:
        self._spare = conn
        if self._queue:
            self._serve()

    def _lost(self, conn: C) -> None:
        if self._spare is conn:
            self._spare = None
        try:
            self._ready.remove(conn)
        except ValueError:
            pass
        if self._queue:
            self._grow()

    def _serve(self) -> None:
        while self._queue:
            conn = self._pick()
            if conn is None:
                self._grow()
                return
            waiter = self._queue.popleft()
            if not waiter.queued:
                continue  # cancelled while it waited
            waiter.queued = False
            self._gauge.waiting -= 1
            self._run(waiter, conn)

    def _run(self, waiter: _Waiter[C], conn: C) -> None:
        try:
            sent = waiter.operation(conn)
        except NotSent:
            # The connection died between its last answer and now: the request never left,
            # so it may go on another connection (a user bind included).
            self._lost(conn)
            waiter.queued = True
            self._gauge.waiting += 1
            self._queue.appendleft(waiter)
            self._grow()
            self._serve()
            return
        except Exception:
            waiter.result.errback(Failure())
            return
        sent.addBoth(self._deliver, waiter)

    def _deliver(self, result: Any, waiter: _Waiter[C]) -> None:
        if waiter.result.called:  # the caller stopped waiting; drop the late answer
            return None
        if isinstance(result, Failure):
            waiter.result.errback(result)
        else:
            waiter.result.callback(result)
        return None

    def _cancel(self, waiter: _Waiter[C]) -> None:
        if waiter.queued:
            waiter.queued = False
            self._gauge.waiting -= 1
