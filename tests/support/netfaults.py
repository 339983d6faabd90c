"""Misbehaving TCP servers on loopback, for timeout and failover tests."""

from __future__ import annotations

import socket
import threading
from types import TracebackType


class Blackhole:
    """Accepts TCP connections, counts them, reads nothing back and never answers.

    A client that connects and sends a request waits until its own receive timeout. The
    connection count also proves that a client did *not* contact a server: a Blackhole placed
    second in a server list must see ``connections == 0`` when the first server answered.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(128)
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._accepted: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="blackhole", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"ldap://{self.host}:{self.port}"

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._accepted)

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._accepted.append(conn)

    def close(self) -> None:
        self._closed.set()
        # shutdown() wakes the thread blocked in accept(); close() alone does not on Linux.
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._thread.join(timeout=5)
        with self._lock:
            for conn in self._accepted:
                conn.close()

    def __enter__(self) -> Blackhole:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
