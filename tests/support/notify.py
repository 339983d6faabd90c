"""A stand-in for systemd's notification socket: a real AF_UNIX datagram socket to point
``$NOTIFY_SOCKET`` at, recording every message with the time it arrived."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from dataclasses import dataclass

from tests.support.daemon import deadline_poll


@dataclass(frozen=True)
class Notification:
    at: float  # time.monotonic() on arrival
    fields: dict[str, str]

    def __contains__(self, item: str) -> bool:
        key, _, value = item.partition("=")
        return self.fields.get(key) == value if value else key in self.fields


class NotifySocket:
    """Bound to a short path (AF_UNIX paths are limited to 108 bytes) or, with
    ``abstract=True``, to a name in the abstract namespace (``@name`` in the variable)."""

    def __init__(self, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._dir: str | None = None
        if abstract:
            name = f"radmfa-test-{os.getpid()}-{id(self)}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self._dir = tempfile.mkdtemp(prefix="rn", dir="/tmp")
            self.address = os.path.join(self._dir, "notify")
            self.sock.bind(self.address)
        self.sock.setblocking(False)
        self.received: list[Notification] = []

    def env(self, **extra: str) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.address, **extra}

    def poll(self) -> list[Notification]:
        """Read what has arrived; returns everything received so far."""
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.received
            fields = dict(
                line.partition("=")[::2] for line in data.decode().splitlines() if "=" in line
            )
            self.received.append(Notification(time.monotonic(), fields))

    def with_key(self, key: str) -> list[Notification]:
        return [n for n in self.poll() if key in n.fields]

    def wait_for(self, item: str, timeout: float = 15.0, count: int = 1) -> Notification:
        """The ``count``-th message containing ``item`` (``KEY=VALUE`` or ``KEY``)."""

        def counted() -> Notification | None:
            found = [n for n in self.poll() if item in n]
            return found[count - 1] if len(found) >= count else None

        return deadline_poll(
            counted,
            timeout,
            interval=0.02,
            what=f"{item} (#{count}) on the notify socket",
        )

    def close(self) -> None:
        self.sock.close()
        if self._dir is not None:
            for name in os.listdir(self._dir):
                os.unlink(os.path.join(self._dir, name))
            os.rmdir(self._dir)
