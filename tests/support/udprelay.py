"""One RADIUS service address in front of several servers, like a virtual IP that moves.

Clients such as pam_radius_auth send the answer to an Access-Challenge only to the server that
sent the challenge (pam_radius forgets the rest of its server list once one answered). Sites
that must survive a node dying between the two requests put the nodes behind one address
(keepalived, a load balancer). :class:`UdpRelay` is that address on loopback: datagrams sent to
it go to :attr:`UdpRelay.target`, from one upstream socket per client, and the answers go back
to the client from the relay's own address. Moving the address is setting ``target``.
"""

from __future__ import annotations

import selectors
import socket
import threading
from types import TracebackType
from typing import cast


class UdpRelay:
    """Forwards each client's datagrams to ``target`` and the replies back, on a thread."""

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target = (host, target_port)
        self._front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._front.bind((host, 0))
        self.port: int = self._front.getsockname()[1]
        #: One upstream socket per client address, so replies find their way back.
        self._upstream: dict[tuple[str, int], socket.socket] = {}
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._front, selectors.EVENT_READ, None)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="udp-relay", daemon=True)
        self._thread.start()

    def move_to(self, target_port: int) -> None:
        """Send what comes next to another server (the address moved)."""
        self.target = (self.host, target_port)

    def _loop(self) -> None:
        while not self._closed.is_set():
            for key, _ in self._selector.select(timeout=0.05):
                sock = cast(socket.socket, key.fileobj)  # only sockets are registered
                try:
                    data, source = sock.recvfrom(65535)
                except OSError:  # e.g. ICMP port unreachable from a stopped server
                    continue
                if key.data is None:
                    self._upstream_for(source).sendto(data, self.target)
                else:
                    self._front.sendto(data, key.data)

    def _upstream_for(self, client: tuple[str, int]) -> socket.socket:
        sock = self._upstream.get(client)
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((self.host, 0))
            self._upstream[client] = sock
            self._selector.register(sock, selectors.EVENT_READ, client)
        return sock

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        for sock in [self._front, *self._upstream.values()]:
            sock.close()
        self._selector.close()

    def __enter__(self) -> UdpRelay:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
