"""A throw-away PostgreSQL cluster (Debian's postgresql) on a loopback port, for tests.

``Postgres()`` runs ``initdb`` in a fresh directory under ``/tmp``; :meth:`Postgres.start` starts
the server on a free 127.0.0.1 port (its unix socket in that directory, fsync off) and, the
first time, creates a login role with a random password (scram-sha-256 over TCP) and a database
it owns. :attr:`Postgres.dsn` connects to that database as that role; :meth:`new_database`
makes more. Nothing listens anywhere but on loopback and in the private directory.

PostgreSQL refuses to run as root. Run as root (CI), ``initdb`` runs as the ``postgres`` system
user (``runuser``) in a directory that user owns, and the server through ``setpriv`` as that
user with ``--pdeathsig KILL``, so the kernel stops it if the test process dies without
running Python cleanup (``runuser`` would stay between the two as a parent that survives).
Run as anyone else, both run as that user. The server is a child of the test process, not a
daemon started by ``pg_ctl``: :meth:`stop` (a fast shutdown), :meth:`start`, :meth:`restart`
keep its data and port; :meth:`cleanup` stops it and deletes the directory, and an ``atexit``
hook does the same for servers a test left behind.
"""

from __future__ import annotations

import atexit
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

import psycopg
from psycopg import sql

from tests.support.ports import free_port
from tests.support.processes import kill

PG_LIB = Path("/usr/lib/postgresql")
#: The unprivileged account the server runs as when the tests run as root.
SERVER_USER = "postgres"
SUPERUSER = "postgres"
ROLE = "radmfa_test"
DATABASE = "radmfa_test"

_live: set[Postgres] = set()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_live):
        server.cleanup()


class PostgresError(RuntimeError):
    pass


def pg_bindir() -> Path:
    """The ``bin`` directory of the newest PostgreSQL installed (Debian's layout)."""
    versions = []
    if PG_LIB.is_dir():
        for entry in PG_LIB.iterdir():
            if entry.name.isdigit() and (entry / "bin" / "postgres").exists():
                versions.append((int(entry.name), entry / "bin"))
    if not versions:
        raise PostgresError(
            f"no PostgreSQL server under {PG_LIB}: install it (Debian: apt-get install "
            "postgresql, or scripts/install-deps.sh)"
        )
    return max(versions)[1]


class Postgres:
    """One cluster: data, socket and log in a private temporary directory; one TCP port."""

    def __init__(self, max_connections: int = 200) -> None:
        self.bindir = pg_bindir()
        self.host = "127.0.0.1"
        self.port = free_port("tcp", self.host)
        self.password = secrets.token_urlsafe(18)
        self.max_connections = max_connections
        self.dir = Path(tempfile.mkdtemp(prefix="radmfa-pg-", dir="/tmp"))
        self._as_root = os.geteuid() == 0
        if self._as_root:
            account = pwd.getpwnam(SERVER_USER)
            os.chown(self.dir, account.pw_uid, account.pw_gid)
        os.chmod(self.dir, 0o700)
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / "postgres.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: BinaryIO | None = None
        self._provisioned = False
        self._initdb()

    # -- addresses -------------------------------------------------------------------------

    def dsn_for(self, dbname: str) -> str:
        """A connection string for the test role (password included) to ``dbname``."""
        return (
            f"host={self.host} port={self.port} dbname={dbname} user={ROLE} "
            f"password={self.password} sslmode=disable"
        )

    @property
    def dsn(self) -> str:
        return self.dsn_for(DATABASE)

    def dsn_without_password(self, dbname: str = DATABASE) -> str:
        return f"host={self.host} port={self.port} dbname={dbname} user={ROLE} sslmode=disable"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The postmaster's process id (the backends are its children); None when stopped."""
        return self._proc.pid if self._proc is not None and self.running else None

    # -- administration --------------------------------------------------------------------

    def admin(self, dbname: str = "postgres") -> psycopg.Connection:
        """A superuser connection over the private unix socket (autocommit)."""
        return psycopg.connect(
            host=str(self.dir),
            port=self.port,
            user=SUPERUSER,
            dbname=dbname,
            autocommit=True,
            connect_timeout=5,
        )

    def new_database(self, name: str | None = None) -> str:
        """Create an empty database owned by the test role; its DSN."""
        name = name or f"t_{secrets.token_hex(6)}"
        with self.admin() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(ROLE)
                )
            )
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    # -- lifecycle -------------------------------------------------------------------------

    def _server_command(self, argv: list[str]) -> list[str]:
        if not self._as_root:
            return argv
        return ["runuser", "-u", SERVER_USER, "--", *argv]

    def _initdb(self) -> None:
        command = [
            str(self.bindir / "initdb"),
            "-D", str(self.data_dir),
            "-U", SUPERUSER,
            "--auth-local=trust",  # the socket is in a 0700 directory
            "--auth-host=scram-sha-256",
            "-E", "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
            "--no-instructions",
        ]  # fmt: skip
        done = subprocess.run(
            self._server_command(command),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise PostgresError(
                f"initdb failed ({done.returncode}):\n{done.stdout.decode(errors='replace')}"
                f"{done.stderr.decode(errors='replace')}"
            )

    def start(self, timeout: float = 30.0) -> None:
        """Start the server; return once it accepts connections (polled every 50 ms)."""
        if self.running:
            return
        command = [
            str(self.bindir / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-c", f"listen_addresses={self.host}",
            "-c", f"unix_socket_directories={self.dir}",
            "-c", f"max_connections={self.max_connections}",
            "-c", "shared_buffers=32MB",
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
            "-c", "password_encryption=scram-sha-256",
            "-c", "log_min_messages=warning",
        ]  # fmt: skip
        if self._as_root:
            account = pwd.getpwnam(SERVER_USER)
            prefix = [
                "setpriv",
                f"--reuid={account.pw_uid}",
                f"--regid={account.pw_gid}",
                "--clear-groups",
                "--pdeathsig",
                "KILL",
                "--",
            ]
        else:
            prefix = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
        log = open(self.log_path, "ab")  # closed in _reap()
        self._log_file = log
        self._proc = subprocess.Popen(
            [*prefix, *command], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        _live.add(self)
        try:
            self._wait_ready(timeout)
            if not self._provisioned:
                self._provision()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error = "not polled yet"
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise PostgresError(
                    f"postgres exited with {self._proc.returncode} during start-up:\n"
                    f"{self.log_tail()}"
                )
            try:
                with self.admin() as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.Error as e:
                last_error = str(e).strip()
            if time.monotonic() >= deadline:
                raise PostgresError(
                    f"postgres on port {self.port} not ready after {timeout}s ({last_error}):\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.05)

    def _provision(self) -> None:
        with self.admin() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(ROLE), sql.Literal(self.password)
                )
            )
        self.new_database(DATABASE)
        self._provisioned = True

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: sessions are ended, nothing is lost); data and port stay."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill(self._proc)
        self._reap()

    def restart(self, timeout: float = 30.0) -> None:
        self.stop()
        self.start(timeout)

    def cleanup(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        _live.discard(self)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _reap(self) -> None:
        self._proc = None
        log, self._log_file = self._log_file, None
        if log is not None:
            log.close()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
