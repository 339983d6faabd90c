"""The benchmark's PostgreSQL: one throwaway cluster per run, a database per radmfa service.

The cluster is the tests' (``tests/support/postgres.py``: loopback port, scram password, fsync
off). Each service measured gets a database of its own and a key file of its own: two nodes
of one service share both, as a real deployment must. The cluster's CPU counts every
postgres process, the ones that came and went during a row (autovacuum workers) included.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bench.procstat import cpu_seconds
from tests.support.postgres import Postgres


@dataclass(frozen=True)
class BenchDatabase:
    """One database of the cluster and the key file that goes with it."""

    cluster: BenchPostgres
    dsn: str  # without the password: that is in password_file
    password_file: Path
    key_file: Path

    def store_section(self) -> dict[str, object]:
        """radmfa's ``store`` section for this database (pool_size left at its default)."""
        return {
            "engine": "postgresql",
            "dsn": self.dsn,
            "password_file": str(self.password_file),
            "key_file": str(self.key_file),
        }

    def cpu_seconds(self) -> float:
        return self.cluster.cpu_seconds()


class BenchPostgres:
    """A running cluster under ``workdir``; :meth:`database` hands out databases."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.server = Postgres()
        self.server.start()
        self.password_file = workdir / "pg-password"
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.server.password + "\n")
        self._count = 0

    def database(self) -> BenchDatabase:
        """A new empty database (radmfa creates its schema) with a key file path of its own."""
        self._count += 1
        name = f"bench{self._count}"
        self.server.new_database(name)
        return BenchDatabase(
            self,
            self.server.dsn_without_password(name),
            self.password_file,
            self.workdir / f"{name}.key",
        )

    @property
    def pid(self) -> int:
        pid = self.server.pid
        if pid is None:
            raise RuntimeError(f"postgres is not running:\n{self.server.log_tail()}")
        return pid

    def cpu_seconds(self) -> float:
        """CPU of the postmaster and every backend and helper, reaped ones included."""
        return cpu_seconds(self.pid, reaped=True)

    def stop(self) -> None:
        self.server.cleanup()
