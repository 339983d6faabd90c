"""Misbehaving TCP servers and relays on loopback, for timeout, failover and tampering tests."""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import Any


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


def _ldap_frame_length(buffer: bytes | bytearray) -> int | None:
    """Length of the complete LDAPMessage at the start of ``buffer``, None if incomplete."""
    if len(buffer) < 2:
        return None
    n, header = buffer[1], 2
    if n >= 0x80:
        count = n & 0x7F
        if len(buffer) < 2 + count:
            return None
        n, header = int.from_bytes(buffer[2 : 2 + count], "big"), 2 + count
    return header + n if len(buffer) >= header + n else None


def _is_extended_response(frame: bytes) -> bool:
    """Whether an LDAPMessage carries an ExtendedResponse ([APPLICATION 24], tag 0x78)."""
    header = 2 + (frame[1] & 0x7F if frame[1] >= 0x80 else 0)
    after_id = header + 2 + frame[header + 1]  # messageID: INTEGER, short length
    return frame[after_id] == 0x78


class StartTlsInjector:
    """A TCP relay to an LDAP server that appends ``inject`` to the server's StartTLS answer.

    What an attacker on the path can do: the bytes arrive in clear right behind the genuine
    ExtendedResponse, before the TLS handshake. Everything else is relayed unchanged, so the
    handshake and everything protected by it still happen end to end with the real server.
    ``injections`` counts the answers tampered with.
    """

    def __init__(self, upstream: tuple[str, int], inject: bytes, host: str = "127.0.0.1") -> None:
        self._upstream = upstream
        self._inject = inject
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(64)
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.injections = 0
        self._closed = threading.Event()
        self._spawn(self._accept_loop)

    @property
    def url(self) -> str:
        return f"ldap://{self.host}:{self.port}"

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="injector")
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            self._spawn(self._relay, client, server)
            self._spawn(self._tamper, server, client)

    @staticmethod
    def _relay(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _tamper(self, server: socket.socket, client: socket.socket) -> None:
        """Server to client: whole messages in clear until the StartTLS answer, then raw."""
        buffer = bytearray()
        try:
            while data := server.recv(65536):
                buffer += data
                while (length := _ldap_frame_length(buffer)) is not None:
                    frame = bytes(buffer[:length])
                    del buffer[:length]
                    if _is_extended_response(frame):
                        with self._lock:
                            self.injections += 1
                        client.sendall(frame + self._inject + bytes(buffer))
                        self._relay(server, client)
                        return
                    client.sendall(frame)
        except OSError:
            pass
        try:
            client.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self._closed.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in threads:
            thread.join(timeout=5)

    def __enter__(self) -> StartTlsInjector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
