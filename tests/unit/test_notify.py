"""The sd_notify client with a fake socket and a fake clock, and once with a real socket."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from radmfa.notify import Notifier, socket_address, watchdog_interval


class FakeSocket:
    """Records datagrams; ``fail`` makes sendto raise like a vanished systemd."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, object]] = []
        self.fail: OSError | None = None
        self.closed = False

    def sendto(self, data: bytes, address: object, /) -> int:
        if self.fail is not None:
            raise self.fail
        self.sent.append((data, address))
        return len(data)

    def close(self) -> None:
        self.closed = True

    def messages(self) -> list[list[str]]:
        return [data.decode().splitlines() for data, _ in self.sent]


def notifier(watchdog: float | None = None) -> tuple[Notifier, FakeSocket, Clock]:
    sock, clock = FakeSocket(), Clock()
    n = Notifier(
        "/run/systemd/notify",
        clock,
        watchdog=watchdog,
        socket_factory=lambda: sock,
        monotonic=lambda: 123456789,
    )
    return n, sock, clock


def test_each_state_change_is_one_datagram_with_its_lines():
    n, sock, _ = notifier()
    n.ready("answering on 127.0.0.1:1812")
    n.reloading()
    n.ready()
    n.stopping()
    assert sock.messages() == [
        ["READY=1", "STATUS=answering on 127.0.0.1:1812"],
        ["RELOADING=1", "MONOTONIC_USEC=123456789", "STATUS=reloading the configuration"],
        ["READY=1"],
        ["STOPPING=1", "STATUS=finishing requests in flight"],
    ]
    assert {address for _, address in sock.sent} == {"/run/systemd/notify"}


def test_status_is_kept_on_one_line():
    n, sock, _ = notifier()
    n.status("two\nlines")
    assert sock.messages() == [["STATUS=two lines"]]


def test_without_notify_socket_nothing_is_sent():
    created: list[FakeSocket] = []
    n = Notifier.from_environ(Clock(), {}, socket_factory=lambda: created.append(FakeSocket()))
    n.ready()
    n.start_watchdog()
    assert not n.enabled and created == []


def test_abstract_namespace_address():
    assert socket_address("@systemd/notify") == b"\0systemd/notify"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"


@pytest.mark.parametrize(
    ("env", "pid", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 7, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 7, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, 7, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, 7, None),
        ({"WATCHDOG_USEC": "soon"}, 7, None),
        ({}, 7, None),
    ],
)
def test_watchdog_interval_from_the_environment(env, pid, expected):
    assert watchdog_interval(env, pid) == expected


def test_watchdog_pings_at_half_the_interval_on_the_reactor_clock():
    n, sock, clock = notifier(watchdog=10.0)
    n.start_watchdog()
    assert sock.messages() == [["WATCHDOG=1"]]  # at once
    clock.advance(4.9)
    assert len(sock.sent) == 1
    clock.advance(0.1)
    assert len(sock.sent) == 2
    for _ in range(10):
        clock.advance(5.0)
    assert len(sock.sent) == 12
    n.stop_watchdog()
    clock.advance(60)
    assert len(sock.sent) == 12


def test_a_stuck_reactor_sends_no_pings():
    """The pings are reactor timers: if its clock does not turn, systemd hears nothing."""
    n, sock, clock = notifier(watchdog=2.0)
    n.start_watchdog()
    sent = len(sock.sent)
    # (no clock.advance: the reactor is "stuck")
    assert len(sock.sent) == sent == 1
    assert clock.getDelayedCalls()  # the next ping waits on the reactor


def test_no_watchdog_without_interval():
    n, sock, clock = notifier(watchdog=None)
    n.start_watchdog()
    clock.advance(100)
    assert sock.sent == []


def test_send_failure_is_logged_once_and_never_raises():
    from twisted.logger import globalLogPublisher

    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        n, sock, _ = notifier()
        sock.fail = ConnectionRefusedError(111, "Connection refused")
        assert n.send("READY=1") is False
        assert n.send("WATCHDOG=1") is False
    finally:
        globalLogPublisher.removeObserver(events.append)
    warnings = [e for e in events if e.get("log_namespace") == "radmfa.notify"]
    assert len(warnings) == 1


def test_real_unix_datagram_socket_and_close():
    with tempfile.TemporaryDirectory(dir="/tmp") as directory:
        path = str(Path(directory) / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
            server.bind(path)
            n = Notifier.from_environ(Clock(), {"NOTIFY_SOCKET": path})
            n.ready("up")
            n.close()
            assert server.recv(100) == b"READY=1\nSTATUS=up\n"
