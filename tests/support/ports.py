"""Free loopback ports for servers that tests start."""

from __future__ import annotations

import socket
from typing import Literal


def free_port(kind: Literal["tcp", "udp"] = "tcp", host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the kernel picks it; a small race is possible).

    Also the way to get a "closed port" for connection-refused tests: nobody binds it.
    """
    sock_type = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, sock_type) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
