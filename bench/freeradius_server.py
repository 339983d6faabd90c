"""FreeRADIUS 3.2 doing radmfa's job (search-then-bind LDAP + appended TOTP), for benchmarks.

``FreeRadiusServer(workdir, port=..., secret=..., ldap_url=..., base_dn=..., bind_dn=...,
bind_password=...)`` writes a private raddb under ``workdir`` from the templates in
``bench/freeradius/`` and runs ``/usr/sbin/freeradius -f -d <raddb>`` in the foreground (one
multithreaded process, see :attr:`FreeRadiusServer.pid`). The system configuration in
/etc/freeradius and the system service are never used.

What the server does for each Access-Request (``bench/freeradius/site.conf``):

* ``User-Password = <password><code>``: the last 6 characters become ``TOTP-Password``, the rest
  goes back into ``User-Password``; fewer than 7 characters is an Access-Reject;
* rlm_ldap searches ``(uid=<User-Name>)`` under ``base_dn`` as ``bind_dn`` and copies the user's
  ``totp_attribute`` (base32 secret) into ``control:TOTP-Secret``; no entry or no secret rejects;
* ``Auth-Type ldap``: rlm_totp checks the code first, then rlm_ldap binds as the user's DN.
  Both must pass for an Access-Accept.

Settings not given to the constructor are the ones the Debian package ships: thread pool
start 5 / max 32 / spare 3..10, LDAP pool start 5 / min 3 / max = thread max / spare 10,
``reject_delay = 1``, ``cleanup_delay = 5``, ``max_request_time = 30``.

rlm_totp in 3.2.1 has no options (30 s step, 6 digits, SHA-1, fixed window) and keeps no state.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path
from types import TracebackType

from tests.support.processes import kill, terminate

FREERADIUS = "/usr/sbin/freeradius"
TEMPLATES = Path(__file__).resolve().parent / "freeradius"

#: What the Debian package ships in radiusd.conf / mods-available/ldap.
DEFAULT_THREADS = 32
DEFAULT_START_SERVERS = 5
DEFAULT_MIN_SPARE_SERVERS = 3
DEFAULT_MAX_SPARE_SERVERS = 10

_MARKER = re.compile(r"@([a-z_]+)@")
_ATTRIBUTE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")


class FreeRadiusError(RuntimeError):
    pass


def _quote(value: str) -> str:
    """A single-quoted FreeRADIUS config string (no ``${}`` or ``%{}`` expansion inside)."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(f"control characters cannot go into the FreeRADIUS config: {value!r}")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _render(template: str, values: dict[str, str]) -> str:
    def fill(match: re.Match[str]) -> str:
        try:
            return values[match.group(1)]
        except KeyError:
            raise KeyError(f"no value for @{match.group(1)}@ in a FreeRADIUS template") from None

    return _MARKER.sub(fill, template)


def status_server_packet(secret: bytes, identifier: int) -> tuple[bytes, bytes]:
    """(packet, request authenticator) of a Status-Server with Message-Authenticator."""
    authenticator = os.urandom(16)
    attrs = bytes([80, 18]) + bytes(16)
    header = struct.pack("!BBH", 12, identifier, 20 + len(attrs))
    mac = hmac.new(secret, header + authenticator + attrs, hashlib.md5).digest()
    return header + authenticator + bytes([80, 18]) + mac, authenticator


def _reply_ok(reply: bytes, identifier: int, authenticator: bytes, secret: bytes) -> bool:
    if len(reply) < 20 or reply[0] != 2 or reply[1] != identifier:
        return False
    length = struct.unpack("!H", reply[2:4])[0]
    if length > len(reply):
        return False
    expected = hashlib.md5(reply[:4] + authenticator + reply[20:length] + secret).digest()
    return hmac.compare_digest(expected, reply[4:20])


