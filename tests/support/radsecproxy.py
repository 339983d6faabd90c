"""Debian's radsecproxy as a real RadSec client: RADIUS/UDP in on loopback, RADIUS/TLS out to
radmfa. radclient and pam_radius speak only UDP; radsecproxy carries their requests over TLS.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from tests.support.daemon import deadline_poll
from tests.support.ports import free_port
from tests.support.processes import terminate

FRONT_SECRET = "radsecproxy-front-secret-0001"


class RadsecProxy:
    """One radsecproxy process: ``port`` takes UDP from 127.0.0.1 with ``FRONT_SECRET``."""

    def __init__(
        self,
        workdir: Path,
        *,
        server_port: int,
        ca_file: Path,
        cert_file: Path,
        key_file: Path,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port("udp")
        self.config_path = workdir / "radsecproxy.conf"
        self.log_path = workdir / "radsecproxy.log"
        # Only loopback: ListenUDP is explicit (radsecproxy's default is every address), and
        # no ListenTLS, so it opens no TLS port of its own.
        self.config_path.write_text(
            f"""\
ListenUDP 127.0.0.1:{self.port}
LogLevel 4
LogDestination file:///{self.log_path}
PidFile {workdir / "radsecproxy.pid"}

tls default {{
    CACertificateFile {ca_file}
    CertificateFile {cert_file}
    CertificateKeyFile {key_file}
}}

client front {{
    host 127.0.0.1
    type udp
    secret {FRONT_SECRET}
}}

server radmfa {{
    host 127.0.0.1
    port {server_port}
    type tls
    secret radsec
}}

realm * {{
    server radmfa
}}
"""
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = open(self.workdir / "radsecproxy.out", "ab")
        self.process = subprocess.Popen(
            ["radsecproxy", "-f", "-c", str(self.config_path)], stdout=out, stderr=out
        )
        out.close()

        def listening() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"radsecproxy exited:\n{self.log()}")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind(("127.0.0.1", self.port))
                except OSError:
                    return True  # taken: radsecproxy has bound it
            return False

        deadline_poll(listening, 10, what="radsecproxy to listen")

    def log(self) -> str:
        parts = []
        for path in (self.log_path, self.workdir / "radsecproxy.out"):
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process, 10)
            self.process = None
