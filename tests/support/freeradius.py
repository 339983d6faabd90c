"""FreeRADIUS 3.2 in front of radmfa, as a Wi-Fi deployment runs it: EAP-TTLS terminated by
FreeRADIUS, the inner PAP request proxied to radmfa. The raddb is contrib/freeradius-eap/raddb
(the documented snippets, so the documentation is what is tested), rendered into a private
directory; /etc/freeradius and the system service are never used."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from radmfa.radius import codec
from tests.support.certs import make_ca, make_server_cert
from tests.support.ports import free_port
from tests.support.processes import terminate

FREERADIUS = "/usr/sbin/freeradius"
EAPOL_TEST = "/usr/bin/eapol_test"
RADDB = Path(__file__).resolve().parents[2] / "contrib" / "freeradius-eap" / "raddb"
_MARKER = re.compile(r"@([a-z_]+)@")


class FreeRadiusFront:
    """One FreeRADIUS process proxying to radmfa at ``radmfa_port`` with ``radmfa_secret``."""

    def __init__(self, workdir: Path, *, radmfa_port: int, radmfa_secret: str) -> None:
        self.workdir = workdir.resolve()
        self.raddb = self.workdir / "raddb"
        self.port = free_port("udp")
        self.secret = "ap-secret-for-the-test-0001"
        ca = make_ca(self.workdir / "pki", "eap test CA")
        server = make_server_cert(self.workdir / "pki", ca, ["radius.example.org"])
        self.ca_cert = ca.cert_path
        self._values = {
            "raddb": str(self.raddb),
            "workdir": str(self.workdir),
            "port": str(self.port),
            "inner_port": str(free_port("udp")),
            "ap_secret": f'"{self.secret}"',
            "radmfa_port": str(radmfa_port),
            "radmfa_secret": f'"{radmfa_secret}"',
            "server_key": str(server.key_path),
            "server_cert": str(server.cert_path),
            "ca_cert": str(ca.cert_path),
        }
        self._proc: subprocess.Popen[bytes] | None = None
        self._write()

    def _write(self) -> None:
        shutil.rmtree(self.raddb, ignore_errors=True)
        for source in RADDB.rglob("*"):
            if source.is_dir():
                continue
            target = self.raddb / source.relative_to(RADDB)
            target.parent.mkdir(parents=True, exist_ok=True)
            text = _MARKER.sub(lambda m: self._values[m.group(1)], source.read_text())
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
        os.chmod(self.raddb, 0o750)

    def start(self, timeout: float = 15.0) -> None:
        out = open(self.workdir / "freeradius.out", "ab")
        self._proc = subprocess.Popen(
            [FREERADIUS, "-X", "-d", str(self.raddb)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        deadline = time.monotonic() + timeout
        while not self._answers_status_server():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"freeradius did not start:\n{self.output()[-4000:]}")
            time.sleep(0.1)

    def _answers_status_server(self) -> bool:
        packet = codec.encode_request(
            self.secret.encode(), code=codec.STATUS_SERVER, message_authenticator=True
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            sock.sendto(packet, ("127.0.0.1", self.port))
            try:
                reply = sock.recv(4096)
            except OSError:
                return False
        return codec.verify_reply(
            reply, packet[4:20], self.secret.encode(), require_message_authenticator=False
        )

    def output(self) -> str:
        path = self.workdir / "freeradius.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self._proc is not None:
            terminate(self._proc, 10)
            self._proc = None

    def eapol_test(
        self,
        identity: str,
        password: str,
        *,
        anonymous: str | None = "anonymous",
        station: str = "02-00-00-00-00-01",
        nas: str = "ap-lobby",
    ) -> tuple[bool, str]:
        """One 802.1X authentication with TTLS/PAP, as a laptop does it: True on EAP-Success."""
        conf = self.workdir / f"eapol-{time.monotonic_ns()}.conf"
        lines = [
            "network={",
            '  ssid="radmfa-test"',
            "  key_mgmt=WPA-EAP",
            "  eap=TTLS",
            f'  identity="{identity}"',
            f'  password="{password}"',
            '  phase2="auth=PAP"',
            f'  ca_cert="{self.ca_cert}"',
        ]
        if anonymous is not None:
            lines.append(f'  anonymous_identity="{anonymous}"')
        conf.write_text("\n".join([*lines, "}", ""]))
        done = subprocess.run(
            [
                EAPOL_TEST,
                "-c", str(conf),
                "-a", "127.0.0.1",
                "-p", str(self.port),
                "-s", self.secret,
                "-M", station.replace("-", ":").lower(),
                "-N", f"32:s:{nas}",
                "-t", "15",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )  # fmt: skip
        conf.unlink()
        out = done.stdout + done.stderr
        return done.returncode == 0 and out.rstrip().endswith("SUCCESS"), out
