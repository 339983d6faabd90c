"""Tell systemd how the daemon is doing (sd_notify), without libsystemd.

The protocol is small: each message is one datagram of ``KEY=VALUE`` lines sent to the
AF_UNIX/SOCK_DGRAM socket named in ``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract
namespace). Outside systemd the variable is unset and every call does nothing.

The watchdog pings come from a :class:`~twisted.internet.task.LoopingCall` on the reactor's
clock, so they prove the event loop is still turning: a reactor stuck in a blocking call stops
pinging, and systemd kills and restarts the service after ``WatchdogSec=``.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger(namespace="radmfa.notify")

#: Variables systemd sets for the main process; workers must not see them.
NOTIFY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class DatagramSender(Protocol):
    """What the notifier needs of a socket (a fake in tests)."""

    def sendto(self, data: bytes, address: Any, /) -> int: ...

    def close(self) -> None: ...


def _unix_datagram_socket() -> DatagramSender:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    sock.setblocking(False)  # never stall the reactor on a full queue: drop the message
    return sock


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock ``MONOTONIC_USEC=`` is measured on."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def socket_address(value: str) -> str | bytes:
    """``$NOTIFY_SOCKET`` as a sendto address: ``@name`` is ``\\0name`` (abstract namespace)."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """``WATCHDOG_USEC`` in seconds when it applies to process ``pid`` (sd_watchdog_enabled)."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(usec) / 1_000_000


class Notifier:
    """Sends state changes to systemd; every method is a no-op when ``address`` is None."""

    def __init__(
        self,
        address: str | bytes | None,
        clock: IReactorTime,
        *,
        watchdog: float | None = None,
        socket_factory: Callable[[], DatagramSender] = _unix_datagram_socket,
        monotonic: Callable[[], int] = monotonic_usec,
    ) -> None:
        self.address = address
        self.clock = clock
        #: The WatchdogSec= interval in seconds (pings go out at half of it), or None.
        self.watchdog = watchdog
        self._socket_factory = socket_factory
        self._monotonic = monotonic
        self._sock: DatagramSender | None = None
        self._complained = False
        self._pinger = LoopingCall(self.ping)
        self._pinger.clock = clock

    @classmethod
    def from_environ(
        cls, clock: IReactorTime, environ: Mapping[str, str] | None = None, **kwargs: Any
    ) -> Notifier:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET")
        address = socket_address(raw) if raw else None
        watchdog = watchdog_interval(env, os.getpid()) if address is not None else None
        return cls(address, clock, watchdog=watchdog, **kwargs)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """One datagram holding ``lines``; False (logged once) when it could not be sent."""
        if self.address is None:
            return False
        data = "\n".join(lines).encode("utf-8") + b"\n"
        try:
            if self._sock is None:
                self._sock = self._socket_factory()
            self._sock.sendto(data, self.address)
        except OSError as e:
            if not self._complained:
                self._complained = True
                log.warn(
                    "cannot notify systemd at {address!r}: {err}", address=self.address, err=str(e)
                )
            return False
        return True

    def ready(self, status: str | None = None) -> None:
        """Start-up or reload finished: ``systemctl start``/``reload`` return now."""
        self.send("READY=1", *_status(status))

    def reloading(self, status: str = "reloading the configuration") -> None:
        self.send("RELOADING=1", f"MONOTONIC_USEC={self._monotonic()}", *_status(status))

    def stopping(self, status: str = "finishing requests in flight") -> None:
        self.send("STOPPING=1", *_status(status))

    def status(self, text: str) -> None:
        self.send(*_status(text))

    def ping(self) -> None:
        self.send("WATCHDOG=1")

    def start_watchdog(self) -> None:
        """Ping at half the interval, from the reactor, until :meth:`stop_watchdog`."""
        if self.address is None or self.watchdog is None or self._pinger.running:
            return
        self._pinger.start(self.watchdog / 2, now=True)

    def stop_watchdog(self) -> None:
        if self._pinger.running:
            self._pinger.stop()

    def close(self) -> None:
        self.stop_watchdog()
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    return ("STATUS=" + " ".join(text.split()),)  # one line: newlines would end the field
