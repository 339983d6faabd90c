"""The connection pool on its own (radmfa.directory.pool), with scripted connections: which
connection an operation gets, what waits and for how long, and what a dead connection or an
unreachable server does to the operations waiting. No LDAP, no reactor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed

from radmfa.directory.pool import (
    ConnectionFailed,
    ConnectionPool,
    Gauge,
    NotSent,
    QueueFull,
)


class ScriptedConnection:
    """A pooled connection whose operations stay outstanding until :meth:`answer`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.alive = True
        self.on_idle: Callable[[Any], None] | None = None
        self.on_lost: Callable[[Any], None] | None = None
        self.pending: list[Deferred[str]] = []
        self.sent: list[str] = []
        #: The next operation finds the connection dead (nothing sent).
        self.dead_on_send = False
        self.closed = False

    @property
    def outstanding(self) -> int:
        return len(self.pending)

    def send(self, what: str) -> Deferred[str]:
        if self.dead_on_send or not self.alive:
            self.alive = False
            raise NotSent("gone")
        self.sent.append(what)
        answer: Deferred[str] = Deferred()
        self.pending.append(answer)
        return answer

    def answer(self) -> None:
        self.pending.pop(0).callback(f"{self.name}:{self.sent[-1 - len(self.pending)]}")
        if self.on_idle is not None:
            self.on_idle(self)

    def close(self) -> None:
        self.closed = True
        self.alive = False


class Opener:
    """``open_connection`` for the pool: answers at once, or holds until :meth:`finish`."""

    def __init__(self, *, immediate: bool = True) -> None:
        self.immediate = immediate
        self.made: list[ScriptedConnection] = []
        self.waiting: list[Deferred[ScriptedConnection]] = []
        self.refuse: Exception | None = None

    def __call__(self) -> Deferred[ScriptedConnection]:
        if self.refuse is not None:
            return fail(self.refuse)
        conn = ScriptedConnection(f"c{len(self.made) + 1}")
        self.made.append(conn)
        if self.immediate:
            return succeed(conn)
        opening: Deferred[ScriptedConnection] = Deferred()
        self.waiting.append(opening)
        return opening

    def finish(self) -> None:
        for opening, conn in zip(self.waiting, self.made[-len(self.waiting) :], strict=True):
            opening.callback(conn)
        self.waiting.clear()


def send(what: str) -> Callable[[ScriptedConnection], Deferred[str]]:
    return lambda conn: conn.send(what)


def results(deferreds: list[Deferred[Any]]) -> list[Any]:
    got: list[Any] = []
    for d in deferreds:
        d.addBoth(got.append)
    return got


def test_one_operation_at_a_time_opens_up_to_size_then_queues_in_order():
    opener = Opener()
    pool = ConnectionPool(opener, size=2, depth=1, gauge=Gauge(10))
    answers = results([pool.submit(send(f"op{i}")) for i in range(4)])
    assert [c.sent for c in opener.made] == [["op0"], ["op1"]]  # two connections, two waiting
    opener.made[0].answer()  # op0 done: c1 takes the next one in line
    opener.made[1].answer()
    assert [c.sent for c in opener.made] == [["op0", "op2"], ["op1", "op3"]]
    assert answers == ["c1:op0", "c2:op1"]


def test_pipelined_operations_go_to_the_least_busy_connection():
    opener = Opener()
    pool = ConnectionPool(opener, size=2, depth=3, gauge=Gauge(10))
    for i in range(5):
        pool.submit(send(f"op{i}"))
    loads = sorted(c.outstanding for c in opener.made)
    assert loads == [2, 3] and pool.connections == 2


def test_the_queue_is_bounded_by_the_shared_gauge():
    opener = Opener()
    gauge = Gauge(1)
    searches = ConnectionPool(opener, size=1, depth=1, gauge=gauge)
    binds = ConnectionPool(Opener(), size=1, depth=1, gauge=gauge)
    searches.submit(send("busy"))
    binds.submit(send("busy"))
    searches.submit(send("waits"))  # the one place in the gauge
    refused = results([binds.submit(send("one too many"))])
    assert refused[0].check(QueueFull)
    assert gauge.waiting == 1


def test_a_cancelled_waiter_leaves_the_queue_and_is_never_sent():
    opener = Opener()
    gauge = Gauge(5)
    pool = ConnectionPool(opener, size=1, depth=1, gauge=gauge)
    pool.submit(send("first"))
    waiting = pool.submit(send("second"))
    waiting.addErrback(lambda _f: None)
    waiting.cancel()
    assert gauge.waiting == 0
    opener.made[0].answer()
    assert opener.made[0].sent == ["first"]


def test_an_operation_on_a_connection_found_dead_goes_to_another():
    opener = Opener()
    pool = ConnectionPool(opener, size=2, depth=1, gauge=Gauge(5))
    pool.submit(send("warm"))
    first = opener.made[0]
    first.answer()
    first.dead_on_send = True  # closed by the server while idle
    answer = results([pool.submit(send("bind"))])
    first_alive = [c for c in opener.made if c is not first]
    assert first.sent == ["warm"] and [c.sent for c in first_alive] == [["bind"]]
    first_alive[0].answer()
    assert answer == ["c2:bind"]


def test_an_unreachable_server_fails_every_waiting_operation_with_its_reason():
    opener = Opener(immediate=False)
    pool = ConnectionPool(opener, size=1, depth=1, gauge=Gauge(5))
    waiting = results([pool.submit(send(f"op{i}")) for i in range(3)])
    assert len(opener.waiting) == 1  # one connect attempt for the burst
    opener.waiting.pop().errback(ConnectionFailed("connection refused"))
    assert [f.value.args for f in waiting] == [("connection refused",)] * 3


def test_close_closes_connections_and_fails_the_queue():
    opener = Opener()
    pool = ConnectionPool(opener, size=1, depth=1, gauge=Gauge(5))
    pool.submit(send("sent"))
    waiting = results([pool.submit(send("queued"))])
    pool.close()
    assert opener.made[0].closed
    assert waiting[0].check(ConnectionFailed)
    after = results([pool.submit(send("late"))])
    assert after[0].check(ConnectionFailed)


@pytest.mark.parametrize("size", [0, -3])
def test_size_and_depth_are_at_least_one(size: int):
    pool = ConnectionPool(Opener(), size=size, depth=size, gauge=Gauge(1))
    assert (pool.size, pool.depth) == (1, 1)
