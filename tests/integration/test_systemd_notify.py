"""sd_notify against the real daemon: a real AF_UNIX datagram socket stands in for systemd."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from radmfa.radius.codec import STATUS_SERVER, encode_request, verify_reply
from tests.integration.test_daemon import STRICT_SECRET, base_config
from tests.support.daemon import RadmfaDaemon
from tests.support.notify import NotifySocket
from tests.support.radius_client import RadiusTestClient
from tests.support.slapd import Slapd

pytestmark = pytest.mark.integration


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


def status_server_answered(port: int) -> bool:
    client = RadiusTestClient(port, STRICT_SECRET.encode(), source="127.0.0.3")
    try:
        request = encode_request(
            STRICT_SECRET.encode(), code=STATUS_SERVER, identifier=7, message_authenticator=True
        )
        client.send_raw(request)
        reply = client.receive_raw(timeout=5)
        return reply is not None and verify_reply(reply, request[4:20], STRICT_SECRET.encode())
    finally:
        client.close()


def test_ready_reload_watchdog_and_stopping_in_order(slapd: Slapd, tmp_path, notify):
    d = RadmfaDaemon(tmp_path / "radmfa", base_config(slapd))
    # 0.4 s watchdog: a ping every 0.2 s.
    d.extra_env = notify.env(WATCHDOG_USEC="400000")
    d.start()
    try:
        ready = notify.wait_for("READY=1")
        # READY=1 promised a bound socket: the very next packet must be answered.
        assert status_server_answered(d.port)
        assert "answering on 127.0.0.1" in ready.fields["STATUS"]
        assert not notify.with_key("RELOADING")

        # Watchdog pings at about half the interval, from the reactor.
        first = notify.wait_for("WATCHDOG=1")
        tenth = notify.wait_for("WATCHDOG=1", count=10)
        spacing = (tenth.at - first.at) / 9
        assert 0.1 < spacing < 0.6, spacing  # loose: a busy machine delays timers

        d.signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING=1")
        again = notify.wait_for("READY=1", count=2)
        assert reloading.at <= again.at
        usec = int(reloading.fields["MONOTONIC_USEC"])
        assert abs(usec / 1e6 - time.monotonic()) < 30  # the same CLOCK_MONOTONIC
        d.wait_for_log("configuration reloaded")

        # A bad config: the reload still ends with READY=1, saying it was refused.
        d.config_path.write_text(d.config_path.read_text() + "\nbogus_key: 1\n")
        d.signal(signal.SIGHUP)
        refused = notify.wait_for("READY=1", count=3)
        assert "reload refused" in refused.fields["STATUS"]
        order = [k for n in notify.poll() for k in ("READY", "RELOADING") if k in n.fields]
        assert order == ["READY", "RELOADING", "READY", "RELOADING", "READY"]
    finally:
        assert d.stop() == 0
    stopping = notify.wait_for("STOPPING=1")
    assert stopping.at >= refused.at
    assert "radmfa stopped" in d.log()


def test_abstract_socket_and_no_watchdog_for_another_pid(slapd: Slapd, tmp_path):
    notify = NotifySocket(abstract=True)
    d = RadmfaDaemon(tmp_path / "radmfa", base_config(slapd))
    # WATCHDOG_PID names another process: the pings are not ours to send.
    d.extra_env = notify.env(WATCHDOG_USEC="200000", WATCHDOG_PID="1")
    d.start()
    try:
        notify.wait_for("READY=1")
        assert status_server_answered(d.port)  # a round trip: the reactor had time to ping
        assert not notify.with_key("WATCHDOG")
    finally:
        assert d.stop() == 0
        notify.close()


def test_workers_supervisor_speaks_for_all_and_kills_a_hung_worker(slapd, tmp_path, notify):
    config = base_config(slapd)
    config["radius"] = {"reject_delay": 0, "workers": 2}
    d = RadmfaDaemon(tmp_path / "radmfa", config)
    d.extra_env = notify.env(WATCHDOG_USEC="2000000")
    d.start()
    try:
        ready = notify.wait_for("READY=1")
        assert "2 workers" in ready.fields["STATUS"]
        # The supervisor announced only after both workers were ready.
        assert "radmfa worker 0 ready" in d.log() and "radmfa worker 1 ready" in d.log()
        notify.wait_for("WATCHDOG=1", count=2)

        d.signal(signal.SIGHUP)
        notify.wait_for("READY=1", count=2)
        assert d.log().count("configuration reloaded") == 2  # both reloaded before READY

        # A worker whose event loop stops is killed and started again.
        os.kill(worker_pid(d, 0), signal.SIGSTOP)
        d.wait_for_log("worker 0 sent no heartbeat", timeout=15)
        d.wait_for_log("radmfa worker 0 ready", count=2, timeout=15)
        assert status_server_answered(d.port)
    finally:
        assert d.stop() == 0
    notify.wait_for("STOPPING=1")


def worker_pid(d: RadmfaDaemon, index: int) -> int:
    """The pid of worker ``index``, a child of the supervisor (from /proc)."""
    assert d.process is not None
    main = d.process.pid
    children = Path(f"/proc/{main}/task/{main}/children").read_text().split()
    for pid in children:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"--worker" in argv and argv[argv.index(b"--worker") + 1] == str(index).encode():
            return int(pid)
    raise AssertionError(f"no worker {index} among {children}")
