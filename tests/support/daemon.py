"""Runs the real daemon as a subprocess (``python -m radmfa serve``) on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.support.ports import free_port
from tests.support.processes import terminate

READY_LINE = "radmfa ready"

T = TypeVar("T")


def deadline_poll(
    predicate: Callable[[], T | None],
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns a truthy value or the deadline passes."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class RadmfaDaemon:
    """One daemon process with its own directory, config, store and log file."""

    def __init__(self, workdir: Path, config: dict[str, Any], port: int | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port("udp")
        self.config = config
        self.config.setdefault("listen", [f"127.0.0.1:{self.port}"])
        self.config.setdefault(
            "store",
            {"path": str(workdir / "radmfa.sqlite3"), "key_file": str(workdir / "secret.key")},
        )
        self.config_path = workdir / "radmfa.yaml"
        self.log_path = workdir / "radmfa.log"
        self.process: subprocess.Popen[bytes] | None = None
        #: Where the log of the process started last begins.
        self._log_offset = 0
        #: Added to the daemon's environment (NOTIFY_SOCKET, CREDENTIALS_DIRECTORY...).
        self.extra_env: dict[str, str] = {}
        #: Added after ``serve`` (e.g. ``["--log-format", "json"]``).
        self.serve_args: list[str] = []
        self.write_config()

    def write_config(self, config: dict[str, Any] | None = None) -> None:
        if config is not None:
            self.config = config
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("JOURNAL_STREAM", None)
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "CREDENTIALS_DIRECTORY"):
            env.pop(key, None)  # only what a test asks for
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 15.0) -> None:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        command = [sys.executable, "-m", "radmfa", "-c", str(self.config_path), "serve"]
        self.process = subprocess.Popen(
            [*command, *self.serve_args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
        )
        log.close()

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"radmfa exited with {self.process.returncode}:\n{self.log()}")
            return READY_LINE in self.log_since_start()

        deadline_poll(ready, timeout, what="radmfa to be ready")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_since_start(self) -> str:
        """What the process started last wrote: a restarted daemon is ready only when it
        says so itself, not because the run before it did."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, text: str, timeout: float = 10.0, count: int = 1) -> None:
        deadline_poll(lambda: self.log().count(text) >= count, timeout, what=repr(text))

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        if self.process is None:
            return 0
        terminate(self.process, timeout)
        code = self.process.returncode
        self.process = None
        return code

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "radmfa", "-c", str(self.config_path), *args],
            capture_output=True,
            text=True,
            input=input,
            env=self.env(),
            timeout=60,
        )