class FreeRadiusServer:
    """One FreeRADIUS process with its own raddb, log and pid file under ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int,
        secret: str,
        ldap_url: str,
        base_dn: str,
        bind_dn: str,
        bind_password: str,
        totp_attribute: str = "description",
        reject_delay: int = 1,
        threads: int | None = None,
        ldap_pool: int | None = None,
    ) -> None:
        if not _ATTRIBUTE.match(totp_attribute):
            raise ValueError(f"not an LDAP attribute name: {totp_attribute!r}")
        if not 0 <= reject_delay <= 10:
            raise ValueError("reject_delay must be 0..10 seconds (FreeRADIUS's own limits)")
        if threads is not None and threads < 1:
            raise ValueError("threads must be at least 1")
        if ldap_pool is not None and ldap_pool < 1:
            raise ValueError("ldap_pool must be at least 1")
        self.workdir = Path(workdir).resolve()
        self.raddb = self.workdir / "raddb"
        self.log_path = self.workdir / "radius.log"
        self.output_path = self.workdir / "freeradius.out"
        self.port = port
        self.secret = secret
        self.reject_delay = reject_delay
        self.max_servers = threads if threads is not None else DEFAULT_THREADS
        self.start_servers = min(DEFAULT_START_SERVERS, self.max_servers)
        self.min_spare_servers = min(DEFAULT_MIN_SPARE_SERVERS, self.max_servers)
        self.max_spare_servers = min(DEFAULT_MAX_SPARE_SERVERS, self.max_servers)
        #: LDAP pool size; FreeRADIUS ships ``max = ${thread[pool].max_servers}``.
        self.ldap_pool_max = ldap_pool if ldap_pool is not None else self.max_servers
        self.ldap_pool_start = min(DEFAULT_START_SERVERS, self.ldap_pool_max)
        self.ldap_pool_min = min(DEFAULT_MIN_SPARE_SERVERS, self.ldap_pool_max)
        self.ldap_pool_spare = min(DEFAULT_MAX_SPARE_SERVERS, self.ldap_pool_max)
        self._values = {
            "workdir": str(self.workdir),
            "raddb": str(self.raddb),
            "port": str(int(port)),
            "secret": _quote(secret),
            "ldap_url": _quote(ldap_url),
            "base_dn": _quote(base_dn),
            "bind_dn": _quote(bind_dn),
            "bind_password": _quote(bind_password),
            "totp_attribute": totp_attribute,
            "reject_delay": str(int(reject_delay)),
            "start_servers": str(self.start_servers),
            "max_servers": str(self.max_servers),
            "min_spare_servers": str(self.min_spare_servers),
            "max_spare_servers": str(self.max_spare_servers),
            "pool_start": str(self.ldap_pool_start),
            "pool_min": str(self.ldap_pool_min),
            "pool_max": str(self.ldap_pool_max),
            "pool_spare": str(self.ldap_pool_spare),
        }
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc: subprocess.Popen[bytes] | None = None
        self._output = None
        self._write_raddb()

    # -- configuration ---------------------------------------------------------------------

    def _write_raddb(self) -> None:
        if self.raddb.exists():
            shutil.rmtree(self.raddb)
        (self.raddb / "mods").mkdir(parents=True)
        os.chmod(self.raddb, 0o750)
        files = {
            "radiusd.conf": "radiusd.conf",
            "clients.conf": "clients.conf",
            "site.conf": "site.conf",
            "mods/ldap": "ldap.conf",
            "mods/totp": "totp.conf",
            "mods/always": "always.conf",
        }
        for target, template in files.items():
            text = _render((TEMPLATES / template).read_text(encoding="utf-8"), self._values)
            path = self.raddb / target
            # FreeRADIUS refuses world-writable config; the secrets need not be world-readable.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)

    def settings(self) -> dict[str, int]:
        """The performance-relevant settings this instance runs with (for the report)."""
        return {
            "thread_start_servers": self.start_servers,
            "thread_max_servers": self.max_servers,
            "thread_min_spare_servers": self.min_spare_servers,
            "thread_max_spare_servers": self.max_spare_servers,
            "ldap_pool_start": self.ldap_pool_start,
            "ldap_pool_min": self.ldap_pool_min,
            "ldap_pool_max": self.ldap_pool_max,
            "ldap_pool_spare": self.ldap_pool_spare,
            "reject_delay": self.reject_delay,
            "cleanup_delay": 5,
        }

    def check_config(self) -> str:
        """``freeradius -C``: parse the raddb and load the modules; raise with the output if bad."""
        done = subprocess.run(
            [FREERADIUS, "-C", "-d", str(self.raddb)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        output = (done.stdout + done.stderr).strip()
        if done.returncode != 0:
            # -C without -X reports to the configured log file, not to stdout.
            raise FreeRadiusError(
                f"freeradius -C failed ({done.returncode}):\n{output}\n{self.log_text()}"
            )
        return output

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's process id (one process; its threads do the work), None when stopped."""
        return self._proc.pid if self.running and self._proc is not None else None

    def start(self, timeout: float = 15) -> None:
        """Spawn FreeRADIUS and return once it answers Status-Server on the auth port."""
        if self.running:
            return
        command = [FREERADIUS, "-f", "-d", str(self.raddb)]
        setpriv = shutil.which("setpriv")
        if setpriv:  # the kernel kills FreeRADIUS if the benchmark process dies uncleanly
            command = [setpriv, "--pdeathsig", "KILL", "--", *command]
        self._output = open(self.output_path, "ab")  # closed in _reap()
        self._proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self._output, stderr=subprocess.STDOUT
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        identifier = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            while True:
                assert self._proc is not None
                if self._proc.poll() is not None:
                    raise FreeRadiusError(
                        f"freeradius exited with {self._proc.returncode} during start-up:\n"
                        f"{self.log_text()}"
                    )
                if self.probe(sock, identifier):
                    return
                identifier = (identifier + 1) % 256
                if time.monotonic() >= deadline:
                    raise FreeRadiusError(
                        f"freeradius on 127.0.0.1:{self.port} not ready after {timeout}s:\n"
                        f"{self.log_text()}"
                    )

    def probe(self, sock: socket.socket | None = None, identifier: int = 0) -> bool:
        """One Status-Server (waits up to 0.1 s): True when a valid Access-Accept comes back."""
        own = sock is None
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
        try:
            packet, authenticator = status_server_packet(self.secret.encode(), identifier)
            sock.sendto(packet, ("127.0.0.1", self.port))
            end = time.monotonic() + 0.1
            while (left := end - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    reply = sock.recv(4096)
                except (TimeoutError, ConnectionRefusedError):
                    # Nothing listens yet (ICMP port unreachable shows up as refused).
                    if left > 0.05:
                        time.sleep(0.05)
                    return False
                if _reply_ok(reply, identifier, authenticator, self.secret.encode()):
                    return True
            return False
        finally:
            if own:
                sock.close()

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM and wait; SIGKILL if it does not exit in ``timeout`` seconds."""
        if self._proc is None:
            return
        terminate(self._proc, timeout)
        self._reap()

    def kill(self) -> None:
        if self._proc is None:
            return
        kill(self._proc)
        self._reap()

    def _reap(self) -> None:
        self._proc = None
        if self._output is not None:
            self._output.close()
            self._output = None

    def __enter__(self) -> FreeRadiusServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- logs ------------------------------------------------------------------------------

    def log_text(self) -> str:
        """radius.log plus whatever the process printed on stdout/stderr (start-up errors)."""
        parts = []
        for path in (self.log_path, self.output_path):
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                continue
            if text.strip():
                parts.append(f"--- {path.name} ---\n{text}")
        return "\n".join(parts)
