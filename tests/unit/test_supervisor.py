"""The supervisor's bookkeeping with a fake process reactor: readiness, reloads, heartbeats."""

from __future__ import annotations

import os
import signal

import pytest
from twisted.internet.task import Clock

from radmfa import supervisor as sup
from radmfa.supervisor import READY_FD, Supervisor, SupervisorChannel


class FakeTransport:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[int] = []

    def signalProcess(self, sig: int) -> None:
        self.signals.append(sig)


class FakeProcessReactor(Clock):
    """A Clock that records spawned processes instead of starting them."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[object, dict[str, str], FakeTransport]] = []

    def spawnProcess(self, protocol, executable, args, env, childFDs):
        transport = FakeTransport(1000 + len(self.spawned))
        self.spawned.append((protocol, env, transport))
        return transport

    def addSystemEventTrigger(self, *args):
        pass


def started(monkeypatch, workers: int = 2, **kw) -> tuple[Supervisor, FakeProcessReactor, list]:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    reactor = FakeProcessReactor()
    announced: list[bool] = []
    s = Supervisor(reactor, ["-m", "radmfa"], workers, lambda: announced.append(True), **kw)
    s.start()
    return s, reactor, announced


def say(s: Supervisor, index: int, data: bytes) -> None:
    s.workers[index][0].childDataReceived(READY_FD, data)


def test_workers_get_no_notify_socket_but_their_extra_environment(monkeypatch):
    _s, reactor, _ = started(
        monkeypatch, watchdog=20.0, extra_env={"PROMETHEUS_MULTIPROC_DIR": "/x"}
    )
    for _proto, env, _transport in reactor.spawned:
        assert "NOTIFY_SOCKET" not in env and "WATCHDOG_USEC" not in env
        assert env["PROMETHEUS_MULTIPROC_DIR"] == "/x"
        assert env[sup.HEARTBEAT_ENV] == "5"
        assert env[sup.READY_ENV] == str(READY_FD)


def test_ready_once_every_worker_is_ready_even_with_split_lines(monkeypatch):
    s, _, announced = started(monkeypatch)
    say(s, 0, b"rea")
    say(s, 0, b"dy\n")
    assert announced == []
    say(s, 1, b"ready\nalive\n")
    assert announced == [True]
    say(s, 1, b"ready\n")
    assert announced == [True]


def test_reload_fires_once_all_workers_answered(monkeypatch):
    s, reactor, _ = started(monkeypatch)
    results: list[bool] = []
    s.reload().addCallback(results.append)
    assert all(t.signals == [signal.SIGHUP] for _, _, t in reactor.spawned)
    say(s, 0, b"reloaded ok\n")
    assert results == []
    say(s, 1, b"reloaded ok\n")
    assert results == [True]


@pytest.mark.logs_errors
def test_reload_refused_by_a_worker_or_timed_out_is_false(monkeypatch):
    s, reactor, _ = started(monkeypatch)
    results: list[bool] = []
    s.reload().addCallback(results.append)
    say(s, 0, b"reloaded failed\n")
    say(s, 1, b"reloaded ok\n")
    s.reload().addCallback(results.append)
    say(s, 0, b"reloaded ok\n")
    reactor.advance(sup.RELOAD_TIMEOUT)
    assert results == [False, False]


@pytest.mark.logs_errors
def test_a_silent_worker_is_killed_and_a_chatty_one_is_not(monkeypatch):
    s, reactor, _ = started(monkeypatch, watchdog=4.0)
    say(s, 0, b"ready\n")
    say(s, 1, b"ready\n")
    for _ in range(8):  # 8 s: worker 1 keeps saying it is alive, worker 0 hangs
        reactor.advance(1.0)
        say(s, 1, b"alive\n")
    (_, _, t0), (_, _, t1) = reactor.spawned
    assert t0.signals == [signal.SIGKILL] and t1.signals == []


def test_channel_writes_one_line_per_message_and_beats_on_the_clock():
    read_end, write_end = os.pipe()
    try:
        channel = SupervisorChannel(write_end, heartbeat=5.0)
        clock = Clock()
        channel.ready()
        channel.reloaded(False)
        channel.start_heartbeat(clock)
        clock.advance(5)
        assert os.read(read_end, 1000) == b"ready\nreloaded failed\nalive\nalive\n"
    finally:
        os.close(read_end)
        os.close(write_end)


def test_channel_without_supervisor_does_nothing():
    channel = SupervisorChannel.from_environ({})
    channel.ready()
    channel.start_heartbeat(Clock())
    assert channel.fd is None
